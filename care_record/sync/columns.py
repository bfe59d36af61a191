"""A saved document with its columns left uncompressed: how the hub sends new charts.

``Document.save()`` compresses each column of more than 256 bytes with DEFLATE on its own.
That hides from a frame's compressor everything charts share with each other (field names,
LOINC codes and displays, units, the author's and the tablet's IDs, the catchment's village):
a page of saved charts compressed in one frame is about 1.5 times the gzip size of the same
charts as JSON. With the columns inflated, the frame's LZMA sees a whole page at once and the
page is about 0.9 times that size.

The result is the same document in Automerge's own format (a column may be stored either way;
the column's flag says which), so any receiver loads it as it is, and a later ``save()``
compresses it again. Only the framing changes: each compressed column's flag and length, the
chunk's length and its checksum (the first 4 bytes of the SHA-256 of the chunk's type, length
and body). Anything this code does not recognise is returned unchanged.
"""

from __future__ import annotations

import hashlib
import zlib

from care_record.sync.leb128 import read_uleb, write_uleb

MAGIC = bytes([0x85, 0x6F, 0x4A, 0x83])
DOCUMENT_CHUNK = 0
HASH_BYTES = 32
DEFLATE_FLAG = 0b1000
MAX_INFLATED_BYTES = 64 * 1024 * 1024  # a frame's own limit, once decompressed
_UNKNOWN = "not a document chunk as Document.save() writes it"


def uncompressed(saved: bytes) -> bytes:
    """``saved`` with every DEFLATE-compressed column inflated; unchanged if there are none
    or if the bytes are not a document chunk as ``Document.save()`` writes it."""
    try:
        return _inflate_columns(saved)
    except (ValueError, IndexError, zlib.error):
        return saved


def _inflate_columns(saved: bytes) -> bytes:
    if saved[:4] != MAGIC or saved[8] != DOCUMENT_CHUNK:
        raise ValueError(_UNKNOWN)
    length, start = read_uleb(saved, 9)
    body, rest = saved[start : start + length], saved[start + length :]
    if len(body) != length:
        raise ValueError(_UNKNOWN)
    # Actors and heads, copied as they are.
    at = 0
    count, at = read_uleb(body, at)
    for _ in range(count):
        size, at = read_uleb(body, at)
        at += size
    count, at = read_uleb(body, at)
    at += HASH_BYTES * count
    prefix = body[:at]
    # Two column tables (changes, then operations): (spec, length) pairs, then their data.
    tables: list[list[tuple[int, int]]] = []
    for _ in range(2):
        count, at = read_uleb(body, at)
        table = []
        for _ in range(count):
            spec, at = read_uleb(body, at)
            size, at = read_uleb(body, at)
            table.append((spec, size))
        tables.append(table)
    if not any(spec & DEFLATE_FLAG for table in tables for spec, _ in table):
        return saved
    new_tables: list[list[tuple[int, int]]] = []
    columns: list[bytes] = []
    total = 0
    for table in tables:
        new_table = []
        for spec, size in table:
            data = body[at : at + size]
            if len(data) != size:
                raise ValueError(_UNKNOWN)
            at += size
            if spec & DEFLATE_FLAG:
                inflater = zlib.decompressobj(-15)
                data = inflater.decompress(data, MAX_INFLATED_BYTES - total)
                if inflater.unconsumed_tail or not inflater.eof:
                    raise ValueError(_UNKNOWN)
            total += len(data)
            new_table.append((spec & ~DEFLATE_FLAG, len(data)))
            columns.append(data)
        new_tables.append(new_table)
    out = bytearray(prefix)
    for table in new_tables:
        out += write_uleb(len(table))
        for spec, size in table:
            out += write_uleb(spec) + write_uleb(size)
    for data in columns:
        out += data
    out += body[at:]  # the heads' indexes, when the format has them
    header = bytes([DOCUMENT_CHUNK]) + write_uleb(len(out))
    checksum = hashlib.sha256(header + out).digest()[:4]
    return MAGIC + checksum + header + bytes(out) + rest
