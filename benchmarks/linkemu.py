"""A bad network link in user space: a TCP proxy with delay, bandwidth, loss and cuts.

Kernel traffic shaping is not available here, so tests and benchmarks put this proxy between a
tablet and the hub. Each direction is shaped on its own:

- **bandwidth**: a chunk leaves only when the link has finished sending the previous one;
- **delay**: every chunk arrives ``rtt / 2`` after it left;
- **loss**: TCP hides a lost segment behind a retransmission; each segment (1,460 bytes) is
  lost with probability ``loss`` and then arrives one retransmission timeout late
  (``max(0.2 s, 2 x rtt)``), holding back what follows, as TCP's in-order delivery does;
- **cuts**: with ``cut_after`` set, a connection is reset once that many bytes (both ways) have
  crossed it: a tablet losing its signal part-way through a sync.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SEGMENT = 1460


@dataclass
class LinkStats:
    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    cuts: int = 0
    losses: int = 0


@dataclass
class Link:
    """Shape of the link. ``bandwidth`` in bits per second each way, 0 = unlimited."""

    rtt: float = 0.0
    bandwidth: int = 0
    loss: float = 0.0
    cut_after: Callable[[], int | None] = lambda: None
    seed: int = 1
    stats: LinkStats = field(default_factory=LinkStats)


class LinkEmulator:
    """Listens on 127.0.0.1:<port> and forwards to ``target`` through ``link``."""

    def __init__(self, target_host: str, target_port: int, link: Link) -> None:
        self.target = (target_host, target_port)
        self.link = link
        self.random = random.Random(link.seed)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> LinkEmulator:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Connections still open end here: those whose client has gone finish on their own in
        # a moment; the rest (a client keeping its connection alive) are cancelled. Left
        # pending, they were destroyed with the loop, noisily.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            _done, pending = await asyncio.wait(others, timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.link.stats.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        budget = _Budget(self.link.cut_after())
        up = asyncio.create_task(self._pipe(client_r, server_w, budget, upward=True))
        down = asyncio.create_task(self._pipe(server_r, client_w, budget, upward=False))
        try:
            await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
            if budget.cut:
                self.link.stats.cuts += 1
                client_w.transport.abort()
                server_w.transport.abort()
            await asyncio.gather(up, down, return_exceptions=True)
        except asyncio.CancelledError:
            return  # the emulator is closing while this connection is open: end quietly
        finally:
            for writer in (client_w, server_w):
                writer.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        budget: _Budget,
        *,
        upward: bool,
    ) -> None:
        """Read as data comes, deliver each chunk at its arrival time, in order (pipelined)."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        deliver = asyncio.create_task(self._deliver(queue, writer, budget, upward=upward))
        free_at = held_until = time.monotonic()
        try:
            while not budget.cut:
                chunk = await reader.read(SEGMENT)
                if not chunk:
                    break
                chunk = budget.take(chunk)
                free_at = max(free_at, time.monotonic()) + self._transmit_seconds(len(chunk))
                # In-order delivery: a chunk behind a lost one waits for its retransmission.
                held_until = max(held_until, free_at + self.link.rtt / 2 + self._retransmit_delay())
                queue.put_nowait((held_until, chunk))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait(None)
        await deliver

    async def _deliver(
        self,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        budget: _Budget,
        *,
        upward: bool,
    ) -> None:
        try:
            while (item := await queue.get()) is not None:
                arrive, chunk = item
                await asyncio.sleep(max(0.0, arrive - time.monotonic()))
                writer.write(chunk)
                await writer.drain()
                if upward:
                    self.link.stats.bytes_up += len(chunk)
                else:
                    self.link.stats.bytes_down += len(chunk)
            if not budget.cut and writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            return

    def _transmit_seconds(self, size: int) -> float:
        return size * 8 / self.link.bandwidth if self.link.bandwidth else 0.0

    def _retransmit_delay(self) -> float:
        if self.link.loss and self.random.random() < self.link.loss:
            self.link.stats.losses += 1
            return max(0.2, 2 * self.link.rtt)
        return 0.0


class _Budget:
    """Bytes left before the connection is cut (both directions together)."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self.cut = False

    def take(self, chunk: bytes) -> bytes:
        if self.left is None:
            return chunk
        if len(chunk) >= self.left:
            chunk, self.left, self.cut = chunk[: self.left], 0, True
            return chunk
        self.left -= len(chunk)
        return chunk
