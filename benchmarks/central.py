"""``python -m benchmarks central``: the central FHIR server, over HTTP, all in one run here.

Central is ``python -m central serve`` in processes of its own (``benchmarks.central_servers``;
``CENTRAL_WORKERS=2`` worker processes, one per core: ``central_workers``), on a fresh SQLite
file in a temporary folder or a fresh schema of the local PostgreSQL. Clients hold real tokens from ``/auth/token`` (SMART Backend Services, signed client assertions).

**Ingest.** Synthetic transaction bundles of 100 resources each
(``central.synthetic.resource_bundles``, Synthea-shaped: patients with five years of care,
shared facilities and clinicians as conditional creates), sent by 4 client threads at once, each
with its own connection, so that central always has the next bundle waiting. The bundles are
encoded before the clock starts; 8 warm-up bundles go first (the first bundle a worker takes
loads the FHIR models). ``ingest_resources_per_s_sqlite`` and ``..._postgres``: resources in
bundles answered 200, over the wall time from the first send to the last answer (goal >= 2,000
each); ``ingest_errors``: answers other than 200 and failed requests, both backends (goal 0).
Central's processes' CPU time per bundle (``ingest_server_cpu_ms_per_bundle_...``) and the
sending threads' share of the machine (``ingest_client_cpu_share``) say where the time went.

**Search.** Central holding a million resources (``stored_resources``, rows of its resources
table), loaded in process through its own write path (``benchmarks.central_load``: each bundle
through ``store.apply`` with its transaction's AuditEvent, exactly the rows the server would
write; 20 bundles to a database transaction; ``load_seconds``), until that many are stored (a
facility or clinician met again is an entry but no row). Then the server starts on that
database and one client asks, one request after another, for the encounters of random
patients, ``GET /fhir/Encounter?patient=ID`` with a console token (every region):
``search_p95_ms`` and ``search_median_ms`` over 500 timed searches, after 10 untimed ones
(goal p95 <= 50). The same on PostgreSQL (``search_p95_ms_postgres``; were it to hold fewer
resources than SQLite, to keep the run short, the name would carry its size, e.g.
``search_p95_ms_postgres_300k``).

**A visit to central.** Central (SQLite) with a hub registered as a client (its key made by
``python -m sync_hub central-key``), the hub (``python -m sync_hub serve``) pushing to it, and
one real tablet (an encrypted store, ``benchmarks.tablets.EncryptedTablet``) enrolled at the
hub with one registered patient, already at central. Then, again and again: the tablet records
a visit, calls ``sync``, and a console polls ``GET /fhir/Encounter/ID`` (the projection keeps
the chart's encounter ID) every 50 ms until the encounter is there.
``visit_to_central_p95_s`` and ``..._median_s``: from the start of the sync call to the answer
that had it (goal p95 <= 5); a visit not there after 60 s counts as 60 s and in
``visit_errors``.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.central_scenes import (
    Ingest,
    Search,
    Visits,
    run_ingest,
    run_search,
    run_visits,
)
from benchmarks.central_servers import WORKERS, postgres_schema
from benchmarks.report import Figure, Goal, Progress, Report

SEED = 20251121


@dataclass(frozen=True)
class Size:
    ingest_resources: int  # per backend
    search_resources: int  # SQLite
    search_resources_postgres: int
    searches: int
    visits: int


FULL = Size(
    ingest_resources=30_000,
    search_resources=1_000_000,
    search_resources_postgres=1_000_000,
    searches=500,
    visits=20,
)
QUICK = Size(
    ingest_resources=1_000,
    search_resources=10_000,
    search_resources_postgres=10_000,
    searches=50,
    visits=3,
)


def run(*, quick: bool, progress: Progress) -> Report:
    size = QUICK if quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-central-") as tmp:
        folder = Path(tmp)
        ingest_sqlite = run_ingest(
            folder / "ingest-sqlite",
            f"sqlite:///{folder / 'ingest.db'}",
            resources=size.ingest_resources,
            seed=SEED,
            progress=progress,
        )
        with postgres_schema() as url:
            ingest_postgres = run_ingest(
                folder / "ingest-postgres",
                url,
                resources=size.ingest_resources,
                seed=SEED,
                progress=progress,
            )
        search = run_search(
            folder / "search-sqlite",
            f"sqlite:///{folder / 'search.db'}",
            resources=size.search_resources,
            searches=size.searches,
            seed=SEED,
            progress=progress,
        )
        with postgres_schema() as url:
            search_postgres = run_search(
                folder / "search-postgres",
                url,
                resources=size.search_resources_postgres,
                searches=size.searches,
                seed=SEED,
                progress=progress,
            )
        visits = run_visits(
            folder / "visits", visits=size.visits, rnd=random.Random(SEED), progress=progress
        )
    return report(
        size,
        (ingest_sqlite, ingest_postgres),
        (search, search_postgres),
        visits,
        time.perf_counter() - started,
    )


# -- the report -----------------------------------------------------------------------------------


def p95(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[94]


def postgres_suffix(size: Size) -> str:
    """``_postgres``, with the number of resources when PostgreSQL holds fewer than SQLite."""
    if size.search_resources_postgres >= size.search_resources:
        return "_postgres"
    return f"_postgres_{size.search_resources_postgres // 1000}k"


def report(
    size: Size,
    ingests: tuple[Ingest, Ingest],
    searches: tuple[Search, Search],
    visits: Visits,
    run_seconds: float,
) -> Report:
    ingest_sqlite, ingest_postgres = ingests
    search, search_postgres = searches
    pg = postgres_suffix(size)
    title = (
        f"central: ingest of {size.ingest_resources:,} resources per backend in bundles of 100 "
        f"from {ingest_sqlite.threads} threads, {WORKERS} worker process(es); "
        f"encounter search among {search.stored:,} resources (PostgreSQL: "
        f"{search_postgres.stored:,}); {len(visits.seconds)} visits from a tablet through a hub"
    )
    figures = (
        Figure(
            "ingest_resources_per_s_sqlite", ingest_sqlite.rate, "1/s", Goal(2000, at_least=True)
        ),
        Figure(
            "ingest_resources_per_s_postgres",
            ingest_postgres.rate,
            "1/s",
            Goal(2000, at_least=True),
        ),
        Figure("ingest_errors", ingest_sqlite.errors + ingest_postgres.errors, "count", Goal(0)),
        Figure("search_p95_ms", p95(search.ms), "ms", Goal(50)),
        Figure(f"search_p95_ms{pg}", p95(search_postgres.ms), "ms", Goal(50)),
        Figure("visit_to_central_p95_s", p95(visits.seconds), "s", Goal(5)),
        # The detail behind them.
        Figure("central_workers", WORKERS, "count"),
        Figure("ingest_threads", ingest_sqlite.threads, "count"),
        Figure("ingest_resources_sqlite", ingest_sqlite.resources, "count"),
        Figure("ingest_resources_postgres", ingest_postgres.resources, "count"),
        Figure("ingest_errors_sqlite", ingest_sqlite.errors, "count"),
        Figure("ingest_errors_postgres", ingest_postgres.errors, "count"),
        Figure("ingest_bundle_p95_ms_sqlite", p95(ingest_sqlite.bundle_ms), "ms"),
        Figure("ingest_bundle_p95_ms_postgres", p95(ingest_postgres.bundle_ms), "ms"),
        Figure(
            "ingest_server_cpu_ms_per_bundle_sqlite", ingest_sqlite.server_cpu_ms_per_bundle, "ms"
        ),
        Figure(
            "ingest_server_cpu_ms_per_bundle_postgres",
            ingest_postgres.server_cpu_ms_per_bundle,
            "ms",
        ),
        Figure("ingest_client_cpu_share", _client_share(ingests), "ratio"),
        Figure("search_median_ms", statistics.median(search.ms), "ms"),
        Figure(f"search_median_ms{pg}", statistics.median(search_postgres.ms), "ms"),
        Figure("searches", len(search.ms), "count"),
        Figure("search_errors", search.errors + search_postgres.errors, "count"),
        Figure("search_encounters_median", statistics.median(search.hits), "count"),
        Figure("stored_resources", search.stored, "count"),
        Figure(f"stored_resources{pg}", search_postgres.stored, "count"),
        Figure("load_seconds", search.load_seconds, "s"),
        Figure(f"load_seconds{pg}", search_postgres.load_seconds, "s"),
        Figure("visit_to_central_median_s", statistics.median(visits.seconds), "s"),
        Figure("visit_to_central_max_s", max(visits.seconds), "s"),
        Figure("visit_sync_median_s", statistics.median(visits.sync_seconds), "s"),
        Figure("visits", len(visits.seconds), "count"),
        Figure("visit_errors", visits.errors, "count"),
        Figure("run_seconds", run_seconds, "s"),
    )
    return Report(title, figures)


def _client_share(ingests: tuple[Ingest, Ingest]) -> float:
    """The benchmark process's CPU time over the wall time of both ingests: how much of the
    machine's two cores the sending threads took from central."""
    return sum(i.client_cpu_seconds for i in ingests) / sum(i.seconds for i in ingests)
