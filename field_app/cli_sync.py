"""The CLI's sync commands: ``enroll``, ``sync`` (with the hub or ``--peer``), ``serve-peer``."""

from __future__ import annotations

import argparse
import socket
from typing import TYPE_CHECKING

import httpx

from care_record import Clock
from field_app.errors import BadInput, SyncRefused
from field_app.peer import PairingSigner, PeerServer, pairing_code
from field_app.session import Session, erase
from field_app.syncing import Link, SyncReport, enroll, hub_link, load_identity, sync

if TYPE_CHECKING:
    from field_app.cli import Io


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enrol = commands.add_parser("enroll", help="enrol this tablet with a hub using a one-time code")
    enrol.add_argument(
        "--hub", required=True, help="the hub's address, for example https://hub.example.org"
    )
    enrol.add_argument("--code", required=True, help="the one-time code from the supervisor")
    enrol.add_argument("--label", default=socket.gethostname(), help="a name for this tablet")
    sync_cmd = commands.add_parser("sync", help="sync with the hub (or a peer tablet with --peer)")
    sync_cmd.add_argument(
        "--peer", metavar="URL", help="sync with a tablet running serve-peer instead"
    )
    sync_cmd.add_argument("--code", help="the pairing code the other tablet shows (with --peer)")
    serve = commands.add_parser(
        "serve-peer", help="let another tablet sync with this one, no hub needed"
    )
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")  # noqa: S104 - a LAN server by design
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--code", help="pairing code to use (default: a new random one)")


def run_enroll(args: argparse.Namespace, session: Session, io: Io) -> None:
    with io.http() as client:
        identity = enroll(session.store, client, args.hub, args.code, args.label)
    io.say(
        f"enrolled with {identity.hub_url} as device {identity.device_id} for CHW {identity.chw}"
    )


def run_sync(args: argparse.Namespace, session: Session, io: Io) -> None:
    store, clock = session.store, session.clock
    with io.http() as client:
        if args.peer:
            if not args.code:
                raise BadInput("give the pairing code the other tablet shows: --code CODE")
            link, peer = peer_link(client, args.peer, args.code, session.keys.store_id(), clock)
            io.err(f"syncing with the tablet at {args.peer} ...")
        else:
            link, peer = hub_link(store, client, clock), "hub"
            identity = load_identity(store)
            io.err(f"syncing with the hub at {identity.hub_url if identity else '?'} ...")
        try:
            report = sync(store, link, peer=peer, progress=io.err)
        except SyncRefused as refusal:
            if refusal.command == "erase":
                _wipe(session, io, "the hub has revoked this tablet")
                return
            if refusal.command == "retired":
                # The hub finished retiring this tablet, but the answer that said so was lost
                # (a cut after the hub committed). It retired the tablet only once it held
                # every change the tablet had sent; it will take nothing more from it.
                _wipe(session, io, "this tablet was retired; the charts it sent are on the hub")
                return
            raise
    say_report(report, io)
    if report.command in ("retired", "erase"):
        _wipe(session, io, "this tablet was retired; every chart on it is safe on the hub")


def peer_link(
    client: httpx.Client, url: str, code: str, store_id: str, clock: Clock
) -> tuple[Link, str]:
    base = url.rstrip("/")
    try:
        hello = client.get(f"{base}/hello", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        raise SyncRefused(f"no tablet answers at {base}: is serve-peer running there?") from None
    return Link(client, base, PairingSigner(store_id, code, clock)), f"peer:{hello['store']}"


def run_serve_peer(args: argparse.Namespace, session: Session, io: Io) -> None:
    import uvicorn  # noqa: PLC0415 - only serve-peer needs a server

    code = args.code or pairing_code()
    app = PeerServer(session, code, session.clock, on_sync=io.err)
    io.say(f"pairing code: {code}")
    io.err(f"serving this tablet's charts on port {args.port}; press Ctrl-C to stop")
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", access_log=False
    )
    uvicorn.Server(config).run()


def say_report(report: SyncReport, io: Io) -> None:
    trips = "round trip" if report.round_trips == 1 else "round trips"
    io.say(
        f"sent {report.sent} charts, received {report.received} ({report.new} new) in "
        f"{report.round_trips} {trips}; {report.bytes_sent / 1000:.1f} kB up, "
        f"{report.bytes_received / 1000:.1f} kB down"
    )
    for notice in report.dropped:
        io.say(f"removed chart {notice.doc} from this tablet: {notice.detail}")
    for notice in report.kept:
        io.say(f"kept chart {notice.doc} until its last changes reach the hub: {notice.detail}")
    for notice in report.quarantined:
        io.say(
            f"chart {notice.doc} could not be synced and was set aside for a supervisor: {notice.detail}"
        )


def _wipe(session: Session, io: Io, why: str) -> None:
    settings = session.settings
    session.lock()
    erase(settings)
    io.say(f"{why}: this tablet's data has been erased")
