"""``python -m benchmarks store``: the tablet's store, with encryption on and off, in one run.

Two stores receive the same operations in the same order from the same synthetic population:
register every patient, record their visits (in rounds, each round in a shuffled order, as a
CHW's weeks go), then search by name. The operations alternate between the two stores, so a
change in the machine's speed during the run weighs on both alike. The encrypted store is the
tablet's real one: made by ``field_app.session.init_store`` and, at the end, opened again and
again by ``unlock`` at the production scrypt cost. The plain store is the same ``Store`` code
over ``connect(path, key=None)``: the same SQLCipher library, without a key. Every write is one
transaction; every operation is timed alone with ``perf_counter_ns``.

``add_patient`` and ``record_visit`` below are ``field_app.patients.add_patient`` and
``field_app.visits.record_visit`` written over a ``Store`` instead of a ``Session``, so that
the plain store goes down exactly the same path; keep them in step with those two.
"""

from __future__ import annotations

import random
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from benchmarks import population
from benchmarks.population import Person, Visit
from benchmarks.report import Figure, Goal, Progress, Report, median_ms, p95_ms
from care_record import Clock, SystemClock, new_id
from field_app.patients import register_patient
from field_app.session import init_store, unlock
from field_app.settings import Settings
from field_app.store import DB_FILE, Store, connect
from field_app.visits import write_visit

SEED = 20250301
USER = "chw1"
PIN = "kahawa-2718"
ZONE = "Africa/Dar_es_Salaam"

T = TypeVar("T")


@dataclass(frozen=True)
class Size:
    patients: int
    visits_per_patient: int
    searches: int
    unlocks: int


FULL = Size(patients=10_000, visits_per_patient=5, searches=200, unlocks=9)
QUICK = Size(patients=200, visits_per_patient=2, searches=50, unlocks=3)


@dataclass(frozen=True)
class Workload:
    """What both runs do: register ``people``, record ``visits`` (by index), run ``queries``."""

    people: list[Person]
    visits: list[tuple[int, Visit]]
    queries: list[str]


@dataclass(frozen=True)
class Tablet:
    """What a write needs: the store, the clock, who is writing and the local time zone."""

    store: Store
    clock: Clock
    author: str
    zone: str


@dataclass
class Timings:
    """Nanoseconds per operation in the order they ran; patients found by each search."""

    create: list[int] = field(default_factory=list)
    visit: list[int] = field(default_factory=list)
    search: list[int] = field(default_factory=list)
    found: list[int] = field(default_factory=list)

    def total_ns(self) -> int:
        return sum(self.create) + sum(self.visit) + sum(self.search)


@dataclass(frozen=True)
class Outcome:
    encrypted: Timings
    plain: Timings
    db_bytes: int
    plain_db_bytes: int
    unlock_ns: list[int]


def run(*, quick: bool, progress: Progress) -> Report:
    size = QUICK if quick else FULL
    workload = make_workload(size, random.Random(SEED))
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        # The production settings (scrypt cost included), in a folder of the benchmark's own.
        settings = Settings(data_dir=Path(tmp) / "encrypted", zone=ZONE)
        outcome = run_both(settings, Path(tmp) / "plain", workload, size.unlocks, progress)
    if outcome.encrypted.found != outcome.plain.found:
        raise RuntimeError("the encrypted and plain stores answered the same searches differently")
    return report(size, settings, workload, outcome)


def make_workload(size: Size, rnd: random.Random) -> Workload:
    people = population.people(rnd, size.patients)
    visits: list[tuple[int, Visit]] = []
    for _ in range(size.visits_per_patient):
        order = list(range(size.patients))
        rnd.shuffle(order)
        visits += [(i, population.visit(rnd, people[i])) for i in order]
    return Workload(people, visits, population.name_queries(rnd, people, size.searches))


# -- the run --------------------------------------------------------------------------------


def run_both(
    settings: Settings, plain_folder: Path, workload: Workload, unlocks: int, progress: Progress
) -> Outcome:
    """The workload on a real encrypted store and on a plain one, then the unlocks."""
    clock = SystemClock()
    session = init_store(settings, clock, USER, PIN)
    plain_folder.mkdir(parents=True)
    plain = Store(
        connect(plain_folder / DB_FILE, key=None),
        actor=secrets.token_bytes(16),
        author=new_id(clock),
        clock=clock,
    )
    try:
        # Held directly: the session's idle lock (5 minutes) would end a full run half-way.
        encrypted = session.store
        tablets = (
            Tablet(encrypted, clock, session.user.id, ZONE),
            Tablet(plain, clock, plain.author, ZONE),
        )
        enc_timings, plain_timings = run_workload(tablets, workload, progress)
        sizes = _db_bytes(encrypted), _db_bytes(plain)
    finally:
        session.lock()
        plain.close()
    progress(f"store: unlocking {unlocks} times at scrypt N = 2^{settings.scrypt_log2_n}")
    unlock_ns = [_time_unlock(settings, clock) for _ in range(unlocks)]
    return Outcome(enc_timings, plain_timings, *sizes, unlock_ns)


def _time_unlock(settings: Settings, clock: Clock) -> int:
    started = time.perf_counter_ns()
    session = unlock(settings, clock, USER, PIN)
    elapsed = time.perf_counter_ns() - started
    session.lock()
    return elapsed


def run_workload(
    tablets: Sequence[Tablet], workload: Workload, progress: Progress
) -> list[Timings]:
    """Each operation on every tablet in turn, a different one first each time, so that the
    machine's changes of speed during a long run fall on all of them alike."""
    timings = [Timings() for _ in tablets]
    ids: list[list[str]] = [[] for _ in tablets]
    with _phase(progress, "registering", len(workload.people), "patients") as tick:
        for n, who in enumerate(workload.people):
            for i, tablet in _in_turn(tablets, n):
                add = partial(add_patient, tablet, who.demographics)
                ids[i].append(_timed(timings[i].create, add))
            tick()
    with _phase(progress, "recording", len(workload.visits), "visits") as tick:
        for n, (index, visit) in enumerate(workload.visits):
            for i, tablet in _in_turn(tablets, n):
                _timed(timings[i].visit, partial(record_visit, tablet, ids[i][index], visit))
            tick()
    with _phase(progress, "searching", len(workload.queries), "names") as tick:
        for n, text in enumerate(workload.queries):
            for i, tablet in _in_turn(tablets, n):
                found = _timed(timings[i].search, partial(tablet.store.search, text))
                timings[i].found.append(len(found))
            tick()
    return timings


def _in_turn(tablets: Sequence[Tablet], n: int) -> Iterator[tuple[int, Tablet]]:
    for j in range(len(tablets)):
        i = (n + j) % len(tablets)
        yield i, tablets[i]


def _timed(samples: list[int], operation: Callable[[], T]) -> T:
    started = time.perf_counter_ns()
    result = operation()
    samples.append(time.perf_counter_ns() - started)
    return result


# -- the operations: field_app's own, over each store ------------------------------------------


def add_patient(tablet: Tablet, demographics: dict[str, str]) -> str:
    return register_patient(tablet.store, demographics)


def record_visit(tablet: Tablet, patient_id: str, visit: Visit) -> str:
    return write_visit(
        tablet.store, patient_id, visit.readings, zone=tablet.zone, kind=visit.kind, note=visit.note
    )


# -- measuring --------------------------------------------------------------------------------


def _db_bytes(store: Store) -> int:
    """The database's size on disk once its write-ahead log is folded in."""
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = Path(store.db.execute("PRAGMA database_list").fetchone()[2])
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


@contextmanager
def _phase(progress: Progress, doing: str, total: int, what: str) -> Iterator[Callable[[], None]]:
    """Report every tenth of a long phase (every 1,000 at least), then how long it took."""
    step = max(1000, total // 10)
    started = time.perf_counter()
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if done % step == 0 and done < total:
            elapsed = time.perf_counter() - started
            progress(f"store: {doing} {done:,} / {total:,} {what} in each store ({elapsed:.1f} s)")

    yield tick
    elapsed = time.perf_counter() - started
    progress(f"store: {doing} {total:,} {what} in each store: done in {elapsed:.1f} s")


# -- the report -----------------------------------------------------------------------------


def report(size: Size, settings: Settings, workload: Workload, outcome: Outcome) -> Report:
    enc, pla = outcome.encrypted, outcome.plain
    visits = len(workload.visits)
    title = (
        f"store: {size.patients:,} patients, {visits:,} visits, {len(workload.queries)} searches,"
        f" {size.unlocks} unlocks at scrypt N = 2^{settings.scrypt_log2_n}; encrypted vs plain"
    )
    figures = (
        Figure("create_patient_ms_median", median_ms(enc.create), "ms", Goal(5)),
        Figure("record_visit_ms_median", median_ms(enc.visit), "ms"),
        Figure("search_10k_ms_p95", p95_ms(enc.search), "ms", Goal(30)),
        Figure("unlock_ms_median", median_ms(outcome.unlock_ns), "ms", Goal(500)),
        Figure("encrypted_over_plain", enc.total_ns() / pla.total_ns(), "ratio", Goal(1.15)),
        Figure("db_bytes_per_visit", outcome.db_bytes / visits, "bytes"),
        Figure("create_patient_ms_p95", p95_ms(enc.create), "ms"),
        Figure("record_visit_ms_p95", p95_ms(enc.visit), "ms"),
        Figure("search_10k_ms_median", median_ms(enc.search), "ms"),
        Figure("unlock_ms_max", max(outcome.unlock_ns) / 1e6, "ms"),
        Figure("plain_create_patient_ms_median", median_ms(pla.create), "ms"),
        Figure("plain_record_visit_ms_median", median_ms(pla.visit), "ms"),
        Figure("plain_search_10k_ms_p95", p95_ms(pla.search), "ms"),
        Figure("plain_db_bytes_per_visit", outcome.plain_db_bytes / visits, "bytes"),
        Figure("encrypted_total_s", enc.total_ns() / 1e9, "s"),
        Figure("plain_total_s", pla.total_ns() / 1e9, "s"),
        Figure("db_bytes", outcome.db_bytes, "bytes"),
        Figure("plain_db_bytes", outcome.plain_db_bytes, "bytes"),
        Figure("patients", size.patients, "count"),
        Figure("visits", visits, "count"),
        Figure("searches", len(workload.queries), "count"),
        Figure("searches_with_results", sum(1 for n in enc.found if n), "count"),
        Figure("unlocks", size.unlocks, "count"),
        Figure("scrypt_log2_n", settings.scrypt_log2_n, ""),
    )
    return Report(title, figures)
