"""Follow-ups: what is due, and scheduling a new one on a patient's chart."""

from __future__ import annotations

from datetime import date
from typing import Any

from field_app.session import Session


def tasks_due(session: Session, on_or_before: date) -> list[dict[str, Any]]:
    """Open tasks due on or before a day, earliest first, with the patient's name."""
    return session.store.tasks_due(on_or_before.isoformat())


def add_follow_up(
    session: Session, patient_id: str, description: str, due: date, kind: str = "follow_up"
) -> str:
    store = session.store
    chart = store.get_chart(patient_id)
    task_id = chart.add_task({"kind": kind, "description": description, "due": due})
    store.put_chart(chart)
    return task_id


def complete_task(session: Session, patient_id: str, task_id: str) -> None:
    store = session.store
    chart = store.get_chart(patient_id)
    chart.set_task_status(task_id, "completed")
    store.put_chart(chart)
