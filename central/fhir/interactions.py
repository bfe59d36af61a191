"""The FHIR interactions as the HTTP layer and the bundle processor call them: each one checks
scope and region, does its work in one database transaction, writes its AuditEvent in the same
transaction (reads: right after), and returns what the response needs.

    create, update, conditional update, delete, read, vread, history, search
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from central import audit
from central.callers import Caller
from central.clock import Clock, instant
from central.database import Database, Session
from central.errors import BadRequest, PreconditionFailed
from central.fhir import search, store
from central.fhir.store import HistoryEntry, Outcome, Stored, Write
from central.fhir.validation import validate
from central.settings import Settings

_ACTIONS = {"POST": "C", "PUT": "U", "DELETE": "D"}
_INTERACTIONS = {"POST": "create", "PUT": "update", "DELETE": "delete"}


@dataclass(frozen=True)
class Context:
    """What every interaction needs: the database, settings, clock and who is asking."""

    database: Database
    settings: Settings
    clock: Clock
    caller: Caller

    def now(self) -> datetime:
        return self.clock.now()


# -- writes -----------------------------------------------------------------------------------------


def create(ctx: Context, resource_type: str, body: object, *, if_none_exist: str | None) -> Outcome:
    """POST Type. With ``If-None-Exist``, an existing match is returned instead (201 vs 200)."""
    resource = validate(body, expected_type=resource_type)
    ctx.caller.require("write", resource_type)
    with ctx.database.write() as session:
        if if_none_exist:
            store.lock_conditions(session, [(resource_type, if_none_exist)])
            match = find_one(session, ctx, resource_type, if_none_exist)
            if match is not None:
                found = store.read(session, ctx.caller, resource_type, match)
                _audit_match(session, ctx, found)
                return Outcome(found, False, False)
        write = Write("POST", resource_type, store.assign_id(), resource)
        return write_resources(session, ctx, [write])[0]


def _audit_match(session: Session, ctx: Context, found: Stored) -> None:
    """A conditional create that found its match creates nothing but answers with the
    resource: a read of it (action R) by the create interaction."""
    now = ctx.now()
    event = audit.audit_event(
        ctx.caller,
        action="R",
        interaction="create",
        outcome="0",
        entities=[f"{found.resource_type}/{found.id}"],
        patients=patients_of([found]),
        query=None,
        at=now,
    )
    audit.append(session, [event], now)


def update(
    ctx: Context, resource_type: str, rid: str, body: object, *, if_match: int | None
) -> Outcome:
    """PUT Type/id: update, or create with this ID (FHIR's update-as-create)."""
    resource = validate(body, expected_type=resource_type)
    if resource.get("id") != rid:
        raise BadRequest(f"the {resource_type}'s id must be the ID in the URL")
    with ctx.database.write() as session:
        return write_resources(
            session, ctx, [Write("PUT", resource_type, rid, resource, if_match)]
        )[0]


def conditional_update(ctx: Context, resource_type: str, query: str, body: object) -> Outcome:
    """PUT Type?criteria: update the one match, or create if none; 412 if several."""
    resource = validate(body, expected_type=resource_type)
    with ctx.database.write() as session:
        store.lock_conditions(session, [(resource_type, query)])
        match = find_one(session, ctx, resource_type, query)
        given = resource.get("id")
        if match is not None and given is not None and given != match:
            raise BadRequest(f"the {resource_type}'s id is not the ID of the resource matched")
        rid = match or given or store.assign_id()
        return write_resources(session, ctx, [Write("PUT", resource_type, rid, resource)])[0]


def delete(ctx: Context, resource_type: str, rid: str) -> Outcome:
    with ctx.database.write() as session:
        return write_resources(session, ctx, [Write("DELETE", resource_type, rid)])[0]


def write_resources(session: Session, ctx: Context, writes: Sequence[Write]) -> list[Outcome]:
    now = ctx.now()
    outcomes = store.apply(
        session, ctx.caller, writes, instant(now), base_url=ctx.settings.fhir_base
    )
    events = [
        audit_write(ctx, w.method, [f"{w.resource_type}/{w.id}"], patients_of([o.stored]), now)
        for w, o in zip(writes, outcomes, strict=True)
    ]
    audit.append(session, events, now)
    return outcomes


def find_one(session: Session, ctx: Context, resource_type: str, query: str) -> str | None:
    """The ID of the one resource matching ``query`` (a search's query string), or None.
    Raises PreconditionFailed if several match (FHIR's conditional create and update)."""
    params = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    if not params:
        raise BadRequest("a conditional request needs search criteria")
    parsed = search.parse(
        resource_type,
        [*params, ("_count", "2")],
        page_size=2,
        max_page_size=ctx.settings.max_page_size,
        base_url=ctx.settings.fhir_base,
        now=ctx.now(),
    )
    page = search.execute(session, parsed, ctx.caller)
    if len(page.resources) > 1:
        raise PreconditionFailed(
            f"the criteria match more than one {resource_type}; make them more selective"
        )
    return str(page.resources[0]["id"]) if page.resources else None


# -- reads ------------------------------------------------------------------------------------------


def read(ctx: Context, resource_type: str, rid: str, version: int | None = None) -> Stored:
    ctx.caller.require("read", resource_type)
    with ctx.database.read() as session:
        if version is None:
            found = store.read(session, ctx.caller, resource_type, rid)
        else:
            found = store.vread(session, ctx.caller, resource_type, rid, version)
    _audit_read(ctx, "vread" if version else "read", [found], None)
    return found


def history(
    ctx: Context,
    *,
    resource_type: str | None,
    rid: str | None,
    since: str | None,
    before: str | None,
    count: int,
) -> list[HistoryEntry]:
    if resource_type is not None:
        ctx.caller.require("read", resource_type)
    with ctx.database.read() as session:
        if resource_type is not None and rid is not None:
            store.read_any(session, ctx.caller, resource_type, rid)
        entries = store.history(
            session,
            ctx.caller,
            resource_type=resource_type,
            rid=rid,
            since=since,
            before=before,
            count=count,
        )
    if resource_type is None:
        entries = [e for e in entries if ctx.caller.may("read", e.stored.resource_type)]
    level = "instance" if rid else "type" if resource_type else "system"
    _audit_read(ctx, f"history-{level}", [e.stored for e in entries], None)
    return entries


def run_search(
    ctx: Context, resource_type: str, params: list[tuple[str, str]], *, lenient: bool
) -> tuple[search.SearchQuery, search.SearchPage]:
    """The search and its first page (or the page its cursor names)."""
    ctx.caller.require("read", resource_type)
    query = search.parse(
        resource_type,
        params,
        page_size=ctx.settings.page_size,
        max_page_size=ctx.settings.max_page_size,
        lenient=lenient,
        base_url=ctx.settings.fhir_base,
        now=ctx.now(),
    )
    with ctx.database.read() as session:
        page = search.execute(session, query, ctx.caller)
    found = [_stored(r) for r in (*page.resources, *page.included)]
    _audit_read(ctx, "search-type", found, sorted({name for name, _ in query.params}))
    return query, page


# -- audit ------------------------------------------------------------------------------------------


def audit_write(
    ctx: Context, method: str, entities: list[str], patients: list[str], at: datetime
) -> dict[str, Any]:
    return audit.audit_event(
        ctx.caller,
        action=_ACTIONS[method],
        interaction=_INTERACTIONS[method],
        outcome="0",
        entities=entities,
        patients=patients,
        query=None,
        at=at,
    )


def _audit_read(
    ctx: Context, interaction: str, found: Sequence[Stored], names: list[str] | None
) -> None:
    """Reads leave their AuditEvent in a short write transaction of their own, after the read
    (a read transaction cannot write on every backend)."""
    now = ctx.now()
    event = audit.audit_event(
        ctx.caller,
        action="R" if interaction in ("read", "vread") else "E",
        interaction=interaction,
        outcome="0",
        entities=[f"{s.resource_type}/{s.id}" for s in found],
        patients=patients_of(found),
        # audit_event takes a query string and keeps only its names: give it names alone.
        query=urlencode([(name, "") for name in names]) if names else None,
        at=now,
    )
    with ctx.database.write() as session:
        audit.append(session, [event], now)


def patients_of(found: Sequence[Stored]) -> list[str]:
    """IDs of the patients whose data these resources are."""
    patients: set[str] = set()
    for s in found:
        if s.resource_type == "Patient":
            patients.add(s.id)
        elif s.content is not None:
            for name in store.PATIENT_ELEMENTS:
                ref = s.content.get(name)
                target = ref.get("reference") if isinstance(ref, dict) else None
                if isinstance(target, str) and target.startswith("Patient/"):
                    patients.add(target.removeprefix("Patient/"))
    return sorted(patients)


def _stored(resource: dict[str, Any]) -> Stored:
    meta = resource.get("meta", {})
    return Stored(
        resource["resourceType"],
        resource["id"],
        int(meta.get("versionId", 0)),
        meta.get("lastUpdated", ""),
        None,
        resource,
    )
