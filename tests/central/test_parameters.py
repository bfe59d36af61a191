"""The search parameter registry (checked against the R4 models of ``fhir.resources``) and the
index rows a resource gives: tokens, normalised strings, date ranges and references."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given
from hypothesis import strategies as st

from central.clock import instant
from central.database import Database
from central.fhir.bindings import ACCEPTED_TYPES
from central.fhir.parameters import (
    FIRST_INSTANT,
    LAST_INSTANT,
    MAX_INDEXED,
    PARAMETERS,
    IndexRows,
    SearchParam,
    date_range,
    index_rows,
    normalise,
    relative_reference,
    values_at,
)

BASE = "https://central.example/fhir"

# What the brief for central's search asks of each type, beyond _id, _lastUpdated and _tag.
REQUIRED = {
    "Patient": "identifier name family given birthdate address address-city gender telecom "
    "phone active",
    "Encounter": "patient subject date status class type",
    "Observation": "patient subject encounter code date status category",
    "Condition": "patient subject encounter code clinical-status onset-date category",
    "ServiceRequest": "patient subject encounter status intent priority code authored",
    "Task": "patient subject encounter status code authored-on period based-on focus",
    "Communication": "patient subject encounter status category sent received recipient "
    "sender based-on part-of",
    "CommunicationRequest": "patient subject status category occurrence authored based-on "
    "recipient",
    "QuestionnaireResponse": "patient subject encounter authored status questionnaire",
    "Consent": "patient status category scope",
    "AllergyIntolerance": "patient clinical-status code date",
    "MedicationStatement": "patient subject status code effective",
    "Immunization": "patient status vaccine-code date",
    "MedicationRequest": "patient subject status code date authoredon",
    "Procedure": "patient subject status code date",
    "CarePlan": "patient subject status date",
    "Practitioner": "identifier name",
    "Organization": "identifier name",
    "Appointment": "patient status date",
}
# The R4 datatypes each parameter type can index (as fhir.resources names them).
DATATYPES = {
    "token": {"CodeableConcept", "Coding", "Identifier", "ContactPoint", "str", "bool"},
    "string": {"str", "HumanName", "Address"},
    "date": {"date", "datetime", "Period"},
    "reference": {"Reference", "str"},  # str: a canonical
}


# -- the registry ---------------------------------------------------------------------------------


def test_every_accepted_type_is_searchable_with_the_common_parameters() -> None:
    assert set(PARAMETERS) == set(ACCEPTED_TYPES)
    for params in PARAMETERS.values():
        assert {"_id", "_lastUpdated", "_tag"} <= set(params)
        assert params["_id"].paths == params["_lastUpdated"].paths == ()
        assert params["_tag"] == SearchParam("_tag", "token", ("meta.tag",))


@pytest.mark.parametrize("resource_type", sorted(REQUIRED))
def test_the_parameters_the_console_and_hubs_need_are_there(resource_type: str) -> None:
    assert set(REQUIRED[resource_type].split()) <= set(PARAMETERS[resource_type])


def _field(model: Any, name: str) -> Any:
    for key, info in model.model_fields.items():
        if (info.alias or key) == name:
            return info
    raise AssertionError(f"{model.__name__} has no element {name}")


def _datatype(annotation: Any) -> str:
    while typing.get_args(annotation):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return str(getattr(annotation, "__name__", annotation)).removesuffix("Type")


@pytest.mark.parametrize("resource_type", sorted(PARAMETERS))
def test_every_path_is_an_r4_element_of_a_datatype_its_parameter_type_indexes(
    resource_type: str,
) -> None:
    for param in PARAMETERS[resource_type].values():
        assert param.name.startswith("_") or param.name.replace("-", "").islower()
        for path in param.paths:
            model = get_fhir_model_class(resource_type)
            steps = [step.partition("(")[0] for step in path.replace(".where", "").split(".")]
            for step in steps[:-1]:
                model = get_fhir_model_class(_datatype(_field(model, step).annotation))
            found = _datatype(_field(model, steps[-1]).annotation)
            assert found in DATATYPES[param.type], (resource_type, param.name, path, found)


def test_patient_parameters_index_only_references_to_patients() -> None:
    for params in PARAMETERS.values():
        if "patient" in params:
            assert params["patient"].type == "reference"
            assert params["patient"].targets == ("Patient",)


# -- tokens ---------------------------------------------------------------------------------------


def rows_of(resource: dict[str, Any]) -> IndexRows:
    return index_rows(resource, base_url=BASE)


def test_tokens_of_each_datatype() -> None:
    found = rows_of(
        {
            "resourceType": "Patient",
            "id": "p",
            "meta": {"tag": [{"system": "urn:rural-care:region", "code": "north"}]},
            "identifier": [
                {"system": "urn:rural-care:patient", "value": "C-1", "type": {"text": "Chart"}},
                {"value": "no-system"},
            ],
            "telecom": [
                {"system": "phone", "value": "+255 700"},
                {"system": "email", "value": "a@b.c"},
                {"system": "phone"},
            ],
            "gender": "female",
            "active": False,
        }
    )
    assert sorted(found.token) == sorted(
        [
            ("_tag", "urn:rural-care:region", "north"),
            ("identifier", "urn:rural-care:patient", "C-1"),
            ("identifier", "", "no-system"),
            ("telecom", "", "+255 700"),
            ("telecom", "", "a@b.c"),
            ("phone", "", "+255 700"),
            ("email", "", "a@b.c"),
            ("gender", "", "female"),
            ("active", "", "false"),
        ]
    )
    assert ("identifier:text", "chart") in found.string


def test_a_codeable_concept_gives_each_coding_and_its_texts() -> None:
    found = rows_of(
        {
            "resourceType": "Observation",
            "id": "o",
            "status": "final",
            "code": {
                "coding": [
                    {"system": "http://loinc.org", "code": "8480-6", "display": "Systolic BP"},
                    {"code": "sys"},
                    {"system": "urn:no-code", "display": "Shown only"},
                ],
                "text": "Blood  Pressure (top)",
            },
            "category": [{"text": "only text"}],
        }
    )
    assert sorted(t for t in found.token if t[0] == "code") == [
        ("code", "", "sys"),
        ("code", "http://loinc.org", "8480-6"),
    ]
    assert ("status", "", "final") in found.token
    assert not [t for t in found.token if t[0] == "category"]
    assert sorted(s for s in found.string if s[0] == "code:text") == [
        ("code:text", "blood pressure (top)"),
        ("code:text", "shown only"),
        ("code:text", "systolic bp"),
    ]
    assert ("category:text", "only text") in found.string


# -- strings --------------------------------------------------------------------------------------


def test_names_and_addresses_give_each_part_normalised_and_as_written() -> None:
    found = rows_of(
        {
            "resourceType": "Patient",
            "id": "p",
            "name": [
                {"family": "Jüma", "given": ["Amina", "Zawadi"], "prefix": ["Bi."], "text": " "}
            ],
            "address": [{"line": ["12  Main St"], "city": "Dar es Salaam", "postalCode": "11"}],
        }
    )
    name = sorted(v for p, v in found.string if p == "name")
    assert name == ["amina", "bi.", "juma", "zawadi"]  # a blank text gives nothing
    assert sorted(v for p, v in found.string if p == "name:exact") == [
        "Amina",
        "Bi.",
        "Jüma",
        "Zawadi",
    ]
    assert [v for p, v in found.string if p == "family"] == ["juma"]
    assert sorted(v for p, v in found.string if p == "address") == [
        "11",
        "12 main st",
        "dar es salaam",
    ]
    assert [v for p, v in found.string if p == "address-city:exact"] == ["Dar es Salaam"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Jüma", "juma"),
        ("JÚMA", "juma"),
        ("Ju\u0308ma", "juma"),  # decomposed
        ("Straße", "strasse"),
        ("İstanbul", "istanbul"),
        ("ﬁfi", "fifi"),  # a ligature
        ("  Amina \t\n Juma  ", "amina juma"),
        ("Nguyễn Thị", "nguyen thi"),
    ],
)
def test_normalise_drops_accents_case_and_extra_whitespace(text: str, expected: str) -> None:
    assert normalise(text) == expected


@given(st.text())
def test_normalising_twice_changes_nothing(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert len(once) <= MAX_INDEXED


# -- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026", ("2026-01-01T00:00:00.000000Z", "2026-12-31T23:59:59.999999Z")),
        ("2026-11", ("2026-11-01T00:00:00.000000Z", "2026-11-30T23:59:59.999999Z")),
        ("2028-02", ("2028-02-01T00:00:00.000000Z", "2028-02-29T23:59:59.999999Z")),
        ("2026-12", ("2026-12-01T00:00:00.000000Z", "2026-12-31T23:59:59.999999Z")),
        ("2026-11-21", ("2026-11-21T00:00:00.000000Z", "2026-11-21T23:59:59.999999Z")),
        ("2026-11-21T08:30Z", ("2026-11-21T08:30:00.000000Z", "2026-11-21T08:30:59.999999Z")),
        (
            "2026-11-21T08:30:05Z",
            ("2026-11-21T08:30:05.000000Z", "2026-11-21T08:30:05.999999Z"),
        ),
        (
            "2026-11-21T08:30:05.25+03:00",
            ("2026-11-21T05:30:05.250000Z", "2026-11-21T05:30:05.259999Z"),
        ),
        (
            "2026-11-21T08:30:05.123456789Z",
            ("2026-11-21T08:30:05.123456Z", "2026-11-21T08:30:05.123456Z"),
        ),
        (
            "2026-01-01T01:00:00+02:00",
            ("2025-12-31T23:00:00.000000Z", "2025-12-31T23:00:00.999999Z"),
        ),
        ("2026-11-21T08:30:05", ("2026-11-21T08:30:05.000000Z", "2026-11-21T08:30:05.999999Z")),
        ("9999", ("9999-01-01T00:00:00.000000Z", LAST_INSTANT)),
        ("0001-01-01T00:30:00+01:00", (FIRST_INSTANT, FIRST_INSTANT)),
    ],
)
def test_a_date_covers_its_precision_in_utc(text: str, expected: tuple[str, str]) -> None:
    assert date_range(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "26",
        "2026-1",
        "2026-13",
        "2026-02-29",
        "2026-11-21T24:00:00Z",
        "2026-11-21T08",
        "2026-11-21 08:00:00",
        "2026-11-21T08:00:00+15:00",
        "2026-11-21T08:00:60Z",
        "tomorrow",
    ],
)
def test_what_is_not_a_fhir_date_has_no_range(text: str) -> None:
    assert date_range(text) is None


# Hypothesis takes naive bounds and adds the time zone itself.
EARLIEST = datetime(1800, 1, 1)  # noqa: DTZ001
LATEST = datetime(2200, 1, 1)  # noqa: DTZ001


@given(st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.just(UTC)))
def test_an_instant_covers_exactly_itself(moment: datetime) -> None:
    text = moment.isoformat(timespec="microseconds")
    assert date_range(text) == (instant(moment), instant(moment))
    second = moment.replace(microsecond=0)
    low, high = date_range(second.isoformat()) or ("", "")
    assert (low, high) == (instant(second), instant(second + timedelta(microseconds=999_999)))


def test_periods_timings_and_open_ends() -> None:
    found = rows_of(
        {
            "resourceType": "Encounter",
            "id": "e",
            "status": "finished",
            "class": {"code": "HH"},
            "period": {"start": "2026-11-21T08:00:00Z"},
        }
    )
    assert found.date == [("date", "2026-11-21T08:00:00.000000Z", LAST_INSTANT)]
    found = rows_of(
        {
            "resourceType": "MedicationRequest",
            "id": "m",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/p"},
            "medicationCodeableConcept": {"text": "x"},
            "dosageInstruction": [{"timing": {"event": ["2026-11-21", "2026-11-22"]}}],
        }
    )
    assert [d[1][:10] for d in found.date if d[0] == "date"] == ["2026-11-21", "2026-11-22"]
    found = rows_of(
        {
            "resourceType": "Task",
            "id": "t",
            "status": "requested",
            "intent": "order",
            "restriction": {"period": {"end": "2026-12"}},
            "executionPeriod": {"start": "2026-11-01", "end": "2026-11-02"},
        }
    )
    assert sorted(found.date) == [
        ("period", FIRST_INSTANT, "2026-12-31T23:59:59.999999Z"),
        ("period", "2026-11-01T00:00:00.000000Z", "2026-11-02T23:59:59.999999Z"),
    ]


# -- references -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/p-1", "Patient/p-1"),
        ("Patient/p-1/_history/4", "Patient/p-1"),
        (f"{BASE}/Patient/p-1", "Patient/p-1"),
        (f"{BASE}/Patient/p-1/_history/2", "Patient/p-1"),
        ("https://other.example/fhir/Patient/p-1", None),
        ("#contained", None),
        ("urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e", None),
        ("Patient", None),
        ("patient/p-1", None),
        ("Patient/p 1", None),
        ("Patient/p-1/extra", None),
    ],
)
def test_relative_reference(reference: str, expected: str | None) -> None:
    assert relative_reference(reference, BASE) == expected
    assert relative_reference(reference) == (None if reference.startswith(BASE) else expected)


def test_reference_parameters_keep_their_target_types() -> None:
    found = rows_of(
        {
            "resourceType": "Encounter",
            "id": "e",
            "status": "finished",
            "class": {"code": "HH"},
            "subject": {"reference": "Group/g"},
            "participant": [
                {"individual": {"reference": "Practitioner/dr"}},
                {"individual": {"reference": "RelatedPerson/aunt"}},
            ],
            "serviceProvider": {"reference": "https://other.example/Organization/o"},
            "partOf": {
                "reference": "Encounter/parent",
                "identifier": {"system": "urn:visit", "value": "V-1"},
            },
        }
    )
    assert sorted(found.reference) == [
        ("part-of", "Encounter/parent"),
        ("participant", "Practitioner/dr"),
        ("participant", "RelatedPerson/aunt"),
        ("practitioner", "Practitioner/dr"),
        ("subject", "Group/g"),
    ]
    assert ("part-of:identifier", "urn:visit", "V-1") in found.token


def test_appointment_patient_is_the_participant_that_is_a_patient() -> None:
    found = rows_of(
        {
            "resourceType": "Appointment",
            "id": "a",
            "status": "booked",
            "participant": [
                {"actor": {"reference": "Patient/p"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/dr"}, "status": "accepted"},
            ],
        }
    )
    assert [t for p, t in found.reference if p == "patient"] == ["Patient/p"]
    assert sorted(t for p, t in found.reference if p == "actor") == ["Patient/p", "Practitioner/dr"]


def test_a_canonical_is_indexed_as_written_and_without_its_version() -> None:
    found = rows_of(
        {
            "resourceType": "QuestionnaireResponse",
            "id": "q",
            "status": "completed",
            "questionnaire": "urn:rural-care:form:anc_contact|3",
        }
    )
    assert sorted(found.reference) == [
        ("questionnaire", "urn:rural-care:form:anc_contact"),
        ("questionnaire", "urn:rural-care:form:anc_contact|3"),
    ]


def test_values_at_walks_arrays_and_filters_with_where() -> None:
    resource = {
        "telecom": [
            {"system": "phone", "value": "1"},
            {"system": "email", "value": "2"},
            {"system": "phone", "value": "3"},
        ],
        "name": [{"given": ["a", "b"]}, {"given": ["c"]}, {}],
    }
    assert values_at(resource, "name.given") == ["a", "b", "c"]
    assert [v["value"] for v in values_at(resource, "telecom.where(system='phone')")] == ["1", "3"]  # type: ignore[index]
    assert values_at(resource, "address.city") == []


def test_rows_are_deduplicated_and_unknown_types_give_none() -> None:
    found = rows_of(
        {
            "resourceType": "Observation",
            "id": "o",
            "status": "final",
            "category": [{"coding": [{"code": "x"}]}, {"coding": [{"code": "x"}]}],
        }
    )
    assert [t for t in found.token if t[0] == "category"] == [("category", "", "x")]
    assert index_rows({"resourceType": "Basic", "id": "b", "code": {"text": "x"}}) == IndexRows()


def test_long_values_are_cut_so_that_every_backend_can_index_them(database: Database) -> None:
    long = "ü" * 5000  # two UTF-8 bytes each: far past PostgreSQL's B-tree row limit
    resource = {
        "resourceType": "Patient",
        "id": "p",
        "name": [{"family": long}],
        "identifier": [{"system": "urn:" + long, "value": long}],
        "managingOrganization": {"reference": "Organization/o"},
    }
    rows = index_rows(resource)
    assert all(len(value) <= MAX_INDEXED for _, value in rows.string)
    assert all(len(s) <= MAX_INDEXED and len(c) <= MAX_INDEXED for _, s, c in rows.token)
    with database.write() as session:
        session.executemany(
            "INSERT INTO search_token (rtype, id, param, system, code) VALUES (?, ?, ?, ?, ?)",
            [("Patient", "p", *row) for row in rows.token],
        )
        session.executemany(
            "INSERT INTO search_string (rtype, id, param, value) VALUES (?, ?, ?, ?)",
            [("Patient", "p", *row) for row in rows.string],
        )
    with database.read() as session:
        stored = session.execute(
            "SELECT value FROM search_string WHERE rtype = ? AND param = ?",
            ("Patient", "family:exact"),
        )
    assert stored == [("ü" * MAX_INDEXED,)]
