"""The outbox to central and the pusher: nothing lost, in order, idempotent, batched,
resumable after days offline, never blocked by one bad chart. Real charts in a real hub
database; central is the stand-in of conftest.py."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import automerge.core as am
import httpx
import pytest
from litestar.testing import TestClient

from care_record import Chart, ChartView, FixedClock, HouseholdRecord
from sync_hub import create_app, outbox
from sync_hub.backoff import Backoff, retrying
from sync_hub.errors import CentralNotConfigured, CentralUnavailable
from sync_hub.lease import Lease
from sync_hub.projection import Region, project_chart
from sync_hub.pusher import Pusher, PushLoop, link
from sync_hub.settings import Settings
from sync_hub.store import Store, put_chart

from .conftest import FakeCentral, HubCli, enrol, new_chart, put

# What the pusher of central_settings projects with: the default zone, no facility.
REGION = Region("region-1", "Africa/Dar_es_Salaam")
VISIT = {
    "encounter": {
        "kind": "anc_contact",
        "started_at": "2025-03-01T08:00:00+00:00",
        "zone": "Africa/Dar_es_Salaam",
        "observations": [
            {"code": "8867-4", "display": "Heart rate", "value": 80, "unit": "/min"},
            {"code": "8310-5", "display": "Body temperature", "value": 37.2, "unit": "Cel"},
        ],
    },
}


def _queue(store: Store) -> list[tuple[str, int]]:
    with store.read() as db:
        return [
            (r[0], r[1]) for r in db.execute("SELECT doc, version FROM fhir_outbox ORDER BY seq")
        ]


def _quarantine(store: Store) -> dict[str, outbox.Quarantined]:
    with store.read() as db:
        return {q.doc: q for q in outbox.quarantined(db)}


def _pushed_patients(central: FakeCentral) -> list[str]:
    """Patient IDs in the order central received them, one per transaction entry."""
    return [
        url.removeprefix("Patient/")
        for urls in central.transactions
        for url in urls
        if url.startswith("Patient/")
    ]


@pytest.fixture
def make_pusher(
    central_settings: Settings, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> Iterator[Callable[..., Pusher]]:
    made: list[Pusher] = []

    def make(**options: Any) -> Pusher:
        wired = link(central_settings, hub_store, clock, http=central.client())
        pusher = wired.pusher
        for name, value in options.items():
            setattr(pusher, name, value)
        made.append(pusher)
        return pusher

    yield make
    for pusher in made:
        pusher.central.close()


@pytest.fixture
def pusher(make_pusher: Callable[..., Pusher]) -> Pusher:
    return make_pusher()


# -- the queue --------------------------------------------------------------------------------------


def test_a_stored_patient_chart_is_queued_in_the_same_transaction(
    hub_store: Store, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    assert _queue(hub_store) == [(chart.id, 1)]


def test_a_rolled_back_put_leaves_no_chart_and_no_queue_row(
    hub_store: Store, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    queued_inside: list[int] = []

    def store_then_fail() -> None:
        with hub_store.write() as db:
            put_chart(db, chart.id, "patient", chart.save(), chart.heads, device="d", at="t")
            queued_inside.append(outbox.pending_count(db))
            raise RuntimeError("the sync failed after storing the chart")

    with pytest.raises(RuntimeError):
        store_then_fail()
    assert queued_inside == [1]
    with hub_store.read() as db:
        assert db.execute("SELECT count(*) FROM charts").fetchone()[0] == 0
    assert _queue(hub_store) == []


def test_household_charts_are_not_queued(hub_store: Store, clock: FixedClock) -> None:
    household = HouseholdRecord.new(
        {"name": "Nyumba", "village": "Kijiji"}, author="amina", clock=clock
    )
    put(hub_store, household, clock)
    assert _queue(hub_store) == []


def test_charts_queue_in_the_order_they_first_changed_and_changes_coalesce(
    hub_store: Store, clock: FixedClock
) -> None:
    first, second, third = (new_chart(clock) for _ in range(3))
    for chart in (first, second, third):
        put(hub_store, chart, clock)
    for _ in range(3):
        first.record_visit(VISIT)
        put(hub_store, first, clock)
    put(hub_store, third, clock)
    assert _queue(hub_store) == [(first.id, 4), (second.id, 1), (third.id, 2)]


def test_an_older_hub_database_queues_every_patient_chart_when_upgraded(
    central_settings: Settings, clock: FixedClock
) -> None:
    store = Store(central_settings.db)
    store.create()
    charts = [new_chart(clock) for _ in range(3)]
    for chart in charts:
        put(store, chart, clock)
    conn = sqlite3.connect(central_settings.db)
    conn.execute("DROP TABLE fhir_outbox")  # as a hub from before the push to central
    conn.commit()
    conn.close()
    store.close()
    store = Store(central_settings.db)
    store.create()
    assert sorted(doc for doc, _version in _queue(store)) == sorted(c.id for c in charts)
    store.close()


# -- pushing ----------------------------------------------------------------------------------------


def test_a_push_delivers_each_chart_projected_and_empties_the_queue(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    chart.record_visit(VISIT)
    put(hub_store, chart, clock)
    report = pusher.push_pending()
    expected = project_chart(chart.view(), region=REGION)
    assert (report.charts, report.resources, report.bundles) == (1, len(expected), 1)
    for resource in expected:
        url = f"{resource['resourceType']}/{resource['id']}"
        assert central.content(url) == resource
    assert _queue(hub_store) == []
    with hub_store.read() as db:
        assert outbox.status(db).last_push_at == "2025-03-01T08:30:00+00:00"


def test_a_push_gives_each_patient_the_hubs_zone_and_facility(
    central_settings: Settings, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    settings = Settings.from_env(
        {
            "SYNC_HUB_DB": str(central_settings.db),
            "SYNC_HUB_NAME": "kati",
            "SYNC_HUB_CENTRAL_URL": central_settings.central_url,
            "SYNC_HUB_CENTRAL_KEY": str(central_settings.central_key),
            "SYNC_HUB_TIMEZONE": "Africa/Kampala",
            "SYNC_HUB_FACILITY": "Kilosa Health Centre",
        }
    )
    no_visit, visited = new_chart(clock), new_chart(clock)
    visited.record_visit(VISIT)
    for chart in (no_visit, visited):
        put(hub_store, chart, clock)
    wired = link(settings, hub_store, clock, http=central.client())
    wired.pusher.push_pending()
    wired.close()
    zone = "http://hl7.org/fhir/StructureDefinition/timezone"
    patients = [central.resources[f"Patient/{c.id}"] for c in (no_visit, visited)]
    assert [p["extension"] for p in patients] == [
        [{"url": zone, "valueCode": "Africa/Kampala"}],
        [{"url": zone, "valueCode": "Africa/Dar_es_Salaam"}],  # the visit's
    ]
    assert {json.dumps(p["managingOrganization"]) for p in patients} == {
        json.dumps({"display": "Kilosa Health Centre"})
    }


def test_an_empty_queue_sends_nothing(pusher: Pusher, central: FakeCentral) -> None:
    assert pusher.push_pending().charts == 0
    assert central.fhir_requests == []
    assert central.assertions == []


def test_charts_go_in_queue_order_in_bundles_within_the_limit_never_split(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock
) -> None:
    charts = []
    for number in range(12):
        chart = new_chart(clock)
        for _ in range(number % 4):  # 1 to 7 resources a chart
            chart.record_visit(VISIT)
        put(hub_store, chart, clock)
        charts.append(chart)
    big = new_chart(clock)
    for _ in range(8):  # 1 + 8 * 3 = 25 resources: more than the limit of 20, so alone
        big.record_visit(VISIT)
    put(hub_store, big, clock)
    report = pusher.push_pending()
    assert _pushed_patients(central) == [c.id for c in [*charts, big]]
    sizes = [len(urls) for urls in central.transactions]
    assert all(size <= 20 for size in sizes[:-1])
    assert central.transactions[-1] == [
        f"{r['resourceType']}/{r['id']}" for r in project_chart(big.view(), region=REGION)
    ]
    for urls in central.transactions:  # each chart's resources all in one bundle
        patients = {u for u in urls if u.startswith("Patient/")}
        subjects = {
            central.resources[u].get("subject", {}).get("reference", f"Patient/{u[8:]}")
            for u in urls
        }
        assert subjects <= patients
    assert report.bundles == len(central.transactions)
    assert _queue(hub_store) == []


def test_a_chart_changed_while_its_push_is_in_flight_stays_queued(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)

    def meanwhile(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fhir":  # a tablet syncs a visit as the push is on the wire
            chart.record_visit(VISIT)
            put(hub_store, chart, clock)
        return central.handle(request)

    pusher.central.http = httpx.Client(transport=httpx.MockTransport(meanwhile))
    pusher.push_pending()
    assert _queue(hub_store) == [(chart.id, 2)]
    pusher.central.http = central.client()
    pusher.push_pending()
    assert _queue(hub_store) == []
    encounters = [u for u in central.resources if u.startswith("Encounter/")]
    assert len(encounters) == 1


def test_a_push_repeated_after_a_lost_answer_is_a_no_op_at_central(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    chart.record_visit(VISIT)
    put(hub_store, chart, clock)
    central.script = ["lost"]  # central wrote the bundle; the hub never heard
    with pytest.raises(CentralUnavailable):
        pusher.push_pending()
    assert _queue(hub_store) == [(chart.id, 1)]
    first = {url: central.content(url) for url in central.resources}
    pusher.push_pending()
    assert {url: central.content(url) for url in central.resources} == first
    assert set(central.writes.values()) == {2}  # the same IDs written twice, nothing new
    assert _queue(hub_store) == []


def test_429_honours_retry_after_then_pushes(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.script, central.retry_after = ["429"], "7"
    slept: list[float] = []
    report = retrying(pusher.push_pending, attempts=3, sleep=slept.append)
    assert slept == [7.0]
    assert report.charts == 1
    assert f"Patient/{chart.id}" in central.resources


@pytest.mark.parametrize("trouble", ["503", "drop", "timeout"])
def test_an_outage_is_retried_and_nothing_is_lost(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock, trouble: str
) -> None:
    charts = [new_chart(clock) for _ in range(30)]
    for chart in charts:
        put(hub_store, chart, clock)
    # The second bundle fails twice: the first one stays delivered, the rest follow.
    central.script = ["ok", trouble, trouble]
    slept: list[float] = []
    retrying(pusher.push_pending, attempts=5, sleep=slept.append)
    assert len(slept) == 2
    assert _pushed_patients(central) == [c.id for c in charts]
    assert _queue(hub_store) == []


def test_retries_give_up_after_the_attempts_and_keep_everything_queued(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.script = ["503"] * 3
    slept: list[float] = []
    with pytest.raises(CentralUnavailable):
        retrying(pusher.push_pending, attempts=3, sleep=slept.append)
    assert len(slept) == 2
    assert _queue(hub_store) == [(chart.id, 1)]


def test_a_bundle_refused_for_one_chart_quarantines_it_and_delivers_the_others(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock
) -> None:
    charts = [new_chart(clock) for _ in range(8)]
    for chart in charts:
        put(hub_store, chart, clock)
    bad = charts[5]
    central.refuse[bad.id] = 400
    report = pusher.push_pending()
    assert _pushed_patients(central) == [c.id for c in charts if c is not bad]
    held = _quarantine(hub_store)
    assert list(held) == [bad.id]
    assert held[bad.id].status == "400"
    assert "Patient.birthDate: must not be in the future" in held[bad.id].reason
    assert (report.charts, report.quarantined) == (7, 1)
    assert report.splits >= 1
    assert _queue(hub_store) == []  # it blocks nothing


def test_a_quarantined_chart_is_queued_again_when_it_changes(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.refuse[chart.id] = 422
    pusher.push_pending()
    assert chart.id in _quarantine(hub_store)
    assert pusher.push_pending().charts == 0  # not retried while unchanged
    del central.refuse[chart.id]  # say central was fixed, and the CHW corrected the chart
    chart.update_demographics({"phone": "+255712345678"})
    put(hub_store, chart, clock)
    assert pusher.push_pending().charts == 1
    assert _quarantine(hub_store) == {}
    assert f"Patient/{chart.id}" in central.resources


def test_a_chart_out_of_the_region_is_quarantined_with_403(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock
) -> None:
    inside, outside = new_chart(clock), new_chart(clock)
    put(hub_store, inside, clock)
    put(hub_store, outside, clock)
    central.refuse[outside.id] = 403
    pusher.push_pending()
    assert _quarantine(hub_store)[outside.id].status == "403"
    assert _pushed_patients(central) == [inside.id]


def _too_new(chart: Chart) -> Chart:
    """The chart as a newer app would write it: a schema version this code does not know."""
    with chart.document.transaction() as tx:
        tx.put(am.ROOT, "schema_version", am.ScalarType.Int, 99)
    return chart


def _damaged(chart: Chart) -> tuple[Chart, str]:
    """The chart with a CHW's note on a channel no schema allows, written past the schema."""
    message_id = chart.add_message(
        {
            "direction": "from_chw",
            "channel": "app",
            "author": "amina",
            "text": "Amina Juma asks about her results.",
            "sent_at": "2025-03-01T08:00:00+00:00",
        }
    )
    with chart.document.transaction() as tx:
        messages = tx.get(am.ROOT, "messages")
        assert messages is not None
        record = tx.get(messages[1], message_id)
        assert record is not None
        tx.put(record[1], "channel", am.ScalarType.Str, "telepathy")
    return chart, message_id


def test_charts_that_cannot_be_projected_are_quarantined_with_the_reason(
    make_pusher: Callable[..., Pusher], hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    good, newer, awkward = new_chart(clock), _too_new(new_chart(clock)), new_chart(clock)
    damaged, message_id = _damaged(new_chart(clock))
    for chart in (good, newer, awkward, damaged):
        put(hub_store, chart, clock)

    def project(view: ChartView, *, region: Region) -> list[dict[str, Any]]:
        if view.id == awkward.id:
            return {}["a value the projection did not expect"]  # type: ignore[no-any-return]
        return project_chart(view, region=region)

    report = make_pusher(project=project).push_pending()
    held = _quarantine(hub_store)
    assert held[newer.id].reason.startswith("ChartTooNew: this chart uses schema version 99")
    assert held[awkward.id].reason == "projection failed: KeyError"
    assert held[damaged.id].reason == (
        f"projection failed: channel of record {message_id} is not one the chart schema allows"
    )
    assert "Amina" not in held[damaged.id].reason
    assert {q.status for q in held.values()} == {"unprojectable"}
    assert _pushed_patients(central) == [good.id]
    assert report.quarantined == 3


def test_days_offline_are_delivered_in_order_in_bounded_bundles_once_central_is_back(
    hub_store: Store, pusher: Pusher, central: FakeCentral, clock: FixedClock
) -> None:
    charts = [new_chart(clock) for _ in range(300)]
    for chart in charts:
        put(hub_store, chart, clock)
    for day in range(3):  # three days of visits to a tenth of them, central unreachable
        clock.advance(timedelta(days=1))
        for chart in charts[day::10]:
            chart.record_visit(VISIT)
            put(hub_store, chart, clock)
        central.script = ["drop"]
        with pytest.raises(CentralUnavailable):
            pusher.push_pending()
    assert len(_queue(hub_store)) == 300
    report = pusher.push_pending()
    assert _pushed_patients(central) == [c.id for c in charts]  # each once, in order
    assert all(len(urls) <= 20 for urls in central.transactions)
    assert report.charts == 300
    assert len(central.transactions) == report.bundles
    assert len(central.of_type("Encounter")) == 90
    assert _queue(hub_store) == []


# -- the lease --------------------------------------------------------------------------------------


def test_two_pushers_on_one_database_never_push_at_once(
    make_pusher: Callable[..., Pusher], hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    charts = [new_chart(clock) for _ in range(30)]
    for chart in charts:
        put(hub_store, chart, clock)
    first, second = make_pusher(), make_pusher()
    during: list[Any] = []

    def second_tries_meanwhile(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fhir" and not during:
            during.append(second.push_pending())
        return central.handle(request)

    first.central.http = httpx.Client(transport=httpx.MockTransport(second_tries_meanwhile))
    report = first.push_pending()
    assert during[0].leased_by == first.lease.holder
    assert during[0].charts == 0
    assert report.charts == 30
    assert _pushed_patients(central) == [c.id for c in charts]  # each once
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    assert second.push_pending().charts == 1  # the first released the lease when done


def test_a_lease_left_by_a_dead_process_expires(hub_store: Store, clock: FixedClock) -> None:
    dead = Lease(hub_store, clock, holder="dead", seconds=60)
    alive = Lease(hub_store, clock, holder="alive", seconds=60)
    assert dead.hold()
    assert not alive.hold()
    assert alive.held_by() == "dead"
    clock.advance(timedelta(seconds=61))
    assert alive.hold()
    assert not dead.hold()


# -- back-off -------------------------------------------------------------------------------------


def test_backoff_grows_with_jitter_up_to_its_cap_and_respects_retry_after() -> None:
    highest = Backoff(base=1, cap=300, uniform=lambda _low, high: high)
    lowest = Backoff(base=1, cap=300, uniform=lambda low, _high: low)
    assert [highest.next_delay() for _ in range(11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert [lowest.next_delay() for _ in range(3)] == [0.5, 1, 2]
    assert highest.next_delay(retry_after=900) == 900
    highest.reset()
    assert highest.next_delay(retry_after=7) == 7


# -- serve: the loop in the app's lifespan ------------------------------------------------------------


def test_serve_pushes_a_synced_visit_within_seconds(
    central_settings: Settings, central: FakeCentral, clock: FixedClock
) -> None:
    settings = Settings.from_env(
        {
            "SYNC_HUB_DB": str(central_settings.db),
            "SYNC_HUB_NAME": "kati",
            "SYNC_HUB_CENTRAL_URL": central_settings.central_url,
            "SYNC_HUB_CENTRAL_KEY": str(central_settings.central_key),
            "SYNC_HUB_PUSH_INTERVAL_SECONDS": "600",  # only the sync's wake can explain a push
            "SYNC_HUB_FETCH_INTERVAL_SECONDS": "600",
        }
    )
    app = create_app(settings, clock=clock, central_http=central.client())
    with TestClient(app) as client:
        tablet = enrol(client, clock, HubCli(settings, clock), "amina", "Kijiji cha Mlima")
        chart = tablet.new_chart()
        chart.record_visit(VISIT)
        tablet.store(chart)
        started = time.monotonic()
        tablet.sync()
        while f"Patient/{chart.id}" not in central.resources and time.monotonic() - started < 5:
            time.sleep(0.02)
        assert f"Patient/{chart.id}" in central.resources
        assert len(central.of_type("Encounter")) == 1
    # Fetched once at start: one search for each feed.
    assert [s.path for s in central.searches] == ["/fhir/Communication", "/fhir/Task"]


def test_serve_refuses_to_start_without_the_hub_key(
    central_settings: Settings, clock: FixedClock, tmp_path: Any
) -> None:
    settings = Settings.from_env(
        {
            "SYNC_HUB_DB": str(central_settings.db),
            "SYNC_HUB_CENTRAL_URL": central_settings.central_url,
            "SYNC_HUB_CENTRAL_KEY": str(tmp_path / "missing.pem"),
        }
    )
    with pytest.raises(CentralNotConfigured, match="central-key"):
        create_app(settings, clock=clock)


def test_the_loop_survives_an_outage_and_pushes_when_central_returns(
    make_pusher: Callable[..., Pusher], hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.script = ["503", "503"]
    fetches: list[str] = []

    def fetch(*, stop: Callable[[], bool]) -> None:
        fetches.append(threading.current_thread().name)

    loop = PushLoop(
        make_pusher(),
        fetch,
        push_interval=600,
        fetch_interval=600,
        backoff=Backoff(base=0.01, cap=0.05),
    )

    async def run() -> None:
        loop.start()
        for _ in range(200):
            if f"Patient/{chart.id}" in central.resources:
                break
            await asyncio.sleep(0.01)
        await loop.stop()

    asyncio.run(run())
    assert f"Patient/{chart.id}" in central.resources
    assert central.fhir_requests.count("POST /fhir") == 3
    # On the loop's own thread, never one of the threads that answer the tablets.
    assert len(fetches) == 1
    assert fetches[0].startswith("sync-hub-push")
    assert _queue(hub_store) == []
