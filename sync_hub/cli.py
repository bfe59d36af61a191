"""The hub's command line: ``python -m sync_hub COMMAND``. See README.md, "The regional hub".

Exit status: 0 done; 1 refused (the message says why, and nothing was changed); 2 the command
line itself is wrong. Messages name CHWs, villages, households and devices, never patients.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import TextIO

import sqlite_utils
import uvicorn

from care_record import Clock, SystemClock
from sync_hub import catchments, devices, quarantine
from sync_hub.app import create_app
from sync_hub.catchments import HOUSEHOLD, VILLAGE
from sync_hub.errors import HubError, Refused
from sync_hub.settings import Settings
from sync_hub.store import Store


class Io:
    """Where the CLI writes; passed in so tests can read it."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout, self.stderr = stdout, stderr

    def say(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def note(self, text: str) -> None:
        print(text, file=self.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sync_hub", description="The regional hub.")
    parser.add_argument("--db", help="the hub's database file (default: SYNC_HUB_DB)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the hub's HTTP server (uvicorn)")
    serve.add_argument("--host", help="address to listen on (default: SYNC_HUB_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default: SYNC_HUB_PORT)")

    code = commands.add_parser("enroll-code", help="issue a one-time code to enrol a CHW's tablet")
    code.add_argument("--chw", required=True, help="the CHW's name (created if new)")
    code.add_argument(
        "--catchment", metavar="VILLAGE[,VILLAGE...]", help="villages to add to the catchment"
    )
    code.add_argument(
        "--household", action="append", default=[], metavar="ID", help="a household to add"
    )

    catch = commands.add_parser("catchment", help="show or change a CHW's catchment")
    catch.add_argument("--chw", required=True, help="the CHW's name (created if new)")
    for flag, metavar, text in (
        ("--add-village", "V", "add a village (shared if another CHW has it)"),
        ("--remove-village", "V", "remove a village"),
        ("--add-household", "ID", "add a household"),
        ("--remove-household", "ID", "remove a household"),
    ):
        catch.add_argument(flag, action="append", default=[], metavar=metavar, help=text)

    move = commands.add_parser("reassign", help="move a village or household to another CHW")
    which = move.add_mutually_exclusive_group(required=True)
    which.add_argument("--village", help="the village to move")
    which.add_argument("--household", metavar="ID", help="the household to move")
    move.add_argument("--to-chw", required=True, help="the CHW who takes it over")

    commands.add_parser("devices", help="list tablets with their state and last contact")
    revoke = commands.add_parser("revoke", help="cut a tablet off; it erases itself on contact")
    revoke.add_argument("device_id")
    retire = commands.add_parser("retire", help="let a tablet push what it holds, then stop it")
    retire.add_argument("device_id")
    commands.add_parser("quarantine", help="charts that could not be applied, and why")
    commands.add_parser("settings", help="list every setting, its variable and default")
    return parser


def main(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    clock: Clock | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    io = Io(stdout or sys.stdout, stderr or sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(env)
        if args.db:
            settings = dataclasses.replace(settings, db=Path(args.db))
        run(args, settings, clock or SystemClock(), io)
    except HubError as exc:
        io.note(f"error: {exc}")
        return 1
    except sqlite3.DatabaseError as exc:
        # SQLite's own words name the file and the trouble (locked, full, damaged), no data.
        io.note(f"error: the hub's database could not be used: {exc}")
        return 1
    return 0


def run(args: argparse.Namespace, settings: Settings, clock: Clock, io: Io) -> None:
    if args.command == "settings":
        for variable, default, text in Settings.documented():
            io.say(f"{variable} (default {default}): {text}")
        return
    if args.command == "serve":
        _serve(args, settings, clock)
        return
    store = Store(settings.db, busy_timeout_seconds=settings.busy_timeout_seconds)
    store.create()
    commands: dict[str, Callable[[argparse.Namespace, sqlite_utils.Database, Clock, Io], None]] = {
        "enroll-code": lambda a, db, c, o: _enroll_code(a, db, c, o, settings.enroll_code_hours),
        "catchment": _catchment,
        "reassign": _reassign,
        "devices": _devices,
        "revoke": _revoke,
        "retire": _retire,
        "quarantine": _quarantine,
    }
    with store.write() as db:
        commands[args.command](args, db, clock, io)


def _serve(args: argparse.Namespace, settings: Settings, clock: Clock) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host = args.host or settings.host
    port = args.port or settings.port
    uvicorn.run(create_app(settings, clock=clock), host=host, port=port, log_level="info")


def _enroll_code(
    args: argparse.Namespace, db: sqlite_utils.Database, clock: Clock, io: Io, hours: int
) -> None:
    new = catchments.ensure_chw(db, args.chw)
    chw = args.chw.strip()
    villages = [v for v in (args.catchment or "").split(",") if v.strip()]
    if new and not (villages or args.household):
        raise Refused(f"{chw} is a new CHW: give their villages with --catchment")
    _add_all(db, chw, VILLAGE, villages, io)
    _add_all(db, chw, HOUSEHOLD, args.household, io)
    code, expires = devices.issue_code(db, chw, now=clock.now(), hours=hours)
    io.say(code)
    when = expires.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    io.note(f"enrolment code for {chw}: single use, expires {when}")
    _show_catchment(db, chw, io)


def _catchment(args: argparse.Namespace, db: sqlite_utils.Database, _clock: Clock, io: Io) -> None:
    if catchments.ensure_chw(db, args.chw):
        io.note(f"new CHW {args.chw.strip()}")
    chw = args.chw.strip()
    _add_all(db, chw, VILLAGE, args.add_village, io)
    _add_all(db, chw, HOUSEHOLD, args.add_household, io)
    for village in args.remove_village:
        catchments.remove(db, chw, VILLAGE, village)
    for household in args.remove_household:
        catchments.remove(db, chw, HOUSEHOLD, household)
    _show_catchment(db, chw, io)


def _reassign(args: argparse.Namespace, db: sqlite_utils.Database, _clock: Clock, io: Io) -> None:
    chw = catchments.require_chw(db, args.to_chw)
    kind, value = (VILLAGE, args.village) if args.village else (HOUSEHOLD, args.household)
    before = catchments.reassign(db, kind, value, chw)
    count = catchments.charts_in(db, kind, value)
    source = ", ".join(before) if before else "nobody's catchment"
    io.say(f"moved {kind} '{value.strip()}' ({count} charts) from {source} to {chw}")
    if before:
        io.note("their tablets drop those charts at their next sync, after pushing their edits")


def _devices(_args: argparse.Namespace, db: sqlite_utils.Database, _clock: Clock, io: Io) -> None:
    found = devices.all_devices(db)
    for d in found:
        seen = d.last_seen or "never"
        io.say(
            f"{d.id}  {d.chw}  {d.label or '-'}  {d.state} since {d.state_changed_at}  "
            f"last seen {seen}{_delivered(d)}"
        )
    io.note(f"{len(found)} devices")


def _delivered(device: devices.Device) -> str:
    if device.state == devices.REVOKED:
        return f"  (told to erase at {device.told_at})" if device.told_at else "  (not told yet)"
    if device.state == devices.RETIRED and device.told_at:
        return f"  (told at {device.told_at})"
    return ""


def _revoke(args: argparse.Namespace, db: sqlite_utils.Database, clock: Clock, io: Io) -> None:
    device = devices.set_state(db, args.device_id, devices.REVOKED, clock.now())
    io.say(f"revoked {device.id} ({device.chw}): it will erase itself at its next contact")


def _retire(args: argparse.Namespace, db: sqlite_utils.Database, clock: Clock, io: Io) -> None:
    device = devices.set_state(db, args.device_id, devices.RETIRING, clock.now())
    io.say(
        f"retiring {device.id} ({device.chw}): it may push what it holds, "
        "then it is told it is retired"
    )


def _quarantine(
    _args: argparse.Namespace, db: sqlite_utils.Database, _clock: Clock, io: Io
) -> None:
    found = quarantine.held(db)
    for h in found:
        io.say(
            f"#{h.id}  {h.kind} {h.doc}  from device {h.device}  {h.size} bytes  "
            f"first {h.first_at}, last {h.last_at}, {h.times} times: {h.reason}"
        )
    io.note(f"{len(found)} held in quarantine")


def _add_all(db: sqlite_utils.Database, chw: str, kind: str, values: list[str], io: Io) -> None:
    for value in values:
        shared = catchments.add(db, chw, kind, value)
        if shared:
            io.note(f"{kind} '{value.strip()}' is also in the catchment of {', '.join(shared)}")


def _show_catchment(db: sqlite_utils.Database, chw: str, io: Io) -> None:
    found = catchments.catchment_of(db, chw)
    io.note(f"catchment of {chw}: villages {', '.join(found.villages) or '-'}")
    if found.households:
        io.note(f"  households {', '.join(found.households)}")
