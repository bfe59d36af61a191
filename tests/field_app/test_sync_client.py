"""Syncing real tablets: encrypted stores, the sync client, and a real PeerServer under uvicorn.

Two tablets each have their own SQLCipher store in ``tmp_path``. One serves (``PeerServer``,
as ``serve-peer`` runs it) on a free port on localhost; the other syncs with it through
``field_app.syncing.sync`` or the CLI. The retry policy is tested against ``httpx.MockTransport``
with an injected ``sleep``; a sync cut half-way wraps the real transport.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from care_record import Chart, FixedClock
from care_record.sync import (
    DocSnapshot,
    DocUpdate,
    SyncRequest,
    SyncResponse,
    absorb,
    build_request,
    decode_frame,
    encode_frame,
    respond,
    signed_message,
)
from care_record.sync import (
    Session as SyncSession,
)
from care_record.sync.memory import MemoryReplica
from field_app import Session, Settings, init_store, unlock
from field_app.cli import main
from field_app.errors import HubUnreachable, SyncRefused
from field_app.patients import register_patient
from field_app.peer import PairingSigner, PeerServer
from field_app.replica import StoreReplica
from field_app.store import Store
from field_app.syncing import DeviceSigner, Identity, Link, SyncReport, post_frame, sync
from field_app.visits import write_visit
from tests.serving import run_in_thread

USER = "amina"
PIN = "482913"
FAST_SCRYPT = 12
CODE = "27182818"
ZONE = "Africa/Dar_es_Salaam"

MakeSettings = Callable[..., Settings]


def patient(number: int) -> dict[str, Any]:
    return {
        "given": f"Neema{number}",
        "family": "Mollel",
        "sex": "female",
        "birth_date": "1998-11-02",
        "phone": "+255754000111",
        "village": "Kijiji",
    }


# -- two tablets and a server -----------------------------------------------------------------


@dataclass
class Peer:
    """The serving tablet: its session, its address, and what it said."""

    session: Session
    server: PeerServer
    url: str
    said: list[str]


@pytest.fixture
def serving_tablet(make_settings: MakeSettings, clock: FixedClock) -> Iterator[Session]:
    opened = init_store(make_settings("serving"), clock, USER, PIN)
    yield opened
    opened.lock()


@pytest.fixture
def syncing_tablet(make_settings: MakeSettings, clock: FixedClock) -> Iterator[Session]:
    opened = init_store(make_settings("syncing"), clock, USER, PIN)
    yield opened
    opened.lock()


@pytest.fixture
def peer(serving_tablet: Session, clock: FixedClock) -> Iterator[Peer]:
    said: list[str] = []
    app = PeerServer(serving_tablet, CODE, clock, on_sync=said.append)
    server, thread, url = run_in_thread(app)
    yield Peer(serving_tablet, app, url, said)
    server.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def peer_name(peer: Peer) -> str:
    return f"peer:{peer.session.keys.store_id()}"


def link_to(
    peer: Peer,
    tablet: Session,
    client: httpx.Client,
    clock: FixedClock,
    *,
    code: str = CODE,
    **options: Any,
) -> Link:
    signer = PairingSigner(tablet.keys.store_id(), code, clock)
    return Link(client, peer.url, signer, **options)


def sync_with(
    peer: Peer, tablet: Session, client: httpx.Client, clock: FixedClock, **options: Any
) -> SyncReport:
    link = link_to(peer, tablet, client, clock, sleep=_no_sleep)
    return sync(tablet.store, link, peer=peer_name(peer), **options)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"nothing should be retried here (asked to wait {seconds} s)")


def documents(store: Store) -> dict[str, tuple[str, bytes]]:
    """Every document in a store: id -> (kind, heads key), as the store indexes them."""
    rows = store.db.execute("SELECT id, kind, heads FROM charts ORDER BY id")
    return {r[0]: (r[1], bytes(r[2])) for r in rows}


def snapshot(store: Store) -> dict[str, Any]:
    """What a store holds, charts and sync memory, to show that nothing was written."""
    tables = ["charts", "tasks", "sync_peer_heads", "sync_pending_acks", "sync_dropped"]
    present = set(store.db.table_names())
    return {
        table: sorted(map(tuple, store.db.execute(f"SELECT * FROM {table}")))  # noqa: S608
        if table in present
        else []
        for table in tables
    }


def assert_same_charts(one: Store, other: Store) -> None:
    assert documents(one) == documents(other)
    for chart_id in one.chart_ids():
        assert one.get_chart(chart_id).view() == other.get_chart(chart_id).view()


# -- StoreReplica keeps the promises MemoryReplica makes ------------------------------------------


def store_replica(tablet: Session, initiator: bool) -> StoreReplica:
    return StoreReplica(tablet.store, initiator=initiator)


def memory_replica(_tablet: Session, initiator: bool) -> MemoryReplica:
    return MemoryReplica(_initiator=initiator)


REPLICAS = {"store": store_replica, "memory": memory_replica}


def held(replica: StoreReplica | MemoryReplica, doc_id: str) -> bytes:
    stored = replica.get(doc_id)
    assert stored is not None, doc_id
    return stored.data


def a_chart(number: int, clock: FixedClock) -> Chart:
    return Chart.new_patient(patient(number), author="registrar", clock=clock)


@pytest.mark.parametrize("kind", sorted(REPLICAS))
def test_a_replica_keeps_documents_and_what_a_peer_holds(
    kind: str, syncing_tablet: Session, clock: FixedClock
) -> None:
    replica = REPLICAS[kind](syncing_tablet, True)
    chart = a_chart(1, clock)
    assert replica.get(chart.id) is None
    assert replica.peer_heads("hub", chart.id) is None

    replica.put(chart.id, "patient", chart.save(), chart.heads)

    stored = replica.get(chart.id)
    assert stored is not None
    assert (stored.doc, stored.kind, stored.data, stored.heads) == (
        chart.id,
        "patient",
        chart.save(),
        chart.heads,
    )
    assert list(replica.outgoing("hub")) == [chart.id]  # new here: the initiator sends it
    replica.set_peer_heads("hub", chart.id, chart.heads)
    assert replica.peer_heads("hub", chart.id) == chart.heads
    assert list(replica.outgoing("hub")) == []
    chart.set_pregnancy_status("pregnant")
    replica.put(chart.id, "patient", chart.save(), chart.heads)
    assert list(replica.outgoing("hub")) == [chart.id]
    replica.forget_peer("hub", chart.id)
    assert replica.peer_heads("hub", chart.id) is None


@pytest.mark.parametrize("kind", sorted(REPLICAS))
def test_a_responding_replica_sends_new_documents_as_snapshots_in_a_stable_order(
    kind: str, syncing_tablet: Session, clock: FixedClock
) -> None:
    replica = REPLICAS[kind](syncing_tablet, False)
    charts = [a_chart(n, clock) for n in range(5)]
    for chart in charts:
        replica.put(chart.id, "patient", chart.save(), chart.heads)

    assert list(replica.outgoing("peer")) == []
    assert list(replica.missing("peer")) == sorted(c.id for c in charts)
    replica.set_peer_heads("peer", charts[0].id, [])
    assert charts[0].id not in list(replica.missing("peer"))
    assert list(replica.outgoing("peer")) == [charts[0].id]


@pytest.mark.parametrize("kind", sorted(REPLICAS))
def test_a_replica_remembers_acks_and_drops_until_reported(
    kind: str, syncing_tablet: Session, clock: FixedClock
) -> None:
    replica = REPLICAS[kind](syncing_tablet, True)
    chart = a_chart(1, clock)
    replica.put(chart.id, "patient", chart.save(), chart.heads)
    replica.add_pending_ack("hub", chart.id, chart.heads)
    assert [(a.doc, a.heads) for a in replica.pending_acks("hub")] == [(chart.id, chart.heads)]
    assert replica.pending_acks("other") == []
    replica.clear_pending_acks("hub", [chart.id])
    assert replica.pending_acks("hub") == []
    replica.set_peer_heads("hub", chart.id, chart.heads)

    replica.drop("hub", chart.id, "assigned to another health worker")

    assert replica.get(chart.id) is None
    assert replica.peer_heads("hub", chart.id) is None
    assert replica.dropped_docs("hub") == [chart.id]
    replica.clear_dropped("hub", [chart.id])
    assert replica.dropped_docs("hub") == []


@pytest.mark.parametrize("responder", sorted(REPLICAS))
@pytest.mark.parametrize("initiator", sorted(REPLICAS))
def test_any_two_replicas_sync_the_same_way(
    initiator: str,
    responder: str,
    serving_tablet: Session,
    syncing_tablet: Session,
    clock: FixedClock,
) -> None:
    """The exchange of the engine tests, with the tablet store on either side."""
    there = REPLICAS[responder](serving_tablet, False)
    here = REPLICAS[initiator](syncing_tablet, True)
    charts = [a_chart(n, clock) for n in range(3)]
    for chart in charts:
        there.put(chart.id, "patient", chart.save(), chart.heads)

    def one_sync() -> list[tuple[SyncRequest, SyncResponse]]:
        session, trips = SyncSession("them"), []
        while True:
            request = build_request(here, session, max_snapshot_bytes=1 << 20)
            request = decode_frame(encode_frame(request), SyncRequest)
            answer = respond(there, "me", request, server_time="")
            answer = decode_frame(encode_frame(answer), SyncResponse)
            trips.append((request, answer))
            if not absorb(here, session, request, answer).more:
                return trips

    first = one_sync()
    assert len(first) == 1
    assert sorted(s.doc for s in first[0][1].snapshots) == sorted(c.id for c in charts)
    mine = Chart.load(held(here, charts[0].id), author="me", clock=clock)
    mine.set_pregnancy_status("pregnant")
    here.put(mine.id, "patient", mine.save(), mine.heads)
    theirs = charts[0]
    theirs.set_pregnancy_status("not_pregnant")
    there.put(theirs.id, "patient", theirs.save(), theirs.heads)

    second = one_sync()

    assert len(second) == 1
    (request, answer) = second[0]
    assert [u.doc for u in request.updates] == [mine.id]
    assert answer.applied == [0]
    assert [u.doc for u in answer.updates] == [mine.id]
    for doc_id in (c.id for c in charts):
        here_heads = Chart.load(held(here, doc_id), author="me", clock=clock).heads
        assert sorted(here_heads) == sorted(
            Chart.load(held(there, doc_id), author="x", clock=clock).heads
        )
    merged = Chart.load(held(here, mine.id), author="me", clock=clock)
    assert [c.path for c in merged.view().review_list] == ["pregnancy_status"]
    assert len(one_sync()) == 1


# -- two real tablets through a real PeerServer ---------------------------------------------------


def test_a_first_sync_brings_every_chart_in_one_round_trip(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    served = peer.session.store
    ids = [register_patient(served, patient(n)) for n in range(12)]
    write_visit(served, ids[0], {"systolic": 150, "diastolic": 95}, zone=ZONE)

    report = sync_with(peer, syncing_tablet, http, clock)

    assert (report.round_trips, report.received, report.new, report.sent) == (1, 12, 12, 0)
    assert report.quarantined == report.dropped == report.kept == []
    assert_same_charts(served, syncing_tablet.store)
    assert len(syncing_tablet.store.get_chart(ids[0]).view().records("encounters")) == 1
    assert peer.said == ["synced with a peer: 0 charts in, 12 out"]
    again = sync_with(peer, syncing_tablet, http, clock)  # the acks go up; nothing else
    assert (again.round_trips, again.received, again.sent) == (1, 0, 0)


def test_charts_made_on_the_syncing_tablet_reach_the_serving_one(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    ids = [register_patient(syncing_tablet.store, patient(n)) for n in range(3)]

    report = sync_with(peer, syncing_tablet, http, clock)

    assert (report.round_trips, report.sent, report.received) == (1, 3, 0)
    assert sorted(peer.session.store.chart_ids()) == sorted(ids)
    assert_same_charts(peer.session.store, syncing_tablet.store)


def test_concurrent_edits_of_one_patient_converge_with_the_conflict_listed_on_both(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    served, here = peer.session.store, syncing_tablet.store
    patient_id = register_patient(served, patient(1))
    sync_with(peer, syncing_tablet, http, clock)
    for store, phone in ((served, "+255700000001"), (here, "+255700000002")):
        chart = store.get_chart(patient_id)
        chart.update_demographics({"phone": phone})
        store.put_chart(chart)
    visit_there = write_visit(served, patient_id, {"pulse": 88}, zone=ZONE)
    visit_here = write_visit(here, patient_id, {"pulse": 72}, zone=ZONE)

    report = sync_with(peer, syncing_tablet, http, clock)

    assert (report.round_trips, report.sent, report.received) == (1, 1, 1)
    assert_same_charts(served, here)
    for store in (served, here):
        view = store.get_chart(patient_id).view()
        assert [c.path for c in view.review_list] == ["phone"]
        assert {e.value for e in view.review_list[0].values} == {"+255700000001", "+255700000002"}
        assert set(view.collections["encounters"]) == {visit_there, visit_here}
        assert store.with_conflicts() == [patient_id]
        assert store.summary(patient_id).conflicts == 1


def test_pages_of_new_charts_arrive_with_progress(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    served = peer.session.store
    for n in range(30):
        register_patient(served, patient(n))
    progress: list[str] = []

    report = sync_with(
        peer, syncing_tablet, http, clock, progress=progress.append, max_snapshot_bytes=4_000
    )

    assert report.new == 30
    assert report.round_trips == len(progress) + 1 > 3
    assert progress[0].startswith("received ")
    assert progress[0].endswith(" of 30 new charts")
    assert_same_charts(served, syncing_tablet.store)


def test_a_damaged_update_is_set_aside_on_the_serving_tablet_and_the_rest_applied(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    here = syncing_tablet.store
    ids = sorted(register_patient(here, patient(n)) for n in range(2))
    replica = StoreReplica(here, initiator=True)
    request = build_request(replica, SyncSession(peer_name(peer)), max_snapshot_bytes=1 << 20)
    spoiled = request.updates[1]
    request.updates[1] = DocUpdate(spoiled.doc, spoiled.kind, [b"garbage"], spoiled.heads)
    body = encode_frame(request)
    signer = PairingSigner(syncing_tablet.keys.store_id(), CODE, clock)

    answer = http.post(
        f"{peer.url}/sync", content=body, headers=signer.headers("POST", "/sync", body)
    )

    assert answer.status_code == 200
    response = decode_frame(answer.content, SyncResponse)
    assert response.applied == [0]
    assert [(n.doc, n.code) for n in response.quarantined] == [(ids[1], "quarantined")]
    assert peer.session.store.chart_ids() == [ids[0]]
    set_aside = StoreReplica(peer.session.store, initiator=False).quarantined()
    assert [q["doc"] for q in set_aside] == [ids[1]]
    assert "changes that cannot be read" in set_aside[0]["reason"]
    # The tablet still holds the chart and sends it whole at its next sync.
    report = sync_with(peer, syncing_tablet, http, clock)
    assert report.sent == 2
    assert_same_charts(peer.session.store, here)


def test_an_update_naming_one_chart_but_holding_another_is_set_aside(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    served = peer.session.store
    patient_id = register_patient(served, patient(1))
    history = served.get_chart(patient_id).document
    first_changes = [c.raw_bytes for c in history.get_changes([])]
    visit = write_visit(served, patient_id, {"pulse": 88}, zone=ZONE)
    held_there = snapshot(served)
    # The chart's first change, sent as if it were the whole of a chart never seen before.
    body = encode_frame(
        SyncRequest(
            updates=[DocUpdate("01950000-0000-7000-8000-00000000dead", "patient", first_changes)]
        )
    )
    signer = PairingSigner(syncing_tablet.keys.store_id(), CODE, clock)

    answer = http.post(
        f"{peer.url}/sync", content=body, headers=signer.headers("POST", "/sync", body)
    )

    assert answer.status_code == 200
    response = decode_frame(answer.content, SyncResponse)
    assert response.applied == []
    assert [n.code for n in response.quarantined] == ["quarantined"]
    assert "another chart" in response.quarantined[0].detail
    assert snapshot(served) == held_there
    assert visit in served.get_chart(patient_id).view().collections["encounters"]


def test_a_snapshot_naming_one_chart_but_holding_another_is_set_aside_on_the_tablet(
    syncing_tablet: Session, clock: FixedClock
) -> None:
    store = syncing_tablet.store
    patient_id = register_patient(store, patient(1))
    older = store.get_chart(patient_id).save()
    visit = write_visit(store, patient_id, {"pulse": 88}, zone=ZONE)
    other = Chart.new_patient(patient(2), author="registrar", clock=clock)
    replica = StoreReplica(store, initiator=True)
    session = SyncSession("hub")
    request = build_request(replica, session, max_snapshot_bytes=1 << 20)
    response = SyncResponse(
        snapshots=[
            DocSnapshot("01950000-0000-7000-8000-00000000dead", "patient", older, []),
            DocSnapshot(other.id, "patient", other.save(), other.heads),
        ]
    )

    with store.transaction():
        outcome = absorb(replica, session, request, response)

    assert [n.doc for n in outcome.quarantined] == ["01950000-0000-7000-8000-00000000dead"]
    assert outcome.new == 1
    assert sorted(store.chart_ids()) == sorted([patient_id, other.id])
    assert visit in store.get_chart(patient_id).view().collections["encounters"]
    assert [q["doc"] for q in replica.quarantined()] == ["01950000-0000-7000-8000-00000000dead"]


# -- the CLI ------------------------------------------------------------------------------------


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "FIELD_APP_DATA": str(settings.data_dir),
        "FIELD_APP_SCRYPT_LOG2_N": str(FAST_SCRYPT),
        "FIELD_APP_PIN": PIN,
    }


def run_cli(settings: Settings, clock: FixedClock, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        list(argv),
        env=cli_env(settings),
        clock=clock,
        stdin=io.StringIO(""),
        stdout=out,
        stderr=err,
    )
    return code, out.getvalue(), err.getvalue()


REPORT_LINE = re.compile(
    r"sent (\d+) charts, received (\d+) \((\d+) new\) in (\d+) round trips?; "
    r"(\d+\.\d) kB up, (\d+\.\d) kB down"
)


def test_the_cli_syncs_with_a_peer_and_prints_the_report(
    peer: Peer, make_settings: MakeSettings, clock: FixedClock
) -> None:
    ids = [register_patient(peer.session.store, patient(n)) for n in range(5)]
    settings = make_settings("cli")
    init_store(settings, clock, USER, PIN).lock()

    code, out, err = run_cli(settings, clock, "sync", "--peer", peer.url, "--code", CODE)

    assert code == 0, err
    assert err == f"syncing with the tablet at {peer.url} ...\n"
    found = REPORT_LINE.fullmatch(out.strip())
    assert found is not None, out
    sent, received, new, trips, up, down = found.groups()
    assert (sent, received, new, trips) == ("0", "5", "5", "1")
    assert float(up) < 0.1 < float(down)  # an empty request up, five charts down
    code, out, _ = run_cli(settings, clock, "patient", "search", "neema3")
    assert code == 0
    assert ids[3] in out


def test_the_cli_refuses_a_wrong_pairing_code_and_changes_nothing(
    peer: Peer, make_settings: MakeSettings, clock: FixedClock
) -> None:
    register_patient(peer.session.store, patient(1))
    settings = make_settings("cli")
    session = init_store(settings, clock, USER, PIN)
    register_patient(session.store, patient(2))
    before_here = snapshot(session.store)
    session.lock()
    before_there = snapshot(peer.session.store)

    code, out, err = run_cli(settings, clock, "sync", "--peer", peer.url, "--code", "00000000")

    assert (code, out) == (1, "")
    assert err.endswith("error: wrong pairing code\n")
    assert snapshot(peer.session.store) == before_there
    again = unlock(settings, clock, USER, PIN)  # a fresh unlock, as another process would
    try:
        assert snapshot(again.store) == before_here
    finally:
        again.lock()


def test_the_cli_asks_for_the_pairing_code(
    peer: Peer, make_settings: MakeSettings, clock: FixedClock
) -> None:
    settings = make_settings("cli")
    init_store(settings, clock, USER, PIN).lock()

    code, _, err = run_cli(settings, clock, "sync", "--peer", peer.url)

    assert code == 1
    assert "give the pairing code the other tablet shows: --code CODE" in err


# -- what the serving tablet refuses --------------------------------------------------------------


def test_a_wrong_pairing_code_is_refused_and_after_five_everything_is(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    register_patient(peer.session.store, patient(1))
    register_patient(syncing_tablet.store, patient(2))
    there, here = snapshot(peer.session.store), snapshot(syncing_tablet.store)
    wrong = link_to(peer, syncing_tablet, http, clock, code="12345678", sleep=_no_sleep)

    for _ in range(5):
        with pytest.raises(SyncRefused, match=r"^wrong pairing code$") as refused:
            sync(syncing_tablet.store, wrong, peer=peer_name(peer))
        assert refused.value.code == "bad_signature"

    right = link_to(peer, syncing_tablet, http, clock, sleep=_no_sleep)
    with pytest.raises(SyncRefused, match="too many bad pairing codes") as closed:
        sync(syncing_tablet.store, right, peer=peer_name(peer))
    assert closed.value.code == "closed"
    assert "start serve-peer again" in str(closed.value)
    assert snapshot(peer.session.store) == there
    assert snapshot(syncing_tablet.store) == here
    assert peer.said == []


def signed_post(
    peer: Peer, client: httpx.Client, headers: dict[str, str], body: bytes
) -> httpx.Response:
    return client.post(f"{peer.url}/sync", content=body, headers=headers)


def a_request_with_a_new_chart(tablet: Session) -> bytes:
    register_patient(tablet.store, patient(7))
    replica = StoreReplica(tablet.store, initiator=True)
    return encode_frame(build_request(replica, SyncSession("p"), max_snapshot_bytes=1 << 20))


def test_a_replayed_request_is_refused_and_applied_once(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    body = a_request_with_a_new_chart(syncing_tablet)
    headers = PairingSigner(syncing_tablet.keys.store_id(), CODE, clock).headers(
        "POST", "/sync", body
    )
    assert signed_post(peer, http, headers, body).status_code == 200
    held = snapshot(peer.session.store)

    again = signed_post(peer, http, headers, body)

    assert again.status_code == 409
    assert again.json() == {"error": "replayed", "detail": "this request was already received"}
    assert snapshot(peer.session.store) == held
    assert len(peer.session.store.chart_ids()) == 1


def test_a_body_changed_after_signing_is_refused_and_not_applied(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    signed = encode_frame(SyncRequest())
    headers = PairingSigner(syncing_tablet.keys.store_id(), CODE, clock).headers(
        "POST", "/sync", signed
    )
    changed = a_request_with_a_new_chart(syncing_tablet)
    held = snapshot(peer.session.store)

    answer = signed_post(peer, http, headers, changed)

    assert answer.status_code == 401
    assert answer.json() == {"error": "bad_signature", "detail": "wrong pairing code"}
    assert snapshot(peer.session.store) == held
    assert peer.said == []


def headers_for(
    tablet: Session, clock: FixedClock, body: bytes, **change: str | None
) -> dict[str, str]:
    headers = PairingSigner(tablet.keys.store_id(), CODE, clock).headers("POST", "/sync", body)
    for name, value in change.items():
        header = {"device": "X-Device", "time": "X-Time", "signature": "X-Signature"}[name]
        if value is None:
            del headers[header]
        else:
            headers[header] = value
    return headers


UNSIGNED: list[tuple[dict[str, str | None], str]] = [
    ({"signature": None}, "unsigned"),
    ({"time": None}, "unsigned"),
    ({"device": None}, "unsigned"),
    ({"signature": "not base64!"}, "unsigned"),
    ({"time": "soon"}, "unsigned"),
    ({"signature": base64.b64encode(b"\0" * 32).decode()}, "bad_signature"),
    ({"device": ""}, "bad_signature"),
]


@pytest.mark.parametrize("case", UNSIGNED, ids=[f"{c}-{e}" for c, e in UNSIGNED])
def test_a_request_not_signed_with_the_pairing_code_is_refused(
    peer: Peer,
    syncing_tablet: Session,
    http: httpx.Client,
    clock: FixedClock,
    case: tuple[dict[str, str | None], str],
) -> None:
    change, error = case
    body = a_request_with_a_new_chart(syncing_tablet)
    held = snapshot(peer.session.store)

    answer = signed_post(peer, http, headers_for(syncing_tablet, clock, body, **change), body)

    assert (answer.status_code, answer.json()["error"]) == (401, error)
    assert snapshot(peer.session.store) == held


def test_a_request_signed_at_another_time_is_refused(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    body = a_request_with_a_new_chart(syncing_tablet)
    late = FixedClock(clock.now())
    late.advance(timedelta(minutes=6))
    held = snapshot(peer.session.store)

    answer = signed_post(peer, http, headers_for(syncing_tablet, late, body), body)

    assert answer.status_code == 401
    assert answer.json()["error"] == "clock_skew"
    assert snapshot(peer.session.store) == held


def test_a_signed_body_that_is_not_a_frame_is_refused(
    peer: Peer, syncing_tablet: Session, http: httpx.Client, clock: FixedClock
) -> None:
    body = b"RCS1\x00not msgpack"
    held = snapshot(peer.session.store)

    answer = signed_post(peer, http, headers_for(syncing_tablet, clock, body), body)

    assert answer.status_code == 400
    assert answer.json()["error"] == "malformed_frame"
    assert answer.json()["detail"].startswith("damaged sync frame")
    assert snapshot(peer.session.store) == held


def test_other_paths_are_not_found_and_hello_names_the_store(
    peer: Peer, http: httpx.Client
) -> None:
    assert http.get(f"{peer.url}/hello").json() == {"store": peer.session.keys.store_id()}
    missing = http.get(f"{peer.url}/sync")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


# -- retries and back-off -------------------------------------------------------------------------


@dataclass
class Script:
    """A MockTransport handler that plays ``steps`` in turn: an exception to raise, or a
    (status, body) answer."""

    steps: list[type[httpx.HTTPError] | tuple[int, bytes]]
    seen: list[httpx.Request]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        step = self.steps[min(len(self.seen), len(self.steps)) - 1]
        if isinstance(step, tuple):
            return httpx.Response(step[0], content=step[1])
        raise step("the network failed", request=request)


def scripted_link(
    *steps: type[httpx.HTTPError] | tuple[int, bytes], attempts: int = 6
) -> tuple[Link, Script, list[float], Ed25519PrivateKey]:
    script = Script(list(steps), [])
    key = Ed25519PrivateKey.generate()
    identity = Identity("device-1", "https://hub.test", "chw-1", key)
    waits: list[float] = []
    client = httpx.Client(transport=httpx.MockTransport(script))
    link = Link(
        client,
        "https://hub.test",
        DeviceSigner(identity, FixedClock(datetime(2025, 3, 1, 8, 30, tzinfo=UTC))),
        attempts=attempts,
        sleep=waits.append,
    )
    return link, script, waits, key


FRAME = encode_frame(SyncResponse(server_time="now"))


def test_a_lost_connection_is_retried_with_a_doubling_wait() -> None:
    link, script, waits, key = scripted_link(httpx.ConnectError, httpx.ConnectError, (200, FRAME))

    assert post_frame(link, "/sync", b"body") == FRAME

    assert waits == [1.0, 2.0]
    assert len(script.seen) == 3
    nonces = {r.headers["X-Nonce"] for r in script.seen}
    assert len(nonces) == 3  # each try is signed afresh: the hub would refuse a repeated nonce
    for request in script.seen:
        assert request.content == b"body"
        assert str(request.url) == "https://hub.test/sync"
        message = signed_message(
            "POST", "/sync", int(request.headers["X-Time"]), request.headers["X-Nonce"], b"body"
        )
        key.public_key().verify(base64.b64decode(request.headers["X-Signature"]), message)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_a_busy_or_failing_hub_is_retried(status: int) -> None:
    link, _, waits, _ = scripted_link((status, b""), httpx.ReadTimeout, (200, FRAME))

    assert post_frame(link, "/sync", b"body") == FRAME
    assert waits == [1.0, 2.0]


def test_when_every_try_fails_the_message_says_the_work_is_safe() -> None:
    link, script, waits, _ = scripted_link(httpx.ConnectError)

    with pytest.raises(HubUnreachable) as failed:
        post_frame(link, "/sync", b"body")

    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert len(script.seen) == 6
    assert str(failed.value).startswith("could not sync after 6 tries (the network failed).")
    assert "Your work is safe on this tablet" in str(failed.value)


def test_waits_double_up_to_a_minute() -> None:
    link, _, waits, _ = scripted_link(httpx.ConnectError, attempts=10)

    with pytest.raises(HubUnreachable):
        post_frame(link, "/sync", b"body")

    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413])
def test_a_refusal_is_not_retried(status: int) -> None:
    body = json.dumps({"error": "malformed_frame", "detail": "the body is not a sync frame"})
    link, script, waits, _ = scripted_link((status, body.encode()))

    with pytest.raises(SyncRefused, match=r"^the body is not a sync frame$") as refused:
        post_frame(link, "/sync", b"body")

    assert refused.value.code == "malformed_frame"
    assert len(script.seen) == 1
    assert waits == []


def test_a_refusal_without_json_still_says_who_refused() -> None:
    link, script, waits, _ = scripted_link((400, b"<html>Bad Request</html>"))

    with pytest.raises(SyncRefused, match=r"^the hub refused the sync \(400\)$"):
        post_frame(link, "/sync", b"body")
    assert (len(script.seen), waits) == (1, [])


def test_a_clock_skew_is_corrected_once_and_retried_at_once() -> None:
    skew = json.dumps(
        {"error": "clock_skew", "detail": "clocks differ", "server_time": "2025-03-01T09:00:00"}
    )
    link, script, waits, _ = scripted_link((401, skew.encode()), (200, FRAME))
    told: list[str] = []
    link.on_skew = told.append

    assert post_frame(link, "/sync", b"body") == FRAME
    assert told == ["2025-03-01T09:00:00"]
    assert (len(script.seen), waits) == (2, [])


# -- a sync cut half-way ------------------------------------------------------------------------


class CutAfterAnswer:
    """The real transport, except that the first /sync answer is lost after the server has
    processed the request (the connection drops while the answer travels)."""

    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.cuts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        answer = self.real.handle_request(request)
        content = answer.read()
        answer.close()
        if request.url.path == "/sync" and self.cuts == 0:
            self.cuts += 1
            raise httpx.ReadError("connection reset by peer", request=request)
        return httpx.Response(answer.status_code, headers=answer.headers, content=content)


def edit_both(peer: Peer, tablet: Session, patient_id: str) -> tuple[str, str]:
    visits = []
    for store, phone in ((peer.session.store, "+255700000001"), (tablet.store, "+255700000002")):
        chart = store.get_chart(patient_id)
        chart.update_demographics({"phone": phone})
        store.put_chart(chart)
        visits.append(write_visit(store, patient_id, {"pulse": 80}, zone=ZONE))
    return visits[0], visits[1]


def test_a_sync_cut_half_way_then_synced_again_converges_without_duplicates(
    peer: Peer, syncing_tablet: Session, clock: FixedClock
) -> None:
    patient_id = register_patient(peer.session.store, patient(1))
    with httpx.Client() as plain:
        sync_with(peer, syncing_tablet, plain, clock)
    visits = edit_both(peer, syncing_tablet, patient_id)
    here_before = snapshot(syncing_tablet.store)
    cut = CutAfterAnswer()

    with httpx.Client(transport=httpx.MockTransport(cut)) as flaky:
        link = link_to(peer, syncing_tablet, flaky, clock, attempts=1)
        with pytest.raises(HubUnreachable, match="Your work is safe on this tablet"):
            sync(syncing_tablet.store, link, peer=peer_name(peer))
        # The serving tablet took the changes in; this tablet stored nothing of the answer.
        assert (
            visits[1] in peer.session.store.get_chart(patient_id).view().collections["encounters"]
        )
        assert snapshot(syncing_tablet.store) == here_before

        report = sync(syncing_tablet.store, link, peer=peer_name(peer))

    assert (report.round_trips, report.sent, report.received) == (1, 1, 1)
    assert_same_charts(peer.session.store, syncing_tablet.store)
    for store in (peer.session.store, syncing_tablet.store):
        view = store.get_chart(patient_id).view()
        assert sorted(view.collections["encounters"]) == sorted(visits)
        assert [c.path for c in view.review_list] == ["phone"]


def test_a_cut_answer_is_retried_within_the_same_sync(
    peer: Peer, syncing_tablet: Session, clock: FixedClock
) -> None:
    patient_id = register_patient(peer.session.store, patient(1))
    with httpx.Client() as plain:
        sync_with(peer, syncing_tablet, plain, clock)
    visits = edit_both(peer, syncing_tablet, patient_id)
    waits: list[float] = []

    with httpx.Client(transport=httpx.MockTransport(CutAfterAnswer())) as flaky:
        link = link_to(peer, syncing_tablet, flaky, clock, sleep=waits.append)
        report = sync(syncing_tablet.store, link, peer=peer_name(peer))

    assert waits == [1.0]
    assert report.round_trips == 1
    assert len(peer.said) == 3  # the first sync, the request whose answer was cut, the retry
    assert_same_charts(peer.session.store, syncing_tablet.store)
    for store in (peer.session.store, syncing_tablet.store):
        assert sorted(store.get_chart(patient_id).view().collections["encounters"]) == sorted(
            visits
        )


def test_the_changes_a_cut_sync_sent_are_not_sent_back(
    peer: Peer, syncing_tablet: Session, clock: FixedClock
) -> None:
    # After the cut the serving tablet holds this tablet's visit; the next sync sends the same
    # changes again (ignored there) and gets back only what it lacks.
    patient_id = register_patient(peer.session.store, patient(1))
    with httpx.Client() as plain:
        sync_with(peer, syncing_tablet, plain, clock)
    write_visit(syncing_tablet.store, patient_id, {"pulse": 80}, zone=ZONE)
    replica = StoreReplica(syncing_tablet.store, initiator=True)

    with httpx.Client(transport=httpx.MockTransport(CutAfterAnswer())) as flaky:
        link = link_to(peer, syncing_tablet, flaky, clock, attempts=1)
        with pytest.raises(HubUnreachable):
            sync(syncing_tablet.store, link, peer=peer_name(peer))
        report = sync(syncing_tablet.store, link, peer=peer_name(peer))

    assert (report.sent, report.received) == (1, 0)
    assert replica.pending_acks(peer_name(peer)) == []
    assert_same_charts(peer.session.store, syncing_tablet.store)
