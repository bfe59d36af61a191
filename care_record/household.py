"""The household document: a home, its village, and the patients who live there.

Members are keys of the ``members`` map (patient ID -> when and by whom they were added):
adding the same person twice on two tablets is harmless, and removing one is a delete.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import automerge.core as am

from care_record.clock import Clock
from care_record.document import CareDocument, iso, put_root, put_tree, section
from care_record.ids import new_id
from care_record.schema import Household, RecordId, ShortText, Strict, validated


class _Member(Strict):
    patient_id: RecordId


class _Rename(Strict):
    name: ShortText | None = None
    village: ShortText | None = None


class HouseholdRecord(CareDocument):
    KIND = "household"

    @classmethod
    def new(
        cls,
        household: Household | Mapping[str, Any],
        *,
        author: str,
        clock: Clock,
        actor: bytes | None = None,
    ) -> Self:
        checked = validated(Household, household)
        record = cls(am.Document(actor), author=author, clock=clock)
        with record._change() as tx:
            put_root(tx, cls.KIND, new_id(clock), author, clock.now())
            tx.put_object(am.ROOT, "members", am.ObjType.Map)
            for name, value in checked.model_dump(exclude_none=True).items():
                record._write_field(tx, name, value)
        return record

    def update(self, changes: Mapping[str, Any]) -> None:
        checked = validated(_Rename, changes)
        with self._change() as tx:
            for name in checked.model_fields_set:
                self._write_field(tx, name, getattr(checked, name))

    def add_member(self, patient_id: str) -> None:
        checked = validated(_Member, {"patient_id": patient_id})
        with self._change() as tx:
            members = section(tx, "members")
            if tx.get(members, checked.patient_id) is None:
                record = {"added_at": iso(self.clock.now()), "author": self.author}
                put_tree(tx, members, checked.patient_id, record)

    def remove_member(self, patient_id: str) -> None:
        self._require("members", patient_id)
        with self._change() as tx:
            tx.delete(section(tx, "members"), patient_id)

    @property
    def members(self) -> list[str]:
        return sorted(self._doc.keys(section(self._doc, "members")))
