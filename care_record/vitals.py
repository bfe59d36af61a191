"""Vital signs: their LOINC codes, UCUM units and the range a real reading can fall in.

A reading outside its range is almost always a typing slip (37 typed as 73, weight in grams),
so it is refused rather than stored. The ranges are deliberately wide: they catch the
impossible, not the abnormal; flagging the abnormal is the rules engine's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from care_record.errors import InvalidValue
from care_record.schema import Observation


@dataclass(frozen=True)
class VitalSign:
    name: str
    loinc: str
    display: str
    unit: str
    low: float
    high: float


VITAL_SIGNS: dict[str, VitalSign] = {
    v.name: v
    for v in (
        VitalSign("systolic", "8480-6", "Systolic blood pressure", "mm[Hg]", 50, 300),
        VitalSign("diastolic", "8462-4", "Diastolic blood pressure", "mm[Hg]", 20, 200),
        VitalSign("pulse", "8867-4", "Heart rate", "/min", 20, 250),
        VitalSign("temperature", "8310-5", "Body temperature", "Cel", 30, 45),
        VitalSign("spo2", "59408-5", "Oxygen saturation by pulse oximetry", "%", 50, 100),
        VitalSign("weight", "29463-7", "Body weight", "kg", 0.3, 350),
        VitalSign("muac", "56072-2", "Mid-upper arm circumference", "mm", 50, 500),
        VitalSign("respiratory_rate", "9279-1", "Respiratory rate", "/min", 5, 120),
    )
}


def vital_observations(readings: dict[str, float]) -> tuple[Observation, ...]:
    """Turn named readings into coded observations, refusing implausible values.

    Raises InvalidValue naming every reading that is unknown or out of range.
    """
    problems = []
    for name, value in readings.items():
        sign = VITAL_SIGNS.get(name)
        if sign is None:
            problems.append(f"{name}: not a known vital sign ({', '.join(VITAL_SIGNS)})")
        elif not sign.low <= value <= sign.high:
            problems.append(f"{name}: must be between {sign.low:g} and {sign.high:g} {sign.unit}")
    systolic, diastolic = readings.get("systolic"), readings.get("diastolic")
    if systolic is not None and diastolic is not None and diastolic >= systolic:
        problems.append("diastolic: must be lower than systolic")
    if problems:
        raise InvalidValue("; ".join(problems))
    return tuple(
        Observation(
            code=VITAL_SIGNS[name].loinc,
            display=VITAL_SIGNS[name].display,
            value=float(value),
            unit=VITAL_SIGNS[name].unit,
        )
        for name, value in readings.items()
    )
