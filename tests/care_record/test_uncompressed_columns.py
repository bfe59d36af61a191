"""A saved chart with its columns inflated is the same chart, and compresses better in a page."""

from __future__ import annotations

import lzma
import random
from datetime import timedelta

import automerge.core as am
import pytest

from care_record import Chart, FixedClock, HouseholdRecord, vital_observations
from care_record.sync.columns import MAGIC, uncompressed


def _busy_chart(clock: FixedClock, rnd: random.Random, visits: int) -> Chart:
    chart = Chart.new_patient(
        {
            "given": "Neema",
            "family": rnd.choice(["Mollel", "Uwimana", "Kimaro"]),
            "sex": "female",
            "birth_date": "1996-02-11",
            "phone": "+255713111222",
            "village": "Ifakara",
        },
        author="chw-neema",
        clock=clock,
    )
    for n in range(visits):
        clock.advance(timedelta(days=rnd.randint(3, 40)))
        chart.record_encounter(
            {
                "kind": "anc_contact",
                "started_at": clock.now(),
                "zone": "Africa/Dar_es_Salaam",
                "observations": vital_observations(
                    {
                        "systolic": rnd.randint(100, 150),
                        "diastolic": rnd.randint(60, 95),
                        "weight": round(rnd.uniform(50, 80), 1),
                    }
                ),
                "note": f"Visit {n}: reminded about the next contact.",
            }
        )
        if n % 3 == 0:
            chart.add_task({"kind": "follow_up", "description": "Recheck", "due": "2026-01-01"})
    return chart


@pytest.mark.parametrize("visits", [0, 1, 4, 12, 30])
def test_the_inflated_save_is_the_same_document(clock: FixedClock, visits: int) -> None:
    chart = _busy_chart(clock, random.Random(visits), visits)
    saved = chart.save()

    inflated = uncompressed(saved)

    loaded = am.Document.load(inflated)
    assert loaded.get_heads() == chart.heads
    assert am.extract(loaded) == am.extract(chart.document)
    assert Chart.load(inflated, author="x", clock=clock).view() == chart.view()
    # Saved again, it is the saved document it came from.
    assert loaded.save() == saved
    assert len(inflated) >= len(saved)
    assert uncompressed(inflated) == inflated  # nothing left to inflate


def test_a_big_chart_really_had_compressed_columns(clock: FixedClock) -> None:
    saved = _busy_chart(clock, random.Random(1), 30).save()
    assert len(uncompressed(saved)) > 2 * len(saved)


def test_a_household_and_a_merged_chart_with_conflicts_survive(clock: FixedClock) -> None:
    household = HouseholdRecord.new(
        {"name": "Nyumba ya Mollel", "village": "Ifakara"}, author="a", clock=clock
    )
    chart = _busy_chart(clock, random.Random(2), 8)
    other = chart.fork(author="chw-baraka")
    chart.update_demographics({"phone": "+255713999000"})
    other.update_demographics({"phone": "+255784555666"})
    chart.merge(other)
    for document in (household, chart):
        saved = document.save()
        loaded = am.Document.load(uncompressed(saved))
        assert loaded.get_heads() == document.heads
        assert am.extract(loaded) == am.extract(document.document)
    assert (
        len(Chart.load(uncompressed(chart.save()), author="x", clock=clock).view().conflicts) == 1
    )


def test_a_page_of_inflated_charts_compresses_smaller(clock: FixedClock) -> None:
    rnd = random.Random(3)
    saves = [_busy_chart(clock, rnd, 10).save() for _ in range(40)]
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 20}]

    def packed(page: list[bytes]) -> int:
        return len(lzma.compress(b"".join(page), format=lzma.FORMAT_RAW, filters=filters))

    assert packed([uncompressed(s) for s in saves]) < 0.75 * packed(saves)


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"RCS1",
        MAGIC,
        MAGIC + bytes(4) + b"\x01\x05hello",  # a change chunk, not a document
        MAGIC + bytes(4) + b"\x00\x7f" + bytes(10),  # a document chunk cut short
        bytes(range(256)),
    ],
)
def test_what_is_not_a_saved_document_comes_back_unchanged(junk: bytes) -> None:
    assert uncompressed(junk) == junk


def test_a_saved_document_cut_short_comes_back_unchanged(clock: FixedClock) -> None:
    saved = _busy_chart(clock, random.Random(4), 20).save()
    for cut in (10, len(saved) // 2, len(saved) - 1):
        assert uncompressed(saved[:cut]) == saved[:cut]
