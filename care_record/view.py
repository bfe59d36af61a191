"""Reading a chart: plain values for screens, exports and the FHIR projection, conflicts listed.

A field with one value shows it. A field with several concurrent values (written on two devices
offline) shows the newest and is listed in ``conflicts``; nothing is dropped. Clinically risky
fields are flagged so that the tablet and the console keep them in a review list until someone
picks a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import automerge.core as am

from care_record import registers
from care_record.errors import UnknownRecord

# Concurrent edits of these can harm a patient if the wrong value is silently shown.
RISKY_FIELDS = frozenset({"birth_date", "phone", "pregnancy_status"})
RISKY_PREFIXES = ("allergy.", "medication.")

DEMOGRAPHIC_FIELDS = ("given", "family", "sex", "birth_date", "phone", "village", "household_id")


def is_risky(path: str) -> bool:
    return path in RISKY_FIELDS or path.startswith(RISKY_PREFIXES)


@dataclass(frozen=True)
class Conflict:
    """A field with more than one current value. ``values`` are newest first, one entry per
    concurrent write (two writes of the same value appear twice, only beside a third)."""

    path: str
    values: tuple[registers.Entry, ...]
    risky: bool


@dataclass
class ChartView:
    id: str
    kind: str
    schema_version: int
    fields: dict[str, registers.Scalar]
    collections: dict[str, dict[str, dict[str, Any]]]
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def demographics(self) -> dict[str, registers.Scalar]:
        return {name: self.fields.get(name) for name in DEMOGRAPHIC_FIELDS}

    @property
    def review_list(self) -> list[Conflict]:
        """Conflicts on clinically risky fields: shown until someone picks a value."""
        return [c for c in self.conflicts if c.risky]

    def consent(self, scope: str) -> registers.Scalar:
        return self.fields.get(f"consent.{scope}")

    def records(self, collection: str) -> list[dict[str, Any]]:
        """Records of a collection, oldest first (IDs are time-ordered)."""
        return [{"id": key, **value} for key, value in sorted(self.collections[collection].items())]

    def item(self, collection: str, item_id: str) -> dict[str, Any]:
        if item_id not in self.collections.get(collection, {}):
            raise UnknownRecord(f"no {collection[:-1]} with ID {item_id} in this chart")
        return dict(self.collections[collection][item_id])


def build_view(doc: am.Document) -> ChartView:
    entries = registers.read_all(doc)
    root = _extract_root(doc)
    collections = {
        name: dict(value)
        for name, value in root.items()
        if isinstance(value, dict) and name != "fields"
    }
    for path, values in entries.items():
        _attach_field(collections, path, values[0].value)
    return ChartView(
        id=str(root.get("id")),
        kind=str(root.get("kind")),
        schema_version=int(root.get("schema_version") or 0),
        fields={path: values[0].value for path, values in entries.items()},
        collections=collections,
        conflicts=[
            Conflict(path=path, values=tuple(values), risky=is_risky(path))
            for path, values in sorted(entries.items())
            if _distinct(values)
        ],
    )


def _distinct(values: list[registers.Entry]) -> bool:
    """Several entries that agree are not a conflict: two CHWs who typed the same number are
    not asked to choose between them. (The entries stay; the next write replaces them all.)"""
    return len({(type(e.value), e.value) for e in values}) > 1


def _extract_root(doc: am.Document) -> dict[str, Any]:
    tree = am.extract(doc)
    if not isinstance(tree, dict):
        return {}
    return tree


_ITEM_COLLECTIONS = {
    "task": "tasks",
    "referral": "referrals",
    "allergy": "allergies",
    "medication": "medications",
}


def _attach_field(
    collections: dict[str, dict[str, dict[str, Any]]], path: str, value: registers.Scalar
) -> None:
    """Copy item fields (``task.<id>.status``) into the item's record for easy reading."""
    prefix, _, rest = path.partition(".")
    collection = _ITEM_COLLECTIONS.get(prefix)
    item_id, _, name = rest.partition(".")
    if collection is None or not name:
        return
    record = collections.get(collection, {}).get(item_id)
    if isinstance(record, dict):
        record[name] = value
