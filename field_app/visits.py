"""Recording a visit: vital signs become coded observations in one signed encounter."""

from __future__ import annotations

from collections.abc import Mapping

from care_record import vital_observations
from field_app.session import Session


def record_visit(
    session: Session,
    patient_id: str,
    readings: Mapping[str, float],
    *,
    kind: str = "vital_signs",
    note: str | None = None,
) -> str:
    """Add a signed encounter with the readings to the patient's chart; returns its ID.

    Raises InvalidValue for an implausible reading and UnknownPatient for an unknown ID; in
    both cases nothing is written.
    """
    observations = vital_observations(dict(readings))
    store = session.store
    chart = store.get_chart(patient_id)
    encounter = {
        "kind": kind,
        "started_at": session.clock.now(),
        "zone": session.settings.zone,
        "observations": observations,
        "note": note,
    }
    encounter_id = chart.record_encounter({k: v for k, v in encounter.items() if v is not None})
    store.put_chart(chart)
    return encounter_id
