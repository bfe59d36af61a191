"""Charts the hub keeps loaded between syncs (``sync_hub.chart_cache``): used only while the
database holds what they were kept for, so a chart changed behind the cache's back is loaded
again, and every stored chart still loads to the heads stored with it."""

from __future__ import annotations

import sqlite3
from typing import Any

import automerge.core as am

from care_record import Chart, FixedClock
from care_record.sync import Stored, changes_since, split_heads
from care_record.sync.documents import add_changes, apply_changes, compacted
from sync_hub import Settings
from sync_hub.chart_cache import ChartCache
from sync_hub.store import Store, put_chart
from tests.sync_hub.conftest import PATIENT, START

VISIT = {"kind": "home_visit", "zone": "Africa/Dar_es_Salaam"}


def a_chart(visits: int = 1) -> tuple[Chart, Stored]:
    chart = Chart.new_patient(PATIENT, author="chw", clock=FixedClock(START))
    for n in range(visits):
        chart.record_encounter({**VISIT, "started_at": START, "note": f"visit {n}"})
    return chart, Stored(chart.id, "patient", chart.save(), sorted(chart.heads))


def read(cache: ChartCache, stored: Stored) -> am.Document | None:
    """The cache's copy of ``stored`` as a reader sees it, or None."""
    with cache.reading(stored) as doc:
        return doc


def test_a_kept_chart_is_handed_out_while_the_stored_one_is_the_same() -> None:
    cache = ChartCache(10)
    chart, stored = a_chart()
    assert read(cache, stored) is None
    doc = am.Document.load(stored.data)
    cache.keep(chart.id, doc, stored.data)
    assert read(cache, stored) is doc
    assert read(cache, stored) is doc  # reading leaves it kept
    assert (cache.hits, cache.misses) == (2, 1)


def test_the_same_chart_stored_in_another_form_is_still_a_hit() -> None:
    cache = ChartCache(10)
    chart, stored = a_chart()
    before = chart.heads
    chart.record_encounter({**VISIT, "started_at": START, "note": "fever"})
    appended = apply_changes(
        stored.data, "patient", changes_since(chart.document, before), chart.heads, append=True
    )
    assert appended.document is not None
    cache.keep(chart.id, appended.document, appended.data)
    compact = compacted(appended.data)
    assert compact != appended.data
    same = Stored(chart.id, "patient", compact, sorted(chart.heads))
    assert read(cache, same) is appended.document


def test_a_chart_changed_in_the_database_is_a_miss() -> None:
    cache = ChartCache(10)
    chart, stored = a_chart()
    cache.keep(chart.id, am.Document.load(stored.data), stored.data)
    chart.record_encounter({**VISIT, "started_at": START, "note": "fever"})
    newer = Stored(chart.id, "patient", chart.save(), sorted(chart.heads))
    assert read(cache, newer) is None
    assert cache.take(newer) is None


def test_same_heads_with_history_held_back_in_the_stored_bytes_is_a_miss() -> None:
    cache = ChartCache(10)
    chart, stored = a_chart(visits=0)
    before = chart.heads
    for note in ("fever", "cough"):
        chart.record_encounter({**VISIT, "started_at": START, "note": note})
    changes = changes_since(chart.document, before)
    cache.keep(chart.id, am.Document.load(stored.data), stored.data)
    # Bytes holding a change whose history is missing still load to the same heads.
    orphaned = Stored(chart.id, "patient", stored.data + changes[1], stored.heads)
    assert sorted(am.Document.load(orphaned.data).get_heads()) == stored.heads
    assert read(cache, orphaned) is None


def test_take_hands_the_chart_over() -> None:
    cache = ChartCache(10)
    chart, stored = a_chart()
    doc = am.Document.load(stored.data)
    cache.keep(chart.id, doc, stored.data)
    assert cache.take(stored) is doc
    assert read(cache, stored) is None
    assert len(cache) == 0


def test_a_chart_taken_while_it_is_being_read_is_taken_as_a_copy() -> None:
    cache = ChartCache(10)
    chart, stored = a_chart()
    doc = am.Document.load(stored.data)
    cache.keep(chart.id, doc, stored.data)
    with cache.reading(stored) as reading:
        assert reading is doc
        taken = cache.take(stored)
        assert taken is not None
        assert taken is not doc
        chart.record_encounter({**VISIT, "started_at": START, "note": "fever"})
        add_changes(taken, changes_since(chart.document, stored.heads))
        assert sorted(doc.get_heads()) == stored.heads  # the reader's copy is as it was


def test_a_chart_read_earlier_is_taken_itself() -> None:
    cache = ChartCache(10)
    chart, stored = a_chart()
    doc = am.Document.load(stored.data)
    cache.keep(chart.id, doc, stored.data)
    assert read(cache, stored) is doc
    assert cache.take(stored) is doc  # nobody reads it any more: no copy needed


def test_the_least_recently_used_chart_goes_first_and_zero_keeps_none() -> None:
    cache = ChartCache(2)
    kept = [a_chart() for _ in range(3)]
    for chart, stored in kept[:2]:
        cache.keep(chart.id, am.Document.load(stored.data), stored.data)
    assert read(cache, kept[0][1]) is not None  # now the first is the most recent
    chart, stored = kept[2]
    cache.keep(chart.id, am.Document.load(stored.data), stored.data)
    assert len(cache) == 2
    assert read(cache, kept[1][1]) is None
    assert read(cache, kept[0][1]) is not None
    none = ChartCache(0)
    none.keep(chart.id, am.Document.load(stored.data), stored.data)
    assert len(none) == 0
    assert read(none, stored) is None


def test_a_chart_changed_behind_the_cache_keeps_both_changes(
    make_tablet: Any, settings: Settings, clock: FixedClock, hub_db: Any
) -> None:
    tablet = make_tablet()
    chart = tablet.new_chart()
    tablet.sync_until_done()  # the hub keeps the chart loaded
    # Another writer on the same file (the CLI, say) changes the chart meanwhile.
    (data,), *_ = hub_db("SELECT data FROM charts WHERE id = ?", [chart.id])
    theirs = Chart.load(bytes(data), author="office", clock=clock)
    theirs.update_demographics({"phone": "+255700000009"})
    store = Store(settings.db)
    with store.write() as db:
        put_chart(db, chart.id, "patient", theirs.save(), theirs.heads, device="cli", at="x")
    store.close()
    mine = tablet.chart(chart.id)
    mine.record_encounter({**VISIT, "started_at": clock.now(), "note": "fever"})
    tablet.store(mine)
    assert tablet.sync().acked == 1
    (data, heads), *_ = hub_db("SELECT data, heads FROM charts WHERE id = ?", [chart.id])
    view = Chart.load(bytes(data), author="hub", clock=clock).view()
    assert view.fields["phone"] == "+255700000009"
    assert [e["note"] for e in view.collections["encounters"].values()] == ["fever"]
    assert sorted(am.Document.load(bytes(data)).get_heads()) == split_heads(heads)


def test_every_stored_chart_loads_to_its_stored_heads_after_concurrent_edits(
    make_tablet: Any, settings: Settings, clock: FixedClock
) -> None:
    a, b = make_tablet(), make_tablet()
    charts = [a.new_chart(given=name) for name in ("Amina", "Baraka", "Chausiku")]
    a.sync_until_done()
    b.sync_until_done()
    for day in range(6):
        for n, chart in enumerate(charts):
            tablet = (a, b)[(day + n) % 2]
            mine = tablet.chart(chart.id)
            mine.record_encounter({**VISIT, "started_at": clock.now(), "note": f"{day}-{n}"})
            tablet.store(mine)
        a.sync_until_done()
        b.sync_until_done()
    a.sync_until_done()
    conn = sqlite3.connect(settings.db)
    try:
        rows = conn.execute("SELECT id, data, heads FROM charts").fetchall()
    finally:
        conn.close()
    assert len(rows) == 3
    for doc_id, data, heads in rows:
        assert sorted(am.Document.load(bytes(data)).get_heads()) == split_heads(heads)
        assert sorted(a.chart(doc_id).heads) == sorted(b.chart(doc_id).heads)
        notes = Chart.load(bytes(data), author="hub", clock=clock).view()
        assert len(notes.collections["encounters"]) == 6
