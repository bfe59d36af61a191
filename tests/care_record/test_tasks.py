"""Tasks with an ID from elsewhere: a Task merged from central (a call-back a patient asked
for) keeps its ID, and the same one merged twice is there once."""

from __future__ import annotations

from typing import Any

import pytest

from care_record import Chart, FixedClock, InvalidValue, new_id
from care_record.ids import is_uuid7


def _call_back(description: str = "Call the patient back: they asked for a call") -> dict[str, Any]:
    return {"kind": "call_back", "description": description, "due": "2025-03-02"}


def test_a_task_is_written_under_the_id_given_and_starts_requested(
    chart: Chart, clock: FixedClock
) -> None:
    central_id = new_id(clock)
    assert chart.add_task(_call_back(), task_id=central_id) == central_id
    task = chart.view().item("tasks", central_id)
    assert (task["kind"], task["due"], task["status"]) == ("call_back", "2025-03-02", "requested")
    assert task["description"] == "Call the patient back: they asked for a call"


def test_the_same_task_id_again_writes_nothing(chart: Chart, clock: FixedClock) -> None:
    central_id = new_id(clock)
    chart.add_task(_call_back(), task_id=central_id)
    heads = chart.heads
    assert chart.add_task(_call_back("Something else"), task_id=central_id) == central_id
    assert chart.heads == heads
    assert list(chart.view().collections["tasks"]) == [central_id]
    assert chart.view().item("tasks", central_id)["description"].startswith("Call the patient")


def test_without_an_id_each_task_gets_a_new_one(chart: Chart) -> None:
    first, second = chart.add_task(_call_back()), chart.add_task(_call_back())
    assert first != second
    assert is_uuid7(first)
    assert is_uuid7(second)


@pytest.mark.parametrize(
    "bad_id",
    ["not-an-id", "0195ecf2-6a64-4bd6-9ca8-7e47a1c1e5a0", "0195ECF2-6A64-7BD6-9CA8-7E47A1C1E5A0"],
)
def test_an_id_that_is_not_a_canonical_uuid7_is_refused_and_nothing_written(
    chart: Chart, bad_id: str
) -> None:
    heads = chart.heads
    with pytest.raises(InvalidValue, match="task_id: must be a UUIDv7"):
        chart.add_task(_call_back(), task_id=bad_id)
    assert chart.heads == heads
    assert chart.view().collections["tasks"] == {}


def test_an_invalid_task_with_an_id_writes_nothing(chart: Chart, clock: FixedClock) -> None:
    heads = chart.heads
    with pytest.raises(InvalidValue, match="description"):
        chart.add_task(_call_back("x" * 201), task_id=new_id(clock))
    assert chart.heads == heads


def test_the_same_task_merged_on_two_copies_is_one_task_without_a_conflict(
    chart: Chart, clock: FixedClock
) -> None:
    other = chart.fork(author="hub:second")
    central_id = new_id(clock)
    chart.add_task(_call_back(), task_id=central_id)
    other.add_task(_call_back(), task_id=central_id)
    chart.merge(other)
    view = chart.view()
    assert list(view.collections["tasks"]) == [central_id]
    assert view.item("tasks", central_id)["status"] == "requested"
    assert view.conflicts == []
