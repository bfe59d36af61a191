"""``python -m central sms ...`` on a real database (both backends): what an operator sees and
what each command changes."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from central.cli import main
from central.clock import FixedClock
from central.database import Database
from sms import outbox
from sms.model import Send
from sms.outbox import Planned
from tests.central.test_cli import url_of

NOW = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
PHONE = "+255712345678"


def run(database: Database, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        list(argv),
        env={"CENTRAL_DATABASE_URL": url_of(database)},
        clock=FixedClock(NOW),
        stdout=out,
        stderr=err,
    )
    return code, out.getvalue(), err.getvalue()


def plan(database: Database, reminder_id: str, *, days: int, phone: str = PHONE) -> None:
    send = Send("sms", phone, "sw", NOW + timedelta(days=days))
    planned = Planned(reminder_id, "patient-1", "followup_due", send, "UTC", "Habari Amina")
    with database.write() as session:
        outbox.record_plans(session, [planned], NOW)


def state(database: Database, reminder_id: str) -> outbox.OutboxRow:
    with database.read() as session:
        found = outbox.get(session, reminder_id)
    assert found is not None
    return found


def test_status_counts_each_state_and_says_how_sms_is_set_up(database: Database) -> None:
    plan(database, "r-1", days=2)
    plan(database, "r-2", days=3)
    code, out, _ = run(database, "sms", "status")
    assert code == 0
    assert "SMS is off" in out
    assert "planned    2" in out


def test_outbox_lists_reminders_with_masked_phones(database: Database) -> None:
    plan(database, "r-1", days=2)
    code, out, err = run(database, "sms", "outbox", "--state", "planned")
    assert code == 0
    assert "r-1  planned  sms  followup_due  patient patient-1  to +2557******78" in out
    assert PHONE not in out
    assert "Habari" not in out
    assert err.strip() == "1 reminders"


def test_resend_sends_a_later_reminder_now(database: Database) -> None:
    plan(database, "r-1", days=10)
    code, out, _ = run(database, "sms", "resend", "r-1")
    assert code == 0
    assert "planned again" in out
    assert state(database, "r-1").send_at == NOW


def test_resend_of_an_unknown_reminder_says_so_and_changes_nothing(database: Database) -> None:
    plan(database, "r-1", days=10)
    code, _, err = run(database, "sms", "resend", "no-such-reminder")
    assert code == 1
    assert "no reminder with that ID" in err
    assert state(database, "r-1").send_at == NOW + timedelta(days=10)


def test_opt_out_cancels_what_is_planned_for_that_phone_only(database: Database) -> None:
    plan(database, "r-1", days=2)
    plan(database, "r-2", days=2, phone="+255700000009")
    code, out, _ = run(database, "sms", "opt-out", PHONE)
    assert code == 0
    assert "1 planned reminders cancelled" in out
    assert state(database, "r-1").state == "cancelled"
    assert state(database, "r-2").state == "planned"


@pytest.mark.parametrize("phone", ["0712345678", "+2557", "+25571234567x", ""])
def test_opt_out_refuses_a_number_not_in_international_form(database: Database, phone: str) -> None:
    plan(database, "r-1", days=2)
    code, _, err = run(database, "sms", "opt-out", phone)
    assert code == 1
    assert "+<country code><number>" in err
    assert state(database, "r-1").state == "planned"
