"""The demo's ports: free, and from below the range the kernel hands out to clients."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from field_app.demo import ports


def test_a_free_port_is_below_the_ephemeral_range_and_a_server_can_listen_on_it() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    port = ports.free_port()
    assert ports.LOWEST_PORT <= port < low
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with ports.listening_socket() as taken:
        busy = taken.getsockname()[1]
        with ports.listening_socket() as spare:
            free = spare.getsockname()[1]
        tries = iter([busy, busy, free])
        monkeypatch.setattr(ports.random, "randrange", lambda *_args: next(tries))
        with ports.listening_socket() as sock:
            assert sock.getsockname()[1] == free


def test_no_free_port_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    with ports.listening_socket() as taken:
        busy = taken.getsockname()[1]

        def always_busy(*_args: Any) -> int:
            return int(busy)

        monkeypatch.setattr(ports.random, "randrange", always_busy)
        with pytest.raises(OSError, match="no free port"):
            ports.free_port()
