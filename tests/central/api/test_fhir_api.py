"""Central's FHIR REST API in process on both backends: the CapabilityStatement and whether it
tells the truth, read, vread, create, update, conditional create and update, delete, history
and ``_since``, and the no-op PUT that makes a hub's repeated push free."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from central.clock import instant
from tests.central.fhir_fixtures import (
    BASE_URL,
    FHIR_JSON,
    PATIENT_SYSTEM,
    Api,
    Caller,
    encounter,
    nothing_written,
    observation,
    patient,
    refusal,
    region_tag,
)

# A value of each search parameter type that is well formed for any parameter of that type.
SEARCH_VALUES = {"token": "final", "string": "kil", "date": "ge2026-01-01", "number": "5"}
RESULT_PARAMETER_VALUES = {"_count": "5", "_sort": "-_lastUpdated", "_total": "accurate"}
HH = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"}


def smallest_valid(kind: str, patient_id: str) -> dict[str, Any]:
    """The smallest R4 resource of ``kind`` with its required elements, about the patient."""
    subject = {"reference": f"Patient/{patient_id}"}
    concept = {"text": "Amoxicillin"}
    bodies: dict[str, dict[str, Any]] = {
        "Patient": {"gender": "unknown"},
        "Practitioner": {"active": True},
        "Organization": {"name": "Kilosa Dispensary"},
        "Location": {"name": "Kilosa Dispensary", "status": "active"},
        "Encounter": {"status": "finished", "class": HH, "subject": subject},
        "Observation": {"status": "final", "code": {"text": "Temperature"}, "subject": subject},
        "Condition": {"code": {"text": "Fever"}, "subject": subject},
        "ServiceRequest": {"status": "active", "intent": "order", "subject": subject},
        "Task": {"status": "requested", "intent": "plan", "for": subject},
        "Communication": {"status": "completed", "subject": subject},
        "CommunicationRequest": {"status": "active", "subject": subject},
        "QuestionnaireResponse": {"status": "completed", "subject": subject},
        "Consent": {
            "status": "active",
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy",
                    }
                ]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": subject,
            "policyRule": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
                ]
            },
        },
        "AllergyIntolerance": {"code": {"text": "Penicillin"}, "patient": subject},
        "MedicationStatement": {
            "status": "active",
            "medicationCodeableConcept": concept,
            "subject": subject,
        },
        "Immunization": {
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "20"}]},
            "patient": subject,
            "occurrenceDateTime": "2026-02-01",
        },
        "MedicationRequest": {
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": concept,
            "subject": subject,
        },
        "Procedure": {"status": "completed", "subject": subject},
        "CarePlan": {"status": "active", "intent": "plan", "subject": subject},
        "Appointment": {
            "status": "booked",
            "participant": [{"actor": subject, "status": "accepted"}],
        },
    }
    assert kind in bodies, f"the CapabilityStatement lists {kind}: give this test an example"
    return {"resourceType": kind, "meta": region_tag("kilosa"), **bodies[kind]}


def statement(caller: Caller) -> dict[str, Any]:
    answer = caller.get("/fhir/metadata")
    assert answer.status_code == 200
    found: dict[str, Any] = answer.json()
    return found


def created(caller: Caller, resource: dict[str, Any]) -> dict[str, Any]:
    answer = caller.post(f"/fhir/{resource['resourceType']}", resource)
    assert answer.status_code == 201, answer.text
    found: dict[str, Any] = answer.json()
    return found


def history_of(caller: Caller, path: str) -> list[dict[str, Any]]:
    answer = caller.get(path)
    assert answer.status_code == 200, answer.text
    bundle = answer.json()
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "history")
    entries: list[dict[str, Any]] = bundle.get("entry", [])
    return entries


def versions(entries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(request.url, etag, method) of each history entry, in the order given."""
    return [(e["request"]["url"], e["response"]["etag"], e["request"]["method"]) for e in entries]


# -- the CapabilityStatement ----------------------------------------------------------------------


def test_the_capability_statement_is_fhir_4_0_1_and_needs_no_token(api: Api) -> None:
    answer = api.central.anonymous().get("/fhir/metadata")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(FHIR_JSON)
    found = answer.json()
    assert found["resourceType"] == "CapabilityStatement"
    assert found["fhirVersion"] == "4.0.1"
    assert found["kind"] == "instance"
    rest = found["rest"][0]
    assert {i["code"] for i in rest["interaction"]} >= {"transaction", "batch"}
    token = rest["security"]["extension"][0]["extension"][0]
    assert token == {"url": "token", "valueUri": f"{BASE_URL}/auth/token"}


def test_every_type_the_statement_lists_can_be_created_and_read(api: Api) -> None:
    kinds = [r["type"] for r in statement(api.kilosa)["rest"][0]["resource"]]
    assert "Patient" in kinds
    assert "Observation" in kinds
    subject = created(api.kilosa, patient())["id"]
    for kind in kinds:
        made = created(api.kilosa, smallest_valid(kind, subject))
        read = api.kilosa.get(f"/fhir/{kind}/{made['id']}")
        assert read.status_code == 200, f"{kind}: {read.text}"
        assert read.json() == made


def test_every_search_parameter_the_statement_lists_is_accepted(api: Api) -> None:
    subject = created(api.kilosa, patient())["id"]
    refused = []
    searched = 0
    for resource in statement(api.kilosa)["rest"][0]["resource"]:
        kind = resource["type"]
        for param in resource["searchParam"]:
            name = param["name"]
            if name == "_include":
                values = resource["searchInclude"]
                # Listing _include where nothing can be included is a claim no search can use.
                assert values, f"{kind} lists _include but no reference parameter to include"
            elif name in RESULT_PARAMETER_VALUES:
                values = [RESULT_PARAMETER_VALUES[name]]
            elif param["type"] == "reference":
                values = [f"Patient/{subject}"]
            else:
                values = [SEARCH_VALUES[param["type"]]]
            for value in values:
                answer = api.kilosa.get(f"/fhir/{kind}?{name}={quote(value, safe='')}")
                searched += 1
                if answer.status_code != 200:
                    refused.append(f"{kind}?{name} -> {answer.status_code} {answer.text}")
    assert refused == []
    assert searched > 300  # 20 types, each with its own parameters


def test_a_type_the_statement_does_not_list_is_refused(api: Api) -> None:
    listed = {r["type"] for r in statement(api.kilosa)["rest"][0]["resource"]}
    assert "Medication" not in listed
    medication = {"resourceType": "Medication", "code": {"text": "Zawadi"}}
    with nothing_written(api.central):
        assert "Medication" in refusal(api.kilosa.post("/fhir/Medication", medication), 400)
        refusal(api.kilosa.put("/fhir/Medication/m1", {**medication, "id": "m1"}), 400)
        refusal(api.kilosa.get("/fhir/Medication?code=x"), 400)
        refusal(api.kilosa.get("/fhir/Medication/m1"), 400)


def test_the_smart_configuration_names_the_token_endpoint(api: Api) -> None:
    answer = api.central.anonymous().get("/fhir/.well-known/smart-configuration")
    assert answer.status_code == 200
    found = answer.json()
    assert found["token_endpoint"] == api.central.settings.token_url
    assert found["grant_types_supported"] == ["client_credentials"]
    assert found["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert "ES384" in found["token_endpoint_auth_signing_alg_values_supported"]
    assert "client-confidential-asymmetric" in found["capabilities"]


# -- create, read, vread, update ------------------------------------------------------------------


def test_create_answers_201_with_location_etag_and_last_modified(api: Api) -> None:
    answer = api.kilosa.post("/fhir/Patient", patient(chart="c-7"))
    assert answer.status_code == 201
    made = answer.json()
    rid = made["id"]
    assert answer.headers["location"] == f"{BASE_URL}/fhir/Patient/{rid}/_history/1"
    assert answer.headers["etag"] == 'W/"1"'
    modified = parsedate_to_datetime(answer.headers["last-modified"])
    assert modified == api.central.clock.now()
    assert made["meta"]["versionId"] == "1"
    assert made["meta"]["lastUpdated"] == instant(api.central.clock.now())
    assert made["identifier"] == [{"system": PATIENT_SYSTEM, "value": "c-7"}]


def test_read_and_vread_give_each_version(api: Api) -> None:
    first = created(api.kilosa, patient(given="Rehema"))
    rid = first["id"]
    api.central.clock.advance(5)
    second_body = {**first, "gender": "other"}
    update = api.kilosa.put(f"/fhir/Patient/{rid}", second_body)
    assert update.status_code == 200
    assert update.headers["etag"] == 'W/"2"'
    assert update.json()["meta"]["versionId"] == "2"
    read = api.kilosa.get(f"/fhir/Patient/{rid}")
    assert read.status_code == 200
    assert read.headers["etag"] == 'W/"2"'
    assert read.json()["gender"] == "other"
    old = api.kilosa.get(f"/fhir/Patient/{rid}/_history/1")
    assert old.status_code == 200
    assert old.json() == first
    assert old.headers["etag"] == 'W/"1"'
    assert api.kilosa.get(f"/fhir/Patient/{rid}/_history/2").json() == read.json()
    missing = api.kilosa.get(f"/fhir/Patient/{rid}/_history/3")
    refusal(missing, 404)
    refusal(api.kilosa.get("/fhir/Patient/no-such-patient"), 404)


def test_an_update_to_an_id_not_yet_stored_creates_it_with_that_id(api: Api) -> None:
    answer = api.kilosa.put("/fhir/Patient/chart-0042", patient(rid="chart-0042"))
    assert answer.status_code == 201
    assert answer.headers["etag"] == 'W/"1"'
    assert answer.headers["location"] == f"{BASE_URL}/fhir/Patient/chart-0042/_history/1"
    assert api.kilosa.get("/fhir/Patient/chart-0042").json()["id"] == "chart-0042"


def test_an_update_whose_id_is_not_the_urls_is_refused(api: Api) -> None:
    with nothing_written(api.central):
        text = refusal(api.kilosa.put("/fhir/Patient/chart-1", patient(rid="chart-2")), 400)
    assert "id" in text


def test_if_match_with_the_current_version_updates(api: Api) -> None:
    made = created(api.kilosa, patient())
    answer = api.kilosa.put(
        f"/fhir/Patient/{made['id']}", {**made, "gender": "male"}, if_match='W/"1"'
    )
    assert answer.status_code == 200
    assert answer.headers["etag"] == 'W/"2"'


def test_if_match_with_another_version_is_412_and_writes_nothing(api: Api) -> None:
    made = created(api.kilosa, patient())
    api.kilosa.put(f"/fhir/Patient/{made['id']}", {**made, "gender": "male"})
    with nothing_written(api.central):
        answer = api.kilosa.put(
            f"/fhir/Patient/{made['id']}", {**made, "gender": "other"}, if_match='W/"1"'
        )
        text = refusal(answer, 412)
    assert "version" in text
    assert api.kilosa.get(f"/fhir/Patient/{made['id']}").json()["gender"] == "male"


def test_a_put_identical_to_what_is_stored_keeps_its_version_and_adds_no_history(
    api: Api,
) -> None:
    body = patient(rid="chart-9", chart="c-9")
    first = api.kilosa.put("/fhir/Patient/chart-9", body)
    assert first.status_code == 201
    api.central.clock.advance(60)
    with nothing_written(api.central):
        again = api.kilosa.put("/fhir/Patient/chart-9", patient(rid="chart-9", chart="c-9"))
        as_read = api.kilosa.get("/fhir/Patient/chart-9").json()
        # What a client read back, with central's meta, is the same content too.
        read_back = api.kilosa.put("/fhir/Patient/chart-9", as_read)
    for answer in (again, read_back):
        assert answer.status_code == 200
        assert answer.headers["etag"] == 'W/"1"'
        assert answer.json()["meta"]["lastUpdated"] == first.json()["meta"]["lastUpdated"]
    assert len(history_of(api.kilosa, "/fhir/Patient/chart-9/_history")) == 1
    changed = api.kilosa.put("/fhir/Patient/chart-9", {**body, "gender": "male"})
    assert changed.headers["etag"] == 'W/"2"'


# -- conditional create and update ----------------------------------------------------------------


def test_conditional_create_with_no_match_creates(api: Api) -> None:
    answer = api.kilosa.post(
        "/fhir/Patient", patient(chart="c-1"), if_none_exist=f"identifier={PATIENT_SYSTEM}|c-1"
    )
    assert answer.status_code == 201
    assert answer.headers["etag"] == 'W/"1"'


def test_conditional_create_with_one_match_returns_it_and_writes_nothing(api: Api) -> None:
    first = created(api.kilosa, patient(chart="c-1"))
    with nothing_written(api.central):
        answer = api.kilosa.post(
            "/fhir/Patient",
            patient(chart="c-1", given="Rehema"),
            if_none_exist=f"identifier={PATIENT_SYSTEM}|c-1",
        )
    assert answer.status_code == 200
    assert answer.json() == first
    assert answer.headers["location"].startswith(f"{BASE_URL}/fhir/Patient/{first['id']}/")


def test_conditional_create_with_two_matches_is_412_and_writes_nothing(api: Api) -> None:
    created(api.kilosa, patient(chart="c-1"))
    created(api.kilosa, patient(chart="c-1"))
    with nothing_written(api.central):
        answer = api.kilosa.post(
            "/fhir/Patient", patient(chart="c-1"), if_none_exist=f"identifier={PATIENT_SYSTEM}|c-1"
        )
        assert "more than one" in refusal(answer, 412)


def test_conditional_update_creates_then_updates_the_one_match(api: Api) -> None:
    url = f"/fhir/Patient?identifier={quote(PATIENT_SYSTEM)}|c-3"
    first = api.kilosa.put(url, patient(chart="c-3"))
    assert first.status_code == 201
    rid = first.json()["id"]
    second = api.kilosa.put(url, patient(chart="c-3", given="Rehema"))
    assert second.status_code == 200
    assert second.json()["id"] == rid
    assert second.headers["etag"] == 'W/"2"'
    assert api.kilosa.get(f"/fhir/Patient/{rid}").json()["name"][0]["given"] == ["Rehema"]


def test_conditional_update_matching_two_is_412_and_writes_nothing(api: Api) -> None:
    created(api.kilosa, patient(chart="c-4"))
    created(api.kilosa, patient(chart="c-4"))
    with nothing_written(api.central):
        answer = api.kilosa.put(f"/fhir/Patient?identifier={PATIENT_SYSTEM}|c-4", patient())
        refusal(answer, 412)


# -- delete and history ---------------------------------------------------------------------------


def test_a_deleted_resource_reads_410_and_its_history_shows_the_deletion(api: Api) -> None:
    made = created(api.kilosa, patient())
    rid = made["id"]
    api.central.clock.advance(10)
    deleted = api.kilosa.delete(f"/fhir/Patient/{rid}")
    assert deleted.status_code == 204
    assert "deleted" in refusal(api.kilosa.get(f"/fhir/Patient/{rid}"), 410)
    assert api.kilosa.get(f"/fhir/Patient?_id={rid}").json().get("entry", []) == []
    entries = history_of(api.kilosa, f"/fhir/Patient/{rid}/_history")
    assert versions(entries) == [
        (f"Patient/{rid}", 'W/"2"', "DELETE"),
        ("Patient", 'W/"1"', "POST"),
    ]
    assert "resource" not in entries[0]
    assert entries[1]["resource"] == made
    assert api.kilosa.get(f"/fhir/Patient/{rid}/_history/1").json() == made
    refusal(api.kilosa.get(f"/fhir/Patient/{rid}/_history/2"), 410)


def test_history_of_an_instance_a_type_and_the_system_newest_first(api: Api) -> None:
    clock = api.central.clock
    first = created(api.kilosa, patient())
    clock.advance(1)
    seen = created(api.kilosa, encounter(first["id"]))
    clock.advance(1)
    api.kilosa.put(f"/fhir/Patient/{first['id']}", {**first, "gender": "other"})
    pid, eid = first["id"], seen["id"]
    instance = history_of(api.kilosa, f"/fhir/Patient/{pid}/_history")
    assert versions(instance) == [
        (f"Patient/{pid}", 'W/"2"', "PUT"),
        ("Patient", 'W/"1"', "POST"),
    ]
    assert instance[0]["resource"]["gender"] == "other"
    assert instance[1]["resource"]["gender"] == "female"
    of_type = history_of(api.kilosa, "/fhir/Patient/_history")
    assert [e["fullUrl"] for e in of_type] == [f"{BASE_URL}/fhir/Patient/{pid}"] * 2
    system = history_of(api.kilosa, "/fhir/_history")
    assert [e["fullUrl"].removeprefix(f"{BASE_URL}/fhir/") for e in system] == [
        f"Patient/{pid}",
        f"Encounter/{eid}",
        f"Patient/{pid}",
    ]


def test_history_since_an_instant_leaves_out_what_came_before(api: Api) -> None:
    clock = api.central.clock
    early = created(api.kilosa, patient())
    clock.advance(30)
    since = instant(clock.now())
    late = created(api.kilosa, patient())
    api.kilosa.put(f"/fhir/Patient/{early['id']}", {**early, "gender": "other"})
    query = f"_since={quote(since)}"
    system = history_of(api.kilosa, f"/fhir/_history?{query}")
    assert sorted(versions(system)) == sorted(
        [("Patient", 'W/"1"', "POST"), (f"Patient/{early['id']}", 'W/"2"', "PUT")]
    )
    assert {e["resource"]["id"] for e in system} == {early["id"], late["id"]}
    assert len(history_of(api.kilosa, f"/fhir/Patient/_history?{query}")) == 2
    instance = history_of(api.kilosa, f"/fhir/Patient/{early['id']}/_history?{query}")
    assert versions(instance) == [(f"Patient/{early['id']}", 'W/"2"', "PUT")]
    clock.advance(30)
    later = quote(instant(clock.now()))
    assert history_of(api.kilosa, f"/fhir/_history?_since={later}") == []
    refusal(api.kilosa.get("/fhir/_history?_since=yesterday"), 400)


def test_a_reference_to_a_stored_resource_is_kept_and_searchable(api: Api) -> None:
    subject = created(api.kilosa, patient())["id"]
    seen = created(api.kilosa, encounter(subject))
    made = created(
        api.kilosa,
        observation(f"Patient/{subject}", encounter={"reference": f"Encounter/{seen['id']}"}),
    )
    found = api.kilosa.get(f"/fhir/Observation?encounter=Encounter/{seen['id']}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [made["id"]]
