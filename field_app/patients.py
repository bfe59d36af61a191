"""Registering, finding and reading patients on the tablet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from care_record import Chart, ChartView
from field_app.session import Session
from field_app.store import PatientSummary, Store


def register_patient(store: Store, demographics: Mapping[str, Any]) -> str:
    """Create a patient's chart in ``store``; returns its ID. Raises InvalidValue."""
    chart = Chart.new_patient(
        demographics, author=store.author, clock=store.clock, actor=store.actor
    )
    store.put_chart(chart)
    return chart.id


def add_patient(session: Session, demographics: Mapping[str, Any]) -> str:
    """Register a patient; returns the new chart's ID. Raises InvalidValue, changes nothing."""
    return register_patient(session.store, demographics)


def search_patients(session: Session, text: str, limit: int = 50) -> list[PatientSummary]:
    """Find patients by name: case and accents do not matter, each word matches a name start."""
    return session.store.search(text, limit)


def patient_chart(session: Session, patient_id: str) -> ChartView:
    """The whole chart of a patient. Raises UnknownPatient."""
    return session.store.get_chart(patient_id).view()
