"""Follow-up tasks as Task, and each reminder in a task's plan as a CommunicationRequest.

Central sends the reminders (sms/); it reads the patient's Consents to choose SMS or voice.
A call-back task starts at central and is not pushed back (``CENTRAL_KINDS``).
"""

from __future__ import annotations

from typing import Any

from sync_hub.projection.fhir import (
    REMINDER_TEMPLATE,
    TASK_KIND,
    Resource,
    Targets,
    code_for,
    concept,
    reference,
    resource,
)

TASK_STATUSES = {status: status for status in ("requested", "completed", "cancelled")}
CALL_BACK = "call_back"
# Kinds of task that start at central (a call-back a patient asked for by replying CALL) and
# reach the chart through the hub's fetch. Pushing one back would overwrite central's Task
# with less: its intent, its focus (the patient's reply) and basedOn (the reminder replied to).
CENTRAL_KINDS = frozenset({CALL_BACK})


def task_resources(record: dict[str, Any], targets: Targets) -> list[Resource]:
    """The Task, then its reminders in the order they were planned."""
    status = code_for(
        TASK_STATUSES, record.get("status"), what="task status", record_id=record["id"]
    )
    reminders = record.get("reminders") or {}
    return [
        _task(record, status, targets),
        *(
            _reminder(reminder_id, reminders[reminder_id], record, status, targets)
            for reminder_id in sorted(reminders)
        ),
    ]


def _task(record: dict[str, Any], status: str, targets: Targets) -> Resource:
    due = record.get("due")
    return resource(
        "Task",
        record["id"],
        {
            "status": status,
            "intent": "plan",
            "code": concept(TASK_KIND, record["kind"]),
            "description": record.get("description"),
            "for": targets.patient,
            "encounter": targets.encounter(record.get("encounter_id")),
            "authoredOn": record.get("created_at"),
            # The due date bounds when the task should be done: R4's restriction.period.
            "restriction": {"period": {"end": due}} if due else None,
        },
    )


def _reminder(
    reminder_id: str,
    reminder: dict[str, Any],
    task: dict[str, Any],
    task_status: str,
    targets: Targets,
) -> Resource:
    # Once the task is done or cancelled, its reminders must not go out.
    status = "active" if task_status == "requested" else "revoked"
    description = task.get("description")
    return resource(
        "CommunicationRequest",
        reminder_id,
        {
            "language": reminder.get("language"),
            "basedOn": [reference("Task", task["id"])],
            "status": status,
            "category": [concept(REMINDER_TEMPLATE, reminder["template"])],
            "subject": targets.patient,
            "encounter": targets.encounter(task.get("encounter_id")),
            "payload": [{"contentString": description}] if description else None,
            "occurrenceDateTime": reminder["send_on"],
            "authoredOn": task.get("created_at"),
            "recipient": [targets.patient],
        },
    )
