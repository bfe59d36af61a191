"""Errors raised by the care record.

    CareRecordError
    ├── InvalidValue         a write was refused by the schema (nothing was changed)
    ├── UnknownRecord        an ID names no encounter, task, referral or item in this chart
    ├── RecordLocked         a signed encounter cannot be edited; write an amendment instead
    ├── NotAChart            bytes are not a chart document (corrupt, truncated, or another kind)
    ├── MissingHistory       changes arrived whose earlier history is not here (sync must resync)
    └── ChartTooNew          the chart was written by a newer schema than this code knows

Every message is safe to show and to log: it names fields and rules, never a patient's data.
"""

from __future__ import annotations


class CareRecordError(Exception):
    """Base class of every error the care record raises."""


class InvalidValue(CareRecordError):
    """A value failed validation; the chart was not changed."""


class UnknownRecord(CareRecordError):
    """An ID does not name anything in this chart."""


class RecordLocked(CareRecordError):
    """The record is signed and append-only; corrections are amendments."""


class NotAChart(CareRecordError):
    """The bytes do not hold a chart document."""


class MissingHistory(CareRecordError):
    """Changes depend on history this side does not hold; the two sides must resync."""


class ChartTooNew(CareRecordError):
    """The chart's schema version is newer than this code; update the app to read it."""
