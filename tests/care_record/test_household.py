"""The household document: its name and village, and the patients who live there."""

from __future__ import annotations

from datetime import timedelta

import pytest

from care_record import (
    Chart,
    FixedClock,
    HouseholdRecord,
    InvalidValue,
    NotAChart,
    UnknownRecord,
    new_id,
)
from care_record.ids import is_uuid7


@pytest.fixture
def household(clock: FixedClock) -> HouseholdRecord:
    return HouseholdRecord.new(
        {"name": "Mollel household", "village": "Ngarenanyuki"}, author="chw-1", clock=clock
    )


def copy_of(record: HouseholdRecord) -> HouseholdRecord:
    return HouseholdRecord.load(record.save(), author=record.author, clock=record.clock)


def test_new_household(household: HouseholdRecord) -> None:
    view = household.view()

    assert view.kind == "household"
    assert is_uuid7(household.id)
    assert view.fields == {"name": "Mollel household", "village": "Ngarenanyuki"}
    assert household.members == []
    assert view.conflicts == []


def test_new_household_needs_a_name(clock: FixedClock) -> None:
    with pytest.raises(InvalidValue, match="name"):
        HouseholdRecord.new({"village": "Ngarenanyuki"}, author="chw-1", clock=clock)


def test_update_changes_only_what_is_given(household: HouseholdRecord) -> None:
    household.update({"village": "  Maji   ya Chai "})

    assert household.view().fields == {"name": "Mollel household", "village": "Maji ya Chai"}


def test_update_refuses_bad_values_and_writes_nothing(household: HouseholdRecord) -> None:
    heads, saved = household.heads, household.save()

    for changes in ({"name": "Mol\x00lel"}, {"village": ""}, {"members": 3}):
        with pytest.raises(InvalidValue):
            household.update(changes)

    assert household.heads == heads
    assert household.save() == saved


def test_add_member_is_idempotent(household: HouseholdRecord, clock: FixedClock) -> None:
    patient = new_id(clock)
    household.add_member(patient)
    heads = household.heads
    clock.advance(timedelta(days=1))

    household.add_member(patient)

    assert household.members == [patient]
    assert household.heads == heads
    member = household.view().collections["members"][patient]
    assert member == {"added_at": "2025-03-01T08:30:00.000+00:00", "author": "chw-1"}


def test_add_member_refuses_an_id_that_is_not_a_uuid7(household: HouseholdRecord) -> None:
    heads = household.heads

    with pytest.raises(InvalidValue, match="patient_id"):
        household.add_member("patient-7")

    assert household.heads == heads


def test_remove_member(household: HouseholdRecord, clock: FixedClock) -> None:
    stays, leaves = new_id(clock), new_id(clock)
    household.add_member(stays)
    household.add_member(leaves)

    household.remove_member(leaves)

    assert household.members == [stays]


def test_remove_of_someone_not_in_the_household_is_refused(
    household: HouseholdRecord, clock: FixedClock
) -> None:
    heads = household.heads

    with pytest.raises(UnknownRecord):
        household.remove_member(new_id(clock))

    assert household.heads == heads


def test_members_added_on_two_tablets_are_both_kept(
    household: HouseholdRecord, clock: FixedClock
) -> None:
    first = new_id(clock)
    household.add_member(first)
    a = household.fork(author="chw-a", actor=b"\x0a" * 16)
    b = household.fork(author="chw-b", actor=b"\x0b" * 16)
    mother, baby, twin = new_id(clock), new_id(clock), new_id(clock)

    a.add_member(mother)
    a.add_member(twin)
    b.add_member(baby)
    b.add_member(twin)
    b.update({"village": "Maji ya Chai"})

    ab, ba = copy_of(a), copy_of(b)
    ab.merge(copy_of(b))
    ba.merge(copy_of(a))
    assert ab.members == ba.members == sorted([first, mother, baby, twin])
    assert ab.view() == ba.view()
    assert ab.view().fields["village"] == "Maji ya Chai"
    assert ab.view().conflicts == []


def test_concurrent_renames_are_listed_as_a_conflict(household: HouseholdRecord) -> None:
    a = household.fork(author="chw-a")
    b = household.fork(author="chw-b")
    a.update({"name": "Mollel family"})
    b.update({"name": "Nyumba ya Mollel"})

    a.merge(b)

    [conflict] = a.view().conflicts
    assert conflict.path == "name"
    assert not conflict.risky
    assert sorted(str(e.value) for e in conflict.values) == ["Mollel family", "Nyumba ya Mollel"]


def test_save_and_load_round_trip(household: HouseholdRecord, clock: FixedClock) -> None:
    household.add_member(new_id(clock))

    loaded = copy_of(household)

    assert loaded.view() == household.view()
    assert loaded.members == household.members


def test_a_patient_chart_is_not_a_household(chart: Chart, clock: FixedClock) -> None:
    with pytest.raises(NotAChart, match="household"):
        HouseholdRecord.load(chart.save(), author="chw-1", clock=clock)


def test_a_household_is_not_a_patient_chart(household: HouseholdRecord, clock: FixedClock) -> None:
    with pytest.raises(NotAChart, match="patient"):
        Chart.load(household.save(), author="chw-1", clock=clock)
