"""The store benchmark as a smoke test: it runs at its quick size and reports every figure.

No timing is asserted here: a benchmark reports numbers, a test checks that it can.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks import population
from care_record import Chart, FixedClock, fold, vital_observations

ROOT = Path(__file__).parent.parent.parent

FIGURES = (
    "create_patient_ms_median",
    "record_visit_ms_median",
    "search_10k_ms_p95",
    "unlock_ms_median",
    "encrypted_over_plain",
    "db_bytes_per_visit",
)


def _benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench") / "results" / "store.json"
    return _benchmarks("store", "--quick", "--json", str(out)), out


def test_quick_store_benchmark_writes_every_figure(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = quick_run
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert isinstance(figures, dict)
    for name in FIGURES:
        assert isinstance(figures[name], int | float), name
        assert figures[name] > 0, name
    # One flat object of numbers, nothing nested.
    assert all(isinstance(v, int | float) for v in figures.values())
    assert figures["patients"] == 200
    assert figures["visits"] == 400


def test_quick_store_benchmark_prints_its_table_with_verdicts(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, _ = quick_run
    for name in FIGURES:
        assert name in done.stdout
    assert "<= 1.15" in done.stdout
    assert "PASS" in done.stdout or "MISS" in done.stdout
    assert "registering 200 patients in each store: done" in done.stderr  # progress: stderr


def test_an_unknown_benchmark_exits_2_and_lists_the_known_ones() -> None:
    done = _benchmarks("nosuch")
    assert done.returncode == 2
    assert "store" in done.stderr


def test_searches_for_absent_names_cannot_match_any_generated_name() -> None:
    rnd = random.Random(7)
    words = {
        w
        for p in population.people(rnd, 2000)
        for w in fold(f"{p.demographics['given']} {p.demographics['family']}").split()
    }
    for absent in population.ABSENT_NAMES:
        assert not any(w.startswith(fold(absent)) for w in words), absent


def test_generated_patients_and_visits_are_valid_for_the_chart() -> None:
    clock = FixedClock(datetime(2025, 3, 1, tzinfo=UTC))
    rnd = random.Random(11)
    for who in population.people(rnd, 300):
        chart = Chart.new_patient(who.demographics, author="chw", clock=clock)
        visit = population.visit(rnd, who)
        chart.record_encounter(
            {
                "kind": visit.kind,
                "started_at": clock.now(),
                "zone": "Africa/Dar_es_Salaam",
                "observations": vital_observations(visit.readings),
            }
        )
