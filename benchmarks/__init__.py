"""Benchmarks: ``python -m benchmarks NAME [--quick] [--json PATH]`` (see DESIGN.md, "Measuring")."""

from benchmarks.report import Figure, Goal, Progress, Report

__all__ = ["Figure", "Goal", "Progress", "Report"]
