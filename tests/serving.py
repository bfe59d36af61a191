"""An ASGI app served by uvicorn on a thread of the test's own process."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from field_app.demo.ports import listening_socket


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
