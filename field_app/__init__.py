"""The CHW tablet app: encrypted store, patients, visits, tasks. ``ui/`` is the Kivy layer."""

from care_record import fold
from field_app.attachments import AttachmentStore
from field_app.errors import (
    AccessError,
    BadInput,
    FieldAppError,
    Locked,
    LockedOut,
    StoreCorrupt,
    StoreErased,
    StoreExists,
    StoreMissing,
    TooSoon,
    UnknownPatient,
    UnknownUser,
    WrongPin,
)
from field_app.patients import add_patient, patient_chart, search_patients
from field_app.session import Session, end_sessions, erase, init_store, issue_token, resume, unlock
from field_app.settings import Settings
from field_app.store import PatientSummary, Store
from field_app.tasks import add_follow_up, complete_task, tasks_due
from field_app.visits import record_visit

__all__ = [
    "AccessError",
    "AttachmentStore",
    "BadInput",
    "FieldAppError",
    "Locked",
    "LockedOut",
    "PatientSummary",
    "Session",
    "Settings",
    "Store",
    "StoreCorrupt",
    "StoreErased",
    "StoreExists",
    "StoreMissing",
    "TooSoon",
    "UnknownPatient",
    "UnknownUser",
    "WrongPin",
    "add_follow_up",
    "add_patient",
    "complete_task",
    "end_sessions",
    "erase",
    "fold",
    "init_store",
    "issue_token",
    "patient_chart",
    "record_visit",
    "resume",
    "search_patients",
    "tasks_due",
    "unlock",
]
