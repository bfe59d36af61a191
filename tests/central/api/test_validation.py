"""What central refuses to store, one bad input class per case, on both backends: each is a 4xx
OperationOutcome that names what is wrong without repeating the patient's values, and writes
nothing. The values sent are patient-like (``Zawadi``, ``Mwakasege``) so that an echo shows."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.central.fhir_fixtures import (
    Api,
    encounter,
    nothing_written,
    observation,
    patient,
    practitioner,
    refusal,
)


@dataclass(frozen=True)
class Sent:
    path: str
    body: bytes
    content_type: str = "application/fhir+json"
    method: str = "POST"


def as_json(path: str, resource: Any, method: str = "POST") -> Sent:
    return Sent(path, json.dumps(resource).encode(), method=method)


def unknown_resource_type(subject: str) -> Sent:
    # A misspelt type is named back (a type name is not patient data); its content is not.
    return as_json("/fhir/Patinet", patient() | {"resourceType": "Patinet"})


def resource_type_not_the_urls(subject: str) -> Sent:
    return as_json("/fhir/Encounter", patient())


def malformed_json(subject: str) -> Sent:
    return Sent("/fhir/Patient", b'{"resourceType": "Patient", "name": [{"family": "Mwakasege"')


def not_a_json_object(subject: str) -> Sent:
    return as_json("/fhir/Patient", [patient()])


def unknown_element(subject: str) -> Sent:
    return as_json("/fhir/Patient", patient() | {"nickname": "Zawadi"})


def wrong_datatype(subject: str) -> Sent:
    return as_json("/fhir/Patient", patient() | {"birthDate": "Zawadi Mwakasege"})


def wrong_datatype_in_an_update(subject: str) -> Sent:
    body = patient(rid=subject) | {"active": "Mwakasege"}
    return as_json(f"/fhir/Patient/{subject}", body, method="PUT")


def encounter_status_outside_its_value_set(subject: str) -> Sent:
    return as_json("/fhir/Encounter", encounter(subject, status="Zawadi"))


def observation_status_outside_its_value_set(subject: str) -> Sent:
    return as_json("/fhir/Observation", observation(f"Patient/{subject}", status="Zawadi"))


def condition_clinical_status_outside_its_value_set(subject: str) -> Sent:
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{subject}"},
        "code": {"text": "Malaria"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "Zawadi",
                }
            ]
        },
    }
    return as_json("/fhir/Condition", condition)


def an_r4b_only_extension_value(subject: str) -> Sent:
    ratio_range = {
        "lowNumerator": {"value": 1},
        "highNumerator": {"value": 3},
        "denominator": {"value": 10},
    }
    extension = [{"url": "urn:rural-care:test", "valueRatioRange": ratio_range}]
    return as_json("/fhir/Patient", patient() | {"extension": extension})


def an_r4b_only_extension_value_deep_inside(subject: str) -> Sent:
    reference = {"reference": {"reference": f"Patient/{subject}"}}
    extension = [{"url": "urn:rural-care:test", "valueCodeableReference": reference}]
    named = {"family": "Mwakasege", "given": ["Zawadi"], "extension": extension}
    return as_json("/fhir/Patient", patient() | {"name": [named]})


def an_observation_about_a_practitioner(subject: str) -> Sent:
    # ``subject`` here is a stored Practitioner: the reference resolves, its type is wrong.
    return as_json("/fhir/Observation", observation(f"Practitioner/{subject}"))


def a_contained_type_central_does_not_accept(subject: str) -> Sent:
    contained = [{"resourceType": "Medication", "id": "m1", "code": {"text": "Zawadi"}}]
    return as_json("/fhir/Patient", patient() | {"contained": contained})


def a_contained_type_the_r4b_models_lack(subject: str) -> Sent:
    contained = [{"resourceType": "MedicinalProduct", "id": "m1"}]
    return as_json("/fhir/Patient", patient() | {"contained": contained})


def xml_content_type(subject: str) -> Sent:
    return Sent("/fhir/Patient", json.dumps(patient()).encode(), "application/fhir+xml")


def plain_text_content_type(subject: str) -> Sent:
    return Sent("/fhir/Patient", b"Zawadi Mwakasege", "text/plain")


CASES: list[tuple[Callable[[str], Sent], int, str]] = [
    (unknown_resource_type, 400, "does not store Patinet"),
    (resource_type_not_the_urls, 400, "the URL names Encounter"),
    (malformed_json, 400, "not valid JSON"),
    (not_a_json_object, 400, "JSON object"),
    (unknown_element, 400, "Patient.nickname"),
    (wrong_datatype, 400, "Patient.birthDate"),
    (wrong_datatype_in_an_update, 400, "Patient.active"),
    (encounter_status_outside_its_value_set, 400, "Encounter.status"),
    (observation_status_outside_its_value_set, 400, "Observation.status"),
    (condition_clinical_status_outside_its_value_set, 400, "Condition.clinicalStatus"),
    (an_r4b_only_extension_value, 400, "valueRatioRange"),
    (an_r4b_only_extension_value_deep_inside, 400, "valueCodeableReference"),
    (an_observation_about_a_practitioner, 400, "Observation.subject"),
    (a_contained_type_central_does_not_accept, 400, "Patient.contained"),
    (a_contained_type_the_r4b_models_lack, 400, "Patient.contained"),
    (xml_content_type, 415, "application/fhir+json"),
    (plain_text_content_type, 415, "application/fhir+json"),
]


@pytest.mark.parametrize(("case", "status", "said"), CASES, ids=[c[0].__name__ for c in CASES])
def test_a_bad_resource_is_refused_and_writes_nothing(
    api: Api, case: Callable[[str], Sent], status: int, said: str
) -> None:
    if case is an_observation_about_a_practitioner:
        subject = api.kilosa.post("/fhir/Practitioner", practitioner("p-1")).json()["id"]
    else:
        subject = api.kilosa.put("/fhir/Patient/p-1", patient(rid="p-1")).json()["id"]
    sent = case(subject)
    with nothing_written(api.central):
        answer = api.kilosa.send(sent.method, sent.path, sent.body, content_type=sent.content_type)
        text = refusal(answer, status)
    assert said in text


def test_the_same_resources_are_accepted_once_corrected(api: Api) -> None:
    """The cases above fail for the reason they name: without the fault each one is stored."""
    subject = api.kilosa.put("/fhir/Patient/p-1", patient(rid="p-1")).json()["id"]
    good = [
        encounter(subject),
        observation(f"Patient/{subject}"),
        patient() | {"extension": [{"url": "urn:rural-care:test", "valueString": "x"}]},
        patient() | {"contained": [{"resourceType": "Practitioner", "id": "c1"}]},
    ]
    for resource in good:
        answer = api.kilosa.post(f"/fhir/{resource['resourceType']}", resource)
        assert answer.status_code == 201, answer.text
