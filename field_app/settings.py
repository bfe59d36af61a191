"""The tablet app's settings: built once from the environment at start-up, then passed in."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from field_app.errors import BadInput
from field_app.forms.library import PACKAGED_CONTENT

DEFAULT_DATA_DIR = "$XDG_DATA_HOME/field_app"


def _default_data_dir(env: Mapping[str, str]) -> Path:
    """$XDG_DATA_HOME/field_app, else ~/.local/share/field_app, else ./field_app_data."""
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]) / "field_app"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".local" / "share" / "field_app"
    return Path("field_app_data")


@dataclass(frozen=True)
class Settings:
    """Every setting, its environment variable and its help line (listed by `python -m field_app settings`)."""

    data_dir: Path = field(
        default=Path("field_app_data"),
        metadata={
            "env": "FIELD_APP_DATA",
            "help": "Folder holding the encrypted store (default: a per-user folder).",
        },
    )
    zone: str = field(
        default="UTC",
        metadata={
            "env": "FIELD_APP_TIMEZONE",
            "help": "IANA time zone of the CHW's area, kept beside every visit time.",
        },
    )
    idle_lock_seconds: int = field(
        default=300,
        metadata={
            "env": "FIELD_APP_IDLE_LOCK_SECONDS",
            "help": "An unlocked session locks itself after this many idle seconds.",
        },
    )
    scrypt_log2_n: int = field(
        default=17,
        metadata={
            "env": "FIELD_APP_SCRYPT_LOG2_N",
            "help": "PIN key derivation cost for new PINs: scrypt N = 2^this (17 = 128 MiB; 10 to 20).",
        },
    )
    free_pin_attempts: int = field(
        default=4,
        metadata={
            "env": "FIELD_APP_FREE_PIN_ATTEMPTS",
            "help": "Wrong PINs allowed before each further try must wait.",
        },
    )
    max_pin_failures: int = field(
        default=10,
        metadata={
            "env": "FIELD_APP_MAX_PIN_FAILURES",
            "help": "Wrong PINs in a row that lock a user out until reset.",
        },
    )

    language: str = field(
        default="en",
        metadata={
            "env": "FIELD_APP_LANGUAGE",
            "help": "Language of the forms on screen (en, sw); reminders use the patient's own.",
        },
    )
    forms_dir: Path = field(
        default=PACKAGED_CONTENT,
        metadata={
            "env": "FIELD_APP_FORMS_DIR",
            "help": "Folder of forms, rules and translations (default: the content shipped with the app).",
        },
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (the process environment by default). Raises BadInput."""
        env = os.environ if env is None else env
        values: dict[str, object] = {"data_dir": _default_data_dir(env)}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.metadata["env"], f.type, raw)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise BadInput(f"FIELD_APP_TIMEZONE: '{self.zone}' is not a known time zone") from None
        # 2^20 is already 1 GiB per unlock, more than a cheap tablet can spare.
        if not 10 <= self.scrypt_log2_n <= 20:
            raise BadInput("FIELD_APP_SCRYPT_LOG2_N: must be between 10 and 20")
        if self.idle_lock_seconds < 10:
            raise BadInput("FIELD_APP_IDLE_LOCK_SECONDS: must be at least 10")
        if self.free_pin_attempts < 0:
            raise BadInput("FIELD_APP_FREE_PIN_ATTEMPTS: must not be negative")
        if not re.fullmatch(r"[a-z]{2,3}", self.language):
            raise BadInput("FIELD_APP_LANGUAGE: expected a language code such as en or sw")
        if not self.forms_dir.is_dir():
            raise BadInput("FIELD_APP_FORMS_DIR: no such folder")
        if self.max_pin_failures < 1:
            raise BadInput("FIELD_APP_MAX_PIN_FAILURES: must be at least 1")

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(variable, default, help) for every setting."""
        return [
            (
                f.metadata["env"],
                _shown_default(f.name, f.default),
                f.metadata["help"],
            )
            for f in fields(cls)
        ]


def _shown_default(name: str, default: object) -> str:
    if name == "data_dir":
        return DEFAULT_DATA_DIR
    if name == "forms_dir":
        return "the app's own forms"
    return str(default)


def _parse(variable: str, kind: object, raw: str) -> object:
    if kind in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise BadInput(f"{variable}: expected a whole number") from None
    if kind in ("Path", Path):
        return Path(raw).expanduser()
    return raw
