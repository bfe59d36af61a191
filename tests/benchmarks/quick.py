"""A benchmark's ``--quick`` run, as the smoke tests start it: its own process, its JSON read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
Run = tuple[subprocess.CompletedProcess[str], dict[str, float]]


def run_quick(name: str, folder: Path, *, timeout: float) -> Run:
    """``python -m benchmarks NAME --quick --json FOLDER/results/NAME.json``; it must succeed
    and write one JSON object."""
    out = folder / "results" / f"{name}.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", name, "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert isinstance(figures, dict)
    return done, figures
