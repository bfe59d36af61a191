"""Multi-value registers kept in one flat Automerge map.

automerge 1.0.0rc1 for Python shows only the winning value of a conflicted key, so the chart
cannot ask Automerge for the losers. Instead every mutable field is a register: a set of
entries in the chart's ``fields`` map, each under the key ``"<path>#<write id>"``. A write
deletes the entries it can see and adds one entry under a fresh key. Keys are never reused, so
Automerge never has to pick a winner: two devices that write the same field offline each
delete the old entry and add their own, and after the merge both entries are there. A register
with more than one entry is a conflict; writing a value resolves it.

The map is created once with the chart and only ever gains or loses whole keys, so two devices
can never race to create the same object.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import automerge.core as am

Scalar = str | int | float | bool | None

_SEPARATOR = "#"


@dataclass(frozen=True)
class Entry:
    """One value of a register, with who wrote it and when."""

    write_id: str
    value: Scalar
    at: str
    by: str


def fields_object(doc: am.Document | am.Transaction) -> bytes:
    found = doc.get(am.ROOT, "fields")
    if found is None or found[0] != am.ObjType.Map:
        raise KeyError("fields")
    return found[1]


def read_all(doc: am.Document, heads: list[bytes] | None = None) -> dict[str, list[Entry]]:
    """Every register of the chart, path -> entries ordered newest first."""
    obj = fields_object(doc)
    registers: dict[str, list[Entry]] = defaultdict(list)
    for key in doc.keys(obj, heads):
        path, _, write_id = key.rpartition(_SEPARATOR)
        entry = _read_entry(doc, obj, key, write_id, heads)
        if entry is not None:
            registers[path].append(entry)
    for entries in registers.values():
        entries.sort(key=lambda e: (e.at, e.write_id), reverse=True)
    return dict(registers)


def read_paths(doc: am.Document, paths: set[str]) -> dict[str, list[Entry]]:
    """Only the registers named in ``paths`` (cheaper than read_all when a few are needed)."""
    obj = fields_object(doc)
    registers: dict[str, list[Entry]] = defaultdict(list)
    for key in doc.keys(obj):
        path, _, write_id = key.rpartition(_SEPARATOR)
        if path in paths:
            entry = _read_entry(doc, obj, key, write_id, None)
            if entry is not None:
                registers[path].append(entry)
    for entries in registers.values():
        entries.sort(key=lambda e: (e.at, e.write_id), reverse=True)
    return dict(registers)


def _read_entry(
    doc: am.Document, obj: bytes, key: str, write_id: str, heads: list[bytes] | None
) -> Entry | None:
    found = doc.get(obj, key, heads)
    if found is None or found[0] != am.ObjType.Map:
        return None
    entry_obj = found[1]
    return Entry(
        write_id=write_id,
        value=_scalar(doc.get(entry_obj, "v", heads)),
        at=str(_scalar(doc.get(entry_obj, "at", heads))),
        by=str(_scalar(doc.get(entry_obj, "by", heads))),
    )


def _scalar(found: tuple[am.Value, bytes] | None) -> Scalar:
    if found is None or isinstance(found[0], am.ObjType):
        return None
    value = found[0][1]
    if isinstance(value, bytes | datetime):
        raise TypeError("registers hold only text, numbers, booleans and null")
    return value


def write(
    tx: am.Transaction, path: str, value: Scalar, *, write_id: str, at: datetime, by: str
) -> None:
    """Replace every entry of ``path`` that this document can see with one new entry."""
    if _SEPARATOR in path:
        raise ValueError("a register path cannot contain '#'")
    obj = fields_object(tx)
    prefix = path + _SEPARATOR
    for key in tx.keys(obj):
        if key.startswith(prefix) and _SEPARATOR not in key[len(prefix) :]:
            tx.delete(obj, key)
    entry = tx.put_object(obj, prefix + write_id, am.ObjType.Map)
    tx.put(entry, "v", *typed(value))
    tx.put(entry, "at", am.ScalarType.Str, at.isoformat(timespec="milliseconds"))
    tx.put(entry, "by", am.ScalarType.Str, by)


def typed(value: Scalar) -> tuple[am.ScalarType, Scalar]:
    # bool before int: bool is an int in Python, and the type must survive the round trip.
    if value is None:
        return am.ScalarType.Null, None
    if isinstance(value, bool):
        return am.ScalarType.Boolean, value
    if isinstance(value, int):
        return am.ScalarType.Int, value
    if isinstance(value, float):
        return am.ScalarType.F64, value
    return am.ScalarType.Str, value
