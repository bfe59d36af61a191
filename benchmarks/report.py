"""What a benchmark hands back: named figures, some with a goal, shown as a table or as JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Where a benchmark reports how far a long phase has got (standard error in the CLI).
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Goal:
    """A figure's target: at most ``limit`` (at least, when ``at_least``)."""

    limit: float
    at_least: bool = False

    def met(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def __str__(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:g}"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str = ""
    goal: Goal | None = None

    @property
    def verdict(self) -> str:
        """PASS or MISS for a figure with a goal, empty otherwise."""
        if self.goal is None:
            return ""
        return "PASS" if self.goal.met(self.value) else "MISS"


@dataclass(frozen=True)
class Report:
    title: str
    figures: tuple[Figure, ...]

    def as_json(self) -> dict[str, float]:
        """One flat object: figure name -> value."""
        return {f.name: f.value for f in self.figures}

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")

    def table(self) -> str:
        header = ("figure", "value", "unit", "goal", "")
        rows = [
            (f.name, _number(f.value), f.unit, str(f.goal or ""), f.verdict) for f in self.figures
        ]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        lines = [self.title, ""]
        for row in (header, *rows):
            cells = [
                cell.rjust(width) if i == 1 else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


def _number(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.3f}"


def median_ms(samples_ns: Sequence[int]) -> float:
    return statistics.median(samples_ns) / 1e6


def p95_ms(samples_ns: Sequence[int]) -> float:
    """The 95th percentile, interpolated between the two nearest samples."""
    if len(samples_ns) == 1:
        return samples_ns[0] / 1e6
    return statistics.quantiles(samples_ns, n=100, method="inclusive")[94] / 1e6
