"""The FHIR store: reading, writing and the history of resources, on ``central.database``.

Every write goes through ``apply``, which takes a list of writes (one for a plain create or
update, many for a transaction bundle) and does them in the caller's database transaction:

1. lock and load the current rows of every resource named (PostgreSQL: ``FOR UPDATE``);
2. decide each resource's version (a write identical to what is stored is a no-op and keeps
   its version, so a hub that pushes the same chart twice changes nothing) and its region;
3. check that every reference points at a resource that exists, here or in the same writes;
4. write rows, history and search indexes with one ``executemany`` per table.

Nothing is written unless every step succeeds: any error raises, and the transaction rolls back.

Regions: a resource belongs to the region of its ``meta.tag`` (``urn:rural-care:region``), or
else of its patient, or else of the client that wrote it. A client of one region reads and
writes only its region's resources, and a resource must be in its patient's region.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from central.callers import Caller
from central.database import Session
from central.errors import (
    BadReference,
    Forbidden,
    Gone,
    NotFound,
    PreconditionFailed,
)
from central.fhir.ids import new_id
from central.fhir.parameters import index_rows
from central.fhir.validation import region_tag, with_region_tag

Method = Literal["POST", "PUT", "DELETE"]
PATIENT_ELEMENTS = ("subject", "patient", "for")
_IN_CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class Stored:
    """One version of a resource as stored. ``content`` is None for a deleted version."""

    resource_type: str
    id: str
    version: int
    last_updated: str
    region: str | None
    content: dict[str, Any] | None

    @property
    def deleted(self) -> bool:
        return self.content is None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass
class Write:
    """One resource to create, update or delete. ``resource`` is None for a delete."""

    method: Method
    resource_type: str
    id: str
    resource: dict[str, Any] | None = None
    if_match: int | None = None  # the version the client read (If-Match), if it said one


@dataclass(frozen=True)
class Outcome:
    stored: Stored
    created: bool
    changed: bool  # False when the write was identical to what was stored


@dataclass
class _Current:
    version: int
    deleted: bool
    region: str | None
    content: str | None


@dataclass
class _Plan:
    writes: Sequence[Write]
    current: dict[tuple[str, str], _Current]
    regions: dict[tuple[str, str], str | None] = field(default_factory=dict)


def assign_id() -> str:
    """A new server-assigned ID (UUIDv7)."""
    return new_id()


def encode(resource: dict[str, Any]) -> str:
    return msgspec.json.encode(resource).decode()


def decode(text: str) -> dict[str, Any]:
    value: dict[str, Any] = msgspec.json.decode(text)
    return value


# -- reading ---------------------------------------------------------------------------------------


def read(session: Session, caller: Caller, resource_type: str, rid: str) -> Stored:
    """The current version. Raises NotFound, Gone (deleted) or Forbidden (another region)."""
    rows = session.execute(
        "SELECT version, last_updated, region, deleted, content FROM resources "
        "WHERE rtype = ? AND id = ?",
        [resource_type, rid],
    )
    if not rows:
        raise NotFound(f"there is no {resource_type} with this ID")
    version, last_updated, region, deleted, content = rows[0]
    caller.require_region(region)
    if deleted:
        raise Gone(f"this {resource_type} was deleted")
    return Stored(resource_type, rid, version, last_updated, region, decode(content))


def read_any(session: Session, caller: Caller, resource_type: str, rid: str) -> None:
    """Check that the resource exists (even if deleted) and that the caller may see it."""
    rows = session.execute(
        "SELECT region FROM resources WHERE rtype = ? AND id = ?", [resource_type, rid]
    )
    if not rows:
        raise NotFound(f"there is no {resource_type} with this ID")
    caller.require_region(rows[0][0])


def vread(session: Session, caller: Caller, resource_type: str, rid: str, version: int) -> Stored:
    rows = session.execute(
        "SELECT last_updated, region, content FROM history "
        "WHERE rtype = ? AND id = ? AND version = ?",
        [resource_type, rid, version],
    )
    if not rows:
        raise NotFound(f"there is no version {version} of this {resource_type}")
    last_updated, region, content = rows[0]
    caller.require_region(region)
    if content is None:
        raise Gone(f"version {version} of this {resource_type} is its deletion")
    return Stored(resource_type, rid, version, last_updated, region, decode(content))


@dataclass(frozen=True)
class HistoryEntry:
    stored: Stored
    method: str


def history(
    session: Session,
    caller: Caller,
    *,
    resource_type: str | None,
    rid: str | None,
    since: str | None,
    before: str | None,
    count: int,
) -> list[HistoryEntry]:
    """Versions newest first: of one resource, of one type, or of everything the caller may
    see. ``since``/``before`` are instants in central's fixed-width form."""
    where, params = ["1 = 1"], []
    if resource_type is not None:
        where.append("rtype = ?")
        params.append(resource_type)
    if rid is not None:
        where.append("id = ?")
        params.append(rid)
    if since is not None:
        where.append("last_updated >= ?")
        params.append(since)
    if before is not None:
        where.append("last_updated < ?")
        params.append(before)
    if not caller.sees_all_regions:
        where.append("region = ?")
        params.append(caller.region)
    rows = session.execute(
        "SELECT rtype, id, version, last_updated, region, method, content FROM history "
        f"WHERE {' AND '.join(where)} ORDER BY last_updated DESC, version DESC LIMIT ?",
        [*params, count],
    )
    return [
        HistoryEntry(
            Stored(rtype, hid, version, updated, region, None if text is None else decode(text)),
            method,
        )
        for rtype, hid, version, updated, region, method, text in rows
    ]


def existing_ids(session: Session, resource_type: str, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` exist (not deleted) as ``resource_type``."""
    found: set[str] = set()
    for chunk in _chunks(sorted(set(ids))):
        marks = ", ".join("?" * len(chunk))
        rows = session.execute(
            f"SELECT id FROM resources WHERE rtype = ? AND deleted = 0 AND id IN ({marks})",
            [resource_type, *chunk],
        )
        found.update(row[0] for row in rows)
    return found


# -- writing ---------------------------------------------------------------------------------------


def lock_conditions(session: Session, conditions: Iterable[tuple[str, str]]) -> None:
    """Serialise conditional writes on the same (type, criteria) until the transaction ends, so
    that two clients creating "the facility with this identifier" at once make one, not two
    (after which every later conditional create of it fails with 412). PostgreSQL: transaction
    advisory locks, taken in one global order so that two bundles never deadlock; call before
    the condition's search. SQLite needs none: a write transaction excludes other writers."""
    if session.dialect != "postgresql":
        return
    for key in sorted({_condition_key(kind, criteria) for kind, criteria in conditions}):
        session.execute("SELECT pg_advisory_xact_lock(?)", [key])


def _condition_key(resource_type: str, criteria: str) -> int:
    digest = hashlib.blake2b(f"{resource_type}?{criteria}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def apply(
    session: Session, caller: Caller, writes: Sequence[Write], now: str, *, base_url: str = ""
) -> list[Outcome]:
    """Do ``writes`` in the session's transaction (see the module's docstring). Raises
    Forbidden, PreconditionFailed, Gone, NotFound or BadReference; the caller rolls back."""
    plan = _Plan(writes, _load_current(session, writes))
    for write in writes:
        caller.require("write", write.resource_type)
        _check_precondition(write, plan.current.get((write.resource_type, write.id)))
    _assign_regions(session, caller, plan)
    _check_references(session, caller, plan)
    outcomes = [_outcome(write, plan, now) for write in writes]
    _store(session, plan, outcomes, base_url)
    return outcomes


def _load_current(session: Session, writes: Sequence[Write]) -> dict[tuple[str, str], _Current]:
    by_type: dict[str, list[str]] = defaultdict(list)
    for write in writes:
        by_type[write.resource_type].append(write.id)
    lock = " FOR UPDATE" if session.dialect == "postgresql" else ""
    current: dict[tuple[str, str], _Current] = {}
    for resource_type, ids in by_type.items():
        for chunk in _chunks(sorted(set(ids))):
            marks = ", ".join("?" * len(chunk))
            rows = session.execute(
                "SELECT id, version, deleted, region, content FROM resources "
                f"WHERE rtype = ? AND id IN ({marks}){lock}",
                [resource_type, *chunk],
            )
            for rid, version, deleted, region, content in rows:
                current[(resource_type, rid)] = _Current(version, bool(deleted), region, content)
    return current


def _check_precondition(write: Write, current: _Current | None) -> None:
    if write.if_match is None:
        return
    if current is None or current.version != write.if_match:
        raise PreconditionFailed(
            f"If-Match names version {write.if_match} of this {write.resource_type}, but the "
            f"current version is {'none' if current is None else current.version}; read it "
            "again and retry"
        )


def _assign_regions(session: Session, caller: Caller, plan: _Plan) -> None:
    """Decide each written resource's region; refuse what crosses regions."""
    patients = _patient_regions(session, plan)
    for write in plan.writes:
        key = (write.resource_type, write.id)
        current = plan.current.get(key)
        if current is not None and current.region is not None:
            caller.require_region(current.region)
        if write.resource is None:
            plan.regions[key] = current.region if current else None
            continue
        patient = _patient_of(write)
        patient_region = patients.get(patient) if patient else None
        region = region_tag(write.resource) or patient_region
        if region is None and not caller.sees_all_regions:
            region = caller.region
        if region is not None:
            caller.require_region(region)
            if patient_region is not None and region != patient_region:
                raise Forbidden(
                    f"this {write.resource_type} is tagged with another region than its patient"
                )
            with_region_tag(write.resource, region)
        plan.regions[key] = region


def _patient_regions(session: Session, plan: _Plan) -> dict[str, str | None]:
    """Region of every patient the writes refer to, from the writes themselves or the store."""
    regions: dict[str, str | None] = {}
    for write in plan.writes:
        if write.resource_type == "Patient" and write.resource is not None:
            regions[write.id] = region_tag(write.resource)
    wanted = {p for w in plan.writes if (p := _patient_of(w)) and p not in regions}
    for chunk in _chunks(sorted(wanted)):
        marks = ", ".join("?" * len(chunk))
        rows = session.execute(
            f"SELECT id, region FROM resources WHERE rtype = 'Patient' AND id IN ({marks})",
            list(chunk),
        )
        regions.update(dict(rows))
    return regions


def _patient_of(write: Write) -> str | None:
    """The ID of the patient a resource is about (its patient compartment), if any."""
    if write.resource is None:
        return None
    if write.resource_type == "Patient":
        return write.id
    for name in PATIENT_ELEMENTS:
        ref = write.resource.get(name)
        if isinstance(ref, dict):
            target = ref.get("reference")
            if isinstance(target, str) and target.startswith("Patient/"):
                return target.removeprefix("Patient/")
    return None


def _check_references(session: Session, caller: Caller, plan: _Plan) -> None:
    """Every relative reference must resolve to a resource written here or already stored
    (and visible to the caller). Absolute URLs to other servers and contained (#) references
    are left alone."""
    written = {(w.resource_type, w.id) for w in plan.writes if w.resource is not None}
    wanted: dict[str, set[str]] = defaultdict(set)
    for write in plan.writes:
        if write.resource is None:
            continue
        for target in references(write.resource):
            kind, _, rid = target.partition("/")
            if (kind, rid) not in written:
                wanted[kind].add(rid)
    for kind, ids in wanted.items():
        found = _visible_ids(session, caller, kind, ids)
        missing = len(ids - found)
        if missing:
            raise BadReference(
                f"{missing} reference(s) to {kind} point at nothing central holds (or at "
                "another region's resources)"
            )


def _visible_ids(session: Session, caller: Caller, kind: str, ids: set[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(sorted(ids)):
        marks = ", ".join("?" * len(chunk))
        rows = session.execute(
            f"SELECT id, region FROM resources WHERE rtype = ? AND deleted = 0 AND id IN ({marks})",
            [kind, *chunk],
        )
        found.update(
            rid
            for rid, region in rows
            if caller.sees_all_regions or region in (None, caller.region)
        )
    return found


def references(resource: dict[str, Any]) -> Iterator[str]:
    """Every relative reference ``Type/id`` in the resource (not contained, not absolute)."""
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "reference" and isinstance(value, str):
                    if _is_relative(value):
                        yield value.split("/_history/")[0]
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _is_relative(reference: str) -> bool:
    kind, slash, rid = reference.partition("/")
    return bool(slash) and kind[:1].isupper() and kind.isalpha() and bool(rid) and ":" not in kind


def _outcome(write: Write, plan: _Plan, now: str) -> Outcome:
    key = (write.resource_type, write.id)
    current = plan.current.get(key)
    region = plan.regions.get(key)
    if write.resource is None:
        if current is None or current.deleted:
            # Deleting what is not there is a success that changes nothing (FHIR allows it).
            version = current.version if current else 0
            return Outcome(Stored(*key, version, now, region, None), created=False, changed=False)
        return Outcome(Stored(*key, current.version + 1, now, region, None), False, True)
    resource = write.resource
    resource["id"] = write.id
    if current is not None and not current.deleted and current.content is not None:
        before = decode(current.content)
        if _same(before, resource):
            stored = Stored(*key, current.version, before["meta"]["lastUpdated"], region, before)
            return Outcome(stored, created=False, changed=False)
    version = 1 if current is None else current.version + 1
    meta = resource.setdefault("meta", {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = now
    created = current is None or current.deleted
    return Outcome(Stored(*key, version, now, region, resource), created=created, changed=True)


def _same(before: dict[str, Any], after: dict[str, Any]) -> bool:
    def without_version(resource: dict[str, Any]) -> dict[str, Any]:
        meta = {
            k: v
            for k, v in resource.get("meta", {}).items()
            if k not in ("versionId", "lastUpdated")
        }
        return {**resource, "meta": meta}

    return without_version(before) == without_version(after)


def _store(session: Session, plan: _Plan, outcomes: list[Outcome], base_url: str) -> None:
    rows, history_rows, owners = [], [], []
    tokens: list[tuple[object, ...]] = []
    strings: list[tuple[object, ...]] = []
    dates: list[tuple[object, ...]] = []
    refs: list[tuple[object, ...]] = []
    for write, outcome in zip(plan.writes, outcomes, strict=True):
        if not outcome.changed:
            continue
        s = outcome.stored
        text = None if s.content is None else encode(s.content)
        rows.append(
            (s.resource_type, s.id, s.version, s.last_updated, s.region, int(s.deleted), text)
        )
        history_rows.append(
            (s.resource_type, s.id, s.version, s.last_updated, s.region, write.method, text)
        )
        if (s.resource_type, s.id) in plan.current:
            owners.append((s.resource_type, s.id))
        if s.content is None:
            continue
        index = index_rows(s.content, base_url=base_url)
        head = (s.resource_type, s.id)
        tokens.extend(head + row for row in index.token)
        strings.extend(head + row for row in index.string)
        dates.extend(head + row for row in index.date)
        refs.extend(head + row for row in index.reference)
    for table in ("search_token", "search_string", "search_date", "search_reference"):
        session.executemany(f"DELETE FROM {table} WHERE rtype = ? AND id = ?", owners)
    session.executemany(
        "INSERT INTO resources (rtype, id, version, last_updated, region, deleted, content) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rtype, id) DO UPDATE SET "
        "version = excluded.version, last_updated = excluded.last_updated, "
        "region = excluded.region, deleted = excluded.deleted, content = excluded.content",
        rows,
    )
    session.insert(
        "history",
        ("rtype", "id", "version", "last_updated", "region", "method", "content"),
        history_rows,
    )
    session.insert("search_token", ("rtype", "id", "param", "system", "code"), tokens)
    session.insert("search_string", ("rtype", "id", "param", "value"), strings)
    session.insert("search_date", ("rtype", "id", "param", "low", "high"), dates)
    session.insert("search_reference", ("rtype", "id", "param", "target"), refs)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
