"""Merging forks of a chart: no value is lost, conflicts are listed, every peer converges.

Each property test builds a base chart, forks it as two or three tablets would hold it, applies
a random sequence of valid edits on each fork, and merges the forks through saved bytes (as the
network would carry them). A model of the edits says what the merge must hold: for every
register, the last value each fork wrote to it, or the base value if no fork wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from hypothesis import event, given, settings
from hypothesis import strategies as st

from care_record import Chart, Entry, FixedClock, is_risky, vital_observations
from care_record.registers import read_all

START = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
MERGE_SETTINGS = settings(max_examples=600, deadline=None)

SHAS = ("a" * 64, "b" * 64, "c" * 64)

# -- strategies over valid writes ---------------------------------------------------------------

names = st.text(alphabet="abcdefghijkmnoprstuwyzABDEJKMNSTéëñŋ'-", min_size=1, max_size=12)
phones = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
birth_dates = st.dates(min_value=date(1900, 1, 1), max_value=START.date())


def uuid7_text(millis: int, rand_a: int, rand_b: int) -> str:
    value = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(UUID(int=value))


uuid7s = st.builds(
    uuid7_text, st.integers(0, 2**48 - 1), st.integers(0, 2**12 - 1), st.integers(0, 2**62 - 1)
)

DEMOGRAPHIC_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "given": names,
    "family": names,
    "sex": st.sampled_from(["female", "male", "other", "unknown"]),
    "birth_date": birth_dates,
    "phone": phones | st.none(),
    "village": names | st.none(),
    "household_id": uuid7s,
}
demographic_updates = st.sets(st.sampled_from(sorted(DEMOGRAPHIC_VALUES)), min_size=1).flatmap(
    lambda names: st.fixed_dictionaries({name: DEMOGRAPHIC_VALUES[name] for name in names})
)
CRITICALITIES = st.sampled_from(["low", "high", "unable_to_assess"])
ITEM_STATUSES = st.sampled_from(["active", "inactive", "entered_in_error"])


@dataclass(frozen=True)
class Edit:
    """One write on a fork: the name of what it does and its arguments."""

    action: str
    args: tuple[Any, ...] = ()


def edit(action: str, *args: st.SearchStrategy[Any]) -> st.SearchStrategy[Edit]:
    return st.tuples(*args).map(lambda values: Edit(action, values))


edits = st.one_of(
    edit("demographics", demographic_updates),
    edit(
        "consent",
        st.sampled_from(["data_sharing", "sms_reminders", "voice_reminders"]),
        st.sampled_from(["granted", "refused", "withdrawn"]),
    ),
    edit("pregnancy", st.sampled_from(["pregnant", "not_pregnant", "unknown"])),
    edit("add_allergy", names, CRITICALITIES),
    edit("update_allergy", st.fixed_dictionaries({"criticality": CRITICALITIES})),
    edit("update_medication", st.fixed_dictionaries({}, optional={"status": ITEM_STATUSES})),
    edit("add_task", names, st.dates(min_value=START.date(), max_value=date(2026, 1, 1))),
    edit("task_status", st.integers(0, 1), st.sampled_from(["requested", "completed"])),
    edit("referral_status", st.sampled_from(["accepted", "completed", "cancelled"])),
    edit("add_encounter", st.integers(30, 220)),
    edit("add_attachment", st.sampled_from(SHAS)),
    edit("tick", st.integers(1, 600_000)),
)
edit_lists = st.lists(edits, max_size=12)


# -- the base chart, forks and the model of what each fork wrote ------------------------------


@dataclass
class Base:
    chart: Chart
    tasks: tuple[str, str]
    referral: str
    allergy: str
    medication: str


@dataclass
class Fork:
    """A fork of the base, and what its own edits wrote and added."""

    chart: Chart
    written: dict[str, Any] = field(default_factory=dict)  # path -> last value written
    added: dict[str, set[str]] = field(default_factory=dict)  # collection -> IDs

    def wrote(self, path: str, value: Any) -> None:
        self.written[path] = value.isoformat() if isinstance(value, date) else value

    def add(self, collection: str, record_id: str) -> None:
        self.added.setdefault(collection, set()).add(record_id)


def make_base() -> Base:
    clock = FixedClock(START)
    chart = Chart.new_patient(
        {
            "given": "Neema",
            "family": "Mollel",
            "sex": "female",
            "birth_date": "1998-11-02",
            "phone": "+255754000111",
        },
        author="registrar",
        clock=clock,
        actor=b"\x00" * 16,
    )
    chart.set_consent("data_sharing", "granted")
    chart.set_pregnancy_status("unknown")
    tasks = (
        chart.add_task({"kind": "anc_visit", "description": "Second visit", "due": "2025-04-01"}),
        chart.add_task({"kind": "immunisation", "description": "TT2", "due": "2025-05-01"}),
    )
    return Base(
        chart=chart,
        tasks=tasks,
        referral=chart.add_referral({"urgency": "routine", "reason": "Ultrasound"}),
        allergy=chart.add_allergy({"substance": "Penicillin", "criticality": "high"}),
        medication=chart.add_medication({"name": "Folic acid", "dosage": "400 mcg daily"}),
    )


def make_fork(base: Base, number: int) -> Fork:
    name = "abc"[number]
    return Fork(base.chart.fork(author=f"chw-{name}", actor=bytes([number + 1]) * 16))


def apply(base: Base, fork: Fork, change: Edit) -> None:
    chart, args = fork.chart, change.args
    if change.action == "demographics":
        chart.update_demographics(args[0])
        for name, value in args[0].items():
            fork.wrote(name, value)
    elif change.action == "consent":
        chart.set_consent(args[0], args[1])
        fork.wrote(f"consent.{args[0]}", args[1])
    elif change.action == "pregnancy":
        chart.set_pregnancy_status(args[0])
        fork.wrote("pregnancy_status", args[0])
    elif change.action == "add_allergy":
        allergy_id = chart.add_allergy({"substance": args[0], "criticality": args[1]})
        fork.add("allergies", allergy_id)
        for name, value in (("substance", args[0]), ("criticality", args[1]), ("status", "active")):
            fork.wrote(f"allergy.{allergy_id}.{name}", value)
    elif change.action == "update_allergy":
        chart.update_allergy(base.allergy, args[0])
        for name, value in args[0].items():
            fork.wrote(f"allergy.{base.allergy}.{name}", value)
    elif change.action == "update_medication":
        chart.update_medication(base.medication, args[0])
        for name, value in args[0].items():
            fork.wrote(f"medication.{base.medication}.{name}", value)
    elif change.action == "add_task":
        task_id = chart.add_task({"kind": "follow_up", "description": args[0], "due": args[1]})
        fork.add("tasks", task_id)
        fork.wrote(f"task.{task_id}.status", "requested")
    elif change.action == "task_status":
        task_id = base.tasks[args[0]]
        chart.set_task_status(task_id, args[1])
        fork.wrote(f"task.{task_id}.status", args[1])
    elif change.action == "referral_status":
        chart.set_referral_status(base.referral, args[0])
        fork.wrote(f"referral.{base.referral}.status", args[0])
    elif change.action == "add_encounter":
        encounter = {
            "kind": "hypertension_follow_up",
            "started_at": chart.clock.now(),
            "zone": "Africa/Nairobi",
            "observations": vital_observations({"pulse": args[0]}),
        }
        fork.add("encounters", chart.record_encounter(encounter))
    elif change.action == "add_attachment":
        chart.add_attachment({"sha256": args[0], "media_type": "image/jpeg", "size": 1024})
        fork.add("attachments", args[0])
    elif change.action == "tick":
        assert isinstance(chart.clock, FixedClock)
        chart.clock.advance(timedelta(milliseconds=args[0]))
    else:
        raise AssertionError(change.action)


def forks_with_edits(base: Base, *edit_lists: list[Edit]) -> list[Fork]:
    forks = [make_fork(base, number) for number in range(len(edit_lists))]
    # Interleave the forks' edits, so that their clocks overlap as real tablets' would.
    for step in range(max(map(len, edit_lists), default=0)):
        for fork, changes in zip(forks, edit_lists, strict=True):
            if step < len(changes):
                apply(base, fork, changes[step])
    return forks


def copy_of(chart: Chart) -> Chart:
    """A copy through saved bytes, as the network would carry it."""
    return Chart.load(chart.save(), author=chart.author, clock=chart.clock)


def merged(*charts: Chart) -> Chart:
    result = copy_of(charts[0])
    for other in charts[1:]:
        result.merge(copy_of(other))
    return result


# -- what a merge must hold ---------------------------------------------------------------------


def values_of(entries: Iterable[Entry]) -> list[tuple[Any, str]]:
    return sorted(((e.value, e.by) for e in entries), key=repr)


def assert_last_writes_survive(base: Base, forks: list[Fork], result: Chart) -> None:
    """Each register holds the last value of every fork that wrote it, or else the base's."""
    base_registers = read_all(base.chart.document)
    registers = read_all(result.document)
    view = result.view()
    conflicts = {c.path: c for c in view.conflicts}
    event(f"paths in conflict: {min(len(conflicts), 3)}{'+' if len(conflicts) >= 3 else ''}")
    paths = set(base_registers).union(*(f.written for f in forks))
    assert set(registers) == paths

    for path in paths:
        writers = [f for f in forks if path in f.written]
        if writers:
            expected = sorted(((f.written[path], f.chart.author) for f in writers), key=repr)
        else:
            expected = values_of(base_registers[path])
        assert values_of(registers[path]) == expected, path
        assert view.fields[path] == registers[path][0].value
        if len({repr(value) for value, _ in expected}) > 1:
            assert conflicts[path].risky is is_risky(path)
            assert (conflicts[path] in view.review_list) is is_risky(path)
            assert values_of(conflicts[path].values) == expected
        else:
            assert path not in conflicts


def assert_added_records_survive(base: Base, forks: list[Fork], result: Chart) -> None:
    collections = result.view().collections
    for name, records in base.chart.view().collections.items():
        assert set(records) <= set(collections[name]), name
    for fork in forks:
        own = fork.chart.view().collections
        for name, ids in fork.added.items():
            for record_id in ids:
                if name == "attachments":
                    # Keyed by content: a concurrent add of the same file keeps one record.
                    assert record_id in collections[name]
                else:
                    assert collections[name][record_id] == own[name][record_id], name


# -- two forks ----------------------------------------------------------------------------------


@MERGE_SETTINGS
@given(edits_a=edit_lists, edits_b=edit_lists)
def test_two_forks_converge_and_keep_every_last_write(
    edits_a: list[Edit], edits_b: list[Edit]
) -> None:
    base = make_base()
    a, b = forks_with_edits(base, edits_a, edits_b)

    ab, ba = merged(a.chart, b.chart), merged(b.chart, a.chart)

    assert ab.view() == ba.view()
    assert sorted(ab.heads) == sorted(ba.heads)
    assert_last_writes_survive(base, [a, b], ab)
    assert_added_records_survive(base, [a, b], ab)


@settings(max_examples=100, deadline=None)
@given(edits_a=edit_lists, edits_b=edit_lists)
def test_merging_again_changes_nothing(edits_a: list[Edit], edits_b: list[Edit]) -> None:
    base = make_base()
    a, b = forks_with_edits(base, edits_a, edits_b)
    ab = merged(a.chart, b.chart)
    heads, view = ab.heads, ab.view()

    ab.merge(copy_of(b.chart))
    ab.merge(copy_of(a.chart))
    ab.merge(copy_of(base.chart))

    assert ab.heads == heads
    assert ab.view() == view


def test_concurrent_risky_and_plain_writes_are_listed() -> None:
    base = make_base()
    a, b = make_fork(base, 0), make_fork(base, 1)
    a.chart.update_demographics({"phone": "+255700000001", "village": "Juu"})
    b.chart.update_demographics({"phone": "+255700000002", "village": "Chini"})
    a.chart.update_allergy(base.allergy, {"criticality": "low"})
    b.chart.update_allergy(base.allergy, {"status": "inactive"})
    a.chart.set_task_status(base.tasks[0], "completed")
    b.chart.set_task_status(base.tasks[0], "cancelled")

    view = merged(a.chart, b.chart).view()

    assert {(c.path, c.risky) for c in view.conflicts} == {
        ("phone", True),
        ("village", False),
        (f"task.{base.tasks[0]}.status", False),
    }
    assert [c.path for c in view.review_list] == ["phone"]
    phone = next(c for c in view.conflicts if c.path == "phone")
    assert {(e.value, e.by) for e in phone.values} == {
        ("+255700000001", "chw-a"),
        ("+255700000002", "chw-b"),
    }
    allergy = view.item("allergies", base.allergy)
    assert (allergy["criticality"], allergy["status"]) == ("low", "inactive")


def test_same_value_written_on_both_forks_keeps_both_writes_but_is_no_conflict() -> None:
    base = make_base()
    a, b = make_fork(base, 0), make_fork(base, 1)
    a.chart.set_pregnancy_status("pregnant")
    b.chart.set_pregnancy_status("pregnant")

    result = merged(a.chart, b.chart)
    view = result.view()

    assert view.fields["pregnancy_status"] == "pregnant"
    assert view.conflicts == []
    assert view.review_list == []
    entries = read_all(result.document)["pregnancy_status"]
    assert sorted(e.by for e in entries) == ["chw-a", "chw-b"]


def test_risky_fields_are_the_clinically_dangerous_ones() -> None:
    risky = [
        "birth_date",
        "phone",
        "pregnancy_status",
        "allergy.x.substance",
        "medication.x.dosage",
    ]
    plain = ["given", "family", "sex", "village", "household_id", "consent.data_sharing"]
    plain += ["task.x.status", "referral.x.status"]

    assert [p for p in risky + plain if is_risky(p)] == risky


# -- resolving a conflict -----------------------------------------------------------------------

# Pairs of writes to the same paths with different values, one for each of two forks.
conflict_writes = st.lists(
    st.sampled_from(
        [
            (
                Edit("demographics", ({"phone": "+255700000001"},)),
                Edit("demographics", ({"phone": "+255700000002"},)),
            ),
            (
                Edit("demographics", ({"birth_date": date(1990, 1, 1), "village": "Juu"},)),
                Edit("demographics", ({"birth_date": date(1991, 2, 2), "village": "Chini"},)),
            ),
            (Edit("pregnancy", ("pregnant",)), Edit("pregnancy", ("not_pregnant",))),
            (
                Edit("consent", ("sms_reminders", "granted")),
                Edit("consent", ("sms_reminders", "withdrawn")),
            ),
            (
                Edit("update_allergy", ({"criticality": "low"},)),
                Edit("update_allergy", ({"criticality": "unable_to_assess"},)),
            ),
            (Edit("task_status", (0, "completed")), Edit("task_status", (0, "cancelled"))),
        ]
    ),
    min_size=1,
    unique_by=repr,
)


@settings(max_examples=300, deadline=None)
@given(
    forced=conflict_writes,
    edits_a=edit_lists,
    edits_b=edit_lists,
    edits_c=edit_lists,
    picks=st.lists(st.integers(0, 1), min_size=10, max_size=10),
)
def test_a_resolved_conflict_stays_resolved_after_merging_an_untouched_fork(
    forced: list[tuple[Edit, Edit]],
    edits_a: list[Edit],
    edits_b: list[Edit],
    edits_c: list[Edit],
    picks: list[int],
) -> None:
    base = make_base()
    # Both forks end by writing different values to the same paths: each is then in conflict.
    forced_a, forced_b = [pair[0] for pair in forced], [pair[1] for pair in forced]
    a, b, c = forks_with_edits(base, edits_a + forced_a, edits_b + forced_b, edits_c)
    result = merged(a.chart, b.chart)
    conflicts = result.view().conflicts
    assert {p for f in forced_a for p in written_paths(base, f)} <= {x.path for x in conflicts}

    chosen = {}
    for conflict, pick in zip(conflicts, picks * len(conflicts), strict=False):
        chosen[conflict.path] = conflict.values[pick].value
        result.resolve(conflict.path, conflict.values[pick].write_id)

    view = result.view()
    assert view.conflicts == []
    assert view.review_list == []
    assert {path: view.fields[path] for path in chosen} == chosen
    resolved_entries = read_all(result.document)

    with_c, c_with = merged(result, c.chart), merged(c.chart, result)

    assert with_c.view() == c_with.view()
    after = read_all(with_c.document)
    still_in_conflict = {x.path for x in with_c.view().conflicts}
    for path, value in chosen.items():
        if path in c.written:
            # c wrote the path without seeing the resolution: that is a new conflict.
            assert values_of(after[path]) == sorted(
                [(value, "chw-a"), (c.written[path], "chw-c")], key=repr
            )
            # ... unless both happen to hold the same value, which is no conflict.
            assert (path in still_in_conflict) is (value != c.written[path])
        else:
            assert after[path] == resolved_entries[path]
            assert path not in still_in_conflict


def written_paths(base: Base, change: Edit) -> list[str]:
    fork = make_fork(base, 0)
    apply(base, fork, change)
    return list(fork.written)


def test_resolve_keeps_the_chosen_value_and_records_who_resolved() -> None:
    base = make_base()
    a, b = make_fork(base, 0), make_fork(base, 1)
    a.chart.update_demographics({"birth_date": "1998-11-20"})
    b.chart.update_demographics({"birth_date": "1989-11-02"})
    result = merged(b.chart, a.chart)
    losing = next(c for c in result.view().review_list if c.path == "birth_date").values[-1]

    result.resolve("birth_date", losing.write_id)

    entries = read_all(result.document)["birth_date"]
    assert [(e.value, e.by) for e in entries] == [(losing.value, "chw-b")]
    assert result.view().demographics["birth_date"] == losing.value


# -- three forks --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(edits_a=edit_lists, edits_b=edit_lists, edits_c=edit_lists)
def test_three_forks_converge_in_any_merge_order(
    edits_a: list[Edit], edits_b: list[Edit], edits_c: list[Edit]
) -> None:
    base = make_base()
    forks = forks_with_edits(base, edits_a, edits_b, edits_c)
    a, b, c = (f.chart for f in forks)

    abc = merged(a, b, c)
    cba = merged(c, b, a)
    b_ca = merged(b, merged(c, a))

    assert abc.view() == cba.view() == b_ca.view()
    assert_last_writes_survive(base, forks, abc)
    assert_added_records_survive(base, forks, abc)
