"""The hub applies a request's updates before it takes the write lock, on the charts as they
stood, and under the lock uses each result only if the chart's heads have not moved; it reads
the rows a request names ahead (``HubReplica.read_ahead``). Here against the hub's real SQLite
file, with a second tablet's sync landing between the two steps."""

from __future__ import annotations

from typing import Any

from care_record import Chart, FixedClock
from care_record.sync import SyncRequest, absorb, heads_key, respond
from care_record.sync.documents import saved_bytes
from care_record.sync.engine import Prepared, prepare
from sync_hub import Settings
from sync_hub.replica import HubReplica
from sync_hub.store import Store

VISIT = {"kind": "home_visit", "zone": "Africa/Dar_es_Salaam"}


def prepared_now(store: Store, device: str, request: SyncRequest) -> dict[int, Prepared]:
    """What the hub's sync does before its write lock (``exchange._prepare``)."""
    with store.read() as db:
        reader = HubReplica(db, device=device, chw="amina", at="")
        reader.read_ahead([u.doc for u in request.updates])
        rows = [(u, reader.get(u.doc), reader.peer_heads(device, u.doc)) for u in request.updates]
    ready = {}
    for index, (update, stored, known) in enumerate(rows):
        done = prepare(update, stored, known, append=True)
        if done is not None:
            ready[index] = done
    return ready


def test_an_update_prepared_before_another_tablet_changed_the_chart_keeps_both(
    make_tablet: Any, settings: Settings, clock: FixedClock, hub_db: Any
) -> None:
    a, b = make_tablet(), make_tablet()
    chart = a.new_chart()
    a.sync_until_done()
    b.sync_until_done()
    b.sync()  # acknowledges what it received
    mine = a.chart(chart.id)
    mine.record_encounter({**VISIT, "started_at": clock.now(), "note": "fever"})
    a.store(mine)
    request = a.request()
    store = Store(settings.db)
    ready = prepared_now(store, a.device_id, request)
    assert set(ready) == {0}
    # B's sync commits a change to the same chart before A's write transaction begins.
    theirs = b.chart(chart.id)
    theirs.update_demographics({"phone": "+255700000002"})
    b.store(theirs)
    assert b.sync().acked == 1
    with store.write() as db:
        replica = HubReplica(db, device=a.device_id, chw="amina", at="2025-03-01T09:00:00Z")
        replica.read_ahead([chart.id])
        response = respond(replica, a.device_id, request, server_time="", prepared=ready)
    store.close()
    assert response.applied == [0]
    assert [u.doc for u in response.updates] == [chart.id]
    (data, heads), *_ = hub_db("SELECT data, heads FROM charts WHERE id = ?", [chart.id])
    assert data != ready[0].applied.data  # applied again, not the stale result
    view = Chart.load(data, author="hub", clock=clock).view()
    assert view.fields["phone"] == "+255700000002"
    assert [e["note"] for e in view.collections["encounters"].values()] == ["fever"]
    absorb(a.replica, a.session, request, response)
    assert heads_key(a.chart(chart.id).heads) == heads


def test_a_day_of_changes_is_stored_as_loaded_and_reaches_another_tablet(
    make_tablet: Any, clock: FixedClock, hub_db: Any
) -> None:
    a, b = make_tablet(), make_tablet()
    chart = a.new_chart()
    a.sync_until_done()
    for note in ("fever", "cough"):
        mine = a.chart(chart.id)
        mine.record_encounter({**VISIT, "started_at": clock.now(), "note": note})
        a.store(mine)
        assert a.sync().acked == 1
    ((data,),) = hub_db("SELECT data FROM charts WHERE id = ?", [chart.id])
    saved = saved_bytes(data)
    assert saved is not None
    assert saved < len(data)  # the visits' changes follow the saved chart
    b.sync_until_done()
    notes = [e["note"] for e in b.chart(chart.id).view().collections["encounters"].values()]
    assert sorted(notes) == ["cough", "fever"]


def test_read_ahead_answers_as_the_tables_do_after_the_replicas_own_writes(
    make_tablet: Any, settings: Settings
) -> None:
    a = make_tablet()
    charts = [a.new_chart(given=f"Mtoto{n}") for n in range(3)]
    a.sync_until_done()
    other = make_tablet()  # has never synced: holds nothing yet
    ids = [c.id for c in charts]
    store = Store(settings.db)
    with store.write() as db:
        ahead = HubReplica(db, device=other.device_id, chw="amina", at="2025-03-01T09:00:00Z")
        plain = HubReplica(db, device=other.device_id, chw="amina", at="2025-03-01T09:00:00Z")
        ahead.read_ahead([*ids, "no-such-chart"])
        ahead.offered(ids[:2])
        first = ahead.get(ids[0])
        assert first is not None
        ahead.set_peer_heads(other.device_id, ids[0], first.heads)
        ahead.forget_peer(other.device_id, ids[1])
        ahead.put(ids[2], "patient", first.data, first.heads)  # the same chart data, as a write
        for doc in [*ids, "no-such-chart"]:
            assert ahead.get(doc) == plain.get(doc)
            assert ahead.peer_heads(other.device_id, doc) == plain.peer_heads(other.device_id, doc)
        assert list(ahead.missing(other.device_id)) == list(plain.missing(other.device_id))
        offers = db.execute("SELECT doc FROM offers WHERE device = ?", [other.device_id])
        assert offers.fetchall() == []  # both offers ended: one acknowledged, one dropped
    store.close()
