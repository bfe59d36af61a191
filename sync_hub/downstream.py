"""Downstream: what clinicians and patients wrote at central, merged into the charts.

Clinician advice, referral answers, patient replies and reminder outcomes are Communications
at central (docs/fhir.md, "Naming"). The fetcher asks for those updated since its cursor,
less an overlap (central's commit order and its ``lastUpdated`` order can differ a little), and
adds each one to the chart of its subject as a message whose ID is the Communication's ID: a
Communication fetched twice, or one the hub pushed itself, is already in the chart and changes
nothing. Charts are read first and written only when something is new, each in a write
transaction through ``store.put_chart``, so the change goes to the tablets that hold the chart
(and is queued for central too). The cursor moves to the newest ``lastUpdated``
of a page in the transaction that merged the page.

The mapping of categories and media is the inverse of the projection's
(``sync_hub.projection.messages``), so a message pushed by the hub comes back as itself. A
referral answer comes down as advice to the CHW (to_chw) that also accepts its referral.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

from care_record import CareRecordError, Chart, Clock
from care_record.document import section
from care_record.ids import is_uuid7
from sync_hub import outbox
from sync_hub.central import CentralClient
from sync_hub.devices import stamp
from sync_hub.errors import LeaseLost
from sync_hub.lease import Lease
from sync_hub.projection.fhir import MESSAGE_CATEGORY, V3_PARTICIPATION_MODE
from sync_hub.projection.messages import CATEGORIES, MEDIA
from sync_hub.store import Store, get_chart, put_chart

log = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REFERRAL_ANSWER = "referral-answer"

# Category -> direction: the projection's table turned round, and a referral answer, which is
# advice to the CHW about one referral.
DIRECTIONS = {category: direction for direction, category in CATEGORIES.items()}
DIRECTIONS[REFERRAL_ANSWER] = "to_chw"
# Medium code -> channel: the first channel the projection writes with that code (reversed,
# so that the first one is written last and wins).
CHANNELS = {code: channel for channel, (code, _display) in reversed(MEDIA.items())}
# A Communication without a medium: how such a message usually travels.
USUAL_CHANNELS = {
    "to_chw": "console",
    "from_chw": "app",
    "from_patient": "sms",
    "to_patient": "sms",
}
USUAL_AUTHORS = {"from_patient": "patient"}
SERVICE_REQUEST = "ServiceRequest/"
PATIENT = "Patient/"
COMMUNICATION = "Communication/"


@dataclass
class FetchReport:
    pages: int = 0
    communications: int = 0
    merged: int = 0  # messages added to charts
    accepted: int = 0  # referrals set to accepted by their answer
    unknown: int = 0  # for a patient this hub does not hold
    refused: int = 0  # not a message a chart can hold (no UUIDv7, no text, a bad value)
    retries: int = 0  # counted by the caller that retries
    cursor: str | None = None
    leased_by: str | None = None


def _never() -> bool:
    return False


@dataclass
class Fetcher:
    """Fetches central's Communications into the charts of one hub database."""

    store: Store
    central: CentralClient
    lease: Lease
    author: str  # who the hub is as a chart writer: "hub:<name>"
    clock: Clock
    overlap: timedelta = OVERLAP

    def fetch(
        self, *, stop: Callable[[], bool] = _never, report: FetchReport | None = None
    ) -> FetchReport:
        """Fetch and merge every page since the cursor, counting into ``report``. Raises
        CentralUnavailable, CentralMisbehaved, BundleRejected (a search central refuses),
        CredentialsRefused or LeaseLost; pages merged before the failure stay merged (and
        counted), with the cursor after them."""
        report = report if report is not None else FetchReport()
        report.leased_by = None
        if not self.lease.hold():
            report.leased_by = self.lease.held_by()
            return report
        try:
            for page in self.central.communications_since(self._since()):
                if stop():
                    break
                if not self.lease.hold():
                    raise LeaseLost("another hub process took over fetching from central")
                self._merge_page(page, report)
            with self.store.write() as db:
                outbox.fetched(db, at=stamp(self.clock.now()))
                cursor = outbox.cursor(db)
            report.cursor = None if cursor is None else cursor.isoformat()
        finally:
            self.lease.release()
        return report

    def _since(self) -> datetime:
        with self.store.read() as db:
            cursor = outbox.cursor(db)
        return EPOCH if cursor is None else cursor - self.overlap

    # -- one page -----------------------------------------------------------------------------

    def _merge_page(self, page: dict[str, Any], report: FetchReport) -> None:
        found = _communications(page)
        report.pages += 1
        report.communications += len(found)
        waiting = self._new_by_chart(found, report)
        newest = max((t for t in map(_last_updated, found) if t is not None), default=None)
        if not waiting and not self._later_than_cursor(newest):
            return  # a page fetched again in the overlap: nothing to write
        with self.store.write() as db:
            for chart_id, communications in waiting.items():
                self._merge_chart(db, chart_id, communications, report)
            if newest is not None:
                outbox.advance_cursor(db, newest)

    def _later_than_cursor(self, moment: datetime | None) -> bool:
        if moment is None:
            return False
        with self.store.read() as db:
            cursor = outbox.cursor(db)
        return cursor is None or moment > cursor

    def _new_by_chart(
        self, found: Iterable[dict[str, Any]], report: FetchReport
    ) -> dict[str, list[dict[str, Any]]]:
        """The Communications not yet in their charts, by chart. Read without the write lock:
        a page fetched again (the overlap) takes no write lock for what it already merged."""
        by_chart: dict[str, list[dict[str, Any]]] = {}
        for communication in found:
            chart_id = _subject(communication)
            if not is_uuid7(str(communication.get("id"))):
                report.refused += 1
            elif chart_id is None:
                report.unknown += 1
            else:
                by_chart.setdefault(chart_id, []).append(communication)
        waiting: dict[str, list[dict[str, Any]]] = {}
        with self.store.read() as db:
            for chart_id, communications in by_chart.items():
                held = self._messages_held(db, chart_id)
                if held is None:
                    report.unknown += len(communications)
                    continue
                new = [c for c in communications if c["id"] not in held]
                if new:
                    waiting[chart_id] = new
        return waiting

    def _messages_held(self, db: sqlite_utils.Database, chart_id: str) -> set[str] | None:
        """IDs of the chart's messages; None if the hub holds no such patient chart, or one
        it cannot read (written by a newer app: it is left for the tablets)."""
        chart = self._load(db, chart_id)
        if chart is None:
            return None
        # The keys of the messages map alone: the whole view would copy every encounter.
        try:
            return set(chart.document.keys(section(chart.document, "messages")))
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
        chart_id: str,
        communications: list[dict[str, Any]],
        report: FetchReport,
    ) -> None:
        """Add the new messages to the chart as it is now, in the write transaction."""
        chart = self._load(db, chart_id)
        if chart is None:
            report.unknown += len(communications)
            return
        view = chart.view()
        messages = set(view.collections.get("messages", {}))
        referrals = view.collections.get("referrals", {})
        changed = False
        for communication in communications:
            if communication["id"] in messages:
                continue
            if not self._add(chart, communication, messages, report):
                continue
            messages.add(communication["id"])
            changed = True
            referral = _answered_referral(communication, referrals)
            if referral is not None:
                chart.set_referral_status(referral, "accepted")
                referrals[referral] = {**referrals[referral], "status": "accepted"}
                report.accepted += 1
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

    def _add(
        self,
        chart: Chart,
        communication: dict[str, Any],
        messages: set[str],
        report: FetchReport,
    ) -> bool:
        message = self._message(communication, messages)
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

    def _message(self, communication: dict[str, Any], messages: set[str]) -> dict[str, Any] | None:
        """The chart message a Communication is, or None if it is not one a chart holds."""
        direction = DIRECTIONS.get(_category(communication) or "")
        text = _text(communication)
        if direction is None or text is None:
            return None
        reply_to = _reference_id(communication.get("inResponseTo"), COMMUNICATION)
        message: dict[str, Any] = {
            "direction": direction,
            "channel": _channel(communication) or USUAL_CHANNELS[direction],
            "author": _sender(communication) or USUAL_AUTHORS.get(direction, "clinician"),
            "text": text,
            "sent_at": _sent_at(communication) or self.clock.now(),
        }
        if reply_to in messages:
            message["in_reply_to"] = reply_to
        return message


# -- reading a Communication ------------------------------------------------------------------------


def _communications(page: dict[str, Any]) -> list[dict[str, Any]]:
    entries = page.get("entry") or []
    found = [e.get("resource") for e in entries if isinstance(e, dict)]
    return [r for r in found if isinstance(r, dict) and r.get("resourceType") == "Communication"]


def _subject(communication: dict[str, Any]) -> str | None:
    return _reference_id([communication.get("subject")], PATIENT)


def _reference_id(references: object, prefix: str) -> str | None:
    """The ID of the first ``Type/id`` reference of that type in a list of references."""
    if not isinstance(references, list):
        return None
    for found in references:
        reference = found.get("reference") if isinstance(found, dict) else None
        if isinstance(reference, str) and reference.startswith(prefix):
            return reference.removeprefix(prefix)
    return None


def _category(communication: dict[str, Any]) -> str | None:
    for concept in communication.get("category") or []:
        for coding in concept.get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(coding, dict) and coding.get("system") == MESSAGE_CATEGORY:
                code = coding.get("code")
                return code if isinstance(code, str) else None
    return None


def _channel(communication: dict[str, Any]) -> str | None:
    for concept in communication.get("medium") or []:
        for coding in concept.get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(coding, dict) and coding.get("system") == V3_PARTICIPATION_MODE:
                return CHANNELS.get(str(coding.get("code")))
    return None


def _text(communication: dict[str, Any]) -> str | None:
    payload = communication.get("payload") or []
    first = payload[0] if isinstance(payload, list) and payload else None
    text = first.get("contentString") if isinstance(first, dict) else None
    return text if isinstance(text, str) and text.strip() else None


def _sender(communication: dict[str, Any]) -> str | None:
    sender = communication.get("sender")
    display = sender.get("display") if isinstance(sender, dict) else None
    return display if isinstance(display, str) and display.strip() else None


def _sent_at(communication: dict[str, Any]) -> datetime | None:
    """When it was sent: ``sent`` if it is an instant with a zone, else ``meta.lastUpdated``."""
    return _instant(communication.get("sent")) or _last_updated(communication)


def _last_updated(resource: dict[str, Any]) -> datetime | None:
    meta = resource.get("meta")
    return _instant(meta.get("lastUpdated") if isinstance(meta, dict) else None)


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def _answered_referral(
    communication: dict[str, Any], referrals: dict[str, dict[str, Any]]
) -> str | None:
    """The chart's referral a referral answer is based on, if it still waits for one."""
    if _category(communication) != REFERRAL_ANSWER:
        return None
    referral = _reference_id(communication.get("basedOn"), SERVICE_REQUEST)
    if referral is None or referrals.get(referral, {}).get("status") != "requested":
        return None
    return referral
