"""Many tablets at once: requests run in worker threads, each in its own transaction, and
none is lost or mixed up with another."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from care_record.sync import SyncResponse, absorb, decode_frame, encode_frame
from sync_hub import Settings, create_app

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
