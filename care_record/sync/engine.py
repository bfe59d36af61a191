"""The sync exchange, the same on a hub, a tablet, and a tablet serving a peer.

One side *initiates* (a tablet): it sends a SyncRequest and absorbs the SyncResponse. The other
*responds* (the hub, or a tablet running ``serve-peer``). Both keep, per document, the heads
they know the other side has (``peer_heads``); that memory gives the changes to send in one step.
Where the memory is wrong (a restore from backup, a new hub), the receiver says ``resync`` and
the two run Automerge's own sync protocol for that document, which converges from any state.

Storage is a ``Replica``; every call of ``respond`` or ``absorb`` happens inside one transaction
the caller opened, and the caller commits before it answers or moves on. Every step is
idempotent: changes already held are ignored, an acknowledgement repeated sets the same heads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import automerge.core as am

from care_record.errors import CareRecordError, MissingHistory, NotAChart
from care_record.sync import documents, packing
from care_record.sync.wire import (
    DocHeads,
    DocNotice,
    DocSnapshot,
    DocSync,
    DocUpdate,
    SyncRequest,
    SyncResponse,
)


@dataclass(frozen=True)
class Stored:
    doc: str
    kind: str
    data: bytes
    heads: list[bytes]


class Replica(Protocol):
    """Where one side keeps documents and what it knows of its peers."""

    def get(self, doc_id: str) -> Stored | None: ...

    def put(
        self,
        doc_id: str,
        kind: str,
        data: bytes,
        heads: list[bytes],
        document: am.Document | None = None,
    ) -> None:
        """Store a document (new or merged); the replica rebuilds its indexes from it (from
        ``document``, the same one already loaded, when given). Raises CareRecordError for one
        it cannot keep (not the document ``doc_id``, or too new)."""
        ...

    def peer_heads(self, peer: str, doc_id: str) -> list[bytes] | None:
        """Heads ``peer`` is known to have, or None if it never had the document."""
        ...

    def set_peer_heads(self, peer: str, doc_id: str, heads: list[bytes]) -> None: ...

    def outgoing(self, peer: str) -> Iterable[str]:
        """Documents ``peer`` may see, has had, and whose heads here differ from its own."""
        ...

    def missing(self, peer: str) -> Iterable[str]:
        """Documents ``peer`` may see and never had, in a stable order."""
        ...

    def may_write(self, peer: str, doc_id: str, kind: str, exists: bool) -> bool: ...

    def quarantine(self, peer: str, doc_id: str, kind: str, payload: bytes, reason: str) -> None:
        """Keep what could not be applied, to be reported and looked at; never silently lost."""
        ...

    def leaving(self, peer: str) -> Iterable[DocNotice]:
        """Documents ``peer`` has had but may no longer see (reassigned): it must drop them."""
        ...

    def forget_peer(self, peer: str, doc_id: str) -> None:
        """``peer`` dropped the document: stop tracking what it has of it."""
        ...


class DocumentCache(Protocol):
    """Documents a responder keeps loaded between requests, so that a sync need not load each
    chart it touches again (a hub's ``sync_hub.chart_cache``)."""

    def reading(self, stored: Stored) -> AbstractContextManager[am.Document | None]:
        """``stored`` as a loaded document to read inside the block, or None if none is kept
        that loading its data would give. It is not changed while the block runs."""
        ...

    def take(self, stored: Stored) -> am.Document | None:
        """As ``reading``, but handed over: no longer kept, so the caller may change it."""
        ...

    def keep(self, doc_id: str, doc: am.Document, data: bytes) -> None:
        """Keep ``doc``, which is what loading ``data`` gives, with nothing held back for
        missing history (``documents.Applied.settled``)."""
        ...


# -- responding --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """An update applied to the document as it was read, nothing stored (see ``prepare``)."""

    base: list[bytes] | None  # the document's heads then (None: it did not exist)
    heads: list[bytes]  # the sender's heads, full
    applied: documents.Applied


def prepare(
    update: DocUpdate,
    stored: Stored | None,
    known: list[bytes] | None,
    *,
    append: bool = False,
    cache: DocumentCache | None = None,
) -> Prepared | None:
    """Apply ``update`` to ``stored`` (as read, with the heads ``known`` of the peer), storing
    nothing: Automerge's costly work, which a responder can do before it takes its write
    lock. ``respond`` uses the result only if the document still has the same heads, and
    applies the update again otherwise. None when it fails: ``respond`` then refuses,
    quarantines or resyncs it as usual."""
    try:
        heads, applied = _apply(update, stored, known, append=append, cache=cache)
    except CareRecordError:
        return None
    return Prepared(_heads_of(stored), heads, applied)


def respond(
    replica: Replica,
    peer: str,
    request: SyncRequest,
    *,
    server_time: str,
    prepared: Mapping[int, Prepared] | None = None,
    append: bool = False,
    cache: DocumentCache | None = None,
) -> SyncResponse:
    """Take in a request and build the answer. The caller commits, then sends the answer.

    ``prepared``: ``prepare``'s results, by index of ``request.updates``. ``append``: store
    updated documents as loaded, not saved again (``documents.apply_changes``). ``cache``:
    documents kept loaded, used instead of loading and given what is stored once the answer is
    built (not before: kept, a document could be taken and changed while this request still
    reads it); one kept for a transaction that then rolls back is harmless, as it is used only
    while its heads are the stored ones."""
    response = SyncResponse(server_time=server_time)
    # Acks first: they say what the peer took from our last answer, and its updates (newer)
    # then say what it has now. The other way round, an ack would wind the peer's heads back
    # and its own changes would be echoed to it.
    for ack in request.acks:
        if replica.get(ack.doc) is not None:
            replica.set_peer_heads(peer, ack.doc, ack.heads)
    loaded: dict[str, documents.Applied] = {}  # documents this request stored, loaded
    for index, update in enumerate(request.updates):
        ready = (prepared or {}).get(index)
        if _take_update(
            replica, peer, update, response, loaded, ready=ready, append=append, cache=cache
        ):
            response.applied.append(index)
    for doc_id in request.dropped:
        replica.forget_peer(peer, doc_id)
    response.dropped = list(replica.leaving(peer))
    leaving = {d.doc for d in response.dropped}
    for sync in request.syncs:
        # A chart that left this peer may still take its changes, but must not send it ours.
        _take_sync(replica, peer, sync, response, reply=sync.doc not in leaving)
    skip = set(response.resync) | {s.doc for s in request.syncs} | {d.doc for d in response.dropped}
    mine = {doc_id: a.document for doc_id, a in loaded.items() if a.document is not None}
    outgoing = updates_for(replica, peer, response, skip, loaded=mine, cache=cache)
    response.updates = [u for u, _heads in outgoing]
    _add_snapshots(replica, peer, response, request.max_snapshot_bytes)
    if cache is not None:
        for doc_id, applied in loaded.items():
            if applied.document is not None and applied.settled:
                cache.keep(doc_id, applied.document, applied.data)
    return response


def _take_update(
    replica: Replica,
    peer: str,
    update: DocUpdate,
    response: SyncResponse,
    loaded: dict[str, documents.Applied] | None = None,
    *,
    ready: Prepared | None = None,
    append: bool = False,
    cache: DocumentCache | None = None,
) -> bool:
    """Apply one update (or take ``ready``, applied beforehand to the same heads); True when
    the document now holds everything the sender has."""
    stored = replica.get(update.doc)
    if not replica.may_write(peer, update.doc, update.kind, stored is not None):
        response.quarantined.append(
            DocNotice(update.doc, "refused", "this device may not change that chart")
        )
        return False
    try:
        if ready is not None and ready.base == _heads_of(stored):
            heads, applied = ready.heads, ready.applied
        else:
            known = replica.peer_heads(peer, update.doc)
            heads, applied = _apply(update, stored, known, append=append, cache=cache)
    except MissingHistory:
        # The peer thinks we hold changes we do not (we were restored from an old backup).
        response.resync.append(update.doc)
        return False
    except CareRecordError as exc:
        payload = b"".join(update.changes)
        replica.quarantine(peer, update.doc, update.kind, payload, str(exc))
        response.quarantined.append(DocNotice(update.doc, "quarantined", str(exc)))
        return False
    stale = stored is not None and applied.heads == stored.heads
    if not stale and not _put(replica, peer, update, applied, response.quarantined):
        return False
    if loaded is not None:
        loaded[update.doc] = applied
    if not applied.complete:
        response.resync.append(update.doc)
        return False
    replica.set_peer_heads(peer, update.doc, heads)
    return True


def _take_sync(
    replica: Replica, peer: str, sync: DocSync, response: SyncResponse, *, reply: bool = True
) -> None:
    stored = replica.get(sync.doc)
    if not replica.may_write(peer, sync.doc, sync.kind, stored is not None):
        response.quarantined.append(
            DocNotice(sync.doc, "refused", "this device may not change that chart")
        )
        return
    try:
        if stored is not None:
            _same_kind(stored, sync.kind)
        applied, replies = documents.answer_sync(
            stored.data if stored else b"", sync.kind, sync.messages, doc_id=sync.doc
        )
    except CareRecordError as exc:
        replica.quarantine(peer, sync.doc, sync.kind, b"".join(sync.messages), str(exc))
        response.quarantined.append(DocNotice(sync.doc, "quarantined", str(exc)))
        return
    changed = applied.heads and (stored is None or applied.heads != stored.heads)
    if changed and not _put(replica, peer, sync, applied, response.quarantined):
        return
    if reply:
        response.syncs.append(DocSync(sync.doc, sync.kind, replies))


def updates_for(
    replica: Replica,
    peer: str,
    response: SyncResponse | None,
    skip: set[str],
    *,
    loaded: dict[str, am.Document] | None = None,
    cache: DocumentCache | None = None,
) -> Iterable[tuple[DocUpdate, list[bytes]]]:
    """Changes ``peer`` lacks in documents it has had, each with our full heads. Where what we
    remember of the peer is not in our copy, ask for a resync instead (``response.resync``)."""
    for doc_id in replica.outgoing(peer):
        if doc_id in skip:
            continue
        stored = replica.get(doc_id)
        known = replica.peer_heads(peer, doc_id) or []
        if stored is None:
            continue
        with _reading(stored, (loaded or {}).get(doc_id), cache) as doc:
            if not documents.has_heads(doc, known):
                if response is not None:
                    response.resync.append(doc_id)
                continue
            heads = doc.get_heads()
            missing = documents.changes_since(doc, known)
        changes, sent_heads = packing.pack(missing, heads)
        yield DocUpdate(doc_id, stored.kind, changes, sent_heads), heads


def _add_snapshots(replica: Replica, peer: str, response: SyncResponse, budget: int) -> None:
    used = 0
    pending = list(replica.missing(peer))
    for position, doc_id in enumerate(pending):
        stored = replica.get(doc_id)
        if stored is None:
            continue
        data = documents.compacted(stored.data)
        if response.snapshots and used + len(data) > budget:
            # The page is full: count the rest without reading them.
            response.remaining = len(pending) - position
            return
        used += len(data)
        response.snapshots.append(DocSnapshot(doc_id, stored.kind, data, stored.heads))
    response.remaining = 0


def _put(
    replica: Replica,
    peer: str,
    sent: DocUpdate | DocSnapshot | DocSync,
    applied: documents.Applied,
    notices: list[DocNotice],
) -> bool:
    """Store what arrived. What the replica cannot keep (changes that make another document
    than the one named, which would overwrite that one; a chart too new to read) is set aside
    and reported, and the rest of the exchange goes on."""
    try:
        replica.put(sent.doc, sent.kind, applied.data, applied.heads, applied.document)
    except CareRecordError as exc:
        replica.quarantine(peer, sent.doc, sent.kind, _payload(sent), str(exc))
        notices.append(DocNotice(sent.doc, "quarantined", str(exc)))
        return False
    return True


def _payload(sent: DocUpdate | DocSnapshot | DocSync) -> bytes:
    if isinstance(sent, DocUpdate):
        return b"".join(sent.changes)
    if isinstance(sent, DocSnapshot):
        return sent.data
    return b"".join(sent.messages)


@contextmanager
def _reading(
    stored: Stored, ready: am.Document | None, cache: DocumentCache | None
) -> Iterator[am.Document]:
    """``stored`` loaded, to be read in the block: ``ready`` (this request's own), or the copy
    ``cache`` keeps, or else loaded and given to ``cache`` after the block."""
    if ready is not None:
        yield ready
        return
    if cache is not None:
        with cache.reading(stored) as kept:
            if kept is not None:
                yield kept
                return
    doc = am.Document.load(stored.data)
    yield doc
    if cache is not None and documents.settled(doc, stored.data):
        cache.keep(stored.doc, doc, stored.data)


def _apply(
    update: DocUpdate,
    stored: Stored | None,
    known: list[bytes] | None,
    *,
    append: bool,
    cache: DocumentCache | None = None,
) -> tuple[list[bytes], documents.Applied]:
    """The sender's full heads, and its update applied to ``stored`` (to the copy ``cache``
    keeps loaded, if it does, taken from it). Raises MissingHistory, or CareRecordError for
    changes that are unreadable or not of that chart."""
    changes, heads = _expand(update, stored, known)
    if stored is None:
        return heads, documents.create_from_changes(update.kind, changes, heads, doc_id=update.doc)
    _same_kind(stored, update.kind)
    base = cache.take(stored) if cache is not None else None
    applied = documents.apply_changes(
        stored.data, stored.kind, changes, heads, doc_id=update.doc, append=append, base=base
    )
    return heads, applied


def _heads_of(stored: Stored | None) -> list[bytes] | None:
    return None if stored is None else sorted(stored.heads)


def _expand(
    update: DocUpdate, stored: Stored | None, also_known: list[bytes] | None = None
) -> tuple[list[bytes], list[bytes]]:
    """The update's full change chunks and heads (see packing.py). Raises MissingHistory.

    The sender built on what it thought we hold: usually our heads, or (when others changed the
    chart meanwhile) the heads we last knew it had, ``also_known``. Only if neither names a
    dependency is every change of our copy listed."""

    def everything() -> list[bytes]:
        if stored is None:
            return []
        return [change.hash for change in am.Document.load(stored.data).get_changes([])]

    known = [*(stored.heads if stored else []), *(also_known or [])]
    return packing.unpack(update.changes, update.heads, known, everything)


def _same_kind(stored: Stored, kind: str) -> None:
    if stored.kind != kind:
        raise NotAChart(f"the document is a {stored.kind} chart, not a {kind} one")


# -- initiating --------------------------------------------------------------------------------


class TabletReplica(Replica, Protocol):
    """An initiating side also remembers what it still has to acknowledge, and can drop."""

    def pending_acks(self, peer: str) -> list[DocHeads]: ...

    def add_pending_ack(self, peer: str, doc_id: str, heads: list[bytes]) -> None: ...

    def clear_pending_acks(self, peer: str, doc_ids: Iterable[str]) -> None: ...

    def drop(self, peer: str, doc_id: str, reason: str) -> None:
        """Delete a document that left this device; remember to tell ``peer`` it is gone."""
        ...

    def dropped_docs(self, peer: str) -> list[str]: ...

    def clear_dropped(self, peer: str, doc_ids: Iterable[str]) -> None: ...


@dataclass
class Session:
    """One sync with one peer: the Automerge sync states of documents under resync."""

    peer: str
    states: dict[str, am.SyncState] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    sent_heads: dict[str, list[bytes]] = field(default_factory=dict)  # our heads, per update sent
    turns: dict[str, int] = field(default_factory=dict)  # sync-protocol turns, per document


@dataclass
class Absorbed:
    """What one response changed here, for progress and for the CHW."""

    sent: int = 0
    received: int = 0
    new: int = 0
    acked: int = 0
    resync: int = 0
    quarantined: list[DocNotice] = field(default_factory=list)
    dropped: list[DocNotice] = field(default_factory=list)
    kept: list[DocNotice] = field(default_factory=list)  # asked to drop, but holds unsent changes
    remaining: int = 0
    command: str | None = None
    # Documents the peer just showed us, holding less than we do (it lost changes, say to a
    # restore from backup): they go up in the next round rather than wait for the next sync.
    behind: int = 0

    @property
    def more(self) -> bool:
        return self.remaining > 0 or self.resync > 0 or self.behind > 0


MAX_SYNC_TURNS = 4


def build_request(
    replica: TabletReplica, session: Session, *, max_snapshot_bytes: int
) -> SyncRequest:
    """Everything the peer lacks from us, our pending acks, and any resync messages."""
    wrong = SyncResponse()  # collects documents whose remembered peer heads are not here
    updates = []
    for update, heads in updates_for(replica, session.peer, wrong, set(session.states)):
        updates.append(update)
        session.sent_heads[update.doc] = heads
    for doc_id in wrong.resync:
        # Our memory of the peer is wrong: sending nothing would keep our changes from it for
        # good. Automerge's sync protocol finds out what each side lacks.
        _start_resync(replica, session, doc_id)
    syncs = []
    for doc_id, state in list(session.states.items()):
        stored = replica.get(doc_id)
        doc = am.Document.load(stored.data) if stored else am.Document()
        session.turns[doc_id] = session.turns.get(doc_id, 0) + 1
        if session.turns[doc_id] > MAX_SYNC_TURNS:
            # The responder keeps no sync state between requests, so a Bloom-filter false
            # positive in Automerge's protocol can repeat turn after turn. Send the whole
            # history instead: the peer takes what it lacks, and answers with what we lack.
            del session.states[doc_id]
            if stored is not None:
                changes, heads = packing.pack(documents.changes_since(doc, []), doc.get_heads())
                updates.append(DocUpdate(doc_id, stored.kind, changes, heads))
                session.sent_heads[doc_id] = doc.get_heads()
            continue
        message = doc.generate_sync_message(state)
        if message is None:
            del session.states[doc_id]
            replica.add_pending_ack(session.peer, doc_id, doc.get_heads())
            replica.set_peer_heads(session.peer, doc_id, doc.get_heads())
            continue
        syncs.append(DocSync(doc_id, session.kinds[doc_id], [message.encode()]))
    return SyncRequest(
        updates=updates,
        syncs=syncs,
        acks=replica.pending_acks(session.peer),
        dropped=replica.dropped_docs(session.peer),
        max_snapshot_bytes=max_snapshot_bytes,
    )


def absorb(
    replica: TabletReplica, session: Session, request: SyncRequest, response: SyncResponse
) -> Absorbed:
    """Take in the peer's answer to ``request``. The caller commits afterwards."""
    peer = session.peer
    outcome = Absorbed(
        sent=len(request.updates), remaining=response.remaining, command=response.command
    )
    replica.clear_pending_acks(peer, [a.doc for a in request.acks])
    replica.clear_dropped(peer, request.dropped)
    for index in response.applied:
        if 0 <= index < len(request.updates):
            sent = request.updates[index]
            heads = session.sent_heads.get(sent.doc)
            if heads is None:  # a request this session did not build: read them back
                heads = _expand(sent, replica.get(sent.doc))[1]
            replica.set_peer_heads(peer, sent.doc, heads)
            outcome.acked += 1
    for update in response.updates:
        _absorb_update(replica, session, update, outcome)
    for snapshot in response.snapshots:
        _absorb_snapshot(replica, peer, snapshot, outcome)
    for sync in response.syncs:
        _absorb_sync(replica, session, sync, outcome)
    for doc_id in response.resync:
        _start_resync(replica, session, doc_id)
    outcome.resync = len(session.states)
    # What the peer set aside, then what this side did (its own notices are already in).
    outcome.quarantined = [*response.quarantined, *outcome.quarantined]
    for notice in response.dropped:
        # No resync for a chart that is leaving: its changes go up whole next time, then it goes.
        session.states.pop(notice.doc, None)
        _absorb_drop(replica, peer, notice, outcome)
    outcome.resync = len(session.states)
    return outcome


def _absorb_update(
    replica: TabletReplica, session: Session, update: DocUpdate, outcome: Absorbed
) -> None:
    stored = replica.get(update.doc)
    try:
        changes, heads = _expand(update, stored, replica.peer_heads(session.peer, update.doc))
        if stored is None:
            applied = documents.create_from_changes(update.kind, changes, heads, doc_id=update.doc)
        else:
            applied = documents.apply_changes(
                stored.data, stored.kind, changes, heads, doc_id=update.doc
            )
    except MissingHistory:
        _start_resync(replica, session, update.doc, update.kind)
        return
    except CareRecordError as exc:
        replica.quarantine(
            session.peer, update.doc, update.kind, b"".join(update.changes), str(exc)
        )
        outcome.quarantined.append(DocNotice(update.doc, "quarantined", str(exc)))
        return
    if not _put(replica, session.peer, update, applied, outcome.quarantined):
        return
    outcome.received += 1
    outcome.new += stored is None
    if not applied.complete:
        _start_resync(replica, session, update.doc, update.kind)
        return
    replica.set_peer_heads(session.peer, update.doc, heads)
    replica.add_pending_ack(session.peer, update.doc, applied.heads)
    outcome.behind += sorted(applied.heads) != sorted(heads)


def _absorb_snapshot(
    replica: TabletReplica, peer: str, snapshot: DocSnapshot, outcome: Absorbed
) -> None:
    stored = replica.get(snapshot.doc)
    try:
        applied = documents.merge_snapshot(
            stored.data if stored else None, snapshot.kind, snapshot.data, doc_id=snapshot.doc
        )
    except CareRecordError as exc:
        replica.quarantine(peer, snapshot.doc, snapshot.kind, snapshot.data, str(exc))
        outcome.quarantined.append(DocNotice(snapshot.doc, "quarantined", str(exc)))
        return
    if not _put(replica, peer, snapshot, applied, outcome.quarantined):
        return
    replica.set_peer_heads(peer, snapshot.doc, snapshot.heads)
    replica.add_pending_ack(peer, snapshot.doc, applied.heads)
    outcome.received += 1
    outcome.new += stored is None
    outcome.behind += sorted(applied.heads) != sorted(snapshot.heads)


def _absorb_sync(
    replica: TabletReplica, session: Session, sync: DocSync, outcome: Absorbed
) -> None:
    state = session.states.get(sync.doc)
    if state is None:
        return
    stored = replica.get(sync.doc)
    doc = am.Document.load(stored.data) if stored else am.Document()
    before = doc.get_heads()
    try:
        for raw in sync.messages:
            doc.receive_sync_message(state, am.Message.decode(raw))
        if doc.get_heads():
            documents.check_kind(doc, sync.kind)
    except Exception as exc:  # noqa: BLE001 - damaged messages raise bare Exception
        session.states.pop(sync.doc, None)
        outcome.quarantined.append(DocNotice(sync.doc, "quarantined", f"sync failed: {exc}"[:200]))
        return
    if doc.get_heads() != before:
        applied = documents.Applied(doc.save(), doc.get_heads(), True, doc)
        if not _put(replica, session.peer, sync, applied, outcome.quarantined):
            session.states.pop(sync.doc, None)
            return
        outcome.received += 1


def _start_resync(
    replica: TabletReplica, session: Session, doc_id: str, kind: str | None = None
) -> None:
    if doc_id in session.states:
        return
    stored = replica.get(doc_id)
    found_kind = kind or (stored.kind if stored else None)
    if found_kind is None:
        return
    session.states[doc_id] = am.SyncState()
    session.kinds[doc_id] = found_kind


def _absorb_drop(replica: TabletReplica, peer: str, notice: DocNotice, outcome: Absorbed) -> None:
    stored = replica.get(notice.doc)
    if stored is None:
        # Already gone here (dropped before, answer lost): report it, or the notice never ends.
        replica.drop(peer, notice.doc, notice.detail)
        outcome.dropped.append(notice)
        return
    known = replica.peer_heads(peer, notice.doc) or []
    doc = am.Document.load(stored.data)
    if documents.changes_since(doc, known):
        # Changes the peer has not acknowledged yet: keep the chart until they are pushed.
        outcome.kept.append(notice)
        return
    replica.drop(peer, notice.doc, notice.detail)
    outcome.dropped.append(notice)
