"""Changes applied to a chart already loaded (``documents.apply_changes(base=...)``), what makes a
loaded chart fit to keep (``settled``), and the chunks and heads checks both rest on.

Every outcome with ``base`` is compared with the same call loading the saved bytes instead,
which is what the hub did before it kept charts loaded.
"""

from __future__ import annotations

import hashlib

import automerge.core as am
import pytest

from care_record import Chart, FixedClock, NotAChart
from care_record.sync import changes_since
from care_record.sync.documents import (
    Applied,
    add_changes,
    apply_changes,
    change_chunks,
    create_from_changes,
    has_heads,
    settled,
)
from tests.care_record.test_sync_prepare import PATIENT, START, VISIT


def chart_with_visits(count: int, actor: int = 1) -> tuple[Chart, bytes, list[bytes]]:
    """A chart, its saved form before ``count`` visits, and the visits' change chunks."""
    chart = Chart.new_patient(
        PATIENT, author="chw", clock=FixedClock(START), actor=bytes([actor]) * 16
    )
    saved, before = chart.save(), chart.heads
    for n in range(count):
        chart.record_encounter({**VISIT, "note": f"visit {n}"})
    return chart, saved, changes_since(chart.document, before)


def both_ways(saved: bytes, changes: list[bytes], heads: list[bytes]) -> tuple[Applied, Applied]:
    """The changes applied to a loaded copy of ``saved``, and to ``saved`` loaded anew."""
    base = am.Document.load(saved)
    with_base = apply_changes(saved, "patient", changes, heads, append=True, base=base)
    loading = apply_changes(saved, "patient", changes, heads, append=True)
    return with_base, loading


def test_changes_into_a_loaded_chart_give_what_loading_gives() -> None:
    chart, saved, changes = chart_with_visits(3)
    with_base, loading = both_ways(saved, changes, chart.heads)
    assert with_base.data == loading.data == saved + b"".join(changes)
    assert sorted(with_base.heads) == sorted(loading.heads) == sorted(chart.heads)
    assert with_base.complete
    assert with_base.settled
    assert loading.settled
    assert with_base.document is not None
    view = Chart.load(with_base.data, author="hub", clock=FixedClock(START)).view()
    notes = sorted(e["note"] for e in view.collections["encounters"].values())
    assert notes == ["visit 0", "visit 1", "visit 2"]


def test_a_damaged_chunk_is_refused_as_loading_refuses_it() -> None:
    chart, saved, changes = chart_with_visits(2)
    damaged = bytearray(changes[1])
    damaged[-1] ^= 0x01  # the checksum no longer matches
    for base in (am.Document.load(saved), None):
        with pytest.raises(NotAChart):
            apply_changes(saved, "patient", [changes[0], bytes(damaged)], chart.heads, base=base)


def test_junk_is_refused_as_loading_refuses_it() -> None:
    chart, saved, _changes = chart_with_visits(1)
    for base in (am.Document.load(saved), None):
        with pytest.raises(NotAChart):
            apply_changes(saved, "patient", [b"junk" * 20], chart.heads, base=base)


def test_changes_missing_their_history_come_out_as_loading_leaves_them() -> None:
    chart, saved, changes = chart_with_visits(3)
    with_base, loading = both_ways(saved, changes[1:], chart.heads)
    assert not with_base.complete
    assert not loading.complete
    assert with_base.data == loading.data  # saved without the changes held back
    assert sorted(with_base.heads) == sorted(loading.heads)
    assert not loading.settled  # Automerge holds the orphans back in the loaded document


def test_has_heads_is_false_when_any_one_is_missing() -> None:
    chart, saved, changes = chart_with_visits(2)
    older = am.Document.load(saved)
    known, unknown = older.get_heads()[0], chart.heads[0]
    assert has_heads(older, [known])
    assert not has_heads(older, [unknown])
    assert not has_heads(older, [known, unknown])  # read at both at once, Automerge says yes
    assert has_heads(am.Document.load(saved + b"".join(changes)), [known, unknown])


def test_change_chunks_names_each_chunk_by_its_hash_and_refuses_damage() -> None:
    chart, _saved, changes = chart_with_visits(2)
    found = change_chunks(b"".join(changes))
    assert found is not None
    assert [chunk for _, chunk in found] == changes
    hashes = [digest for digest, _ in found]
    assert hashes[-1] == chart.heads[0]
    assert hashes == [hashlib.sha256(c[8:]).digest() for c in changes]
    assert change_chunks(b"") == []
    assert change_chunks(changes[0][:-1]) is None  # cut short
    assert change_chunks(changes[0] + b"x") is None  # trailing junk
    bad = bytearray(changes[0])
    bad[5] ^= 0xFF
    assert change_chunks(bytes(bad)) is None  # checksum


def test_a_document_with_changes_held_back_is_not_settled() -> None:
    _chart, saved, changes = chart_with_visits(3)
    whole = saved + b"".join(changes)
    assert settled(am.Document.load(whole), whole)
    orphaned = saved + changes[2]
    assert not settled(am.Document.load(orphaned), orphaned)
    assert settled(am.Document.load(saved), saved)


def test_a_new_chart_from_its_whole_history_is_settled() -> None:
    chart = Chart.new_patient(PATIENT, author="chw", clock=FixedClock(START))
    chart.record_encounter(VISIT)
    created = create_from_changes("patient", changes_since(chart.document, []), chart.heads)
    assert created.settled
    assert created.complete


def test_add_changes_puts_chunks_into_a_loaded_document() -> None:
    chart, saved, changes = chart_with_visits(2)
    doc = am.Document.load(saved)
    add_changes(doc, changes)
    assert sorted(doc.get_heads()) == sorted(chart.heads)
    add_changes(doc, changes)  # again: nothing changes
    assert sorted(doc.get_heads()) == sorted(chart.heads)
    add_changes(doc, [])
    assert sorted(doc.get_heads()) == sorted(chart.heads)
