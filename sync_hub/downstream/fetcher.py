"""The fetcher: one search per feed since its cursor, page by page, merged into the charts
under the lease (``sync_hub.downstream`` says how)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

from care_record import CareRecordError, Chart, Clock
from care_record.document import section
from care_record.ids import is_uuid7
from sync_hub import outbox
from sync_hub.central import CentralClient
from sync_hub.devices import stamp
from sync_hub.downstream import messages, tasks
from sync_hub.downstream.fhir import last_updated, reference_id, resources
from sync_hub.errors import LeaseLost
from sync_hub.lease import Lease
from sync_hub.store import Store, get_chart, put_chart

log = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PATIENT = "Patient/"


@dataclass(frozen=True)
class Feed:
    """One search the fetcher follows, with a cursor of its own: resources of one type that
    match ``criteria``, about the patient their ``patient`` element names, becoming records of
    one chart collection."""

    resource_type: str
    patient: str
    collection: str
    criteria: Mapping[str, str] = field(default_factory=dict)


COMMUNICATIONS = Feed(outbox.COMMUNICATION, "subject", "messages")
CENTRAL_TASKS = Feed(outbox.TASK, "for", "tasks", tasks.search_criteria())
FEEDS = (COMMUNICATIONS, CENTRAL_TASKS)


@dataclass
class FetchReport:
    pages: int = 0
    communications: int = 0
    tasks: int = 0  # Tasks fetched
    merged: int = 0  # messages added to charts
    tasks_merged: int = 0  # tasks added to charts
    accepted: int = 0  # referrals set to accepted by their answer
    unknown: int = 0  # for a patient this hub does not hold
    refused: int = 0  # not a record a chart can hold (no UUIDv7, no text, a bad value, a kind)
    retries: int = 0  # counted by the caller that retries
    cursor: str | None = None  # of Communications
    task_cursor: str | None = None
    leased_by: str | None = None

    def fetched(self, feed: Feed, count: int) -> None:
        if feed is CENTRAL_TASKS:
            self.tasks += count
        else:
            self.communications += count


def _never() -> bool:
    return False


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass
class Fetcher:
    """Fetches central's Communications and call-back Tasks into the charts of one hub
    database."""

    store: Store
    central: CentralClient
    lease: Lease
    author: str  # who the hub is as a chart writer: "hub:<name>"
    clock: Clock
    overlap: timedelta = OVERLAP

    def fetch(
        self, *, stop: Callable[[], bool] = _never, report: FetchReport | None = None
    ) -> FetchReport:
        """Fetch and merge every page of each feed since its cursor, counting into ``report``.
        Raises CentralUnavailable, CentralMisbehaved, BundleRejected (a search central
        refuses), CredentialsRefused or LeaseLost; pages merged before the failure stay merged
        (and counted), with their feed's cursor after them."""
        report = report if report is not None else FetchReport()
        report.leased_by = None
        if not self.lease.hold():
            report.leased_by = self.lease.held_by()
            return report
        try:
            for feed in FEEDS:
                if not self._follow(feed, stop, report):
                    break
            with self.store.write() as db:
                outbox.fetched(db, at=stamp(self.clock.now()))
                report.cursor = _iso(outbox.cursor(db, COMMUNICATIONS.resource_type))
                report.task_cursor = _iso(outbox.cursor(db, CENTRAL_TASKS.resource_type))
        finally:
            self.lease.release()
        return report

    def _follow(self, feed: Feed, stop: Callable[[], bool], report: FetchReport) -> bool:
        """Merge every page of one feed since its cursor; False if told to stop first."""
        since = self._since(feed)
        for page in self.central.updated_since(feed.resource_type, since, feed.criteria):
            if stop():
                return False
            if not self.lease.hold():
                raise LeaseLost("another hub process took over fetching from central")
            self._merge_page(feed, page, report)
        return True

    def _since(self, feed: Feed) -> datetime:
        with self.store.read() as db:
            cursor = outbox.cursor(db, feed.resource_type)
        return EPOCH if cursor is None else cursor - self.overlap

    # -- one page -----------------------------------------------------------------------------

    def _merge_page(self, feed: Feed, page: dict[str, Any], report: FetchReport) -> None:
        found = resources(page, feed.resource_type)
        report.pages += 1
        report.fetched(feed, len(found))
        waiting = self._new_by_chart(feed, found, report)
        newest = max((t for t in map(last_updated, found) if t is not None), default=None)
        if not waiting and not self._later_than_cursor(feed, newest):
            return  # a page fetched again in the overlap: nothing to write
        with self.store.write() as db:
            for chart_id, new in waiting.items():
                self._merge_chart(db, feed, chart_id, new, report)
            if newest is not None:
                outbox.advance_cursor(db, newest, feed.resource_type)

    def _later_than_cursor(self, feed: Feed, moment: datetime | None) -> bool:
        if moment is None:
            return False
        with self.store.read() as db:
            cursor = outbox.cursor(db, feed.resource_type)
        return cursor is None or moment > cursor

    def _new_by_chart(
        self, feed: Feed, found: Iterable[dict[str, Any]], report: FetchReport
    ) -> dict[str, list[dict[str, Any]]]:
        """The resources not yet in their charts, by chart. Read without the write lock: a page
        fetched again (the overlap) takes no write lock for what it already merged."""
        by_chart: dict[str, list[dict[str, Any]]] = {}
        for resource in found:
            chart_id = reference_id([resource.get(feed.patient)], PATIENT)
            if not is_uuid7(str(resource.get("id"))):
                report.refused += 1
            elif chart_id is None:
                report.unknown += 1
            else:
                by_chart.setdefault(chart_id, []).append(resource)
        waiting: dict[str, list[dict[str, Any]]] = {}
        with self.store.read() as db:
            for chart_id, candidates in by_chart.items():
                held = self._held(db, chart_id, feed.collection)
                if held is None:
                    report.unknown += len(candidates)
                    continue
                new = [r for r in candidates if r["id"] not in held]
                if new:
                    waiting[chart_id] = new
        return waiting

    def _held(self, db: sqlite_utils.Database, chart_id: str, collection: str) -> set[str] | None:
        """IDs of the records of a chart's collection; None if the hub holds no such patient
        chart, or one it cannot read (written by a newer app: it is left for the tablets)."""
        chart = self._load(db, chart_id)
        if chart is None:
            return None
        # The keys of the collection's map alone: the whole view would copy every encounter.
        try:
            return set(chart.document.keys(section(chart.document, collection)))
        except CareRecordError:
            return None

    def _load(self, db: sqlite_utils.Database, chart_id: str) -> Chart | None:
        stored = get_chart(db, chart_id)
        if stored is None or stored.kind != "patient":
            return None
        try:
            return Chart.load(stored.data, author=self.author, clock=self.clock)
        except CareRecordError as exc:
            log.warning("chart %s not merged from central: %s", chart_id, type(exc).__name__)
            return None

    # -- one chart ------------------------------------------------------------------------------

    def _merge_chart(
        self,
        db: sqlite_utils.Database,
        feed: Feed,
        chart_id: str,
        new: list[dict[str, Any]],
        report: FetchReport,
    ) -> None:
        """Add the new records to the chart as it is now, in the write transaction."""
        chart = self._load(db, chart_id)
        if chart is None:
            report.unknown += len(new)
            return
        if feed is CENTRAL_TASKS:
            changed = self._merge_tasks(chart, new, report)
        else:
            changed = self._merge_communications(chart, new, report)
        if changed:
            put_chart(
                db,
                chart_id,
                "patient",
                chart.save(),
                chart.heads,
                device=self.author,
                at=stamp(self.clock.now()),
                document=chart.document,
            )

    def _merge_communications(
        self, chart: Chart, communications: list[dict[str, Any]], report: FetchReport
    ) -> bool:
        """Add the new Communications as messages; whether the chart changed."""
        view = chart.view()
        held = set(view.collections.get("messages", {}))
        referrals = view.collections.get("referrals", {})
        changed = False
        for communication in communications:
            if communication["id"] in held:
                continue
            if not self._add_message(chart, communication, held, report):
                continue
            held.add(communication["id"])
            changed = True
            referral = messages.answered_referral(communication, referrals)
            if referral is not None:
                chart.set_referral_status(referral, "accepted")
                referrals[referral] = {**referrals[referral], "status": "accepted"}
                report.accepted += 1
        return changed

    def _add_message(
        self, chart: Chart, communication: dict[str, Any], held: set[str], report: FetchReport
    ) -> bool:
        message = messages.message(communication, held, now=self.clock.now())
        if message is None:
            report.refused += 1
            return False
        try:
            chart.add_message(message, message_id=communication["id"])
        except CareRecordError as exc:
            # The schema's words name the field and rule (text too long, ...), not the text.
            log.warning("communication %s not merged: %s", communication["id"], exc)
            report.refused += 1
            return False
        report.merged += 1
        return True

    def _merge_tasks(self, chart: Chart, found: list[dict[str, Any]], report: FetchReport) -> bool:
        """Add the new Tasks as tasks of the chart, each with its status; whether it changed."""
        held = set(chart.view().collections.get("tasks", {}))
        changed = False
        for resource in found:
            if resource["id"] not in held and self._add_task(chart, resource, report):
                held.add(resource["id"])
                changed = True
        return changed

    def _add_task(self, chart: Chart, resource: dict[str, Any], report: FetchReport) -> bool:
        task = tasks.task(resource, today=self.clock.now().date())
        if task is None:
            report.refused += 1
            return False
        try:
            chart.add_task(task, task_id=resource["id"])
        except CareRecordError as exc:
            # The schema's words name the field and rule (description too long, ...) only.
            log.warning("task %s not merged: %s", resource["id"], exc)
            report.refused += 1
            return False
        closed = tasks.closed_status(resource)
        if closed is not None:  # done or given up at central before the hub saw it
            chart.set_task_status(resource["id"], closed)
        report.tasks_merged += 1
        return True
