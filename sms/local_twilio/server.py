"""The local Twilio's HTTP plumbing: a threading server that can be stopped cleanly.

``Server`` hands every request to one ``answer`` function and writes back the ``Reply`` it
returns; it joins its handler threads on close and can cut idle keep-alive connections, so that
``LocalTwilio.stop()`` returns promptly and leaves no thread behind. Request lines are never
logged: their query strings carry phone numbers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body and the headers beyond Content-Length."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    body = json.dumps(payload).encode()
    return Reply(status, body, (("Content-Type", "application/json; charset=utf-8"), *headers))


class Server(ThreadingHTTPServer):
    """A threading server that joins its handler threads on close and can cut idle
    keep-alive connections, so that ``stop()`` returns promptly and leaves nothing behind."""

    daemon_threads = False
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], answer: Callable[[str, str, str | None, bytes], Reply]
    ) -> None:
        self.answer = answer
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up waiting (a held create) leaves a broken pipe: not our failure.
        logger.debug("local Twilio: a connection ended abruptly")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Keep-alive with the headers and the body in separate segments meets the client's
    # delayed ACK: 40 ms a request. Buffer the answer (flushed whole after each request) and
    # send without Nagle's delay.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: Server

    def do_GET(self) -> None:
        self._respond("GET")

    def do_POST(self) -> None:
        self._respond("POST")

    def _respond(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.answer(method, self.path, self.headers.get("Authorization"), body)
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Request lines carry phone numbers in their query strings (?To=...): log none.
        return
