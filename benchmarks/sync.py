"""``python -m benchmarks sync``: syncing tablets with a real hub, all in one run on this machine.

Every part is real: the hub is ``python -m sync_hub --db PATH serve`` in its own process with
its own database in a temporary folder; tablets enrol with one-time codes from the hub's CLI and
sync over HTTP with signed requests. Four scenes:

**A CHW's day.** CHW A's tablet (a real encrypted store, ``field_app.session.init_store``) has 15
charts made over the past weeks, each with 2 to 4 earlier visits, already synced. CHW B shares
the village; B's tablet has received those charts. During the day A records 20 visits over
the 15 charts (every chart once, 5 of them twice; the population's realistic vital signs and
notes, ``field_app.visits.write_visit``). Meanwhile B changes 5 of the charts (3 new phone
numbers, 2 follow-up tasks) and syncs first: that is what "changed on the hub by others" is in
this system. Then A syncs, which is what is measured:

- ``day_round_trips``: HTTP requests of that sync (goal 1);
- ``day_wire_bytes``: request plus response frame bytes as the tablet sent and received them
  (``SyncReport.bytes_sent + bytes_received``), without HTTP headers;
- ``day_http_bytes``: the same sync's bytes on the TCP connection both ways, HTTP headers
  included, counted by a link emulator with no delay, bandwidth limit or loss put in front of
  the hub (``benchmarks.linkemu``);
- ``day_bytes_over_gzip_json``: ``day_wire_bytes`` over the gzip size (level 9) of the JSON of
  the new data. The new data is exactly the 20 new encounters, each as the chart view gives it
  (``ChartView.item("encounters", id)``: kind, times, zone, author, note, every observation with
  its code, value and unit) with its encounter and patient IDs, plus the 5 changes B made, each
  as the view gives it (the new phone number; the task record with its status) with its
  patient ID; ``json.dumps`` with compact separators and UTF-8. That JSON is the floor any
  protocol must move (goal <= 1.5).

**The same day over 2G.** The same scene, in other villages on the same hub, with A's sync
through the link emulator at 64 kbit/s each way, 300 ms round trip, 2% segment loss (a lost
1,460-byte segment arrives one retransmission timeout late). Repeated with different loss
seeds; ``day_seconds_2g`` is the median wall time of A's ``sync()`` call (goal <= 5), with the
slowest beside it. The emulator is a local TCP proxy: it shapes every byte of the request and
the answer, but not the TCP handshake (nor TLS), which on a real 2G link add a round trip or two
before the first byte.

**A new tablet.** The hub holds a catchment of 1,000 patients with 10 visits each, made
beforehand (charts built with ``care_record.Chart`` and pushed through an enrolled seeding
device's sync; not measured). A new tablet with an empty encrypted store is enrolled for that
village, then syncs in a process of its own (``python -m benchmarks.new_tablet``, which does
what ``python -m field_app sync`` does):

- ``initial_sync_seconds``: wall time of its ``sync()`` call, from the first request to the
  last chart stored (goal <= 15 on this 2-core machine);
- ``initial_bytes_over_gzip_json``: its frame bytes both ways over the gzip size (level 9) of the
  JSON of every chart as the view gives it (id, kind, schema version, fields, and every
  collection: encounters with their observations, tasks...) (goal <= 1.2);
- ``initial_peak_rss_mb``: the tablet process's peak resident set, from ``wait4``'s rusage of
  that process alone (goal <= 300).

**200 tablets at once.** A fresh hub; 200 CHWs, each with a village of their own and one
enrolled tablet holding 15 charts (2 to 4 earlier visits each) already synced; a supervisor's
device covering every village changes 5 charts in each (3 phone numbers, 2 tasks) and syncs.
Each tablet then records its day (20 visits over its 15 charts) and all 200 start their sync at
the same moment (a barrier), each on its own thread and HTTP connection, in this one client
process, against the one hub process. That is done for 3 days in a row on the same hub (the
supervisor's device first takes in the day before). These tablets keep their charts in memory
(``care_record.sync.memory.MemoryReplica``, see ``benchmarks.tablets``) rather than in 200
encrypted stores; their requests are the real ones, signed and retried by ``field_app.syncing``.
The hub is what is measured:

- ``hub_p95_seconds``: 95th percentile, over the 3 x 200 syncs, of how long each tablet waited
  for the hub's answer: from sending its request to having the answer back (goal <= 2;
  ``hub_p95_seconds_worst_day`` is the worst day's own). Each tablet builds its request first
  (in the field that happens on its own CPU), then all 200 send at the same moment (a barrier),
  and each takes its answer in once every tablet has its own (in the field that too happens on
  the tablet's CPU, not on the hub's machine); ``hub_p95_seconds_whole_sync`` is the whole
  ``sync()`` from that moment to the answer taken in, that wait included;
- ``hub_errors``: syncs that raised, or came back with a refusal, a quarantined chart, or
  without exactly the day's 15 charts sent and the 5 changed ones received (goal 0);
- ``hub_rss_mb``: the hub process's largest resident set sampled every 50 ms during the bursts
  (``VmRSS``; ``hub_peak_rss_mb`` is its ``VmHWM`` since it started, setup included).

The 200 simulated tablets share the machine's two cores with the hub, which real tablets do not:
``hub_cpu_ms_per_sync`` and ``client_cpu_ms_per_sync`` say how the CPU time was split. So that
one tablet's work is not sliced among 199 others' (which holds every request back until nearly
all are built), the client process switches threads every 50 ms during a burst instead of 5 ms.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks import population
from benchmarks.hub_process import HubProcess
from benchmarks.linkemu import Link, LinkEmulator
from benchmarks.population import Person, Visit
from benchmarks.report import Figure, Goal, Progress, Report
from benchmarks.tablets import PIN, ZONE, EncryptedTablet, MemoryTablet, ShiftedClock
from care_record import Chart, ChartView, vital_observations
from field_app.syncing import SyncReport

SEED = 20251102
RTT_2G, BANDWIDTH_2G, LOSS_2G = 0.3, 64_000, 0.02
BURST_SAMPLE_SECONDS = 0.05
CLIENT_SWITCH_SECONDS = 0.05
ARRIVAL_TIMEOUT_SECONDS = 120.0
NEW_TABLET_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class Size:
    day_charts: int
    day_visits: int
    day_changed: int
    days_2g: int
    initial_patients: int
    initial_visits: int
    seed_batch: int
    tablets: int
    bursts: int


FULL = Size(
    day_charts=15,
    day_visits=20,
    day_changed=5,
    days_2g=5,
    initial_patients=1000,
    initial_visits=10,
    seed_batch=200,
    tablets=200,
    bursts=3,
)
QUICK = Size(
    day_charts=15,
    day_visits=20,
    day_changed=5,
    days_2g=1,
    initial_patients=50,
    initial_visits=3,
    seed_batch=50,
    tablets=10,
    bursts=2,
)


def run(*, quick: bool, progress: Progress) -> Report:
    size = QUICK if quick else FULL
    rnd = random.Random(SEED)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        folder = Path(tmp)
        day = run_days(folder / "day", size, rnd, progress)
        initial = run_initial(folder / "initial", size, rnd, progress)
        crowd = run_crowd(folder / "crowd", size, rnd, progress)
    return report(size, day, initial, crowd, time.perf_counter() - started)


# -- what a CHW's tablet holds ------------------------------------------------------------------


def past_weeks(
    tablet: EncryptedTablet | MemoryTablet, rnd: random.Random, village: str, charts: int
) -> tuple[list[str], list[Person]]:
    """Charts made over the past weeks, each with 2 to 4 visits on earlier days."""
    ids, people = [], []
    for _ in range(charts):
        who = population.person(rnd)
        first = rnd.uniform(20, 60)
        tablet.clock.days_ago(first)
        patient = tablet.register(who, village)
        for when in sorted((rnd.uniform(1, first) for _ in range(rnd.randint(2, 4))), reverse=True):
            tablet.clock.days_ago(when)
            tablet.record(patient, population.visit(rnd, who))
        ids.append(patient)
        people.append(who)
    tablet.clock.days_ago(0)
    return ids, people


def the_day(
    tablet: EncryptedTablet | MemoryTablet,
    rnd: random.Random,
    ids: list[str],
    people: list[Person],
    visits: int,
) -> list[dict[str, Any]]:
    """A day's visits over the tablet's charts (each chart once, then some again), in the
    order a CHW walks; returns each new encounter as the view gives it, with its patient."""
    order = list(range(len(ids)))
    rnd.shuffle(order)
    extra = rnd.sample(range(len(ids)), visits - len(ids)) if visits > len(ids) else []
    walk = (order + extra)[:visits]
    new = []
    for step, index in enumerate(walk):
        tablet.clock.behind = timedelta(minutes=20 * (len(walk) - step))
        encounter = tablet.record(ids[index], population.visit(rnd, people[index]))
        view = tablet.chart(ids[index]).view()
        new.append(
            {
                "patient": ids[index],
                "encounter": {"id": encounter, **view.item("encounters", encounter)},
            }
        )
    tablet.clock.days_ago(0)
    return new


def others_change(
    tablet: EncryptedTablet | MemoryTablet,
    rnd: random.Random,
    ids: list[str],
    count: int,
) -> list[dict[str, Any]]:
    """Another CHW's edits on ``count`` of the charts: new phone numbers, then follow-up tasks
    (3 and 2 of 5). Returns each change as the view gives it, with its patient."""
    changes = []
    phones = round(count * 3 / 5)
    for n, patient in enumerate(rnd.sample(ids, count)):
        chart = tablet.chart(patient)
        if n < phones:
            phone = rnd.choice(population.PHONE_PREFIXES) + f"{rnd.randrange(10**7):07d}"
            chart.update_demographics({"phone": phone})
            tablet_put(tablet, chart)
            changes.append({"patient": patient, "fields": {"phone": chart.view().fields["phone"]}})
        else:
            due = tablet.clock.now().date() + timedelta(days=rnd.choice((3, 7, 14)))
            task = chart.add_task(
                {"kind": "follow_up", "description": rnd.choice(FOLLOW_UPS), "due": due}
            )
            tablet_put(tablet, chart)
            changes.append(
                {"patient": patient, "task": {"id": task, **chart.view().item("tasks", task)}}
            )
    return changes


FOLLOW_UPS = (
    "Recheck blood pressure",
    "Check the child's weight again",
    "Confirm the antenatal appointment at the dispensary",
    "Pima homa tena",
)


def tablet_put(tablet: EncryptedTablet | MemoryTablet, chart: Chart) -> None:
    if isinstance(tablet, EncryptedTablet):
        tablet.store.put_chart(chart)
    else:
        tablet.put(chart)


def gzip_json_bytes(records: object) -> tuple[int, int]:
    """(JSON bytes, gzip level-9 bytes) of ``records``: compact separators, UTF-8."""
    text = json.dumps(records, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return len(text), len(gzip.compress(text, compresslevel=9))


# -- scene 1: a CHW's day, locally and over 2G ---------------------------------------------------


@dataclass(frozen=True)
class DayResult:
    sync: SyncReport
    seconds: float
    http_bytes: int
    json_bytes: int
    gzip_json_bytes: int
    seconds_2g: list[float]
    reports_2g: list[SyncReport]


@dataclass
class DayScene:
    a: EncryptedTablet
    b: EncryptedTablet
    ids: list[str]
    new: list[dict[str, Any]] = field(default_factory=list)


def run_days(folder: Path, size: Size, rnd: random.Random, progress: Progress) -> DayResult:
    with HubProcess(folder / "hub") as hub, httpx.Client() as client:
        progress(f"sync: day: hub on {hub.url}; preparing the day on two encrypted tablets")
        scene = prepare_day(hub, client, folder, size, rnd, index=0)
        with LinkEmulator("127.0.0.1", hub.port, Link()) as emu, httpx.Client() as fresh:
            started = time.perf_counter()
            report = scene.a.sync(fresh, emu.url)
            seconds = time.perf_counter() - started
            http_bytes = emu.link.stats.bytes_up + emu.link.stats.bytes_down
        check_day(scene, client, report, size)
        json_bytes, gz_bytes = gzip_json_bytes(scene.new)
        progress(
            f"sync: day: {report.round_trips} round trip(s), "
            f"{report.bytes_sent + report.bytes_received:,} frame bytes in {seconds:.2f} s"
        )
        close(scene)
        seconds_2g, reports_2g = [], []
        for run_index in range(1, size.days_2g + 1):
            scene = prepare_day(hub, client, folder, size, rnd, index=run_index)
            link = Link(rtt=RTT_2G, bandwidth=BANDWIDTH_2G, loss=LOSS_2G, seed=run_index)
            with LinkEmulator("127.0.0.1", hub.port, link) as emu, httpx.Client() as fresh:
                started = time.perf_counter()
                report_2g = scene.a.sync(fresh, emu.url)
                seconds_2g.append(time.perf_counter() - started)
            check_day(scene, client, report_2g, size)
            reports_2g.append(report_2g)
            progress(
                f"sync: day over 2G, run {run_index} of {size.days_2g}: "
                f"{seconds_2g[-1]:.2f} s ({link.stats.losses} segments lost)"
            )
            close(scene)
    return DayResult(report, seconds, http_bytes, json_bytes, gz_bytes, seconds_2g, reports_2g)


def prepare_day(
    hub: HubProcess,
    client: httpx.Client,
    folder: Path,
    size: Size,
    rnd: random.Random,
    *,
    index: int,
) -> DayScene:
    """Two CHWs sharing a village; everything up to the moment A syncs at the end of the day."""
    village = f"{population.VILLAGES[index % len(population.VILLAGES)]} {index + 1}"
    a = EncryptedTablet(folder / f"tablet-{index}-a", f"chw{index}a")
    b = EncryptedTablet(folder / f"tablet-{index}-b", f"chw{index}b")
    a.enroll(client, hub.url, hub.enroll_code(a.user, [village]))
    b.enroll(client, hub.url, hub.enroll_code(b.user, [village]))
    ids, people = past_weeks(a, rnd, village, size.day_charts)
    # Synced before the day: A pushes its charts, B receives them, then acknowledges them.
    a.sync(client)
    b.sync(client)
    b.sync(client)
    scene = DayScene(a, b, ids)
    scene.new = the_day(a, rnd, ids, people, size.day_visits)
    scene.new += others_change(b, rnd, ids, size.day_changed)
    b.sync(client)
    return scene


def check_day(scene: DayScene, client: httpx.Client, report: SyncReport, size: Size) -> None:
    """The measured sync did its whole job: B's changes are on A, A's visits reach B."""
    if report.sent != size.day_charts or report.received != size.day_changed:
        raise RuntimeError(
            f"the day's sync sent {report.sent} charts and received {report.received}; "
            f"expected {size.day_charts} and {size.day_changed}"
        )
    for record in scene.new:
        if "fields" in record:
            phone = scene.a.chart(record["patient"]).view().fields.get("phone")
            if phone != record["fields"]["phone"]:
                raise RuntimeError("a phone number changed on the hub did not reach the tablet")
    scene.b.sync(client)
    for record in scene.new:
        if "encounter" in record:
            encounters = scene.b.chart(record["patient"]).view().collections["encounters"]
            if record["encounter"]["id"] not in encounters:
                raise RuntimeError("a visit of the day did not reach the other tablet")


def close(scene: DayScene) -> None:
    scene.a.close()
    scene.b.close()


# -- scene 2: a new tablet's first sync -----------------------------------------------------------


@dataclass(frozen=True)
class InitialResult:
    patients: int
    visits: int
    outcome: dict[str, Any]
    peak_rss_mb: float
    process_seconds: float
    json_bytes: int
    gzip_json_bytes: int
    hub_peak_rss_mb: float


def run_initial(folder: Path, size: Size, rnd: random.Random, progress: Progress) -> InitialResult:
    village = "Ifakara"
    with HubProcess(folder / "hub") as hub, httpx.Client() as client:
        views = seed_catchment(hub, client, size, rnd, village=village, progress=progress)
        json_bytes, gz_bytes = gzip_json_bytes([chart_record(v) for v in views])
        tablet = EncryptedTablet(folder / "new-tablet", "newchw")
        tablet.enroll(client, hub.url, hub.enroll_code("seedchw", [village]))
        tablet.close()
        progress(f"sync: initial: a new tablet syncs {len(views):,} charts in its own process")
        outcome, peak, seconds = run_new_tablet(tablet, progress)
        _, hub_peak = hub.memory_mb()
    if outcome["charts"] != len(views):
        raise RuntimeError(f"the new tablet holds {outcome['charts']} charts, not {len(views)}")
    progress(
        f"sync: initial: {outcome['charts']:,} charts in {outcome['seconds']:.1f} s, "
        f"{outcome['round_trips']} round trips, peak {peak:.0f} MiB"
    )
    return InitialResult(
        size.initial_patients,
        size.initial_patients * size.initial_visits,
        outcome,
        peak,
        seconds,
        json_bytes,
        gz_bytes,
        hub_peak,
    )


def seed_catchment(
    hub: HubProcess,
    client: httpx.Client,
    size: Size,
    rnd: random.Random,
    *,
    village: str,
    progress: Progress,
) -> list[ChartView]:
    """The catchment's charts, made over the past year on an earlier tablet of the same CHW
    and pushed to the hub by its sync, a batch at a time. Returns each chart's view."""
    seeder = MemoryTablet.enroll(client, hub.url, hub.enroll_code("seedchw", [village]), "seeder")
    views: list[ChartView] = []
    started = time.perf_counter()
    for first in range(0, size.initial_patients, size.seed_batch):
        batch = []
        for _ in range(first, min(first + size.seed_batch, size.initial_patients)):
            who = population.person(rnd)
            seeder.clock.days_ago(400)
            patient = seeder.register(who, village)
            chart = seeder.chart(patient)
            for when in sorted(rnd.sample(range(1, 365), size.initial_visits), reverse=True):
                seeder.clock.days_ago(when + rnd.random())
                record_on(chart, population.visit(rnd, who), seeder.clock)
            seeder.put(chart)
            batch.append(chart)
        seeder.sync(client)
        views += [c.view() for c in batch]
        progress(
            f"sync: initial: seeded {len(views):,} / {size.initial_patients:,} charts on the hub "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return views


def record_on(chart: Chart, visit: Visit, clock: ShiftedClock) -> str:
    """``write_visit`` on a chart already in hand (seeding writes 10 visits, then stores once)."""
    encounter = {
        "kind": visit.kind,
        "started_at": clock.now(),
        "zone": ZONE,
        "observations": vital_observations(dict(visit.readings)),
        "note": visit.note,
    }
    return chart.record_encounter({k: v for k, v in encounter.items() if v is not None})


def chart_record(view: ChartView) -> dict[str, Any]:
    """A chart as the view gives it, for the JSON floor."""
    return {
        "id": view.id,
        "kind": view.kind,
        "schema_version": view.schema_version,
        "fields": view.fields,
        "collections": view.collections,
    }


def run_new_tablet(
    tablet: EncryptedTablet, progress: Progress
) -> tuple[dict[str, Any], float, float]:
    """Run the new tablet's sync in its own process: (its report, peak RSS MiB, wall seconds)."""
    command = [sys.executable, "-m", "benchmarks.new_tablet"]
    command += ["--data-dir", str(tablet.settings.data_dir), "--user", tablet.user]
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdin, stdout, stderr = child.stdin, child.stdout, child.stderr
    if stdin is None or stdout is None or stderr is None:
        raise RuntimeError("the new tablet's pipes did not open")
    # A tablet that hangs is stopped rather than holding the whole run.
    watchdog = threading.Timer(NEW_TABLET_TIMEOUT_SECONDS, child.kill)
    watchdog.start()
    try:
        stdin.write(PIN + "\n")
        stdin.close()
        errors = []
        for line in stderr:
            errors.append(line.rstrip())
            progress(f"sync: initial: tablet: {line.rstrip()}")
        out = stdout.read()
        # wait4 gives the resource use of this one child, not of every child this process had.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    finally:
        watchdog.cancel()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError("the new tablet's sync failed: " + " / ".join(errors[-5:]))
    return json.loads(out), usage.ru_maxrss / 1024, seconds


# -- scene 3: 200 tablets at once -----------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    """One moment when every tablet syncs at once."""

    seconds: list[float]  # each tablet's whole sync, from the moment all were ready
    answer_seconds: list[float]  # each tablet's wait for the hub's answers
    errors: int
    error_samples: list[str]
    wall_seconds: float
    hub_cpu_seconds: float
    client_cpu_seconds: float
    hub_rss_mb: float
    round_trips_max: int
    wire_bytes_median: float


@dataclass(frozen=True)
class CrowdResult:
    tablets: int
    bursts: list[Burst]
    hub_peak_rss_mb: float

    @property
    def seconds(self) -> list[float]:
        return [s for b in self.bursts for s in b.seconds]

    @property
    def answer_seconds(self) -> list[float]:
        return [s for b in self.bursts for s in b.answer_seconds]

    @property
    def errors(self) -> int:
        return sum(b.errors for b in self.bursts)


def run_crowd(folder: Path, size: Size, rnd: random.Random, progress: Progress) -> CrowdResult:
    villages = [
        f"{population.VILLAGES[i % len(population.VILLAGES)]} {i // len(population.VILLAGES) + 1}"
        for i in range(size.tablets)
    ]
    with HubProcess(folder / "hub") as hub, httpx.Client() as client:
        progress(f"sync: {size.tablets} tablets: enrolling them and syncing their past weeks")
        tablets, charts = [], []
        started = time.perf_counter()
        for n, village in enumerate(villages):
            code = hub.enroll_code(f"crowd{n:03d}", [village])
            tablet = MemoryTablet.enroll(client, hub.url, code, f"tablet-{n:03d}")
            ids, people = past_weeks(tablet, rnd, village, size.day_charts)
            tablet.sync(client)
            tablets.append(tablet)
            charts.append((ids, people))
            if (n + 1) % max(1, size.tablets // 5) == 0:
                progress(
                    f"sync: {size.tablets} tablets: {n + 1} ready "
                    f"({time.perf_counter() - started:.1f} s)"
                )
        editor = MemoryTablet.enroll(
            client, hub.url, hub.enroll_code("supervisor", villages), "supervisor"
        )
        bursts = []
        for day in range(1, size.bursts + 1):
            progress(
                f"sync: day {day} of {size.bursts}: a supervisor's device covering every village "
                f"changes {size.day_changed} charts in each; each tablet records its visits"
            )
            editor.sync(client)  # yesterday's visits, or every chart the first time
            editor.sync(client)  # and acknowledges them
            for ids, _ in charts:
                others_change(editor, rnd, ids, size.day_changed)
            editor.sync(client)
            for tablet, (ids, people) in zip(tablets, charts, strict=True):
                the_day(tablet, rnd, ids, people, size.day_visits)
            bursts.append(burst(hub, tablets, size))
            done = bursts[-1]
            for failure in done.error_samples:
                progress(f"sync: day {day}: a sync failed: {failure}")
            progress(
                f"sync: day {day}: {size.tablets} tablets synced at once: p95 "
                f"{p95(done.seconds):.2f} s, slowest {max(done.seconds):.2f} s, "
                f"{done.errors} errors"
            )
        _, peak = hub.memory_mb()
    return CrowdResult(size.tablets, bursts, peak)


def burst(hub: HubProcess, tablets: list[MemoryTablet], size: Size) -> Burst:
    clients = [httpx.Client() for _ in tablets]
    gate = threading.Barrier(len(tablets) + 1)
    seconds = [0.0] * len(tablets)
    answers = [0.0] * len(tablets)
    reports: list[SyncReport | None] = [None] * len(tablets)
    failures: list[str] = []
    arrivals = Arrivals(len(tablets))

    def one(index: int) -> None:
        waits: list[float] = []
        started = [time.perf_counter()]

        def ready() -> None:
            # Every tablet has its request built (on its own CPU, in the field) and waits here.
            gate.wait()
            started[0] = time.perf_counter()

        def answered() -> None:
            # And takes its answer in (on its own CPU, in the field) once every answer is out.
            arrivals.arrive()
            arrivals.wait()

        try:
            reports[index] = tablets[index].sync(
                clients[index], ready=ready, waits=waits, answered=answered
            )
        except Exception as exc:  # noqa: BLE001 - every failure is counted, whatever it is
            failures.append(f"{type(exc).__name__}: {exc}"[:200])
        finally:
            arrivals.arrive()  # a tablet that failed before its answer holds nobody back
        seconds[index] = time.perf_counter() - started[0]
        answers[index] = sum(waits)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(tablets))]
    for thread in threads:
        thread.start()
    hub_cpu, client_cpu = hub.cpu_seconds(), time.process_time()
    switching = sys.getswitchinterval()
    sys.setswitchinterval(CLIENT_SWITCH_SECONDS)
    try:
        with sampling(hub) as rss:
            gate.wait()
            started = time.perf_counter()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
    finally:
        sys.setswitchinterval(switching)
    hub_cpu, client_cpu = hub.cpu_seconds() - hub_cpu, time.process_time() - client_cpu
    for c in clients:
        c.close()
    done = [r for r in reports if r is not None]
    # A sync that came back without doing its whole job counts as failed too.
    bad = [
        r
        for r in done
        if r.quarantined or r.command or r.received != size.day_changed or r.sent != size.day_charts
    ]
    return Burst(
        seconds=seconds,
        answer_seconds=answers,
        errors=len(failures) + len(bad),
        error_samples=failures[:3],
        wall_seconds=wall,
        hub_cpu_seconds=hub_cpu,
        client_cpu_seconds=client_cpu,
        hub_rss_mb=max(rss),
        round_trips_max=max((r.round_trips for r in done), default=0),
        wire_bytes_median=statistics.median(r.bytes_sent + r.bytes_received for r in done)
        if done
        else 0.0,
    )


class Arrivals:
    """Counts the tablets that have their answer (or failed), once each, and lets them wait
    until all have."""

    def __init__(self, expected: int) -> None:
        self._expected = expected
        self._seen: set[int] = set()
        self._lock = threading.Lock()
        self._all = threading.Event()

    def arrive(self) -> None:
        with self._lock:
            self._seen.add(threading.get_ident())
            if len(self._seen) >= self._expected:
                self._all.set()

    def wait(self) -> None:
        self._all.wait(timeout=ARRIVAL_TIMEOUT_SECONDS)


@contextmanager
def sampling(hub: HubProcess) -> Iterator[list[float]]:
    """The hub's resident set, sampled every 50 ms while the block runs."""
    samples = [hub.memory_mb()[0]]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(BURST_SAMPLE_SECONDS):
            samples.append(hub.memory_mb()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join()
        samples.append(hub.memory_mb()[0])


# -- the report -----------------------------------------------------------------------------------


def p95(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[94]


def report(
    size: Size, day: DayResult, initial: InitialResult, crowd: CrowdResult, run_seconds: float
) -> Report:
    wire = day.sync.bytes_sent + day.sync.bytes_received
    out = initial.outcome
    initial_wire = out["bytes_sent"] + out["bytes_received"]
    title = (
        f"sync: a day of {size.day_visits} visits over {size.day_charts} charts "
        f"({size.day_changed} changed by others); over 2G x{size.days_2g}; a new tablet receiving "
        f"{initial.patients:,} patients x {size.initial_visits} visits; "
        f"{crowd.tablets} tablets at once against one hub, {len(crowd.bursts)} days"
    )
    seconds, bursts = crowd.seconds, crowd.bursts
    answers = crowd.answer_seconds
    hub_cpu = sum(b.hub_cpu_seconds for b in bursts)
    client_cpu = sum(b.client_cpu_seconds for b in bursts)
    figures = (
        Figure("day_round_trips", day.sync.round_trips, "count", Goal(1)),
        Figure("day_wire_bytes", wire, "bytes"),
        Figure("day_bytes_over_gzip_json", wire / day.gzip_json_bytes, "ratio", Goal(1.5)),
        Figure("day_http_bytes", day.http_bytes, "bytes"),
        Figure("day_seconds_2g", statistics.median(day.seconds_2g), "s", Goal(5)),
        Figure("initial_sync_seconds", out["seconds"], "s", Goal(15)),
        Figure(
            "initial_bytes_over_gzip_json",
            initial_wire / initial.gzip_json_bytes,
            "ratio",
            Goal(1.2),
        ),
        Figure("initial_peak_rss_mb", initial.peak_rss_mb, "MiB", Goal(300)),
        Figure("hub_p95_seconds", p95(answers), "s", Goal(2)),
        Figure("hub_errors", crowd.errors, "count", Goal(0)),
        Figure("hub_rss_mb", max(b.hub_rss_mb for b in bursts), "MiB"),
        # The detail behind them.
        Figure("day_bytes_sent", day.sync.bytes_sent, "bytes"),
        Figure("day_bytes_received", day.sync.bytes_received, "bytes"),
        Figure("day_json_bytes", day.json_bytes, "bytes"),
        Figure("day_gzip_json_bytes", day.gzip_json_bytes, "bytes"),
        Figure("day_sync_seconds", day.seconds, "s"),
        Figure("day_seconds_2g_max", max(day.seconds_2g), "s"),
        Figure("day_2g_runs", len(day.seconds_2g), "count"),
        Figure("day_2g_round_trips_max", max(r.round_trips for r in day.reports_2g), "count"),
        Figure("initial_patients", initial.patients, "count"),
        Figure("initial_visits", initial.visits, "count"),
        Figure("initial_round_trips", out["round_trips"], "count"),
        Figure("initial_wire_bytes", initial_wire, "bytes"),
        Figure("initial_json_bytes", initial.json_bytes, "bytes"),
        Figure("initial_gzip_json_bytes", initial.gzip_json_bytes, "bytes"),
        Figure("initial_process_seconds", initial.process_seconds, "s"),
        Figure("initial_rss_mb_before_sync", out["peak_rss_mb_before_sync"], "MiB"),
        Figure("initial_hub_peak_rss_mb", initial.hub_peak_rss_mb, "MiB"),
        Figure("hub_tablets", crowd.tablets, "count"),
        Figure("hub_days", len(bursts), "count"),
        Figure("hub_syncs", len(seconds), "count"),
        Figure("hub_median_seconds", statistics.median(answers), "s"),
        Figure("hub_max_seconds", max(answers), "s"),
        Figure("hub_p95_seconds_worst_day", max(p95(b.answer_seconds) for b in bursts), "s"),
        Figure("hub_p95_seconds_whole_sync", p95(seconds), "s"),
        Figure("hub_burst_seconds_median", statistics.median(b.wall_seconds for b in bursts), "s"),
        Figure("hub_cpu_ms_per_sync", hub_cpu * 1000 / len(seconds), "ms"),
        Figure("client_cpu_ms_per_sync", client_cpu * 1000 / len(seconds), "ms"),
        Figure("hub_peak_rss_mb", crowd.hub_peak_rss_mb, "MiB"),
        Figure("hub_round_trips_max", max(b.round_trips_max for b in bursts), "count"),
        Figure(
            "hub_wire_bytes_median", statistics.median(b.wire_bytes_median for b in bursts), "bytes"
        ),
        Figure("run_seconds", run_seconds, "s"),
    )
    return Report(title, figures)
