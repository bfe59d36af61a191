"""``python -m central sms ...``: the reminder service for an operator, without the console.

    sms status           how many reminders are in each state, and how SMS is set up
    sms outbox           the latest reminders (--state to pick one state)
    sms resend ID        send a reminder now: one planned for later, or again one that
                         failed, was cancelled or went out
    sms opt-out PHONE    stop every reminder to a phone, as if the patient wrote STOP

The outbox shows phone numbers masked: an operator finds a reminder by its ID or patient ID.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any, cast

from central import reminders
from central.clock import Clock
from central.database import Database
from central.settings import Settings
from sms import ReminderService
from sms.errors import SmsError
from sms.model import STATES, OutboxRow, State

if TYPE_CHECKING:
    from central.cli import Io


def add_parser(commands: Any) -> None:
    sms = commands.add_parser("sms", help="the SMS and voice reminders: state, outbox, resend")
    actions = sms.add_subparsers(dest="sms_command", required=True, metavar="ACTION")
    actions.add_parser("status", help="reminders in each state, and how SMS is set up")
    listing = actions.add_parser("outbox", help="the latest reminders, newest first")
    listing.add_argument("--state", choices=STATES, help="only reminders in this state")
    listing.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    resend = actions.add_parser("resend", help="send a reminder now (again, if it went out)")
    resend.add_argument("reminder_id", metavar="ID", help="the reminder's ID (see outbox)")
    opt_out = actions.add_parser("opt-out", help="stop every reminder to a phone number")
    opt_out.add_argument("phone", metavar="PHONE", help="in international form, +255712345678")


def run(
    args: argparse.Namespace, database: Database, settings: Settings, clock: Clock, io: Io
) -> int:
    service = reminders.reminder_service(settings, database, clock)
    try:
        return _ACTIONS[args.sms_command](args, service, settings, io)
    except SmsError as exc:
        io.note(f"cannot do that: {exc}")
        return 1


def _outbox(args: argparse.Namespace, service: ReminderService, _s: Settings, io: Io) -> int:
    rows = service.listing(state=cast(State | None, args.state), limit=args.limit)
    for row in rows:
        io.say(describe(row))
    io.note(f"{len(rows)} reminders")
    return 0


def _resend(args: argparse.Namespace, service: ReminderService, _s: Settings, io: Io) -> int:
    row = service.resend(args.reminder_id)
    io.say(f"reminder {row.reminder_id} is planned again: it goes out {_when(row)}")
    return 0


def _opt_out(args: argparse.Namespace, service: ReminderService, _s: Settings, io: Io) -> int:
    cancelled = service.opt_out(args.phone)
    io.say(
        f"{mask(args.phone)} opted out: {cancelled} planned reminders cancelled; "
        "the patient can write START to receive them again"
    )
    return 0


def _status(_args: argparse.Namespace, service: ReminderService, settings: Settings, io: Io) -> int:
    counts = service.counts()
    where = settings.twilio_api_url or "Twilio (api.twilio.com)"
    io.say(f"SMS is {settings.sms}; scheduler {settings.sms_scheduler}; sending through {where}")
    io.say(
        f"rate {settings.sms_per_second} per second; quiet hours {settings.sms_quiet_hours} "
        "in each patient's own time zone"
    )
    for state in STATES:
        io.say(f"  {state:<10} {counts.get(state, 0)}")
    return 0


_ACTIONS: dict[str, Callable[[argparse.Namespace, ReminderService, Settings, Io], int]] = {
    "status": _status,
    "outbox": _outbox,
    "resend": _resend,
    "opt-out": _opt_out,
}
ACTIONS = tuple(_ACTIONS)


def describe(row: OutboxRow) -> str:
    parts = [
        row.reminder_id,
        row.state,
        row.channel,
        row.template,
        f"patient {row.patient_id}",
        f"to {mask(row.phone)}" if row.phone else "no phone",
        f"at {row.send_at.astimezone(UTC):%Y-%m-%d %H:%M}Z",
        f"attempts {row.attempts}",
    ]
    if row.error:
        parts.append(f"({row.error})")
    return "  ".join(parts)


def mask(phone: str) -> str:
    """+255712345678 -> +2557******78: enough to tell numbers apart, not to call one."""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:5] + "*" * (len(phone) - 7) + phone[-2:]


def _when(row: OutboxRow) -> str:
    return f"at {row.send_at.astimezone(UTC):%Y-%m-%d %H:%M}Z or when quiet hours end"
