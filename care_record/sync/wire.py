"""The sync wire format: msgpack frames (msgspec), compressed.

A frame is ``b"RCS1"`` (magic and format version), one codec byte, then the msgpack encoding
of one message, compressed by that codec: 0 none, 1 zlib (RFC 1950), 2 raw LZMA2, decoded with
a 1 MiB dictionary (what senders use, with a dictionary of at most that size; about 15% smaller
than zlib on a day's visits). Messages are the structs below; an unknown field is ignored (so a
newer peer can add one), a missing required field or a wrong type is an error.
Document IDs are UUIDv7 strings; heads and change hashes are 32-byte SHA-256 values; changes
are Automerge change chunks exactly as ``Document.get_changes`` gives them.

See docs/sync-protocol.md for the exchange itself.
"""

from __future__ import annotations

import lzma
import zlib
from typing import TypeVar

import msgspec

from care_record.errors import CareRecordError

PROTOCOL = 1
MAGIC = b"RCS1"
RAW, ZLIB, LZMA = 0, 1, 2
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 20}]
MAX_FRAME_BYTES = 64 * 1024 * 1024  # after decompression; a frame bigger than this is refused
COMPRESS_ABOVE = 256
MIN_DICTIONARY = 4096  # the smallest LZMA2 allows


class MalformedFrame(CareRecordError):
    """Bytes that are not a frame of this protocol: cut short, damaged, or of another kind."""


class Struct(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=True):
    pass


class DocUpdate(Struct):
    """Changes to one document: those the sender has and believes the receiver lacks.

    Changes travel uncompressed (``Change.raw_bytes``) so that the frame's compression sees
    all of them at once: visits share codes, units and keys, which one compressor finds.
    """

    doc: str
    kind: str  # "patient" or "household"
    changes: list[bytes]
    # The sender's heads, which these changes reach. Left empty when they are just the hash of
    # the last change, which the receiver computes (change_hash): 32 bytes saved per chart.
    heads: list[bytes] = []


class DocSnapshot(Struct):
    """A whole document as ``save()`` gives it: how new documents travel."""

    doc: str
    kind: str  # "patient" or "household"
    data: bytes
    heads: list[bytes]


class DocSync(Struct):
    """Automerge sync-protocol messages for one document: the fallback when heads are wrong."""

    doc: str
    kind: str  # "patient" or "household"
    messages: list[bytes]


class DocHeads(Struct):
    """The heads one side now has of a document (an acknowledgement)."""

    doc: str
    heads: list[bytes]


class DocNotice(Struct):
    """Something the other side must know about a document, in a code and in words."""

    doc: str
    code: str
    detail: str


class SyncRequest(Struct):
    protocol: int = PROTOCOL
    updates: list[DocUpdate] = []
    syncs: list[DocSync] = []
    acks: list[DocHeads] = []  # documents taken from the last response, now stored here
    dropped: list[str] = []  # documents this device deleted after being told they left it
    heard: int = 0  # the last SyncResponse.exchange this device stored (0: none yet)
    max_snapshot_bytes: int = 1024 * 1024  # how much new-document data one response may carry


class SyncResponse(Struct):
    protocol: int = PROTOCOL
    applied: list[int] = []  # indices of the request's updates now held here in full
    updates: list[DocUpdate] = []
    snapshots: list[DocSnapshot] = []
    syncs: list[DocSync] = []
    resync: list[str] = []  # documents whose remembered heads were wrong: use DocSync
    quarantined: list[DocNotice] = []
    dropped: list[DocNotice] = []  # documents leaving this device: delete once fully acked
    remaining: int = 0  # new documents still to send after this response (initial sync)
    command: str | None = None  # "erase": crypto-erase now; "retired": stop syncing
    server_time: str = ""
    # How many syncs of this device the responder has committed, this one included (0: not
    # counted). A number not above the last one the device heard means the responder went back
    # in time (restored from a backup, a new hub): the device's memory of it is wrong.
    exchange: int = 0


class ErrorBody(Struct):
    """The one JSON shape of every error the hub answers with."""

    error: str
    detail: str
    server_time: str = ""
    command: str | None = None


M = TypeVar("M", SyncRequest, SyncResponse)

_ENCODER = msgspec.msgpack.Encoder()


def encode_frame(message: SyncRequest | SyncResponse, *, codec: int = LZMA) -> bytes:
    payload = _ENCODER.encode(message)
    if len(payload) < COMPRESS_ABOVE or codec == RAW:
        return MAGIC + bytes([RAW]) + payload
    if codec == ZLIB:
        return MAGIC + bytes([ZLIB]) + zlib.compress(payload, 9)
    filters = [{**_LZMA_FILTERS[0], "dict_size": _dictionary_for(len(payload))}]
    return MAGIC + bytes([LZMA]) + lzma.compress(payload, format=lzma.FORMAT_RAW, filters=filters)


def _dictionary_for(size: int) -> int:
    """The smallest LZMA2 dictionary (a power of two, 4 KiB to 1 MiB) that spans ``size``
    bytes: the output is the same as with 1 MiB, but the compressor sets up tables in
    proportion to the dictionary, about 11 MB for 1 MiB, which cost more than compressing a
    day's few kilobytes. A receiver decodes it with its 1 MiB dictionary."""
    dictionary = MIN_DICTIONARY
    while dictionary < size and dictionary < _LZMA_FILTERS[0]["dict_size"]:
        dictionary *= 2
    return dictionary


def decode_frame(frame: bytes, kind: type[M], *, limit: int = MAX_FRAME_BYTES) -> M:
    """Decode one frame, or raise MalformedFrame saying what is wrong with it."""
    if len(frame) < len(MAGIC) + 1 or not frame.startswith(MAGIC):
        version = frame[3:4]
        if len(frame) > len(MAGIC) and frame[:3] == MAGIC[:3] and version.isdigit():
            raise MalformedFrame(
                f"sync protocol version {version.decode()} is not supported "
                f"(this side speaks {PROTOCOL}): update the app"
            )
        raise MalformedFrame("not a sync frame (wrong start): update the app or check the address")
    codec, body = frame[len(MAGIC)], frame[len(MAGIC) + 1 :]
    if codec == ZLIB:
        body = _inflate(body, limit)
    elif codec == LZMA:
        body = _unlzma(body, limit)
    elif codec != RAW:
        raise MalformedFrame(f"unknown compression {codec} in a sync frame")
    if len(body) > limit:
        raise MalformedFrame("sync frame too large")
    try:
        message = msgspec.msgpack.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        raise MalformedFrame(f"damaged sync frame: {exc}") from None
    if message.protocol != PROTOCOL:
        raise MalformedFrame(
            f"sync protocol {message.protocol} is not supported (this side speaks {PROTOCOL})"
        )
    return message


def _inflate(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise MalformedFrame("damaged sync frame (compression)") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise MalformedFrame("sync frame too large")
    if not inflater.eof or inflater.unused_data:
        raise MalformedFrame("sync frame cut short or followed by junk")
    return out


def _unlzma(body: bytes, limit: int) -> bytes:
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    try:
        out = decompressor.decompress(body, limit + 1)
    except lzma.LZMAError:
        raise MalformedFrame("damaged sync frame (compression)") from None
    if len(out) > limit or (not decompressor.eof and not decompressor.needs_input):
        raise MalformedFrame("sync frame too large")
    if not decompressor.eof:
        raise MalformedFrame("sync frame cut short")
    if decompressor.unused_data:
        raise MalformedFrame("sync frame followed by junk")
    return out
