"""Changes packed for the wire: the same Automerge change chunks, minus what the receiver can
rebuild.

An uncompressed change chunk is ``magic (4) | checksum (4) | type (1) | length (uLEB128) |
body``, and its body starts with its dependencies: a uLEB128 count, then a 32-byte SHA-256
hash each. Those hashes cannot be compressed, and a day's visits carry one or more per change,
yet the receiver nearly always holds them already: they are the hashes of the change before in
the same update, or of the heads it had. So a packed change is::

    type (1) | dependency count (uLEB128) | 8-byte prefix of each dependency | rest of the body

The receiver rebuilds each dependency from its prefix (looking among the changes unpacked
before it, the heads it holds, and if need be every change of its copy), then the length, the
checksum and the magic. The hash of the result is the change's hash, so a wrong rebuild cannot
pass unnoticed: Automerge would find the dependency missing. A prefix it cannot resolve means
it lacks history the sender thought it had: MissingHistory, and the two sides resync.

A sender may also send a full chunk (starting with the magic): it passes through unchanged.

Heads travel the same way, as 8-byte prefixes resolved among the update's changes and the
receiver's own heads. They are also the integrity check of the rebuild: every change is a
dependency of a later one or a head, so a change damaged in transit no longer matches the
prefix that names it, and the update is refused (MissingHistory) rather than stored. (An empty
``heads`` means the hash of the last change, as version 1 allowed; senders no longer use it.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from care_record.errors import MissingHistory, NotAChart
from care_record.sync.leb128 import read_uleb, write_uleb

MAGIC = bytes.fromhex("856f4a83")
HASH_BYTES = 32
PREFIX_BYTES = 8
CHANGE_TYPE = b"\x01"


def change_hash(raw_change: bytes) -> bytes:
    """The hash of an uncompressed change chunk: SHA-256 of all after magic and checksum."""
    return hashlib.sha256(raw_change[8:]).digest()


def pack_change(raw: bytes) -> bytes:
    if raw[:4] != MAGIC or raw[8:9] != CHANGE_TYPE:
        raise NotAChart("not an Automerge change chunk")
    kind = raw[8:9]
    length, start = read_uleb(raw, 9)
    body = raw[start : start + length]
    count, at = read_uleb(body, 0)
    deps = [body[at + i * HASH_BYTES : at + (i + 1) * HASH_BYTES] for i in range(count)]
    rest = body[at + count * HASH_BYTES :]
    return kind + write_uleb(count) + b"".join(d[:PREFIX_BYTES] for d in deps) + rest


def pack(raw_changes: list[bytes], heads: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Packed changes, and the heads as the receiver needs them (see the module's docstring)."""
    packed = [pack_change(raw) for raw in raw_changes]
    return packed, [h[:PREFIX_BYTES] for h in heads]


def unpack(
    packed: list[bytes],
    heads: list[bytes],
    known: Iterable[bytes],
    everything: Callable[[], Iterable[bytes]],
) -> tuple[list[bytes], list[bytes]]:
    """Rebuild the change chunks and full heads. ``known``: heads the receiver holds;
    ``everything``: every change hash of its copy, asked for only when ``known`` is not enough.

    Raises MissingHistory for a prefix that names nothing here, NotAChart for damaged bytes.
    """
    pool = _Pool(known, everything)
    raw_changes = []
    for item in packed:
        # A full chunk (it starts with the magic; a packed one starts with its type) passes as is.
        raw = item if item[:4] == MAGIC else _unpack_change(item, pool)
        pool.add(change_hash(raw))
        raw_changes.append(raw)
    if not heads:
        return raw_changes, [change_hash(raw_changes[-1])] if raw_changes else []
    return raw_changes, [h if len(h) == HASH_BYTES else pool.resolve(h) for h in heads]


def _unpack_change(item: bytes, pool: _Pool) -> bytes:
    if item[:1] != CHANGE_TYPE:
        raise NotAChart("changes that cannot be read: not an Automerge change")
    try:
        count, at = read_uleb(item, 1)
        prefixes = [item[at + i * PREFIX_BYTES : at + (i + 1) * PREFIX_BYTES] for i in range(count)]
        rest = item[at + count * PREFIX_BYTES :]
    except (IndexError, ValueError):
        raise NotAChart("a packed change is cut short or damaged") from None
    if any(len(p) != PREFIX_BYTES for p in prefixes):
        raise NotAChart("a packed change is cut short")
    body = write_uleb(count) + b"".join(pool.resolve(p) for p in prefixes) + rest
    chunk = item[:1] + write_uleb(len(body)) + body
    return MAGIC + hashlib.sha256(chunk).digest()[:4] + chunk


class _Pool:
    """Full hashes the receiver can name, found by their 8-byte prefix."""

    def __init__(self, known: Iterable[bytes], everything: Callable[[], Iterable[bytes]]) -> None:
        self.by_prefix: dict[bytes, set[bytes]] = {}
        self.everything: Callable[[], Iterable[bytes]] | None = everything
        for full in known:
            self.add(full)

    def add(self, full: bytes) -> None:
        self.by_prefix.setdefault(full[:PREFIX_BYTES], set()).add(full)

    def resolve(self, prefix: bytes) -> bytes:
        found = self.by_prefix.get(prefix)
        if not found and self.everything is not None:
            for full in self.everything():
                self.add(full)
            self.everything = None
            found = self.by_prefix.get(prefix)
        if not found:
            raise MissingHistory("changes arrived that build on history this side does not hold")
        if len(found) > 1:
            raise MissingHistory("two changes here share a hash prefix; resync this chart")
        return next(iter(found))
