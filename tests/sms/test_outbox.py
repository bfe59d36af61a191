"""The outbox's moves on both backends: what each may change, and what it must leave alone."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from central.database import Database
from sms import outbox
from sms.model import Send
from sms.outbox import Planned

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
PHONE = "+255712345678"


def planned(reminder_id: str, *, at: datetime = NOW, phone: str = PHONE) -> Planned:
    return Planned(
        reminder_id, "p-1", "followup_due", Send("sms", phone, "sw", at), "UTC", "Habari"
    )


def cancelled(reminder_id: str, reason: str = "no consent to reminders") -> Planned:
    return Planned(reminder_id, "p-1", "followup_due", None, "UTC", reason=reason)


def record(database: Database, *plans: Planned) -> outbox.PlanCounts:
    with database.write() as session:
        return outbox.record_plans(session, plans, NOW)


def row(database: Database, reminder_id: str) -> outbox.OutboxRow:
    with database.read() as session:
        found = outbox.get(session, reminder_id)
    assert found is not None
    return found


def claim(database: Database, limit: int = 10, worker: str = "w1") -> list[str]:
    with database.write() as session:
        rows = outbox.claim_due(session, now=NOW, limit=limit, worker=worker, lease_seconds=60)
    return [r.reminder_id for r in rows]


def test_planning_twice_the_same_changes_nothing(database: Database) -> None:
    first = record(database, planned("r1"), cancelled("r2"))
    again = record(database, planned("r1"), cancelled("r2"))
    assert (first.planned, first.cancelled, first.unchanged) == (1, 1, 0)
    assert (again.planned, again.updated, again.cancelled, again.unchanged) == (0, 0, 0, 2)


def test_a_new_decision_updates_a_planned_row_but_never_one_that_went_out(
    database: Database,
) -> None:
    record(database, planned("r1"), planned("r2"))
    claim(database, limit=1)  # r1 is sending now
    later = NOW + timedelta(hours=2)
    counts = record(database, planned("r1", at=later), planned("r2", at=later))
    assert counts.updated == 1
    assert counts.unchanged == 1
    assert row(database, "r1").state == "sending"
    assert row(database, "r2").send_at == later


def test_a_cancelled_reminder_is_planned_again_when_the_decision_changes(
    database: Database,
) -> None:
    record(database, cancelled("r1"))
    record(database, planned("r1"))
    assert row(database, "r1").state == "planned"
    assert row(database, "r1").error is None


def test_only_due_rows_are_claimed_once_oldest_first(database: Database) -> None:
    record(
        database,
        planned("late", at=NOW + timedelta(minutes=1)),
        planned("b", at=NOW - timedelta(minutes=1)),
        planned("a", at=NOW - timedelta(minutes=2)),
    )
    assert claim(database) == ["a", "b"]
    assert claim(database) == []
    assert row(database, "a").attempts == 1


def test_two_claimers_at_once_never_share_a_row(database: Database) -> None:
    record(database, *(planned(f"r{i:03}") for i in range(200)))
    taken: list[list[str]] = []
    start = threading.Barrier(4)

    def claimer(name: str) -> None:
        start.wait()
        for _ in range(10):
            taken.append(claim(database, limit=7, worker=name))

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [reminder for batch in taken for reminder in batch]
    assert len(every) == len(set(every)) == 200


def test_settle_moves_forward_only_and_a_replay_changes_nothing(database: Database) -> None:
    record(database, planned("r1"))
    claim(database)
    with database.write() as session:
        outbox.mark_sent(session, [("r1", "SM1")], NOW)
        assert outbox.settle(session, "r1", "delivered", now=NOW) is not None
        assert outbox.settle(session, "r1", "delivered", now=NOW) is None
        assert outbox.settle(session, "r1", "failed", now=NOW) is None
        assert outbox.settle(session, "r1", "cancelled", now=NOW) is None
        outbox.mark_sent(session, [("r1", "SM2")], NOW)
    found = row(database, "r1")
    assert found.state == "delivered"
    assert found.twilio_sid == "SM1"


def test_a_callback_before_our_commit_is_kept(database: Database) -> None:
    record(database, planned("r1"))
    claim(database)
    with database.write() as session:
        outbox.settle(session, "r1", "delivered", now=NOW, sid="SM1")
        outbox.mark_sent(session, [("r1", "SM1")], NOW)
    assert row(database, "r1").state == "delivered"


def test_stale_rows_are_those_whose_lease_ran_out(database: Database) -> None:
    record(database, planned("r1"))
    claim(database)
    with database.read() as session:
        assert outbox.stale(session, NOW + timedelta(seconds=59)) == []
        [stale] = outbox.stale(session, NOW + timedelta(seconds=61))
    assert stale.reminder_id == "r1"


def test_an_opt_out_cancels_planned_rows_of_that_phone_only(database: Database) -> None:
    record(database, planned("r1"), planned("r2", phone="+255700000002"), planned("r3"))
    claim(database, limit=1)  # r1 is already sending: it is not cancelled under its feet
    with database.write() as session:
        assert outbox.opt_out(session, PHONE, "STOP", NOW)
        assert not outbox.opt_out(session, PHONE, "STOP", NOW)
        assert outbox.cancel_for_phone(session, PHONE, "opted out", NOW) == ["r3"]
        assert outbox.opted_out(session, [PHONE, "+255700000002"]) == {PHONE}
    assert row(database, "r2").state == "planned"


def test_an_operator_resend_is_kept_by_planning_but_a_cancellation_wins(
    database: Database,
) -> None:
    record(database, planned("r1", at=NOW + timedelta(days=9)))
    with database.write() as session:
        assert outbox.replan(session, "r1", at=NOW, now=NOW)
    record(database, planned("r1", at=NOW + timedelta(days=9)))
    assert row(database, "r1").send_at == NOW
    record(database, cancelled("r1", "the patient opted out (STOP)"))
    assert row(database, "r1").state == "cancelled"


def test_a_webhook_key_is_new_once(database: Database) -> None:
    with database.write() as session:
        assert outbox.first_time(session, "sms:SM1", NOW)
        assert not outbox.first_time(session, "sms:SM1", NOW)


@pytest.mark.parametrize("per_second", [5.0, 200.0])
def test_the_token_bucket_gives_whole_batches_at_the_rate(
    database: Database, per_second: float
) -> None:
    def take(at: datetime, want: int = 50) -> tuple[int, float]:
        with database.write() as session:
            return outbox.take_tokens(session, "AC1", want=want, per_second=per_second, now=at)

    batch = int(min(50, per_second))
    batches = 0
    while (taken := take(NOW)) != (0, taken[1]):
        assert taken == (batch, 0.0)
        batches += 1
    assert batches == int(per_second) // batch, "one second's worth at once, no more"
    granted, wait = take(NOW)
    assert granted == 0
    assert wait == pytest.approx(batch / per_second)
    assert take(NOW + timedelta(seconds=wait)) == (batch, 0.0)
    with database.write() as session:
        outbox.give_back_tokens(session, "AC1", batch)
    assert take(NOW + timedelta(seconds=wait)) == (batch, 0.0)
