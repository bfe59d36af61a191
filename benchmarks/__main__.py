"""``python -m benchmarks NAME [--quick] [--json PATH]``: run one benchmark, print its table.

Exit status: 0 when the benchmark ran (a missed goal is a number to read, not a failure),
2 when the command line is wrong or names no known benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

from benchmarks.report import Progress, Report

# Name -> module with ``run(*, quick, progress) -> Report``; imported only when chosen, so one
# benchmark's dependencies never stop another from running.
BENCHMARKS: dict[str, str] = {
    "store": "benchmarks.store",
    "sync": "benchmarks.sync",
    "forms": "benchmarks.forms",
    "central": "benchmarks.central",
    "sms": "benchmarks.sms",
}


class Benchmark(Protocol):
    def run(self, *, quick: bool, progress: Progress) -> Report: ...


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    module = BENCHMARKS.get(args.name)
    if module is None:
        print(
            f"unknown benchmark '{args.name}'; known benchmarks: {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    benchmark = cast(Benchmark, importlib.import_module(module))
    result = benchmark.run(quick=args.quick, progress=_to_stderr)
    print(result.table())
    if args.json is not None:
        result.write_json(args.json)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Run a benchmark and report its figures."
    )
    parser.add_argument("name", help=f"the benchmark to run: {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--quick", action="store_true", help="a small size, run by the test suite as a smoke test"
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the figures as one flat JSON object"
    )
    return parser


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
