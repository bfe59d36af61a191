"""Tasks central writes for a CHW as chart tasks: a call-back a patient asked for by replying
CALL (kind ``call_back``). Only the kinds that start at central come down
(``sync_hub.projection.tasks.CENTRAL_KINDS``); the projection does not push them back."""

from __future__ import annotations

from datetime import date
from typing import Any

from care_record.schema import TaskStatus
from sync_hub.downstream.fhir import coded, text_of
from sync_hub.projection.fhir import TASK_KIND
from sync_hub.projection.tasks import CALL_BACK, CENTRAL_KINDS

# FHIR Task status -> the chart's, for a Task no longer to be done; every other status (draft,
# requested, received, accepted, ready, in-progress, on-hold) is still to do: requested.
CLOSED_STATUSES: dict[str, TaskStatus] = {
    "completed": "completed",
    "cancelled": "cancelled",
    "rejected": "cancelled",
    "failed": "cancelled",
    "entered-in-error": "cancelled",
}
# A Task that says nothing of what to do: what a task of its kind always asks.
USUAL_DESCRIPTIONS = {CALL_BACK: "Call the patient back"}


def search_criteria() -> dict[str, str]:
    """The search that finds the Tasks of the kinds that start at central."""
    return {"code": ",".join(f"{TASK_KIND}|{kind}" for kind in sorted(CENTRAL_KINDS))}


def task(resource: dict[str, Any], *, today: date) -> dict[str, Any] | None:
    """The chart task (``care_record.schema.Task``) a Task is, or None if it is not of a kind
    that starts at central. ``today`` is its due day when the Task gives none: a call-back
    without a day to be done by is due at once."""
    kind = coded([resource.get("code")], TASK_KIND)
    if kind not in CENTRAL_KINDS:
        return None
    description = text_of(resource.get("description")) or USUAL_DESCRIPTIONS.get(kind)
    if description is None:
        return None
    return {"kind": kind, "description": description, "due": _due(resource) or today}


def closed_status(resource: dict[str, Any]) -> TaskStatus | None:
    """The chart status of a Task already done or given up at central; None if still to do."""
    return CLOSED_STATUSES.get(str(resource.get("status")))


def _due(resource: dict[str, Any]) -> date | None:
    """The day a Task is due: the end of its restriction period, else the day it was written."""
    restriction = resource.get("restriction")
    period = restriction.get("period") if isinstance(restriction, dict) else None
    end = period.get("end") if isinstance(period, dict) else None
    return _day(end) or _day(resource.get("authoredOn"))


def _day(value: object) -> date | None:
    """The day of a FHIR date or dateTime as written (its local day); None for a partial date."""
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None
