"""The sync exchange between tablets and a hub, with real charts and every message on the wire.

Tablets are ``MemoryReplica(_initiator=True)``, the hub a ``MemoryReplica()``. Every request
and response goes through ``encode_frame``/``decode_frame`` as the network would carry it. A
``sync`` here is what the tablet's client loop does: build_request -> respond -> absorb until
``not outcome.more``, counting round trips.

The property tests keep a model of the edits, as test_merge.py does: after the replicas are
quiescent, every document has the same heads everywhere, every register holds the last value
each tablet wrote to it (or the value it had before), concurrent values are listed as
conflicts (risky ones in the review list), and every visit and task recorded anywhere is there
exactly once.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import automerge.core as am
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from care_record import Chart, FixedClock, is_risky, vital_observations
from care_record.registers import read_all
from care_record.sync import (
    Absorbed,
    DocUpdate,
    Session,
    SyncRequest,
    SyncResponse,
    absorb,
    build_request,
    changes_since,
    decode_frame,
    encode_frame,
    respond,
)
from care_record.sync.memory import MemoryReplica

START = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
HUB = "hub"  # what a tablet calls its hub
SERVER_TIME = START.isoformat()
ONE_MIB = 1024 * 1024

# -- the wire and the client loop -----------------------------------------------------------------


def over_the_wire(message: Any, kind: type[Any]) -> Any:
    return decode_frame(encode_frame(message), kind)


@dataclass
class Trip:
    """One round trip as the network saw it."""

    request: SyncRequest
    response: SyncResponse
    outcome: Absorbed | None  # None: the response was lost on the way back


@dataclass
class Tablet:
    name: str  # what the hub calls it
    author: str
    actor: bytes
    clock: FixedClock
    replica: MemoryReplica = field(default_factory=lambda: MemoryReplica(_initiator=True))
    trips: list[Trip] = field(default_factory=list)

    def ask(self, session: Session, *, max_snapshot_bytes: int = ONE_MIB) -> SyncRequest:
        """The next request, as the hub will read it."""
        request = build_request(self.replica, session, max_snapshot_bytes=max_snapshot_bytes)
        sent: SyncRequest = over_the_wire(request, SyncRequest)
        return sent


def tablet(number: int) -> Tablet:
    letter = "abcdefgh"[number]
    return Tablet(
        name=f"device-{letter}",
        author=f"chw-{letter}",
        actor=bytes([number + 1]) * 16,
        clock=FixedClock(START + timedelta(seconds=number)),
    )


def answer(hub: MemoryReplica, peer: str, request: SyncRequest) -> SyncResponse:
    response = respond(hub, peer, over_the_wire(request, SyncRequest), server_time=SERVER_TIME)
    decoded: SyncResponse = over_the_wire(response, SyncResponse)
    return decoded


def trip(
    device: Tablet,
    hub: MemoryReplica,
    session: Session,
    *,
    max_snapshot_bytes: int = ONE_MIB,
    lose_response: bool = False,
) -> Trip:
    request = device.ask(session, max_snapshot_bytes=max_snapshot_bytes)
    response = answer(hub, device.name, request)
    outcome = None if lose_response else absorb(device.replica, session, request, response)
    device.trips.append(Trip(request, response, outcome))
    return device.trips[-1]


def sync(
    device: Tablet, hub: MemoryReplica, *, max_snapshot_bytes: int = ONE_MIB, limit: int = 20
) -> int:
    """Sync until neither side has anything left for the other; the number of round trips."""
    session = Session(HUB)
    for rounds in range(1, limit + 1):
        outcome = trip(device, hub, session, max_snapshot_bytes=max_snapshot_bytes).outcome
        assert outcome is not None
        assert outcome.quarantined == [], outcome.quarantined
        if not outcome.more:
            return rounds
    raise AssertionError(f"no convergence after {limit} round trips")


# -- charts and edits ---------------------------------------------------------------------------

PHONES = ["+255700000001", "+255700000002", "+255754000111", None]
BIRTH_DATES = [date(1990, 1, 1), date(1991, 2, 2), date(1998, 11, 2)]
NAMES = ["Neema", "Amina", "Zawadi", "Ñaña"]
VILLAGES = ["Juu", "Chini", "Kati", None]

DEMOGRAPHIC_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "given": st.sampled_from(NAMES),
    "phone": st.sampled_from(PHONES),
    "birth_date": st.sampled_from(BIRTH_DATES),
    "village": st.sampled_from(VILLAGES),
}
demographic_updates = st.sets(st.sampled_from(sorted(DEMOGRAPHIC_VALUES)), min_size=1).flatmap(
    lambda names: st.fixed_dictionaries({name: DEMOGRAPHIC_VALUES[name] for name in names})
)


@dataclass(frozen=True)
class Edit:
    doc: int  # which shared chart
    action: str
    args: tuple[Any, ...] = ()


N_DOCS = 3


def edit(action: str, *args: st.SearchStrategy[Any]) -> st.SearchStrategy[Edit]:
    return st.builds(
        lambda doc, values: Edit(doc, action, values),
        st.integers(0, N_DOCS - 1),
        st.tuples(*args),
    )


edits = st.one_of(
    edit("demographics", demographic_updates),
    edit("pregnancy", st.sampled_from(["pregnant", "not_pregnant", "unknown"])),
    edit("visit", st.integers(40, 180)),
    edit("add_task", st.sampled_from(NAMES)),
    edit("task_status", st.sampled_from(["requested", "completed", "cancelled"])),
    edit("tick", st.integers(1, 600_000)),
)
edit_lists = st.lists(edits, max_size=10)


def new_chart(number: int, clock: FixedClock | None = None) -> Chart:
    chart = Chart.new_patient(
        {
            "given": f"Neema{number}",
            "family": "Mollel",
            "sex": "female",
            "birth_date": "1998-11-02",
            "phone": "+255754000111",
            "village": "Kijiji",
        },
        author="registrar",
        clock=clock or FixedClock(START),
        actor=b"\x00" * 16,
    )
    chart.add_task({"kind": "anc_visit", "description": "Second visit", "due": "2025-04-01"})
    return chart


def hub_with(charts: list[Chart]) -> MemoryReplica:
    hub = MemoryReplica()
    for chart in charts:
        hub.put(chart.id, "patient", chart.save(), chart.heads)
    return hub


def open_chart(device: Tablet, doc_id: str) -> Chart:
    stored = device.replica.get(doc_id)
    assert stored is not None
    return Chart.load(stored.data, author=device.author, clock=device.clock, actor=device.actor)


def save_chart(device: Tablet, chart: Chart) -> None:
    device.replica.put(chart.id, "patient", chart.save(), chart.heads)


def change_chart(device: Tablet, doc_id: str, change: Callable[[Chart], Any]) -> Any:
    chart = open_chart(device, doc_id)
    result = change(chart)
    save_chart(device, chart)
    return result


def record_visit(chart: Chart, pulse: int = 72) -> str:
    return chart.record_encounter(
        {
            "kind": "vital_signs",
            "started_at": chart.clock.now(),
            "zone": "Africa/Dar_es_Salaam",
            "observations": vital_observations({"pulse": pulse}),
        }
    )


@dataclass
class Model:
    """What the tablets wrote in one offline period: doc -> path -> (author -> last value),
    and doc -> collection -> records added."""

    written: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    added: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def wrote(self, doc_id: str, path: str, author: str, value: Any) -> None:
        value = value.isoformat() if isinstance(value, date) else value
        self.written.setdefault(doc_id, {}).setdefault(path, {})[author] = value

    def add(self, doc_id: str, collection: str, record_id: str, author: str) -> None:
        self.added.setdefault(doc_id, {}).setdefault(collection, {})[record_id] = author


def apply_edit(device: Tablet, docs: list[str], change: Edit, model: Model) -> None:
    if change.action == "tick":
        device.clock.advance(timedelta(milliseconds=change.args[0]))
        return
    doc_id = docs[change.doc]
    chart = open_chart(device, doc_id)
    who = device.author
    if change.action == "demographics":
        chart.update_demographics(change.args[0])
        for name, value in change.args[0].items():
            model.wrote(doc_id, name, who, value)
    elif change.action == "pregnancy":
        chart.set_pregnancy_status(change.args[0])
        model.wrote(doc_id, "pregnancy_status", who, change.args[0])
    elif change.action == "visit":
        model.add(doc_id, "encounters", record_visit(chart, change.args[0]), who)
    elif change.action == "add_task":
        task = {"kind": "follow_up", "description": change.args[0], "due": "2025-06-01"}
        task_id = chart.add_task(task)
        model.add(doc_id, "tasks", task_id, who)
        model.wrote(doc_id, f"task.{task_id}.status", who, "requested")
    elif change.action == "task_status":
        tasks = chart.view().collections["tasks"]
        task_id = next(t for t, record in tasks.items() if record["author"] == "registrar")
        chart.set_task_status(task_id, change.args[0])
        model.wrote(doc_id, f"task.{task_id}.status", who, change.args[0])
    else:
        raise AssertionError(change.action)
    save_chart(device, chart)


def offline_edits(devices: list[Tablet], docs: list[str], lists: list[list[Edit]]) -> Model:
    """Interleave each tablet's edits, as tablets working on the same days would."""
    model = Model()
    for step in range(max(map(len, lists), default=0)):
        for device, changes in zip(devices, lists, strict=True):
            if step < len(changes):
                apply_edit(device, docs, changes[step], model)
    return model


# -- what must hold -----------------------------------------------------------------------------


def values_of(entries: Any) -> list[tuple[Any, str]]:
    return sorted(((e.value, e.by) for e in entries), key=repr)


def chart_of(replica: MemoryReplica, doc_id: str) -> Chart:
    stored = replica.get(doc_id)
    assert stored is not None, doc_id
    return Chart.load(stored.data, author="reader", clock=FixedClock(START))


def assert_same_everywhere(hub: MemoryReplica, devices: list[Tablet]) -> None:
    for device in devices:
        assert sorted(device.replica.docs) == sorted(hub.docs)
        for doc_id, stored in hub.docs.items():
            assert sorted(device.replica.docs[doc_id].heads) == sorted(stored.heads), doc_id
            # The stored heads are the document's own.
            held = chart_of(device.replica, doc_id).heads
            assert sorted(held) == sorted(stored.heads)


def assert_everything_kept(hub: MemoryReplica, before: dict[str, Chart], model: Model) -> None:
    """Each register holds each writer's last value (or what it had before); conflicts listed;
    every record added anywhere is there once."""
    for doc_id, old in before.items():
        chart = chart_of(hub, doc_id)
        registers, old_registers = read_all(chart.document), read_all(old.document)
        view = chart.view()
        conflicts = {c.path: c for c in view.conflicts}
        written = model.written.get(doc_id, {})
        assert set(registers) == set(old_registers) | set(written)
        for path, entries in registers.items():
            if path in written:
                expected = sorted(((v, a) for a, v in written[path].items()), key=repr)
            else:
                expected = values_of(old_registers[path])
            assert values_of(entries) == expected, path
            if len({repr(value) for value, _ in expected}) > 1:
                assert conflicts[path].risky is is_risky(path)
                assert (conflicts[path] in view.review_list) is is_risky(path)
                assert values_of(conflicts[path].values) == expected
            else:
                assert path not in conflicts
        event(f"conflicts in a chart: {min(len(conflicts), 2)}")
        old_view = old.view()
        for collection in ("encounters", "tasks"):
            added = model.added.get(doc_id, {}).get(collection, {})
            records = view.collections[collection]
            assert len(records) == len(old_view.collections[collection]) + len(added)
            assert set(old_view.collections[collection]) <= set(records)
            for record_id, author in added.items():
                assert records[record_id]["author"] == author


def assert_quiescent(hub: MemoryReplica, devices: list[Tablet]) -> None:
    """One more sync each carries no chart either way, and leaves both memories exact."""
    for device in devices:
        assert sync(device, hub) == 1
        last = device.trips[-1]
        assert (last.request.updates, last.request.syncs) == ([], [])
        assert last.response.updates == []
        assert last.response.snapshots == []
        assert last.response.resync == []
    for device in devices:
        assert device.replica.acks == {}
        for doc_id, stored in hub.docs.items():
            assert hub.known[(device.name, doc_id)] == sorted(stored.heads)
            assert device.replica.known[(HUB, doc_id)] == sorted(stored.heads)


# -- (a) tablets and a hub converge, keeping every value --------------------------------------------


def run_offline_period(
    hub: MemoryReplica,
    devices: list[Tablet],
    docs: list[str],
    lists: list[list[Edit]],
    *,
    order: list[int],
    passes: list[list[int]],
) -> None:
    before = {doc_id: chart_of(hub, doc_id) for doc_id in docs}
    model = offline_edits(devices, docs, lists)
    # Syncs in a random order, then everyone twice, in random orders: the first pass brings
    # every change up, the second brings them all down. A usual day's sync is one round trip.
    for number in [*order, *passes[0], *passes[1]]:
        assert sync(devices[number], hub) == 1
    assert_same_everywhere(hub, devices)
    assert_everything_kept(hub, before, model)
    assert_quiescent(hub, devices)


def shared_charts(devices: list[Tablet]) -> tuple[MemoryReplica, list[str]]:
    charts = [new_chart(number) for number in range(N_DOCS)]
    hub = hub_with(charts)
    for device in devices:
        assert sync(device, hub) == 1  # a first sync: every chart, as snapshots
        assert len(device.trips[-1].response.snapshots) == N_DOCS
    return hub, [c.id for c in charts]


@settings(max_examples=250, deadline=None)
@given(
    lists=st.lists(edit_lists, min_size=2, max_size=2),
    later=st.lists(edit_lists, min_size=2, max_size=2),
    order=st.lists(st.integers(0, 1), max_size=4),
    passes=st.lists(st.permutations(range(2)), min_size=4, max_size=4),
)
def test_two_tablets_and_a_hub_converge_and_keep_every_value(
    lists: list[list[Edit]], later: list[list[Edit]], order: list[int], passes: list[list[int]]
) -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)

    run_offline_period(hub, devices, docs, lists, order=order, passes=passes[:2])
    run_offline_period(hub, devices, docs, later, order=order[::-1], passes=passes[2:])


@settings(max_examples=80, deadline=None)
@given(
    lists=st.lists(edit_lists, min_size=3, max_size=3),
    later=st.lists(edit_lists, min_size=3, max_size=3),
    order=st.lists(st.integers(0, 2), max_size=6),
    passes=st.lists(st.permutations(range(3)), min_size=4, max_size=4),
)
def test_three_tablets_and_a_hub_converge_and_keep_every_value(
    lists: list[list[Edit]], later: list[list[Edit]], order: list[int], passes: list[list[int]]
) -> None:
    devices = [tablet(0), tablet(1), tablet(2)]
    hub, docs = shared_charts(devices)

    run_offline_period(hub, devices, docs, lists, order=order, passes=passes[:2])
    run_offline_period(hub, devices, docs, later, order=order[::-1], passes=passes[2:])


def test_concurrent_phone_edits_are_both_kept_and_listed_for_review() -> None:
    devices = [tablet(0), tablet(1)]
    hub, (doc_id, *_) = shared_charts(devices)
    a, b = devices
    change_chart(a, doc_id, lambda c: c.update_demographics({"phone": "+255700000001"}))
    visit_a = change_chart(a, doc_id, record_visit)
    change_chart(b, doc_id, lambda c: c.update_demographics({"phone": "+255700000002"}))
    visit_b = change_chart(b, doc_id, record_visit)

    for device in (a, b, a):
        assert sync(device, hub) == 1

    for replica in (a.replica, b.replica, hub):
        view = chart_of(replica, doc_id).view()
        assert [c.path for c in view.review_list] == ["phone"]
        phones = {(e.value, e.by) for e in view.review_list[0].values}
        assert phones == {("+255700000001", "chw-a"), ("+255700000002", "chw-b")}
        assert {visit_a, visit_b} <= set(view.collections["encounters"])
        assert len(view.collections["encounters"]) == 2


def test_a_tablet_is_not_sent_back_its_own_changes() -> None:
    devices = [tablet(0)]
    hub, (doc_id, *_) = shared_charts(devices)
    (a,) = devices
    change_chart(a, doc_id, record_visit)

    assert sync(a, hub) == 1

    last = a.trips[-1]
    assert last.response.applied == [0]
    assert last.response.updates == []


def test_a_sync_carries_every_changed_chart_in_one_request() -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    a, b = devices
    for doc_id in docs:
        change_chart(a, doc_id, record_visit)
        change_chart(b, doc_id, lambda c: c.set_pregnancy_status("pregnant"))
    assert sync(a, hub) == 1

    assert sync(b, hub) == 1

    last = b.trips[-1]
    assert sorted(u.doc for u in last.request.updates) == sorted(docs)
    assert last.response.applied == list(range(len(docs)))
    assert sorted(u.doc for u in last.response.updates) == sorted(docs)  # a's visits


def test_a_chart_made_on_a_tablet_reaches_the_other_tablets() -> None:
    devices = [tablet(0), tablet(1)]
    hub, _ = shared_charts(devices)
    a, b = devices
    chart = new_chart(9, a.clock)
    record_visit(chart)
    save_chart(a, chart)

    assert sync(a, hub) == 1
    assert sync(b, hub) == 1

    assert a.trips[-1].request.updates[0].doc == chart.id  # all its changes, as an update
    assert [s.doc for s in b.trips[-1].response.snapshots] == [chart.id]  # a snapshot down
    assert_same_everywhere(hub, devices)


# -- (b) every step is idempotent -----------------------------------------------------------------

FAULTS = ["none", "replay", "lose", "absorb_twice", "late_duplicate"]
# Between the faulty syncs only visits are recorded: they add records, so the model stays
# simple (a field written after a sync would rightly replace what the tablet had received).
visits = edit("visit", st.integers(40, 180))


def faulty_sync(device: Tablet, hub: MemoryReplica, fault: str) -> None:
    """One round trip that the network or the tablet gets wrong in some way."""
    session = Session(HUB)
    if fault == "late_duplicate" and device.trips:
        # A request from earlier arrives again (a proxy retried it): the answer goes nowhere.
        answer(hub, device.name, device.trips[len(device.trips) // 2].request)
        return
    request = device.ask(session)
    response = answer(hub, device.name, request)
    if fault == "replay":
        response = answer(hub, device.name, request)  # the first answer was lost; retried
    if fault == "lose":
        device.trips.append(Trip(request, response, None))
        return
    outcome = absorb(device.replica, session, request, response)
    if fault == "absorb_twice":
        outcome = absorb(device.replica, session, request, response)
    device.trips.append(Trip(request, response, outcome))


@settings(max_examples=200, deadline=None)
@given(
    lists=st.lists(edit_lists, min_size=2, max_size=2),
    steps=st.lists(
        st.tuples(st.integers(0, 1), st.sampled_from(FAULTS), st.lists(visits, max_size=2)),
        min_size=1,
        max_size=6,
    ),
)
def test_replays_losses_and_duplicates_change_nothing_but_timing(
    lists: list[list[Edit]], steps: list[tuple[int, str, list[Edit]]]
) -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    before = {doc_id: chart_of(hub, doc_id) for doc_id in docs}
    model = offline_edits(devices, docs, lists)
    for number, fault, more in steps:
        event(fault)
        faulty_sync(devices[number], hub, fault)
        for change in more:
            apply_edit(devices[number], docs, change, model)

    for number in [0, 1, 0, 1]:
        assert sync(devices[number], hub) == 1

    assert_same_everywhere(hub, devices)
    assert_everything_kept(hub, before, model)
    assert_quiescent(hub, devices)


def test_a_request_replayed_gives_the_same_answer_and_applies_once() -> None:
    devices = [tablet(0)]
    hub, (doc_id, *_) = shared_charts(devices)
    (a,) = devices
    visit = change_chart(a, doc_id, record_visit)
    session = Session(HUB)
    request = a.ask(session)

    first = answer(hub, a.name, request)
    held = copy.deepcopy(hub.docs)
    second = answer(hub, a.name, request)

    assert second == first
    assert hub.docs == held
    outcome = absorb(a.replica, session, request, second)
    assert not outcome.more
    encounters = chart_of(hub, doc_id).view().collections["encounters"]
    assert list(encounters) == [visit]


def test_a_lost_response_is_made_good_by_the_next_sync() -> None:
    devices = [tablet(0), tablet(1)]
    hub, (doc_id, *_) = shared_charts(devices)
    a, b = devices
    change_chart(b, doc_id, record_visit)
    assert sync(b, hub) == 1
    change_chart(a, doc_id, record_visit)

    lost = trip(a, hub, Session(HUB), lose_response=True)
    assert lost.response.applied == [0]
    assert len(lost.response.updates) == 1  # b's visit, which a never got
    assert sync(a, hub) == 1

    assert a.trips[-1].request.updates == lost.request.updates  # the same changes again
    assert_same_everywhere(hub, [a])
    assert len(chart_of(a.replica, doc_id).view().collections["encounters"]) == 2


def test_a_response_absorbed_twice_changes_nothing_more() -> None:
    devices = [tablet(0), tablet(1)]
    hub, (doc_id, *_) = shared_charts(devices)
    a, b = devices
    change_chart(b, doc_id, record_visit)
    assert sync(b, hub) == 1
    session = Session(HUB)
    request = a.ask(session)
    response = answer(hub, a.name, request)

    absorb(a.replica, session, request, response)
    once = copy.deepcopy(a.replica)
    again = absorb(a.replica, session, request, response)

    assert a.replica == once
    assert not again.more
    assert len(chart_of(a.replica, doc_id).view().collections["encounters"]) == 1


# -- (c) memory lost or wrong on either side --------------------------------------------------------


def day_of_work(devices: list[Tablet], docs: list[str]) -> None:
    """Each tablet records a visit on each chart and changes a phone number."""
    for number, device in enumerate(devices):
        for doc_id in docs:
            change_chart(device, doc_id, record_visit)
            phone = f"+25570000000{number}"
            change_chart(device, doc_id, lambda c, p=phone: c.update_demographics({"phone": p}))


def converge(hub: MemoryReplica, devices: list[Tablet], *, limit: int) -> int:
    """Sync every tablet (twice round); the largest number of round trips one sync took."""
    most = 0
    for device in [*devices, *devices]:
        most = max(most, sync(device, hub, limit=limit))
    return most


def visits_everywhere(hub: MemoryReplica, devices: list[Tablet], doc_id: str) -> set[str]:
    """The encounters of a chart, the same on every replica."""
    found = {
        frozenset(chart_of(r, doc_id).view().collections["encounters"])
        for r in [hub, *(d.replica for d in devices)]
    }
    assert len(found) == 1, "the replicas hold different visits"
    return set(found.pop())


@pytest.mark.parametrize("who", ["every device", "one device"])
def test_a_hub_that_forgot_what_tablets_hold_sends_snapshots_and_loses_nothing(who: str) -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    assert converge(hub, devices, limit=1) == 1  # acks out: the hub's memory is now exact
    visits = {change_chart(d, docs[0], record_visit) for d in devices}
    forgotten = {key for key in hub.known if who == "every device" or key[0] == "device-a"}
    for key in forgotten:
        del hub.known[key]

    assert converge(hub, devices, limit=2) == 1

    assert_same_everywhere(hub, devices)
    assert visits_everywhere(hub, devices, docs[0]) == visits
    a_trips = devices[0].trips[-2:]
    assert {s.doc for s in a_trips[0].response.snapshots} == set(docs[1:])
    assert_quiescent(hub, devices)


def test_a_hub_restored_from_an_older_copy_of_its_charts_resyncs_them() -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    converge(hub, devices, limit=1)
    older = copy.deepcopy(hub.docs)
    day_of_work(devices, docs)
    converge(hub, devices, limit=1)
    visits = visits_everywhere(hub, devices, docs[0])
    assert len(visits) == 2
    hub.docs = older  # the charts come back from yesterday's backup; what it knew stays

    most = converge(hub, devices, limit=8)

    assert 1 < most <= 6
    assert any(t.request.syncs for t in devices[0].trips[-4:])  # Automerge's sync protocol
    assert_same_everywhere(hub, devices)
    assert visits_everywhere(hub, devices, docs[0]) == visits
    assert_quiescent(hub, devices)


@pytest.mark.parametrize("acks_pending", [False, True])
def test_a_new_hub_seeded_from_an_old_backup_gets_back_what_it_lacks_in_the_same_sync(
    acks_pending: bool,
) -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    older = copy.deepcopy(hub.docs)
    day_of_work(devices, docs)
    converge(hub, devices, limit=1)
    if not acks_pending:
        converge(hub, devices, limit=1)
    assert bool(devices[0].replica.acks) is acks_pending
    visits = visits_everywhere(hub, devices, docs[0])
    hub.docs, hub.known = older, {}  # a new hub: old charts, no memory of any device

    # Without acks: snapshots of the old charts come down, and the tablet's newer changes
    # go straight back up. Acks of heads the hub lacks make it ask for a resync instead.
    rounds = [sync(device, hub, limit=8) for device in devices]

    if acks_pending:
        # Three or four turns of the sync protocol (a Bloom filter's false positive can cost
        # one more), then the acks; the second tablet finds the hub whole again.
        assert 4 <= rounds[0] <= 6
        assert rounds[1] == 1
    else:
        assert rounds == [2, 1]
    assert_same_everywhere(hub, devices)
    assert visits_everywhere(hub, devices, docs[0]) == visits
    assert_quiescent(hub, devices)


def test_a_hub_restored_with_its_memory_gets_lost_changes_back_when_the_chart_next_changes() -> (
    None
):
    # The hub's charts and its memory of each device both come back from yesterday. Each side
    # then believes the other is up to date, so what the hub lost stays on the tablets until
    # the chart changes again; then the update's missing history starts a resync.
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    converge(hub, devices, limit=1)
    backup = copy.deepcopy((hub.docs, hub.known))
    day_of_work(devices, docs)
    converge(hub, devices, limit=1)
    visits = visits_everywhere(hub, devices, docs[0])
    hub.docs, hub.known = backup

    for doc_id in docs:
        change_chart(devices[0], doc_id, lambda c: c.set_pregnancy_status("pregnant"))
    converge(hub, devices, limit=6)

    assert_same_everywhere(hub, devices)
    assert visits_everywhere(hub, devices, docs[0]) == visits
    assert_quiescent(hub, devices)


def test_a_tablet_that_forgot_what_the_hub_holds_sends_whole_histories_once() -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    day_of_work(devices, docs)
    a = devices[0]
    a.replica.known.clear()
    a.replica.acks.clear()

    assert converge(hub, devices, limit=1) == 1

    first = a.trips[len(a.trips) - 2]
    assert sorted(u.doc for u in first.request.updates) == sorted(docs)
    assert first.response.applied == [0, 1, 2]
    assert_same_everywhere(hub, devices)
    assert_quiescent(hub, devices)


def test_a_tablet_remembering_heads_it_does_not_hold_resyncs_instead_of_going_quiet() -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    converge(hub, devices, limit=1)
    a = devices[0]
    visit = change_chart(a, docs[0], record_visit)
    a.replica.known[(HUB, docs[0])] = [b"\x11" * 32]  # damaged memory

    assert sync(a, hub, limit=6) > 1

    assert visit in chart_of(hub, docs[0]).view().collections["encounters"]
    converge(hub, devices, limit=1)
    assert_same_everywhere(hub, devices)
    assert_quiescent(hub, devices)


# -- (d) a new tablet receives charts in pages ----------------------------------------------------

MANY = 300


@functools.cache
def many_charts() -> dict[str, Any]:
    clock = FixedClock(START)
    return hub_with([new_chart(number, clock) for number in range(MANY)]).docs


def paged_sync(
    device: Tablet, hub: MemoryReplica, budget: int, cuts: set[int], limit: int = 500
) -> list[tuple[Trip, int]]:
    """Sync page by page; the responses of the round trips numbered in ``cuts`` are lost,
    which ends that sync (the next one starts afresh, as after a dropped connection). Each
    round trip, with the number of charts the tablet then holds."""
    session = Session(HUB)
    seen = []
    for number in range(limit):
        done = trip(device, hub, session, max_snapshot_bytes=budget, lose_response=number in cuts)
        seen.append((done, len(device.replica.docs)))
        if done.outcome is None:
            session = Session(HUB)
        elif not done.outcome.more:
            return seen
    raise AssertionError("no end to the pages")


@settings(max_examples=25, deadline=None)
@given(budget=st.integers(2_000, 40_000), cuts=st.sets(st.integers(0, 12), max_size=3))
def test_a_new_tablet_receives_charts_in_pages_that_survive_cuts(
    budget: int, cuts: set[int]
) -> None:
    hub = MemoryReplica(docs=dict(many_charts()))
    device = tablet(0)

    seen = paged_sync(device, hub, budget, cuts)

    held = 0
    for done, holding in seen:
        page = done.response.snapshots
        assert page, "every page carries at least one chart"
        assert sum(len(s.data) for s in page) <= budget
        assert done.response.remaining == MANY - held - len(page)  # counting down
        if done.outcome is not None:
            held += len(page)
        assert holding == held
    assert held == MANY
    delivered = [t.response.remaining for t, _ in seen if t.outcome is not None]
    assert delivered == sorted(delivered, reverse=True)
    assert delivered[-1] == 0
    event(f"round trips: {min(len(seen), 10)}")
    assert_same_everywhere(hub, [device])
    assert sync(device, hub) == 1  # the last acks go up; nothing else moves
    assert all(hub.known[(device.name, d)] == hub.docs[d].heads for d in hub.docs)


def test_a_small_budget_means_several_round_trips_with_progress() -> None:
    hub = MemoryReplica(docs=dict(many_charts()))
    device = tablet(0)
    largest = max(len(stored.data) for stored in hub.docs.values())

    rounds = sync(device, hub, max_snapshot_bytes=40 * largest, limit=20)

    progress = [t.outcome.remaining for t in device.trips if t.outcome]
    assert rounds == len(progress) == 8  # 40 or a few more charts a page
    assert all(40 <= a - b <= 45 for a, b in itertools.pairwise([MANY, *progress]) if b)
    assert progress[-1] == 0
    assert len(device.replica.docs) == MANY
    assert sync(tablet(1), hub) == 1  # the default budget takes them all at once


# -- (e) a damaged update is quarantined; the rest of the request goes on -------------------------


def flip_a_byte(changes: list[bytes]) -> list[bytes]:
    first = bytearray(changes[0])
    first[len(first) // 2] ^= 0x01
    return [bytes(first), *changes[1:]]


DAMAGE: dict[str, tuple[Callable[[DocUpdate], DocUpdate], str]] = {
    "garbage": (
        lambda u: DocUpdate(u.doc, u.kind, [b"garbage"], u.heads),
        "changes that cannot be read",
    ),
    "another kind": (
        lambda u: DocUpdate(u.doc, "household", u.changes, u.heads),
        "the document is a patient chart, not a household one",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_update_is_quarantined_and_the_others_are_applied(damage: str) -> None:
    devices = [tablet(0)]
    hub, docs = shared_charts(devices)
    (a,) = devices
    visits = {doc_id: change_chart(a, doc_id, record_visit) for doc_id in docs}
    session = Session(HUB)
    request = a.ask(session)
    spoil, reason = DAMAGE[damage]
    request.updates[1] = spoil(request.updates[1])
    docs = [u.doc for u in request.updates]  # in the order the request carries them
    before = hub.docs[docs[1]]

    response = answer(hub, a.name, request)
    outcome = absorb(a.replica, session, request, response)

    assert [(n.doc, n.code) for n in response.quarantined] == [(docs[1], "quarantined")]
    assert reason in response.quarantined[0].detail
    assert response.applied == [0, 2]
    assert hub.docs[docs[1]] == before
    assert [(peer, doc) for peer, doc, _ in hub.quarantined] == [(a.name, docs[1])]
    assert reason in hub.quarantined[0][2]
    for doc_id in (docs[0], docs[2]):
        assert visits[doc_id] in chart_of(hub, doc_id).view().collections["encounters"]
    assert outcome.quarantined == response.quarantined
    # The good copy goes up with the next sync: nothing is lost on the tablet.
    assert sync(a, hub) == 1
    assert visits[docs[1]] in chart_of(hub, docs[1]).view().collections["encounters"]
    assert_same_everywhere(hub, devices)


TRANSIT_DAMAGE: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "a flipped bit": flip_a_byte,
    "cut short": lambda changes: [changes[0][:-5], *changes[1:]],
}


@pytest.mark.parametrize("damage", sorted(TRANSIT_DAMAGE))
def test_a_change_damaged_in_transit_is_refused_and_the_chart_resynced(damage: str) -> None:
    # A packed change is rebuilt on arrival; damage makes it miss the hash that names it.
    devices = [tablet(0)]
    hub, docs = shared_charts(devices)
    (a,) = devices
    visits = {doc_id: change_chart(a, doc_id, record_visit) for doc_id in docs}
    session = Session(HUB)
    request = a.ask(session)
    spoiled = request.updates[1]
    request.updates[1] = DocUpdate(
        spoiled.doc, spoiled.kind, flip_a_byte(spoiled.changes), spoiled.heads
    )
    before = hub.docs[spoiled.doc]

    response = answer(hub, a.name, request)

    assert response.applied == [0, 2]
    assert spoiled.doc in response.resync
    assert hub.docs[spoiled.doc] == before
    absorb(a.replica, session, request, response)
    assert sync(a, hub) >= 1
    assert visits[spoiled.doc] in chart_of(hub, spoiled.doc).view().collections["encounters"]
    assert_same_everywhere(hub, devices)


def test_changes_that_make_no_chart_are_quarantined() -> None:
    devices = [tablet(0)]
    hub, docs = shared_charts(devices)
    (a,) = devices
    visit = change_chart(a, docs[0], record_visit)
    stranger = am.Document()
    with stranger.transaction() as tx:
        tx.put(am.ROOT, "kind", am.ScalarType.Str, "patient")
    session = Session(HUB)
    request = a.ask(session)
    new_doc = "01950000-0000-7000-8000-00000000beef"
    request.updates.append(DocUpdate(new_doc, "patient", changes_since(stranger, [])))

    response = answer(hub, a.name, request)

    assert response.applied == [0]
    assert [(n.doc, n.detail) for n in response.quarantined] == [
        (new_doc, "the document is not a patient chart")
    ]
    assert new_doc not in hub.docs
    assert visit in chart_of(hub, docs[0]).view().collections["encounters"]


def test_a_damaged_update_from_the_hub_is_quarantined_on_the_tablet_and_sent_again() -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    a, b = devices
    visits = {doc_id: change_chart(b, doc_id, record_visit) for doc_id in docs}
    assert sync(b, hub) == 1
    own = change_chart(a, docs[0], lambda c: record_visit(c, 99))
    session = Session(HUB)
    request = a.ask(session)
    response = answer(hub, a.name, request)
    spoiled = next(i for i, u in enumerate(response.updates) if u.doc == docs[0])
    response.updates[spoiled] = DAMAGE["garbage"][0](response.updates[spoiled])

    outcome = absorb(a.replica, session, request, response)

    assert [n.doc for n in outcome.quarantined] == [docs[0]]
    assert [doc for _, doc, _ in a.replica.quarantined] == [docs[0]]
    for doc_id in docs[1:]:
        assert visits[doc_id] in chart_of(a.replica, doc_id).view().collections["encounters"]
    assert sync(a, hub) == 1
    assert {own, visits[docs[0]]} <= visits_everywhere(hub, [a], docs[0])
    assert_same_everywhere(hub, [a])


# -- (f) charts that leave a tablet ---------------------------------------------------------------


def reassign(hub: MemoryReplica, device: Tablet, doc_id: str) -> None:
    """The chart leaves ``device``'s catchment."""
    hub.visible = lambda peer, doc: not (peer == device.name and doc == doc_id)


def test_a_reassigned_chart_is_dropped_reported_and_then_no_longer_mentioned() -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    converge(hub, devices, limit=1)
    a, b = devices
    reassign(hub, a, docs[0])

    assert sync(a, hub) == 1
    told = a.trips[-1]
    assert [(n.doc, n.code) for n in told.response.dropped] == [(docs[0], "reassigned")]
    assert told.outcome is not None
    assert [n.doc for n in told.outcome.dropped] == [docs[0]]
    assert docs[0] not in a.replica.docs
    assert a.replica.dropped == {docs[0]: told.response.dropped[0].detail}

    assert sync(a, hub) == 1
    reported = a.trips[-1]
    assert reported.request.dropped == [docs[0]]
    assert reported.response.dropped == []
    assert (a.name, docs[0]) not in hub.known

    assert sync(a, hub) == 1
    assert a.trips[-1].request.dropped == []
    assert a.trips[-1].response.dropped == []
    assert sorted(a.replica.docs) == sorted(docs[1:])
    # The other tablet keeps the chart, and still shares its changes through the hub.
    change_chart(b, docs[0], record_visit)
    assert sync(b, hub) == 1
    assert docs[0] in b.replica.docs
    assert sync(a, hub) == 1
    assert docs[0] not in a.replica.docs


def test_a_reassigned_chart_with_unsent_changes_is_pushed_then_dropped() -> None:
    devices = [tablet(0), tablet(1)]
    hub, docs = shared_charts(devices)
    a, b = devices
    theirs = change_chart(b, docs[0], record_visit)  # the hub holds more than a does
    assert sync(b, hub) == 1
    ours = change_chart(a, docs[0], record_visit)
    reassign(hub, a, docs[0])

    assert sync(a, hub) == 1

    told = a.trips[-1]
    assert told.response.applied == [0]
    assert told.response.quarantined == []
    assert [n.doc for n in told.response.dropped] == [docs[0]]
    assert docs[0] not in a.replica.docs
    assert {ours, theirs} <= set(chart_of(hub, docs[0]).view().collections["encounters"])


def test_a_chart_changed_while_the_drop_notice_travels_is_kept_until_pushed() -> None:
    devices = [tablet(0)]
    hub, docs = shared_charts(devices)
    converge(hub, devices, limit=1)
    (a,) = devices
    reassign(hub, a, docs[0])
    session = Session(HUB)
    request = a.ask(session)
    response = answer(hub, a.name, request)
    visit = change_chart(a, docs[0], record_visit)  # the CHW saves a visit meanwhile

    outcome = absorb(a.replica, session, request, response)

    assert [n.doc for n in outcome.kept] == [docs[0]]
    assert outcome.dropped == []
    assert docs[0] in a.replica.docs
    assert a.replica.dropped_docs(HUB) == []

    assert sync(a, hub) == 1

    assert docs[0] not in a.replica.docs
    outcome = a.trips[-1].outcome
    assert outcome is not None
    assert [n.doc for n in outcome.dropped] == [docs[0]]
    assert visit in chart_of(hub, docs[0]).view().collections["encounters"]
    assert sync(a, hub) == 1
    assert a.trips[-1].request.dropped == [docs[0]]
    assert a.trips[-1].response.dropped == []
