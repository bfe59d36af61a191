"""The audit trail: a FHIR R4 AuditEvent for every read or write of patient data, kept in a
hash chain that is append-only and tamper-evident.

Each entry of ``audit_log`` is ``(seq, recorded, event, prev_hash, hash)`` where ``event`` is
the AuditEvent as canonical JSON (sorted keys, no spaces, UTF-8) and

    hash = SHA-256(prev_hash || seq as 8 bytes big-endian || recorded || 0x00 || event)

(``recorded`` and ``event`` in UTF-8; canonical JSON never holds a raw NUL, so the separator
is unambiguous). The first entry's ``prev_hash`` is 32 zero bytes. Editing an event or a hash,
deleting an entry or moving one breaks the chain at that entry, and ``verify`` names it.

What the chain cannot show on its own: someone who can write the table and rewrites every
entry from the edited one to the end, or who cuts entries off the end. Against those, keep the
last hash that ``verify`` prints somewhere else (a ticket, a log shipped off the machine): the
chain at that point must still end in it.

Append-only is enforced by the database too: triggers refuse UPDATE, DELETE (and on
PostgreSQL TRUNCATE) of ``audit_log`` (see ``central.database.schema``). The owner of a table
can drop its triggers, so in production the tables are created by an owner role and central
serves as a role that owns nothing and holds only INSERT and SELECT on ``audit_log``; then
even central's own credentials cannot edit the trail:

    REVOKE ALL ON audit_log FROM central;
    GRANT SELECT, INSERT ON audit_log TO central;

Entries are appended in the caller's transaction, so a write and its AuditEvent commit
together or not at all. With several central processes on one PostgreSQL database, appends
take a transaction-scoped advisory lock before reading the head, so entries form one chain;
call ``append`` last in a transaction, since the lock is held until it commits.

AuditEvents record who (the client), what (resource references), the interaction and its
outcome; of a search, only the parameters' names, never their values (which may be names,
phone numbers or identifiers).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from central.callers import Caller
from central.clock import instant
from central.database import Database, Row, Session

GENESIS = bytes(32)
ADVISORY_LOCK = 7261002  # database.py's create() takes 7261001
VERIFY_BATCH = 5000

CLIENT_SYSTEM = "urn:rural-care:client"
_EVENT_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
_INTERACTIONS = "http://hl7.org/fhir/restful-interaction"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACTIONS = frozenset({"C", "R", "U", "D", "E"})
OUTCOMES = {"0": "success", "4": "minor failure", "8": "serious failure", "12": "major failure"}
INTERACTIONS = frozenset(
    {
        "read", "vread", "update", "patch", "delete", "history", "history-instance",
        "history-type", "history-system", "create", "search", "search-type", "search-system",
        "capabilities", "transaction", "batch", "operation",
    }
)  # fmt: skip


# -- the event ------------------------------------------------------------------------------------


def audit_event(
    caller: Caller,
    *,
    action: str,
    interaction: str,
    outcome: str,
    entities: Sequence[str],
    patients: Sequence[str],
    query: str | None,
    at: datetime,
) -> dict[str, Any]:
    """A FHIR R4 AuditEvent of one REST interaction. ``entities`` and ``patients`` are
    references (``Patient/123``; a bare patient ID is taken as one); ``query`` is the query
    string of a search, of which only the parameter names are kept. Raises ValueError for an
    action, interaction or outcome that is not one of FHIR's codes (a programming error)."""
    _check_codes(action, interaction, outcome)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _EVENT_TYPE,
        "subtype": [{"system": _INTERACTIONS, "code": interaction}],
        "action": action,
        "recorded": instant(at),
        "outcome": outcome,
        "agent": [
            {
                "who": {
                    "identifier": {"system": CLIENT_SYSTEM, "value": caller.client_id},
                    "display": caller.client_id,
                },
                "requestor": True,
            }
        ],
        "source": {
            "observer": {"display": "central"},
            "type": [{"system": _SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    entity = _entities(entities, patients)
    if query is not None:
        entity.append(_query_entity(query))
    if entity:
        event["entity"] = entity
    return event


def _check_codes(action: str, interaction: str, outcome: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"AuditEvent.action must be one of {sorted(ACTIONS)}")
    if interaction not in INTERACTIONS:
        raise ValueError(f"'{interaction}' is not a FHIR restful-interaction code")
    if outcome not in OUTCOMES:
        raise ValueError(f"AuditEvent.outcome must be one of {sorted(OUTCOMES)}")


def _entities(entities: Sequence[str], patients: Sequence[str]) -> list[dict[str, Any]]:
    """One entity per reference; patients carry role 1 (Patient), other resources role 4
    (Domain Resource). A patient named in both lists appears once."""
    patient_refs = [p if "/" in p else f"Patient/{p}" for p in patients]
    found = [*dict.fromkeys([*entities, *patient_refs])]
    return [_entity(ref, patient=ref in patient_refs) for ref in found]


def _entity(reference: str, *, patient: bool) -> dict[str, Any]:
    kind = ("1", "Person") if patient else ("2", "System Object")
    role = ("1", "Patient") if patient else ("4", "Domain Resource")
    return {
        "what": {"reference": reference},
        "type": {"system": _ENTITY_TYPE, "code": kind[0], "display": kind[1]},
        "role": {"system": _OBJECT_ROLE, "code": role[0], "display": role[1]},
    }


def _query_entity(query: str) -> dict[str, Any]:
    names = query_parameter_names(query)
    return {
        "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
        "description": "search parameters (names only): " + (", ".join(names) or "none"),
        "query": base64.b64encode("&".join(names).encode()).decode("ascii"),
    }


def query_parameter_names(query: str) -> list[str]:
    """The parameter names of a query string (``name=x&_count=5`` gives ``name, _count``), each
    once, in order. Values are dropped: they may be patient data."""
    text = query.partition("?")[2] if "?" in query else query
    pairs = parse_qsl(text, keep_blank_values=True)
    return list(dict.fromkeys(name for name, _value in pairs if name))


# -- the chain ------------------------------------------------------------------------------------


def canonical(event: dict[str, Any]) -> str:
    """The one JSON text of an event that the chain hashes: sorted keys, no spaces."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: bytes, seq: int, recorded: str, event: str) -> bytes:
    digest = hashlib.sha256(prev_hash)
    digest.update(seq.to_bytes(8, "big"))
    digest.update(recorded.encode())
    digest.update(b"\x00")
    digest.update(event.encode())
    return digest.digest()


def append(session: Session, events: Sequence[dict[str, Any]], at: datetime) -> None:
    """Append ``events`` to the trail in the caller's transaction, recorded at ``at``."""
    if not events:
        return
    if session.dialect == "postgresql":
        # Held until commit: another process's append waits here, then reads our head.
        session.execute("SELECT pg_advisory_xact_lock(?)", (ADVISORY_LOCK,))
    head = session.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev = (int(head[0][0]), bytes(head[0][1])) if head else (0, GENESIS)
    recorded = instant(at)
    rows: list[tuple[int, str, str, bytes, bytes]] = []
    for event in events:
        seq += 1
        text = canonical(event)
        digest = entry_hash(prev, seq, recorded, text)
        rows.append((seq, recorded, text, prev, digest))
        prev = digest
    session.executemany(
        "INSERT INTO audit_log (seq, recorded, event, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
        rows,
    )


# -- checking it ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    """``entries``: how many entries were found intact (all of them, if ``first_bad_seq`` is
    None). ``head_hash``: the hash of the last intact entry, hex (all zeros for an empty
    trail), to keep elsewhere and compare next time."""

    entries: int
    first_bad_seq: int | None
    reason: str
    head_hash: str = GENESIS.hex()

    @property
    def intact(self) -> bool:
        return self.first_bad_seq is None


def verify(
    database: Database,
    *,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = VERIFY_BATCH,
) -> VerifyReport:
    """Recompute the chain from its first entry, ``batch_size`` entries at a time, up to the
    last entry there was when it started. ``progress(done, total)`` is called after each batch.
    Names the first entry that is missing, edited, moved or whose hash is wrong."""
    total, last = _extent(database)
    expected_seq, prev = 1, GENESIS
    for batch in _batches(database, last, batch_size):
        for seq, recorded, event, prev_hash, stored_hash in batch:
            problem = _problem(expected_seq, prev, seq, bytes(prev_hash))
            if problem is None and entry_hash(prev, seq, recorded, event) != bytes(stored_hash):
                problem = "its hash does not match its content (the event or the hash was edited)"
            if problem is not None:
                return VerifyReport(expected_seq - 1, expected_seq, problem, prev.hex())
            expected_seq, prev = seq + 1, bytes(stored_hash)
        if progress is not None:
            progress(expected_seq - 1, total)
    return VerifyReport(expected_seq - 1, None, "intact", prev.hex())


def _problem(expected_seq: int, prev: bytes, seq: int, prev_hash: bytes) -> str | None:
    if seq != expected_seq:
        return f"the entry is missing (the next entry there is {seq})"
    if prev_hash != prev:
        return "its prev_hash is not the previous entry's hash (an entry was removed or moved)"
    return None


def _extent(database: Database) -> tuple[int, int]:
    with database.read() as session:
        count, last = session.execute("SELECT COUNT(*), MAX(seq) FROM audit_log")[0]
    return int(count), int(last or 0)


def _batches(database: Database, last: int, batch_size: int) -> Iterator[list[Row]]:
    """The entries up to ``last`` in seq order, a batch at a time, each in its own short read
    (the trail only grows, so batches read at different moments still fit together)."""
    after = 0
    while after < last:
        with database.read() as session:
            batch = session.execute(
                "SELECT seq, recorded, event, prev_hash, hash FROM audit_log "
                "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, last, batch_size),
            )
        if not batch:
            return
        yield batch
        after = int(batch[-1][0])


# -- reading it -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """What ``audit tail`` shows of an entry: no identifiers beyond resource references."""

    seq: int
    recorded: str
    client: str
    interaction: str
    action: str
    outcome: str
    entity_count: int


def recent(database: Database, limit: int) -> list[Entry]:
    """The last ``limit`` entries, oldest first."""
    with database.read() as session:
        rows = session.execute(
            "SELECT seq, recorded, event FROM audit_log ORDER BY seq DESC LIMIT ?", (limit,)
        )
    return [_summary(int(seq), recorded, json.loads(event)) for seq, recorded, event in rows[::-1]]


def _summary(seq: int, recorded: str, event: dict[str, Any]) -> Entry:
    agent = (event.get("agent") or [{}])[0].get("who", {})
    subtype = (event.get("subtype") or [{}])[0].get("code", "?")
    entities = [e for e in event.get("entity", []) if "what" in e]
    return Entry(
        seq=seq,
        recorded=recorded,
        client=agent.get("identifier", {}).get("value") or agent.get("display", "?"),
        interaction=subtype,
        action=event.get("action", "?"),
        outcome=event.get("outcome", "?"),
        entity_count=len(entities),
    )
