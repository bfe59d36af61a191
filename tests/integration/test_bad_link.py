"""The same sync through a bad link (benchmarks/linkemu.py, a user-space TCP proxy): slow,
lossy, and cut at byte offsets across the whole request and response.

A cut anywhere must leave both sides correct: the cut sync fails with a clear error (or
succeeds, when the cut came after it finished), and the next normal sync delivers everything,
each visit exactly once.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from benchmarks.linkemu import Link, LinkEmulator
from field_app.errors import HubUnreachable, SyncRefused

if TYPE_CHECKING:
    from tests.integration.conftest import Tablet, World

VILLAGE = "Kijiji cha Mlima"
CUT_TRIALS = 30


def test_a_slow_lossy_link_completes_and_converges(world: World) -> None:
    one = world.tablet("amina", VILLAGE)
    two = world.tablet("baraka", VILLAGE)
    charts = [one.new_patient(VILLAGE) for _ in range(4)]
    for chart in charts:
        one.visit(chart, note="Headache for two days")
    one.sync()
    two.sync()
    for chart in charts:
        one.visit(chart, systolic=150)
        two.visit(chart, systolic=160)
        two.set_phone(chart, "+255754999888")
    two.new_patient(VILLAGE)

    # Seed 31 loses the very first segment (its first draw is 0.012), so that a sync of a few
    # kilobytes (a dozen segments) meets at least one retransmission; 2% of the rest follow.
    link = Link(rtt=0.3, bandwidth=64_000, loss=0.02, seed=31)
    with LinkEmulator("127.0.0.1", world.hub.port, link) as emu:
        started = time.monotonic()
        up = one.sync(emu.url)
        down = two.sync(emu.url)
        again = one.sync(emu.url)
        took = time.monotonic() - started

    assert (up.round_trips, down.round_trips, again.round_trips) == (1, 1, 1)
    assert up.sent == 4
    assert down.sent == 5
    assert down.received == 4
    assert again.received == 5
    world.assert_converged()
    # The link really was slow and lossy: three round trips of 300 ms at least, one segment
    # held back a retransmission timeout (600 ms), and the bytes through it are what the
    # tablets counted plus HTTP's own.
    assert link.stats.losses >= 1
    assert took > 0.9 + 0.6
    sent = up.bytes_sent + down.bytes_sent + again.bytes_sent
    assert link.stats.bytes_up > sent
    assert link.stats.cuts == 0


def _size_of_a_sync(world: World, one: Tablet, two: Tablet, charts: list[str]) -> tuple[int, int]:
    """Bytes up and down (HTTP included) of the kind of sync the cut trials run."""
    _edit_both(world, one, two, charts, 0)
    link = Link()
    with LinkEmulator("127.0.0.1", world.hub.port, link) as emu:
        one.sync(emu.url)
    assert link.stats.connections == 1
    return link.stats.bytes_up, link.stats.bytes_down


def _edit_both(world: World, one: Tablet, two: Tablet, charts: list[str], trial: int) -> None:
    """The other tablet's work reaches the hub first, so the cut answer carries some of it."""
    two.visit(charts[trial % len(charts)], systolic=120 + trial % 50)
    two.sync()
    for chart in charts[trial % 2 :: 2]:
        one.visit(chart, systolic=130 + trial % 50)
    one.set_phone(charts[trial % len(charts)], f"+2557120{trial:05d}")


def _cut_sync(tablet: Tablet, port: int, offset: int, *, stays_bad: bool) -> tuple[str, str]:
    """One sync through a link cut ``offset`` bytes into each connection (``stays_bad``) or
    into the first one only: what happened, and the words the tablet said."""
    cuts = itertools.repeat(offset) if stays_bad else iter([offset])
    link = Link(cut_after=lambda: next(cuts, None))
    with LinkEmulator("127.0.0.1", port, link) as emu:
        try:
            report = tablet.sync(emu.url)
        except HubUnreachable as exc:
            return "hub unreachable", str(exc)
        except SyncRefused as exc:
            return f"refused ({exc.code})", str(exc)
    assert link.stats.connections >= 1
    assert report.round_trips == 1
    return ("retried and completed" if link.stats.cuts else "completed"), ""


def test_a_sync_cut_at_any_byte_loses_nothing_and_applies_nothing_twice(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    one = world.tablet("amina", VILLAGE)
    two = world.tablet("baraka", VILLAGE)
    charts = [one.new_patient(VILLAGE) for _ in range(4)]
    for chart in charts:
        one.visit(chart)
    world.sync_all(rounds=2)
    up, down = _size_of_a_sync(world, one, two, charts)
    world.sync_all(rounds=2)

    rng = random.Random(20250301)
    # Spread across request and response, with the edges that matter most: the request just
    # complete (the hub commits, the tablet hears nothing) and the answer one byte short.
    offsets = [rng.randrange(1, up + down) for _ in range(CUT_TRIALS - 4)]
    offsets += [up, up + 1, up + down - 1, up + down + 500]
    outcomes: Counter[str] = Counter()
    committed_unheard = 0
    for trial, offset in enumerate(offsets, start=1):
        _edit_both(world, one, two, charts, trial)
        before = world.hub.chart_heads()
        # Odd trials: the signal stays bad, every retry is cut at the same byte. Even trials:
        # it comes back, and the tablet's own retry finishes the sync (the hub may answer the
        # same changes twice).
        stays_bad = trial % 2 == 1
        outcome, words = _cut_sync(one, world.hub.port, offset, stays_bad=stays_bad)
        outcomes[outcome] += 1
        if outcome == "hub unreachable":
            assert stays_bad
            assert "Your work is safe on this tablet" in words
            committed_unheard += world.hub.chart_heads() != before
        # Only a clear refusal will do: a damaged answer, said so.
        assert not outcome.startswith("refused") or outcome == "refused (malformed)", words
        # A normal sync on a good link afterwards: everything arrives, once.
        one.sync()
        two.sync()
        one.sync()
        world.assert_converged()
        assert world.hub.integrity() == "ok"

    assert sum(outcomes.values()) == CUT_TRIALS
    assert outcomes["hub unreachable"] >= CUT_TRIALS // 2 - 2
    assert outcomes["retried and completed"] >= CUT_TRIALS // 2 - 2
    assert outcomes["completed"] >= 1
    assert committed_unheard >= 1, "no cut landed after the hub committed"
    with capsys.disabled():
        print(
            f"\n[bad link] {CUT_TRIALS} cuts over {up} bytes up + {down} down: "
            f"{dict(outcomes)}; hub committed but the answer was lost: {committed_unheard}"
        )
