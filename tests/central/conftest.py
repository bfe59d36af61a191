"""Shared fixtures for central's tests: ``database`` is a created ``central.database.Database``
on each backend, ids ``sqlite`` (a file in ``tmp_path``) and ``postgresql`` (a fresh schema of
the PostgreSQL at ``CENTRAL_TEST_POSTGRES_URL``, by default the local one, dropped afterwards).

PostgreSQL is central's production backend, so a test on it fails, never skips, when it cannot
be reached.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from central.database import Database, open_database

POSTGRES_URL = os.environ.get(
    "CENTRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        found = open_database(f"sqlite:///{tmp_path / 'central.db'}")
        found.create()
        yield found
        found.close()
        return
    with postgres_schema() as url:
        found = open_database(url)
        found.create()
        try:
            yield found
        finally:
            found.close()


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema of the test PostgreSQL, dropped afterwards: yields the URL that has it as
    the search path."""
    name = f"t_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc.__class__.__name__}): "
            "start it, or set CENTRAL_TEST_POSTGRES_URL to one that is",
            pytrace=False,
        )
    joiner = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{joiner}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")
