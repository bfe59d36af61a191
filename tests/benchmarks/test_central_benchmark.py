"""The central benchmark as a smoke test: real central and hub processes, SQLite and
PostgreSQL, a real tablet, at the quick size.

No timing is asserted here: a benchmark reports numbers, a test checks that it can, and that
the numbers are the kind they claim to be (every bundle answered, every search found the
patient's encounters, every visit reached central).
"""

from __future__ import annotations

import pytest

from tests.benchmarks.quick import Run, run_quick

GOALS = {
    "ingest_resources_per_s_sqlite": ">= 2000",
    "ingest_resources_per_s_postgres": ">= 2000",
    "ingest_errors": "<= 0",
    "search_p95_ms": "<= 50",
    "search_p95_ms_postgres": "<= 50",
    "visit_to_central_p95_s": "<= 5",
}
FIGURES = (
    *GOALS,
    "central_workers",
    "search_median_ms",
    "search_median_ms_postgres",
    "stored_resources",
    "load_seconds",
    "visit_to_central_median_s",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_quick("central", tmp_path_factory.mktemp("bench"), timeout=300)


def test_every_figure_of_the_issue_is_written_as_one_flat_object(quick_run: Run) -> None:
    _, figures = quick_run
    for name in FIGURES:
        assert isinstance(figures[name], int | float), name
    assert all(isinstance(v, int | float) for v in figures.values())


def test_every_bundle_search_and_visit_succeeded(quick_run: Run) -> None:
    _, f = quick_run
    assert f["ingest_errors"] == f["ingest_errors_sqlite"] == f["ingest_errors_postgres"] == 0
    assert f["ingest_resources_sqlite"] == f["ingest_resources_postgres"] == 1000
    assert f["search_errors"] == 0
    assert f["searches"] == 50
    # Patients have visits, so a patient's encounters are found (and not the whole table).
    assert 1 <= f["search_encounters_median"] <= 50
    assert f["visit_errors"] == 0
    assert f["visits"] == 3


def test_the_figures_are_sane(quick_run: Run) -> None:
    _, f = quick_run
    assert f["central_workers"] in (1, 2)
    assert f["ingest_threads"] == 4
    # Rates and times are positive and of a plausible order for this machine.
    assert 50 < f["ingest_resources_per_s_sqlite"] < 100_000
    assert 50 < f["ingest_resources_per_s_postgres"] < 100_000
    assert 0 < f["search_median_ms"] <= f["search_p95_ms"] < 5000
    assert 0 < f["search_median_ms_postgres"] <= f["search_p95_ms_postgres"] < 5000
    assert 0 < f["ingest_client_cpu_share"] < 2
    # Central's worker processes are counted too: a bundle costs central some CPU.
    assert 1 < f["ingest_server_cpu_ms_per_bundle_sqlite"] < 10_000
    assert 1 < f["ingest_server_cpu_ms_per_bundle_postgres"] < 10_000
    # Central holds 10,000 resources (loading stops after the bundle that reaches it).
    assert 10_000 <= f["stored_resources"] == f["stored_resources_postgres"] < 10_100
    assert 0 < f["load_seconds"] < f["run_seconds"]
    # The sync call is part of the time from a visit to central.
    assert 0 < f["visit_sync_median_s"] < f["visit_to_central_median_s"]
    assert f["visit_to_central_median_s"] <= f["visit_to_central_p95_s"]
    assert f["visit_to_central_p95_s"] <= f["visit_to_central_max_s"] < 60


def test_the_table_shows_each_goal_with_its_verdict_and_progress_goes_to_stderr(
    quick_run: Run,
) -> None:
    done, _ = quick_run
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    for name, goal in GOALS.items():
        assert goal in rows[name], name
        assert rows[name].rstrip().endswith(("PASS", "MISS")), name
    assert "central: search (sqlite): loading 10,000 resources in process" in done.stderr
    assert "central: visit 3 of 3" in done.stderr
    assert "central: ingest (" not in done.stdout
