"""Integration fixtures: a real hub process, real encrypted tablets, real HTTP between them.

The hub is ``python -m sync_hub --db PATH serve --port PORT`` in a subprocess on a free port,
and its enrolment codes come from ``python -m sync_hub --db PATH enroll-code``. A tablet is a
real SQLCipher store in ``tmp_path`` (scrypt at N = 2^12 so that unlocking is cheap), enrolled
through ``field_app.syncing.enroll`` over httpx, syncing with ``field_app.syncing.sync`` or the
tablet's CLI. Nothing of ours is replaced; the tests read the hub's SQLite file directly to see
what it holds.

A ``Ledger`` remembers every visit the tests recorded, per chart, so that "nothing lost, nothing
applied twice" is an exact comparison with what the tablets and the hub hold.
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from care_record import Chart, ChartView, Clock, SystemClock
from field_app import Session, Settings, init_store, unlock
from field_app.cli import main as tablet_main
from field_app.demo.ports import free_port
from field_app.patients import register_patient
from field_app.store import Store
from field_app.syncing import (
    FRAME_TYPE,
    DeviceSigner,
    Link,
    SyncReport,
    enroll,
    hub_link,
    load_identity,
    sync,
)
from field_app.visits import write_visit

ROOT = Path(__file__).resolve().parents[2]
PIN = "482913"
FAST_SCRYPT = 12
HUB_START_SECONDS = 30
# What the hub's tables hold that a request may write (devices.last_seen changes on any contact).
WRITTEN_TABLES = ("charts", "device_docs", "offers", "nonces", "quarantine", "exchanges")


def wait_until_answering(process: subprocess.Popen[bytes], url: str, seconds: float) -> None:
    """Wait until ``url`` answers 200; AssertionError if the process exits or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("exited at start")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise AssertionError("did not answer /health")


def no_sleep(_seconds: float) -> None:
    """The tablet's back-off, made instant: tests need the retries, not the waiting."""


# -- the hub ------------------------------------------------------------------------------------


class HubProcess:
    """``python -m sync_hub serve`` as a subprocess, and its CLI, on one database file."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.db = folder / "hub.db"
        self.port = free_port()
        self.log_path = folder / "hub.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_HUB_")}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "sync_hub", "--db", str(self.db), *argv]

    def start(self) -> None:
        """Start the server (again, after a kill: same database, same port) and wait until
        GET /health answers."""
        assert self.process is None, "the hub is already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command("serve", "--port", str(self.port)),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
            )
        self.starts += 1
        try:
            wait_until_answering(self.process, f"{self.url}/health", HUB_START_SECONDS)
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"the hub {exc}:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no rollback, as when the power goes."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- its command line ---------------------------------------------------------------------

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*argv),
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=self.env,
            timeout=60,
        )

    def ok(self, *argv: str) -> str:
        done = self.cli(*argv)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def enroll_code(self, chw: str, villages: str = "") -> str:
        argv = ["enroll-code", "--chw", chw]
        argv += ["--catchment", villages] if villages else []
        return self.ok(*argv).split()[0]

    # -- what it holds ------------------------------------------------------------------------

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            return conn.execute(sql, params or []).fetchall()
        finally:
            conn.close()

    def chart_heads(self) -> dict[str, bytes]:
        return {r[0]: bytes(r[1]) for r in self.query("SELECT id, heads FROM charts")}

    def tables(self, *names: str) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the given tables, sorted: for "nothing was written" comparisons."""
        # Table names come from the tests' own constants.
        return {
            name: sorted(self.query(f"SELECT * FROM {name}"), key=repr)  # noqa: S608
            for name in names or WRITTEN_TABLES
        }

    def integrity(self) -> str:
        return str(self.query("PRAGMA integrity_check")[0][0])

    def chart(self, doc_id: str) -> Chart:
        rows = self.query("SELECT data FROM charts WHERE id = ?", [doc_id])
        assert rows, f"the hub does not hold chart {doc_id}"
        return Chart.load(bytes(rows[0][0]), author="test", clock=SystemClock())

    def encounters(self) -> dict[str, list[str]]:
        """Encounter IDs per patient chart at the hub, as a list (a duplicate would show)."""
        found = {}
        for doc_id, data in self.query("SELECT id, data FROM charts WHERE kind = 'patient'"):
            view = Chart.load(bytes(data), author="test", clock=SystemClock()).view()
            found[doc_id] = sorted(view.collections.get("encounters", {}))
        return found

    def device_state(self, device_id: str) -> tuple[str, str | None]:
        rows = self.query("SELECT state, told_at FROM devices WHERE id = ?", [device_id])
        assert rows, "no such device at the hub"
        return rows[0][0], rows[0][1]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    """A running hub of the test's own."""
    process = HubProcess(tmp_path / "hub")
    process.start()
    try:
        yield process
    finally:
        process.stop()


# -- tablets ------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every visit recorded by a test, per chart: the truth the sync must deliver, exactly."""

    visits: dict[str, set[str]] = field(default_factory=dict)

    def add(self, chart_id: str, encounter_id: str | None = None) -> None:
        self.visits.setdefault(chart_id, set())
        if encounter_id is not None:
            self.visits[chart_id].add(encounter_id)

    def expected(self, chart_ids: set[str] | None = None) -> dict[str, list[str]]:
        return {c: sorted(v) for c, v in self.visits.items() if chart_ids is None or c in chart_ids}


@dataclass
class CliResult:
    code: int
    out: str
    err: str


class Tablet:
    """An enrolled CHW tablet: an encrypted store, unlocked, and its link to the hub."""

    def __init__(
        self,
        folder: Path,
        name: str,
        hub: HubProcess,
        code: str,
        *,
        ledger: Ledger,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.hub = hub
        self.ledger = ledger
        self.clock = clock or SystemClock()
        base = Settings.from_env({"HOME": str(folder)})
        self.settings = dataclasses.replace(
            base, data_dir=folder / name, scrypt_log2_n=FAST_SCRYPT, idle_lock_seconds=86_400
        )
        self._session: Session | None = init_store(self.settings, self.clock, name, PIN)
        self.client = httpx.Client()
        identity = enroll(self.store, self.client, hub.url, code, name)
        self.device_id = identity.device_id
        self.key = identity.key

    # -- the store ------------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = unlock(self.settings, self.clock, self.name, PIN)
        return self._session

    @property
    def store(self) -> Store:
        return self.session.store

    def close(self) -> None:
        if self._session is not None:
            self._session.lock()
            self._session = None

    @property
    def erased(self) -> bool:
        folder = self.settings.data_dir
        return (folder / "erased").exists() and not (folder / "keys.json").exists()

    # -- work a CHW does -------------------------------------------------------------------------

    def new_patient(self, village: str, phone: str = "+255712345678", **extra: Any) -> str:
        demographics = {
            "given": "Zawadi",
            "family": "Mollel",
            "sex": "female",
            "birth_date": "1990-02-11",
            "phone": phone,
            "village": village,
            **extra,
        }
        chart_id = register_patient(self.store, demographics)
        self.ledger.add(chart_id)
        return chart_id

    def visit(self, chart_id: str, systolic: int = 120, note: str | None = None) -> str:
        readings = {"systolic": float(systolic), "diastolic": 80.0, "pulse": 72.0}
        encounter = write_visit(self.store, chart_id, readings, zone="UTC", note=note)
        self.ledger.add(chart_id, encounter)
        return encounter

    def edit(self, chart_id: str, change: Callable[[Chart], Any]) -> Any:
        chart = self.store.get_chart(chart_id)
        result = change(chart)
        self.store.put_chart(chart)
        return result

    def set_phone(self, chart_id: str, phone: str) -> None:
        self.edit(chart_id, lambda c: c.update_demographics({"phone": phone}))

    def add_task(self, chart_id: str, description: str = "Recheck blood pressure") -> str:
        task = {"kind": "follow_up", "description": description, "due": date(2030, 1, 1)}
        return str(self.edit(chart_id, lambda c: c.add_task(task)))

    def set_task_status(self, chart_id: str, task_id: str, status: str) -> None:
        self.edit(chart_id, lambda c: c.set_task_status(task_id, status))

    # -- what it holds ------------------------------------------------------------------------------

    def view(self, chart_id: str) -> ChartView:
        return self.store.get_chart(chart_id).view()

    def chart_ids(self) -> set[str]:
        return set(self.store.chart_ids())

    def heads(self) -> dict[str, bytes]:
        rows = self.store.db.execute("SELECT id, heads FROM charts")
        return {r[0]: bytes(r[1]) for r in rows}

    def encounters(self) -> dict[str, list[str]]:
        found = {}
        for chart_id in self.store.chart_ids():
            view = self.view(chart_id)
            if view.kind == "patient":
                found[chart_id] = sorted(view.collections.get("encounters", {}))
        return found

    # -- syncing ---------------------------------------------------------------------------------

    def link(
        self, url: str | None = None, client: httpx.Client | None = None, **options: Any
    ) -> Link:
        options = {"first_wait": 0.01, "sleep": no_sleep, **options}
        made = hub_link(self.store, client or self.client, self.clock, **options)
        return dataclasses.replace(made, base_url=url) if url else made

    def sync(self, url: str | None = None, **options: Any) -> SyncReport:
        """One ``field_app.syncing.sync`` with the hub, or through ``url`` (a bad link) on a
        client of its own, closed before the link goes away."""
        if url is None:
            return sync(self.store, self.link(**options))
        with httpx.Client() as client:
            return sync(self.store, self.link(url, client, **options))

    def identity_headers(self, body: bytes, path: str = "/sync") -> dict[str, str]:
        """Headers the tablet itself would sign ``body`` with (see field_app.syncing)."""
        identity = load_identity(self.store)
        assert identity is not None
        signed = DeviceSigner(identity, self.clock).headers("POST", path, body)
        return {"Content-Type": FRAME_TYPE, **signed}

    def cli(self, *argv: str) -> CliResult:
        """``python -m field_app ARGV`` in process, as the CHW would type it (PIN from the
        environment). The test's own session is locked first, as another process would find it."""
        self.close()
        out, err = io.StringIO(), io.StringIO()
        env = {
            "FIELD_APP_DATA": str(self.settings.data_dir),
            "FIELD_APP_PIN": PIN,
            "FIELD_APP_SCRYPT_LOG2_N": str(FAST_SCRYPT),
        }
        code = tablet_main(
            list(argv),
            env=env,
            clock=self.clock,
            stdin=io.StringIO(),
            stdout=out,
            stderr=err,
            http=httpx.Client,
        )
        return CliResult(code, out.getvalue(), err.getvalue())

    def shut(self) -> None:
        self.close()
        self.client.close()


@dataclass
class World:
    """One hub, the tablets enrolled with it, and the ledger of what they recorded."""

    hub: HubProcess
    folder: Path
    ledger: Ledger = field(default_factory=Ledger)
    tablets: list[Tablet] = field(default_factory=list)

    def tablet(
        self, chw: str, villages: str = "", *, name: str | None = None, clock: Clock | None = None
    ) -> Tablet:
        code = self.hub.enroll_code(chw, villages)
        label = name or f"{chw}-{len(self.tablets) + 1}"
        made = Tablet(
            self.folder / "tablets", label, self.hub, code, ledger=self.ledger, clock=clock
        )
        self.tablets.append(made)
        return made

    def sync_all(self, rounds: int = 2) -> list[SyncReport]:
        """Every tablet syncs, ``rounds`` times over: after two, each has what all others sent."""
        return [t.sync() for _ in range(rounds) for t in self.tablets]

    def assert_converged(self, tablets: list[Tablet] | None = None) -> None:
        """Every chart at the hub and on every tablet has the same heads; every visit recorded
        is there exactly once, on every side."""
        group = self.tablets if tablets is None else tablets
        hub_heads = self.hub.chart_heads()
        assert set(self.ledger.visits) <= set(hub_heads), "a chart never reached the hub"
        expected = self.ledger.expected()
        hub_encounters = self.hub.encounters()
        assert {c: hub_encounters[c] for c in expected} == expected
        for tablet in group:
            held = tablet.heads()
            assert held == {c: hub_heads[c] for c in held}, f"{tablet.name} differs from the hub"
            assert set(expected) <= set(held), f"{tablet.name} lacks a chart"
            encounters = tablet.encounters()
            assert {c: encounters[c] for c in expected} == expected, tablet.name

    def close(self) -> None:
        for tablet in self.tablets:
            tablet.shut()


@pytest.fixture
def world(hub: HubProcess, tmp_path: Path) -> Iterator[World]:
    made = World(hub, tmp_path)
    try:
        yield made
    finally:
        made.close()
