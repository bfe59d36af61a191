"""A real server in a process of its own, for benchmarks: started with its own environment,
waited for until its health URL answers, and stopped with every process it forked; and what it
costs, read from ``/proc``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from types import TracebackType

import httpx

START_SECONDS = 60.0
STOP_SECONDS = 15.0


class ServerProcess:
    """``with ServerProcess(name, command, env, health_url, log_path):`` a server, up and
    answering; RuntimeError if it exits or stays silent at start-up."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str],
        health_url: str,
        log_path: Path,
    ) -> None:
        self.name = name
        self.command = command
        self.env = dict(env)
        self.health_url = health_url
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        with self.log_path.open("ab") as log:
            # A session of its own: stopping its group stops every worker it forked.
            self._process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._process is None:
            return
        group = self._process.pid
        self._signal(group, signal.SIGTERM)
        try:
            self._process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._signal(group, signal.SIGKILL)
            self._process.wait(timeout=STOP_SECONDS)
        # Workers that outlived their parent are in the same group.
        self._signal(group, signal.SIGKILL)
        self._process = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def group_pids(self) -> list[int]:
        """The live processes of the server's process group (its workers too)."""
        if self._process is None:
            return []
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with suppress(OSError):
                text = stat.read_text(encoding="ascii", errors="replace")
                # Fields after the command name's closing parenthesis: state, ppid, pgrp.
                if int(text[text.rindex(")") + 2 :].split()[2]) == self._process.pid:
                    found.append(int(stat.parent.name))
        return found

    @staticmethod
    def _signal(group: int, which: signal.Signals) -> None:
        with suppress(ProcessLookupError):
            os.killpg(group, which)

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up; see {self.log_path}")
            try:
                if httpx.get(self.health_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} did not answer within {START_SECONDS:.0f} s; see {self.log_path}"
        )


def process_cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis
    # start at field 3, so utime (14) and stime (15) are at 11 and 12 there.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
