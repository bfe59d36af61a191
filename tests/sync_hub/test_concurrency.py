"""Many tablets at once: requests run in worker threads, each in its own transaction, and
none is lost or mixed up with another."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from care_record.sync import SyncResponse, absorb, decode_frame, encode_frame
from sync_hub import Settings, create_app, exchange
from tests.serving import run_in_thread

TABLETS = 12
CHARTS_EACH = 3


def test_simultaneous_syncs_all_land(
    make_tablet: Any, settings: Settings, clock: Any, hub_db: Any
) -> None:
    tablets = [make_tablet("amina") for _ in range(TABLETS)]
    made = {
        t.device_id: {t.new_chart(given=f"Mtoto{i}").id for i in range(CHARTS_EACH)}
        for t in tablets
    }
    requests = [t.request() for t in tablets]
    bodies = [encode_frame(r) for r in requests]
    app = create_app(settings, clock=clock)

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post("/sync", content=body, headers=t.headers(body))
                        for t, body in zip(tablets, bodies, strict=True)
                    )
                )
            )

    answers = asyncio.run(send_all())
    assert [a.status_code for a in answers] == [200] * TABLETS
    for tablet, request, answer in zip(tablets, requests, answers, strict=True):
        response = decode_frame(answer.content, SyncResponse)
        assert sorted(response.applied) == list(range(CHARTS_EACH))
        absorb(tablet.replica, tablet.session, request, response)
    stored = {row[0] for row in hub_db("SELECT id FROM charts")}
    assert stored == set().union(*made.values())
    # Each tablet then receives everyone else's charts.
    first = tablets[0]
    first.sync_until_done()
    assert first.holds() == stored


def test_requests_are_worked_on_by_as_many_threads_as_configured(
    settings: Settings, monkeypatch: Any
) -> None:
    """The rest wait their turn (SYNC_HUB_WORKERS), instead of the loop's default pool of the
    cores plus four."""
    lock = threading.Lock()
    running: list[int] = [0, 0]  # now, most at once
    names: set[str] = set()

    def slow_sync(_hub: Any, _call: Any) -> bytes:
        with lock:
            running[0] += 1
            running[1] = max(running)
            names.add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return b""

    monkeypatch.setattr(exchange, "sync", slow_sync)
    server, thread, url = run_in_thread(create_app(dataclasses.replace(settings, workers=2)))
    try:
        with ThreadPoolExecutor(8) as senders:
            answers = list(
                senders.map(lambda _: httpx.post(f"{url}/sync", content=b"x", timeout=10), range(8))
            )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert [a.status_code for a in answers] == [200] * 8
    assert running[1] == 2
    assert names
    assert all(name.startswith("sync-hub") for name in names)
