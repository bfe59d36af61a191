"""Shared fixtures for the tablet tests: real SQLCipher stores in ``tmp_path``, a fixed clock.

scrypt runs at N = 2^12 here instead of 2^17, so that a test unlocks in milliseconds; the key
hierarchy is otherwise the one a tablet uses. The first CHW is "amina" with PIN "482913"
(test modules repeat these two constants rather than import this file).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from care_record import FixedClock
from field_app import Session, Settings, init_store, unlock
from field_app.cli import main

START = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
USER = "amina"
PIN = "482913"
FAST_SCRYPT = 12

AMINA: dict[str, Any] = {
    "given": "Amina",
    "family": "Juma",
    "sex": "female",
    "birth_date": "1994-06-15",
    "phone": "+255712345678",
    "village": "Kijiji cha Mlima",
}

MakeSettings = Callable[..., Settings]


def _fast_settings(folder: Path, **overrides: Any) -> Settings:
    base = Settings.from_env({"HOME": str(folder.parent)})
    return dataclasses.replace(base, data_dir=folder, scrypt_log2_n=FAST_SCRYPT, **overrides)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    """Settings for a store folder under ``tmp_path`` (default "tablet"), with a cheap scrypt;
    keyword arguments override settings."""

    def make(name: str = "tablet", **overrides: Any) -> Settings:
        return _fast_settings(tmp_path / name, **overrides)

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
def session(settings: Settings, clock: FixedClock) -> Iterator[Session]:
    """A new store whose first CHW is amina, unlocked."""
    opened = init_store(settings, clock, USER, PIN)
    yield opened
    opened.lock()


@pytest.fixture
def amina() -> dict[str, Any]:
    """Valid demographics of a new patient."""
    return dict(AMINA)


@pytest.fixture
def chart_doc(settings: Settings, clock: FixedClock) -> Callable[[str], bytes]:
    """The saved bytes of a chart, read through a fresh unlock as another process would."""

    def read(patient_id: str) -> bytes:
        opened = unlock(settings, clock, USER, PIN)
        try:
            row = opened.store.db.execute("SELECT doc FROM charts WHERE id = ?", [patient_id])
            found = row.fetchone()
            assert found is not None, "no such chart"
            return bytes(found[0])
        finally:
            opened.lock()

    return read


@pytest.fixture
def row_counts(settings: Settings, clock: FixedClock) -> Callable[[], tuple[int, int]]:
    """(charts, tasks) rows in the store, read through a fresh unlock."""

    def count() -> tuple[int, int]:
        opened = unlock(settings, clock, USER, PIN)
        try:
            db = opened.store.db
            return (
                int(db.execute("SELECT count(*) FROM charts").fetchone()[0]),
                int(db.execute("SELECT count(*) FROM tasks").fetchone()[0]),
            )
        finally:
            opened.lock()

    return count


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """Runs ``field_app.cli.main`` in process with its own environment, clock and streams."""

    def __init__(self, settings: Settings, clock: FixedClock) -> None:
        self.clock = clock
        self.env = {
            "FIELD_APP_DATA": str(settings.data_dir),
            "FIELD_APP_SCRYPT_LOG2_N": str(FAST_SCRYPT),
            "FIELD_APP_PIN": PIN,
        }
        self.results: list[Result] = []

    def __call__(self, *argv: str, stdin: str = "", **env: str | None) -> Result:
        """Run one command. ``env`` adds variables to the environment; None removes one."""
        merged = dict(self.env)
        for name, value in env.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        out, err = io.StringIO(), io.StringIO()
        code = main(
            list(argv),
            env=merged,
            clock=self.clock,
            stdin=io.StringIO(stdin),
            stdout=out,
            stderr=err,
        )
        result = Result(code, out.getvalue(), err.getvalue())
        self.results.append(result)
        return result

    def ok(self, *argv: str, stdin: str = "", **env: str | None) -> str:
        """Run a command that must succeed; return its standard output, stripped."""
        result = self(*argv, stdin=stdin, **env)
        assert result.code == 0, result.err
        return result.out.strip()


@pytest.fixture
def cli(settings: Settings, clock: FixedClock) -> Cli:
    """The CLI on the test's store folder, with amina's PIN in FIELD_APP_PIN."""
    return Cli(settings, clock)


@pytest.fixture
def tablet(cli: Cli) -> Cli:
    """The CLI after ``init --user amina``."""
    cli.ok("init", "--user", USER)
    return cli
