"""A real regional hub for benchmarks: ``python -m sync_hub --db PATH serve`` in its own process.

The hub runs exactly as in production (uvicorn, one process, its own SQLite file in the
benchmark's folder); the benchmark talks to it only over HTTP, as tablets do. What the hub
process costs is read from ``/proc/PID``: its memory (``VmRSS`` now, ``VmHWM`` its peak) and its
CPU time (user + system). Enrolment codes are issued by the hub's own CLI code
(``sync_hub.cli.main``, ``enroll-code``) against the same database file, in the benchmark's
process, so that 200 tablets do not cost 200 interpreter start-ups.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from sync_hub.cli import main as hub_cli

START_SECONDS = 30.0
STOP_SECONDS = 10.0


class HubError(RuntimeError):
    """The hub did not start, or its CLI refused a command."""


class HubProcess:
    """``with HubProcess(folder) as hub: hub.url``: a hub with a fresh database in ``folder``."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.db = folder / "hub.db"
        self.log_path = folder / "hub.log"
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise HubError("the hub is not running")
        return self._process.pid

    def __enter__(self) -> HubProcess:
        command = [sys.executable, "-m", "sync_hub", "--db", str(self.db)]
        command += ["serve", "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_up()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=STOP_SECONDS)
        self._process = None

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise HubError(f"the hub exited at start-up; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise HubError(f"the hub did not answer within {START_SECONDS:.0f} s; see {self.log_path}")

    # -- the hub's own CLI ------------------------------------------------------------------------

    def enroll_code(self, chw: str, villages: list[str]) -> str:
        """A one-time code for a tablet of ``chw``, adding ``villages`` to their catchment."""
        argv = ["--db", str(self.db), "enroll-code", "--chw", chw]
        if villages:
            argv += ["--catchment", ",".join(villages)]
        out, err = io.StringIO(), io.StringIO()
        if hub_cli(argv, env={}, stdout=out, stderr=err) != 0:
            raise HubError(f"enroll-code refused: {err.getvalue().strip()}")
        return out.getvalue().split()[0]

    # -- what the process costs -------------------------------------------------------------------

    def memory_mb(self) -> tuple[float, float]:
        """(current resident set, peak resident set) in MiB, from /proc/PID/status."""
        values: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text(encoding="ascii").splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024  # kB
        return values["VmRSS"], values["VmHWM"]

    def cpu_seconds(self) -> float:
        """User + system CPU time the hub process has used so far."""
        return process_cpu_seconds(self.pid)


def process_cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis
    # start at field 3, so utime (14) and stime (15) are at 11 and 12 there.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
