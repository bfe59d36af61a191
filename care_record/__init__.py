"""The shared care record: charts as Automerge documents, their schema, IDs and clock."""

from care_record.chart import Chart
from care_record.clock import Clock, FixedClock, SystemClock, local_today
from care_record.document import CareDocument
from care_record.errors import (
    CareRecordError,
    ChartTooNew,
    InvalidValue,
    MissingHistory,
    NotAChart,
    RecordLocked,
    UnknownRecord,
)
from care_record.folding import fold
from care_record.household import HouseholdRecord
from care_record.ids import new_id
from care_record.registers import Entry
from care_record.schema import SCHEMA_VERSION
from care_record.view import ChartView, Conflict, is_risky
from care_record.vitals import VITAL_SIGNS, vital_observations

__all__ = [
    "SCHEMA_VERSION",
    "VITAL_SIGNS",
    "CareDocument",
    "CareRecordError",
    "Chart",
    "ChartTooNew",
    "ChartView",
    "Clock",
    "Conflict",
    "Entry",
    "FixedClock",
    "HouseholdRecord",
    "InvalidValue",
    "MissingHistory",
    "NotAChart",
    "RecordLocked",
    "SystemClock",
    "UnknownRecord",
    "fold",
    "is_risky",
    "local_today",
    "new_id",
    "vital_observations",
]
