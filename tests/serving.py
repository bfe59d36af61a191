"""Ports for the tests' servers, and an ASGI app served by uvicorn on a thread of the test's own
process.

A port taken with ``bind(("127.0.0.1", 0))`` and closed again comes from the kernel's ephemeral
range, the same range every outgoing connection and every other ``bind(0)`` draws from: between
the probe and the server's own bind, a test's HTTP client or a second server can take it, and
the server fails to start. ``free_port`` picks below that range instead, where nothing is handed
out on its own, and ``listening_socket`` holds the port until the server listens on it.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

LOWEST_PORT = 10_000


def _first_ephemeral_port() -> int:
    try:
        low = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
    except (OSError, IndexError):
        return 32_768  # Linux's default
    return max(int(low), LOWEST_PORT + 1_000)


def listening_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1, outside the ephemeral range; the caller
    hands it to the server (or closes it)."""
    top = _first_ephemeral_port()
    for _ in range(200):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", random.randrange(LOWEST_PORT, top)))
        except OSError:
            sock.close()
            continue
        return sock
    raise AssertionError(f"no free port between {LOWEST_PORT} and {top}")


def free_port() -> int:
    """A port no one listens on, for a server started in another process (or for a connection
    that must be refused)."""
    with listening_socket() as sock:
        return int(sock.getsockname()[1])


def run_in_thread(
    app: Any, sock: socket.socket | None = None
) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Start serving ``app`` on ``sock`` (by default a new ``listening_socket()``); returns the
    server (set ``should_exit`` to stop it), its thread and its base URL."""
    sock = sock or listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped at start-up"
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}"
