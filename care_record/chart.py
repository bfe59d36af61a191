"""The patient chart: one Automerge document per patient.

Layout of the document (every object below the root is created with the chart, or under a
key that is a fresh UUIDv7, so two devices never race to create the same object)::

    schema_version  int           kind   "patient"        id  UUIDv7 of the patient
    created_at      ISO time      created_by  user ID
    fields          map           mutable fields as multi-value registers (see registers.py)
    encounters      map id -> {kind, started_at, zone, author, signed_at, amends, note,
                                observations: map id -> {code, display, value, unit,
                                                         value_boolean, value_code, value_system},
                                form: {questionnaire, language, items (QuestionnaireResponse
                                       item list as JSON)}}
    tasks           map id -> {kind, description, due, encounter_id, rule, created_at, author,
                               reminders: map id -> {send_on, template, language}}
    referrals       map id -> {urgency, reason, danger_signs, rules, encounter_id, created_at,
                               author}
    messages        map id -> {direction, channel, author, text, sent_at, in_reply_to}
    attachments     map sha256 -> {media_type, size, encounter_id, added_at, author}
    allergies       map id -> {created_at, author}   (substance, criticality, status: fields)
    medications     map id -> {created_at, author}   (name, dosage, status: fields)

Register paths: ``given family sex birth_date phone village household_id pregnancy_status
consent.<scope> task.<id>.status referral.<id>.status allergy.<id>.<field>
medication.<id>.<field>``.

Every write validates its input first, then applies it in one Automerge transaction: a refused
write changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import automerge.core as am

from care_record.clock import Clock
from care_record.document import (
    CareDocument,
    iso,
    plain,
    put_root,
    put_tree,
    scalar,
    section,
)
from care_record.errors import RecordLocked
from care_record.ids import new_id
from care_record.schema import (
    Allergy,
    AttachmentRef,
    ConsentScope,
    ConsentStatus,
    ConsentWrite,
    Demographics,
    DemographicsUpdate,
    Encounter,
    Medication,
    Message,
    PregnancyStatus,
    PregnancyWrite,
    RecordId,
    Referral,
    ReferralStatus,
    ReferralStatusWrite,
    Strict,
    Task,
    TaskStatus,
    TaskStatusWrite,
    Visit,
    validated,
)


class _MessageId(Strict):
    message_id: RecordId


class _TaskId(Strict):
    task_id: RecordId


PATIENT_COLLECTIONS = (
    "encounters",
    "tasks",
    "referrals",
    "messages",
    "attachments",
    "allergies",
    "medications",
)


class Chart(CareDocument):
    """A patient's chart. Build one with ``Chart.new_patient`` or ``Chart.load``."""

    KIND = "patient"

    # -- life cycle -------------------------------------------------------------------------

    @classmethod
    def new_patient(
        cls,
        demographics: Demographics | Mapping[str, Any],
        *,
        author: str,
        clock: Clock,
        actor: bytes | None = None,
        chart_id: str | None = None,
    ) -> Self:
        """Create the chart of a new patient. Raises InvalidValue if the demographics fail."""
        checked = validated(Demographics, demographics, today=clock.now().date())
        chart = cls(am.Document(actor), author=author, clock=clock)
        with chart._change() as tx:
            put_root(tx, cls.KIND, chart_id or new_id(clock), author, clock.now())
            for name in PATIENT_COLLECTIONS:
                tx.put_object(am.ROOT, name, am.ObjType.Map)
            for name, value in checked.model_dump(exclude_none=True).items():
                chart._write_field(tx, name, scalar(value))
        return chart

    # -- demographics, consent, status fields ------------------------------------------------

    def update_demographics(self, update: DemographicsUpdate | Mapping[str, Any]) -> None:
        checked = validated(DemographicsUpdate, update, today=self.clock.now().date())
        values = checked.model_dump(exclude_unset=True)
        with self._change() as tx:
            for name, value in values.items():
                self._write_field(tx, name, scalar(value))

    def set_consent(self, scope: ConsentScope, status: ConsentStatus) -> None:
        checked = validated(ConsentWrite, {"scope": scope, "status": status})
        with self._change() as tx:
            self._write_field(tx, f"consent.{checked.scope}", checked.status)

    def set_pregnancy_status(self, status: PregnancyStatus) -> None:
        checked = validated(PregnancyWrite, {"status": status})
        with self._change() as tx:
            self._write_field(tx, "pregnancy_status", checked.status)

    # -- allergies and medications ------------------------------------------------------------

    def add_allergy(self, allergy: Allergy | Mapping[str, Any]) -> str:
        return self._add_item("allergies", "allergy", validated(Allergy, allergy))

    def update_allergy(self, allergy_id: str, changes: Mapping[str, Any]) -> None:
        self._update_item("allergies", "allergy", allergy_id, Allergy, changes)

    def add_medication(self, medication: Medication | Mapping[str, Any]) -> str:
        return self._add_item("medications", "medication", validated(Medication, medication))

    def update_medication(self, medication_id: str, changes: Mapping[str, Any]) -> None:
        self._update_item("medications", "medication", medication_id, Medication, changes)

    # -- encounters ------------------------------------------------------------------------

    def record_encounter(
        self, encounter: Encounter | Mapping[str, Any], *, sign: bool = True
    ) -> str:
        """Add an encounter with its observations. A signed encounter never changes again."""
        checked = validated(Encounter, encounter)
        if checked.amends is not None:
            self._require("encounters", checked.amends)
        encounter_id = new_id(self.clock)
        with self._change() as tx:
            put_tree(
                tx, section(tx, "encounters"), encounter_id, self._encounter_tree(checked, sign)
            )
        return encounter_id

    def record_visit(self, visit: Visit | Mapping[str, Any]) -> str:
        """Add a signed encounter with the referral and tasks it led to, in one transaction.

        Returns the encounter's ID. Raises InvalidValue (nothing written) if any part fails.
        """
        checked = validated(Visit, visit)
        if checked.encounter.amends is not None:
            self._require("encounters", checked.encounter.amends)
        encounter_id = new_id(self.clock)
        with self._change() as tx:
            tree = self._encounter_tree(checked.encounter, sign=True)
            put_tree(tx, section(tx, "encounters"), encounter_id, tree)
            if checked.referral is not None:
                referral = checked.referral.model_copy(update={"encounter_id": encounter_id})
                self._put_record(
                    tx, "referrals", "referral", referral.model_dump(exclude_none=True)
                )
            for task in checked.tasks:
                self._put_task(tx, task.model_copy(update={"encounter_id": encounter_id}))
        return encounter_id

    def _encounter_tree(self, checked: Encounter, sign: bool) -> dict[str, Any]:
        tree: dict[str, Any] = {
            "kind": checked.kind,
            "started_at": iso(checked.started_at),
            "zone": checked.zone,
            "author": self.author,
            "recorded_at": iso(self.clock.now()),
            "observations": {
                new_id(self.clock): o.model_dump(exclude_none=True) for o in checked.observations
            },
        }
        if sign:
            tree["signed_at"] = iso(self.clock.now())
        for optional in ("note", "amends"):
            if getattr(checked, optional) is not None:
                tree[optional] = getattr(checked, optional)
        if checked.form is not None:
            tree["form"] = checked.form.model_dump()
        return tree

    def sign_encounter(self, encounter_id: str) -> None:
        obj = self._require("encounters", encounter_id)
        if self._doc.get(obj, "signed_at") is not None:
            raise RecordLocked("this encounter is already signed; record an amendment instead")
        with self._change() as tx:
            tx.put(obj, "signed_at", am.ScalarType.Str, iso(self.clock.now()))

    # -- tasks, referrals, messages, attachments ---------------------------------------------

    def add_task(self, task: Task | Mapping[str, Any], *, task_id: str | None = None) -> str:
        """Add a task, requested; returns its ID.

        ``task_id`` (a UUIDv7) is the ID a task already has elsewhere (a Task at central): if
        the chart holds a task with that ID, nothing is written, so the same task merged twice
        is there once. Raises InvalidValue (nothing written).
        """
        checked = validated(Task, task)
        if task_id is not None:
            validated(_TaskId, {"task_id": task_id})
            if self._doc.get(section(self._doc, "tasks"), task_id) is not None:
                return task_id
        with self._change() as tx:
            return self._put_task(tx, checked, task_id=task_id)

    def set_task_status(self, task_id: str, status: TaskStatus) -> None:
        self._require("tasks", task_id)
        checked = validated(TaskStatusWrite, {"status": status})
        with self._change() as tx:
            self._write_field(tx, f"task.{task_id}.status", checked.status)

    def add_referral(self, referral: Referral | Mapping[str, Any]) -> str:
        checked = validated(Referral, referral)
        record = plain(checked.model_dump(exclude_none=True))
        return self._add_record("referrals", "referral", record, "requested")

    def set_referral_status(self, referral_id: str, status: ReferralStatus) -> None:
        self._require("referrals", referral_id)
        checked = validated(ReferralStatusWrite, {"status": status})
        with self._change() as tx:
            self._write_field(tx, f"referral.{referral_id}.status", checked.status)

    def add_message(
        self, message: Message | Mapping[str, Any], *, message_id: str | None = None
    ) -> str:
        """Add a message; returns its ID.

        ``message_id`` (a UUIDv7) is the ID a message already has elsewhere (a Communication
        at central): if the chart holds a message with that ID, nothing is written, so the
        same message merged twice is there once. Raises InvalidValue (nothing written).
        """
        checked = validated(Message, message)
        if message_id is not None:
            validated(_MessageId, {"message_id": message_id})
            if self._doc.get(section(self._doc, "messages"), message_id) is not None:
                return message_id
        record = plain(checked.model_dump(exclude_none=True))
        with self._change() as tx:
            return self._put_record(tx, "messages", None, record, None, record_id=message_id)

    def add_attachment(self, ref: AttachmentRef | Mapping[str, Any]) -> None:
        checked = validated(AttachmentRef, ref)
        record = checked.model_dump(exclude_none=True, exclude={"sha256"})
        record |= {"added_at": iso(self.clock.now()), "author": self.author}
        with self._change() as tx:
            attachments = section(tx, "attachments")
            if tx.get(attachments, checked.sha256) is None:
                put_tree(tx, attachments, checked.sha256, record)

    # -- internals ----------------------------------------------------------------------------

    def _add_record(
        self, collection: str, status_prefix: str | None, record: dict[str, Any], status: str | None
    ) -> str:
        with self._change() as tx:
            return self._put_record(tx, collection, status_prefix, record, status)

    def _put_record(
        self,
        tx: am.Transaction,
        collection: str,
        status_prefix: str | None,
        record: Mapping[str, Any],
        status: str | None = "requested",
        *,
        record_id: str | None = None,
    ) -> str:
        record_id = record_id or new_id(self.clock)
        # The record's own fields come last: a message's author is its writer, not the recorder.
        tree = {"created_at": iso(self.clock.now()), "author": self.author, **record}
        put_tree(tx, section(tx, collection), record_id, tree)
        if status_prefix is not None:
            self._write_field(tx, f"{status_prefix}.{record_id}.status", status)
        return record_id

    def _put_task(self, tx: am.Transaction, task: Task, *, task_id: str | None = None) -> str:
        """Write a task (under ``task_id`` if given); its reminders are a map under it keyed by
        fresh IDs."""
        record: dict[str, Any] = plain(task.model_dump(exclude_none=True, exclude={"reminders"}))
        if task.reminders:
            record["reminders"] = {
                new_id(self.clock): plain(r.model_dump()) for r in task.reminders
            }
        return self._put_record(tx, "tasks", "task", record, record_id=task_id)

    def _add_item(self, collection: str, prefix: str, item: Allergy | Medication) -> str:
        item_id = new_id(self.clock)
        with self._change() as tx:
            put_tree(
                tx,
                section(tx, collection),
                item_id,
                {"created_at": iso(self.clock.now()), "author": self.author},
            )
            for name, value in item.model_dump(exclude_none=True).items():
                self._write_field(tx, f"{prefix}.{item_id}.{name}", value)
        return item_id

    def _update_item(
        self,
        collection: str,
        prefix: str,
        item_id: str,
        model: type[Allergy] | type[Medication],
        changes: Mapping[str, Any],
    ) -> None:
        self._require(collection, item_id)
        current = self.view().item(collection, item_id)
        # The item's record also holds created_at and author, which the model does not take.
        known = {k: v for k, v in current.items() if k in model.model_fields}
        checked = validated(model, {**known, **changes})
        with self._change() as tx:
            for name in changes:
                self._write_field(tx, f"{prefix}.{item_id}.{name}", getattr(checked, name))
