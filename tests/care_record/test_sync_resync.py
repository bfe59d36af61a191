"""A resync always ends: Automerge's sync protocol with a responder that keeps no state can
repeat a Bloom-filter false positive turn after turn, so the tablet falls back to its whole
history after a few turns. Hundreds of random histories (random actors, so random hashes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from care_record import Chart, FixedClock, vital_observations
from care_record.sync import (
    Session,
    SyncRequest,
    SyncResponse,
    absorb,
    build_request,
    decode_frame,
    encode_frame,
    respond,
)
from care_record.sync.engine import MAX_SYNC_TURNS
from care_record.sync.memory import MemoryReplica

CLOCK = FixedClock(datetime(2025, 3, 1, 8, 30, tzinfo=UTC))


def sync_rounds(tablet: MemoryReplica, hub: MemoryReplica, limit: int) -> int:
    session = Session("hub")
    for rounds in range(1, limit + 1):
        request = build_request(tablet, session, max_snapshot_bytes=1 << 20)
        wire = decode_frame(encode_frame(request), SyncRequest)
        response = respond(hub, "tablet", wire, server_time="2025-03-01T08:30:00+00:00")
        outcome = absorb(
            tablet, session, request, decode_frame(encode_frame(response), SyncResponse)
        )
        if not outcome.more:
            return rounds
    raise AssertionError(f"no convergence in {limit} rounds")


@settings(max_examples=150, deadline=None)
@given(hub_edits=st.integers(0, 6), tablet_edits=st.integers(2, 8))
def test_a_resync_from_wrong_memory_settles_in_a_bounded_number_of_rounds(
    hub_edits: int, tablet_edits: int
) -> None:
    base = Chart.new_patient(
        {"given": "Amina", "family": "Juma", "sex": "female", "birth_date": "1990-01-01"},
        author="a",
        clock=CLOCK,
    )
    hub, tablet = MemoryReplica(), MemoryReplica(_initiator=True)
    hub.put(base.id, "patient", base.save(), base.heads)
    there, here = base.fork(author="hub"), base.fork(author="chw")
    for n in range(hub_edits):
        there.update_demographics({"village": f"V{n}"})
    remembered: list[bytes] = []
    for n in range(tablet_edits):
        if n == 1:
            remembered = here.heads  # the hub never had these: its backup predates them
        CLOCK.advance(timedelta(minutes=1))
        readings = {"systolic": 110 + n, "diastolic": 70}
        here.record_encounter(
            {
                "kind": "v",
                "started_at": CLOCK.now(),
                "zone": "UTC",
                "observations": vital_observations(readings),
            }
        )
    hub.put(base.id, "patient", there.save(), there.heads)
    tablet.put(base.id, "patient", here.save(), here.heads)
    # What the tablet remembers of the hub is wrong: heads the hub never had.
    tablet.set_peer_heads("hub", base.id, remembered)
    hub.set_peer_heads("tablet", base.id, base.heads)

    sync_rounds(tablet, hub, limit=MAX_SYNC_TURNS + 4)

    assert tablet.get(base.id).heads == hub.get(base.id).heads  # type: ignore[union-attr]
    merged = Chart.load(hub.get(base.id).data, author="t", clock=CLOCK).view()  # type: ignore[union-attr]
    assert len(merged.collections["encounters"]) == tablet_edits
