"""The hub killed with SIGKILL at random points of a sync, then restarted on the same database.

A timer kills the hub at a random moment after a tablet starts syncing (uniform over a window a
little longer than a sync takes here, at most 150 ms): before its request, while the hub works
on it, between the commit and the answer, or after. The kills pile up across trials
(a tablet that lost its answer carries on from there). After every restart the database is
whole and has lost nothing it had committed; a tablet that heard its answer finds its work at
the hub; and the final syncs deliver every visit to every side, exactly once.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from field_app.errors import HubUnreachable
from field_app.syncing import sync

if TYPE_CHECKING:
    from tests.integration.conftest import HubProcess, Tablet, World

VILLAGE = "Kijiji cha Mlima"
TRIALS = 50
MAX_DELAY = 0.150


@dataclass
class Attempt:
    start: float
    end: float
    answered: bool


@dataclass
class Timeline(httpx.BaseTransport):
    """httpx's own transport, with the start and end of each attempt written down, so that a
    kill can be placed: before the request, during it, or after its answer."""

    inner: httpx.HTTPTransport = field(default_factory=httpx.HTTPTransport)
    attempts: list[Attempt] = field(default_factory=list)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = time.monotonic()
        try:
            response = self.inner.handle_request(request)
            response.read()
        except httpx.HTTPError:
            self.attempts.append(Attempt(start, time.monotonic(), answered=False))
            raise
        self.attempts.append(Attempt(start, time.monotonic(), answered=True))
        return response

    def close(self) -> None:
        self.inner.close()

    def where(self, killed_at: float) -> str:
        first = self.attempts[0] if self.attempts else None
        if first is None or killed_at < first.start:
            return "before the request"
        for attempt in self.attempts:
            if attempt.start <= killed_at <= attempt.end:
                return "after the answer" if attempt.answered else "mid-request"
        return "after the answer"


def _edits(rng: random.Random, tablet: Tablet, trial: int) -> None:
    """Random work on the charts the tablet holds, so that every sync has something to carry."""
    charts = sorted(tablet.chart_ids())
    for chart in rng.sample(charts, rng.randint(1, 4)):
        tablet.visit(chart, systolic=rng.randint(90, 180))
    if rng.random() < 0.3:
        tablet.set_phone(rng.choice(charts), f"+2557{rng.randint(10_000_000, 99_999_999)}")
    if rng.random() < 0.2:
        charts.append(tablet.new_patient(VILLAGE))
    if rng.random() < 0.2:
        tablet.add_task(rng.choice(charts), f"Follow-up {trial}")


def _timed_sync(tablet: Tablet) -> float:
    started = time.monotonic()
    tablet.sync()
    return time.monotonic() - started


def _sync_while_killed(hub: HubProcess, tablet: Tablet, delay: float) -> tuple[bool, str]:
    """The tablet syncs; a timer kills the hub ``delay`` seconds in. Whether the tablet heard
    its answer, and where in the sync the kill landed."""
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        hub.kill()

    timeline = Timeline()
    with httpx.Client(transport=timeline) as client:
        timer = threading.Timer(delay, kill)
        timer.start()
        try:
            sync(tablet.store, tablet.link(client=client))
        except HubUnreachable:
            heard = False
        else:
            heard = True
        timer.join()
    return heard, timeline.where(killed_at[0])


def _check_after_restart(
    world: World, victim: Tablet, before: dict[str, list[str]], *, heard: bool, trial: int
) -> None:
    hub = world.hub
    assert hub.integrity() == "ok", f"trial {trial}"
    after = hub.encounters()
    # Nothing the hub had committed was lost to the kill.
    for chart, visits in before.items():
        assert set(visits) <= set(after[chart]), f"trial {trial}: lost committed visits"
    # Nothing arrived that nobody recorded, and nothing twice.
    for chart, visits in after.items():
        assert len(visits) == len(set(visits))
        assert set(visits) <= world.ledger.visits[chart]
    if heard:
        # The hub commits before it answers: what the tablet heard about is stored.
        mine = victim.encounters()
        assert all(set(mine[c]) <= set(after.get(c, [])) for c in mine), f"trial {trial}"


def test_the_hub_killed_mid_sync_loses_nothing_and_applies_nothing_twice(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = world.hub
    tablets = [world.tablet("amina", VILLAGE), world.tablet("baraka", VILLAGE)]
    for _ in range(6):
        tablets[0].new_patient(VILLAGE)
    world.sync_all(rounds=2)
    rng = random.Random(1337)
    # How long a sync like the trials' takes here, against a hub just restarted as in every
    # trial: the kills are spread over a window a little longer than that.
    durations = []
    for n in range(6):
        _edits(rng, tablets[n % 2], -1)
        hub.restart()
        durations.append(_timed_sync(tablets[n % 2]))
    window = min(MAX_DELAY, 1.5 * statistics.median(durations))
    where: Counter[str] = Counter()
    results: Counter[str] = Counter()
    committed_unheard = 0

    for trial in range(TRIALS):
        for tablet in tablets:
            _edits(rng, tablet, trial)
        victim = tablets[trial % 2]
        before, heads_before = hub.encounters(), hub.chart_heads()
        heard, place = _sync_while_killed(hub, victim, rng.uniform(0, window))
        where[place] += 1
        results["completed" if heard else "hub unreachable"] += 1
        hub.start()
        _check_after_restart(world, victim, before, heard=heard, trial=trial)
        committed_unheard += not heard and hub.chart_heads() != heads_before
        if trial % 10 == 9:
            world.sync_all(rounds=2)
            world.assert_converged()

    world.sync_all(rounds=2)
    world.assert_converged()
    hub_heads = hub.chart_heads()
    for tablet in tablets:
        assert tablet.heads() == hub_heads
    assert hub.integrity() == "ok"
    assert hub.starts == TRIALS + 7
    assert sum(where.values()) == TRIALS
    # The timer spreads the kills over the sync: some land while a request is in flight.
    assert where["mid-request"] >= 5, dict(where)
    with capsys.disabled():
        print(
            f"\n[hub crash] {TRIALS} kills within {window * 1000:.0f} ms of a sync's start: "
            f"{dict(where)}; syncs {dict(results)}; "
            f"committed but the answer was lost: {committed_unheard}"
        )


def test_a_hub_restored_from_an_old_backup_gets_everything_back_from_the_tablets(
    world: World, tmp_path: Path
) -> None:
    """The tablets remember heads the restored hub never had: the hub says resync, the two
    sides run Automerge's own sync protocol, and everything converges again."""
    hub = world.hub
    one, two = world.tablet("amina", VILLAGE), world.tablet("baraka", VILLAGE)
    charts = [one.new_patient(VILLAGE) for _ in range(3)]
    for chart in charts:
        one.visit(chart)
    world.sync_all(rounds=2)
    backup = tmp_path / "backup.db"
    _copy_database(hub.db, backup)

    # A day of work after the backup: visits, a new patient on each side, a conflict.
    for chart in charts:
        one.visit(chart, systolic=150)
        two.visit(chart, systolic=160)
    charts += [one.new_patient(VILLAGE), two.new_patient(VILLAGE)]
    one.set_phone(charts[0], "+255754999888")
    two.set_phone(charts[0], "+255784555666")
    world.sync_all(rounds=2)
    world.assert_converged()

    hub.stop()
    _copy_database(backup, hub.db)
    hub.start()
    assert len(hub.chart_heads()) == 3

    reports = world.sync_all(rounds=2)
    assert all(r.round_trips >= 1 for r in reports)
    world.assert_converged()
    assert set(hub.chart_heads()) == set(charts)
    phone = {c.path: c for c in hub.chart(charts[0]).view().conflicts}["phone"]
    assert {e.value for e in phone.values} == {"+255754999888", "+255784555666"}
    # And the day after, a usual sync is one round trip again.
    one.visit(charts[1])
    assert one.sync().round_trips == 1
    assert two.sync().round_trips == 1
    world.assert_converged()


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy through SQLite's backup API (what a backup script would do)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def test_a_tablet_restored_from_an_old_backup_gets_its_later_work_back(
    world: World, tmp_path: Path
) -> None:
    """The restored tablet remembers an older sync than the hub counted: the hub forgets what
    it learned of the tablet since, and sends those charts again; nothing recorded after the
    backup stays away from the tablet."""
    one = world.tablet("amina", VILLAGE)
    charts = [one.new_patient(VILLAGE) for _ in range(2)]
    one.visit(charts[0])
    one.sync()
    one.sync()
    one.close()
    backup = tmp_path / "tablet-backup"
    shutil.copytree(one.settings.data_dir, backup)

    # Work after the backup, safely synced to the hub.
    later_visit = one.visit(charts[1], systolic=150)
    later_patient = one.new_patient(VILLAGE)
    one.sync()
    one.sync()
    at_hub = world.hub.encounters()
    assert later_visit in at_hub[charts[1]]
    assert later_patient in at_hub

    # The tablet is restored from its backup (a replaced SD card, a reinstalled app).
    one.close()
    shutil.rmtree(one.settings.data_dir)
    shutil.copytree(backup, one.settings.data_dir)
    assert later_patient not in one.chart_ids()

    one.sync()
    assert later_patient in one.chart_ids()
    assert later_visit in one.encounters()[charts[1]]
    world.assert_converged()
    # And from then on a usual sync is one round trip again.
    one.visit(charts[0], systolic=140)
    assert one.sync().round_trips == 1
    world.assert_converged()
