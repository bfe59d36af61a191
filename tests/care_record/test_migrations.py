"""Opening saved charts: migration on read, charts from a newer app, and bytes that are no chart."""

from __future__ import annotations

import automerge.core as am
import pytest

from care_record import SCHEMA_VERSION, Chart, ChartTooNew, FixedClock, NotAChart
from care_record.migrations import schema_version


class Recorder:
    """A migration that counts its runs and leaves a scalar behind, as migrations may."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.runs = 0

    def __call__(self, tx: am.Transaction) -> None:
        self.runs += 1
        # The version seen by this step shows the steps ran in order, in the same transaction.
        found = tx.get(am.ROOT, "schema_version")
        assert found is not None
        assert not isinstance(found[0], am.ObjType)
        tx.put(am.ROOT, self.key, am.ScalarType.Str, f"ran on version {found[0][1]!r}")


def set_schema_version(chart: Chart, version: int) -> bytes:
    with chart.document.transaction() as tx:
        tx.put(am.ROOT, "schema_version", am.ScalarType.Int, version)
    return chart.save()


def test_this_code_writes_schema_version_1(chart: Chart) -> None:
    assert SCHEMA_VERSION == 1
    assert schema_version(chart.document) == 1


def test_a_chart_of_the_current_version_loads_without_a_change(
    chart: Chart, clock: FixedClock
) -> None:
    loaded = Chart.load(chart.save(), author="chw-2", clock=clock)

    assert loaded.heads == chart.heads


def test_an_old_chart_is_migrated_on_read_in_one_change(chart: Chart, clock: FixedClock) -> None:
    saved, heads = chart.save(), chart.heads
    to_2 = Recorder("migrated_to_2")

    loaded = Chart.load(saved, author="chw-2", clock=clock, migrations={2: to_2})

    assert to_2.runs == 1
    assert loaded.view().schema_version == 2
    assert len(loaded.document.get_changes(heads)) == 1
    root = am.extract(loaded.document)
    assert isinstance(root, dict)
    assert root["migrated_to_2"] == "ran on version 1"
    assert loaded.view().demographics == chart.view().demographics


def test_a_migrated_chart_is_not_migrated_again(chart: Chart, clock: FixedClock) -> None:
    to_2 = Recorder("migrated_to_2")
    migrated = Chart.load(chart.save(), author="chw-2", clock=clock, migrations={2: to_2})

    again = Chart.load(migrated.save(), author="chw-2", clock=clock, migrations={2: to_2})

    assert to_2.runs == 1
    assert again.heads == migrated.heads


def test_several_steps_run_in_order_in_one_change(chart: Chart, clock: FixedClock) -> None:
    heads = chart.heads
    to_2, to_3 = Recorder("step_2"), Recorder("step_3")

    loaded = Chart.load(chart.save(), author="chw-2", clock=clock, migrations={3: to_3, 2: to_2})

    assert (to_2.runs, to_3.runs) == (1, 1)
    assert loaded.view().schema_version == 3
    assert len(loaded.document.get_changes(heads)) == 1
    root = am.extract(loaded.document)
    assert isinstance(root, dict)
    assert (root["step_2"], root["step_3"]) == ("ran on version 1", "ran on version 1")


def test_a_chart_from_a_newer_app_asks_for_an_update(chart: Chart, clock: FixedClock) -> None:
    newer = set_schema_version(chart, SCHEMA_VERSION + 1)

    with pytest.raises(ChartTooNew, match="Update the app") as refused:
        Chart.load(newer, author="chw-2", clock=clock)

    assert f"schema version {SCHEMA_VERSION + 1}" in str(refused.value)


def test_a_chart_migrated_by_a_newer_app_is_too_new_for_this_one(
    chart: Chart, clock: FixedClock
) -> None:
    migrated = Chart.load(chart.save(), author="x", clock=clock, migrations={2: Recorder("m")})

    with pytest.raises(ChartTooNew):
        Chart.load(migrated.save(), author="chw-2", clock=clock)


def test_a_missing_migration_step_is_refused(chart: Chart, clock: FixedClock) -> None:
    to_3 = Recorder("step_3")

    with pytest.raises(NotAChart, match="no migration to schema version 2"):
        Chart.load(chart.save(), author="chw-2", clock=clock, migrations={3: to_3})

    assert to_3.runs == 0


def test_corrupt_bytes_are_not_a_chart(clock: FixedClock) -> None:
    for data in (b"", b"\x00", b"not a chart at all", bytes(range(256)) * 4):
        with pytest.raises(NotAChart):
            Chart.load(data, author="chw-2", clock=clock)


def test_every_truncation_of_a_chart_is_not_a_chart(chart: Chart, clock: FixedClock) -> None:
    chart.add_task({"kind": "follow_up", "description": "Check on the baby", "due": "2025-03-04"})
    saved = chart.save()

    for length in range(len(saved)):
        with pytest.raises(NotAChart):
            Chart.load(saved[:length], author="chw-2", clock=clock)


def test_flipped_bits_are_not_a_chart(chart: Chart, clock: FixedClock) -> None:
    saved = chart.save()

    for offset in range(0, len(saved), 7):
        damaged = bytearray(saved)
        damaged[offset] ^= 0x10
        with pytest.raises(NotAChart):
            Chart.load(bytes(damaged), author="chw-2", clock=clock)


def automerge_bytes(*, with_fields: bool = False, **scalars: str | int) -> bytes:
    doc = am.Document()
    with doc.transaction() as tx:
        for key, value in scalars.items():
            kind = am.ScalarType.Int if isinstance(value, int) else am.ScalarType.Str
            tx.put(am.ROOT, key, kind, value)
        if with_fields:
            tx.put_object(am.ROOT, "fields", am.ObjType.Map)
    return doc.save()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(am.Document().save(), id="empty document"),
        pytest.param(automerge_bytes(title="shopping list"), id="another kind of document"),
        pytest.param(automerge_bytes(kind="household", schema_version=1), id="household"),
        pytest.param(automerge_bytes(kind="patient", schema_version=1), id="no fields"),
        pytest.param(automerge_bytes(kind="patient", with_fields=True), id="no schema version"),
        pytest.param(
            automerge_bytes(kind="patient", schema_version="1", with_fields=True),
            id="schema version as text",
        ),
        pytest.param(
            automerge_bytes(kind="patient", schema_version=1, fields="x"), id="fields not a map"
        ),
    ],
)
def test_an_automerge_document_that_is_not_a_chart(data: bytes, clock: FixedClock) -> None:
    with pytest.raises(NotAChart):
        Chart.load(data, author="chw-2", clock=clock)
