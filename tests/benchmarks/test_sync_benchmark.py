"""The sync benchmark as a smoke test: a real hub, real tablets, at the quick size.

No timing is asserted here: a benchmark reports numbers, a test checks that it can, and that
the numbers are the kind they claim to be (a round trip is a whole number, a ratio is a ratio).
"""

from __future__ import annotations

import pytest

from tests.benchmarks.quick import Run, run_quick

GOALS = {
    "day_round_trips": "<= 1",
    "day_bytes_over_gzip_json": "<= 1.5",
    "day_seconds_2g": "<= 5",
    "initial_sync_seconds": "<= 15",
    "initial_bytes_over_gzip_json": "<= 1.2",
    "initial_peak_rss_mb": "<= 300",
    "hub_p95_seconds": "<= 2",
    "hub_errors": "<= 0",
}
FIGURES = (*GOALS, "day_wire_bytes", "day_http_bytes", "hub_rss_mb")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_quick("sync", tmp_path_factory.mktemp("bench"), timeout=600)


def test_every_figure_of_the_issue_is_written_as_one_flat_object(
    quick_run: Run,
) -> None:
    _, figures = quick_run
    for name in FIGURES:
        assert isinstance(figures[name], int | float), name
    assert all(isinstance(v, int | float) for v in figures.values())


def test_the_figures_are_sane(
    quick_run: Run,
) -> None:
    _, f = quick_run
    # A usual day is one round trip whatever the size; every sync in the crowd succeeded.
    assert f["day_round_trips"] == 1
    assert f["day_2g_round_trips_max"] == 1
    assert f["hub_errors"] == 0
    assert f["hub_round_trips_max"] == 1
    # Bytes: the frames are inside the HTTP bytes, and both are real.
    assert 0 < f["day_wire_bytes"] == f["day_bytes_sent"] + f["day_bytes_received"]
    assert f["day_wire_bytes"] < f["day_http_bytes"] < f["day_wire_bytes"] + 4000
    assert f["day_gzip_json_bytes"] < f["day_json_bytes"]
    ratio = f["day_wire_bytes"] / f["day_gzip_json_bytes"]
    assert f["day_bytes_over_gzip_json"] == pytest.approx(ratio)
    assert 0.3 < f["day_bytes_over_gzip_json"] < 5
    assert 0.3 < f["initial_bytes_over_gzip_json"] < 5
    # Times and memory are positive and of a plausible order.
    assert f["day_seconds_2g"] > 0.3  # at least the emulated round trip
    assert 0 < f["initial_sync_seconds"] < f["initial_process_seconds"]
    assert 20 < f["initial_rss_mb_before_sync"] <= f["initial_peak_rss_mb"] < 2000
    assert 0 < f["hub_median_seconds"] <= f["hub_p95_seconds"] <= f["hub_max_seconds"]
    # Linux updates VmHWM lazily, so a VmRSS sample may pass it by a few pages.
    assert 10 < f["hub_rss_mb"] <= 1.05 * f["hub_peak_rss_mb"] < 2000
    assert f["hub_cpu_ms_per_sync"] > 0
    # The quick size.
    assert f["initial_patients"] == 50
    assert f["initial_visits"] == 150
    assert f["hub_tablets"] == 10
    assert f["hub_syncs"] == f["hub_tablets"] * f["hub_days"]


def test_the_table_shows_each_goal_with_its_verdict_and_progress_goes_to_stderr(
    quick_run: Run,
) -> None:
    done, _ = quick_run
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    for name, goal in GOALS.items():
        assert goal in rows[name], name
        assert rows[name].rstrip().endswith(("PASS", "MISS")), name
    assert "sync: initial: a new tablet syncs 50 charts in its own process" in done.stderr
    assert "sync:" not in done.stdout.replace("sync: a day", "")
