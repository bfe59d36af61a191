"""The hub's settings: built once from the environment at start-up, then passed in.

This is the only module that reads the environment. Every setting has a default that works on
a laptop and a line of help (``python -m sync_hub settings`` lists them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sync_hub.errors import BadSetting

MIB = 1024 * 1024
MAX_FACILITY_CHARS = 200  # a Reference.display a reminder quotes: a name, not a paragraph


@dataclass(frozen=True)
class Settings:
    """Every setting, its environment variable and its help line."""

    db: Path = field(
        default=Path("sync_hub.db"),
        metadata={"env": "SYNC_HUB_DB", "help": "SQLite file holding every chart and device."},
    )
    host: str = field(
        default="127.0.0.1",
        metadata={
            "env": "SYNC_HUB_HOST",
            "help": "Address `serve` listens on (behind the reverse proxy in production).",
        },
    )
    port: int = field(
        default=8700, metadata={"env": "SYNC_HUB_PORT", "help": "TCP port `serve` listens on."}
    )
    name: str = field(
        default="regional-hub",
        metadata={"env": "SYNC_HUB_NAME", "help": "This hub's name, told to tablets at enrolment."},
    )
    clock_skew_seconds: int = field(
        default=300,
        metadata={
            "env": "SYNC_HUB_CLOCK_SKEW_SECONDS",
            "help": "How far a request's signed time may be from the hub's clock.",
        },
    )
    max_body_bytes: int = field(
        default=16 * MIB,
        metadata={
            "env": "SYNC_HUB_MAX_BODY_BYTES",
            "help": "Largest request body accepted, as sent (compressed).",
        },
    )
    max_frame_bytes: int = field(
        default=64 * MIB,
        metadata={
            "env": "SYNC_HUB_MAX_FRAME_BYTES",
            "help": "Largest sync frame accepted once decompressed.",
        },
    )
    max_snapshot_bytes: int = field(
        default=4 * MIB,
        metadata={
            "env": "SYNC_HUB_MAX_SNAPSHOT_BYTES",
            "help": "Most new-chart data one answer carries, whatever a tablet asks for.",
        },
    )
    enroll_code_hours: int = field(
        default=72,
        metadata={
            "env": "SYNC_HUB_ENROLL_CODE_HOURS",
            "help": "Hours an enrolment code stays usable.",
        },
    )
    busy_timeout_seconds: int = field(
        default=30,
        metadata={
            "env": "SYNC_HUB_BUSY_TIMEOUT_SECONDS",
            "help": "How long a request waits for the database before answering 503 busy.",
        },
    )
    chart_cache: int = field(
        default=4000,
        metadata={
            "env": "SYNC_HUB_CHART_CACHE",
            "help": "Charts kept loaded in memory between syncs, the least recently used "
            "dropped first (about 110 KB each for a chart with ten visits); 0: none.",
        },
    )
    workers: int = field(
        default=3,
        metadata={
            "env": "SYNC_HUB_WORKERS",
            "help": "Requests worked on at once, each on a thread of its own; the rest wait "
            "their turn. Automerge holds Python's interpreter lock, so more threads mostly "
            "wait for it, and switching between them costs CPU.",
        },
    )
    central_url: str = field(
        default="",
        metadata={
            "env": "SYNC_HUB_CENTRAL_URL",
            "help": "Central's base URL (its FHIR API is at /fhir, its token at /auth/token); "
            "empty: charts are queued but neither pushed nor fetched.",
        },
    )
    region: str = field(
        default="region-1",
        metadata={
            "env": "SYNC_HUB_REGION",
            "help": "The region tag on every resource pushed to central.",
        },
    )
    timezone: str = field(
        default="Africa/Dar_es_Salaam",
        metadata={
            "env": "SYNC_HUB_TIMEZONE",
            "help": "IANA time zone of the hub's region, for patients with no visit yet "
            "(central's reminders use it).",
        },
    )
    facility: str = field(
        default="",
        metadata={
            "env": "SYNC_HUB_FACILITY",
            "help": "Name of the health facility this region's patients attend, as reminders "
            "name it, e.g. 'Kilosa Health Centre'; empty: none.",
        },
    )
    client_id: str = field(
        default="",
        metadata={
            "env": "SYNC_HUB_CLIENT_ID",
            "help": "The hub's client ID at central; empty: SYNC_HUB_NAME.",
        },
    )
    central_key: Path = field(
        default=Path("sync_hub_central_key.pem"),
        metadata={
            "env": "SYNC_HUB_CENTRAL_KEY",
            "help": "The hub's P-384 private key for central (PEM, made by `central-key`).",
        },
    )
    push_batch_resources: int = field(
        default=500,
        metadata={
            "env": "SYNC_HUB_PUSH_BATCH_RESOURCES",
            "help": "Most resources in one transaction bundle (a larger chart goes alone).",
        },
    )
    push_interval_seconds: int = field(
        default=10,
        metadata={
            "env": "SYNC_HUB_PUSH_INTERVAL_SECONDS",
            "help": "Longest wait between two pushes to central (a sync wakes it sooner).",
        },
    )
    fetch_interval_seconds: int = field(
        default=15,
        metadata={
            "env": "SYNC_HUB_FETCH_INTERVAL_SECONDS",
            "help": "How often replies and advice are fetched from central.",
        },
    )
    central_timeout_seconds: int = field(
        default=30,
        metadata={
            "env": "SYNC_HUB_CENTRAL_TIMEOUT_SECONDS",
            "help": "How long one request to central may take before it is retried later.",
        },
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (the process environment by default). Raises BadSetting."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f.metadata["env"], f.type, raw.strip())
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Raise BadSetting for a value the hub cannot run with."""
        if not 1 <= self.port <= 65535:
            raise BadSetting("SYNC_HUB_PORT: must be between 1 and 65535")
        if self.clock_skew_seconds < 5:
            raise BadSetting("SYNC_HUB_CLOCK_SKEW_SECONDS: must be at least 5")
        if self.max_body_bytes < 1024:
            raise BadSetting("SYNC_HUB_MAX_BODY_BYTES: must be at least 1024")
        if self.max_frame_bytes < self.max_body_bytes:
            raise BadSetting("SYNC_HUB_MAX_FRAME_BYTES: must be at least SYNC_HUB_MAX_BODY_BYTES")
        if self.max_snapshot_bytes < 1024:
            raise BadSetting("SYNC_HUB_MAX_SNAPSHOT_BYTES: must be at least 1024")
        if self.enroll_code_hours < 1:
            raise BadSetting("SYNC_HUB_ENROLL_CODE_HOURS: must be at least 1")
        if self.busy_timeout_seconds < 1:
            raise BadSetting("SYNC_HUB_BUSY_TIMEOUT_SECONDS: must be at least 1")
        if not self.name:
            raise BadSetting("SYNC_HUB_NAME: must not be empty")
        if self.chart_cache < 0:
            raise BadSetting("SYNC_HUB_CHART_CACHE: must be 0 or more")
        if self.workers < 1:
            raise BadSetting("SYNC_HUB_WORKERS: must be at least 1")
        self._check_central()
        self._check_patient_defaults()

    def _check_central(self) -> None:
        if self.central_url and not self.central_url.startswith(("http://", "https://")):
            raise BadSetting("SYNC_HUB_CENTRAL_URL: must start with http:// or https://")
        if not self.region:
            raise BadSetting("SYNC_HUB_REGION: must not be empty")
        for variable, value in (
            ("SYNC_HUB_PUSH_BATCH_RESOURCES", self.push_batch_resources),
            ("SYNC_HUB_PUSH_INTERVAL_SECONDS", self.push_interval_seconds),
            ("SYNC_HUB_FETCH_INTERVAL_SECONDS", self.fetch_interval_seconds),
            ("SYNC_HUB_CENTRAL_TIMEOUT_SECONDS", self.central_timeout_seconds),
        ):
            if value < 1:
                raise BadSetting(f"{variable}: must be at least 1")

    def _check_patient_defaults(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise BadSetting(
                f"SYNC_HUB_TIMEZONE: '{self.timezone}' is not a known IANA time zone"
            ) from None
        if len(self.facility) > MAX_FACILITY_CHARS or not self.facility.isprintable():
            raise BadSetting(
                f"SYNC_HUB_FACILITY: at most {MAX_FACILITY_CHARS} characters, none of them "
                "control characters"
            )

    @property
    def central_client_id(self) -> str:
        """Who the hub is at central: SYNC_HUB_CLIENT_ID, or the hub's name."""
        return self.client_id or self.name

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(variable, default, help) for every setting."""
        return [(f.metadata["env"], str(f.default), f.metadata["help"]) for f in fields(cls)]


def _parse(variable: str, kind: object, raw: str) -> object:
    if kind in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise BadSetting(f"{variable}: expected a whole number") from None
    if kind in ("Path", Path):
        return Path(raw).expanduser()
    return raw
