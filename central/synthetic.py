"""Synthetic patients for central: one FHIR R4 transaction bundle per patient, shaped like Synthea's.

Five years (by default) of rural primary care in an East African district: antenatal contacts and
deliveries, the WHO immunisation schedule with growth checks (weight, MUAC), sick-child visits
(malaria RDT, fast breathing, diarrhoea), hypertension follow-up, TB symptom screening, a few
allergies. Names, villages and facilities are built from invented syllables and phones come from
one number range, so nothing here describes a real person.

Like Synthea's output, each bundle is a ``transaction`` of POSTs with ``urn:uuid:`` full URLs,
every reference between entries is one of those URLs, and facilities and clinicians are
conditional creates (``ifNoneExist`` on their identifier) so that importing many bundles creates
each of them once. Unlike Synthea, the entries are written in date order with each one after
everything it references, so any prefix of a bundle is itself a valid bundle:
``resource_bundles`` relies on it to fill bundles to an exact size.

A patient's care is a set of programmes (immunisation, pregnancy, hypertension, ...), each a
generator that yields the day of its next visit and writes that visit when resumed; they run
side by side in date order. Everything is drawn from the ``random.Random`` passed in, so a seed
gives the same bundles on every run and every machine.

Codes: LOINC for observations, CVX for vaccines, SNOMED CT for conditions, procedures and
findings, ATC for medicines, UCUM for units; only codes known to exist are used, and a concept
without a certain code is written as text alone.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

Json = dict[str, Any]
# A coded concept: (system, code, display). A plain string is a concept with no certain code.
Code = tuple[str, str, str]
Concept = Code | str
# A programme yields the day of its next visit and writes that visit when it is resumed.
Programme = Iterator[date]
Role = Literal["chw", "nurse", "clinical_officer"]
Place = Literal["home", "dispensary", "centre", "ward"]

# Care windows start on this day unless the caller says otherwise.
DEFAULT_START = date(2020, 1, 1)
EAST_AFRICA_TIME = timezone(timedelta(hours=3))  # no daylight saving

REGION_TAG_SYSTEM = "urn:rural-care:region"
PATIENT_ID_SYSTEM = "urn:rural-care:patient"
ENCOUNTER_KIND_SYSTEM = "urn:rural-care:encounter-kind"
FACILITY_ID_SYSTEM = "urn:rural-care:facility"
PRACTITIONER_ID_SYSTEM = "urn:rural-care:practitioner"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CVX = "http://hl7.org/fhir/sid/cvx"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
_SHARED_NAMESPACE = uuid.UUID("6f7c1a52-3d0e-4f37-9a51-0c8d2e4b9a17")

# Encounter kinds are the hub's form names (docs/fhir.md), plus the delivery no form records.
ENCOUNTER_KINDS = {
    "anc_contact": "Antenatal contact",
    "delivery": "Delivery",
    "immunisation": "Immunisation",
    "sick_child": "Sick child visit",
    "vital_signs": "Vital signs check",
    "hypertension_followup": "Hypertension follow-up",
    "tb_screen": "TB screening",
}


def _hl7(code_system: str, code: str, display: str) -> Code:
    return (f"http://terminology.hl7.org/CodeSystem/{code_system}", code, display)


_CONDITION_ACTIVE = _hl7("condition-clinical", "active", "Active")
_CONDITION_RESOLVED = _hl7("condition-clinical", "resolved", "Resolved")
_CONDITION_CONFIRMED = _hl7("condition-ver-status", "confirmed", "Confirmed")
_PROBLEM_LIST = _hl7("condition-category", "problem-list-item", "Problem List Item")
_ENCOUNTER_DIAGNOSIS = _hl7("condition-category", "encounter-diagnosis", "Encounter Diagnosis")
_ALLERGY_ACTIVE = _hl7("allergyintolerance-clinical", "active", "Active")
_ALLERGY_CONFIRMED = _hl7("allergyintolerance-verification", "confirmed", "Confirmed")
_COMMUNITY = _hl7("medicationrequest-category", "community", "Community")
_PROVIDER = _hl7("organization-type", "prov", "Healthcare Provider")
_PRIMARY_PERFORMER = _hl7("v3-ParticipationType", "PPRF", "primary performer")
_MARRIED = _hl7("v3-MaritalStatus", "M", "Married")
_NEVER_MARRIED = _hl7("v3-MaritalStatus", "S", "Never Married")
_ENCOUNTER_CLASS: dict[Place, Code] = {
    "home": _hl7("v3-ActCode", "HH", "home health"),
    "dispensary": _hl7("v3-ActCode", "AMB", "ambulatory"),
    "centre": _hl7("v3-ActCode", "AMB", "ambulatory"),
    "ward": _hl7("v3-ActCode", "IMP", "inpatient encounter"),
}
_OBSERVATION_CATEGORY = {
    "vital-signs": _hl7("observation-category", "vital-signs", "Vital Signs"),
    "laboratory": _hl7("observation-category", "laboratory", "Laboratory"),
    "survey": _hl7("observation-category", "survey", "Survey"),
}
_INTERPRETATION = {
    True: _hl7("v3-ObservationInterpretation", "POS", "Positive"),
    False: _hl7("v3-ObservationInterpretation", "NEG", "Negative"),
}

# Observations: (LOINC code, display, UCUM unit).
_VITALS = {
    "weight": ("29463-7", "Body weight", "kg"),
    "height": ("8302-2", "Body height", "cm"),
    "bmi": ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2"),
    "temperature": ("8310-5", "Body temperature", "Cel"),
    "pulse": ("8867-4", "Heart rate", "/min"),
    "respiratory_rate": ("9279-1", "Respiratory rate", "/min"),
    "muac": ("56072-2", "Circumference Mid upper arm - right", "mm"),
    "gestational_age": ("18185-9", "Gestational age", "wk"),
}
_BP_PANEL: Code = (LOINC, "85354-9", "Blood pressure panel with all children optional")
_SYSTOLIC: Code = (LOINC, "8480-6", "Systolic blood pressure")
_DIASTOLIC: Code = (LOINC, "8462-4", "Diastolic blood pressure")
_HAEMOGLOBIN: Code = (LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood")
_MALARIA_RDT: Code = (
    LOINC,
    "70569-9",
    "Plasmodium sp Ag [Identifier] in Blood by Rapid immunoassay",
)
_HIV_RAPID: Code = (LOINC, "68961-2", "HIV 1 Ab [Presence] in Serum, Plasma or Blood by Rapid immunoassay")  # fmt: skip
_SYPHILIS_RPR: Code = (LOINC, "20507-0", "Reagin Ab [Presence] in Serum by RPR")
_MTB_NAA: Code = (LOINC, "38379-4", "Mycobacterium tuberculosis complex DNA [Presence] in Specimen by NAA with probe detection")  # fmt: skip
_TB_SYMPTOM_SCREEN = "TB symptom screen (cough, fever, weight loss, night sweats)"
_RESULT = {True: (SNOMED, "10828004", "Positive"), False: (SNOMED, "260385009", "Negative")}

# Conditions, findings and procedures (SNOMED CT).
_MALARIA: Code = (SNOMED, "61462000", "Malaria")
_PNEUMONIA: Code = (SNOMED, "233604007", "Pneumonia")
_DIARRHOEA: Code = (SNOMED, "62315008", "Diarrhea")
_HYPERTENSION: Code = (SNOMED, "38341003", "Hypertensive disorder, systemic arterial")
_PREGNANCY: Code = (SNOMED, "72892002", "Normal pregnancy")
_ANAEMIA: Code = (SNOMED, "271737000", "Anemia")
_HIV: Code = (SNOMED, "86406008", "Human immunodeficiency virus infection")
_PULMONARY_TB: Code = (SNOMED, "154283005", "Pulmonary tuberculosis")
_MALNUTRITION = "Moderate acute malnutrition"
_FEVER: Code = (SNOMED, "386661006", "Fever")
_COUGH: Code = (SNOMED, "49727002", "Cough")
_CHEST_XRAY: Code = (SNOMED, "399208008", "Plain X-ray of chest")
_NORMAL_DELIVERY: Code = (SNOMED, "48782003", "Delivery normal")
_CAESAREAN: Code = (SNOMED, "11466000", "Cesarean section")


@dataclass(frozen=True)
class _Course:
    """A medicine (ATC) as it is prescribed: how, for how many days, how many times a day."""

    medicine: Concept
    dosage: str
    days: int
    per_day: int = 1


_ARTEMETHER_LUMEFANTRINE = _Course((ATC, "P01BF01", "artemether and lumefantrine"), "Tablets by weight, twice a day", 3, 2)  # fmt: skip
_PARACETAMOL = _Course((ATC, "N02BE01", "paracetamol"), "By weight, up to four times a day", 3, 4)
_AMOXICILLIN = _Course((ATC, "J01CA04", "amoxicillin"), "Dispersible tablets by weight, twice a day", 5, 2)  # fmt: skip
_ORS = _Course((ATC, "A07CA", "Oral rehydration salt formulations"), "One sachet in a litre of water, after each loose stool", 3, 4)  # fmt: skip
_ZINC = _Course((ATC, "A12CB01", "zinc sulfate"), "One 20 mg tablet by mouth once a day", 10)
_VITAMIN_A = _Course((ATC, "A11CA01", "retinol (vit A)"), "One capsule by mouth, once", 1)
_ALBENDAZOLE = _Course((ATC, "P02CA03", "albendazole"), "One tablet by mouth, once", 1)
_IPTP = _Course((ATC, "P01BD51", "pyrimethamine, combinations"), "Three tablets by mouth, once, observed", 1)  # fmt: skip
_IRON_FOLIC_ACID = _Course((ATC, "B03AD", "Iron in combination with folic acid"), "One tablet by mouth once a day", 180)  # fmt: skip
_AMLODIPINE = _Course((ATC, "C08CA01", "amlodipine"), "5 mg by mouth once a day", 90)
_HYDROCHLOROTHIAZIDE = _Course((ATC, "C03AA03", "hydrochlorothiazide"), "25 mg by mouth once a day", 90)  # fmt: skip
_TB_INTENSIVE = _Course((ATC, "J04AM06", "rifampicin, pyrazinamide, ethambutol and isoniazid"), "Fixed-dose tablets by weight, once a day", 60)  # fmt: skip
_TB_CONTINUATION = _Course("Rifampicin and isoniazid", "Fixed-dose tablets by weight, once a day", 120)  # fmt: skip


@dataclass(frozen=True)
class _Vaccine:
    code: Code
    route: Code
    site: Code | None
    dose_ml: float | None


_ORAL = _hl7("v3-RouteOfAdministration", "PO", "Swallow, oral")
_INTRAMUSCULAR = _hl7("v3-RouteOfAdministration", "IM", "Injection, intramuscular")
_LEFT_THIGH = _hl7("v3-ActSite", "LT", "left thigh")
_RIGHT_THIGH = _hl7("v3-ActSite", "RT", "right thigh")
_LEFT_ARM = _hl7("v3-ActSite", "LA", "left arm")
_BCG = _Vaccine((CVX, "19", "BCG"), _hl7("v3-RouteOfAdministration", "IDINJ", "Injection, intradermal"), _hl7("v3-ActSite", "RA", "right arm"), 0.05)  # fmt: skip
_BOPV = _Vaccine((CVX, "178", "OPV bivalent"), _ORAL, None, None)
_HEPB = _Vaccine((CVX, "08", "Hep B, adolescent or pediatric"), _INTRAMUSCULAR, _RIGHT_THIGH, 0.5)
_PENTA = _Vaccine((CVX, "198", "DTP-hepB-Hib Pentavalent Non-US"), _INTRAMUSCULAR, _LEFT_THIGH, 0.5)  # fmt: skip
_PCV = _Vaccine((CVX, "133", "Pneumococcal conjugate PCV 13"), _INTRAMUSCULAR, _RIGHT_THIGH, 0.5)
_ROTA = _Vaccine((CVX, "119", "rotavirus, monovalent"), _ORAL, None, 1.5)
_IPV = _Vaccine((CVX, "10", "IPV"), _INTRAMUSCULAR, _RIGHT_THIGH, 0.5)
_MR = _Vaccine((CVX, "04", "M/R"), _hl7("v3-RouteOfAdministration", "SQ", "Injection, subcutaneous"), _LEFT_ARM, 0.5)  # fmt: skip
_TD = _Vaccine((CVX, "09", "Td (adult)"), _INTRAMUSCULAR, _LEFT_ARM, 0.5)

# The WHO schedule as Tanzania's EPI gives it: age in days, then (vaccine, dose number); the
# birth doses of OPV and hepatitis B come before dose 1, so they have no number.
_EPI_SCHEDULE: tuple[tuple[int, tuple[tuple[_Vaccine, int | None], ...]], ...] = (
    (0, ((_BCG, 1), (_BOPV, None), (_HEPB, None))),
    (42, ((_BOPV, 1), (_PENTA, 1), (_PCV, 1), (_ROTA, 1))),
    (70, ((_BOPV, 2), (_PENTA, 2), (_PCV, 2), (_ROTA, 2))),
    (98, ((_BOPV, 3), (_PENTA, 3), (_PCV, 3), (_IPV, 1))),
    (274, ((_MR, 1),)),
    (548, ((_MR, 2),)),
)

# Each allergy: its concept, category, criticality and the reaction seen.
_ALLERGIES: tuple[tuple[Concept, str, str, str], ...] = (
    ((SNOMED, "91936005", "Allergy to penicillin"), "medication", "high", "Skin rash and swelling"),
    ("Allergy to sulfonamides", "medication", "high", "Skin rash"),
    ((SNOMED, "91935009", "Allergy to peanuts"), "food", "low", "Itching of the mouth"),
    ("Allergy to bee stings", "environment", "low", "Swelling at the sting"),
)

# Syllables for names that sound East African without being anyone's.
_GIVEN_ONSETS = ("A", "Ba", "Cha", "Da", "E", "Fu", "Ha", "I", "Ja", "Ka", "Ki", "Lu", "Ma", "Mwa", "Na", "Nde", "Nya", "O", "Pe", "Ra", "Sa", "Shi", "Ta", "Tu", "U", "Wa", "Ya", "Za")  # fmt: skip
_GIVEN_MIDDLES = ("", "ba", "di", "ke", "li", "mbi", "nde", "ngu", "ri", "si", "to", "wi")
_FEMALE_ENDINGS = ("a", "ia", "ima", "ina", "ja", "ni", "ra", "wa", "ye", "ze")
_MALE_ENDINGS = ("o", "u", "i", "mu", "ri", "so", "to", "ngo", "ka", "di")
_FAMILY_ONSETS = ("Ki", "Ma", "Mwa", "Nya", "Lu", "Mu", "Ka", "Shi", "Ru", "Ta", "Bi", "Ngo", "Se", "Wa")  # fmt: skip
_FAMILY_MIDDLES = ("ba", "fu", "ko", "la", "mbe", "nda", "nge", "ri", "so", "te", "ye", "zi")
_FAMILY_ENDINGS = ("ro", "nde", "mba", "lo", "we", "si", "ke", "ngi", "mo", "ta", "ra", "ho")
_PLACE_ONSETS = ("Ki", "Ma", "Mi", "Nya", "Lu", "Ilu", "U", "Mbu", "Ngo", "Ka")
# Mobile numbers all start +255 7990: one range, so a generated number is easy to recognise.
_PHONE_PREFIX = "+2557990"

_ROLES: dict[Role, str] = {
    "chw": "Community health worker",
    "nurse": "Nurse-midwife",
    "clinical_officer": "Clinical officer",
}
_LIVES = ("child", "mother", "hypertensive", "other")
_LIFE_WEIGHTS = (35, 25, 20, 20)


# --- public API -------------------------------------------------------------------------------


def patient_bundle(
    rng: random.Random, *, start: date, years: int = 5, region: str | None = None
) -> Json:
    """One patient's care from ``start`` for ``years`` years, as a FHIR transaction bundle.

    Raises ValueError if ``years`` is below 1.
    """
    return _transaction(_patient_entries(rng, start=start, years=years, region=region))


def population(
    seed: int,
    patients: int,
    *,
    start: date = DEFAULT_START,
    years: int = 5,
    region: str | None = None,
) -> Iterator[Json]:
    """``patients`` patient bundles; the first n of a seed are the same whatever the count."""
    for number in range(patients):
        yield patient_bundle(_patient_rng(seed, number), start=start, years=years, region=region)


def resource_bundles(
    seed: int, total_resources: int, *, per_bundle: int = 100, region: str | None = None
) -> Iterator[Json]:
    """Transaction bundles of exactly ``per_bundle`` entries (the last may hold fewer), with
    ``total_resources`` entries in all; every reference resolves inside its own bundle.

    Patients are never split across bundles: when the next patient does not fit, the bundle is
    filled with the start of that patient's record and the next bundle begins a new patient.

    Raises ValueError if ``per_bundle`` is below 1 or ``total_resources`` is negative.
    """
    if per_bundle < 1 or total_resources < 0:
        raise ValueError("per_bundle must be at least 1 and total_resources at least 0")
    patients = _patient_stream(seed, region)
    remaining = total_resources
    while remaining > 0:
        size = min(per_bundle, remaining)
        yield _transaction(_fill(size, patients))
        remaining -= size


# --- bundles ----------------------------------------------------------------------------------


def _patient_rng(seed: int, number: int) -> random.Random:
    # Synthetic data, not secrets: a seeded, reproducible generator is the point.
    return random.Random(f"rural-care-patient:{seed}:{number}")  # noqa: S311


def _patient_stream(seed: int, region: str | None) -> Iterator[list[Json]]:
    for number in itertools.count():
        rng = _patient_rng(seed, number)
        yield _patient_entries(rng, start=DEFAULT_START, years=5, region=region)


def _fill(size: int, patients: Iterator[list[Json]]) -> list[Json]:
    """``size`` entries: whole patients, then the start of one more (a prefix is self-contained).
    A facility or clinician already in the bundle is not written twice."""
    entries: list[Json] = []
    present: set[str] = set()
    while len(entries) < size:
        fresh = [entry for entry in next(patients) if entry["fullUrl"] not in present]
        taken = fresh[: size - len(entries)]
        entries += taken
        present.update(entry["fullUrl"] for entry in taken)
    return entries


def _transaction(entries: list[Json]) -> Json:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _patient_entries(
    rng: random.Random, *, start: date, years: int, region: str | None
) -> list[Json]:
    if years < 1:
        raise ValueError("years must be at least 1")
    end = _years_after(start, years)
    life = rng.choices(_LIVES, weights=_LIFE_WEIGHTS)[0]
    person = _draw_person(rng, life, start, end)
    *dispensaries, centre = _district(region)
    home = rng.choice(dispensaries)
    chart = _Chart(rng, person, region=region, start=start, end=end, home=home, centre=centre)
    _live(_programmes(chart, life), end)
    return chart.entries


def _live(programmes: list[Programme], end: date) -> None:
    """Run the programmes side by side, always resuming the one whose next visit comes first,
    and drop each one when its next visit falls on or after ``end``."""
    queue: list[tuple[date, int, Programme]] = []
    for order, programme in enumerate(programmes):
        _advance(queue, order, programme, end)
    while queue:
        _, order, programme = heapq.heappop(queue)
        _advance(queue, order, programme, end)


def _advance(
    queue: list[tuple[date, int, Programme]], order: int, programme: Programme, end: date
) -> None:
    day = next(programme, None)
    if day is not None and day < end:
        heapq.heappush(queue, (day, order, programme))


# --- people and places ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Person:
    given: tuple[str, ...]
    family: str
    sex: Literal["female", "male"]
    born: date
    village: str
    phone: str | None
    # How big this person is for their age (1.0 is the median), so weights stay on one curve.
    size: float


@dataclass(frozen=True)
class _Clinician:
    identifier: str
    url: str
    given: str
    family: str
    gender: str
    role: Role


@dataclass(frozen=True)
class _Facility:
    identifier: str
    url: str
    name: str
    district: str
    clinicians: tuple[_Clinician, ...]

    def clinician(self, role: Role) -> _Clinician:
        return next(c for c in self.clinicians if c.role == role)


def _draw_person(rng: random.Random, life: str, start: date, end: date) -> _Person:
    sex: Literal["female", "male"] = rng.choice(("female", "male"))
    if life == "child":  # under five some time in the window, born two months before its end
        earliest = _years_after(start, -4)
        born = earliest + timedelta(days=rng.randrange((end - earliest).days - 60))
    else:
        youngest, oldest = {"mother": (15, 38), "hypertensive": (35, 75)}.get(life, (15, 80))
        born = _years_after(start, -rng.randint(youngest, oldest))
        born -= timedelta(days=rng.randrange(365))
        sex = "female" if life == "mother" else sex
    given: tuple[str, ...] = (_given_name(rng, sex),)
    if rng.random() < 0.15:
        given += (_given_name(rng, sex),)
    phone = f"{_PHONE_PREFIX}{rng.randrange(100_000):05d}" if rng.random() < 0.75 else None
    size = rng.uniform(0.85, 1.15)
    return _Person(given, _family_name(rng), sex, born, _place_name(rng), phone, size)


def _given_name(rng: random.Random, sex: str) -> str:
    endings = _FEMALE_ENDINGS if sex == "female" else _MALE_ENDINGS
    return rng.choice(_GIVEN_ONSETS) + rng.choice(_GIVEN_MIDDLES) + rng.choice(endings)


def _family_name(rng: random.Random) -> str:
    return rng.choice(_FAMILY_ONSETS) + rng.choice(_FAMILY_MIDDLES) + rng.choice(_FAMILY_ENDINGS)


def _place_name(rng: random.Random) -> str:
    return rng.choice(_PLACE_ONSETS) + rng.choice(_FAMILY_MIDDLES) + rng.choice(_FAMILY_ENDINGS)


@functools.cache
def _district(region: str | None) -> tuple[_Facility, ...]:
    """Four dispensaries, then the health centre they refer to; the same for a region every
    time, so their identifiers (and so ifNoneExist) match across patients and runs."""
    rng = random.Random(f"rural-care-district:{region}")  # noqa: S311
    prefix = region or "demo"
    district = _place_name(rng)
    facilities = []
    for number in range(1, 6):
        identifier = f"{prefix}-{number:02d}"
        name = f"{_place_name(rng)} {'Health Centre' if number == 5 else 'Dispensary'}"
        clinicians = tuple(
            _clinician(rng, f"{identifier}-{index}", role)
            for index, role in enumerate(_ROLES, start=1)
        )
        url = _shared_url(FACILITY_ID_SYSTEM, identifier)
        facilities.append(_Facility(identifier, url, name, district, clinicians))
    return tuple(facilities)


def _clinician(rng: random.Random, identifier: str, role: Role) -> _Clinician:
    gender = rng.choice(("female", "male"))
    url = _shared_url(PRACTITIONER_ID_SYSTEM, identifier)
    return _Clinician(identifier, url, _given_name(rng, gender), _family_name(rng), gender, role)


def _shared_url(system: str, identifier: str) -> str:
    # Stable across bundles, so that a bundle holding two patients of one facility holds it once.
    return f"urn:uuid:{uuid.uuid5(_SHARED_NAMESPACE, f'{system}|{identifier}')}"


# --- the chart: resources as they are written -------------------------------------------------


@dataclass(frozen=True)
class _Visit:
    day: date
    moment: datetime
    encounter: str
    practitioner: str


class _Chart:
    """One patient's bundle entries, each written after everything it refers to."""

    def __init__(
        self,
        rng: random.Random,
        person: _Person,
        *,
        region: str | None,
        start: date,
        end: date,
        home: _Facility,
        centre: _Facility,
    ) -> None:
        self.rng = rng
        self.person = person
        self.start = start
        self.end = end
        self.entries: list[Json] = []
        self._region = region
        self._home = home
        self._centre = centre
        self._shared: set[str] = set()
        self.patient = self._write(_patient(rng, person, self.first_day))

    @property
    def first_day(self) -> date:
        return max(self.start, self.person.born)

    def covers(self, day: date) -> bool:
        return self.first_day <= day < self.end

    def age_in_days(self, day: date) -> int:
        return (day - self.person.born).days

    def visit(
        self, kind: str, day: date, role: Role, where: Place, reasons: tuple[Code, ...] = ()
    ) -> _Visit:
        facility = self._home if where in ("home", "dispensary") else self._centre
        clinician = facility.clinician(role)
        self._share(facility.url, _organization(facility), FACILITY_ID_SYSTEM, facility.identifier)
        self._share(
            clinician.url, _practitioner(clinician), PRACTITIONER_ID_SYSTEM, clinician.identifier
        )
        moment = _at(day, self.rng)
        ends = moment + timedelta(minutes=self.rng.randint(15, 45))
        if where == "ward":  # a stay overnight, unless the window ends first
            ends = moment + timedelta(hours=self.rng.randint(6, 40))
            ends = ends if ends.date() < self.end else moment + timedelta(hours=2)
        encounter: Json = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": _coding(_ENCOUNTER_CLASS[where]),
            "type": [_concept((ENCOUNTER_KIND_SYSTEM, kind, ENCOUNTER_KINDS[kind]))],
            "subject": _ref(self.patient),
            "participant": [
                {"type": [_concept(_PRIMARY_PERFORMER)], "individual": _ref(clinician.url)}
            ],
            "period": {"start": _iso(moment), "end": _iso(ends)},
            "serviceProvider": _ref(facility.url),
        }
        if reasons:
            encounter["reasonCode"] = [_concept(reason) for reason in reasons]
        return _Visit(day, moment, self._write(encounter), clinician.url)

    def vital(self, visit: _Visit, name: str, value: float) -> str:
        code, display, unit = _VITALS[name]
        value_json = {"valueQuantity": _quantity(value, unit)}
        return self._observe(visit, (LOINC, code, display), "vital-signs", value_json)

    def blood_pressure(self, visit: _Visit, systolic: int, diastolic: int) -> str:
        components = [
            {"code": _concept(_SYSTOLIC), "valueQuantity": _quantity(systolic, "mm[Hg]")},
            {"code": _concept(_DIASTOLIC), "valueQuantity": _quantity(diastolic, "mm[Hg]")},
        ]
        return self._observe(visit, _BP_PANEL, "vital-signs", {"component": components})

    def measure(self, visit: _Visit, code: Code, value: float, unit: str) -> str:
        return self._observe(visit, code, "laboratory", {"valueQuantity": _quantity(value, unit)})

    def test(
        self, visit: _Visit, code: Concept, positive: bool, category: str = "laboratory"
    ) -> str:
        value_json = {
            "valueCodeableConcept": _concept(_RESULT[positive]),
            "interpretation": [_concept(_INTERPRETATION[positive])],
        }
        return self._observe(visit, code, category, value_json)

    def diagnose(
        self,
        visit: _Visit,
        code: Concept,
        *,
        lasts: tuple[int, int] | None = None,
        onset: date | None = None,
        problem: bool = False,
        until: date | None = None,
    ) -> str:
        """A condition found at ``visit`` that resolves ``lasts`` (min, max) days later or on
        ``until`` (chronic if neither), if that comes before the window ends; otherwise it is
        still active. ``problem`` puts it on the problem list."""
        if lasts is not None:
            until = visit.day + timedelta(days=self.rng.randint(*lasts))
        resolved = until is not None and until < self.end
        condition: Json = {
            "resourceType": "Condition",
            "clinicalStatus": _concept(_CONDITION_RESOLVED if resolved else _CONDITION_ACTIVE),
            "verificationStatus": _concept(_CONDITION_CONFIRMED),
            "category": [_concept(_PROBLEM_LIST if problem else _ENCOUNTER_DIAGNOSIS)],
            "code": _concept(code),
            "subject": _ref(self.patient),
            "encounter": _ref(visit.encounter),
            "onsetDateTime": _iso(_noon(onset) if onset else visit.moment),
            "recordedDate": _iso(visit.moment),
            "recorder": _ref(visit.practitioner),
        }
        if resolved and until is not None:
            condition["abatementDateTime"] = _iso(_noon(until))
        return self._write(condition)

    def prescribe(
        self, visit: _Visit, course: _Course, *, days: int | None = None, reason: str | None = None
    ) -> str:
        """``course`` for its usual days or for ``days``; completed if it ends in the window."""
        days = days or course.days
        finished = visit.day + timedelta(days=days) < self.end
        request: Json = {
            "resourceType": "MedicationRequest",
            "status": "completed" if finished else "active",
            "intent": "order",
            "category": [_concept(_COMMUNITY)],
            "medicationCodeableConcept": _concept(course.medicine),
            "subject": _ref(self.patient),
            "encounter": _ref(visit.encounter),
            "authoredOn": _iso(visit.moment),
            "requester": _ref(visit.practitioner),
            "dosageInstruction": [{"text": course.dosage, "timing": _timing(course, days)}],
            "dispenseRequest": {"expectedSupplyDuration": _quantity(days, "d")},
        }
        if reason is not None:
            request["reasonReference"] = [_ref(reason)]
        return self._write(request)

    def vaccinate(self, visit: _Visit, vaccine: _Vaccine, dose: int | None) -> str:
        immunization: Json = {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": _concept(vaccine.code),
            "patient": _ref(self.patient),
            "encounter": _ref(visit.encounter),
            "occurrenceDateTime": _iso(visit.moment),
            "recorded": _iso(visit.moment),
            "primarySource": True,
            "lotNumber": f"{self.rng.choice('ABCDEFGHJK')}{self.rng.randrange(10_000, 99_999)}",
            "route": _concept(vaccine.route),
            "performer": [{"actor": _ref(visit.practitioner)}],
            "protocolApplied": [_dose(dose)],
        }
        if vaccine.site is not None:
            immunization["site"] = _concept(vaccine.site)
        if vaccine.dose_ml is not None:
            immunization["doseQuantity"] = _quantity(vaccine.dose_ml, "mL")
        return self._write(immunization)

    def perform(
        self, visit: _Visit, code: Concept, *, minutes: int, reason: str | None = None
    ) -> str:
        ends = visit.moment + timedelta(minutes=minutes)
        procedure: Json = {
            "resourceType": "Procedure",
            "status": "completed",
            "code": _concept(code),
            "subject": _ref(self.patient),
            "encounter": _ref(visit.encounter),
            "performedPeriod": {"start": _iso(visit.moment), "end": _iso(ends)},
            "performer": [{"actor": _ref(visit.practitioner)}],
        }
        if reason is not None:
            procedure["reasonReference"] = [_ref(reason)]
        return self._write(procedure)

    def plan(
        self,
        visit: _Visit,
        title: str,
        activities: tuple[str, ...],
        *,
        addresses: str | None = None,
        until: date | None = None,
    ) -> str:
        """A care plan from ``visit``, completed on ``until`` if that comes before the window
        ends, otherwise active."""
        completed = until is not None and until < self.end
        period = {"start": _iso(visit.moment)}
        if completed and until is not None:
            period["end"] = _iso(_noon(until))
        status = "completed" if completed else "in-progress"
        care_plan: Json = {
            "resourceType": "CarePlan",
            "status": "completed" if completed else "active",
            "intent": "plan",
            "category": [{"text": title}],
            "title": title,
            "subject": _ref(self.patient),
            "encounter": _ref(visit.encounter),
            "period": period,
            "created": _iso(visit.moment),
            "author": _ref(visit.practitioner),
            "activity": [{"detail": {"code": {"text": a}, "status": status}} for a in activities],
        }
        if addresses is not None:
            care_plan["addresses"] = [_ref(addresses)]
        return self._write(care_plan)

    def allergy(self, visit: _Visit, allergy: tuple[Concept, str, str, str]) -> str:
        code, category, criticality, reaction = allergy
        severity = "severe" if criticality == "high" else "mild"
        return self._write(
            {
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": _concept(_ALLERGY_ACTIVE),
                "verificationStatus": _concept(_ALLERGY_CONFIRMED),
                "type": "allergy",
                "category": [category],
                "criticality": criticality,
                "code": _concept(code),
                "patient": _ref(self.patient),
                "encounter": _ref(visit.encounter),
                "recordedDate": _iso(visit.moment),
                "recorder": _ref(visit.practitioner),
                "reaction": [{"manifestation": [{"text": reaction}], "severity": severity}],
            }
        )

    def _observe(self, visit: _Visit, code: Concept, category: str, value: Json) -> str:
        return self._write(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [_concept(_OBSERVATION_CATEGORY[category])],
                "code": _concept(code),
                "subject": _ref(self.patient),
                "encounter": _ref(visit.encounter),
                "effectiveDateTime": _iso(visit.moment),
                "issued": _iso(visit.moment + timedelta(minutes=10)),
                "performer": [_ref(visit.practitioner)],
                **value,
            }
        )

    def _share(self, url: str, resource: Json, system: str, identifier: str) -> None:
        if url not in self._shared:
            self._shared.add(url)
            self._write(resource, url=url, if_none_exist=f"identifier={system}|{identifier}")

    def _write(
        self, resource: Json, *, url: str | None = None, if_none_exist: str | None = None
    ) -> str:
        url = url or f"urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"
        if self._region is not None:
            resource["meta"] = {"tag": [{"system": REGION_TAG_SYSTEM, "code": self._region}]}
        request = {"method": "POST", "url": resource["resourceType"]}
        if if_none_exist is not None:
            request["ifNoneExist"] = if_none_exist
        self.entries.append({"fullUrl": url, "resource": resource, "request": request})
        return url


# --- resources that stand alone ---------------------------------------------------------------


def _patient(rng: random.Random, person: _Person, registered: date) -> Json:
    patient: Json = {
        "resourceType": "Patient",
        "identifier": [{"system": PATIENT_ID_SYSTEM, "value": _uuid7(rng, _at(registered, rng))}],
        "active": True,
        "name": [{"use": "official", "family": person.family, "given": list(person.given)}],
        "gender": person.sex,
        "birthDate": person.born.isoformat(),
        "address": [{"use": "home", "line": [f"{person.village} village"], "country": "TZ"}],
        "communication": [
            {"language": _concept(("urn:ietf:bcp:47", "sw", "Swahili")), "preferred": True}
        ],
    }
    phone = [{"system": "phone", "value": person.phone, "use": "mobile"}] if person.phone else []
    if registered < _years_after(person.born, 15):  # a child's phone is the caregiver's
        caregiver_name = {"family": person.family, "given": [_given_name(rng, "female")]}
        caregiver: Json = {"relationship": [{"text": "Caregiver"}], "name": caregiver_name}
        if phone:
            caregiver["telecom"] = phone
        patient["contact"] = [caregiver]
    else:
        if phone:
            patient["telecom"] = phone
        patient["maritalStatus"] = _concept(_MARRIED if rng.random() < 0.6 else _NEVER_MARRIED)
    return patient


def _organization(facility: _Facility) -> Json:
    return {
        "resourceType": "Organization",
        "identifier": [{"system": FACILITY_ID_SYSTEM, "value": facility.identifier}],
        "active": True,
        "type": [_concept(_PROVIDER)],
        "name": facility.name,
        "address": [{"district": facility.district, "country": "TZ"}],
    }


def _practitioner(clinician: _Clinician) -> Json:
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": PRACTITIONER_ID_SYSTEM, "value": clinician.identifier}],
        "active": True,
        "name": [{"use": "official", "family": clinician.family, "given": [clinician.given]}],
        "gender": clinician.gender,
        "qualification": [{"code": {"text": _ROLES[clinician.role]}}],
    }


# --- programmes -------------------------------------------------------------------------------


def _programmes(chart: _Chart, life: str) -> list[Programme]:
    """The care this patient receives; each programme keeps to the ages it serves."""
    programmes = [_immunisation(chart), _child_growth(chart), _sick_child(chart), _fevers(chart)]
    if life == "mother":
        programmes.append(_pregnancies(chart))
    if life == "hypertensive":
        programmes.append(_hypertension(chart))
    if life == "other":
        programmes.append(_checkups(chart))
    if chart.rng.random() < 0.6:
        programmes.append(_tb_screening(chart))
    if chart.rng.random() < 0.05:
        programmes.append(_allergy(chart))
    return programmes


def _immunisation(chart: _Chart) -> Programme:
    """The schedule of the first eighteen months, with a rural clinic's delays and missed visits."""
    rng, delay, plan = chart.rng, 0, None
    for age_days, doses in _EPI_SCHEDULE:
        delay += rng.randrange(10)  # a late dose makes every later one late too
        day = chart.person.born + timedelta(days=age_days + delay)
        if rng.random() < 0.08 or not chart.covers(day):
            continue
        yield day
        visit = chart.visit("immunisation", day, "nurse", "dispensary")
        if plan is None:
            activities = ("Vaccines of the national schedule", "Growth monitoring")
            until = chart.person.born + timedelta(days=_EPI_SCHEDULE[-1][0] + 60)
            plan = chart.plan(visit, "Routine immunisation", activities, until=until)
        for vaccine, dose in doses:
            chart.vaccinate(visit, vaccine, dose)
        _growth_check(chart, visit)


def _child_growth(chart: _Chart) -> Programme:
    """Six-monthly community growth checks with vitamin A and deworming, to the fifth birthday."""
    for months in (6, 12, 24, 30, 36, 42, 48, 54):
        day = chart.person.born + timedelta(days=round(months * 30.44) + chart.rng.randrange(21))
        if not chart.covers(day):
            continue
        yield day
        visit = chart.visit("vital_signs", day, "chw", "home")
        muac = _growth_check(chart, visit)
        chart.prescribe(visit, _VITAMIN_A)
        if months >= 12:
            chart.prescribe(visit, _ALBENDAZOLE)
        if muac is not None and muac < 125:
            chart.diagnose(visit, _MALNUTRITION, lasts=(60, 120), problem=True)


def _growth_check(chart: _Chart, visit: _Visit) -> int | None:
    """Weight, and MUAC from six months (where it is valid); returns the MUAC in mm."""
    rng, age_days, size = chart.rng, chart.age_in_days(visit.day), chart.person.size
    weight = _expected_weight(age_days) * size * rng.uniform(0.95, 1.05)
    chart.vital(visit, "weight", round(weight, 1))
    if age_days < 182:
        return None
    muac = round((128 + age_days / 120) * math.sqrt(size) + rng.uniform(-6, 6))
    chart.vital(visit, "muac", muac)
    return muac


def _sick_child(chart: _Chart) -> Programme:
    """IMCI visits from two months to five years: fever, cough, diarrhoea, about 1.5 a year."""
    born = chart.person.born
    last = min(chart.end, _years_after(born, 5))
    day = max(chart.start, born + timedelta(days=60))
    while True:
        day += timedelta(days=14 + int(chart.rng.expovariate(1 / 230)))
        if day >= last:
            return
        yield day
        _sick_child_visit(chart, day)


def _sick_child_visit(chart: _Chart, day: date) -> None:
    rng = chart.rng
    fever, cough, diarrhoea = rng.random() < 0.65, rng.random() < 0.45, rng.random() < 0.3
    fever = fever or not (cough or diarrhoea)
    signs = ((_FEVER, fever), (_COUGH, cough), (_DIARRHOEA, diarrhoea))
    visit = chart.visit("sick_child", day, "chw", "home", tuple(c for c, seen in signs if seen))
    temperature = rng.uniform(38.0, 39.8) if fever else rng.uniform(36.4, 37.4)
    chart.vital(visit, "temperature", round(temperature, 1))
    fast = 50 if chart.age_in_days(day) < 365 else 40  # IMCI's fast breathing for the age
    pneumonia = cough and rng.random() < 0.4
    breaths = rng.randint(fast, fast + 15) if pneumonia else rng.randint(fast - 16, fast - 1)
    chart.vital(visit, "respiratory_rate", breaths)
    _growth_check(chart, visit)
    if fever:
        _malaria_test(chart, visit, rate=0.4)
    if pneumonia:
        condition = chart.diagnose(visit, _PNEUMONIA, lasts=(7, 14))
        chart.prescribe(visit, _AMOXICILLIN, reason=condition)
    if diarrhoea:
        condition = chart.diagnose(visit, _DIARRHOEA, lasts=(3, 7))
        chart.prescribe(visit, _ORS, reason=condition)
        chart.prescribe(visit, _ZINC, reason=condition)


def _malaria_test(chart: _Chart, visit: _Visit, *, rate: float) -> None:
    """An RDT for a fever; a positive one is malaria, treated with artemether-lumefantrine."""
    positive = chart.rng.random() < rate
    chart.test(visit, _MALARIA_RDT, positive)
    if positive:
        condition = chart.diagnose(visit, _MALARIA, lasts=(5, 10))
        chart.prescribe(visit, _ARTEMETHER_LUMEFANTRINE, reason=condition)
    else:
        chart.prescribe(visit, _PARACETAMOL)


def _fevers(chart: _Chart) -> Programme:
    """Fevers from school age on: a CHW visit with an RDT, about one every twenty months."""
    rng = chart.rng
    day = max(chart.start, _years_after(chart.person.born, 5))
    while True:
        day += timedelta(days=14 + int(rng.expovariate(1 / 600)))
        yield day
        visit = chart.visit("vital_signs", day, "chw", "home", (_FEVER,))
        chart.vital(visit, "temperature", round(rng.uniform(37.8, 39.6), 1))
        chart.vital(visit, "pulse", rng.randint(80, 118))
        if chart.age_in_days(day) >= 18 * 365:
            systolic = rng.randint(100, 138)
            chart.blood_pressure(visit, systolic, _diastolic(rng, systolic))
        _malaria_test(chart, visit, rate=0.3)


def _checkups(chart: _Chart) -> Programme:
    """An adult's occasional check at the dispensary: pulse, weight and blood pressure."""
    rng = chart.rng
    day = chart.first_day
    while True:
        day += timedelta(days=rng.randint(120, 540))
        yield day
        visit = chart.visit("vital_signs", day, "nurse", "dispensary")
        chart.vital(visit, "pulse", rng.randint(58, 96))
        chart.vital(visit, "weight", round(rng.uniform(45, 90), 1))
        systolic = rng.randint(100, 145)
        chart.blood_pressure(visit, systolic, _diastolic(rng, systolic))


def _pregnancies(chart: _Chart) -> Programme:
    """One pregnancy after another, two to three years apart, while she is 15 to 44."""
    rng, born = chart.rng, chart.person.born
    start = chart.start + timedelta(days=rng.randint(-180, 365))
    last_menstrual = max(start, _years_after(born, 15))
    while last_menstrual < min(chart.end, _years_after(born, 44)):
        delivery = last_menstrual + timedelta(days=rng.randint(266, 290))
        yield from _pregnancy(chart, last_menstrual, delivery)
        last_menstrual = delivery + timedelta(days=rng.randint(450, 1100))


def _pregnancy(chart: _Chart, last_menstrual: date, delivery: date) -> Programme:
    """Antenatal contacts on the WHO weeks she attends, from a first contact that is often late;
    tests at the first; Td, IPTp and weight at each; then a delivery at the health centre."""
    rng = chart.rng
    first_week = rng.choice((10, 12, 16, 20, 24))
    later = [w for w in (20, 26, 30, 34, 36, 38, 40) if w > first_week and rng.random() < 0.75]
    days = [last_menstrual + timedelta(days=7 * w + rng.randrange(7)) for w in [first_week, *later]]
    pregnancy: str | None = None
    td_doses = 2 if rng.random() < 0.4 else 0  # two doses before: protected for this pregnancy
    weight = rng.uniform(48, 75)
    for day in days:
        if day >= delivery or not chart.covers(day):
            continue
        yield day
        visit = chart.visit("anc_contact", day, "nurse", "dispensary")
        weeks = (day - last_menstrual).days // 7
        if pregnancy is None:
            pregnancy = _first_antenatal_contact(chart, visit, last_menstrual, delivery)
        chart.vital(visit, "gestational_age", weeks)
        systolic = rng.randint(98, 134)
        chart.blood_pressure(visit, systolic, _diastolic(rng, systolic))
        chart.vital(visit, "weight", round(weight + weeks * 0.3 + rng.uniform(-1, 1), 1))
        if td_doses < 2:
            td_doses += 1
            chart.vaccinate(visit, _TD, td_doses)
        if weeks >= 13:  # IPTp from the second trimester, at every contact
            chart.prescribe(visit, _IPTP, reason=pregnancy)
    if chart.covers(delivery):
        yield delivery
        visit = chart.visit("delivery", delivery, "nurse", "ward")
        if rng.random() < 0.08:
            chart.perform(visit, _CAESAREAN, minutes=60, reason=pregnancy)
        else:
            chart.perform(visit, _NORMAL_DELIVERY, minutes=rng.randint(20, 240), reason=pregnancy)


def _first_antenatal_contact(
    chart: _Chart, visit: _Visit, last_menstrual: date, delivery: date
) -> str:
    rng = chart.rng
    pregnancy = chart.diagnose(
        visit, _PREGNANCY, onset=last_menstrual, until=delivery, problem=True
    )
    activities = ("Antenatal contacts", "Iron and folic acid daily", "IPTp", "Birth plan")
    chart.plan(visit, "Antenatal care", activities, addresses=pregnancy, until=delivery)
    haemoglobin = round(rng.uniform(8.5, 13.5), 1)
    chart.measure(visit, _HAEMOGLOBIN, haemoglobin, "g/dL")
    if haemoglobin < 11:
        chart.diagnose(visit, _ANAEMIA, lasts=(60, 120))
    hiv = rng.random() < 0.05
    chart.test(visit, _HIV_RAPID, hiv)
    if hiv:
        chart.diagnose(visit, _HIV, problem=True)
    chart.test(visit, _SYPHILIS_RPR, rng.random() < 0.02)
    _malaria_test(chart, visit, rate=0.1)
    days_left = max(1, (delivery - visit.day).days)
    chart.prescribe(visit, _IRON_FOLIC_ACID, days=days_left, reason=pregnancy)
    return pregnancy


def _hypertension(chart: _Chart) -> Programme:
    """Three-monthly follow-up from diagnosis (or from the first visit, if already known): blood
    pressure, weight, a three-month supply, and a second medicine while it stays high."""
    rng = chart.rng
    span = (chart.end - chart.start).days
    if rng.random() < 0.5:  # diagnosed before the window opened
        onset = chart.start - timedelta(days=rng.randint(365, 8 * 365))
        day = chart.start + timedelta(days=rng.randrange(min(90, span)))
    else:
        day = onset = chart.start + timedelta(days=rng.randrange(max(1, span * 7 // 10)))
    systolic, weight = rng.randint(150, 185), rng.uniform(55, 95)
    condition: str | None = None
    for number in itertools.count():
        yield day
        visit = chart.visit("hypertension_followup", day, "clinical_officer", "dispensary")
        if condition is None:
            condition = chart.diagnose(visit, _HYPERTENSION, onset=onset, problem=True)
            activities = ("Blood pressure every three months", "Less salt", "Daily medicines")
            chart.plan(visit, "Hypertension management", activities, addresses=condition)
            height = rng.randint(150, 182)
            chart.vital(visit, "height", height)
            chart.vital(visit, "bmi", round(weight / (height / 100) ** 2, 1))
        reading = systolic - min(number * 5, 30) + rng.randint(-8, 8)
        chart.blood_pressure(visit, reading, _diastolic(rng, reading))
        chart.vital(visit, "weight", round(weight + rng.uniform(-1.5, 1.5), 1))
        chart.prescribe(visit, _AMLODIPINE, reason=condition)
        if reading >= 150 and number >= 2:
            chart.prescribe(visit, _HYDROCHLOROTHIAZIDE, reason=condition)
        day += timedelta(days=rng.randint(80, 100))


def _tb_screening(chart: _Chart) -> Programme:
    """Yearly community symptom screening from fifteen; a positive screen goes to the health
    centre for a sputum test and a chest X-ray, and a positive test to six months of treatment."""
    rng = chart.rng
    day = max(chart.start, _years_after(chart.person.born, 15))
    day += timedelta(days=rng.randrange(365))
    while True:
        yield day
        visit = chart.visit("tb_screen", day, "chw", "home")
        presumptive = rng.random() < 0.08
        chart.test(visit, _TB_SYMPTOM_SCREEN, presumptive, category="survey")
        if presumptive:
            day += timedelta(days=rng.randint(1, 14))
            yield day
            visit = chart.visit("tb_screen", day, "clinical_officer", "centre", (_COUGH,))
            has_tb = rng.random() < 0.3
            chart.test(visit, _MTB_NAA, has_tb)
            chart.perform(visit, _CHEST_XRAY, minutes=15)
            if has_tb:
                yield from _tb_treatment(chart, visit)
                return
        day += timedelta(days=rng.randint(330, 400))


def _tb_treatment(chart: _Chart, diagnosis: _Visit) -> Programme:
    """Two months of four drugs and four of two, with a monthly weight at the health centre."""
    rng = chart.rng
    until = diagnosis.day + timedelta(days=182)
    condition = chart.diagnose(diagnosis, _PULMONARY_TB, until=until, problem=True)
    activities = ("Directly observed treatment", "Monthly weight", "Household contacts screened")
    chart.plan(diagnosis, "Tuberculosis treatment", activities, addresses=condition, until=until)
    chart.prescribe(diagnosis, _TB_INTENSIVE, reason=condition)
    weight = rng.uniform(42, 62)
    for month in range(1, 7):
        day = diagnosis.day + timedelta(days=30 * month + rng.randint(-3, 3))
        yield day
        visit = chart.visit("vital_signs", day, "nurse", "centre")
        chart.vital(visit, "weight", round(weight + month * 0.6 + rng.uniform(-0.5, 0.5), 1))
        if month == 2:
            chart.prescribe(visit, _TB_CONTINUATION, reason=condition)


def _allergy(chart: _Chart) -> Programme:
    """An allergy found at a clinic visit, once."""
    day = chart.first_day + timedelta(days=chart.rng.randrange((chart.end - chart.first_day).days))
    yield day
    visit = chart.visit("vital_signs", day, "clinical_officer", "dispensary")
    chart.allergy(visit, chart.rng.choice(_ALLERGIES))


# --- values, times and small FHIR types -------------------------------------------------------

# Median weight (kg) by age in months, rounded from the shape of the WHO growth standards.
_WEIGHT_BY_MONTH = ((0, 3.3), (3, 6.0), (6, 7.6), (12, 9.4), (24, 12.0), (36, 14.0), (48, 16.0), (60, 18.0), (120, 31.0), (180, 52.0), (216, 60.0))  # fmt: skip


def _expected_weight(age_days: int) -> float:
    months = age_days / 30.44
    for (m0, w0), (m1, w1) in itertools.pairwise(_WEIGHT_BY_MONTH):
        if months <= m1:
            return w0 + (w1 - w0) * (months - m0) / (m1 - m0)
    return _WEIGHT_BY_MONTH[-1][1]


def _diastolic(rng: random.Random, systolic: int) -> int:
    return min(round(systolic * 0.62 + rng.uniform(-6, 8)), systolic - 25)


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a year without one: the day after 28 February
        return date(day.year + years, 3, 1)


def _at(day: date, rng: random.Random) -> datetime:
    """A moment in clinic hours on ``day``, in East Africa Time."""
    hour, minute = rng.randrange(8, 16), rng.randrange(60)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=EAST_AFRICA_TIME)


def _noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=EAST_AFRICA_TIME)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _uuid7(rng: random.Random, moment: datetime) -> str:
    """A UUIDv7 for the chart, as the tablet would have made it when registering the patient."""
    millis = int(moment.timestamp() * 1000)
    bits = rng.getrandbits(74)
    high = (millis << 16) | (0x7 << 12) | (bits >> 62)
    low = (0b10 << 62) | (bits & ((1 << 62) - 1))
    return str(uuid.UUID(int=(high << 64) | low))


def _timing(course: _Course, days: int) -> Json:
    repeat = {"frequency": course.per_day, "period": 1, "periodUnit": "d"}
    return {"repeat": {"boundsDuration": _quantity(days, "d"), **repeat}}


def _dose(number: int | None) -> Json:
    dose: Json = {"series": "WHO routine immunisation"}
    if number is None:
        dose["doseNumberString"] = "birth dose"
    else:
        dose["doseNumberPositiveInt"] = number
    return dose


def _coding(code: Code) -> Json:
    system, value, display = code
    return {"system": system, "code": value, "display": display}


def _concept(concept: Concept) -> Json:
    if isinstance(concept, str):
        return {"text": concept}
    return {"coding": [_coding(concept)], "text": concept[2]}


def _quantity(value: float, unit: str) -> Json:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _ref(url: str) -> Json:
    return {"reference": url}
