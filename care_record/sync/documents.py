"""What sync does to one Automerge document: changes since some heads, applying changes, and
answering Automerge's own sync protocol without keeping state between requests."""

from __future__ import annotations

from dataclasses import dataclass

import automerge.core as am

from care_record.document import load_document
from care_record.errors import MissingHistory, NotAChart
from care_record.sync.leb128 import read_uleb

HEAD_BYTES = 32
MAX_SYNC_ROUNDS = 8
CHUNK_MAGIC = bytes([0x85, 0x6F, 0x4A, 0x83])
DOCUMENT_CHUNK = 0
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
    if not heads:
        return True
    # A document holds the root "kind" in its first change, so reading it at heads it does not
    # hold gives nothing; at heads it holds, it gives the kind. No copy of the document is made.
    return doc.get(am.ROOT, "kind", heads) is not None


def changes_since(doc: am.Document, heads: list[bytes]) -> list[bytes]:
    """Change chunks of ``doc`` that are not ancestors of ``heads``, uncompressed."""
    return [change.raw_bytes for change in doc.get_changes(heads)]


@dataclass(frozen=True)
class Applied:
    data: bytes
    heads: list[bytes]
    complete: bool  # every head the sender claimed is now here
    document: am.Document | None = None  # the loaded result, so a replica need not load it again


def apply_changes(
    saved: bytes,
    kind: str,
    changes: list[bytes],
    claimed: list[bytes],
    *,
    doc_id: str | None = None,
    append: bool = False,
) -> Applied:
    """Add ``changes`` to the saved document; raises NotAChart if the result is not one.

    Changes whose dependencies are missing are left out by Automerge; ``complete`` says whether
    the sender's heads were all reached, i.e. whether the two sides' memory of each other held.

    ``append``: the result's ``data`` is the bytes just loaded (the stored document, then the
    new change chunks) rather than a new save, while the appended part stays within
    ``APPEND_LIMIT_RATIO`` of the saved one. ``Document.save()`` costs about as much as the
    load, Automerge loads both forms alike, and the next save folds the changes in.
    """
    loaded = saved + b"".join(changes)
    try:
        doc = am.Document.load(loaded)
    except Exception as exc:  # noqa: BLE001 - the binding raises bare Exception for damaged chunks
        raise NotAChart(f"changes that cannot be read: {_first_line(exc)}") from None
    check_kind(doc, kind, doc_id)
    complete = has_heads(doc, claimed)
    # An incomplete update may hold changes whose history is missing: those are saved away.
    keep = append and complete and _room_to_append(loaded)
    return Applied(loaded if keep else doc.save(), doc.get_heads(), complete, doc)


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
    try:
        doc = am.Document.load(b"".join(changes))
    except Exception as exc:  # noqa: BLE001 - the binding raises bare Exception
        if "deps should already be in the document" in str(exc):
            raise MissingHistory("changes arrived without the history they build on") from None
        raise NotAChart(f"changes that cannot be read: {_first_line(exc)}") from None
    check_kind(doc, kind, doc_id)
    return Applied(doc.save(), doc.get_heads(), has_heads(doc, claimed), doc)


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
