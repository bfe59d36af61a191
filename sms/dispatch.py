"""Sending what is due, at the account's rate, and settling sends whose answer was lost.

``dispatch`` claims due reminders in batches (as many as the shared token bucket allows),
commits the claim, checks each one once more (opt-out, quiet hours in the patient's zone),
sends it through the ``Sender`` and records what Twilio said in one transaction per batch. If
the process dies after Twilio accepted a message and before that commit, the row stays
``sending``: Twilio's status callback names the reminder and settles it, and ``reconcile``
asks Twilio about any row whose lease ran out without one.

Twilio busy (429, 5xx, no connection): the reminder is planned again after a back-off that
doubles each time (or Twilio's Retry-After, if longer), and fails after ``max_attempts``.
Twilio refused (any other 4xx): it fails at once; retrying would not help.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sms import outbox, planner
from sms.config import SmsConfig
from sms.database import Database, Session
from sms.errors import TwilioBusy, TwilioRefused, TwilioUnknown
from sms.model import OutboxRow, State
from sms.outcomes import outcome_for
from sms.records import Records
from sms.sender import Sender
from sms.voice import reminder_twiml

MAX_BACKOFF = timedelta(hours=1)
# A send found at Twilio may have been created a little before its claim was recorded.
FIND_SLACK = timedelta(minutes=2)


@dataclass
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    deferred: int = 0  # in quiet hours now: moved to their end
    unknown: int = 0  # Twilio's answer was lost: left for the callback or the look-up
    lost: int = 0  # the claim's lease ran out before the row was sent: not sent by this run


@dataclass
class _Results:
    sent: list[tuple[str, str]] = field(default_factory=list)
    retries: list[tuple[OutboxRow, datetime, str]] = field(default_factory=list)
    settled: list[tuple[OutboxRow, State, str]] = field(default_factory=list)  # row, state, why
    unknown: int = 0  # sent, but Twilio's answer was lost


@dataclass(frozen=True)
class Dispatcher:
    database: Database
    records: Records
    sender: Sender
    config: SmsConfig
    now: Callable[[], datetime]
    wait: Callable[[float], None]

    def dispatch(self, *, max_seconds: float = 30.0) -> DispatchReport:
        """Send what is due until nothing is, or for ``max_seconds`` at most."""
        report = DispatchReport()
        started = self.now()
        while (self.now() - started).total_seconds() < max_seconds:
            claim = f"{self.config.worker}:{secrets.token_hex(6)}"
            granted, shortfall, rows = self._claim(claim)
            if granted == 0:
                self.wait(shortfall)
                continue
            if not rows:
                break
            report.claimed += len(rows)
            self._record(self._send_all(rows, claim, report), claim, report)
        return report

    def _claim(self, claim: str) -> tuple[int, float, list[OutboxRow]]:
        """Tokens granted, seconds to wait if none were, and the rows claimed as ``claim``
        (a name no other claim has, so that only this one can renew or release them)."""
        now = self.now()
        account = self.config.account_sid
        with self.database.write() as session:
            granted, shortfall = outbox.take_tokens(
                session,
                account,
                want=self.config.batch,
                per_second=self.config.per_second,
                now=now,
            )
            rows = outbox.claim_due(
                session,
                now=now,
                limit=granted,
                worker=claim,
                lease_seconds=self.config.lease_seconds,
            )
            outbox.give_back_tokens(session, account, granted - len(rows))
        return granted, shortfall, rows

    def _send_all(self, rows: Sequence[OutboxRow], claim: str, report: DispatchReport) -> _Results:
        results = _Results()
        with self.database.read() as session:
            opted = outbox.opted_out(session, [row.phone for row in rows])
        held = {row.reminder_id for row in rows}
        renewed = self.now()
        for index, row in enumerate(rows):
            now = self.now()
            # A slow batch must not outlive its lease: once a third of it has gone, the rest
            # is renewed, and a row whose lease ran out (reconciled, maybe sent by another
            # process since) is left alone.
            if (now - renewed).total_seconds() > self.config.lease_seconds / 3:
                held = self._renew([r.reminder_id for r in rows[index:]], claim, now)
                renewed = now
            if row.reminder_id not in held:
                report.lost += 1
            elif row.phone in opted:
                results.settled.append((row, "cancelled", "the patient opted out (STOP)"))
            elif planner.in_quiet_hours(now, row.zone, self.config.policy):
                at = planner.next_allowed(now, row.zone, self.config.policy)
                results.retries.append((row, at, "quiet hours"))
                report.deferred += 1
            else:
                self._send_one(row, results)
        return results

    def _renew(self, reminder_ids: list[str], claim: str, now: datetime) -> set[str]:
        with self.database.write() as session:
            return outbox.renew(
                session,
                reminder_ids,
                claim=claim,
                now=now,
                lease_seconds=self.config.lease_seconds,
            )

    def _send_one(self, row: OutboxRow, results: _Results) -> None:
        callback = self.config.status_url(row.reminder_id)
        try:
            if row.channel == "sms":
                sid = self.sender.send_sms(to=row.phone, body=row.body, status_callback=callback)
            else:
                twiml = reminder_twiml(row, self.config)
                sid = self.sender.place_call(to=row.phone, twiml=twiml, status_callback=callback)
        except TwilioBusy as busy:
            self._busy(row, busy, results)
        except TwilioUnknown:
            # Twilio may hold it: the row stays sending, and its status callback or, after
            # the lease, a look-up at Twilio settles it. Sending again could send it twice.
            results.unknown += 1
        except TwilioRefused as refused:
            results.settled.append((row, "failed", str(refused)))
        else:
            results.sent.append((row.reminder_id, sid))

    def _busy(self, row: OutboxRow, busy: TwilioBusy, results: _Results) -> None:
        if row.attempts >= self.config.max_attempts:
            why = f"Twilio was busy or out of reach {row.attempts} times: {busy}"
            results.settled.append((row, "failed", why))
            return
        backoff = timedelta(seconds=self.config.retry_seconds * 2 ** (row.attempts - 1))
        wait = max(min(backoff, MAX_BACKOFF), timedelta(seconds=busy.retry_after or 0))
        results.retries.append((row, self.now() + wait, str(busy)))

    def _record(self, results: _Results, claim: str, report: DispatchReport) -> None:
        now = self.now()
        with self.database.write() as session:
            outbox.mark_sent(session, results.sent, now)
            for row, at, why in results.retries:
                outbox.retry_later(session, row.reminder_id, at=at, error=why, now=now, claim=claim)
            for row, state, why in results.settled:
                settle_and_tell(session, self.records, row.reminder_id, state, why=why, now=now)
        report.sent += len(results.sent)
        report.unknown += results.unknown
        report.retried += sum(1 for _row, _at, why in results.retries if why != "quiet hours")
        report.failed += sum(1 for _row, state, _why in results.settled if state == "failed")
        report.cancelled += sum(1 for _row, state, _w in results.settled if state == "cancelled")

    def reconcile(self) -> int:
        """Settle rows left ``sending`` past their lease: sent if Twilio holds the message
        or call, else planned again. Returns how many rows it settled."""
        now = self.now()
        with self.database.read() as session:
            rows = outbox.stale(session, now)
        for row in rows:
            try:
                sid = self._find_at_twilio(row)
            except TwilioBusy:
                continue  # Twilio cannot say now: the row stays sending until the next pass
            with self.database.write() as session:
                if sid is not None:
                    outbox.mark_sent(session, [(row.reminder_id, sid)], now)
                else:
                    why = "its answer from Twilio was lost; Twilio holds no such message"
                    outbox.retry_later(session, row.reminder_id, at=now, error=why, now=now)
        return len(rows)

    def _find_at_twilio(self, row: OutboxRow) -> str | None:
        since = row.updated_at - FIND_SLACK
        if row.channel == "sms":
            return self.sender.find_message(to=row.phone, body=row.body, since=since)
        with self.database.read() as session:
            for sid in self.sender.find_calls(to=row.phone, since=since):
                if outbox.by_sid(session, sid) is None:
                    return sid
        return None


def settle_and_tell(
    session: Session, records: Records, reminder_id: str, state: State, *, why: str, now: datetime
) -> bool:
    """Move a reminder to a final state and, if it moved, record the outcome as a
    Communication for the patient's chart. False if it had already moved (a replay)."""
    row = outbox.settle(session, reminder_id, state, now=now, error=why)
    if row is None:
        return False
    records.write(session, [outcome_for(row, why, now)])
    return True
