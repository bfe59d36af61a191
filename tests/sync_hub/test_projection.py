"""The hub's projection of a chart to FHIR R4: real charts (one visit through the real forms
engine), every resource validated by fhir.resources' R4B models, the required bindings that
those models do not check, references that resolve inside the bundle, and stable IDs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import automerge.core as am
import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from care_record import (
    Chart,
    ChartView,
    FixedClock,
    HouseholdRecord,
    new_id,
    registers,
    vital_observations,
)
from care_record.document import section
from central.fhir.validation import validate as central_validate
from field_app.forms import FormLibrary, FormState
from field_app.forms import response as form_response
from sync_hub.projection import Region, project_chart, transaction_bundle
from sync_hub.projection.fhir import Targets
from sync_hub.projection.messages import communication

Json = dict[str, Any]

START = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
REGION = "arusha"
ZONE = "Africa/Dar_es_Salaam"  # the tablet's, on every visit
HUB_ZONE = "Africa/Kampala"  # the region's: not the visits', so a test can tell which is used
HUB = Region(REGION, HUB_ZONE)
TIMEZONE = "http://hl7.org/fhir/StructureDefinition/timezone"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
DOCS = Path(__file__).parent.parent.parent / "docs" / "fhir.md"

AMINA: Json = {
    "given": "Amina",
    "family": "Juma",
    "sex": "female",
    "birth_date": "1994-06-15",
    "phone": "+255712345678",
    "village": "Kijiji cha Mlima",
    "language": "sw",
}

# An antenatal contact with a danger sign and high blood pressure, as a CHW answers it.
ANC_ANSWERS: Json = {
    "contact_number": 2,
    "lmp": "2024-11-01",
    "has_danger_sign": True,
    "danger_signs": ["severe_headache"],
    "central_cyanosis": False,
    "bp_taken": True,
    "systolic": 150,
    "diastolic": 95,
    "temperature": {"value": 37.2, "unit": "Cel"},
    "fetal_movement": True,
    "ifa_daily": True,
    "td_status": "no",
    "itn_last_night": True,
    "birth_plan": False,
}

# Stored answers with keys R4 does not allow in a QuestionnaireResponse (a Questionnaire's
# "type" and "enableWhen", a stray "note" on an answer) and an empty answer list.
SICK_ITEMS: list[Json] = [
    {"linkId": "fever", "type": "boolean", "text": "Fever?", "answer": [{"valueBoolean": True}]},
    {
        "linkId": "signs",
        "text": "Danger signs",
        "answer": [
            {"valueCoding": {"system": SNOMED, "code": "91175000", "display": "Seizure"}},
            {"valueCoding": {"code": "lethargic", "display": "Very sleepy"}, "note": "x"},
        ],
    },
    {"linkId": "skipped", "text": "Not asked", "answer": []},
    {
        "linkId": "body",
        "text": "Body",
        "enableWhen": [{"question": "fever", "operator": "exists", "answerBoolean": True}],
        "item": [
            {
                "linkId": "weight",
                "text": "Weight",
                "answer": [
                    {"valueQuantity": {"value": 9.5, "unit": "kg", "system": UCUM, "code": "kg"}}
                ],
            }
        ],
    },
]
SICK_ITEMS_IN_R4: list[Json] = [
    {"linkId": "fever", "text": "Fever?", "answer": [{"valueBoolean": True}]},
    {
        "linkId": "signs",
        "text": "Danger signs",
        "answer": [
            {"valueCoding": {"system": SNOMED, "code": "91175000", "display": "Seizure"}},
            {"valueCoding": {"code": "lethargic", "display": "Very sleepy"}},
        ],
    },
    {"linkId": "skipped", "text": "Not asked"},
    {
        "linkId": "body",
        "text": "Body",
        "item": [
            {
                "linkId": "weight",
                "text": "Weight",
                "answer": [
                    {"valueQuantity": {"value": 9.5, "unit": "kg", "system": UCUM, "code": "kg"}}
                ],
            }
        ],
    },
]


# -- building real charts -----------------------------------------------------------------------


@dataclass
class Built:
    """A chart with every collection filled, and the IDs the tests look up."""

    chart: Chart
    anc: str  # the antenatal visit, through the real forms engine
    sick: str  # a visit with boolean, coded and quantity findings and stored answers
    exam: str  # an unsigned encounter without a form
    amendment: str  # amends the antenatal visit
    anc_referral: str
    sick_referral: str  # no danger signs
    lone_referral: str  # written outside any visit
    td_task: str  # completed: its reminder is revoked
    check_task: str  # no reminders
    anc_task: str  # still requested: its reminder is active
    lone_task: str  # cancelled
    messages: dict[str, str]  # direction -> ID
    allergy: str
    wrong_allergy: str
    medication: str
    old_medication: str

    @property
    def view(self) -> ChartView:
        return self.chart.view()


def anc_visit(chart: Chart, clock: FixedClock) -> Json:
    """The chart write of an antenatal contact, filled in through the real forms engine."""
    form = FormLibrary().get("anc_contact")
    state = FormState(form, today=clock.now().date(), patient=dict(AMINA), language="en")
    state.answer_all(ANC_ANSWERS)
    return form_response.visit(
        state.complete(), started_at=clock.now(), zone=ZONE, reminder_language="sw"
    )


def sick_visit(clock: FixedClock) -> Json:
    fever = {"code": "45701-0", "display": "Fever", "value_boolean": True}
    seizure = {"code": "75325-1", "display": "Symptom", "value_code": "91175000"}
    return {
        "encounter": {
            "kind": "sick_child",
            "started_at": clock.now(),
            "zone": ZONE,
            "observations": [
                fever,
                seizure | {"value_system": SNOMED},
                {"code": "75325-1", "display": "Symptom", "value_code": "lethargic"},
                *[o.model_dump(exclude_none=True) for o in vital_observations({"weight": 9.5})],
            ],
            "form": {
                "questionnaire": "https://care.example.org/fhir/Questionnaire/sick_child|1.0.0",
                "language": "sw",
                "items": json.dumps(SICK_ITEMS),
            },
        },
        "referral": {"urgency": "urgent", "reason": "Fever with convulsions"},
        "tasks": [
            {
                "kind": "follow_up",
                "description": "Check the fever has gone",
                "due": date(2025, 3, 4),
                "reminders": [
                    {"send_on": date(2025, 3, 3), "template": "follow_up_due", "language": "sw"}
                ],
            }
        ],
    }


def build(clock: FixedClock | None = None, **demographics: Any) -> Built:
    clock = clock or FixedClock(START)
    chart = Chart.new_patient({**AMINA, **demographics}, author="chw-amina", clock=clock)
    chart.set_consent("sms_reminders", "granted")
    chart.set_consent("voice_reminders", "refused")
    chart.set_consent("data_sharing", "granted")
    chart.set_consent("data_sharing", "withdrawn")
    chart.set_pregnancy_status("pregnant")
    allergy = chart.add_allergy({"substance": "Penicillin", "criticality": "high"})
    wrong_allergy = chart.add_allergy({"substance": "Sulfa", "status": "entered_in_error"})
    medication = chart.add_medication({"name": "Iron and folic acid", "dosage": "60 mg daily"})
    old_medication = chart.add_medication({"name": "Paracetamol", "status": "inactive"})

    anc = chart.record_visit(anc_visit(chart, clock))
    clock.advance(timedelta(minutes=30))
    sick = chart.record_visit(sick_visit(clock))
    clock.advance(timedelta(minutes=30))
    exam = chart.record_encounter(
        {
            "kind": "home_visit",
            "started_at": clock.now(),
            "zone": ZONE,
            "observations": [{"code": "45701-0", "display": "Fever", "value_boolean": False}],
        },
        sign=False,
    )
    clock.advance(timedelta(minutes=5))
    amendment = chart.record_encounter(
        {
            "kind": "anc_contact",
            "started_at": clock.now(),
            "zone": ZONE,
            "amends": anc,
            "note": "Blood pressure re-read",
            "observations": vital_observations({"systolic": 145, "diastolic": 92}),
        }
    )

    view = chart.view()
    referrals = {r["encounter_id"]: r["id"] for r in view.records("referrals")}
    anc_referral = referrals[anc]
    chart.set_referral_status(anc_referral, "accepted")
    lone_referral = chart.add_referral({"urgency": "routine", "reason": "Ultrasound"})
    chart.set_referral_status(lone_referral, "cancelled")
    tasks = {t["kind"]: t["id"] for t in view.records("tasks")}
    chart.set_task_status(tasks["td_vaccine"], "completed")
    lone_task = chart.add_task(
        {
            "kind": "home_visit",
            "description": "Visit after the rains",
            "due": "2025-04-01",
            "reminders": [{"send_on": "2025-03-30", "template": "visit_due", "language": "en"}],
        }
    )
    chart.set_task_status(lone_task, "cancelled")

    messages = add_messages(chart, clock)
    return Built(
        chart=chart,
        anc=anc,
        sick=sick,
        exam=exam,
        amendment=amendment,
        anc_referral=anc_referral,
        sick_referral=referrals[sick],
        lone_referral=lone_referral,
        td_task=tasks["td_vaccine"],
        check_task=tasks["referral_check"],
        anc_task=tasks["anc_contact"],
        lone_task=lone_task,
        messages=messages,
        allergy=allergy,
        wrong_allergy=wrong_allergy,
        medication=medication,
        old_medication=old_medication,
    )


def add_messages(chart: Chart, clock: FixedClock) -> dict[str, str]:
    def send(direction: str, channel: str, text: str, reply_to: str | None = None) -> str:
        clock.advance(timedelta(minutes=1))
        message = {
            "direction": direction,
            "channel": channel,
            "author": "someone",
            "text": text,
            "sent_at": clock.now(),
        }
        return chart.add_message(message | ({"in_reply_to": reply_to} if reply_to else {}))

    note = send("from_chw", "app", "Headache and swollen feet since yesterday.")
    advice = send("to_chw", "console", "Refer to the district hospital today.", note)
    reminder = send("to_patient", "sms", "Reminder sent; delivered.")
    reply = send("from_patient", "sms", "1", reminder)
    return {
        "from_chw": note,
        "to_chw": advice,
        "to_patient": reminder,
        "from_patient": reply,
        "voice": send("from_patient", "voice", "2"),
    }


@pytest.fixture(scope="module")
def built() -> Built:
    return build()


@pytest.fixture(scope="module")
def projected(built: Built) -> list[Json]:
    return project_chart(built.view, region=HUB)


def find(resources: list[Json], resource_type: str, resource_id: str) -> Json:
    found = [r for r in resources if (r["resourceType"], r["id"]) == (resource_type, resource_id)]
    assert len(found) == 1, f"{resource_type}/{resource_id} found {len(found)} times"
    return found[0]


def of_type(resources: list[Json], resource_type: str) -> list[Json]:
    return [r for r in resources if r["resourceType"] == resource_type]


def body(resource: Json) -> Json:
    """A resource without its meta (every resource carries the same region tag)."""
    return {k: v for k, v in resource.items() if k != "meta"}


# -- what FHIR requires of every resource ---------------------------------------------------------

# The elements that FHIR R4 binds as *required*, with their whole value set (and the code
# system, for a CodeableConcept). fhir.resources checks structure and types, not codes.
THO = "http://terminology.hl7.org/CodeSystem/"
REQUEST_STATUS = "draft active on-hold revoked completed entered-in-error unknown"
REQUEST_INTENT = (
    "proposal plan directive order original-order reflex-order filler-order instance-order option"
)
REQUIRED: dict[str, dict[str, tuple[str | None, str]]] = {
    "Patient": {
        "gender": (None, "male female other unknown"),
        "telecom.system": (None, "phone fax email pager url sms other"),
        "telecom.use": (None, "home work temp old mobile"),
    },
    "Observation": {
        "status": (
            None,
            "registered preliminary final amended corrected cancelled entered-in-error unknown",
        ),
    },
    "Consent": {
        "status": (None, "draft proposed active rejected inactive entered-in-error"),
        "provision.type": (None, "deny permit"),
    },
    "AllergyIntolerance": {
        "clinicalStatus.coding.code": (
            THO + "allergyintolerance-clinical",
            "active inactive resolved",
        ),
        "verificationStatus.coding.code": (
            THO + "allergyintolerance-verification",
            "unconfirmed confirmed refuted entered-in-error",
        ),
        "criticality": (None, "low high unable-to-assess"),
    },
    "MedicationStatement": {
        "status": (
            None,
            "active completed entered-in-error intended stopped on-hold unknown not-taken",
        ),
    },
    "Encounter": {
        "status": (
            None,
            (
                "planned arrived triaged in-progress onleave finished cancelled entered-in-error "
                "unknown"
            ),
        ),
    },
    "QuestionnaireResponse": {
        "status": (None, "in-progress completed amended entered-in-error stopped"),
    },
    "ServiceRequest": {
        "status": (None, REQUEST_STATUS),
        "intent": (None, REQUEST_INTENT),
        "priority": (None, "routine urgent asap stat"),
    },
    "Condition": {
        "clinicalStatus.coding.code": (
            THO + "condition-clinical",
            "active recurrence relapse inactive remission resolved",
        ),
        "verificationStatus.coding.code": (
            THO + "condition-ver-status",
            "unconfirmed provisional differential confirmed refuted entered-in-error",
        ),
    },
    "Task": {
        "status": (
            None,
            (
                "draft requested received accepted rejected ready cancelled in-progress on-hold "
                "failed completed entered-in-error"
            ),
        ),
        "intent": (
            None,
            (
                "unknown proposal plan order original-order reflex-order filler-order "
                "instance-order option"
            ),
        ),
    },
    "CommunicationRequest": {"status": (None, REQUEST_STATUS)},
    "Communication": {
        "status": (
            None,
            "preparation in-progress not-done on-hold stopped completed entered-in-error unknown",
        ),
    },
    "Bundle": {
        "type": (
            None,
            (
                "document message transaction transaction-response batch batch-response history "
                "searchset collection"
            ),
        ),
        "entry.request.method": (None, "GET HEAD POST PUT DELETE PATCH"),
    },
}
# Resource.language is BCP-47 (R4's all-languages value set).
BCP_47 = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")


def values_at(node: Any, path: list[str]) -> list[Any]:
    """Every value at a dotted path, stepping through lists."""
    if isinstance(node, list):
        return [v for item in node for v in values_at(item, path)]
    if not path:
        return [node]
    if not isinstance(node, dict) or path[0] not in node:
        return []
    return values_at(node[path[0]], path[1:])


def binding_problems(resource: Json) -> list[str]:
    problems = []
    for path, (system, allowed) in REQUIRED.get(resource["resourceType"], {}).items():
        parts = path.split(".")
        for value in values_at(resource, parts):
            if value not in allowed.split():
                problems.append(f"{resource['resourceType']}.{path}: {value!r}")
        if system is not None:
            for found in values_at(resource, [*parts[:-1], "system"]):
                if found != system:
                    problems.append(f"{resource['resourceType']}.{path}: system {found!r}")
    language = resource.get("language")
    if language is not None and not BCP_47.match(language):
        problems.append(f"{resource['resourceType']}.language: {language!r}")
    return problems


def empty_values(node: Any, where: str = "") -> list[str]:
    """Places with null, an empty string, list or object: FHIR JSON allows none of them."""
    if node is None or node in ("", [], {}):
        return [where]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in empty_values(v, f"{where}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in empty_values(v, f"{where}[{i}]")]
    return []


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def assert_valid(resources: list[Json]) -> None:
    """Every resource is valid R4 (R4B models), binds its required codes, has nothing empty,
    and every reference resolves to a resource in the same list."""
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert binding_problems(resource) == []
        assert empty_values(resource) == []
    present = {f"{r['resourceType']}/{r['id']}" for r in resources}
    dangling = {ref for r in resources for ref in references(r)} - present
    assert dangling == set()


# -- the whole chart -------------------------------------------------------------------------


def test_every_projected_resource_is_valid_r4_with_resolving_references(
    projected: list[Json],
) -> None:
    assert_valid(projected)
    assert {r["resourceType"] for r in projected} == {
        "Patient",
        "Observation",
        "Consent",
        "AllergyIntolerance",
        "MedicationStatement",
        "Encounter",
        "QuestionnaireResponse",
        "ServiceRequest",
        "Condition",
        "Task",
        "CommunicationRequest",
        "Communication",
    }


def test_every_resource_carries_the_region_tag_and_no_two_share_an_id(
    projected: list[Json],
) -> None:
    tag = {"tag": [{"system": "urn:rural-care:region", "code": REGION}]}
    assert [r["meta"] for r in projected] == [tag] * len(projected)
    keys = [(r["resourceType"], r["id"]) for r in projected]
    assert len(set(keys)) == len(keys)


def test_the_same_chart_projects_to_the_same_resources_every_time(built: Built) -> None:
    first = project_chart(built.view, region=HUB)
    # Through bytes, as the hub holds it: a reloaded chart projects identically.
    reloaded = Chart.load(built.chart.save(), author="hub", clock=FixedClock(START))

    assert project_chart(reloaded.view(), region=HUB) == first
    assert json.dumps(project_chart(built.view, region=HUB)) == json.dumps(first)


def test_two_charts_project_to_disjoint_ids() -> None:
    one = project_chart(build().view, region=HUB)
    other = project_chart(build().view, region=HUB)

    assert {r["id"] for r in one}.isdisjoint({r["id"] for r in other})


def test_a_household_projects_to_nothing() -> None:
    household = HouseholdRecord.new(
        {"name": "Juma", "village": "Kijiji"}, author="chw", clock=FixedClock(START)
    )
    assert project_chart(household.view(), region=HUB) == []


@pytest.mark.parametrize("region", ["", " arusha", "arusha ", "two  spaces", "tab\there"])
def test_a_region_that_is_not_a_fhir_code_is_refused(built: Built, region: str) -> None:
    with pytest.raises(ValueError, match="region must be a FHIR code"):
        project_chart(built.view, region=Region(region, HUB_ZONE))


def test_the_projection_imports_without_fhir_resources() -> None:
    blocked = "import sys; sys.modules['fhir'] = None; import sync_hub.projection"
    result = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_chart_whose_id_is_not_a_uuid_is_refused() -> None:
    chart = Chart.new_patient(AMINA, author="chw", clock=FixedClock(START), chart_id="amina-1")
    with pytest.raises(ValueError, match="ID is not a UUID"):
        project_chart(chart.view(), region=HUB)


# What a faulty or hostile tablet could send: real Automerge changes that care_record's own
# writes never make.


def test_a_record_that_lost_a_field_is_refused(built: Built) -> None:
    chart = built.chart.fork(author="tablet")
    with chart.document.transaction() as tx:
        found = tx.get(section(tx, "encounters"), built.sick)
        assert found is not None
        tx.delete(found[1], "kind")

    with pytest.raises(ValueError, match=f"a record of chart {chart.id} has no 'kind'"):
        project_chart(chart.view(), region=HUB)


def test_a_value_outside_the_schema_is_refused_without_the_value(built: Built) -> None:
    chart = built.chart.fork(author="tablet")
    clock = FixedClock(START + timedelta(days=1))
    with chart.document.transaction() as tx:
        path = f"task.{built.anc_task}.status"
        registers.write(tx, path, "Amina-knows", write_id=new_id(clock), at=clock.now(), by="x")

    with pytest.raises(ValueError, match=f"task status of record {built.anc_task}") as raised:
        project_chart(chart.view(), region=HUB)
    assert "Amina" not in str(raised.value)


# -- the patient ------------------------------------------------------------------------------


def test_patient_carries_the_demographics(built: Built, projected: list[Json]) -> None:
    chart_id = built.chart.id

    assert body(projected[0]) == {
        "resourceType": "Patient",
        "id": chart_id,
        "extension": [{"url": TIMEZONE, "valueCode": ZONE}],
        "identifier": [{"system": "urn:rural-care:patient", "value": chart_id}],
        "active": True,
        "name": [{"family": "Juma", "given": ["Amina"]}],
        "telecom": [{"system": "phone", "value": "+255712345678", "use": "mobile"}],
        "gender": "female",
        "birthDate": "1994-06-15",
        "address": [{"city": "Kijiji cha Mlima"}],
        "communication": [
            {
                "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "sw"}]},
                "preferred": True,
            }
        ],
    }


def test_a_patient_without_optional_fields_leaves_them_out() -> None:
    clock = FixedClock(START)
    bare = {"given": "Juma", "family": "Ali", "sex": "male", "birth_date": "2023-01-02"}
    chart = Chart.new_patient(bare, author="chw", clock=clock)

    resources = project_chart(chart.view(), region=HUB)

    assert [body(r) for r in resources] == [
        {
            "resourceType": "Patient",
            "id": chart.id,
            "extension": [{"url": TIMEZONE, "valueCode": HUB_ZONE}],
            "identifier": [{"system": "urn:rural-care:patient", "value": chart.id}],
            "active": True,
            "name": [{"family": "Ali", "given": ["Juma"]}],
            "gender": "male",
            "birthDate": "2023-01-02",
        }
    ]
    assert_valid(resources)


def visit_at(chart: Chart, started_at: datetime, zone: str) -> str:
    return chart.record_encounter({"kind": "home_visit", "started_at": started_at, "zone": zone})


def test_the_patients_time_zone_is_that_of_the_newest_visit_by_its_start() -> None:
    clock = FixedClock(START)
    chart = Chart.new_patient(AMINA, author="chw", clock=clock)
    visit_at(chart, START + timedelta(days=2), "Africa/Nairobi")
    clock.advance(timedelta(days=3))
    # Written later (a newer ID) about an earlier visit, on a tablet set to another zone.
    visit_at(chart, START + timedelta(days=1), ZONE)

    [patient] = of_type(project_chart(chart.view(), region=HUB), "Patient")

    assert patient["extension"] == [{"url": TIMEZONE, "valueCode": "Africa/Nairobi"}]
    assert central_validate(patient) == patient


def test_a_patient_with_no_visit_yet_has_the_regions_time_zone() -> None:
    chart = Chart.new_patient(AMINA, author="chw", clock=FixedClock(START))

    [patient] = project_chart(chart.view(), region=Region(REGION, "Africa/Lusaka"))

    assert patient["extension"] == [{"url": TIMEZONE, "valueCode": "Africa/Lusaka"}]
    assert central_validate(patient) == patient


def test_the_facility_is_the_patients_managing_organization_by_name(built: Built) -> None:
    kilosa = Region(REGION, HUB_ZONE, "Kilosa Health Centre")

    [patient] = of_type(project_chart(built.view, region=kilosa), "Patient")

    assert patient["managingOrganization"] == {"display": "Kilosa Health Centre"}
    assert central_validate(patient) == patient
    assert_valid([patient])
    [without] = of_type(project_chart(built.view, region=HUB), "Patient")
    assert "managingOrganization" not in without


def test_a_visit_whose_time_zone_is_not_iana_is_refused_without_the_value(built: Built) -> None:
    chart = built.chart.fork(author="tablet")
    with chart.document.transaction() as tx:
        found = tx.get(section(tx, "encounters"), built.amendment)  # the newest visit
        assert found is not None
        tx.put(found[1], "zone", am.ScalarType.Str, "Amina/Home")

    with pytest.raises(ValueError, match=f"time zone of encounter {built.amendment}") as raised:
        project_chart(chart.view(), region=HUB)
    assert "Amina" not in str(raised.value)


def test_a_region_whose_time_zone_is_unknown_is_refused(built: Built) -> None:
    with pytest.raises(ValueError, match="time zone is not a known IANA time zone"):
        project_chart(built.view, region=Region(REGION, "Mars/Olympus_Mons"))


def pregnancy_observations(resources: list[Json]) -> list[Json]:
    return [
        r for r in of_type(resources, "Observation") if r["code"]["coding"][0]["code"] == "82810-3"
    ]


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        ("pregnant", ("LA15173-0", "Pregnant")),
        ("not_pregnant", ("LA26683-5", "Not pregnant")),
        ("unknown", ("LA4489-6", "Unknown")),
    ],
)
def test_pregnancy_status_is_one_observation_that_keeps_its_id(
    built: Built, projected: list[Json], status: str, answer: tuple[str, str]
) -> None:
    chart = built.chart.fork(author="chw")
    chart.set_pregnancy_status(status)  # type: ignore[arg-type]

    [observation] = pregnancy_observations(project_chart(chart.view(), region=HUB))

    [before] = pregnancy_observations(projected)
    assert observation["id"] == before["id"]
    assert body(observation) == {
        "resourceType": "Observation",
        "id": before["id"],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": OBSERVATION_CATEGORY,
                        "code": "social-history",
                        "display": "Social History",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "82810-3", "display": "Pregnancy status"}]},
        "subject": {"reference": f"Patient/{built.chart.id}"},
        "valueCodeableConcept": {
            "coding": [{"system": LOINC, "code": answer[0], "display": answer[1]}]
        },
    }


def test_no_pregnancy_status_projects_no_observation() -> None:
    chart = Chart.new_patient(AMINA, author="chw", clock=FixedClock(START))
    assert pregnancy_observations(project_chart(chart.view(), region=HUB)) == []


def consent_by_scope(resources: list[Json]) -> dict[str, Json]:
    found = {}
    for consent in of_type(resources, "Consent"):
        [action] = consent["provision"]["action"]
        [scope] = action["coding"]
        assert scope["system"] == "urn:rural-care:consent-scope"
        found[scope["code"]] = consent
    return found


def test_each_recorded_consent_scope_is_a_consent_the_reminder_sender_can_read(
    built: Built, projected: list[Json]
) -> None:
    consents = consent_by_scope(projected)

    assert {scope: (c["status"], c["provision"]["type"]) for scope, c in consents.items()} == {
        "sms_reminders": ("active", "permit"),
        "voice_reminders": ("rejected", "deny"),
        "data_sharing": ("inactive", "deny"),
    }
    sms = consents["sms_reminders"]
    assert sms["patient"] == {"reference": f"Patient/{built.chart.id}"}
    assert sms["scope"]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "patient-privacy",
            "display": "Privacy Consent",
        }
    ]
    assert sms["category"] == [
        {"coding": [{"system": LOINC, "code": "59284-0", "display": "Consent Document"}]}
    ]
    # R4's ppc-1: a policy or a policy rule.
    assert sms["policyRule"]["coding"][0]["code"] == "OPTIN"


def test_a_consent_keeps_its_id_when_it_changes_and_unrecorded_scopes_are_absent() -> None:
    chart = Chart.new_patient(AMINA, author="chw", clock=FixedClock(START))
    chart.set_consent("sms_reminders", "granted")
    before = consent_by_scope(project_chart(chart.view(), region=HUB))

    chart.set_consent("sms_reminders", "withdrawn")
    after = consent_by_scope(project_chart(chart.view(), region=HUB))

    assert list(before) == list(after) == ["sms_reminders"]
    assert after["sms_reminders"]["id"] == before["sms_reminders"]["id"]
    assert after["sms_reminders"]["status"] == "inactive"


def test_allergies_keep_a_clinical_status_unless_entered_in_error(
    built: Built, projected: list[Json]
) -> None:
    patient = {"reference": f"Patient/{built.chart.id}"}
    clinical = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
    verification = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

    assert body(find(projected, "AllergyIntolerance", built.allergy)) == {
        "resourceType": "AllergyIntolerance",
        "id": built.allergy,
        "clinicalStatus": {"coding": [{"system": clinical, "code": "active"}]},
        "criticality": "high",
        "code": {"text": "Penicillin"},
        "patient": patient,
        "recordedDate": "2025-03-01T08:30:00.000+00:00",
    }
    wrong = find(projected, "AllergyIntolerance", built.wrong_allergy)
    assert "clinicalStatus" not in wrong
    assert wrong["verificationStatus"] == {
        "coding": [{"system": verification, "code": "entered-in-error"}]
    }
    assert wrong["criticality"] == "unable-to-assess"


def test_medications_map_their_status(built: Built, projected: list[Json]) -> None:
    current = find(projected, "MedicationStatement", built.medication)
    old = find(projected, "MedicationStatement", built.old_medication)

    assert body(current) == {
        "resourceType": "MedicationStatement",
        "id": built.medication,
        "status": "active",
        "medicationCodeableConcept": {"text": "Iron and folic acid"},
        "subject": {"reference": f"Patient/{built.chart.id}"},
        "dateAsserted": "2025-03-01T08:30:00.000+00:00",
        "dosage": [{"text": "60 mg daily"}],
    }
    assert old["status"] == "completed"
    assert "dosage" not in old


def test_a_medication_entered_in_error_says_so(built: Built) -> None:
    chart = built.chart.fork(author="chw")
    chart.update_medication(built.medication, {"status": "entered_in_error"})

    projected = project_chart(chart.view(), region=HUB)

    assert find(projected, "MedicationStatement", built.medication)["status"] == (
        "entered-in-error"
    )


# -- encounters, observations, forms ------------------------------------------------------------


def observations_of(resources: list[Json], encounter_id: str) -> list[Json]:
    return [
        r
        for r in of_type(resources, "Observation")
        if r.get("encounter") == {"reference": f"Encounter/{encounter_id}"}
    ]


def test_a_visit_is_a_finished_home_health_encounter(built: Built, projected: list[Json]) -> None:
    encounter = built.view.item("encounters", built.anc)

    assert body(find(projected, "Encounter", built.anc)) == {
        "resourceType": "Encounter",
        "id": built.anc,
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "HH",
            "display": "home health",
        },
        "type": [{"coding": [{"system": "urn:rural-care:encounter-kind", "code": "anc_contact"}]}],
        "subject": {"reference": f"Patient/{built.chart.id}"},
        "period": {"start": encounter["started_at"]},
    }


def test_an_amendment_points_at_the_encounter_it_amends(
    built: Built, projected: list[Json]
) -> None:
    amendment = find(projected, "Encounter", built.amendment)

    assert amendment["extension"] == [
        {"url": "urn:rural-care:amends", "valueReference": {"reference": f"Encounter/{built.anc}"}}
    ]
    assert "partOf" not in amendment
    assert "extension" not in find(projected, "Encounter", built.anc)


def test_a_form_visit_has_its_questionnaire_response_under_the_encounter_id(
    built: Built, projected: list[Json]
) -> None:
    encounter = built.view.item("encounters", built.anc)
    response = find(projected, "QuestionnaireResponse", built.anc)

    assert body(response) == {
        "resourceType": "QuestionnaireResponse",
        "id": built.anc,
        "language": "en",
        "questionnaire": "urn:rural-care:form:anc_contact",
        "status": "completed",
        "subject": {"reference": f"Patient/{built.chart.id}"},
        "encounter": {"reference": f"Encounter/{built.anc}"},
        "authored": encounter["recorded_at"],
        # The engine writes valid R4 items: they go through unchanged.
        "item": json.loads(encounter["form"]["items"]),
    }


def test_stored_answers_lose_the_keys_r4_does_not_define(
    built: Built, projected: list[Json]
) -> None:
    response = find(projected, "QuestionnaireResponse", built.sick)

    assert response["item"] == SICK_ITEMS_IN_R4
    assert response["questionnaire"] == "urn:rural-care:form:sick_child"
    assert response["language"] == "sw"


def test_form_findings_are_survey_or_vital_sign_observations_of_every_value_kind(
    built: Built, projected: list[Json]
) -> None:
    encounter = built.view.item("encounters", built.sick)
    found = {
        (o["code"]["coding"][0]["code"], json.dumps(o["category"])): o
        for o in observations_of(projected, built.sick)
    }

    def category(code: str, display: str) -> str:
        return json.dumps(
            [{"coding": [{"system": OBSERVATION_CATEGORY, "code": code, "display": display}]}]
        )

    assert set(found) == {
        ("45701-0", category("survey", "Survey")),
        ("75325-1", category("survey", "Survey")),
        ("29463-7", category("vital-signs", "Vital Signs")),
    }
    weight = found["29463-7", category("vital-signs", "Vital Signs")]
    [weight_id] = [k for k, v in encounter["observations"].items() if v["code"] == "29463-7"]
    assert body(weight) == {
        "resourceType": "Observation",
        "id": weight_id,
        "status": "final",
        "category": json.loads(category("vital-signs", "Vital Signs")),
        "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": f"Patient/{built.chart.id}"},
        "encounter": {"reference": f"Encounter/{built.sick}"},
        "effectiveDateTime": encounter["started_at"],
        "issued": encounter["recorded_at"],
        "valueQuantity": {"value": 9.5, "unit": "kg", "system": UCUM, "code": "kg"},
        "derivedFrom": [{"reference": f"QuestionnaireResponse/{built.sick}"}],
    }
    assert found["45701-0", category("survey", "Survey")]["valueBoolean"] is True
    symptoms = [o for o in observations_of(projected, built.sick) if "valueCodeableConcept" in o]
    assert sorted(json.dumps(o["valueCodeableConcept"]) for o in symptoms) == sorted(
        [
            json.dumps({"coding": [{"system": SNOMED, "code": "91175000"}]}),
            json.dumps({"coding": [{"code": "lethargic"}]}),
        ]
    )


def test_the_engines_quantities_keep_their_ucum_units(built: Built, projected: list[Json]) -> None:
    quantities = {
        o["code"]["coding"][0]["code"]: (o["valueQuantity"], o["category"][0]["coding"][0]["code"])
        for o in observations_of(projected, built.anc)
    }

    assert quantities == {
        "18185-9": ({"value": 17.0, "unit": "wk", "system": UCUM, "code": "wk"}, "survey"),
        "8480-6": (
            {"value": 150.0, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
            "vital-signs",
        ),
        "8462-4": (
            {"value": 95.0, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
            "vital-signs",
        ),
        "8310-5": ({"value": 37.2, "unit": "Cel", "system": UCUM, "code": "Cel"}, "vital-signs"),
    }


def test_an_unsigned_encounter_without_a_form_has_preliminary_exam_findings(
    built: Built, projected: list[Json]
) -> None:
    [finding] = observations_of(projected, built.exam)

    assert finding["status"] == "preliminary"
    assert finding["category"][0]["coding"][0]["code"] == "exam"
    assert finding["valueBoolean"] is False
    assert "derivedFrom" not in finding
    assert find(projected, "Encounter", built.exam)["status"] == "finished"
    assert not [r for r in of_type(projected, "QuestionnaireResponse") if r["id"] == built.exam]


def test_an_unsigned_form_is_an_in_progress_response() -> None:
    clock = FixedClock(START)
    chart = Chart.new_patient(AMINA, author="chw", clock=clock)
    visit = sick_visit(clock)["encounter"]
    encounter_id = chart.record_encounter(visit, sign=False)

    projected = project_chart(chart.view(), region=HUB)

    assert find(projected, "QuestionnaireResponse", encounter_id)["status"] == "in-progress"
    assert {o["status"] for o in observations_of(projected, encounter_id)} == {"preliminary"}
    assert_valid(projected)


@pytest.mark.parametrize(
    "items",
    ["not json", '{"linkId": "a"}', '[{"text": "no linkId"}]', '[{"linkId": "a", "answer": 1}]'],
)
def test_damaged_stored_answers_are_refused_without_their_content(items: str) -> None:
    clock = FixedClock(START)
    chart = Chart.new_patient(AMINA, author="chw", clock=clock)
    visit = sick_visit(clock)["encounter"]
    encounter_id = chart.record_encounter(visit | {"form": visit["form"] | {"items": items}})

    with pytest.raises(ValueError, match=f"encounter {encounter_id}") as raised:
        project_chart(chart.view(), region=HUB)
    assert "Amina" not in str(raised.value)
    assert "no linkId" not in str(raised.value)


# -- referrals ------------------------------------------------------------------------------


def test_a_referral_is_a_service_request_with_its_cause_as_a_condition(
    built: Built, projected: list[Json]
) -> None:
    referral = built.view.item("referrals", built.anc_referral)
    patient = {"reference": f"Patient/{built.chart.id}"}
    encounter = {"reference": f"Encounter/{built.anc}"}

    assert body(find(projected, "ServiceRequest", built.anc_referral)) == {
        "resourceType": "ServiceRequest",
        "id": built.anc_referral,
        "status": "active",
        "intent": "order",
        "priority": "stat",
        "code": {"coding": [{"system": SNOMED, "code": "3457005", "display": "Patient referral"}]},
        "subject": patient,
        "encounter": encounter,
        "authoredOn": referral["created_at"],
        "reasonReference": [{"reference": f"Condition/{built.anc_referral}"}],
        "note": [{"text": "Severe headache in pregnancy: refer to hospital now."}],
    }
    assert body(find(projected, "Condition", built.anc_referral)) == {
        "resourceType": "Condition",
        "id": built.anc_referral,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "provisional",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "encounter-diagnosis",
                        "display": "Encounter Diagnosis",
                    }
                ]
            }
        ],
        "code": {"text": "Severe headache"},
        "subject": patient,
        "encounter": encounter,
        "recordedDate": referral["created_at"],
    }


def test_a_referral_without_danger_signs_or_visit(built: Built, projected: list[Json]) -> None:
    urgent = find(projected, "Condition", built.sick_referral)
    lone_request = find(projected, "ServiceRequest", built.lone_referral)
    lone_condition = find(projected, "Condition", built.lone_referral)

    assert urgent["code"] == {"text": "Fever with convulsions"}
    assert lone_request["status"] == "revoked"
    assert lone_request["priority"] == "routine"
    assert "encounter" not in lone_request
    assert "encounter" not in lone_condition
    assert lone_condition["category"][0]["coding"][0]["code"] == "problem-list-item"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("requested", "active"),
        ("accepted", "active"),
        ("completed", "completed"),
        ("cancelled", "revoked"),
    ],
)
def test_referral_status_maps_to_request_status(built: Built, status: str, expected: str) -> None:
    chart = built.chart.fork(author="clinician")
    chart.set_referral_status(built.anc_referral, status)  # type: ignore[arg-type]

    projected = project_chart(chart.view(), region=HUB)

    assert find(projected, "ServiceRequest", built.anc_referral)["status"] == expected


# -- tasks and reminders ------------------------------------------------------------------------


def reminders_of(resources: list[Json], task_id: str) -> list[Json]:
    return [
        r
        for r in of_type(resources, "CommunicationRequest")
        if r["basedOn"] == [{"reference": f"Task/{task_id}"}]
    ]


def test_a_task_is_a_plan_with_its_due_date(built: Built, projected: list[Json]) -> None:
    task = built.view.item("tasks", built.anc_task)

    assert body(find(projected, "Task", built.anc_task)) == {
        "resourceType": "Task",
        "id": built.anc_task,
        "status": "requested",
        "intent": "plan",
        "code": {"coding": [{"system": "urn:rural-care:task-kind", "code": "anc_contact"}]},
        "description": "Next antenatal contact",
        "for": {"reference": f"Patient/{built.chart.id}"},
        "encounter": {"reference": f"Encounter/{built.anc}"},
        "authoredOn": task["created_at"],
        "restriction": {"period": {"end": "2025-03-21"}},
    }
    assert find(projected, "Task", built.td_task)["status"] == "completed"
    assert find(projected, "Task", built.lone_task)["status"] == "cancelled"


def test_a_call_back_task_from_central_is_not_pushed_back(
    built: Built, projected: list[Json]
) -> None:
    chart = built.chart.fork(author="hub:kati")
    clock = FixedClock(START + timedelta(days=1))
    call_back = {"kind": "call_back", "description": "Call the patient back", "due": "2025-03-02"}
    task_id = chart.add_task(call_back, task_id=new_id(clock))

    with_call_back = project_chart(chart.view(), region=HUB)

    assert chart.view().item("tasks", task_id)["kind"] == "call_back"
    # Not a Task nor anything else: the chart's own tasks and the rest go as before.
    assert with_call_back == projected


def test_each_reminder_is_a_communication_request_to_the_patient(
    built: Built, projected: list[Json]
) -> None:
    task = built.view.item("tasks", built.anc_task)
    [reminder_id] = task["reminders"]
    patient = {"reference": f"Patient/{built.chart.id}"}

    assert [body(r) for r in reminders_of(projected, built.anc_task)] == [
        {
            "resourceType": "CommunicationRequest",
            "id": reminder_id,
            "language": "sw",
            "basedOn": [{"reference": f"Task/{built.anc_task}"}],
            "status": "active",
            "category": [
                {
                    "coding": [
                        {"system": "urn:rural-care:reminder-template", "code": "anc_contact_due"}
                    ]
                }
            ],
            "subject": patient,
            "encounter": {"reference": f"Encounter/{built.anc}"},
            "payload": [{"contentString": "Next antenatal contact"}],
            "occurrenceDateTime": "2025-03-19",
            "authoredOn": task["created_at"],
            "recipient": [patient],
        }
    ]


def test_reminders_of_a_task_that_is_no_longer_requested_are_revoked(
    built: Built, projected: list[Json]
) -> None:
    [done] = reminders_of(projected, built.td_task)
    [cancelled] = reminders_of(projected, built.lone_task)

    assert (done["status"], cancelled["status"]) == ("revoked", "revoked")
    assert "encounter" not in cancelled
    assert cancelled["language"] == "en"
    assert reminders_of(projected, built.check_task) == []


# -- messages -------------------------------------------------------------------------------


def message_resource(built: Built, message_id: str) -> Json:
    """A message as the projection maps it (only CHW notes are pushed; the others came from
    central, and the hub fetches them rather than sending them back)."""
    record = {"id": message_id, **built.view.item("messages", message_id)}
    return {**communication(record, Targets.of(built.view)), "meta": {}}


def test_only_the_chws_own_messages_are_pushed(built: Built, projected: list[Json]) -> None:
    pushed = {r["id"] for r in of_type(projected, "Communication")}

    assert pushed == {built.messages["from_chw"]}


def test_messages_in_every_direction_and_channel(built: Built) -> None:
    def summary(message_id: str) -> tuple[str, str, bool, bool]:
        found = message_resource(built, message_id)
        return (
            found["category"][0]["coding"][0]["code"],
            found["medium"][0]["coding"][0]["code"],
            "sender" in found,
            "recipient" in found,
        )

    ids = built.messages
    assert {direction: summary(ids[direction]) for direction in ids} == {
        "from_chw": ("chw-note", "ONLINEWRIT", False, False),
        "to_chw": ("advice", "ONLINEWRIT", False, False),
        "to_patient": ("reminder-outcome", "WRITTEN", False, True),
        "from_patient": ("patient-reply", "WRITTEN", True, False),
        "voice": ("patient-reply", "PHONE", True, False),
    }


def test_a_reply_is_in_response_to_its_message(built: Built) -> None:
    message = built.view.item("messages", built.messages["to_chw"])
    patient = {"reference": f"Patient/{built.chart.id}"}

    assert body(message_resource(built, built.messages["to_chw"])) == {
        "resourceType": "Communication",
        "id": built.messages["to_chw"],
        "inResponseTo": [{"reference": f"Communication/{built.messages['from_chw']}"}],
        "status": "completed",
        "category": [{"coding": [{"system": "urn:rural-care:message", "code": "advice"}]}],
        "medium": [
            {
                "coding": [
                    {
                        "system": PARTICIPATION_MODE,
                        "code": "ONLINEWRIT",
                        "display": "online written",
                    }
                ]
            }
        ],
        "subject": patient,
        "sent": message["sent_at"],
        "payload": [{"contentString": "Refer to the district hospital today."}],
    }
    reply = message_resource(built, built.messages["from_patient"])
    assert reply["sender"] == patient
    assert reply["inResponseTo"] == [{"reference": f"Communication/{built.messages['to_patient']}"}]


# -- merged charts ------------------------------------------------------------------------------


def test_a_conflicted_field_projects_the_value_the_view_shows_and_nothing_else() -> None:
    clock = FixedClock(START)
    chart = Chart.new_patient(AMINA, author="chw-a", clock=clock)
    other = Chart.load(chart.save(), author="chw-b", clock=clock, actor=b"\x02" * 16)
    chart.update_demographics({"phone": "+255700000001"})
    clock.advance(timedelta(minutes=1))
    other.update_demographics({"phone": "+255700000002"})
    chart.merge(Chart.load(other.save(), author="hub", clock=clock))
    view = chart.view()
    assert [c.path for c in view.conflicts] == ["phone"]

    [patient] = of_type(project_chart(view, region=HUB), "Patient")

    assert view.fields["phone"] == "+255700000002"
    assert patient["telecom"] == [{"system": "phone", "value": "+255700000002", "use": "mobile"}]
    assert patient["extension"] == [{"url": TIMEZONE, "valueCode": HUB_ZONE}]  # no conflict in it


# -- the transaction bundle -----------------------------------------------------------------------


def test_the_bundle_puts_every_resource_at_its_id_patients_first(projected: list[Json]) -> None:
    shuffled = projected[1:] + projected[:1]

    bundle = transaction_bundle(shuffled)

    get_fhir_model_class("Bundle").model_validate(bundle)
    assert binding_problems(bundle) == []
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "transaction")
    entries = bundle["entry"]
    assert entries[0]["resource"]["resourceType"] == "Patient"
    assert [e["request"] for e in entries] == [
        {"method": "PUT", "url": f"{e['resource']['resourceType']}/{e['resource']['id']}"}
        for e in entries
    ]
    assert sorted(json.dumps(e["resource"]) for e in entries) == sorted(
        json.dumps(r) for r in projected
    )
    # Encounter and QuestionnaireResponse share an ID: a fullUrl of urn:uuid:ID would clash.
    assert all("fullUrl" not in e for e in entries)
    assert set(bundle) == {"resourceType", "type", "entry"}


def test_the_bundle_of_the_same_chart_is_the_same_every_time(built: Built) -> None:
    first = json.dumps(transaction_bundle(project_chart(built.view, region=HUB)))
    assert json.dumps(transaction_bundle(project_chart(built.view, region=HUB))) == first


def test_patients_of_several_charts_come_first_in_their_order() -> None:
    one, other = (project_chart(build().view, region=HUB) for _ in range(2))

    entries = transaction_bundle(one + other)["entry"]

    assert [e["resource"]["resourceType"] for e in entries[:3]] == [
        "Patient",
        "Patient",
        "Observation",
    ]
    assert [e["resource"]["id"] for e in entries[:2]] == [one[0]["id"], other[0]["id"]]


def test_a_bundle_refuses_a_resource_twice(projected: list[Json]) -> None:
    with pytest.raises(ValueError, match="same type and ID"):
        transaction_bundle([*projected, projected[3]])


def test_an_empty_bundle_has_no_entries() -> None:
    bundle = transaction_bundle([])
    assert bundle == {"resourceType": "Bundle", "type": "transaction"}
    get_fhir_model_class("Bundle").model_validate(bundle)


# -- the contract in docs/fhir.md ---------------------------------------------------------------


def test_every_system_and_code_the_projection_invents_is_in_the_docs(projected: list[Json]) -> None:
    docs = DOCS.read_text(encoding="utf-8")
    section = docs[docs.index("## The projection") :]
    text = json.dumps(projected)

    ours = set(re.findall(r'"(urn:rural-care:[a-z-]+)', text)) - {"urn:rural-care:form"}
    assert ours <= set(re.findall(r"urn:rural-care:[a-z-]+", docs))
    for resource_type in {r["resourceType"] for r in projected}:
        assert f"`{resource_type}`" in section
    for code in ("chw-note", "advice", "patient-reply", "reminder-outcome", "ONLINEWRIT", "PHONE"):
        assert f"`{code}`" in section


# -- property: valid charts always project to valid resources ----------------------------------

names = st.text(alphabet="abcdefghijkmnoprstuwyzABDEJKMNSTéëñŋ'-", min_size=1, max_size=12).filter(
    lambda s: s.strip() == s
)
demographics = st.fixed_dictionaries(
    {
        "given": names,
        "family": names,
        "sex": st.sampled_from(["female", "male", "other", "unknown"]),
        "birth_date": st.dates(min_value=date(1900, 1, 1), max_value=START.date()),
    },
    optional={
        "phone": st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
        "village": names,
        "language": st.sampled_from(["sw", "en", "fr", "en-GB", "luo"]),
    },
)
readings = st.fixed_dictionaries(
    {},
    optional={
        "pulse": st.integers(20, 250),
        "temperature": st.floats(30, 45, allow_nan=False),
        "weight": st.floats(0.3, 350, allow_nan=False),
        "spo2": st.integers(50, 100),
        "muac": st.integers(50, 500),
    },
)
visits = st.lists(
    st.tuples(readings, st.booleans(), st.sampled_from(["emergency", "urgent", "routine", None])),
    max_size=3,
)
consent_states = st.dictionaries(
    st.sampled_from(["data_sharing", "sms_reminders", "voice_reminders"]),
    st.sampled_from(["granted", "refused", "withdrawn"]),
)
message_kinds = st.lists(
    st.tuples(
        st.sampled_from(["to_chw", "from_chw", "to_patient", "from_patient"]),
        st.sampled_from(["console", "sms", "voice", "app"]),
        st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != ""),
    ),
    max_size=3,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(demographics, visits, consent_states, message_kinds)
def test_random_valid_charts_project_to_valid_resources(
    person: Json,
    planned: list[tuple[dict[str, float], bool, str | None]],
    consents: dict[str, str],
    messages: list[tuple[str, str, str]],
) -> None:
    clock = FixedClock(START)
    chart = Chart.new_patient(person, author="chw", clock=clock)
    for scope, state in consents.items():
        chart.set_consent(scope, state)  # type: ignore[arg-type]
    for values, with_task, urgency in planned:
        clock.advance(timedelta(hours=1))
        visit: Json = {
            "encounter": {
                "kind": "vital_signs",
                "started_at": clock.now(),
                "zone": ZONE,
                "observations": vital_observations(values),
            }
        }
        if urgency:
            visit["referral"] = {"urgency": urgency, "reason": "Looks unwell"}
        if with_task:
            reminder = {"send_on": date(2025, 4, 1), "template": "visit_due", "language": "sw"}
            visit["tasks"] = [
                {
                    "kind": "follow_up",
                    "description": "Visit",
                    "due": date(2025, 4, 2),
                    "reminders": [reminder],
                }
            ]
        chart.record_visit(visit)
    for direction, channel, text in messages:
        chart.add_message(
            {
                "direction": direction,
                "channel": channel,
                "author": "a",
                "text": text,
                "sent_at": clock.now(),
            }
        )

    resources = project_chart(chart.view(), region=HUB)

    assert_valid(resources)
    get_fhir_model_class("Bundle").model_validate(transaction_bundle(resources))
    assert resources == project_chart(chart.view(), region=HUB)
