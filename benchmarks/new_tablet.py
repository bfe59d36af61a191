"""``python -m benchmarks.new_tablet --data-dir DIR --user NAME`` (PIN on standard input).

A new tablet's first sync, alone in its own process, so that the memory it reaches is the
tablet's and nobody else's. It does what ``python -m field_app sync`` does (unlock, then
``field_app.syncing.sync`` with the enrolled hub, progress on standard error), and prints one
JSON object on standard output: the sync's own wall time, its round trips and frame bytes, the
charts it holds afterwards, and the process's peak resident set before and after the sync.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from benchmarks.tablets import ZONE
from care_record import SystemClock
from field_app.session import unlock
from field_app.settings import Settings
from field_app.syncing import hub_link, sync


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.new_tablet")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--user", required=True)
    args = parser.parse_args(argv)
    pin = sys.stdin.readline().rstrip("\r\n")
    clock = SystemClock()
    session = unlock(Settings(data_dir=args.data_dir, zone=ZONE), clock, args.user, pin)
    store = session.store
    before = peak_rss_mb()
    with httpx.Client() as client:
        link = hub_link(store, client, clock)
        started = time.perf_counter()
        report = sync(store, link, progress=lambda text: print(text, file=sys.stderr, flush=True))
        seconds = time.perf_counter() - started
    charts = store.count()
    session.lock()
    result = {
        "seconds": seconds,
        "round_trips": report.round_trips,
        "bytes_sent": report.bytes_sent,
        "bytes_received": report.bytes_received,
        "received": report.received,
        "new": report.new,
        "charts": charts,
        "peak_rss_mb_before_sync": before,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
