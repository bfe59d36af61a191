"""Central's settings: built once from the environment at start-up, then passed in.

This is the only module of ``central`` that reads the environment. Every setting has a default
that works on a laptop and a line of help (``python -m central settings`` lists them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from central.errors import BadSetting
from sms.planner import Policy
from sms.templates import LANGUAGES

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Every setting, its environment variable and its help line."""

    database_url: str = field(
        default="sqlite:///central.db",
        metadata={
            "env": "CENTRAL_DATABASE_URL",
            "help": "Where the FHIR store lives: sqlite:///PATH (a file) or "
            "postgresql://USER@HOST:PORT/DB.",
        },
    )
    host: str = field(
        default="127.0.0.1",
        metadata={
            "env": "CENTRAL_HOST",
            "help": "Address `serve` listens on (behind the reverse proxy in production).",
        },
    )
    port: int = field(
        default=8800, metadata={"env": "CENTRAL_PORT", "help": "TCP port `serve` listens on."}
    )
    base_url: str = field(
        default="http://127.0.0.1:8800",
        metadata={
            "env": "CENTRAL_BASE_URL",
            "help": "Central's public URL as clients reach it: paging links and the token "
            "audience are built from it.",
        },
    )
    token_seconds: int = field(
        default=300,
        metadata={
            "env": "CENTRAL_TOKEN_SECONDS",
            "help": "Lifetime of a bearer token issued at /auth/token.",
        },
    )
    max_body_bytes: int = field(
        default=32 * MIB,
        metadata={"env": "CENTRAL_MAX_BODY_BYTES", "help": "Largest request body accepted."},
    )
    max_bundle_entries: int = field(
        default=5000,
        metadata={
            "env": "CENTRAL_MAX_BUNDLE_ENTRIES",
            "help": "Most entries one transaction or batch bundle may carry.",
        },
    )
    page_size: int = field(
        default=50,
        metadata={"env": "CENTRAL_PAGE_SIZE", "help": "Search results per page when no _count."},
    )
    max_page_size: int = field(
        default=1000,
        metadata={"env": "CENTRAL_MAX_PAGE_SIZE", "help": "Largest _count a search may ask for."},
    )
    workers: int = field(
        default=1,
        metadata={
            "env": "CENTRAL_WORKERS",
            "help": "Server processes `serve` starts (validating FHIR is CPU-bound: about one "
            "per core).",
        },
    )
    pool_size: int = field(
        default=8,
        metadata={
            "env": "CENTRAL_POOL_SIZE",
            "help": "Database connections kept open by one central process.",
        },
    )

    sms: str = field(
        default="off",
        metadata={
            "env": "CENTRAL_SMS",
            "help": "on: send SMS and voice reminders through Twilio and take its webhooks "
            "(needs the CENTRAL_TWILIO_ settings); off: neither.",
        },
    )
    sms_scheduler: str = field(
        default="on",
        metadata={
            "env": "CENTRAL_SMS_SCHEDULER",
            "help": "on: this process plans and sends reminders on a schedule; off: it only "
            "takes webhooks (any number of processes may run the scheduler at once).",
        },
    )
    twilio_account_sid: str = field(
        default="",
        metadata={"env": "CENTRAL_TWILIO_ACCOUNT_SID", "help": "The Twilio account (AC...)."},
    )
    twilio_auth_token: str = field(
        default="",
        metadata={
            "env": "CENTRAL_TWILIO_AUTH_TOKEN",
            "help": "The account's auth token: signs Twilio's webhooks. A secret, never printed.",
        },
    )
    twilio_from: str = field(
        default="",
        metadata={
            "env": "CENTRAL_TWILIO_FROM",
            "help": "The Twilio number reminders come from, e.g. +255700000001.",
        },
    )
    twilio_api_url: str = field(
        default="",
        metadata={
            "env": "CENTRAL_TWILIO_API_URL",
            "help": "Twilio's REST API; empty for Twilio itself. The demo and tests set the "
            "local Twilio's URL (python -m sms.local_twilio).",
        },
    )
    sms_public_url: str = field(
        default="",
        metadata={
            "env": "CENTRAL_SMS_PUBLIC_URL",
            "help": "Central's URL as Twilio calls it, through the reverse proxy; webhook "
            "signatures are checked against it. Empty: CENTRAL_BASE_URL.",
        },
    )
    sms_per_second: int = field(
        default=10,
        metadata={
            "env": "CENTRAL_SMS_PER_SECOND",
            "help": "Most messages and calls per second for the account, shared by every "
            "central process (Twilio's limit for the sender).",
        },
    )
    sms_quiet_hours: str = field(
        default="20:00-07:00",
        metadata={
            "env": "CENTRAL_SMS_QUIET_HOURS",
            "help": "Local hours in the patient's own time zone when nothing is sent, HH:MM-HH:MM.",
        },
    )
    sms_send_time: str = field(
        default="09:00",
        metadata={
            "env": "CENTRAL_SMS_SEND_TIME",
            "help": "Local time in the patient's zone when a reminder goes out on its day.",
        },
    )
    sms_timezone: str = field(
        default="Africa/Dar_es_Salaam",
        metadata={
            "env": "CENTRAL_SMS_TIMEZONE",
            "help": "IANA time zone of a patient whose record names none.",
        },
    )
    sms_language: str = field(
        default="en",
        metadata={
            "env": "CENTRAL_SMS_LANGUAGE",
            "help": "Language of a reminder whose patient has none we have words for (en, sw).",
        },
    )
    sms_voice_clips_url: str = field(
        default="",
        metadata={
            "env": "CENTRAL_SMS_VOICE_CLIPS_URL",
            "help": "Where recorded reminders are, as URL/LANGUAGE/TEMPLATE.mp3; empty: calls "
            "speak the text.",
        },
    )
    sms_plan_seconds: int = field(
        default=30,
        metadata={
            "env": "CENTRAL_SMS_PLAN_SECONDS",
            "help": "How often the scheduler plans reminders from new FHIR resources.",
        },
    )
    sms_dispatch_seconds: int = field(
        default=5,
        metadata={
            "env": "CENTRAL_SMS_DISPATCH_SECONDS",
            "help": "How often the scheduler sends the reminders that are due.",
        },
    )
    sms_lease_seconds: int = field(
        default=60,
        metadata={
            "env": "CENTRAL_SMS_LEASE_SECONDS",
            "help": "How long a send may wait for Twilio's answer before it is checked at "
            "Twilio and settled.",
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
        """Raise BadSetting for a value central cannot run with."""
        if not self.database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise BadSetting("CENTRAL_DATABASE_URL: must start with sqlite:/// or postgresql://")
        if not 1 <= self.port <= 65535:
            raise BadSetting("CENTRAL_PORT: must be between 1 and 65535")
        if not self.base_url.startswith(("http://", "https://")):
            raise BadSetting("CENTRAL_BASE_URL: must start with http:// or https://")
        if not 30 <= self.token_seconds <= 3600:
            raise BadSetting("CENTRAL_TOKEN_SECONDS: must be between 30 and 3600")
        if self.max_body_bytes < 1024:
            raise BadSetting("CENTRAL_MAX_BODY_BYTES: must be at least 1024")
        if self.max_bundle_entries < 1:
            raise BadSetting("CENTRAL_MAX_BUNDLE_ENTRIES: must be at least 1")
        if not 1 <= self.page_size <= self.max_page_size:
            raise BadSetting("CENTRAL_PAGE_SIZE: must be between 1 and CENTRAL_MAX_PAGE_SIZE")
        if not 1 <= self.workers <= 64:
            raise BadSetting("CENTRAL_WORKERS: must be between 1 and 64")
        if self.pool_size < 1:
            raise BadSetting("CENTRAL_POOL_SIZE: must be at least 1")
        self._check_sms()

    def _check_sms(self) -> None:
        for name, value in (
            ("CENTRAL_SMS", self.sms),
            ("CENTRAL_SMS_SCHEDULER", self.sms_scheduler),
        ):
            if value not in ("on", "off"):
                raise BadSetting(f"{name}: must be on or off")
        if not 1 <= self.sms_per_second <= 1000:
            raise BadSetting("CENTRAL_SMS_PER_SECOND: must be between 1 and 1000")
        for name, seconds in (
            ("CENTRAL_SMS_PLAN_SECONDS", self.sms_plan_seconds),
            ("CENTRAL_SMS_DISPATCH_SECONDS", self.sms_dispatch_seconds),
            ("CENTRAL_SMS_LEASE_SECONDS", self.sms_lease_seconds),
        ):
            if seconds < 1:
                raise BadSetting(f"{name}: must be at least 1")
        try:
            self.sms_policy  # noqa: B018 - parsing the times and the zone is the check
        except ValueError as exc:
            raise BadSetting(str(exc)) from None
        if self.sms == "on":
            missing = [
                name
                for name, value in (
                    ("CENTRAL_TWILIO_ACCOUNT_SID", self.twilio_account_sid),
                    ("CENTRAL_TWILIO_AUTH_TOKEN", self.twilio_auth_token),
                    ("CENTRAL_TWILIO_FROM", self.twilio_from),
                )
                if not value
            ]
            if missing:
                raise BadSetting(f"CENTRAL_SMS is on but {', '.join(missing)} not set")

    @property
    def sms_policy(self) -> Policy:
        """The planner's rules from the SMS settings. Raises ValueError naming the setting."""
        quiet = self.sms_quiet_hours.split("-")
        if len(quiet) != 2:
            raise ValueError("CENTRAL_SMS_QUIET_HOURS: write it as HH:MM-HH:MM")
        return Policy(
            quiet_start=_clock_time("CENTRAL_SMS_QUIET_HOURS", quiet[0]),
            quiet_end=_clock_time("CENTRAL_SMS_QUIET_HOURS", quiet[1]),
            send_time=_clock_time("CENTRAL_SMS_SEND_TIME", self.sms_send_time),
            default_zone=_zone("CENTRAL_SMS_TIMEZONE", self.sms_timezone),
            default_language=_language("CENTRAL_SMS_LANGUAGE", self.sms_language),
        )

    @property
    def token_url(self) -> str:
        """The token endpoint as clients name it in a client assertion's ``aud``."""
        return self.base_url.rstrip("/") + "/auth/token"

    @property
    def fhir_base(self) -> str:
        return self.base_url.rstrip("/") + "/fhir"

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(variable, default, help) for every setting."""
        return [(f.metadata["env"], str(f.default), f.metadata["help"]) for f in fields(cls)]


def _clock_time(variable: str, raw: str) -> time:
    try:
        return time.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(f"{variable}: '{raw}' is not a time such as 20:00") from None


def _zone(variable: str, raw: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{variable}: '{raw}' is not a known IANA time zone") from None
    return raw


def _language(variable: str, raw: str) -> str:
    if raw not in LANGUAGES:
        raise ValueError(f"{variable}: must be one of {', '.join(LANGUAGES)}")
    return raw


def _parse(variable: str, kind: object, raw: str) -> object:
    if kind in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise BadSetting(f"{variable}: expected a whole number") from None
    return raw
