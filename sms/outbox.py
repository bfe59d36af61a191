"""The outbox: one row per reminder, and the only moves its state may make.

Every function takes the session of the caller's transaction, so a state change commits with
whatever else it belongs to (an outcome Communication, an opt-out). Each change is a guarded
``UPDATE ... WHERE state IN (...)``: two processes, a retry or a replayed callback that would
move a row backwards or twice change nothing.

Sending is at most once because a row is claimed (``planned`` -> ``sending``, with a lease)
in a transaction that commits before Twilio is called, and only a claimed row is sent. It is
at least once because a ``sending`` row whose process died is settled later: by Twilio's status
callback, which names the reminder, or when its lease has run out by asking Twilio whether it
holds the message (``stale``; the caller then marks it sent or plans it again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sms.database import Row, Session
from sms.model import Channel, OutboxRow, Send, State

_COLUMNS = (
    "reminder_id, patient_id, channel, phone, language, zone, template, body, send_at, state,"
    " attempts, twilio_sid, error, updated_at, based_on"
)
# How far along a state is; a row only ever moves to a higher rank (or is planned again by
# the reconciler or an operator, which say so explicitly).
RANK: dict[State, int] = {
    "planned": 0,
    "cancelled": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3,
    "failed": 3,
}
REPLANNABLE: tuple[State, ...] = ("planned", "cancelled")


@dataclass(frozen=True)
class Planned:
    """A planner's decision for one reminder, with the text it would send."""

    reminder_id: str
    patient_id: str
    template: str
    send: Send | None  # None: cancel, for ``reason``
    zone: str
    body: str = ""
    reason: str = ""
    based_on: str | None = None  # what replies and outcomes point at, if not the request


@dataclass
class PlanCounts:
    planned: int = 0  # new rows to send
    updated: int = 0  # planned rows whose time, channel or text changed
    cancelled: int = 0  # rows that must not be sent (now or any more)
    unchanged: int = 0  # decided as before, or already past planning


def epoch(moment: datetime) -> float:
    return moment.timestamp()


def moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# -- planning -------------------------------------------------------------------------------------


def record_plans(session: Session, plans: Sequence[Planned], now: datetime) -> PlanCounts:
    """Write the planner's decisions. A reminder already claimed, sent or settled keeps its
    row: planning never sends again what went out."""
    counts = PlanCounts()
    current = _current(session, [p.reminder_id for p in plans])
    inserts: list[tuple[object, ...]] = []
    updates: list[tuple[object, ...]] = []
    for plan in plans:
        before = current.get(plan.reminder_id)
        decided = _after_backoff(_decided(plan, now), before)
        if before is None:
            inserts.append(
                (plan.reminder_id, plan.patient_id, plan.based_on, *decided, epoch(now), epoch(now))
            )
        elif _keep(before, decided):
            counts.unchanged += 1
            continue
        else:
            updates.append((*decided, epoch(now), plan.reminder_id))
        if plan.send is None:
            counts.cancelled += 1
        elif before is None:
            counts.planned += 1
        else:
            counts.updated += 1
    if inserts:
        session.executemany(
            f"INSERT INTO sms_outbox (reminder_id, patient_id, based_on, {_PLAN_COLUMNS},"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            inserts,
        )
    if updates:
        assignments = ", ".join(f"{name} = ?" for name in _PLAN_COLUMNS.split(", "))
        session.executemany(
            f"UPDATE sms_outbox SET {assignments}, updated_at = ? WHERE reminder_id = ?"
            " AND state IN ('planned', 'cancelled')",
            updates,
        )
    return counts


# The columns a plan decides, in the order of ``_decided``.
_PLAN_COLUMNS = "channel, phone, language, zone, template, body, send_at, state, error"


def _decided(plan: Planned, now: datetime) -> tuple[object, ...]:
    send = plan.send
    if send is None:
        return ("sms", "", "", plan.zone, plan.template, "", epoch(now), "cancelled", plan.reason)
    return (
        send.channel,
        send.phone,
        send.language,
        plan.zone,
        plan.template,
        plan.body,
        epoch(send.send_at),
        "planned",
        None,
    )


def _after_backoff(
    decided: tuple[object, ...], before: tuple[object, ...] | None
) -> tuple[object, ...]:
    """A row waiting out a back-off (planned, attempted before) keeps its later time and its
    error: deciding again must not send it sooner than the back-off allows."""
    if before is None or before[7] != "planned" or not before[10] or decided[7] != "planned":
        return decided
    send_at = max(float(decided[6]), float(before[6]))  # type: ignore[arg-type]
    return (*decided[:6], send_at, decided[7], before[8])


def _keep(before: tuple[object, ...], decided: tuple[object, ...]) -> bool:
    """Whether a row stays as it is: past planning, decided as before, or sent now by an
    operator (``pinned``: only a cancellation overrides that)."""
    state, pinned = before[7], before[9]
    if state not in REPLANNABLE or _same_plan(before[:9], decided):
        return True
    return bool(pinned) and state == "planned" and decided[7] == "planned"


def _same_plan(before: tuple[object, ...], decided: tuple[object, ...]) -> bool:
    """The same decision as the row holds (a cancellation's time does not count)."""
    if decided[7] == "cancelled":
        return before[7] == "cancelled" and before[8] == decided[8]
    return before == decided


def _current(session: Session, reminder_ids: Sequence[str]) -> dict[str, tuple[object, ...]]:
    """The plan columns of each reminder already in the outbox, then ``pinned`` and
    ``attempts``."""
    found: dict[str, tuple[object, ...]] = {}
    for chunk in _chunks(reminder_ids):
        marks = ", ".join("?" * len(chunk))
        for row in session.execute(
            f"SELECT reminder_id, {_PLAN_COLUMNS}, pinned, attempts FROM sms_outbox"
            f" WHERE reminder_id IN ({marks})",
            chunk,
        ):
            found[row[0]] = tuple(row[1:])
    return found


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def cancel_for_phone(session: Session, phone: str, reason: str, now: datetime) -> list[str]:
    """Cancel every planned reminder to ``phone`` (an opt-out is honoured at once)."""
    rows = session.execute(
        "UPDATE sms_outbox SET state = 'cancelled', error = ?, updated_at = ?"
        " WHERE phone = ? AND state = 'planned' RETURNING reminder_id",
        (reason, epoch(now), phone),
    )
    return [row[0] for row in rows]


# -- sending --------------------------------------------------------------------------------------


def claim_due(
    session: Session, *, now: datetime, limit: int, worker: str, lease_seconds: float
) -> list[OutboxRow]:
    """Claim up to ``limit`` planned rows whose time has come, oldest first: they become
    ``sending``, leased to ``worker``. Commit before sending them."""
    if limit <= 0:
        return []
    lock = " FOR UPDATE SKIP LOCKED" if session.dialect == "postgresql" else ""
    due = session.execute(
        "SELECT reminder_id FROM sms_outbox WHERE state = 'planned' AND send_at <= ?"
        f" ORDER BY send_at, reminder_id LIMIT ?{lock}",
        (epoch(now), limit),
    )
    ids = [row[0] for row in due]
    if not ids:
        return []
    marks = ", ".join("?" * len(ids))
    rows = session.execute(
        "UPDATE sms_outbox SET state = 'sending', attempts = attempts + 1, claimed_by = ?,"
        f" claimed_until = ?, updated_at = ? WHERE reminder_id IN ({marks})"
        f" AND state = 'planned' RETURNING {_COLUMNS}",
        (worker, epoch(now) + lease_seconds, epoch(now), *ids),
    )
    return sorted((_row(r) for r in rows), key=lambda r: (r.send_at, r.reminder_id))


def mark_sent(session: Session, sent: Sequence[tuple[str, str]], now: datetime) -> None:
    """Twilio accepted these (reminder ID, SID) pairs. A row that a status callback already
    moved on keeps its state and gains the SID if it had none."""
    session.executemany(
        "UPDATE sms_outbox SET state = CASE WHEN state IN ('planned', 'sending') THEN 'sent'"
        " ELSE state END, twilio_sid = COALESCE(twilio_sid, ?), claimed_by = NULL,"
        " claimed_until = NULL, error = NULL, updated_at = ? WHERE reminder_id = ?",
        [(sid, epoch(now), reminder_id) for reminder_id, sid in sent],
    )


def retry_later(
    session: Session,
    reminder_id: str,
    *,
    at: datetime,
    error: str,
    now: datetime,
    claim: str | None = None,
) -> bool:
    """Plan a ``sending`` row again for ``at``: Twilio was busy or out of reach (for the
    ``claim`` that holds it), or, with no claim, its lease ran out and Twilio holds nothing.
    False if it is no longer so (another process holds it, or a callback settled it)."""
    guard = "claimed_by = ?" if claim is not None else "claimed_until < ?"
    rows = session.execute(
        "UPDATE sms_outbox SET state = 'planned', send_at = ?, error = ?, claimed_by = NULL,"
        " claimed_until = NULL, updated_at = ? WHERE reminder_id = ? AND state = 'sending'"
        f" AND {guard} RETURNING reminder_id",
        (epoch(at), error, epoch(now), reminder_id, claim if claim is not None else epoch(now)),
    )
    return bool(rows)


def renew(
    session: Session,
    reminder_ids: Sequence[str],
    *,
    claim: str,
    now: datetime,
    lease_seconds: float,
) -> set[str]:
    """Extend the lease of the rows ``claim`` still holds, before sending them: the ones it
    returns may be sent; any other was taken back when its lease ran out."""
    if not reminder_ids:
        return set()
    marks = ", ".join("?" * len(reminder_ids))
    rows = session.execute(
        f"UPDATE sms_outbox SET claimed_until = ? WHERE reminder_id IN ({marks})"
        " AND state = 'sending' AND claimed_by = ? AND claimed_until >= ? RETURNING reminder_id",
        (epoch(now) + lease_seconds, *reminder_ids, claim, epoch(now)),
    )
    return {row[0] for row in rows}


def settle(
    session: Session,
    reminder_id: str,
    state: State,
    *,
    now: datetime,
    sid: str | None = None,
    error: str | None = None,
) -> OutboxRow | None:
    """Move a row forward to ``state`` (from a status callback, a refusal or a cancellation
    at send time). Returns the row as it now is if it moved, else None (a replay, or a move
    backwards, changes nothing)."""
    lower = [name for name, rank in RANK.items() if rank < RANK[state]]
    if state == "cancelled":
        lower = ["planned", "sending"]
    marks = ", ".join("?" * len(lower))
    rows = session.execute(
        "UPDATE sms_outbox SET state = ?, twilio_sid = COALESCE(twilio_sid, ?), error = ?,"
        " claimed_by = NULL, claimed_until = NULL, updated_at = ?"
        f" WHERE reminder_id = ? AND state IN ({marks}) RETURNING {_COLUMNS}",
        (state, sid, error, epoch(now), reminder_id, *lower),
    )
    return _row(rows[0]) if rows else None


def stale(session: Session, now: datetime, limit: int = 100) -> list[OutboxRow]:
    """Rows left ``sending`` past their lease: their process died or lost its answer."""
    rows = session.execute(
        f"SELECT {_COLUMNS} FROM sms_outbox WHERE state = 'sending' AND claimed_until < ?"
        " ORDER BY claimed_until LIMIT ?",
        (epoch(now), limit),
    )
    return [_row(r) for r in rows]


# -- reading and operator moves -------------------------------------------------------------------


def get(session: Session, reminder_id: str) -> OutboxRow | None:
    rows = session.execute(
        f"SELECT {_COLUMNS} FROM sms_outbox WHERE reminder_id = ?",
        (reminder_id,),
    )
    return _row(rows[0]) if rows else None


def by_sid(session: Session, sid: str) -> OutboxRow | None:
    rows = session.execute(
        f"SELECT {_COLUMNS} FROM sms_outbox WHERE twilio_sid = ?",
        (sid,),
    )
    return _row(rows[0]) if rows else None


def latest_to(session: Session, phone: str) -> OutboxRow | None:
    """The reminder most recently sent to ``phone``: whom a reply from it is about."""
    rows = session.execute(
        f"SELECT {_COLUMNS} FROM sms_outbox WHERE phone = ?"
        " AND state IN ('sending', 'sent', 'delivered', 'failed')"
        " ORDER BY updated_at DESC, reminder_id DESC LIMIT 1",
        (phone,),
    )
    return _row(rows[0]) if rows else None


def patients_of_phone(session: Session, phone: str) -> list[str]:
    rows = session.execute(
        "SELECT DISTINCT patient_id FROM sms_outbox WHERE phone = ? ORDER BY patient_id",
        (phone,),
    )
    return [row[0] for row in rows]


def counts(session: Session) -> dict[State, int]:
    rows = session.execute("SELECT state, COUNT(*) FROM sms_outbox GROUP BY state")
    found: dict[str, int] = {row[0]: int(row[1]) for row in rows}
    return {state: found.get(state, 0) for state in RANK}


def listing(session: Session, *, state: State | None = None, limit: int = 50) -> list[OutboxRow]:
    where, params = ("WHERE state = ?", [state]) if state else ("", [])
    rows = session.execute(
        f"SELECT {_COLUMNS} FROM sms_outbox {where}"
        " ORDER BY updated_at DESC, reminder_id DESC LIMIT ?",
        (*params, limit),
    )
    return [_row(r) for r in rows]


def replan(session: Session, reminder_id: str, *, at: datetime, now: datetime) -> bool:
    """An operator's "send it now": a reminder planned for later, or one that failed, was
    cancelled or went out, is planned for ``at``. Never one that is sending (its outcome is not
    known yet), nor one with no phone."""
    rows = session.execute(
        "UPDATE sms_outbox SET state = 'planned', send_at = ?, error = NULL, twilio_sid = NULL,"
        " claimed_by = NULL, claimed_until = NULL, pinned = 1, updated_at = ?"
        " WHERE reminder_id = ? AND state IN ('planned', 'failed', 'cancelled', 'delivered',"
        " 'sent') AND phone <> '' RETURNING reminder_id",
        (epoch(at), epoch(now), reminder_id),
    )
    return bool(rows)


def _row(row: Row) -> OutboxRow:
    return OutboxRow(
        reminder_id=row[0],
        patient_id=row[1],
        channel=cast(Channel, row[2]),
        phone=row[3],
        language=row[4],
        zone=row[5],
        template=row[6],
        body=row[7],
        send_at=moment(row[8]),
        state=cast(State, row[9]),
        attempts=int(row[10]),
        twilio_sid=row[11],
        error=row[12],
        updated_at=moment(row[13]),
        based_on=row[14],
    )


# -- opt-outs, replays, the rate limit, the planner's cursor -------------------------------------


def opted_out(session: Session, phones: Iterable[str]) -> set[str]:
    wanted = sorted({p for p in phones if p})
    found: set[str] = set()
    for chunk in _chunks(wanted):
        marks = ", ".join("?" * len(chunk))
        rows = session.execute(
            f"SELECT phone FROM sms_opt_outs WHERE phone IN ({marks})",
            chunk,
        )
        found.update(row[0] for row in rows)
    return found


def opt_out(session: Session, phone: str, source: str, now: datetime) -> bool:
    """Record that ``phone`` wants no more reminders. False if it already had."""
    rows = session.execute(
        "INSERT INTO sms_opt_outs (phone, opted_out_at, source) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING RETURNING phone",
        (phone, epoch(now), source),
    )
    return bool(rows)


def opt_in(session: Session, phone: str) -> bool:
    rows = session.execute("DELETE FROM sms_opt_outs WHERE phone = ? RETURNING phone", (phone,))
    return bool(rows)


def first_time(session: Session, key: str, now: datetime) -> bool:
    """True the first time ``key`` (a webhook's MessageSid, say) is seen; False on a replay."""
    rows = session.execute(
        "INSERT INTO sms_inbound (key, received_at) VALUES (?, ?)"
        " ON CONFLICT DO NOTHING RETURNING key",
        (key, epoch(now)),
    )
    return bool(rows)


def take_tokens(
    session: Session, account: str, *, want: int, per_second: float, now: datetime
) -> tuple[int, float]:
    """Take ``want`` sends (at most one second's worth) from the account's token bucket,
    refilled at ``per_second`` and shared by every process through the database: all of them,
    or none and the seconds until there are enough. Whole batches keep the claims, and their
    transactions, few."""
    session.execute(
        "INSERT INTO sms_rate (account, tokens, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (account, per_second, epoch(now)),
    )
    lock = " FOR UPDATE" if session.dialect == "postgresql" else ""
    tokens, updated = session.execute(
        f"SELECT tokens, updated_at FROM sms_rate WHERE account = ?{lock}", (account,)
    )[0]
    burst = max(per_second, 1.0)
    available = min(burst, tokens + max(0.0, epoch(now) - updated) * per_second)
    need = max(1, min(want, int(burst)))
    # A hair of slack: refills are floats, and a shortfall of 1e-8 s would be waited forever
    # by a clock that cannot move that little.
    taken = need if available + 1e-6 >= need else 0
    session.execute(
        "UPDATE sms_rate SET tokens = ?, updated_at = ? WHERE account = ?",
        (available - taken, max(epoch(now), updated), account),
    )
    return taken, 0.0 if taken else max((need - available) / per_second, 0.001)


def give_back_tokens(session: Session, account: str, count: int) -> None:
    if count > 0:
        session.execute(
            "UPDATE sms_rate SET tokens = tokens + ? WHERE account = ?", (count, account)
        )


def cursor(session: Session, name: str) -> str | None:
    rows = session.execute("SELECT value FROM sms_cursor WHERE name = ?", (name,))
    return rows[0][0] if rows else None


def set_cursor(session: Session, name: str, value: str) -> None:
    session.execute(
        "INSERT INTO sms_cursor (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )
