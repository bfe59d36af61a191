"""The three scenes of the central benchmark (``benchmarks.central`` says what each measures)."""

from __future__ import annotations

import io
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec

from benchmarks import population
from benchmarks.central_load import load
from benchmarks.central_servers import (
    READ_SCOPE,
    Central,
    central_server,
    fetch_token,
    hub_server,
    register_client,
)
from benchmarks.report import Progress
from benchmarks.tablets import EncryptedTablet
from central.callers import Caller
from central.cli import main as central_cli
from central.clients import DEFAULT_SCOPES
from central.clock import SystemClock
from central.database import open_database
from central.synthetic import resource_bundles
from sync_hub.cli import main as hub_cli

REGION = "bench"
PER_BUNDLE = 100
INGEST_THREADS = 4
WARMUP_BUNDLES = 2 * INGEST_THREADS
LOAD_PER_TRANSACTION = 20  # bundles
SEARCH_WARMUP = 10
POLL_SECONDS = 0.05
VISIT_TIMEOUT_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 120.0
FHIR_JSON = "application/fhir+json"


# -- ingest ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    data: bytes
    entries: int


@dataclass
class Ingest:
    threads: int
    resources: int = 0  # in bundles answered 200
    errors: int = 0
    seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    bundle_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0

    @property
    def server_cpu_ms_per_bundle(self) -> float:
        return (
            self.server_cpu_seconds * 1000 * PER_BUNDLE / self.resources if self.resources else 0.0
        )


def run_ingest(
    folder: Path, database_url: str, *, resources: int, seed: int, progress: Progress
) -> Ingest:
    """Bundles of 100 resources over HTTP from several threads into a fresh central."""
    backend = database_url.split(":", 1)[0]
    client = register_client(database_url, "bench-ingest", REGION, DEFAULT_SCOPES)
    warmup = bodies(seed - 1, WARMUP_BUNDLES * PER_BUNDLE)
    measured = bodies(seed, resources)
    with central_server(folder, database_url) as central, httpx.Client() as http:
        token = fetch_token(http, central, client, DEFAULT_SCOPES)
        progress(f"central: ingest ({backend}): central on {central.url}; warming up")
        warm = send_all(central, token, warmup)
        progress(
            f"central: ingest ({backend}): {resources:,} resources from {INGEST_THREADS} threads"
        )
        cpu = central.cpu_seconds()
        result = send_all(central, token, measured)
        result.server_cpu_seconds = central.cpu_seconds() - cpu
    result.errors += warm.errors
    result.error_samples += warm.error_samples
    for sample in result.error_samples[:3]:
        progress(f"central: ingest ({backend}): refused: {sample}")
    progress(f"central: ingest ({backend}): {result.rate:,.0f} resources/s")
    return result


def bodies(seed: int, total: int) -> list[Body]:
    """Transaction bundles, encoded before any clock starts."""
    return [
        Body(msgspec.json.encode(bundle), len(bundle["entry"]))
        for bundle in resource_bundles(seed, total, per_bundle=PER_BUNDLE, region=REGION)
    ]


def send_all(central: Central, token: str, queue: list[Body]) -> Ingest:
    """POST every body from ``INGEST_THREADS`` threads, each taking the next one when free."""
    result = Ingest(INGEST_THREADS)
    pending = iter(queue)
    lock = threading.Lock()

    def next_body() -> Body | None:
        with lock:
            return next(pending, None)

    def sender() -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
        with httpx.Client(headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as http:
            while (body := next_body()) is not None:
                _send(http, f"{central.url}/fhir", body, result, lock)

    threads = [threading.Thread(target=sender) for _ in range(INGEST_THREADS)]
    cpu, started = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    result.client_cpu_seconds = time.process_time() - cpu
    return result


def _send(http: httpx.Client, url: str, body: Body, result: Ingest, lock: threading.Lock) -> None:
    sent = time.perf_counter()
    try:
        answer = http.post(url, content=body.data)
    except httpx.HTTPError as exc:
        with lock:
            result.errors += 1
            result.error_samples.append(type(exc).__name__)
        return
    ms = (time.perf_counter() - sent) * 1000
    with lock:
        result.bundle_ms.append(ms)
        if answer.status_code == 200:
            result.resources += body.entries
        else:
            result.errors += 1
            result.error_samples.append(f"{answer.status_code} {_diagnostics(answer)}")


def _diagnostics(answer: httpx.Response) -> str:
    """The OperationOutcome's message (central never puts patient data in one)."""
    try:
        issues = answer.json().get("issue", [])
        return str(issues[0].get("diagnostics", ""))[:200] if issues else ""
    except (ValueError, AttributeError):
        return ""


# -- search ---------------------------------------------------------------------------------------


@dataclass
class Search:
    stored: int
    load_seconds: float
    ms: list[float] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)
    errors: int = 0


def run_search(
    folder: Path,
    database_url: str,
    *,
    resources: int,
    searches: int,
    seed: int,
    progress: Progress,
) -> Search:
    """Load ``resources`` in process, then time searches for a patient's encounters."""
    backend = database_url.split(":", 1)[0]
    progress(f"central: search ({backend}): loading {resources:,} resources in process")
    database = open_database(database_url)
    try:
        database.create()
        loader = Caller("bench-loader", REGION, frozenset(DEFAULT_SCOPES.split()))
        loaded = load(
            database,
            loader,
            # More than enough: shared facilities and clinicians are entries, not rows, again.
            resource_bundles(seed + 1, 2 * resources, per_bundle=PER_BUNDLE, region=REGION),
            resources=resources,
            per_transaction=LOAD_PER_TRANSACTION,
            clock=SystemClock(),
            progress=progress,
        )
        with database.read() as session:
            stored = int(session.execute("SELECT COUNT(*) FROM resources")[0][0])
    finally:
        database.close()
    progress(f"central: search ({backend}): {stored:,} resources in {loaded.seconds:.0f} s")
    console = register_client(database_url, "bench-console", "*", READ_SCOPE)
    result = Search(stored, loaded.seconds)
    rnd = random.Random(seed)
    with central_server(folder, database_url) as central, httpx.Client() as http:
        token = fetch_token(http, central, console, READ_SCOPE)
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(SEARCH_WARMUP):
            _search(http, central, headers, rnd.choice(loaded.patients), Search(0, 0))
        for _ in range(searches):
            _search(http, central, headers, rnd.choice(loaded.patients), result)
    progress(f"central: search ({backend}): {len(result.ms)} searches")
    return result


def _search(
    http: httpx.Client, central: Central, headers: dict[str, str], patient: str, into: Search
) -> None:
    url = f"{central.url}/fhir/Encounter"
    started = time.perf_counter()
    answer = http.get(url, params={"patient": patient}, headers=headers, timeout=60)
    into.ms.append((time.perf_counter() - started) * 1000)
    if answer.status_code != 200:
        into.errors += 1
        return
    into.hits.append(len(answer.json().get("entry", [])))


# -- a visit, from the tablet to central ----------------------------------------------------------


@dataclass
class Visits:
    seconds: list[float] = field(default_factory=list)
    sync_seconds: list[float] = field(default_factory=list)
    errors: int = 0


def run_visits(folder: Path, *, visits: int, rnd: random.Random, progress: Progress) -> Visits:
    folder.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{folder / 'central.db'}"
    hub_db = folder / "hub.db"
    hub_env = {
        "SYNC_HUB_REGION": REGION,
        "SYNC_HUB_CLIENT_ID": "hub",
        "SYNC_HUB_CENTRAL_KEY": str(folder / "hub-key.pem"),
    }
    jwk = folder / "hub.jwk"
    jwk.write_text(hub_command(["--db", str(hub_db), "central-key"], hub_env), encoding="utf-8")
    add = ["client", "add", "--id", "hub", "--region", REGION, "--jwk", str(jwk)]
    central_command(["--database", database_url, *add])
    console = register_client(database_url, "bench-console", "*", READ_SCOPE)
    village = population.VILLAGES[0]
    result = Visits()
    with (
        central_server(folder / "central", database_url) as central,
        hub_server(folder, hub_db, central, hub_env) as hub_url,
        httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS) as http,
    ):
        token = fetch_token(http, central, console, READ_SCOPE)
        reader = Reader(http, central, token)
        with open_tablet(folder / "tablet") as tablet:
            code = hub_command(
                ["--db", str(hub_db), "enroll-code", "--chw", tablet.user, "--catchment", village],
                hub_env,
            ).split()[0]
            tablet.enroll(http, hub_url, code)
            who = population.person(rnd)
            patient = tablet.register(who, village)
            tablet.sync(http)
            progress(f"central: visits: hub on {hub_url}; waiting for the patient at central")
            if reader.wait_for("Patient", patient) is None:
                raise RuntimeError("the patient did not reach central within a minute")
            for number in range(1, visits + 1):
                encounter = tablet.record(patient, population.visit(rnd, who))
                started = time.perf_counter()
                tablet.sync(http)
                result.sync_seconds.append(time.perf_counter() - started)
                seen = reader.wait_for("Encounter", encounter, since=started)
                result.seconds.append(VISIT_TIMEOUT_SECONDS if seen is None else seen)
                result.errors += seen is None
                progress(f"central: visit {number} of {visits}: {result.seconds[-1]:.2f} s")
    return result


class Reader:
    """A console polling central for one resource."""

    def __init__(self, http: httpx.Client, central: Central, token: str) -> None:
        self.http = http
        self.central = central
        self.headers = {"Authorization": f"Bearer {token}"}

    def wait_for(self, kind: str, rid: str, *, since: float | None = None) -> float | None:
        """Seconds from ``since`` (now, if None) until ``GET /fhir/KIND/ID`` answers 200, or
        None after ``VISIT_TIMEOUT_SECONDS``."""
        started = time.perf_counter() if since is None else since
        url = f"{self.central.url}/fhir/{kind}/{rid}"
        while time.perf_counter() - started < VISIT_TIMEOUT_SECONDS:
            if self.http.get(url, headers=self.headers).status_code == 200:
                return time.perf_counter() - started
            time.sleep(POLL_SECONDS)
        return None


def central_command(argv: list[str]) -> None:
    """``python -m central ARGV``, run in this process (central's CLI code, on its database)."""
    out, err = io.StringIO(), io.StringIO()
    if central_cli(argv, env={}, stdout=out, stderr=err) != 0:
        raise RuntimeError(f"central's CLI refused {argv[2:4]}: {err.getvalue().strip()}")


def hub_command(argv: list[str], env: dict[str, str]) -> str:
    """What the hub's CLI prints for ``argv`` (run in this process on the hub's database)."""
    out, err = io.StringIO(), io.StringIO()
    if hub_cli(argv, env=env, stdout=out, stderr=err) != 0:
        raise RuntimeError(f"the hub's CLI refused {argv[2]}: {err.getvalue().strip()}")
    return out.getvalue()


@contextmanager
def open_tablet(folder: Path) -> Iterator[EncryptedTablet]:
    """A real encrypted tablet, locked again on the way out."""
    tablet = EncryptedTablet(folder, "chw-bench")
    try:
        yield tablet
    finally:
        tablet.close()
