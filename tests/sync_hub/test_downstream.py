"""Downstream: Communications and call-back Tasks written at central merged into the charts,
once, then carried to the tablets. Real charts in a real hub database; central is the stand-in
of conftest.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from care_record import Chart, FixedClock, new_id
from sync_hub import outbox
from sync_hub.downstream import Fetcher
from sync_hub.errors import Busy
from sync_hub.lease import Lease
from sync_hub.pusher import link
from sync_hub.settings import Settings
from sync_hub.store import Store, get_chart

from .conftest import CENTRAL_START, FakeCentral, MakeTablet, new_chart, put

CATEGORY = "urn:rural-care:message"
MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
TASK_KIND = "urn:rural-care:task-kind"


def communication(
    chart: Chart,
    category: str,
    text: str = "Give ORS and review tomorrow.",
    *,
    medium: str | None = "ONLINEWRIT",
    sender: str | None = "Dr Mushi",
    **elements: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "id": elements.pop("id", None) or new_id(FixedClock(CENTRAL_START)),
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "subject": {"reference": f"Patient/{chart.id}"},
        "sent": "2025-03-01T09:15:00+00:00",
        "payload": [{"contentString": text}],
        **elements,
    }
    if medium is not None:
        resource["medium"] = [{"coding": [{"system": MODE, "code": medium}]}]
    if sender is not None:
        resource["sender"] = {"reference": "Practitioner/p1", "display": sender}
    return resource


def call_back(chart: Chart, kind: str = "call_back", **elements: Any) -> dict[str, Any]:
    """The Task central writes when a patient replies CALL to a reminder."""
    clock = FixedClock(CENTRAL_START)
    return {
        "resourceType": "Task",
        "id": elements.pop("id", None) or new_id(clock),
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_KIND, "code": kind}]},
        "description": "Call the patient back: they asked for a call",
        "for": {"reference": f"Patient/{chart.id}"},
        "authoredOn": "2025-03-01T09:15:00+00:00",
        "restriction": {"period": {"end": "2025-03-02"}},
        "focus": {"reference": f"Communication/{new_id(clock)}"},
        "basedOn": [{"reference": f"CommunicationRequest/{new_id(clock)}"}],
        **elements,
    }


@pytest.fixture
def fetcher(
    central_settings: Settings, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> Iterator[Fetcher]:
    wired = link(central_settings, hub_store, clock, http=central.client())
    yield wired.fetcher
    wired.close()


def stored(store: Store, chart_id: str, clock: FixedClock) -> Chart:
    with store.read() as db:
        found = get_chart(db, chart_id)
    assert found is not None
    return Chart.load(found.data, author="test", clock=clock)


def messages(store: Store, chart_id: str, clock: FixedClock) -> dict[str, dict[str, Any]]:
    return stored(store, chart_id, clock).view().collections["messages"]


def tasks(store: Store, chart_id: str, clock: FixedClock) -> dict[str, dict[str, Any]]:
    return stored(store, chart_id, clock).view().collections["tasks"]


def searches(central: FakeCentral, resource_type: str) -> list[httpx.URL]:
    return [url for url in central.searches if url.path == f"/fhir/{resource_type}"]


def _queue(store: Store) -> list[str]:
    with store.read() as db:
        return [r[0] for r in db.execute("SELECT doc FROM fhir_outbox ORDER BY seq")]


def _delivered(store: Store) -> None:
    """As if the pusher had delivered everything: the queue is empty again."""
    with store.write() as db:
        db.execute("DELETE FROM fhir_outbox")


# -- advice, replies, answers ---------------------------------------------------------------------


def test_advice_is_merged_into_the_chart_once_even_when_fetched_twice(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    _delivered(hub_store)
    advice = communication(chart, "advice")
    central.store(advice)
    report = fetcher.fetch()
    assert (report.communications, report.merged) == (1, 1)
    found = messages(hub_store, chart.id, clock)
    assert found[advice["id"]] | {"created_at": None} == {
        "direction": "to_chw",
        "channel": "console",
        "author": "Dr Mushi",
        "text": "Give ORS and review tomorrow.",
        "sent_at": "2025-03-01T09:15:00.000+00:00",
        "created_at": None,
    }
    assert _queue(hub_store) == [chart.id]  # queued for the tablets' sake and central's
    heads = stored(hub_store, chart.id, clock).heads
    again = fetcher.fetch()
    assert (again.communications, again.merged) == (1, 0)  # the overlap fetched it again
    assert stored(hub_store, chart.id, clock).heads == heads
    assert len(messages(hub_store, chart.id, clock)) == 1


def test_a_patient_reply_comes_in_as_from_the_patient_in_reply_to_the_reminder(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    reminder = chart.add_message(
        {
            "direction": "to_patient",
            "channel": "sms",
            "author": "amina",
            "text": "Your clinic visit is tomorrow.",
            "sent_at": clock.now(),
        }
    )
    put(hub_store, chart, clock)
    reply = communication(
        chart,
        "patient-reply",
        "1",
        medium="WRITTEN",
        sender=None,
        inResponseTo=[{"reference": f"Communication/{reminder}"}],
    )
    reply["sender"] = {"reference": f"Patient/{chart.id}"}
    central.store(reply)
    fetcher.fetch()
    merged = messages(hub_store, chart.id, clock)[reply["id"]]
    assert (merged["direction"], merged["channel"], merged["author"]) == (
        "from_patient",
        "sms",
        "patient",
    )
    assert merged["in_reply_to"] == reminder


def test_a_reply_to_a_message_the_chart_does_not_hold_is_kept_without_the_link(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    orphan = communication(
        chart, "advice", inResponseTo=[{"reference": f"Communication/{new_id(clock)}"}]
    )
    central.store(orphan)
    fetcher.fetch()
    assert "in_reply_to" not in messages(hub_store, chart.id, clock)[orphan["id"]]


def test_a_referral_answer_accepts_the_referral_it_answers(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    waiting = chart.add_referral({"urgency": "urgent", "reason": "High blood pressure"})
    done = chart.add_referral({"urgency": "routine", "reason": "Review"})
    chart.set_referral_status(done, "completed")
    put(hub_store, chart, clock)
    for referral in (waiting, done):
        central.store(
            communication(
                chart, "referral-answer", basedOn=[{"reference": f"ServiceRequest/{referral}"}]
            )
        )
    report = fetcher.fetch()
    view = stored(hub_store, chart.id, clock).view()
    assert view.item("referrals", waiting)["status"] == "accepted"
    assert view.item("referrals", done)["status"] == "completed"  # never taken back
    assert {m["direction"] for m in view.collections["messages"].values()} == {"to_chw"}
    assert (report.merged, report.accepted) == (2, 1)
    assert view.fields[f"referral.{waiting}.status"] == "accepted"


def test_a_reminder_outcome_is_a_message_to_the_patient(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    outcome = communication(chart, "reminder-outcome", "delivered", medium="PHONE", sender=None)
    central.store(outcome)
    fetcher.fetch()
    merged = messages(hub_store, chart.id, clock)[outcome["id"]]
    assert (merged["direction"], merged["channel"], merged["author"]) == (
        "to_patient",
        "voice",
        "clinician",
    )


def test_what_a_chart_cannot_hold_is_skipped_and_the_rest_merged(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    _delivered(hub_store)
    unknown = new_chart(clock)  # a patient of another hub of the region
    central.store(communication(unknown, "advice"))
    central.store(communication(chart, "advice", id="not-a-uuid7"))
    central.store(communication(chart, "advice", "x" * 4001))  # longer than a message may be
    central.store(communication(chart, "advice", ""))
    good = communication(chart, "advice")
    central.store(good)
    report = fetcher.fetch()
    assert (report.unknown, report.refused, report.merged) == (1, 3, 1)
    assert list(messages(hub_store, chart.id, clock)) == [good["id"]]
    assert _queue(hub_store) == [chart.id]
    with hub_store.read() as db:
        assert get_chart(db, unknown.id) is None


def test_the_hubs_own_messages_coming_back_are_not_duplicated(
    central_settings: Settings,
    hub_store: Store,
    central: FakeCentral,
    clock: FixedClock,
) -> None:
    wired = link(central_settings, hub_store, clock, http=central.client())
    chart = new_chart(clock)
    note = chart.add_message(
        {
            "direction": "from_chw",
            "channel": "app",
            "author": "amina",
            "text": "Mother asks about the clinic date.",
            "sent_at": clock.now(),
        }
    )
    put(hub_store, chart, clock)
    wired.pusher.push_pending()
    assert f"Communication/{note}" in central.resources
    heads = stored(hub_store, chart.id, clock).heads
    report = wired.fetcher.fetch()
    wired.close()
    assert (report.communications, report.merged) == (1, 0)
    assert stored(hub_store, chart.id, clock).heads == heads
    assert _queue(hub_store) == []  # nothing changed, so nothing to push or to send down


# -- call-back tasks -----------------------------------------------------------------------------


def test_a_call_back_task_becomes_one_chart_task_even_when_fetched_twice(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    _delivered(hub_store)
    task = call_back(chart)
    central.store(task)
    report = fetcher.fetch()
    assert (report.tasks, report.tasks_merged, report.refused) == (1, 1, 0)
    assert tasks(hub_store, chart.id, clock)[task["id"]] | {"created_at": None} == {
        "kind": "call_back",
        "description": "Call the patient back: they asked for a call",
        "due": "2025-03-02",
        "status": "requested",
        "author": "hub:kati",
        "created_at": None,
    }
    assert _queue(hub_store) == [chart.id]  # for the tablets' sake
    heads = stored(hub_store, chart.id, clock).heads
    again = fetcher.fetch()
    assert (again.tasks, again.tasks_merged) == (1, 0)  # the overlap fetched it again
    assert stored(hub_store, chart.id, clock).heads == heads
    assert list(tasks(hub_store, chart.id, clock)) == [task["id"]]


def test_the_hub_asks_central_for_call_back_tasks_only(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.store(call_back(chart, "follow_up"))
    report = fetcher.fetch()
    [asked] = searches(central, "Task")
    assert dict(asked.params) == {
        "code": "urn:rural-care:task-kind|call_back",
        "_lastUpdated": "ge1970-01-01T00:00:00+00:00",
        "_sort": "_lastUpdated",
        "_count": "100",
    }
    assert (report.tasks, report.tasks_merged) == (0, 0)
    assert tasks(hub_store, chart.id, clock) == {}


def test_a_task_of_another_kind_is_ignored_where_central_ignores_the_code(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    _delivered(hub_store)
    central.ignores_code = True
    central.store(call_back(chart, "follow_up"))
    central.store(call_back(chart, code={"text": "call back"}))  # no coding at all
    good = call_back(chart)
    central.store(good)
    report = fetcher.fetch()
    assert (report.tasks, report.tasks_merged, report.refused) == (3, 1, 2)
    assert list(tasks(hub_store, chart.id, clock)) == [good["id"]]
    assert _queue(hub_store) == [chart.id]


def test_a_call_back_is_kept_however_little_its_task_says(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    bare = call_back(chart)
    for element in ("description", "restriction", "authoredOn"):
        del bare[element]
    dated = call_back(chart, authoredOn="2025-02-27T22:00:00+03:00")
    del dated["restriction"]
    central.store(bare)
    central.store(dated)
    fetcher.fetch()
    found = tasks(hub_store, chart.id, clock)
    assert (found[bare["id"]]["description"], found[bare["id"]]["due"]) == (
        "Call the patient back",
        clock.now().date().isoformat(),  # due at once
    )
    assert found[dated["id"]]["due"] == "2025-02-27"  # the day it was written, where written


@pytest.mark.parametrize(
    "statuses",  # at central, then in the chart
    [("requested", "requested"), ("completed", "completed"), ("rejected", "cancelled")],
)
def test_a_call_back_keeps_the_status_central_gave_it(
    hub_store: Store,
    fetcher: Fetcher,
    central: FakeCentral,
    clock: FixedClock,
    statuses: tuple[str, str],
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    task = call_back(chart, status=statuses[0])
    central.store(task)
    fetcher.fetch()
    assert tasks(hub_store, chart.id, clock)[task["id"]]["status"] == statuses[1]


def test_call_backs_a_chart_cannot_hold_are_skipped_and_the_rest_merged(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.store(call_back(new_chart(clock)))  # a patient of another hub of the region
    central.store(call_back(chart, id="not-a-uuid7"))
    central.store(call_back(chart, description="x" * 201))  # longer than a task says
    good = call_back(chart)
    central.store(good)
    report = fetcher.fetch()
    assert (report.unknown, report.refused, report.tasks_merged) == (1, 2, 1)
    assert list(tasks(hub_store, chart.id, clock)) == [good["id"]]


def test_a_merged_call_back_is_not_pushed_over_centrals_task(
    central_settings: Settings, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    wired = link(central_settings, hub_store, clock, http=central.client())
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    task = call_back(chart)
    central.store(task)
    wired.fetcher.fetch()
    wired.pusher.push_pending()
    wired.close()
    assert f"Patient/{chart.id}" in central.resources  # the changed chart went up
    assert central.writes[f"Task/{task['id']}"] == 1  # but not the Task central wrote
    assert central.content(f"Task/{task['id']}") == {**task, "meta": {}}
    assert _queue(hub_store) == []


def test_the_task_cursor_moves_on_its_own_and_the_next_fetch_overlaps_it(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.page_size = 2
    newest = datetime(2025, 3, 2, 10, 0, tzinfo=UTC)
    for minutes in range(3):
        central.store(call_back(chart), updated=newest - timedelta(minutes=2 - minutes))
    report = fetcher.fetch()
    assert (report.tasks, report.tasks_merged) == (3, 3)
    assert (report.cursor, report.task_cursor) == (None, newest.isoformat())
    with hub_store.read() as db:
        assert outbox.cursor(db, "Task") == newest
        assert outbox.cursor(db) is None  # the Communications' cursor: nothing came
        assert outbox.status(db).task_cursor == "2025-03-02T10:00:00+00:00"
    fetcher.fetch()
    [*_, last] = searches(central, "Task")
    assert last.params["_lastUpdated"] == "ge2025-03-02T09:55:00+00:00"
    assert [u.params["_lastUpdated"] for u in searches(central, "Communication")] == [
        "ge1970-01-01T00:00:00+00:00"
    ] * 2
    assert len(tasks(hub_store, chart.id, clock)) == 3


# -- the cursor -------------------------------------------------------------------------------------


def test_the_cursor_follows_the_newest_merged_and_the_next_fetch_overlaps_it(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.page_size = 2
    newest = datetime(2025, 3, 2, 10, 0, tzinfo=UTC)
    for minutes in range(5):
        central.store(
            communication(chart, "advice", f"advice {minutes}"),
            updated=newest - timedelta(minutes=4 - minutes),
        )
    report = fetcher.fetch()
    assert (report.pages, report.merged) == (4, 5)  # and the one page of the Task search
    assert report.cursor == newest.isoformat()
    with hub_store.read() as db:
        assert outbox.status(db).cursor == "2025-03-02T10:00:00+00:00"
    assert central.searches[0].params["_lastUpdated"] == "ge1970-01-01T00:00:00+00:00"
    fetcher.fetch()
    [*_, last] = searches(central, "Communication")
    assert last.params["_lastUpdated"] == "ge2025-03-02T09:55:00+00:00"
    assert len(messages(hub_store, chart.id, clock)) == 5


def test_the_cursor_moves_only_when_the_merge_commits(
    central_settings: Settings, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    advice = communication(chart, "advice")
    central.store(advice)
    impatient = Store(central_settings.db, busy_timeout_seconds=1)
    wired = link(central_settings, impatient, clock, http=central.client())
    blocker = sqlite3.connect(central_settings.db, isolation_level=None)

    def lock_while_answering(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            blocker.execute("BEGIN IMMEDIATE")  # the CLI takes the write lock meanwhile
        return central.handle(request)

    wired.central.http = httpx.Client(transport=httpx.MockTransport(lock_while_answering))
    with pytest.raises(Busy):
        wired.fetcher.fetch()
    blocker.execute("ROLLBACK")
    blocker.close()
    with hub_store.read() as db:
        assert outbox.cursor(db) is None
    assert messages(hub_store, chart.id, clock) == {}
    wired.central.http = central.client()
    wired.fetcher.fetch()
    assert list(messages(hub_store, chart.id, clock)) == [advice["id"]]
    with hub_store.read() as db:
        assert outbox.cursor(db) == datetime.fromisoformat(advice_updated(central, advice))
    wired.close()
    impatient.close()


def advice_updated(central: FakeCentral, resource: dict[str, Any]) -> str:
    return str(central.resources[f"Communication/{resource['id']}"]["meta"]["lastUpdated"])


# -- to the tablets ---------------------------------------------------------------------------------


def test_merged_advice_reaches_the_tablet_at_its_next_sync(
    make_tablet: MakeTablet,
    settings: Settings,
    central_key: Any,
    central: FakeCentral,
    clock: FixedClock,
) -> None:
    tablet = make_tablet()
    chart = tablet.new_chart()
    tablet.sync()
    hub_settings = Settings.from_env(
        {
            "SYNC_HUB_DB": str(settings.db),
            "SYNC_HUB_NAME": "kati",
            "SYNC_HUB_CENTRAL_URL": "http://central.test",
            "SYNC_HUB_CENTRAL_KEY": str(central_key),
        }
    )
    store = Store(hub_settings.db)
    wired = link(hub_settings, store, clock, http=central.client())
    advice = communication(chart, "advice", "Refer if the fever lasts two more days.")
    central.store(advice)
    assert wired.fetcher.fetch().merged == 1
    wired.close()
    store.close()
    tablet.sync()
    on_tablet = tablet.chart(chart.id).view().collections["messages"]
    assert on_tablet[advice["id"]]["text"] == "Refer if the fever lasts two more days."
    assert on_tablet[advice["id"]]["author"] == "Dr Mushi"


def test_a_merged_call_back_reaches_the_tablet_at_its_next_sync(
    make_tablet: MakeTablet,
    settings: Settings,
    central_key: Any,
    central: FakeCentral,
    clock: FixedClock,
) -> None:
    tablet = make_tablet()
    chart = tablet.new_chart()
    tablet.sync()
    hub_settings = Settings.from_env(
        {
            "SYNC_HUB_DB": str(settings.db),
            "SYNC_HUB_NAME": "kati",
            "SYNC_HUB_CENTRAL_URL": "http://central.test",
            "SYNC_HUB_CENTRAL_KEY": str(central_key),
        }
    )
    store = Store(hub_settings.db)
    wired = link(hub_settings, store, clock, http=central.client())
    task = call_back(chart)
    central.store(task)
    assert wired.fetcher.fetch().tasks_merged == 1
    wired.close()
    store.close()
    tablet.sync()
    on_tablet = tablet.chart(chart.id).view().item("tasks", task["id"])
    assert (on_tablet["kind"], on_tablet["status"], on_tablet["due"]) == (
        "call_back",
        "requested",
        "2025-03-02",
    )


def test_a_fetch_while_another_process_holds_the_lease_does_nothing(
    hub_store: Store, fetcher: Fetcher, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.store(communication(chart, "advice"))
    assert Lease(hub_store, clock, holder="other").hold()
    report = fetcher.fetch()
    assert report.leased_by == "other"
    assert central.searches == []
    assert messages(hub_store, chart.id, clock) == {}
