"""Two and three tablets and a real hub under uvicorn, with real charts on every side.

Each test drives the tablets through ``field_app.syncing.sync`` (or the tablet's CLI) over HTTP
to a ``python -m sync_hub serve`` process, then compares what every side holds: the heads of
each chart on every tablet against the hub's ``charts`` table, and every visit recorded.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from care_record import FixedClock
from field_app.syncing import sync

if TYPE_CHECKING:
    from tests.integration.conftest import Tablet, World

VILLAGE = "Kijiji cha Mlima"


@pytest.mark.parametrize("count", [2, 3])
def test_every_chart_converges_on_every_tablet_and_the_hub(world: World, count: int) -> None:
    tablets = [world.tablet(f"chw{i}", VILLAGE) for i in range(count)]
    for i, tablet in enumerate(tablets):
        for _ in range(2):
            chart = tablet.new_patient(VILLAGE, phone=f"+25571200000{i}")
            tablet.visit(chart, systolic=110 + i)
            tablet.add_task(chart)

    world.sync_all(rounds=2)

    hub_heads = world.hub.chart_heads()
    assert len(hub_heads) == 2 * count
    for tablet in tablets:
        assert tablet.heads() == hub_heads, tablet.name
    world.assert_converged()
    # Every side reads the same chart, not just the same bytes' hashes.
    for chart_id in hub_heads:
        views = [t.view(chart_id) for t in tablets]
        assert all(v.fields == views[0].fields for v in views)
        assert all(v.collections == views[0].collections for v in views)


@pytest.mark.parametrize("count", [2, 3])
def test_a_chart_made_on_one_tablet_and_edited_on_the_others_converges(
    world: World, count: int
) -> None:
    tablets = [world.tablet(f"chw{i}", VILLAGE) for i in range(count)]
    chart = tablets[0].new_patient(VILLAGE)
    world.sync_all(rounds=1)
    for i, tablet in enumerate(tablets):
        tablet.visit(chart, systolic=130 + i)
    world.sync_all(rounds=2)

    world.assert_converged()
    assert len(world.hub.encounters()[chart]) == count
    assert {t.heads()[chart] for t in tablets} == {world.hub.chart_heads()[chart]}


# -- concurrent offline edits --------------------------------------------------------------------

PHONES = st.sampled_from(["+255712000111", "+255754999888", "+255784555666", "+255713999000"])
TASK_STATUS = st.sampled_from([None, "completed", "cancelled"])


@st.composite
def offline_days(draw: st.DrawFn) -> list[tuple[int, str | None, str | None]]:
    """For each of 2 or 3 tablets: (visits recorded, phone written or None, task status or
    None), all made offline on the same chart. The first two write different phones; a third
    may write none, or the same as one of them."""
    editors = draw(st.integers(min_value=2, max_value=3))
    phones: list[str | None] = list(draw(st.lists(PHONES, min_size=2, max_size=2, unique=True)))
    phones += [draw(st.one_of(st.none(), PHONES)) for _ in range(editors - 2)]
    return [
        (draw(st.integers(min_value=1, max_value=2)), phone, draw(TASK_STATUS)) for phone in phones
    ]


@pytest.fixture
def trio(world: World) -> list[Tablet]:
    return [world.tablet(f"chw{i}", VILLAGE) for i in range(3)]


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(day=offline_days())
def test_concurrent_offline_edits_of_one_chart_keep_every_visit_and_list_the_phone_conflict(
    world: World, trio: list[Tablet], day: list[tuple[int, str | None, str | None]]
) -> None:
    # One hub and three tablets for the whole test; a new chart for each example.
    owner = trio[0]
    chart = owner.new_patient(VILLAGE, phone="+255700000000")
    task = owner.add_task(chart)
    world.sync_all(rounds=2)
    assert all(chart in t.chart_ids() for t in trio)

    editors = trio[: len(day)]
    for tablet, (visits, phone, status) in zip(editors, day, strict=True):
        for n in range(visits):
            tablet.visit(chart, systolic=100 + n, note=f"visit by {tablet.name}")
        if phone is not None:
            tablet.set_phone(chart, phone)
        if status is not None:
            tablet.set_task_status(chart, task, status)

    world.sync_all(rounds=2)

    world.assert_converged()
    hub_heads = world.hub.chart_heads()
    views = [t.view(chart) for t in trio]
    for tablet, view in zip(trio, views, strict=True):
        assert tablet.heads()[chart] == hub_heads[chart]
        # Every visit of every tablet is there, each once.
        assert sorted(view.collections["encounters"]) == world.ledger.expected()[chart]
        assert len(view.collections["encounters"]) == sum(v for v, _, _ in day)

    phones = {p for _, p, _ in day if p is not None}
    statuses = {s for _, _, s in day if s is not None}
    for tablet, view in zip(trio, views, strict=True):
        conflicts = {c.path: c for c in view.conflicts}
        # The risky field's conflict is listed, with every value, on every tablet.
        assert "phone" in conflicts, tablet.name
        assert conflicts["phone"].risky
        assert {e.value for e in conflicts["phone"].values} == phones
        assert "phone" in {c.path for c in view.review_list}
        status_path = f"task.{task}.status"
        if len(statuses) > 1:
            assert status_path in conflicts
            assert {e.value for e in conflicts[status_path].values} == statuses
        else:
            assert status_path not in conflicts
            want = next(iter(statuses)) if statuses else "requested"
            assert view.item("tasks", task)["status"] == want
    # The three tablets show the same chart.
    for a, b in pairwise(views):
        assert a.fields == b.fields
        assert a.conflicts == b.conflicts


# -- the usual day ---------------------------------------------------------------------------------


def test_a_usual_days_sync_is_one_round_trip(world: World) -> None:
    one = world.tablet("amina", VILLAGE)
    two = world.tablet("baraka", VILLAGE)
    charts = [one.new_patient(VILLAGE) for _ in range(6)]
    for chart in charts:
        one.visit(chart)
    first = one.sync()
    assert first.round_trips == 1
    assert first.sent == 6
    two_first = two.sync()
    assert two_first.new == 6

    for day in range(3):
        # Visits to several charts on both tablets, a new patient, a task closed.
        for chart in charts[day : day + 3]:
            one.visit(chart, systolic=140 + day)
            two.visit(chart, systolic=150 + day)
        one.new_patient(VILLAGE)
        report_one = one.sync()
        report_two = two.sync()
        assert report_one.round_trips == 1, f"day {day}: {report_one}"
        assert report_two.round_trips == 1, f"day {day}: {report_two}"
        assert report_one.sent == 4
        assert report_two.sent == 3
        assert report_two.received == 4  # one's three visited charts and its new patient

    # The CLI says so in words too.
    one.visit(charts[0])
    result = one.cli("sync")
    assert result.code == 0, result.err
    assert re.search(r"sent 1 charts, received \d+ \(0 new\) in 1 round trip;", result.out)
    world.sync_all(rounds=2)
    world.assert_converged()


def test_a_first_sync_of_many_charts_comes_in_pages_then_one_round_trip(world: World) -> None:
    one = world.tablet("amina", VILLAGE)
    charts = [one.new_patient(VILLAGE) for _ in range(12)]
    for chart in charts:
        one.visit(chart, note="x" * 200)
    assert one.sync().round_trips == 1

    two = world.tablet("baraka", VILLAGE)
    pages: list[str] = []
    first = sync(two.store, two.link(), progress=pages.append, max_snapshot_bytes=4000)
    assert first.new == 12
    assert first.round_trips > 1
    assert pages, "a paged first sync reports progress"
    assert two.sync().round_trips == 1
    world.assert_converged()


def test_a_tablet_whose_clock_is_an_hour_out_corrects_it_and_syncs(world: World) -> None:
    wrong = FixedClock(datetime.now(UTC) - timedelta(hours=1))
    tablet = world.tablet("amina", VILLAGE, clock=wrong)
    tablet.visit(tablet.new_patient(VILLAGE))
    report = tablet.sync()
    # The hub said clock_skew with its own time; the tablet kept the offset and signed again.
    assert report.round_trips == 1
    offset = tablet.store.db.execute("SELECT value FROM meta WHERE key = 'hub.clock_offset'")
    assert abs(int(offset.fetchone()[0]) - 3600) < 120
    tablet.visit(next(iter(tablet.chart_ids())))
    assert tablet.sync().round_trips == 1
    world.assert_converged()
