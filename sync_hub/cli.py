"""The hub's command line: ``python -m sync_hub COMMAND``. See README.md, "The regional hub".

Exit status: 0 done; 1 refused (the message says why, and nothing was changed); 2 the command
line itself is wrong. Messages name CHWs, villages, households and devices, never patients.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO, TypeVar

import httpx
import sqlite_utils
import uvicorn

from care_record import Clock, SystemClock
from sync_hub import backoff, catchments, credentials, devices, outbox, pusher, quarantine
from sync_hub.app import create_app
from sync_hub.catchments import HOUSEHOLD, VILLAGE
from sync_hub.downstream import FetchReport
from sync_hub.errors import CentralUnavailable, CredentialsRefused, HubError, Refused
from sync_hub.pusher import PushReport
from sync_hub.settings import Settings
from sync_hub.store import Store

# Runs of a push or fetch while central is unavailable before `push` gives up (about 15 s of
# back-off, longer if central asks for it with Retry-After).
PUSH_ATTEMPTS = 5

T = TypeVar("T")


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

    push = commands.add_parser("push", help="push pending charts to central, fetch its replies")
    push.add_argument(
        "--retry-quarantined",
        action="store_true",
        help="queue the charts central refused again first (after central or the hub was fixed)",
    )
    commands.add_parser("fhir-status", help="the outbox to central: pending, last push, refused")
    commands.add_parser(
        "central-key", help="create the hub's key for central if missing; print its public JWK"
    )
    return parser


class Central:
    """How the CLI reaches central; passed in so tests can give their own transport."""

    def __init__(
        self, http: httpx.Client | None = None, sleep: Callable[[float], None] | None = None
    ) -> None:
        self.http = http
        self.sleep = sleep or time.sleep


def main(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    clock: Clock | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    central: Central | None = None,
) -> int:
    io = Io(stdout or sys.stdout, stderr or sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(env)
        if args.db:
            settings = dataclasses.replace(settings, db=Path(args.db))
        run(args, settings, clock or SystemClock(), io, central or Central())
    except HubError as exc:
        io.note(f"error: {exc}")
        return 1
    except sqlite3.DatabaseError as exc:
        # SQLite's own words name the file and the trouble (locked, full, damaged), no data.
        io.note(f"error: the hub's database could not be used: {exc}")
        return 1
    return 0


def run(
    args: argparse.Namespace, settings: Settings, clock: Clock, io: Io, central: Central
) -> None:
    if args.command == "settings":
        for variable, default, text in Settings.documented():
            io.say(f"{variable} (default {default}): {text}")
        return
    if args.command == "serve":
        _serve(args, settings, clock)
        return
    if args.command == "central-key":
        _central_key(settings, io)
        return
    store = Store(settings.db, busy_timeout_seconds=settings.busy_timeout_seconds)
    store.create()
    if args.command == "push":
        _push(args, settings, store, clock=clock, io=io, central=central)
        return
    if args.command == "fhir-status":
        with store.read() as db:
            _fhir_status(settings, db, clock, io)
        return
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


# -- central ------------------------------------------------------------------------------------


def _push(
    args: argparse.Namespace,
    settings: Settings,
    store: Store,
    *,
    clock: Clock,
    io: Io,
    central: Central,
) -> None:
    link = pusher.link(settings, store, clock, http=central.http)
    try:
        if args.retry_quarantined:
            with store.write() as db:
                count = outbox.requeue_quarantined(db, at=devices.stamp(clock.now()))
            io.note(f"queued {count} quarantined charts again")
        io.say(_pushed_line(_push_all(link, central, io)))
        fetched = FetchReport()
        _retrying(lambda: link.fetcher.fetch(report=fetched), central, io, fetched)
        if fetched.leased_by is not None:
            raise _busy(fetched.leased_by)
        io.say(_fetched_line(fetched))
        if fetched.merged or fetched.tasks_merged:
            # What was merged into charts changed them: push those too, so the queue ends empty.
            io.say(_pushed_line(_push_all(link, central, io)))
    except CredentialsRefused as exc:
        raise CredentialsRefused(
            f"{exc}. Is the hub's key registered at central for client "
            f"{settings.central_client_id}? (`python -m sync_hub central-key` prints it)"
        ) from None
    except CentralUnavailable as exc:
        with store.read() as db:
            pending = outbox.pending_count(db)
        raise CentralUnavailable(
            f"{exc} (gave up after {PUSH_ATTEMPTS} tries; {pending} charts stay queued)"
        ) from None
    finally:
        link.close()


def _push_all(link: pusher.Link, central: Central, io: Io) -> PushReport:
    report = PushReport()

    def show(progress: PushReport) -> None:
        io.note(f"  {_pushed_line(progress)}")

    _retrying(lambda: link.pusher.push_pending(report=report, progress=show), central, io, report)
    if report.leased_by is not None:
        raise _busy(report.leased_by)
    return report


def _retrying(
    step: Callable[[], T], central: Central, io: Io, report: PushReport | FetchReport
) -> T:
    def tell(exc: CentralUnavailable, delay: float) -> None:
        report.retries += 1
        io.note(f"  {exc}; retrying in {delay:.0f} s")

    return backoff.retrying(step, attempts=PUSH_ATTEMPTS, sleep=central.sleep, on_retry=tell)


def _busy(holder: str) -> Refused:
    return Refused(
        f"another hub process ({holder}) is talking to central now; "
        "`fhir-status` shows its progress"
    )


def _pushed_line(report: PushReport) -> str:
    return (
        f"pushed {report.charts} charts ({report.resources} resources) in {report.bundles} "
        f"bundles, {report.retries} retries, {report.splits} splits, "
        f"{report.quarantined} quarantined; {report.pending} pending"
    )


def _fetched_line(report: FetchReport) -> str:
    return (
        f"fetched {report.communications} communications and {report.tasks} tasks in "
        f"{report.pages} pages: {report.merged} messages and {report.tasks_merged} tasks "
        f"merged, {report.accepted} referrals accepted, "
        f"{report.unknown} for patients not on this hub, {report.refused} refused, "
        f"{report.retries} retries; cursor {report.cursor or 'none'}, "
        f"task cursor {report.task_cursor or 'none'}"
    )


def _fhir_status(settings: Settings, db: sqlite_utils.Database, clock: Clock, io: Io) -> None:
    found = outbox.status(db)
    io.say(
        f"central: {settings.central_url or 'not set (SYNC_HUB_CENTRAL_URL): nothing is pushed'}"
    )
    io.say(f"region: {settings.region}  client: {settings.central_client_id}")
    oldest = ""
    if found.oldest_queued_at is not None:
        age = clock.now() - datetime.fromisoformat(found.oldest_queued_at)
        oldest = f", oldest queued {found.oldest_queued_at} ({_age(age.total_seconds())} ago)"
    io.say(f"pending: {found.pending} charts{oldest}")
    io.say(f"last push: {found.last_push_at or 'never'}")
    io.say(f"last fetch: {found.last_fetch_at or 'never'}")
    io.say(f"cursor: {found.cursor or 'none'}")
    io.say(f"task cursor: {found.task_cursor or 'none'}")
    io.say(f"quarantined: {len(found.quarantined)} charts")
    for held in found.quarantined:
        io.say(f"  {held.doc}  version {held.version}  {held.status}  at {held.at}: {held.reason}")


def _age(seconds: float) -> str:
    minutes = int(max(seconds, 0) // 60)
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m"


def _central_key(settings: Settings, io: Io) -> None:
    path = settings.central_key
    if credentials.create_key(path):
        io.note(f"created {path} (readable by its owner only)")
    elif path.stat().st_mode & 0o077:
        io.note(f"warning: {path} is readable by others; run chmod 600 {path}")
    jwk = credentials.public_jwk(credentials.load_key(path))
    io.say(json.dumps(jwk, indent=2))
    io.note(
        "register it at central: save the JSON above as hub.jwk, then run "
        f"python -m central client add --id {settings.central_client_id} "
        f"--region {settings.region} --jwk hub.jwk"
    )
