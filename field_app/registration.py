"""Registering a household or a patient through a registration form.

The form's answers become the new document (demographics, consents and pregnancy status for a
patient; name and village for a household). For a patient the completed form is also kept as a
signed registration encounter, with the tasks its rules conclude (a pregnant woman's first
antenatal contact, a young child's immunisation check), all written to the store at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from care_record import Chart, HouseholdRecord, local_today
from field_app.errors import BadAnswer
from field_app.forms import CompletedForm, FormLibrary, FormState, response
from field_app.store import Store


@dataclass(frozen=True)
class Registered:
    kind: str
    id: str
    completed: CompletedForm
    tasks: tuple[dict[str, Any], ...] = ()


def start_registration(
    store: Store, library: FormLibrary, form_name: str, *, language: str, zone: str
) -> FormState:
    """A fresh registration form, dated today in ``zone``. Raises UnknownForm, BadAnswer."""
    form = library.get(form_name)
    if form.rules.record == "visit":
        raise BadAnswer(f"the form {form_name} records a visit; it does not register anyone")
    return FormState(form, today=local_today(store.clock, zone), language=language)


def register(store: Store, state: FormState, *, zone: str) -> Registered:
    """Create the household or patient the completed form describes; returns its ID.

    Raises FormIncomplete or InvalidValue; in both cases nothing is written.
    """
    completed = state.complete()
    if completed.form.rules.record == "household":
        return _household(store, completed)
    if completed.form.rules.record != "patient":
        raise BadAnswer(
            f"the form {completed.form.name} records a visit; it does not register anyone"
        )
    return _patient(store, completed, zone)


def _household(store: Store, completed: CompletedForm) -> Registered:
    fields: dict[str, Any] = {
        k: completed.answers[k][0] for k in ("name", "village") if k in completed.answers
    }
    household = HouseholdRecord.new(
        fields, author=store.author, clock=store.clock, actor=store.actor
    )
    store.put_document(household.KIND, household.save(), household.id)
    return Registered("household", household.id, completed)


def _patient(store: Store, completed: CompletedForm, zone: str) -> Registered:
    chart = Chart.new_patient(
        response.demographics(completed), author=store.author, clock=store.clock, actor=store.actor
    )
    for scope, status in response.consents(completed).items():
        chart.set_consent(scope, status)  # type: ignore[arg-type]
    pregnancy = completed.answers.get("pregnancy_status")
    if pregnancy:
        chart.set_pregnancy_status(pregnancy[0])  # type: ignore[arg-type]
    language = str(completed.answers.get("language", (completed.language,))[0])
    write = response.visit(
        completed, started_at=store.clock.now(), zone=zone, reminder_language=language
    )
    chart.record_visit(write)
    store.put_chart(chart)
    return Registered("patient", chart.id, completed, tuple(write["tasks"]))
