"""``python -m benchmarks sms``: reminders planned and sent through the local Twilio, end to end.

Three processes, as in production, so that none of them takes the others' share of the GIL:

- this process is central's scheduler: it plans (``ReminderService.plan``) and sends
  (``ReminderService.dispatch``) over central's SQLite database with the real ``twilio`` client,
  the service built by ``central.reminders.reminder_service`` as central builds it;
- central (``python -m central serve``, reminders on, its scheduler off, ``central_workers``
  worker processes) takes Twilio's signed status callbacks, each in one write
  transaction (a ``delivered`` one also writes the outcome Communication through the FHIR store);
- the local Twilio (``python -m sms.local_twilio``) accepts the messages and posts their status
  callbacks, ``sent`` then ``delivered``, to central.

**Setup** (untimed). A fresh database in a temporary folder holding N patients as a hub pushes
them: each a Patient (time zone UTC, a phone number of its own, a first name, English or Swahili
by turns), a Consent permitting SMS reminders and one reminder CommunicationRequest for today,
written through central's FHIR write path (validated, indexed, audited) as the client of one
region, 100 patients to a transaction. Quiet hours are off (``CENTRAL_SMS_QUIET_HOURS``
``00:00-00:00``: a window that ends where it starts is none) and the send time is 00:00, so every
reminder is due at once.

**Planning.** One ``plan()`` pass over all of them: changes, patient records, planner,
templates, outbox. ``planned_per_s``: outbox rows planned over its wall time (goal >= 5,000);
``rows``: how many rows it planned (N when all is well).

**Sending.** ``dispatch`` again and again until no reminder is planned, the account's rate
limit at ``rate_limit_per_s`` (``CENTRAL_SMS_PER_SECOND``, a token bucket holding one second's
worth) and 50 reminders claimed per transaction. ``sent_per_s``: reminders Twilio accepted over
the wall time of that (goal >= 100; it cannot pass the rate limit by more than the bucket's first
second). ``settle_seconds``: from the end of sending until every reminder is final in the outbox
(delivered, failed or cancelled), or the timeout.

**Counting.** ``duplicates``: messages at the local Twilio to reminder phones, less the distinct
reminders among them (the status callback's URL names its reminder) (goal 0). ``dropped``:
reminders written at setup that did not end both ``delivered`` in the outbox and among the
messages at Twilio (goal 0); ``not_delivered`` and ``never_at_twilio`` are its two parts (a
reminder may be in both, so they can add up to more). ``callback_errors``: status callback
requests central did not answer 2xx (the local Twilio retries those); ``callbacks_per_s``: the
callback requests over the time of sending and settling, what central kept up with.

**Peer.** ``twilio_client_only_per_s``: the bare ``twilio`` client sending the same text to the
same local Twilio (while central is up but idle), one message after another, no outbox, no rate
limit and no status callback. The CPU this process spends per send, with the outbox
(``dispatch_cpu_ms_per_send``) and without (``twilio_client_cpu_ms_per_send``), and their ratio
say what the outbox costs, whatever the rate limit.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from twilio.rest import Client

from benchmarks.report import Figure, Goal, Progress, Report
from benchmarks.servers import ServerProcess, process_cpu_seconds
from central.callers import Caller
from central.clock import SystemClock
from central.database import Database, open_database
from central.fhir.interactions import Context, write_resources
from central.fhir.store import Write
from central.fhir.validation import validate
from central.reminders import reminder_service
from central.settings import Settings
from field_app.demo.ports import free_port
from sms import ReminderService
from sms.model import FINAL_STATES, State

ACCOUNT = "AC" + "b" * 32
AUTH_TOKEN = "bench-local-twilio-auth-token"  # noqa: S105 - the local Twilio's, not a secret
FROM_NUMBER = "+255700000001"
REGION = "bench"
HUB = Caller("bench-hub", REGION, frozenset({"system/*.read", "system/*.write"}))
RATE_LIMIT_PER_S = 200
BATCH = 50
# One central process per core, as benchmarks.central runs it: a status callback costs central
# a few ms of CPU (a ``delivered`` one validates and stores a Communication), and one process
# alone falls behind the callbacks of 200 sends a second here.
CENTRAL_WORKERS = 2
PATIENTS_PER_TRANSACTION = 100
DISPATCH_SECONDS = 10.0  # one dispatch call; the loop calls it until nothing is planned
POLL_SECONDS = 0.1
PEER_WARMUP = 10
REMINDER_PHONES = "+2557"  # + 8 digits; the peer's go to +2556..., so they are told apart
PEER_PHONES = "+2556"
TIMEZONE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/timezone"
FIRST_NAMES = ("Amina", "Baraka", "Neema", "Juma", "Rehema", "Musa", "Zawadi", "Halima")


@dataclass(frozen=True)
class Size:
    reminders: int
    peer_sends: int
    settle_timeout_seconds: float


FULL = Size(reminders=10_000, peer_sends=1_000, settle_timeout_seconds=600.0)
QUICK = Size(reminders=300, peer_sends=100, settle_timeout_seconds=60.0)


@dataclass
class Planning:
    seconds: float = 0.0
    rows: int = 0  # outbox rows planned


@dataclass
class Sending:
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's
    dispatch_calls: int = 0
    claimed: int = 0
    sent: int = 0  # accepted by Twilio
    retried: int = 0
    failed: int = 0
    cancelled: int = 0


@dataclass
class Settling:
    seconds: float = 0.0
    states: dict[State, int] = field(default_factory=dict)
    central_cpu_seconds: float = 0.0  # sending and settling
    twilio_cpu_seconds: float = 0.0


@dataclass
class Peer:
    sends: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


@dataclass
class Tally:
    messages: int = 0  # outbound, to reminder phones
    duplicates: int = 0
    not_delivered: int = 0
    never_at_twilio: int = 0
    dropped: int = 0
    callbacks: int = 0
    callback_errors: int = 0


@dataclass(frozen=True)
class Servers:
    central: ServerProcess
    twilio: ServerProcess
    twilio_url: str

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time used so far by central's processes and by the local Twilio."""
        central = sum(process_cpu_seconds(pid) for pid in self.central.group_pids())
        return central, process_cpu_seconds(self.twilio.pid)


def run(*, quick: bool, progress: Progress) -> Report:
    size = QUICK if quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-sms-") as tmp:
        folder = Path(tmp)
        settings = central_settings(folder)
        database = open_database(settings.database_url)
        try:
            database.create()
            setup_seconds = enrol(database, settings, size.reminders, progress)
            service = scheduler_service(settings, database)
            planning = time_planning(service, progress)
            with servers(folder, settings) as running:
                body = service.listing(limit=1)[0].body if planning.rows else "Hello"
                peer = time_bare_client(running.twilio_url, size.peer_sends, body, progress)
                sending, settling = time_sending(service, running, size, progress)
                tally = count_at_twilio(running.twilio_url, service, size.reminders)
        finally:
            database.close()
    seconds = time.perf_counter() - started
    return report(size, (planning, sending, settling), peer, tally, (setup_seconds, seconds))


# -- setup ----------------------------------------------------------------------------------------


def central_settings(folder: Path) -> Settings:
    """Central's settings, for this process and the server alike (the local Twilio's port is
    chosen now: it starts later, with central)."""
    port = free_port()
    settings = Settings(
        database_url=f"sqlite:///{folder / 'central.db'}",
        port=port,
        base_url=f"http://127.0.0.1:{port}",
        workers=CENTRAL_WORKERS,
        sms="on",
        sms_scheduler="off",
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from=FROM_NUMBER,
        twilio_api_url=f"http://127.0.0.1:{free_port()}",
        sms_per_second=RATE_LIMIT_PER_S,
        sms_quiet_hours="00:00-00:00",
        sms_send_time="00:00",
        sms_timezone="UTC",
    )
    settings.check()
    return settings


def scheduler_service(settings: Settings, database: Database) -> ReminderService:
    """The reminder service as central's scheduler builds it, with the batch said here."""
    service = reminder_service(settings, database, SystemClock())
    return dataclasses.replace(service, config=dataclasses.replace(service.config, batch=BATCH))


def enrol(database: Database, settings: Settings, patients: int, progress: Progress) -> float:
    """Write every patient's Patient, Consent and reminder as a hub pushes them; returns the
    seconds it took."""
    progress(f"sms: writing {patients:,} patients, their consents and reminders to central")
    ctx = Context(database, settings, SystemClock(), HUB)
    started = time.perf_counter()
    for first in range(0, patients, PATIENTS_PER_TRANSACTION):
        last = min(patients, first + PATIENTS_PER_TRANSACTION)
        writes = [
            Write("PUT", r["resourceType"], r["id"], validate(r, expected_type=r["resourceType"]))
            for n in range(first, last)
            for r in patient_resources(n)
        ]
        with database.write() as session:
            write_resources(session, ctx, writes)
        if last % 2000 == 0 and last < patients:
            progress(f"sms: {last:,} of {patients:,} patients written")
    seconds = time.perf_counter() - started
    progress(f"sms: {patients:,} patients written in {seconds:.1f} s")
    return seconds


def patient_resources(n: int) -> list[dict[str, Any]]:
    """Patient ``n``'s Patient, SMS consent and reminder for today (the hub's shapes)."""
    pid = f"bench-patient-{n:05d}"
    return [
        patient(pid, reminder_phone(n), FIRST_NAMES[n % len(FIRST_NAMES)], ("en", "sw")[n % 2]),
        consent(pid),
        reminder(reminder_id(n), pid),
    ]


def reminder_phone(n: int) -> str:
    return f"{REMINDER_PHONES}{n:08d}"


def reminder_id(n: int) -> str:
    return f"bench-reminder-{n:05d}"


def patient(pid: str, phone: str, given: str, language: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "extension": [{"url": TIMEZONE_EXTENSION, "valueCode": "UTC"}],
        "active": True,
        "name": [{"family": "Mwakyusa", "given": [given]}],
        "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
        "communication": [
            {
                "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]},
                "preferred": True,
            }
        ],
        "managingOrganization": {"display": "Kilosa Health Centre"},
    }


def consent(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": f"{pid}-sms-reminders",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{pid}"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "action": [
                {"coding": [{"system": "urn:rural-care:consent-scope", "code": "sms_reminders"}]}
            ],
        },
    }


def reminder(rid: str, pid: str) -> dict[str, Any]:
    """A follow-up reminder for today (UTC, the patients' zone); no language of its own, so
    the patient's is used."""
    return {
        "resourceType": "CommunicationRequest",
        "id": rid,
        "status": "active",
        "category": [
            {"coding": [{"system": "urn:rural-care:reminder-template", "code": "followup_due"}]}
        ],
        "subject": {"reference": f"Patient/{pid}"},
        "occurrenceDateTime": datetime.now(UTC).date().isoformat(),
        "recipient": [{"reference": f"Patient/{pid}"}],
    }


# -- planning -------------------------------------------------------------------------------------


def time_planning(service: ReminderService, progress: Progress) -> Planning:
    progress("sms: planning")
    started = time.perf_counter()
    service.plan()
    seconds = time.perf_counter() - started
    rows = service.counts()["planned"]
    progress(f"sms: {rows:,} reminders planned in {seconds:.2f} s")
    return Planning(seconds, rows)


# -- the servers ----------------------------------------------------------------------------------


@contextmanager
def servers(folder: Path, settings: Settings) -> Iterator[Servers]:
    """Central (webhooks only) and the local Twilio that calls it back, each in its own
    process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CENTRAL_")}
    env |= {f.metadata["env"]: str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    twilio_url = settings.twilio_api_url
    twilio_command = [
        sys.executable,
        "-m",
        "sms.local_twilio",
        "--port",
        str(urlsplit(twilio_url).port),
        "--account-sid",
        ACCOUNT,
        "--auth-token",
        AUTH_TOKEN,
        "--sms-url",
        f"{settings.base_url}/sms/inbound",
    ]
    central_command = [sys.executable, "-m", "central", "serve"]
    with (
        ServerProcess(
            "central", central_command, env, f"{settings.base_url}/health", folder / "central.log"
        ) as central,
        ServerProcess(
            "the local Twilio",
            twilio_command,
            os.environ,
            f"{twilio_url}/_local/calls",
            folder / "twilio.log",
        ) as twilio,
    ):
        yield Servers(central, twilio, twilio_url)


# -- the peer: the bare twilio client -------------------------------------------------------------


def time_bare_client(twilio_url: str, sends: int, body: str, progress: Progress) -> Peer:
    """Messages sent one after another by the bare ``twilio`` client, without a callback."""
    client = Client(ACCOUNT, AUTH_TOKEN)
    client.api.base_url = twilio_url
    for n in range(PEER_WARMUP):
        client.messages.create(to=f"{PEER_PHONES}{n:08d}", from_=FROM_NUMBER, body=body)
    cpu, started = time.process_time(), time.perf_counter()
    for n in range(sends):
        client.messages.create(to=f"{PEER_PHONES}{n:08d}", from_=FROM_NUMBER, body=body)
    peer = Peer(sends, time.perf_counter() - started, time.process_time() - cpu)
    progress(f"sms: the bare twilio client sent {sends:,} in {peer.seconds:.2f} s")
    return peer


# -- sending and settling -------------------------------------------------------------------------


def time_sending(
    service: ReminderService, running: Servers, size: Size, progress: Progress
) -> tuple[Sending, Settling]:
    progress(f"sms: sending at most {RATE_LIMIT_PER_S} a second")
    cpu_before = running.cpu_seconds()
    sending = dispatch_all(service, size, progress)
    settling = wait_until_final(service, size, progress)
    central, twilio = running.cpu_seconds()
    settling.central_cpu_seconds = central - cpu_before[0]
    settling.twilio_cpu_seconds = twilio - cpu_before[1]
    return sending, settling


def dispatch_all(service: ReminderService, size: Size, progress: Progress) -> Sending:
    """Dispatch until nothing is planned (or for four times as long as the rate allows)."""
    sending = Sending()
    limit = 4 * size.reminders / RATE_LIMIT_PER_S + 60
    cpu, started = time.process_time(), time.perf_counter()
    while service.counts()["planned"] and time.perf_counter() - started < limit:
        done = service.dispatch(max_seconds=DISPATCH_SECONDS)
        sending.dispatch_calls += 1
        sending.claimed += done.claimed
        sending.sent += done.sent
        sending.retried += done.retried
        sending.failed += done.failed
        sending.cancelled += done.cancelled
        if done.claimed == 0:  # what is left waits for a retry
            time.sleep(POLL_SECONDS)
        progress(f"sms: {sending.sent:,} of {size.reminders:,} accepted by Twilio")
    sending.seconds = time.perf_counter() - started
    sending.cpu_seconds = time.process_time() - cpu
    progress(f"sms: sent {sending.sent / sending.seconds:,.0f} a second")
    return sending


def wait_until_final(service: ReminderService, size: Size, progress: Progress) -> Settling:
    """Wait until every reminder is final in the outbox: its status callbacks handled."""
    started = time.perf_counter()
    while True:
        states = service.counts()
        final = sum(states[s] for s in FINAL_STATES)
        seconds = time.perf_counter() - started
        if final >= size.reminders or seconds > size.settle_timeout_seconds:
            break
        time.sleep(POLL_SECONDS)
    progress(f"sms: {final:,} reminders final {seconds:.1f} s after the last send")
    return Settling(seconds, states)


# -- counting -------------------------------------------------------------------------------------


def count_at_twilio(twilio_url: str, service: ReminderService, reminders: int) -> Tally:
    """Compare what the local Twilio holds with the outbox and with what was written."""
    with httpx.Client(base_url=twilio_url, timeout=120) as admin:
        messages = admin.get("/_local/messages").raise_for_status().json()
        callbacks = admin.get("/_local/callbacks").raise_for_status().json()
    ours = [
        m
        for m in messages
        if m["direction"] == "outbound-api" and m["to"].startswith(REMINDER_PHONES)
    ]
    at_twilio = {_reminder_named(m["status_callback"]) for m in ours} - {None}
    rows = service.listing(limit=reminders + 1)
    delivered = {r.reminder_id for r in rows if r.state == "delivered"}
    written = {reminder_id(n) for n in range(reminders)}
    return Tally(
        messages=len(ours),
        duplicates=len(ours) - len(at_twilio),
        not_delivered=len(written - delivered),
        never_at_twilio=len(written - at_twilio),
        dropped=len(written - (delivered & at_twilio)),
        callbacks=len(callbacks),
        callback_errors=sum(1 for c in callbacks if c["failure"] is not None),
    )


def _reminder_named(callback: str | None) -> str | None:
    """The reminder a status callback URL names (``?reminder=ID``)."""
    if not callback:
        return None
    found = parse_qs(urlsplit(callback).query).get("reminder")
    return found[0] if found else None


# -- the report -----------------------------------------------------------------------------------


def report(
    size: Size,
    scenes: tuple[Planning, Sending, Settling],
    peer: Peer,
    tally: Tally,
    seconds: tuple[float, float],
) -> Report:
    planning, sending, settling = scenes
    setup_seconds, run_seconds = seconds
    title = (
        f"sms: {size.reminders:,} reminders planned and sent through the local Twilio at "
        f"{RATE_LIMIT_PER_S}/s; this process the scheduler, central ({CENTRAL_WORKERS} worker "
        f"processes) and the local Twilio in processes of their own, {os.cpu_count()} cores"
    )
    dispatch_cpu_ms = _per(sending.cpu_seconds * 1000, sending.sent)
    client_cpu_ms = _per(peer.cpu_seconds * 1000, peer.sends)
    figures = (
        Figure(
            "planned_per_s", _per(planning.rows, planning.seconds), "1/s", Goal(5000, at_least=True)
        ),
        Figure("sent_per_s", _per(sending.sent, sending.seconds), "1/s", Goal(100, at_least=True)),
        Figure("duplicates", tally.duplicates, "count", Goal(0)),
        Figure("dropped", tally.dropped, "count", Goal(0)),
        # The detail behind them.
        Figure("rows", planning.rows, "count"),
        Figure("rate_limit_per_s", RATE_LIMIT_PER_S, "1/s"),
        Figure("settle_seconds", settling.seconds, "s"),
        Figure("twilio_client_only_per_s", _per(peer.sends, peer.seconds), "1/s"),
        Figure("dispatch_cpu_ms_per_send", dispatch_cpu_ms, "ms"),
        Figure("twilio_client_cpu_ms_per_send", client_cpu_ms, "ms"),
        Figure("dispatch_cpu_over_client_only", _per(dispatch_cpu_ms, client_cpu_ms), "ratio"),
        Figure("plan_seconds", planning.seconds, "s"),
        Figure("dispatch_seconds", sending.seconds, "s"),
        Figure("dispatch_calls", sending.dispatch_calls, "count"),
        Figure("sent", sending.sent, "count"),
        Figure("send_retries", sending.retried, "count"),
        Figure("send_failures", sending.failed, "count"),
        Figure("delivered", settling.states.get("delivered", 0), "count"),
        Figure("messages_at_twilio", tally.messages, "count"),
        Figure("not_delivered", tally.not_delivered, "count"),
        Figure("never_at_twilio", tally.never_at_twilio, "count"),
        Figure("callbacks", tally.callbacks, "count"),
        Figure(
            "callbacks_per_s",
            _per(tally.callbacks, sending.seconds + settling.seconds),
            "1/s",
        ),
        Figure("callback_errors", tally.callback_errors, "count"),
        Figure("central_workers", CENTRAL_WORKERS, "count"),
        Figure(
            "central_cpu_ms_per_reminder",
            _per(settling.central_cpu_seconds * 1000, size.reminders),
            "ms",
        ),
        Figure(
            "twilio_cpu_ms_per_reminder",
            _per(settling.twilio_cpu_seconds * 1000, size.reminders),
            "ms",
        ),
        Figure("dispatch_cpu_share", _per(sending.cpu_seconds, sending.seconds), "ratio"),
        Figure("setup_seconds", setup_seconds, "s"),
        Figure("run_seconds", run_seconds, "s"),
    )
    return Report(title, figures)


def _per(amount: float, over: float) -> float:
    return amount / over if over else 0.0
