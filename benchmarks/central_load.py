"""Loading central with a million resources in process, through its own write path.

Over HTTP at ~2,000 resources a second a million take eight minutes; in process they take a
few. Each synthetic transaction bundle becomes what ``central.fhir.bundles`` would make of it,
and goes through ``central.fhir.store.apply`` with the AuditEvent the server writes for a
transaction (``central.audit.append``), so the tables hold exactly the rows the server would
write for those bundles:

- every POST gets a server ID (``store.assign_id``, a UUIDv7), and each ``urn:uuid:`` reference
  is rewritten to ``Type/id``;
- a conditional create (``ifNoneExist``: the shared facilities and clinicians) whose resource
  was written before is not written again, and references to it name the first one, as the
  server's search for the match finds it;
- each bundle has its own ``now`` (its ``lastUpdated``) and its own AuditEvent.

Two things differ from the server, neither in what is stored: the structural validation with
``fhir.resources`` is skipped (the generator's resources pass it, and it stores the JSON as
sent, so it changes nothing), and many bundles share one database transaction (one commit per
``per_transaction`` bundles instead of per bundle).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks.report import Progress
from central import audit
from central.callers import Caller
from central.clock import Clock, instant
from central.database import Database, Session
from central.fhir import store
from central.fhir.interactions import patients_of
from central.fhir.store import Write

PROGRESS_EVERY = 100_000


@dataclass
class Loaded:
    """What was loaded: resources written, bundle entries taken (a conditional create met
    again is an entry but no write), Patient IDs written, how long it took."""

    written: int = 0
    entries: int = 0
    patients: list[str] = field(default_factory=list)
    seconds: float = 0.0


# Conditional creates already written: (type, criteria) -> ID.
Shared = dict[tuple[str, str], str]


def load(
    database: Database,
    caller: Caller,
    bundles: Iterable[dict[str, Any]],
    *,
    resources: int,
    per_transaction: int,
    clock: Clock,
    progress: Progress,
) -> Loaded:
    """Store bundles as the server would for ``caller`` until ``resources`` are written (or
    the bundles run out), ``per_transaction`` bundles to a transaction; report progress."""
    loaded, shared = Loaded(), Shared()
    started = time.perf_counter()
    reported = 0
    batches = _batches(iter(bundles), per_transaction)
    while loaded.written < resources and (batch := next(batches, None)) is not None:
        with database.write() as session:
            for bundle in batch:
                if loaded.written >= resources:
                    break
                written, patients = _store_bundle(session, caller, bundle, shared, clock)
                loaded.entries += len(bundle["entry"])
                loaded.written += written
                loaded.patients += patients
        if loaded.written - reported >= PROGRESS_EVERY:
            reported = loaded.written
            rate = loaded.written / (time.perf_counter() - started)
            progress(
                f"central: loaded {loaded.written:,} of {resources:,} resources ({rate:,.0f}/s)"
            )
    loaded.seconds = time.perf_counter() - started
    return loaded


def _batches(bundles: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while batch := [b for _, b in zip(range(size), bundles, strict=False)]:
        yield batch


def _store_bundle(
    session: Session, caller: Caller, bundle: dict[str, Any], shared: Shared, clock: Clock
) -> tuple[int, list[str]]:
    """One transaction bundle's writes and AuditEvent; returns how many resources it wrote,
    and the IDs of the Patients among them."""
    writes = _transaction_writes(bundle, shared)
    now = clock.now()
    outcomes = store.apply(session, caller, writes, instant(now))
    event = audit.audit_event(
        caller,
        action="E",
        interaction="transaction",
        outcome="0",
        entities=[f"{w.resource_type}/{w.id}" for w in writes],
        patients=patients_of([o.stored for o in outcomes]),
        query=None,
        at=now,
    )
    audit.append(session, [event], now)
    return len(writes), [w.id for w in writes if w.resource_type == "Patient"]


def _transaction_writes(bundle: dict[str, Any], shared: Shared) -> list[Write]:
    """The writes of a transaction of POSTs, IDs given and references rewritten."""
    urls: dict[str, str] = {}
    writes: list[Write] = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        kind = resource["resourceType"]
        criteria = entry["request"].get("ifNoneExist")
        found = shared.get((kind, criteria)) if criteria else None
        if found is not None:
            urls[entry["fullUrl"]] = f"{kind}/{found}"
            continue
        rid = store.assign_id()
        if criteria:
            shared[(kind, criteria)] = rid
        urls[entry["fullUrl"]] = f"{kind}/{rid}"
        writes.append(Write("POST", kind, rid, resource))
    for write in writes:
        _rewrite_references(write.resource, urls)
    return writes


def _rewrite_references(resource: object, urls: dict[str, str]) -> None:
    """``urn:uuid:`` references as ``Type/id``; ValueError for one no entry has (the server
    refuses that bundle)."""
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "reference" and isinstance(value, str) and value.startswith("urn:"):
                    if value not in urls:
                        raise ValueError("a reference names a fullUrl that no entry has")
                    node[key] = urls[value]
                elif isinstance(value, dict | list):
                    stack.append(value)
