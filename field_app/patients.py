"""Registering, finding and reading patients on the tablet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from care_record import Chart, ChartView
from field_app.session import Session
from field_app.store import PatientSummary


def add_patient(session: Session, demographics: Mapping[str, Any]) -> str:
    """Register a patient; returns the new chart's ID. Raises InvalidValue, changes nothing."""
    store = session.store
    chart = Chart.new_patient(
        demographics, author=session.user.id, clock=session.clock, actor=store.actor
    )
    store.put_chart(chart)
    return chart.id


def search_patients(session: Session, text: str, limit: int = 50) -> list[PatientSummary]:
    """Find patients by name: case and accents do not matter, each word matches a name start."""
    return session.store.search(text, limit)


def patient_chart(session: Session, patient_id: str) -> ChartView:
    """The whole chart of a patient. Raises UnknownPatient."""
    return session.store.get_chart(patient_id).view()
