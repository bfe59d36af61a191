"""Messages with an ID from elsewhere: a Communication merged from central keeps its ID, and
the same one merged twice is there once."""

from __future__ import annotations

from typing import Any

import pytest

from care_record import Chart, FixedClock, InvalidValue, new_id
from care_record.ids import is_uuid7


def _advice(clock: FixedClock, text: str = "Give ORS and review tomorrow.") -> dict[str, Any]:
    return {
        "direction": "to_chw",
        "channel": "console",
        "author": "Dr Mushi",
        "text": text,
        "sent_at": clock.now(),
    }


def test_a_message_is_written_under_the_id_given(chart: Chart, clock: FixedClock) -> None:
    central_id = new_id(clock)
    assert chart.add_message(_advice(clock), message_id=central_id) == central_id
    message = chart.view().item("messages", central_id)
    assert message["text"] == "Give ORS and review tomorrow."
    assert message["author"] == "Dr Mushi"


def test_the_same_id_again_writes_nothing(chart: Chart, clock: FixedClock) -> None:
    central_id = new_id(clock)
    chart.add_message(_advice(clock), message_id=central_id)
    heads = chart.heads
    again = chart.add_message(_advice(clock, "a different text"), message_id=central_id)
    assert again == central_id
    assert chart.heads == heads
    assert chart.view().item("messages", central_id)["text"] == "Give ORS and review tomorrow."
    assert len(chart.view().collections["messages"]) == 1


def test_without_an_id_each_message_gets_a_new_one(chart: Chart, clock: FixedClock) -> None:
    first = chart.add_message(_advice(clock))
    second = chart.add_message(_advice(clock))
    assert first != second
    assert is_uuid7(first)
    assert is_uuid7(second)


@pytest.mark.parametrize(
    "bad_id",
    ["not-an-id", "0195ecf2-6a64-4bd6-9ca8-7e47a1c1e5a0", "0195ECF2-6A64-7BD6-9CA8-7E47A1C1E5A0"],
)
def test_an_id_that_is_not_a_canonical_uuid7_is_refused_and_nothing_written(
    chart: Chart, clock: FixedClock, bad_id: str
) -> None:
    heads = chart.heads
    with pytest.raises(InvalidValue, match="message_id: must be a UUIDv7"):
        chart.add_message(_advice(clock), message_id=bad_id)
    assert chart.heads == heads
    assert chart.view().collections["messages"] == {}


def test_an_invalid_message_with_an_id_writes_nothing(chart: Chart, clock: FixedClock) -> None:
    heads = chart.heads
    with pytest.raises(InvalidValue, match="text"):
        chart.add_message(_advice(clock, "x" * 4001), message_id=new_id(clock))
    assert chart.heads == heads


def test_the_same_message_merged_on_two_copies_is_one_message(
    chart: Chart, clock: FixedClock
) -> None:
    other = chart.fork(author="hub:second")
    central_id = new_id(clock)
    chart.add_message(_advice(clock), message_id=central_id)
    other.add_message(_advice(clock), message_id=central_id)
    chart.merge(other)
    messages = chart.view().collections["messages"]
    assert list(messages) == [central_id]
    assert messages[central_id]["text"] == "Give ORS and review tomorrow."
