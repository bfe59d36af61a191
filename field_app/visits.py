"""Recording a visit: vital signs become coded observations in one signed encounter."""

from __future__ import annotations

from collections.abc import Mapping

from care_record import vital_observations
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
