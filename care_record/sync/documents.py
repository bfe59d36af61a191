"""What sync does to one Automerge document: changes since some heads, applying changes, and
answering Automerge's own sync protocol without keeping state between requests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import automerge.core as am

from care_record.document import load_document
from care_record.errors import MissingHistory, NotAChart
from care_record.sync.leb128 import read_uleb, write_uleb

HEAD_BYTES = 32
MAX_SYNC_ROUNDS = 8
CHUNK_MAGIC = bytes([0x85, 0x6F, 0x4A, 0x83])
DOCUMENT_CHUNK = 0
CHANGE_CHUNK = 1
SYNC_MESSAGE = 0x42  # the first byte of an Automerge sync message, format version 1
# How much appended change chunks may outgrow the saved document before a save folds them in
# (see ``apply_changes``): stored bytes stay under about five times the saved size.
APPEND_LIMIT_RATIO = 4


def heads_key(heads: list[bytes]) -> bytes:
    """Heads in one canonical byte string, for storing and comparing."""
    return b"".join(sorted(heads))


def split_heads(key: bytes | None) -> list[bytes]:
    if not key:
        return []
    return [key[i : i + HEAD_BYTES] for i in range(0, len(key), HEAD_BYTES)]


def has_heads(doc: am.Document, heads: list[bytes]) -> bool:
    """True if every hash in ``heads`` is a change this document holds."""
    # A document holds the root "kind" in its first change, so reading it at a hash it does not
    # hold gives nothing; at one it holds, it gives the kind. No copy of the document is made.
    # One hash at a time: read at several, Automerge passes over those it does not hold.
    return all(doc.get(am.ROOT, "kind", [head]) is not None for head in heads)


def changes_since(doc: am.Document, heads: list[bytes]) -> list[bytes]:
    """Change chunks of ``doc`` that are not ancestors of ``heads``, uncompressed."""
    return [change.raw_bytes for change in doc.get_changes(heads)]


@dataclass(frozen=True)
class Applied:
    data: bytes
    heads: list[bytes]
    complete: bool  # every head the sender claimed is now here
    document: am.Document | None = None  # the loaded result, so a replica need not load it again
    # ``document`` holds every change it was given (none held back for missing history), so
    # it is what loading ``data`` gives: a cache may keep it (see ``settled``).
    settled: bool = False


def apply_changes(
    saved: bytes,
    kind: str,
    changes: list[bytes],
    claimed: list[bytes],
    *,
    doc_id: str | None = None,
    append: bool = False,
    base: am.Document | None = None,
) -> Applied:
    """Add ``changes`` to the saved document; raises NotAChart if the result is not one.

    Changes whose dependencies are missing are left out by Automerge; ``complete`` says whether
    the sender's heads were all reached, i.e. whether the two sides' memory of each other held.

    ``append``: the result's ``data`` is the bytes just loaded (the stored document, then the
    new change chunks) rather than a new save, while the appended part stays within
    ``APPEND_LIMIT_RATIO`` of the saved one. ``Document.save()`` costs about as much as the
    load, Automerge loads both forms alike, and the next save folds the changes in.

    ``base``: ``saved`` already loaded, with nothing held back (a responder's cache, see
    ``settled``), handed over: the changes go into it, which costs a fifth of loading
    ``saved`` again. It is the result only when every change is a sound chunk and goes in;
    otherwise ``saved`` is loaded with the changes, as without ``base``, so the outcome (an
    error, or changes held back) is the load's, and ``base`` is of no further use.
    """
    loaded = saved + b"".join(changes)
    doc = _added(base, changes) if base is not None else None
    settled_now = doc is not None
    if doc is None:
        try:
            doc = am.Document.load(loaded)
        except Exception as exc:  # noqa: BLE001 - the binding raises bare Exception for damaged chunks
            raise NotAChart(f"changes that cannot be read: {_first_line(exc)}") from None
        settled_now = settled(doc, loaded)
    check_kind(doc, kind, doc_id)
    complete = has_heads(doc, claimed)
    # An incomplete update may hold changes whose history is missing: those are saved away.
    keep = append and complete and settled_now and _room_to_append(loaded)
    return Applied(loaded if keep else doc.save(), doc.get_heads(), complete, doc, settled_now)


def _added(doc: am.Document, changes: list[bytes]) -> am.Document | None:
    """``doc`` with ``changes`` in, or None unless every one is a sound change chunk that
    went in."""
    chunks = change_chunks(b"".join(changes))
    if chunks is None:
        return None
    try:
        add_changes(doc, [chunk for _, chunk in chunks])
    except Exception:  # noqa: BLE001 - the binding raises bare Exception; the load will say why
        return None
    return doc if has_heads(doc, [digest for digest, _ in chunks]) else None


def settled(doc: am.Document, data: bytes) -> bool:
    """True if ``doc``, loaded from ``data``, holds every change chunk ``data`` carries after
    its saved document: Automerge held none back for missing history. Only then is ``doc``
    what loading ``data`` (or its save) gives, fit to be kept loaded and forked later."""
    chunks = change_chunks(data[saved_bytes(data) or 0 :])
    return chunks is not None and has_heads(doc, [digest for digest, _ in chunks])


def change_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """``data`` cut into uncompressed change chunks, each with its hash (the SHA-256 of the
    chunk from its type byte on, which Automerge names a change by), or None if it is not
    exactly such chunks with good checksums."""
    found = []
    at = 0
    while at < len(data):
        if data[at : at + 4] != CHUNK_MAGIC or len(data) < at + 10 or data[at + 8] != CHANGE_CHUNK:
            return None
        try:
            length, start = read_uleb(data, at + 9)
        except (IndexError, ValueError):
            return None
        end = start + length
        if end > len(data):
            return None
        digest = hashlib.sha256(data[at + 8 : end]).digest()
        if digest[:4] != data[at + 4 : at + 8]:
            return None
        found.append((digest, data[at:end]))
        at = end
    return found


def add_changes(doc: am.Document, changes: list[bytes]) -> None:
    """Apply change chunks to a loaded document, as ``Document.load`` of them appended would.

    The binding has no call for this, but its sync protocol applies the changes a message
    carries: so they go in as one sync message (format version 1: type 0x42, the sender's
    heads, no needs, no Bloom filters, then the changes, each length-prefixed), received with a
    fresh sync state that is then dropped. Changes whose dependencies are missing are held back
    by Automerge, as in a load; the caller checks the heads it expected. Raises the binding's
    bare Exception for chunks it cannot read."""
    if not changes:
        return
    message = bytearray([SYNC_MESSAGE])
    message += write_uleb(0)  # our heads: none claimed, nothing is asked of us
    message += write_uleb(0)  # need
    message += write_uleb(0)  # have
    message += write_uleb(len(changes))
    for change in changes:
        message += write_uleb(len(change)) + change
    doc.receive_sync_message(am.SyncState(), am.Message.decode(bytes(message)))


def _room_to_append(loaded: bytes) -> bool:
    saved = saved_bytes(loaded)
    return saved is not None and len(loaded) - saved <= saved * APPEND_LIMIT_RATIO


def compacted(data: bytes) -> bytes:
    """``data`` as one saved document, with change chunks appended by ``apply_changes`` folded
    in: what a snapshot carries, so that a new tablet receives the compact form."""
    if saved_bytes(data) == len(data):
        return data
    return bytes(am.Document.load(data).save())


def saved_bytes(data: bytes) -> int | None:
    """How many bytes of ``data`` its leading document chunk takes (what ``Document.save()``
    wrote; change chunks may follow it), or None if it does not begin with one."""
    if data[:4] != CHUNK_MAGIC or len(data) < 10 or data[8] != DOCUMENT_CHUNK:
        return None
    try:
        length, start = read_uleb(data, 9)
    except (IndexError, ValueError):
        return None
    return start + length if start + length <= len(data) else None


def create_from_changes(
    kind: str, changes: list[bytes], claimed: list[bytes], *, doc_id: str | None = None
) -> Applied:
    """A document the receiver never had, from its whole history."""
    if not changes:
        raise NotAChart("a new document arrived without any changes")
    joined = b"".join(changes)
    try:
        doc = am.Document.load(joined)
    except Exception as exc:  # noqa: BLE001 - the binding raises bare Exception
        if "deps should already be in the document" in str(exc):
            raise MissingHistory("changes arrived without the history they build on") from None
        raise NotAChart(f"changes that cannot be read: {_first_line(exc)}") from None
    check_kind(doc, kind, doc_id)
    return Applied(doc.save(), doc.get_heads(), has_heads(doc, claimed), doc, settled(doc, joined))


def load_snapshot(kind: str, data: bytes, *, doc_id: str | None = None) -> am.Document:
    doc = load_document(data, kind=kind)
    check_kind(doc, kind, doc_id)
    return doc


def merge_snapshot(
    saved: bytes | None, kind: str, data: bytes, *, doc_id: str | None = None
) -> Applied:
    incoming = load_snapshot(kind, data, doc_id=doc_id)
    if saved is None:
        # Kept as this side's save() writes it: a sender may leave the columns uncompressed
        # for the frame's compressor (care_record/sync/columns.py), which is no way to store.
        return Applied(data=incoming.save(), heads=incoming.get_heads(), complete=True)
    doc = load_document(saved, kind=kind)
    doc.merge(incoming)
    return Applied(doc.save(), doc.get_heads(), True, doc)


def check_kind(doc: am.Document, kind: str, doc_id: str | None = None) -> None:
    """The document must be a care document of ``kind`` (and be ``doc_id``, if given): changes
    of another document sent under this one's name must never be stored as this one.
    Raises NotAChart."""
    _check_root(doc, kind)
    if doc_id is not None:
        found = doc.get(am.ROOT, "id")
        if found is None or isinstance(found[0], am.ObjType) or found[0][1] != doc_id:
            raise NotAChart("the changes belong to another chart than the one they were sent for")


def _check_root(doc: am.Document, kind: str) -> None:
    found = doc.get(am.ROOT, "kind")
    if found is None or isinstance(found[0], am.ObjType) or found[0][1] != kind:
        raise NotAChart(f"the document is not a {kind} chart")
    fields = doc.get(am.ROOT, "fields")
    if fields is None or fields[0] != am.ObjType.Map:
        raise NotAChart(f"the document is not a {kind} chart")


def answer_sync(
    saved: bytes, kind: str, messages: list[bytes], *, doc_id: str | None = None
) -> tuple[Applied, list[bytes]]:
    """One stateless turn of Automerge's sync protocol: take the peer's messages, reply.

    The responder keeps no sync state between requests (a SyncState cannot be stored), so it
    starts fresh each turn; the protocol still converges, in a few turns, from any state.
    """
    doc = am.Document.load(saved) if saved else am.Document()
    state = am.SyncState()
    for raw in messages:
        try:
            doc.receive_sync_message(state, am.Message.decode(raw))
        except Exception as exc:  # noqa: BLE001 - damaged messages raise bare Exception
            raise NotAChart(f"a sync message that cannot be read: {_first_line(exc)}") from None
    replies = []
    for _ in range(MAX_SYNC_ROUNDS):
        reply = doc.generate_sync_message(state)
        if reply is None:
            break
        replies.append(reply.encode())
    if doc.get_heads():
        check_kind(doc, kind, doc_id)
    return Applied(doc.save(), doc.get_heads(), True, doc), replies


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
