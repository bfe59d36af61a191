"""Central's settings: built once from the environment at start-up, then passed in.

This is the only module of ``central`` that reads the environment. Every setting has a default
that works on a laptop and a line of help (``python -m central settings`` lists them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from central.errors import BadSetting

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


def _parse(variable: str, kind: object, raw: str) -> object:
    if kind in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise BadSetting(f"{variable}: expected a whole number") from None
    return raw
