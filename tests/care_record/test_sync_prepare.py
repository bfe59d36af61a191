"""Updates applied before the responder's write lock (``engine.prepare``), and updated documents
stored as loaded rather than saved again (``documents.apply_changes(append=True)``).

The hub is a ``MemoryReplica``; tablets are ``MemoryReplica(_initiator=True)`` with their own
actors, and every request crosses ``encode_frame``/``decode_frame`` as the network would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import automerge.core as am
import pytest

from care_record import Chart, FixedClock, NotAChart
from care_record.sync import (
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
from care_record.sync.documents import APPEND_LIMIT_RATIO, apply_changes, compacted, saved_bytes
from care_record.sync.engine import Prepared, prepare
from care_record.sync.memory import MemoryReplica

START = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
PATIENT = {
    "given": "Amina",
    "family": "Juma",
    "sex": "female",
    "birth_date": "1994-06-15",
    "village": "Kijiji cha Mlima",
}
VISIT = {"kind": "home_visit", "started_at": START, "zone": "Africa/Dar_es_Salaam"}


@dataclass
class Tablet:
    name: str
    actor: bytes
    clock: FixedClock = field(default_factory=lambda: FixedClock(START))
    replica: MemoryReplica = field(default_factory=lambda: MemoryReplica(_initiator=True))
    session: Session = field(default_factory=lambda: Session("hub"))

    def chart(self, doc_id: str) -> Chart:
        stored = self.replica.get(doc_id)
        assert stored is not None
        return Chart.load(stored.data, author=self.name, clock=self.clock, actor=self.actor)

    def keep(self, chart: Chart) -> None:
        self.replica.put(chart.id, chart.KIND, chart.save(), chart.heads)

    def request(self) -> SyncRequest:
        request = build_request(self.replica, self.session, max_snapshot_bytes=1 << 20)
        sent: SyncRequest = decode_frame(encode_frame(request), SyncRequest)
        return sent

    def take(self, request: SyncRequest, response: SyncResponse) -> None:
        heard: SyncResponse = decode_frame(encode_frame(response), SyncResponse)
        absorb(self.replica, self.session, request, heard)

    def sync(self, hub: MemoryReplica) -> SyncResponse:
        request = self.request()
        response = respond(hub, self.name, request, server_time="")
        self.take(request, response)
        return response


def visit(tablet: Tablet, doc_id: str, note: str) -> None:
    chart = tablet.chart(doc_id)
    chart.record_encounter({**VISIT, "note": note})
    tablet.keep(chart)


def prepared_for(hub: MemoryReplica, peer: str, request: SyncRequest) -> dict[int, Prepared]:
    ready = {}
    for index, update in enumerate(request.updates):
        done = prepare(update, hub.get(update.doc), hub.peer_heads(peer, update.doc), append=True)
        if done is not None:
            ready[index] = done
    return ready


@pytest.fixture
def shared() -> tuple[MemoryReplica, Tablet, Tablet, str]:
    """A hub and two tablets that both hold one chart, every side up to date."""
    hub = MemoryReplica()
    a, b = Tablet("device-a", bytes([1]) * 16), Tablet("device-b", bytes([2]) * 16)
    chart = Chart.new_patient(PATIENT, author=a.name, clock=a.clock, actor=a.actor)
    a.keep(chart)
    a.sync(hub)
    b.sync(hub)  # receives the chart
    b.sync(hub)  # and acknowledges it
    return hub, a, b, chart.id


# -- storing as loaded ----------------------------------------------------------------------------


def day_of_changes(count: int) -> tuple[bytes, list[bytes], list[bytes], Chart]:
    clock = FixedClock(START)
    chart = Chart.new_patient(PATIENT, author="chw", clock=clock)
    saved, before = chart.save(), chart.heads
    for n in range(count):
        chart.record_encounter({**VISIT, "note": f"visit {n}"})
    return saved, changes_since(chart.document, before), chart.heads, chart


def test_appending_stores_the_bytes_loaded_which_load_as_the_same_document() -> None:
    saved, changes, heads, chart = day_of_changes(2)
    applied = apply_changes(saved, "patient", changes, heads, append=True)
    assert applied.data == saved + b"".join(changes)
    assert saved_bytes(applied.data) == len(saved)
    again = am.Document.load(applied.data)
    assert again.get_heads() == chart.heads == applied.heads
    assert Chart.load(applied.data, author="hub", clock=FixedClock(START)).view() == chart.view()


def test_a_snapshot_carries_an_appended_chart_compacted_and_a_saved_one_as_is() -> None:
    saved, changes, heads, chart = day_of_changes(2)
    appended = apply_changes(saved, "patient", changes, heads, append=True).data
    compact = compacted(appended)
    assert saved_bytes(compact) == len(compact) < len(appended)
    assert am.Document.load(compact).get_heads() == chart.heads
    assert compacted(saved) is saved


def test_without_append_the_document_is_saved_again() -> None:
    saved, changes, heads, _chart = day_of_changes(2)
    applied = apply_changes(saved, "patient", changes, heads)
    assert saved_bytes(applied.data) == len(applied.data)


def test_appended_changes_are_saved_in_once_they_outgrow_the_saved_document() -> None:
    clock = FixedClock(START)
    chart = Chart.new_patient(PATIENT, author="chw", clock=clock)
    data, heads = chart.save(), chart.heads
    forms = []
    for n in range(40):
        chart.record_encounter({**VISIT, "note": f"visit {n}"})
        applied = apply_changes(
            data, "patient", changes_since(chart.document, heads), chart.heads, append=True
        )
        data, heads = applied.data, applied.heads
        saved = saved_bytes(data)
        assert saved is not None
        assert len(data) - saved <= saved * APPEND_LIMIT_RATIO
        forms.append(len(data) == saved)
    assert False in forms
    assert forms.count(True) >= 1
    assert am.Document.load(data).get_heads() == chart.heads


def test_an_update_missing_its_history_is_saved_not_appended() -> None:
    saved, changes, heads, _chart = day_of_changes(2)
    applied = apply_changes(saved, "patient", changes[1:], heads, append=True)
    assert not applied.complete
    assert applied.document is not None
    assert applied.data == applied.document.save()


def test_damaged_changes_are_refused_whether_or_not_appending() -> None:
    saved, changes, heads, _chart = day_of_changes(1)
    with pytest.raises(NotAChart):
        apply_changes(saved, "patient", [changes[0][:-5]], heads, append=True)


@pytest.mark.parametrize("data", [b"", b"junk", b"\x85\x6f\x4a\x83\x00\x00\x00\x00\x01\x05x"])
def test_saved_bytes_of_what_does_not_begin_with_a_document_is_none(data: bytes) -> None:
    assert saved_bytes(data) is None


# -- applying before the lock ---------------------------------------------------------------------


def test_a_prepared_update_is_stored_as_prepared_when_the_chart_did_not_change(
    shared: tuple[MemoryReplica, Tablet, Tablet, str],
) -> None:
    hub, a, _b, doc_id = shared
    visit(a, doc_id, "fever")
    request = a.request()
    ready = prepared_for(hub, a.name, request)
    assert set(ready) == {0}
    response = respond(hub, a.name, request, server_time="", prepared=ready, append=True)
    assert response.applied == [0]
    stored = hub.get(doc_id)
    assert stored is not None
    assert stored.data == ready[0].applied.data
    assert stored.heads == a.chart(doc_id).heads


def test_a_prepared_update_is_applied_again_when_another_writer_changed_the_chart(
    shared: tuple[MemoryReplica, Tablet, Tablet, str],
) -> None:
    hub, a, b, doc_id = shared
    visit(a, doc_id, "fever")
    request_a = a.request()
    ready = prepared_for(hub, a.name, request_a)
    # Meanwhile B's sync commits a change to the same chart.
    phone = b.chart(doc_id)
    phone.update_demographics({"phone": "+255700000001"})
    b.keep(phone)
    assert b.sync(hub).applied == [0]
    stored = hub.get(doc_id)
    assert stored is not None
    assert ready[0].base != stored.heads
    response = respond(hub, a.name, request_a, server_time="", prepared=ready, append=True)
    assert response.applied == [0]
    assert [u.doc for u in response.updates] == [doc_id]  # B's change goes down to A
    held = hub.get(doc_id)
    assert held is not None
    assert held.data != ready[0].applied.data
    view = Chart.load(held.data, author="hub", clock=FixedClock(START)).view()
    assert view.fields["phone"] == "+255700000001"
    assert [e["note"] for e in view.collections["encounters"].values()] == ["fever"]
    a.take(request_a, response)
    assert a.chart(doc_id).heads == held.heads


def test_an_update_that_fails_to_prepare_is_answered_as_without_preparing(
    shared: tuple[MemoryReplica, Tablet, Tablet, str],
) -> None:
    hub, a, _b, doc_id = shared
    visit(a, doc_id, "fever")
    request = a.request()
    request.updates[0].changes = [request.updates[0].changes[0][:-5]]
    before = hub.get(doc_id)
    assert prepared_for(hub, a.name, request) == {}
    response = respond(hub, a.name, request, server_time="", prepared={}, append=True)
    # Damaged in transit, it no longer matches the heads that name it: a resync, as ever.
    assert response.applied == []
    assert response.resync == [doc_id]
    assert hub.get(doc_id) == before


def test_appended_charts_travel_to_a_new_tablet_like_saved_ones(
    shared: tuple[MemoryReplica, Tablet, Tablet, str],
) -> None:
    hub, a, _b, doc_id = shared
    for n in range(2):
        visit(a, doc_id, f"visit {n}")
        request = a.request()
        ready = prepared_for(hub, a.name, request)
        a.take(request, respond(hub, a.name, request, server_time="", prepared=ready, append=True))
    stored = hub.get(doc_id)
    assert stored is not None
    assert saved_bytes(stored.data) != len(stored.data)
    c = Tablet("device-c", bytes([3]) * 16, clock=FixedClock(START + timedelta(days=1)))
    c.sync(hub)
    assert c.chart(doc_id).heads == a.chart(doc_id).heads
