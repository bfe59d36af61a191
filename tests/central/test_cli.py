"""Central's command line on a real database (both backends), and ``serve`` under uvicorn."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from central.audit import append, audit_event
from central.auth import ASSERTION_TYPE, authenticate, issue_token
from central.callers import Caller
from central.cli import main
from central.clock import FixedClock
from central.database import Database, PostgresDatabase, SqliteDatabase, open_database
from central.errors import NotAuthenticated
from central.settings import Settings
from field_app.demo.ports import free_port

ROOT = Path(__file__).parent.parent.parent
NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def url_of(database: Database) -> str:
    if isinstance(database, SqliteDatabase):
        return f"sqlite:///{database.path}"
    assert isinstance(database, PostgresDatabase)
    return database.url


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    env: dict[str, str]
    clock: FixedClock = field(default_factory=lambda: FixedClock(NOW))

    def __call__(self, *argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), env=self.env, clock=self.clock, stdout=out, stderr=err)
        return Result(code, out.getvalue(), err.getvalue())

    def ok(self, *argv: str) -> str:
        result = self(*argv)
        assert result.code == 0, result.err
        return result.out


@pytest.fixture
def cli(database: Database) -> Cli:
    return Cli({"CENTRAL_DATABASE_URL": url_of(database)})


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Cli:
    """For what does not touch the database, or only its SQLite file."""
    return Cli({"CENTRAL_DATABASE_URL": f"sqlite:///{tmp_path / 'central.db'}"})


def key_file(tmp_path: Path, kid: str = "north-1") -> tuple[Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}
    path = tmp_path / f"{kid}.jwk.json"
    path.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    return path, key


def token_form(key: Any, client_id: str, kid: str, at: datetime, token_url: str) -> dict[str, str]:
    assertion = jwt.encode(
        {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "exp": int(at.timestamp()) + 60,
            "jti": str(uuid.uuid4()),
        },
        key,
        algorithm="ES384",
        headers={"kid": kid},
    )
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "scope": "system/*.read",
    }


# -- the command line itself ----------------------------------------------------------------------


def test_settings_lists_every_setting_with_its_default_and_help(sqlite_cli: Cli) -> None:
    out = sqlite_cli.ok("settings")
    documented = Settings.documented()
    assert len(out.splitlines()) == len(documented)
    for variable, default, help_line in documented:
        assert f"{variable} (default {default}): {help_line}" in out
    assert "CENTRAL_DATABASE_URL (default sqlite:///central.db)" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "required"),
        (["launch"], "invalid choice"),
        (["client"], "required"),
        (["client", "add", "--region", "north", "--jwk", "k.json"], "--id"),
        (["audit", "tail", "--limit", "0"], "at least 1"),
        (["audit", "verify", "--progress-every", "many"], "whole number"),
        (["serve", "--port", "http"], "invalid int"),
    ],
)
def test_a_wrong_command_line_exits_2(sqlite_cli: Cli, argv: list[str], words: str) -> None:
    result = sqlite_cli(*argv)
    assert result.code == 2
    assert words in result.err
    assert "usage: python -m central" in result.err


def test_help_exits_0_on_stdout(sqlite_cli: Cli) -> None:
    result = sqlite_cli("--help")
    assert result.code == 0
    for command in ("serve", "settings", "client", "audit"):
        assert command in result.out


def test_a_bad_setting_exits_1_naming_the_variable(sqlite_cli: Cli) -> None:
    sqlite_cli.env["CENTRAL_TOKEN_SECONDS"] = "5"
    result = sqlite_cli("client", "list")
    assert result.code == 1
    assert "CENTRAL_TOKEN_SECONDS" in result.err


def test_database_option_overrides_the_environment(sqlite_cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite_cli.ok("--database", f"sqlite:///{other}", "client", "list")
    assert other.exists()
    result = sqlite_cli("--database", "mysql://x", "client", "list")
    assert result.code == 1
    assert "CENTRAL_DATABASE_URL" in result.err


def test_an_unreachable_database_exits_1(sqlite_cli: Cli, tmp_path: Path) -> None:
    result = sqlite_cli(
        "--database", f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}", "audit", "tail"
    )
    assert result.code == 1
    assert "error: central's database could not be used" in result.err


# -- clients --------------------------------------------------------------------------------------


def test_a_client_added_here_gets_tokens_until_revoked(
    cli: Cli, database: Database, tmp_path: Path
) -> None:
    path, key = key_file(tmp_path)
    added = cli("client", "add", "--id", "hub-north", "--region", "north", "--jwk", str(path))
    assert added.code == 0, added.err
    assert "added client hub-north" in added.out
    assert "north-1 (ES384)" in added.out
    assert "aud must be http://127.0.0.1:8800/auth/token" in added.err

    settings = Settings()
    form = token_form(key, "hub-north", "north-1", NOW, settings.token_url)
    answer = issue_token(database, settings, form, cli.clock)
    header = f"Bearer {answer['access_token']}"
    assert authenticate(database, settings, header, cli.clock).region == "north"

    revoked = cli.ok("client", "revoke", "hub-north")
    assert "revoked hub-north" in revoked
    assert "within 2 seconds" in revoked
    cli.clock.advance(5)
    with pytest.raises(NotAuthenticated, match="revoked"):
        authenticate(database, settings, header, cli.clock)
    assert "already revoked at 2026-03-01T08:00:00" in cli.ok("client", "revoke", "hub-north")


def test_client_list_shows_region_state_keys_and_scopes(cli: Cli, tmp_path: Path) -> None:
    path, _key = key_file(tmp_path)
    cli.ok("client", "add", "--id", "hub-b", "--region", "south", "--jwk", str(path))
    cli.ok(
        "client", "add", "--id", "console", "--region", "*", "--jwk", str(path),
        "--scopes", "system/*.read",
    )  # fmt: skip
    cli.clock.advance(60)
    cli.ok("client", "revoke", "hub-b")
    result = cli("client", "list")
    lines = result.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("console  region *  active since 2026-03-01T08:00:00")
    assert "scopes system/*.read" in lines[0]
    assert lines[1].startswith("hub-b  region south  revoked 2026-03-01T08:01:00")
    assert "keys north-1 (ES384)" in lines[1]
    assert "scopes system/*.read system/*.write" in lines[1]
    assert result.err.strip() == "2 clients"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot read the JWK file"),
        ("{not json", "is not JSON"),
        ("[1, 2]", "no JSON object"),
        (json.dumps({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "k"}), "usable"),
    ],
)
def test_a_bad_jwk_file_is_refused_and_nothing_is_added(
    cli: Cli, tmp_path: Path, content: str | None, words: str
) -> None:
    path = tmp_path / "key.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = cli("client", "add", "--id", "hub", "--region", "r", "--jwk", str(path))
    assert result.code == 1
    assert words in result.err
    assert cli("client", "list").err.strip() == "0 clients"


def test_refusals_of_client_commands_exit_1(cli: Cli, tmp_path: Path) -> None:
    path, _key = key_file(tmp_path)
    cli.ok("client", "add", "--id", "hub", "--region", "r", "--jwk", str(path))
    again = cli("client", "add", "--id", "hub", "--region", "r", "--jwk", str(path))
    assert (again.code, "already exists" in again.err) == (1, True)
    scope = cli(
        "client", "add", "--id", "hub2", "--region", "r", "--jwk", str(path), "--scopes", "admin"
    )
    assert (scope.code, "not a SMART system scope: admin" in scope.err) == (1, True)
    ghost = cli("client", "revoke", "ghost")
    assert (ghost.code, ghost.err.strip()) == (1, "error: no client 'ghost'")


# -- the audit trail ------------------------------------------------------------------------------


def _record(database: Database, count: int) -> None:
    hub = Caller("hub-north", "north", frozenset())
    for n in range(count):
        event = audit_event(
            hub,
            action="R",
            interaction="read" if n % 2 else "search-type",
            outcome="0",
            entities=[f"Observation/o{n}", f"Encounter/e{n}"],
            patients=[f"Patient/chart-{n}"],
            query="name=Amina" if n % 2 == 0 else None,
            at=NOW + timedelta(seconds=n),
        )
        with database.write() as session:
            append(session, [event], NOW + timedelta(seconds=n))


def test_audit_verify_on_an_intact_trail(cli: Cli, database: Database) -> None:
    assert cli.ok("audit", "verify").strip() == "audit trail intact: 0 entries"
    _record(database, 12)
    result = cli("audit", "verify")
    assert (result.code, result.out.strip()) == (0, "audit trail intact: 12 entries")
    with database.read() as session:
        last = bytes(session.execute("SELECT hash FROM audit_log WHERE seq = 12")[0][0])
    assert f"entry 12 has hash {last.hex()}" in result.err


def test_audit_verify_names_the_broken_entry_and_exits_1(cli: Cli, database: Database) -> None:
    _record(database, 12)
    with database.write() as session:
        if session.dialect == "sqlite":
            session.execute("DROP TRIGGER audit_log_no_delete")
        else:
            session.execute("DROP TRIGGER audit_log_no_update_or_delete ON audit_log")
        session.execute("DELETE FROM audit_log WHERE seq = 5")
    result = cli("audit", "verify")
    assert result.code == 1
    assert result.out.startswith("audit trail BROKEN at entry 5: the entry is missing")
    assert "the 4 entries before it are intact" in result.err


def test_audit_verify_reports_progress_on_a_long_trail(sqlite_cli: Cli) -> None:
    database = open_database(sqlite_cli.env["CENTRAL_DATABASE_URL"])
    database.create()
    with database.write() as session:
        hub = Caller("hub", "r", frozenset())
        events = [
            audit_event(
                hub, action="R", interaction="read", outcome="0", entities=[f"Patient/{n}"],
                patients=[], query=None, at=NOW,
            )
            for n in range(12_000)
        ]  # fmt: skip
        append(session, events, NOW)
    database.close()
    result = sqlite_cli("audit", "verify", "--progress-every", "5000")
    assert result.code == 0
    progress = [line for line in result.err.splitlines() if line.startswith("verified")]
    assert progress == ["verified 5000 of 12000 entries", "verified 10000 of 12000 entries"]
    assert result.out.strip() == "audit trail intact: 12000 entries"


def test_audit_tail_shows_recent_events_without_patient_data(cli: Cli, database: Database) -> None:
    _record(database, 6)
    result = cli("audit", "tail", "--limit", "3")
    lines = result.out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("#4  2026-03-01T08:00:03.000000Z  hub-north  read (R)  success")
    assert lines[0].endswith("3 entities")
    assert lines[1].split()[0] == "#5"
    assert "search-type" in lines[1]
    assert result.err.strip() == "3 entries"
    for secret in ("Amina", "chart-", "Patient/", "Observation/"):
        assert secret not in result.out


# -- serve ----------------------------------------------------------------------------------------


def _wait_for(server: subprocess.Popen[bytes], url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            assert server.poll() is None, "the server stopped"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


def test_serve_runs_central_under_uvicorn(tmp_path: Path) -> None:
    """A hub registered with the CLI gets a token over real HTTP and reads with it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CENTRAL_DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
        "CENTRAL_BASE_URL": base,
    }
    path, key = key_file(tmp_path)
    registered = main(
        ["client", "add", "--id", "hub-north", "--region", "north", "--jwk", str(path)],
        env=env,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert registered == 0
    server = subprocess.Popen(
        [sys.executable, "-m", "central", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        metadata = _wait_for(server, f"{base}/fhir/metadata")
        assert metadata.status_code == 200, metadata.text
        assert metadata.json()["resourceType"] == "CapabilityStatement"
        form = token_form(key, "hub-north", "north-1", datetime.now(UTC), f"{base}/auth/token")
        answer = httpx.post(f"{base}/auth/token", data=form, timeout=10)
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        found = httpx.get(
            f"{base}/fhir/Patient", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert found.status_code == 200, found.text
        refused = httpx.get(f"{base}/fhir/Patient", timeout=10)
        assert refused.status_code == 401
    finally:
        server.terminate()
        server.communicate(timeout=10)
