"""Central's reminder sending killed with SIGKILL, and shared by two processes: each reminder
goes out exactly once, and none is dropped.

Central is ``python -m central serve`` with the reminder service and its scheduler on, planning
and dispatching every second with a lease of two seconds; Twilio is the local Twilio in this
process (``sms.local_twilio``), which outlives central and retries its status callbacks as the
URL fragment asks (five times over 15.5 s here, longer than central takes to start again). The
reminders are FHIR resources written into central's database as a hub's push writes them:
patients in zone UTC, no quiet hours and a send time of midnight, so every reminder is due as
soon as it is planned.

A crash trial kills central at a point its ``random.Random(trial)`` picks:

- held: the local Twilio accepted a message and holds its answer (exactly "Twilio has it, our
  commit has not happened"); the kill comes at once (mostly before Twilio's status callbacks
  reach central) or up to 0.3 s later;
- after-sends: as soon as Twilio has accepted 1 to 7 of the 8 messages, all answered, the batch
  not yet recorded;
- any-moment: 0 to 2.5 s after central answers (sending starts about 1 s after).

Central then starts again on the same database and port, and the test waits until every
reminder is final. The count is exact: one message per reminder at the local Twilio (its
status callback URL names the reminder), every reminder delivered, none left planned or
sending. Two processes sharing a database are held to the same count, also when Twilio
answers slower than the lease (the dispatcher renews its lease as it goes and sends nothing
whose lease ran out; a lost answer is looked up at Twilio, not sent again).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import parse_qs, urldefrag, urlsplit

import pytest

from central.clock import SystemClock
from central.database import Database, open_database
from central.fhir import interactions
from central.fhir.interactions import Context
from central.settings import Settings
from sms.local_twilio import LocalTwilio
from sms.model import FINAL_STATES
from tests.integration.central_fixtures import CentralProcess, central_database
from tests.sms.reminder_world import (
    ACCOUNT,
    AUTH_TOKEN,
    FROM_NUMBER,
    HUB,
    consent,
    patient,
    reminder,
)

TRIALS = 20
CRASH_PATIENTS = 8
SHARED_PATIENTS = 48
SHARED_PER_SECOND = 20
LEASE_SECONDS = 2
SETTLE_SECONDS = 40.0
# Twilio retries a callback 5 times (the URL fragment), waiting 0.5, 1, 2, 4, 8 s: 15.5 s in
# all, much longer than central takes to start again (about 2 s).
CALLBACK_BACKOFF = 0.5
KINDS = ("held", "after-sends", "any-moment")
HELD_SECONDS = 0.3  # how long a held trial waits, at most, after Twilio accepted one
ANY_MOMENT_SECONDS = 2.5  # the window of an any-moment kill, from when central answers
# Log lines that say the scheduler or a task of it failed.
SCHEDULER_TROUBLE = re.compile(r"ERROR|Traceback|job store failed|task .* failed")


# -- the world: reminders in central's database, a local Twilio, central processes ----------------


def phone(number: int) -> str:
    return f"+2557120{number:05d}"


def today() -> date:
    return datetime.now(UTC).date()


def write_reminders(database_url: str, count: int, *, first: int = 0) -> list[str]:
    """``count`` patients (numbered from ``first``) with SMS consent and one reminder each for
    today, written into central's store as a hub's push writes them; returns the reminder IDs."""
    database = open_database(database_url, pool_size=1)
    try:
        database.create()
        ctx = Context(database, Settings(database_url=database_url), SystemClock(), HUB)
        ids = []
        for number in range(first, first + count):
            pid, rid = f"patient-{number}", f"reminder-{number}"
            for resource in (
                patient(pid, phone(number), zone="UTC"),
                consent(pid, "sms_reminders"),
                reminder(rid, pid, day=today()),
            ):
                interactions.update(
                    ctx, resource["resourceType"], resource["id"], resource, if_match=None
                )
            ids.append(rid)
        return ids
    finally:
        database.close()


def sms_env(twilio: LocalTwilio, *, per_second: int = 500) -> dict[str, str]:
    """Reminders on, with this process's scheduler, due at once, fast intervals; at most
    ``per_second`` sends a second (so claims of as many at once) across every process."""
    return {
        "CENTRAL_SMS": "on",
        "CENTRAL_SMS_SCHEDULER": "on",
        "CENTRAL_TWILIO_ACCOUNT_SID": ACCOUNT,
        "CENTRAL_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "CENTRAL_TWILIO_FROM": FROM_NUMBER,
        "CENTRAL_TWILIO_API_URL": twilio.url,
        "CENTRAL_SMS_PLAN_SECONDS": "1",
        "CENTRAL_SMS_DISPATCH_SECONDS": "1",
        "CENTRAL_SMS_LEASE_SECONDS": str(LEASE_SECONDS),
        "CENTRAL_SMS_PER_SECOND": str(per_second),
        # Equal start and end: no quiet hours (sms.planner); midnight: due as soon as planned.
        "CENTRAL_SMS_QUIET_HOURS": "00:00-00:00",
        "CENTRAL_SMS_SEND_TIME": "00:00",
        "CENTRAL_SMS_TIMEZONE": "UTC",
    }


@contextmanager
def local_twilio() -> Iterator[LocalTwilio]:
    with LocalTwilio(ACCOUNT, AUTH_TOKEN, callback_backoff=CALLBACK_BACKOFF) as twilio:
        yield twilio


@contextmanager
def opened(database_url: str) -> Iterator[Database]:
    database = open_database(database_url, pool_size=1)
    try:
        yield database
    finally:
        database.close()


def outbox_states(database: Database) -> dict[str, str]:
    with database.read() as session:
        rows = session.execute("SELECT reminder_id, state FROM sms_outbox")
    return {row[0]: row[1] for row in rows}


def reminder_of(callback: str | None) -> str:
    """The reminder a message's status callback URL names (``?reminder=ID#rc=...``)."""
    query = urlsplit(urldefrag(callback or "").url).query
    return parse_qs(query).get("reminder", ["(none)"])[0]


def sends(twilio: LocalTwilio) -> Counter[str]:
    """How many messages the local Twilio accepted for each reminder."""
    return Counter(
        reminder_of(m.status_callback) for m in twilio.messages() if m.direction == "outbound-api"
    )


def wait_until_final(
    database: Database, ids: list[str], centrals: list[CentralProcess]
) -> dict[str, str]:
    """The outbox once every reminder is in a final state; AssertionError after a while."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        states = outbox_states(database)
        if all(states.get(rid) in FINAL_STATES for rid in ids):
            return states
        if time.monotonic() > deadline:
            stuck = Counter(states.get(rid, "(no row)") for rid in ids)
            raise AssertionError(
                f"not final within {SETTLE_SECONDS} s: {dict(stuck)}\n{logs(centrals)}"
            )
        time.sleep(0.1)


def logs(centrals: list[CentralProcess]) -> str:
    return "\n".join(f"--- central {c.port} ---\n{c.log_tail(60)}" for c in centrals)


def finish(
    twilio: LocalTwilio, database: Database, ids: list[str], centrals: list[CentralProcess]
) -> tuple[dict[str, str], Counter[str]]:
    """Wait until every reminder is final, stop central (its scheduler finishes what it is
    doing), let the local Twilio play out, and return the outbox and the sends."""
    wait_until_final(database, ids, centrals)
    for central in centrals:
        central.stop()
    assert twilio.drain(SETTLE_SECONDS), "the local Twilio still has webhooks to deliver"
    return outbox_states(database), sends(twilio)


def check_exactly_once(
    ids: list[str], states: dict[str, str], sent: Counter[str], centrals: list[CentralProcess]
) -> None:
    duplicates = {rid: n for rid, n in sent.items() if n > 1}
    dropped = [rid for rid in ids if sent[rid] == 0]
    strangers = set(sent) - set(ids)
    not_delivered = {rid: states.get(rid) for rid in ids if states.get(rid) != "delivered"}
    assert not duplicates, f"sent more than once: {duplicates}\n{logs(centrals)}"
    assert not dropped, f"never sent: {dropped}\n{logs(centrals)}"
    assert not strangers, f"messages for reminders nobody asked for: {strangers}"
    assert not not_delivered, f"not delivered: {not_delivered}\n{logs(centrals)}"


# -- killing central -------------------------------------------------------------------------------


@dataclass
class Kill:
    """Where a trial kills central, and what it found when it did."""

    kind: str  # one of KINDS
    accepted: int = 1  # after-sends: messages Twilio accepts before central dies
    delay: float = 0.0  # held, any-moment: seconds before the kill
    at_twilio: int = 0  # messages Twilio had accepted when central died
    unsettled: int = 0  # of those, how many central had not yet recorded as sent

    @classmethod
    def chosen(cls, trial: int) -> Kill:
        rng = random.Random(trial)
        kind = KINDS[trial % len(KINDS)]
        if kind == "held":
            # Half at once, before Twilio's status callbacks can reach central; half later.
            delay = max(0.0, rng.uniform(-HELD_SECONDS, HELD_SECONDS))
        else:
            delay = rng.uniform(0.0, ANY_MOMENT_SECONDS)
        return cls(kind, accepted=rng.randint(1, CRASH_PATIENTS - 1), delay=delay)


def kill_during_sending(central: CentralProcess, twilio: LocalTwilio, kill: Kill) -> None:
    """Start central and SIGKILL it at ``kill``'s point."""
    if kill.kind == "held":
        twilio.hold_creates()
    central.start()
    if kill.kind == "any-moment":
        time.sleep(kill.delay)
    else:
        wanted = 1 if kill.kind == "held" else kill.accepted
        accepted = twilio.wait_until(lambda: len(twilio.messages()) >= wanted, SETTLE_SECONDS)
        assert accepted, f"Twilio was sent nothing\n{central.log_tail()}"
        if kill.kind == "held":
            # Twilio's status callbacks reach central meanwhile, or not.
            time.sleep(kill.delay)
    central.kill()
    twilio.release_creates()


def note_what_was_lost(kill: Kill, twilio: LocalTwilio, database: Database) -> None:
    states = outbox_states(database)
    at_twilio = sends(twilio)
    kill.at_twilio = sum(at_twilio.values())
    kill.unsettled = sum(1 for rid in at_twilio if states.get(rid) in ("planned", "sending"))


# -- the tests -------------------------------------------------------------------------------------


def crash_trial(folder: Path, backend: str, kill: Kill) -> None:
    """Kill central as ``kill`` says, start it again, and check every reminder went out once;
    ``kill`` notes what Twilio held at the kill."""
    with central_database(backend, folder) as url, local_twilio() as twilio, opened(url) as db:
        ids = write_reminders(url, CRASH_PATIENTS)
        central = CentralProcess(folder, url, extra_env=sms_env(twilio))
        try:
            kill_during_sending(central, twilio, kill)
            note_what_was_lost(kill, twilio, db)
            central.start()
            states, sent = finish(twilio, db, ids, [central])
        finally:
            twilio.release_creates()
            central.stop()
        check_exactly_once(ids, states, sent, [central])


@pytest.mark.parametrize("trial", range(TRIALS))
def test_central_killed_between_twilio_accepting_and_commit_sends_each_reminder_once(
    tmp_path: Path, trial: int
) -> None:
    kill = Kill.chosen(trial)
    crash_trial(tmp_path, "sqlite", kill)
    print(f"trial {trial}: {kill}")
    if kill.kind == "held":
        assert kill.at_twilio == 1, "Twilio held its answer: nothing more could be sent"


def test_central_on_postgresql_killed_while_twilio_holds_its_answer_sends_each_once(
    tmp_path: Path,
) -> None:
    kill = Kill("held", delay=0.0)
    crash_trial(tmp_path, "postgresql", kill)
    print(kill)
    assert kill.at_twilio == 1


# -- two processes, one database -------------------------------------------------------------------


@contextmanager
def running(
    folder: Path, url: str, env: dict[str, str], count: int = 2
) -> Iterator[list[CentralProcess]]:
    """``count`` central processes on one database, started together, stopped afterwards."""
    centrals = [CentralProcess(folder / f"central-{n}", url, extra_env=env) for n in range(count)]
    try:
        with ThreadPoolExecutor(count) as starting:
            for started in [starting.submit(central.start) for central in centrals]:
                started.result()
        yield centrals
    finally:
        for central in centrals:
            central.stop()


def senders(twilio: LocalTwilio) -> Counter[int | None]:
    """How many messages each central sent (a status callback URL is its sender's own)."""
    return Counter(
        urlsplit(m.status_callback or "").port
        for m in twilio.messages()
        if m.direction == "outbound-api"
    )


def scheduler_trouble(central: CentralProcess) -> list[str]:
    text = central.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if SCHEDULER_TROUBLE.search(line)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_central_processes_share_one_database_and_send_each_reminder_once(
    tmp_path: Path, backend: str
) -> None:
    with (
        central_database(backend, tmp_path) as url,
        local_twilio() as twilio,
        opened(url) as db,
        running(tmp_path, url, sms_env(twilio, per_second=SHARED_PER_SECOND)) as centrals,
    ):
        # Written while both run; the rate they share makes each claim a few at a time.
        ids = write_reminders(url, SHARED_PATIENTS)
        states, sent = finish(twilio, db, ids, centrals)
        check_exactly_once(ids, states, sent, centrals)
        for central in centrals:
            assert not scheduler_trouble(central), f"{central.port}:\n{central.log_tail()}"
        print(f"messages sent per central: {dict(senders(twilio))}")


def test_twilio_answering_slower_than_the_lease_does_not_make_a_second_process_send_again(
    tmp_path: Path,
) -> None:
    with (
        central_database("sqlite", tmp_path) as url,
        local_twilio() as twilio,
        opened(url) as db,
        running(tmp_path, url, sms_env(twilio)) as centrals,
    ):
        twilio.hold_creates()
        ids = write_reminders(url, CRASH_PATIENTS)
        # One central claims every reminder and waits for Twilio's answer to the first; once its
        # lease has run out, the rest are planned again and the other central claims them and
        # sends one (held too).
        both = twilio.wait_until(lambda: len(twilio.messages()) >= 2, SETTLE_SECONDS)
        assert both, f"not two sends\n{logs(centrals)}"
        twilio.release_creates()
        states, sent = finish(twilio, db, ids, centrals)
        check_exactly_once(ids, states, sent, centrals)
