"""The reminder service as central mounts it: one object holding the collaborators (central's
database and FHIR store, the Twilio sender, the clock) and what can be asked of it: the
scheduler's periodic work, the webhooks, and the operator's commands."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sms import outbox, planning
from sms.config import SmsConfig
from sms.database import Database
from sms.dispatch import Dispatcher, DispatchReport
from sms.errors import BadPhone, NotFound
from sms.model import OutboxRow, State
from sms.planning import PlanReport
from sms.records import Records
from sms.scheduler import Task
from sms.sender import Sender
from sms.webhooks import Webhooks

_E164 = "+0123456789"


@dataclass(frozen=True)
class ReminderService:
    database: Database
    records: Records
    sender: Sender
    config: SmsConfig
    now: Callable[[], datetime]
    wait: Callable[[float], None] = field(default=time.sleep)

    @property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(
            self.database, self.records, self.sender, self.config, self.now, self.wait
        )

    @property
    def webhooks(self) -> Webhooks:
        return Webhooks(self.records, self.config)

    # -- the scheduler's work ---------------------------------------------------------------

    def plan(self) -> PlanReport:
        return planning.plan_changes(self.database, self.records, self.config, self.now())

    def dispatch(self, *, max_seconds: float = 30.0) -> DispatchReport:
        return self.dispatcher.dispatch(max_seconds=max_seconds)

    def reconcile(self) -> int:
        return self.dispatcher.reconcile()

    def tasks(
        self, *, plan_seconds: float, dispatch_seconds: float, reconcile_seconds: float
    ) -> dict[str, Task]:
        return {
            "plan": Task(self.plan, plan_seconds),
            # A dispatch run stops before the next one is due, so runs never pile up.
            "dispatch": Task(
                lambda: self.dispatch(max_seconds=max(dispatch_seconds * 0.8, 1.0)),
                dispatch_seconds,
            ),
            "reconcile": Task(self.reconcile, reconcile_seconds),
        }

    # -- the operator's commands ------------------------------------------------------------

    def counts(self) -> dict[State, int]:
        with self.database.read() as session:
            return outbox.counts(session)

    def listing(self, *, state: State | None = None, limit: int = 50) -> list[OutboxRow]:
        with self.database.read() as session:
            return outbox.listing(session, state=state, limit=limit)

    def resend(self, reminder_id: str) -> OutboxRow:
        """Send a reminder now (or when quiet hours end): one planned for later, or again one
        that failed, was cancelled or went out. Raises NotFound."""
        now = self.now()
        with self.database.write() as session:
            row = outbox.get(session, reminder_id)
            if row is None:
                raise NotFound("no reminder with that ID is in the outbox")
            if not outbox.replan(session, reminder_id, at=now, now=now):
                raise NotFound(
                    f"the reminder is {row.state}"
                    + (" and has no phone number" if not row.phone else "")
                    + ": it cannot be sent again now"
                )
            found = outbox.get(session, reminder_id)
        assert found is not None  # noqa: S101 - the row was just updated in this transaction
        return found

    def opt_out(self, phone: str) -> int:
        """Stop every reminder to ``phone`` (as if it wrote STOP). Returns how many planned
        reminders were cancelled. Raises BadPhone."""
        _check_phone(phone)
        now = self.now()
        why = "the patient opted out (asked an operator)"
        with self.database.write() as session:
            cancelled = self.webhooks.opt_out(session, phone, "operator", why, now)
        return len(cancelled)


def _check_phone(phone: str) -> None:
    digits = phone[1:]
    if not (phone.startswith("+") and digits.isdigit() and 8 <= len(digits) <= 15):
        raise BadPhone("a phone number is written +<country code><number>, e.g. +255712345678")
