"""Transaction and batch bundles (``POST /fhir``).

A transaction is atomic: every entry is validated first, then all of them are done in one
database transaction, or none is. Entries are processed in FHIR's order (DELETE, POST, PUT,
GET) and answered in the order they came. ``fullUrl``s of new resources (``urn:uuid:...``) get
server IDs, and every reference to them in the bundle is rewritten; a conditional reference
(``Patient?identifier=...``) resolves to the one resource it matches.

A batch is a list of independent requests: each entry succeeds or fails on its own, and the
response says which.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from central import audit
from central.clock import instant
from central.database import Session
from central.errors import BadReference, BadRequest, CentralError, InvalidResource, TooLarge
from central.fhir import interactions, store
from central.fhir.interactions import Context
from central.fhir.outcome import operation_outcome
from central.fhir.store import Method, Outcome, Stored, Write
from central.fhir.validation import ID_PATTERN, require_accepted, validate

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


@dataclass
class Entry:
    index: int
    method: str
    resource_type: str
    id: str | None
    query: str | None
    full_url: str | None
    resource: dict[str, Any] | None
    if_match: int | None
    if_none_exist: str | None


def process(ctx: Context, body: object) -> dict[str, Any]:
    """Do a transaction or batch bundle; return the response bundle."""
    bundle_type, raw_entries = _check_bundle(ctx, body)
    if bundle_type == "transaction":
        entries = [_parse_entry(i, raw) for i, raw in enumerate(raw_entries)]
        return _response("transaction-response", _transaction(ctx, entries))
    return _response(
        "batch-response", [_batch_entry(ctx, i, raw) for i, raw in enumerate(raw_entries)]
    )


def _check_bundle(ctx: Context, body: object) -> tuple[str, list[Any]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise InvalidResource("POST /fhir takes a Bundle of type transaction or batch")
    bundle_type = body.get("type")
    if bundle_type not in ("transaction", "batch"):
        raise InvalidResource("Bundle.type: POST /fhir takes a transaction or a batch")
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidResource("Bundle.entry: must be a list")
    if len(entries) > ctx.settings.max_bundle_entries:
        raise TooLarge(
            f"the bundle has {len(entries)} entries; central takes at most "
            f"{ctx.settings.max_bundle_entries} in one"
        )
    return str(bundle_type), entries


def _parse_entry(index: int, raw: object) -> Entry:
    try:
        return _entry(index, raw)
    except CentralError as exc:
        exc.args = (f"entry {index}: {exc}",)
        raise


def _entry(index: int, raw: object) -> Entry:
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise InvalidResource("each entry needs a request (method and url)")
    request = raw["request"]
    method = request.get("method")
    if method not in _ORDER:
        raise BadRequest("request.method: central takes GET, POST, PUT and DELETE in bundles")
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidResource("request.url: missing")
    path, _, query = url.partition("?")
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts:
        raise BadRequest("request.url: must name a resource type")
    resource_type = parts[0]
    rid = parts[1] if len(parts) > 1 else None
    if method != "GET":
        require_accepted(resource_type)
    if rid is not None and not ID_PATTERN.match(rid):
        raise BadRequest("request.url: the ID is not a valid FHIR id")
    resource = None
    if method in ("POST", "PUT"):
        resource = validate(raw.get("resource"), expected_type=resource_type)
        if method == "PUT" and rid is not None and resource.get("id") != rid:
            raise BadRequest(f"the {resource_type}'s id must be the ID in request.url")
    if method == "PUT" and rid is None and not query:
        raise BadRequest("request.url: PUT needs an ID or search criteria")
    full_url = raw.get("fullUrl")
    return Entry(
        index=index,
        method=method,
        resource_type=resource_type,
        id=rid,
        query=query or None,
        full_url=full_url if isinstance(full_url, str) else None,
        resource=resource,
        if_match=_version_tag(request.get("ifMatch")),
        if_none_exist=request.get("ifNoneExist") or None,
    )


def _version_tag(value: object) -> int | None:
    if value is None:
        return None
    text = str(value).strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise BadRequest('ifMatch: must be a version tag such as W/"3"')
    return int(text)


# -- transaction ------------------------------------------------------------------------------------


def _transaction(ctx: Context, entries: list[Entry]) -> list[dict[str, Any]]:
    now = ctx.now()
    with ctx.database.write() as session:
        answers: dict[int, dict[str, Any]] = {}
        read: list[Stored] = []  # what the bundle answers with but does not write
        existing = _resolve_conditionals(session, ctx, entries, answers, read)
        names = _assign_ids(entries, existing)
        for entry in entries:
            if entry.resource is not None:
                _rewrite_references(session, ctx, entry, names)
        writes, owners = _writes(entries, existing)
        outcomes = store.apply(
            session, ctx.caller, writes, instant(now), base_url=ctx.settings.fhir_base
        )
        for entry, outcome in zip(owners, outcomes, strict=True):
            answers[entry.index] = _answer(outcome, entry.method)
        for entry in sorted(entries, key=lambda e: e.index):
            if entry.method == "GET":
                found = _get(session, ctx, entry)
                read.append(found)
                answers[entry.index] = {
                    "resource": found.content,
                    "response": _response_part(found, 200),
                }
        audit.append(session, [_audit(ctx, writes, outcomes, read, now)], now)
    return [answers[e.index] for e in entries]


def _resolve_conditionals(
    session: Session,
    ctx: Context,
    entries: list[Entry],
    answers: dict[int, dict[str, Any]],
    read: list[Stored],
) -> dict[int, str]:
    """Entries whose condition found a resource: conditional create answers with it (added to
    ``read``) and writes nothing; conditional update and delete act on it."""
    found: dict[int, str] = {}
    conditions = [(e, criteria) for e in entries if (criteria := _condition(e))]
    store.lock_conditions(session, [(e.resource_type, criteria) for e, criteria in conditions])
    for entry, criteria in conditions:
        with _about(entry):
            match = interactions.find_one(session, ctx, entry.resource_type, criteria)
        if match is not None:
            found[entry.index] = match
            if entry.method == "POST":
                stored = store.read(session, ctx.caller, entry.resource_type, match)
                read.append(stored)
                answers[entry.index] = _answer(Outcome(stored, False, False), "POST")
    return found


def _condition(entry: Entry) -> str | None:
    """The search criteria of a conditional create, update or delete."""
    if entry.method == "POST":
        return entry.if_none_exist
    if entry.method in ("PUT", "DELETE") and entry.id is None:
        return entry.query
    return None


def _assign_ids(entries: list[Entry], existing: dict[int, str]) -> dict[str, str]:
    """Give each entry its resource's ID; return fullUrl -> ``Type/id`` for reference rewriting."""
    names: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for entry in sorted(entries, key=lambda e: _ORDER[e.method]):
        if entry.method == "GET":
            continue
        if entry.index in existing:
            entry.id = existing[entry.index]
        elif entry.method == "POST" or entry.id is None:
            given = entry.resource.get("id") if entry.method == "PUT" and entry.resource else None
            entry.id = given if isinstance(given, str) else store.assign_id()
        key = (entry.resource_type, entry.id)
        # Deleting twice too: both would write the same next version (FHIR: a transaction whose
        # entries' identities overlap fails).
        if key in seen:
            raise BadRequest(
                f"entry {entry.index}: the bundle writes this {entry.resource_type} twice"
            )
        seen.add(key)
        if entry.full_url:
            if entry.full_url in names:
                # bdl-7: a reference to a fullUrl two entries share would name either of them.
                raise BadRequest(f"entry {entry.index}: another entry has the same fullUrl")
            names[entry.full_url] = f"{entry.resource_type}/{entry.id}"
    return names


def _rewrite_references(
    session: Session, ctx: Context, entry: Entry, names: dict[str, str]
) -> None:
    stack: list[Any] = [entry.resource]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "reference" and isinstance(value, str):
                    node[key] = _resolve(session, ctx, entry, value, names)
                elif isinstance(value, dict | list):
                    stack.append(value)


def _resolve(
    session: Session, ctx: Context, entry: Entry, reference: str, names: dict[str, str]
) -> str:
    if reference in names:
        return names[reference]
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        raise BadReference(f"entry {entry.index}: a reference names a fullUrl that no entry has")
    base = ctx.settings.fhir_base + "/"
    if reference.startswith(base):
        return reference.removeprefix(base)
    kind, mark, query = reference.partition("?")
    if mark and kind.isalpha():
        with _about(entry):
            match = interactions.find_one(session, ctx, kind, query)
        if match is None:
            raise BadReference(
                f"entry {entry.index}: a conditional reference to {kind} matches nothing"
            )
        return f"{kind}/{match}"
    return reference


def _writes(entries: list[Entry], existing: dict[int, str]) -> tuple[list[Write], list[Entry]]:
    writes, owners = [], []
    for entry in sorted(entries, key=lambda e: (_ORDER[e.method], e.index)):
        if entry.method == "GET" or (entry.method == "POST" and entry.index in existing):
            continue
        if entry.id is None:
            continue  # a conditional delete that matched nothing
        method: Method = (
            "DELETE" if entry.method == "DELETE" else "PUT" if entry.method == "PUT" else "POST"
        )
        writes.append(Write(method, entry.resource_type, entry.id, entry.resource, entry.if_match))
        owners.append(entry)
    return writes, owners


def _get(session: Session, ctx: Context, entry: Entry) -> Stored:
    if entry.id is None:
        raise BadRequest(f"entry {entry.index}: GET in a transaction reads one resource by ID")
    ctx.caller.require("read", entry.resource_type)
    return store.read(session, ctx.caller, entry.resource_type, entry.id)


@contextmanager
def _about(entry: Entry) -> Iterator[None]:
    """Errors raised inside say which entry they are about."""
    try:
        yield
    except CentralError as exc:
        exc.args = (f"entry {entry.index}: {exc}",)
        raise


def _audit(
    ctx: Context, writes: list[Write], outcomes: list[Outcome], read: list[Stored], now: Any
) -> dict[str, Any]:
    """One AuditEvent of the whole transaction: what it wrote and what it answered with."""
    return audit.audit_event(
        ctx.caller,
        action="E",
        interaction="transaction",
        outcome="0",
        entities=[
            *(f"{w.resource_type}/{w.id}" for w in writes),
            *(f"{s.resource_type}/{s.id}" for s in read),
        ],
        patients=interactions.patients_of([*(o.stored for o in outcomes), *read]),
        query=None,
        at=now,
    )


# -- batch ------------------------------------------------------------------------------------------


def _batch_entry(ctx: Context, index: int, raw: object) -> dict[str, Any]:
    try:
        return _answer_one(ctx, _parse_entry(index, raw))
    except CentralError as exc:
        return {"response": {"status": str(exc.status), "outcome": operation_outcome(exc)}}


def _answer_one(ctx: Context, entry: Entry) -> dict[str, Any]:
    if entry.method == "GET":
        if entry.id is None:
            raise BadRequest(f"entry {entry.index}: GET in a batch reads one resource by ID")
        found = interactions.read(ctx, entry.resource_type, entry.id)
        return {"resource": found.content, "response": _response_part(found, 200)}
    if entry.method == "POST":
        outcome = interactions.create(
            ctx, entry.resource_type, entry.resource, if_none_exist=entry.if_none_exist
        )
    elif entry.method == "PUT" and entry.id is not None:
        outcome = interactions.update(
            ctx, entry.resource_type, entry.id, entry.resource, if_match=entry.if_match
        )
    elif entry.method == "PUT":
        outcome = interactions.conditional_update(
            ctx, entry.resource_type, entry.query or "", entry.resource
        )
    else:
        if entry.id is None:
            raise BadRequest(f"entry {entry.index}: DELETE in a batch needs an ID")
        outcome = interactions.delete(ctx, entry.resource_type, entry.id)
    return _answer(outcome, entry.method)


# -- answers ----------------------------------------------------------------------------------------


def _answer(outcome: Outcome, method: str) -> dict[str, Any]:
    if method == "DELETE":
        return {"response": {"status": _STATUS_TEXT[204] if outcome.changed else _STATUS_TEXT[200]}}
    status = 201 if outcome.created else 200
    return {"response": _response_part(outcome.stored, status)}


def _response_part(stored: Stored, status: int) -> dict[str, Any]:
    return {
        "status": _STATUS_TEXT[status],
        "location": f"{stored.resource_type}/{stored.id}/_history/{stored.version}",
        "etag": stored.etag,
        "lastModified": stored.last_updated,
    }


def _response(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
