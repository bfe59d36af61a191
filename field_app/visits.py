"""Recording a visit: a form's answers, or bare vital signs, become a signed encounter with
coded observations; a form's conclusions become the referral and tasks in the same write."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from care_record import ChartView, local_today, vital_observations
from field_app.errors import BadAnswer
from field_app.forms import CompletedForm, FormLibrary, FormState, response
from field_app.session import Session
from field_app.store import Store


def write_visit(
    store: Store,
    patient_id: str,
    readings: Mapping[str, float],
    *,
    zone: str,
    kind: str = "vital_signs",
    note: str | None = None,
) -> str:
    """Add a signed encounter with the readings to a chart in ``store``; returns its ID.

    Raises InvalidValue for an implausible reading and UnknownPatient for an unknown ID; in
    both cases nothing is written.
    """
    observations = vital_observations(dict(readings))
    chart = store.get_chart(patient_id)
    encounter = {
        "kind": kind,
        "started_at": store.clock.now(),
        "zone": zone,
        "observations": observations,
        "note": note,
    }
    encounter_id = chart.record_encounter({k: v for k, v in encounter.items() if v is not None})
    store.put_chart(chart)
    return encounter_id


def record_visit(
    session: Session,
    patient_id: str,
    readings: Mapping[str, float],
    *,
    kind: str = "vital_signs",
    note: str | None = None,
) -> str:
    """Record a visit for the unlocked CHW, in the tablet's time zone (see write_visit)."""
    zone = session.settings.zone
    return write_visit(session.store, patient_id, readings, zone=zone, kind=kind, note=note)


@dataclass(frozen=True)
class FormVisit:
    """A visit recorded through a form: the encounter and what the rules concluded."""

    encounter_id: str
    completed: CompletedForm
    referral: dict[str, Any] | None
    tasks: tuple[dict[str, Any], ...]


def patient_facts(chart: ChartView) -> dict[str, Any]:
    """What a form's expressions may read about the patient as ``%patient``."""
    fields = chart.fields
    names = ("birth_date", "sex", "pregnancy_status", "language", "village")
    return {name: fields[name] for name in names if fields.get(name) is not None}


def start_form(
    store: Store,
    library: FormLibrary,
    patient_id: str,
    form_name: str,
    *,
    language: str,
    zone: str,
) -> FormState:
    """A fresh FormState for ``form_name`` about a patient, dated today in ``zone``.

    Raises UnknownPatient, UnknownForm or ContentError.
    """
    view = store.get_chart(patient_id).view()
    form = library.get(form_name)
    today = local_today(store.clock, zone)
    return FormState(form, today=today, patient=patient_facts(view), language=language)


def write_form_visit(store: Store, patient_id: str, state: FormState, *, zone: str) -> FormVisit:
    """Write a completed form into the patient's chart: the signed encounter with its
    QuestionnaireResponse and Observations, the referral and the tasks, in one transaction.

    Raises FormIncomplete (listing what needs work), UnknownPatient or InvalidValue; in every
    case nothing is written.
    """
    completed = state.complete()
    if completed.form.rules.record != "visit":
        raise BadAnswer(
            f"the form {completed.form.name} registers a {completed.form.rules.record}, it is not a visit"
        )
    chart = store.get_chart(patient_id)
    # Reminders go out in the patient's language when the chart has one, else the CHW's.
    language = str(state.patient.get("language") or state.language)
    write = response.visit(
        completed, started_at=store.clock.now(), zone=zone, reminder_language=language
    )
    encounter_id = chart.record_visit(write)
    store.put_chart(chart)
    tasks = tuple(write["tasks"])
    return FormVisit(encounter_id, completed, write["referral"], tasks)


def record_form_visit(
    session: Session,
    library: FormLibrary,
    patient_id: str,
    form_name: str,
    answers: Mapping[str, object],
) -> FormVisit:
    """Fill ``form_name`` with ``answers`` for a patient and record it (see write_form_visit)."""
    settings = session.settings
    state = start_form(
        session.store,
        library,
        patient_id,
        form_name,
        language=settings.language,
        zone=settings.zone,
    )
    state.answer_all(answers)
    return write_form_visit(session.store, patient_id, state, zone=settings.zone)
