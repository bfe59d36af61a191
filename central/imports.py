"""Bulk work from the command line: writing synthetic patients, and loading bundles.

``import`` sends each bundle through the same transaction processing as ``POST /fhir``
(validation, references, regions, audit), one database transaction per bundle, and shows its
progress. A bundle that fails is reported with its position and reason, and the others go on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import msgspec

from central.callers import ALL_REGIONS, Caller
from central.clock import Clock
from central.database import Database
from central.errors import CentralError, Refused
from central.fhir import bundles
from central.fhir.interactions import Context
from central.settings import Settings
from central.synthetic import population

PROGRESS_SECONDS = 2.0
OPERATOR = "operator"


class Io(Protocol):
    stdout: TextIO

    def say(self, text: str = "") -> None: ...

    def note(self, text: str) -> None: ...


def generate(patients: int, seed: int, region: str | None, out: str, io: Io) -> int:
    """Write ``patients`` synthetic patients, one transaction bundle per line."""
    target = io.stdout if out == "-" else Path(out).open("w", encoding="utf-8")  # noqa: SIM115
    resources = 0
    try:
        for bundle in population(seed, patients, region=region):
            resources += len(bundle["entry"])
            target.write(msgspec.json.encode(bundle).decode() + "\n")
    finally:
        if target is not io.stdout:
            target.close()
    io.note(f"wrote {patients} patients, {resources} resources")
    return 0


def load(
    files: Sequence[str],
    region: str | None,
    *,
    database: Database,
    settings: Settings,
    clock: Clock,
    io: Io,
) -> int:
    """Import every bundle of ``files``. Exit status 1 if any bundle was refused."""
    caller = Caller(OPERATOR, region or ALL_REGIONS, frozenset({"system/*.read", "system/*.write"}))
    ctx = Context(database, settings, clock, caller)
    done = failed = resources = 0
    started = last_report = time.monotonic()
    for where, bundle in _bundles(files):
        try:
            answer = bundles.process(ctx, bundle)
        except CentralError as exc:
            failed += 1
            io.note(f"{where}: refused: {exc}")
            continue
        done += 1
        resources += len(answer["entry"])
        if time.monotonic() - last_report >= PROGRESS_SECONDS:
            last_report = time.monotonic()
            _progress(io, done, failed, resources, last_report - started)
    _progress(io, done, failed, resources, time.monotonic() - started)
    return 1 if failed else 0


def _progress(io: Io, done: int, failed: int, resources: int, seconds: float) -> None:
    rate = resources / seconds if seconds > 0 else 0.0
    io.note(
        f"imported {done} bundles ({resources} resources, {rate:,.0f}/s)"
        + (f", {failed} refused" if failed else "")
    )


def _bundles(files: Sequence[str]) -> Iterator[tuple[str, Any]]:
    """(where, bundle) for each bundle: a file holds one JSON bundle or one per line."""
    for name in files:
        source = sys.stdin if name == "-" else _open(name)
        try:
            first = source.readline()
            try:
                yield f"{name}:1", msgspec.json.decode(first)
            except msgspec.DecodeError:
                yield name, _whole(name, first + source.read())
                continue
            for number, line in enumerate(source, start=2):
                if line.strip():
                    yield f"{name}:{number}", _line(name, number, line)
        finally:
            if source is not sys.stdin:
                source.close()


def _open(name: str) -> TextIO:
    try:
        return Path(name).open(encoding="utf-8")
    except OSError as exc:
        raise Refused(f"cannot read {name}: {exc.strerror}") from None


def _whole(name: str, text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise Refused(f"{name} is neither a JSON bundle nor one bundle per line") from None


def _line(name: str, number: int, line: str) -> Any:
    try:
        return msgspec.json.decode(line)
    except msgspec.DecodeError:
        raise Refused(f"{name}:{number} is not a JSON bundle") from None
