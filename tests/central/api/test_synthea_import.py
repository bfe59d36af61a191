"""A Synthea-shaped population (``central.synthetic``) imported by the kilosa hub as transaction
bundles, on both backends: every bundle succeeds, what is stored is valid R4 (R4B models) with
every reference resolving, the clinicians and facilities shared through ``ifNoneExist`` exist
once, and a search by patient finds exactly that patient's encounters."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from central.synthetic import population
from tests.central.fhir_fixtures import Api, Central

SEED = 20260302


def imported(api: Api, patients: int) -> None:
    for sent in population(SEED, patients, region="kilosa"):
        answer = api.kilosa.post("/fhir", sent)
        assert answer.status_code == 200, answer.text
        statuses = Counter(e["response"]["status"] for e in answer.json()["entry"])
        assert set(statuses) <= {"201 Created", "200 OK"}
        # Only the shared conditional creates may find their resource already there.
        shared = sum(1 for e in sent["entry"] if "ifNoneExist" in e["request"])
        assert statuses["200 OK"] <= shared


def stored_resources(central: Central) -> list[dict[str, Any]]:
    with central.database.read() as session:
        rows = session.execute("SELECT content FROM resources WHERE deleted = 0 ORDER BY rtype, id")
    return [json.loads(row[0]) for row in rows]


def references_in(node: Any) -> list[str]:
    if isinstance(node, list):
        return [ref for item in node for ref in references_in(item)]
    if not isinstance(node, dict):
        return []
    found = [node["reference"]] if isinstance(node.get("reference"), str) else []
    return found + [ref for value in node.values() for ref in references_in(value)]


def identifiers(resources: list[dict[str, Any]], kind: str) -> Counter[str]:
    return Counter(
        f"{i['system']}|{i['value']}"
        for r in resources
        if r["resourceType"] == kind
        for i in r["identifier"]
    )


def test_a_synthea_population_imports_as_valid_r4_with_every_reference_resolving(api: Api) -> None:
    imported(api, 20)
    resources = stored_resources(api.central)
    kinds = Counter(r["resourceType"] for r in resources)
    assert kinds["Patient"] == 20
    assert kinds["Encounter"] > 100
    assert kinds["Observation"] > 300
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    present = {f"{r['resourceType']}/{r['id']}" for r in resources}
    references = [ref for r in resources for ref in references_in(r)]
    assert len(references) > 3 * len(resources)
    assert [ref for ref in references if ref not in present] == []
    with api.central.database.read() as session:
        indexed = {row[0] for row in session.execute("SELECT target FROM search_reference")}
    assert len(indexed) > kinds["Patient"]
    assert indexed <= present
    tags = {json.dumps(r["meta"]["tag"]) for r in resources}
    assert tags == {json.dumps([{"system": "urn:rural-care:region", "code": "kilosa"}])}
    # The clinicians and facilities every bundle shares through ifNoneExist exist once each.
    sent = [e for b in population(SEED, 20, region="kilosa") for e in b["entry"]]
    for kind in ("Practitioner", "Organization"):
        conditions = {
            e["request"]["ifNoneExist"].removeprefix("identifier=")
            for e in sent
            if e["request"]["url"] == kind
        }
        found = identifiers(resources, kind)
        assert set(found) == conditions
        assert set(found.values()) == {1}
        assert kinds[kind] == len(conditions)


def test_a_search_by_patient_finds_exactly_their_encounters(api: Api) -> None:
    imported(api, 5)
    resources = stored_resources(api.central)
    patients = [r["id"] for r in resources if r["resourceType"] == "Patient"]
    assert len(patients) == 5
    for pid in patients:
        expected = sorted(
            r["id"]
            for r in resources
            if r["resourceType"] == "Encounter" and r["subject"]["reference"] == f"Patient/{pid}"
        )
        assert expected
        answer = api.kilosa.get(f"/fhir/Encounter?patient={pid}&_count=1000&_total=accurate")
        assert answer.status_code == 200
        found = answer.json()
        assert found["total"] == len(expected)
        assert sorted(e["resource"]["id"] for e in found["entry"]) == expected
        assert {e["search"]["mode"] for e in found["entry"]} == {"match"}
        included = api.kilosa.get(
            f"/fhir/Encounter?patient={pid}&_count=1000&_include=Encounter:patient"
        ).json()["entry"]
        matches = [e["resource"]["id"] for e in included if e["search"]["mode"] == "match"]
        extra = [e["resource"] for e in included if e["search"]["mode"] == "include"]
        assert sorted(matches) == expected
        assert [(r["resourceType"], r["id"]) for r in extra] == [("Patient", pid)]
