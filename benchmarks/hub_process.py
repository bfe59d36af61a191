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
import sys
from pathlib import Path
from types import TracebackType

from benchmarks.servers import ServerProcess, process_cpu_seconds
from field_app.demo.ports import free_port
from sync_hub.cli import main as hub_cli


class HubError(RuntimeError):
    """The hub did not start, or its CLI refused a command."""


class HubProcess:
    """``with HubProcess(folder) as hub: hub.url``: a hub with a fresh database in ``folder``."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.db = folder / "hub.db"
        self.port = free_port()
        command = [sys.executable, "-m", "sync_hub", "--db", str(self.db)]
        command += ["serve", "--port", str(self.port)]
        self._server = ServerProcess(
            "the hub", command, os.environ, f"{self.url}/health", folder / "hub.log"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._server.pid

    def __enter__(self) -> HubProcess:
        try:
            self._server.__enter__()
        except RuntimeError as exc:
            raise HubError(str(exc)) from exc
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._server.stop()

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
