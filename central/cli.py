"""Central's command line: ``python -m central COMMAND``. See README.md, "The central server".

Exit status: 0 done; 1 refused or found wrong (the message says why; a refused command changed
nothing); 2 the command line itself is wrong. Messages name clients, regions, keys and audit
entries, never patients.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, TextIO

import psycopg

from central import audit, auth, clients, imports, sms_commands
from central.auth import CLIENT_RECHECK_SECONDS
from central.clock import Clock, SystemClock
from central.database import Database, open_database
from central.errors import CentralError, Refused
from central.settings import Settings

PROGRESS_EVERY = 100_000


class Io:
    """Where the CLI writes; passed in so tests can read it."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout, self.stderr = stdout, stderr

    def say(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def note(self, text: str) -> None:
        print(text, file=self.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m central", description="The central FHIR server."
    )
    parser.add_argument(
        "--database", metavar="URL", help="the database URL (default: CENTRAL_DATABASE_URL)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run central's HTTP server (uvicorn)")
    serve.add_argument("--host", help="address to listen on (default: CENTRAL_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default: CENTRAL_PORT)")

    commands.add_parser("settings", help="list every setting, its variable and default")

    client = commands.add_parser("client", help="register, list or revoke token clients")
    client_commands = client.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    add = client_commands.add_parser("add", help="register a hub (or the console) and its keys")
    add.add_argument("--id", required=True, help="the client ID (letters, digits, . _ -)")
    add.add_argument("--region", required=True, help="its region tag's code, or * for every one")
    add.add_argument("--jwk", required=True, metavar="FILE", help="its public JWK or JWK Set")
    add.add_argument(
        "--scopes",
        default=clients.DEFAULT_SCOPES,
        help=f"SMART system scopes it may be granted (default: {clients.DEFAULT_SCOPES})",
    )
    client_commands.add_parser("list", help="every client, its region, keys and state")
    revoke = client_commands.add_parser("revoke", help="stop a client: no tokens, old ones fail")
    revoke.add_argument("client_id", metavar="ID")

    trail = commands.add_parser("audit", help="check or read the audit trail")
    trail_commands = trail.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    check = trail_commands.add_parser("verify", help="recompute the hash chain from the start")
    check.add_argument(
        "--progress-every",
        type=_positive,
        default=PROGRESS_EVERY,
        metavar="N",
        help=f"report progress every N entries (default {PROGRESS_EVERY})",
    )
    tail = trail_commands.add_parser("tail", help="the most recent audit events")
    tail.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")

    token = commands.add_parser("token", help="print a bearer token for a registered client")
    token.add_argument("--client", required=True, metavar="ID", help="the client's ID")
    token.add_argument(
        "--scope", default="", help="scopes to ask for (default: all the client may have)"
    )

    generate = commands.add_parser(
        "generate", help="write synthetic patients as Synthea-shaped transaction bundles"
    )
    generate.add_argument("--patients", type=_positive, required=True, help="how many patients")
    generate.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    generate.add_argument("--region", help="tag every resource with this region")
    generate.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="where to write (one bundle per line; - for stdout)",
    )
    sms_commands.add_parser(commands)
    load = commands.add_parser("import", help="load transaction bundles (JSON or one per line)")
    load.add_argument("files", nargs="+", metavar="FILE")
    load.add_argument("--region", help="write as a client of this region (default: every region)")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    clock: Clock | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    io = Io(stdout or sys.stdout, stderr or sys.stderr)
    args = _parse(argv, io)
    if isinstance(args, int):
        return args
    try:
        settings = Settings.from_env(env)
        if args.database:
            settings = dataclasses.replace(settings, database_url=args.database)
            settings.check()
        return run(args, settings, clock or SystemClock(), io)
    except CentralError as exc:
        io.note(f"error: {exc}")
        return 1
    except (sqlite3.DatabaseError, psycopg.Error) as exc:
        # The driver's words name the database and the trouble (locked, full, refused), no data.
        io.note(f"error: central's database could not be used: {exc}")
        return 1


def _parse(argv: Sequence[str], io: Io) -> argparse.Namespace | int:
    """The parsed command line, or the exit status argparse chose (2 for a wrong one, 0 for
    --help), with its messages written to ``io``."""
    with redirect_stdout(io.stdout), redirect_stderr(io.stderr):
        try:
            return build_parser().parse_args(argv)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 2


Command = Callable[[argparse.Namespace, Database, Settings, Clock, Io], int]


def run(args: argparse.Namespace, settings: Settings, clock: Clock, io: Io) -> int:
    if args.command == "settings":
        for variable, default, text in Settings.documented():
            io.say(f"{variable} (default {default}): {text}")
        return 0
    if args.command == "serve":
        _serve(args, settings, clock)
        return 0
    if args.command == "generate":
        return imports.generate(args.patients, args.seed, args.region, args.out, io)
    commands: dict[tuple[str, str], Command] = {
        ("client", "add"): _client_add,
        ("client", "list"): _client_list,
        ("client", "revoke"): _client_revoke,
        ("audit", "verify"): _audit_verify,
        ("audit", "tail"): _audit_tail,
        ("token", ""): _token,
        **{("sms", action): sms_commands.run for action in sms_commands.ACTIONS},
        ("import", ""): lambda a, db, s, c, o: imports.load(
            a.files, a.region, database=db, settings=s, clock=c, io=o
        ),
    }
    action = getattr(args, f"{args.command}_command", "")
    database = open_database(settings.database_url, pool_size=2)
    try:
        database.create()
        return commands[args.command, action](args, database, settings, clock, io)
    finally:
        database.close()


def _serve(args: argparse.Namespace, settings: Settings, clock: Clock) -> None:
    # Imported here: the other commands need neither the web stack nor the FHIR layer.
    import uvicorn  # noqa: PLC0415

    from central.app import create_app  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host = args.host or settings.host
    port = args.port or settings.port
    if settings.workers > 1:
        # Each worker process builds the same settings from the same environment.
        uvicorn.run(
            "central.asgi:app",
            factory=True,
            workers=settings.workers,
            host=host,
            port=port,
            log_level="info",
        )
        return
    uvicorn.run(create_app(settings, clock=clock), host=host, port=port, log_level="info")


# -- clients --------------------------------------------------------------------------------------


def _token(
    args: argparse.Namespace, database: Database, settings: Settings, clock: Clock, io: Io
) -> int:
    answer = auth.operator_token(database, settings, args.client, args.scope, clock)
    io.say(answer["access_token"])
    io.note(f"valid {answer['expires_in']} s, scopes: {answer['scope']}")
    return 0


def _client_add(
    args: argparse.Namespace, database: Database, settings: Settings, clock: Clock, io: Io
) -> int:
    jwks = _read_jwk(Path(args.jwk))
    with database.write() as session:
        added = clients.add_client(
            session, args.id, args.region, jwks, args.scopes, now=clock.now()
        )
    io.say(f"added client {added.client_id}: {_describe(added)}")
    io.note(f"its assertions' aud must be {settings.token_url}")
    return 0


def _read_jwk(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f"cannot read the JWK file {path}: {exc}") from None
    try:
        found = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refused(f"{path} is not JSON (line {exc.lineno}): give a JWK or a JWK Set") from None
    if not isinstance(found, dict):
        raise Refused(f"{path} holds no JSON object: give a JWK or a JWK Set")
    return found


def _client_list(
    _args: argparse.Namespace, database: Database, _settings: Settings, _clock: Clock, io: Io
) -> int:
    with database.read() as session:
        found = clients.list_clients(session)
    for client in found:
        io.say(f"{client.client_id}  {_describe(client)}")
    io.note(f"{len(found)} clients")
    return 0


def _client_revoke(
    args: argparse.Namespace, database: Database, _settings: Settings, clock: Clock, io: Io
) -> int:
    with database.write() as session:
        before = clients.get_client(session, args.client_id)
        after = clients.revoke_client(session, args.client_id, now=clock.now())
    if before is not None and not before.active:
        io.say(f"{after.client_id} was already revoked at {after.revoked_at}")
        return 0
    io.say(
        f"revoked {after.client_id}: it gets no new tokens, and the ones it holds stop working "
        f"within {CLIENT_RECHECK_SECONDS:g} seconds"
    )
    return 0


def _describe(client: clients.Client) -> str:
    keys = ", ".join(f"{k['kid']} ({clients.algorithm_of(k)})" for k in client.keys)
    state = (
        f"revoked {client.revoked_at}" if client.revoked_at else f"active since {client.created_at}"
    )
    return f"region {client.region}  {state}  keys {keys}  scopes {' '.join(client.scopes)}"


# -- the audit trail ------------------------------------------------------------------------------


def _audit_verify(
    args: argparse.Namespace, database: Database, _settings: Settings, _clock: Clock, io: Io
) -> int:
    reported = 0

    def show_progress(done: int, total: int) -> None:
        nonlocal reported
        if done - reported >= args.progress_every and done < total:
            io.note(f"verified {done} of {total} entries")
            reported = done

    report = audit.verify(database, progress=show_progress)
    if not report.intact:
        io.say(f"audit trail BROKEN at entry {report.first_bad_seq}: {report.reason}")
        io.note(f"the {report.entries} entries before it are intact")
        return 1
    io.say(f"audit trail intact: {report.entries} entries")
    if report.entries:
        io.note(
            f"entry {report.entries} has hash {report.head_hash}: keep this line apart from "
            "the database, to show later that no entry was cut off the end"
        )
    return 0


def _audit_tail(
    args: argparse.Namespace, database: Database, _settings: Settings, _clock: Clock, io: Io
) -> int:
    found = audit.recent(database, args.limit)
    for entry in found:
        outcome = audit.OUTCOMES.get(entry.outcome, entry.outcome)
        io.say(
            f"#{entry.seq}  {entry.recorded}  {entry.client}  {entry.interaction} "
            f"({entry.action})  {outcome}  {entry.entity_count} entities"
        )
    io.note(f"{len(found)} entries")
    return 0
