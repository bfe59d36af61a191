"""The forms benchmark as a smoke test: it runs at its quick size and reports every figure.

No timing is asserted here: a benchmark reports numbers, a test checks that it can.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from field_app.forms import FormLibrary

ROOT = Path(__file__).parent.parent.parent

FIGURES = (
    "answer_update_ms_p95",
    "complete_visit_ms_median",
    "answer_update_ms_median",
    "form_items",
    "form_rules",
)


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench") / "results" / "forms.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "forms", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done, out


def test_quick_forms_benchmark_writes_every_figure(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = quick_run
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert isinstance(figures, dict)
    for name in FIGURES:
        assert isinstance(figures[name], int | float), name
        assert figures[name] > 0, name
    assert all(isinstance(v, int | float) for v in figures.values())
    library = FormLibrary()
    most_items = max(len(library.get(n).questionnaire.items) for n in library.names())
    assert figures["form_items"] == most_items
    assert figures["answer_updates"] >= 200
    assert figures["visits"] == 10


def test_quick_forms_benchmark_prints_its_table_and_progress(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, _ = quick_run
    for name in FIGURES:
        assert name in done.stdout
    assert "<= 5" in done.stdout
    assert "<= 20" in done.stdout
    assert "PASS" in done.stdout or "MISS" in done.stdout
    assert "visits: done in" in done.stderr  # progress goes to stderr
