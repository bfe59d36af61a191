"""The synthetic patient generator: Synthea-shaped transaction bundles that central must accept."""

from __future__ import annotations

import json
import random
import re
import statistics
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from central.synthetic import (
    ENCOUNTER_KIND_SYSTEM,
    ENCOUNTER_KINDS,
    REGION_TAG_SYSTEM,
    patient_bundle,
    population,
    resource_bundles,
)

Json = dict[str, Any]

START = date(2020, 1, 1)
END = date(2025, 1, 1)  # START + the default five years
ALLOWED_TYPES = {
    "Patient", "Practitioner", "Organization", "Encounter", "Observation", "Condition",
    "Immunization", "MedicationRequest", "Procedure", "CarePlan", "AllergyIntolerance",
}  # fmt: skip
HL7 = "http://terminology.hl7.org/CodeSystem/"

# Elements bound `required` in FHIR R4 (4.0.1) that the generator writes, with their value sets
# written out here: fhir.resources does not check codes, so this test does.
NAME_USE = {"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"}
PHONE_SYSTEM = {"phone", "fax", "email", "pager", "url", "sms", "other"}
PHONE_USE = {"home", "work", "temp", "old", "mobile"}
GENDER = {"male", "female", "other", "unknown"}
# fmt: off
REQUIRED_CODES: dict[tuple[str, str], set[str]] = {
    ("Patient", "gender"): GENDER,
    ("Practitioner", "gender"): GENDER,
    ("Patient", "name.use"): NAME_USE,
    ("Practitioner", "name.use"): NAME_USE,
    ("Patient", "telecom.system"): PHONE_SYSTEM,
    ("Patient", "telecom.use"): PHONE_USE,
    ("Patient", "contact.telecom.system"): PHONE_SYSTEM,
    ("Patient", "contact.telecom.use"): PHONE_USE,
    ("Patient", "address.use"): {"home", "work", "temp", "old", "billing"},
    ("Encounter", "status"): {"planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error", "unknown"},
    ("Observation", "status"): {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"},
    ("Immunization", "status"): {"completed", "entered-in-error", "not-done"},
    ("MedicationRequest", "status"): {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"},
    ("MedicationRequest", "intent"): {"proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"},
    ("MedicationRequest", "dosageInstruction.timing.repeat.periodUnit"): {"s", "min", "h", "d", "wk", "mo", "a"},
    ("Procedure", "status"): {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"},
    ("CarePlan", "status"): {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
    ("CarePlan", "intent"): {"proposal", "plan", "order", "option"},
    ("CarePlan", "activity.detail.status"): {"not-started", "scheduled", "in-progress", "on-hold", "completed", "cancelled", "stopped", "unknown", "entered-in-error"},
    ("AllergyIntolerance", "type"): {"allergy", "intolerance"},
    ("AllergyIntolerance", "category"): {"food", "medication", "environment", "biologic"},
    ("AllergyIntolerance", "criticality"): {"low", "high", "unable-to-assess"},
    ("AllergyIntolerance", "reaction.severity"): {"mild", "moderate", "severe"},
}
# Required CodeableConcept bindings: (resource, element) -> (code system, codes).
REQUIRED_CONCEPTS: dict[tuple[str, str], tuple[str, set[str]]] = {
    ("Condition", "clinicalStatus"): (f"{HL7}condition-clinical", {"active", "recurrence", "relapse", "inactive", "remission", "resolved"}),
    ("Condition", "verificationStatus"): (f"{HL7}condition-ver-status", {"unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"}),
    ("AllergyIntolerance", "clinicalStatus"): (f"{HL7}allergyintolerance-clinical", {"active", "inactive", "resolved"}),
    ("AllergyIntolerance", "verificationStatus"): (f"{HL7}allergyintolerance-verification", {"unconfirmed", "confirmed", "refuted", "entered-in-error"}),
}
# fmt: on


@pytest.fixture(scope="module")
def bundles() -> list[Json]:
    """A few hundred patients: the default window; a shorter, later one in a region; and twenty
    years in another, in which children grow up into other kinds of care."""
    default = list(population(11, 250))
    short = list(population(12, 60, start=date(2022, 7, 15), years=2, region="kilosa"))
    long = list(population(13, 30, start=date(2000, 1, 1), years=20, region="ulanga"))
    return default + short + long


def resources(bundle: Json) -> list[Json]:
    return [entry["resource"] for entry in bundle["entry"]]


def values(node: Any, path: str) -> Iterator[Any]:
    """Every value at a dotted path, stepping through lists on the way."""
    if isinstance(node, list):
        for item in node:
            yield from values(item, path)
        return
    head, _, rest = path.partition(".")
    if not isinstance(node, dict) or head not in node:
        return
    if rest:
        yield from values(node[head], rest)
    elif isinstance(node[head], list):
        yield from node[head]
    else:
        yield node[head]


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference":
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a resource, with the key it sits under."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from strings(value, name)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item, key)
    elif isinstance(node, str):
        yield key, node


def age_in_years(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def encounters_by_age(bundle: Json) -> Iterator[tuple[str, str, int, int]]:
    """(kind, sex, age in years, age in days) for each of the patient's encounters."""
    patient = next(r for r in resources(bundle) if r["resourceType"] == "Patient")
    born = date.fromisoformat(patient["birthDate"])
    for r in resources(bundle):
        if r["resourceType"] == "Encounter":
            day = datetime.fromisoformat(r["period"]["start"]).date()
            kind = next(c["code"] for c in values(r, "type.coding"))
            yield kind, patient["gender"], age_in_years(born, day), (day - born).days


# --- FHIR validity ----------------------------------------------------------------------------


def test_every_resource_validates_as_fhir_r4b(bundles: list[Json]) -> None:
    checked = 0
    for bundle in bundles:
        for resource in resources(bundle):
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            checked += 1
    assert checked > 15_000


def test_bundles_validate_as_transactions(bundles: list[Json]) -> None:
    for bundle in bundles[:20]:
        get_fhir_model_class("Bundle").model_validate(bundle)
        assert bundle["type"] == "transaction"


def test_only_the_agreed_resource_types_and_all_of_them(bundles: list[Json]) -> None:
    seen = Counter(r["resourceType"] for b in bundles for r in resources(b))
    assert set(seen) == ALLOWED_TYPES
    assert seen["Patient"] == len(bundles)
    assert all(sum(r["resourceType"] == "Patient" for r in resources(b)) == 1 for b in bundles)


def test_required_bindings_use_codes_from_their_value_sets(bundles: list[Json]) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    for bundle in bundles:
        assert bundle["type"] == "transaction"
        for resource in resources(bundle):
            kind = resource["resourceType"]
            for (owner, path), allowed in REQUIRED_CODES.items():
                if owner == kind:
                    found = list(values(resource, path))
                    assert set(found) <= allowed, (kind, path, found)
                    seen[owner, path] += len(found)
            for (owner, path), (system, allowed) in REQUIRED_CONCEPTS.items():
                if owner == kind:
                    codings = list(values(resource, f"{path}.coding"))
                    assert codings, (kind, path)  # present, as con-3 and ait-1 want
                    assert all(c["system"] == system and c["code"] in allowed for c in codings)
                    seen[owner, path] += len(codings)
    assert [key for key in [*REQUIRED_CODES, *REQUIRED_CONCEPTS] if not seen[key]] == []


def test_a_condition_is_resolved_exactly_when_it_has_abated(bundles: list[Json]) -> None:
    statuses: Counter[str] = Counter()
    for bundle in bundles:
        for r in resources(bundle):
            if r["resourceType"] == "Condition":
                status = r["clinicalStatus"]["coding"][0]["code"]
                assert ("abatementDateTime" in r) == (status == "resolved")
                statuses[status] += 1
    assert statuses["resolved"]
    assert statuses["active"]


def test_completed_care_plans_have_an_end_and_active_ones_do_not(bundles: list[Json]) -> None:
    for bundle in bundles:
        for r in resources(bundle):
            if r["resourceType"] == "CarePlan":
                assert ("end" in r["period"]) == (r["status"] == "completed")


def test_codings_are_complete_and_uncoded_concepts_have_text(bundles: list[Json]) -> None:
    def concepts(node: Any) -> Iterator[Json]:
        if isinstance(node, dict):
            if "coding" in node or set(node) == {"text"}:
                yield node
            for value in node.values():
                yield from concepts(value)
        elif isinstance(node, list):
            for item in node:
                yield from concepts(item)

    for bundle in bundles[:80]:
        for concept in concepts(resources(bundle)):
            assert concept.get("text") or concept.get("coding")
            for coding in concept.get("coding", []):
                assert coding["system"]
                assert coding["code"]
                assert coding["display"]


def test_observations_use_loinc_and_ucum(bundles: list[Json]) -> None:
    quantities = 0
    for bundle in bundles:
        for r in resources(bundle):
            if r["resourceType"] != "Observation":
                continue
            assert {c["system"] for c in values(r, "code.coding")} <= {"http://loinc.org"}
            for quantity in [*values(r, "valueQuantity"), *values(r, "component.valueQuantity")]:
                assert quantity["system"] == "http://unitsofmeasure.org"
                assert quantity["code"] == quantity["unit"]
                quantities += 1
    assert quantities > 5_000


def test_vaccines_are_cvx_and_the_who_schedule_is_there(bundles: list[Json]) -> None:
    given_codes: Counter[str] = Counter()
    for bundle in bundles:
        for r in resources(bundle):
            if r["resourceType"] == "Immunization":
                (coding,) = r["vaccineCode"]["coding"]
                assert coding["system"] == "http://hl7.org/fhir/sid/cvx"
                given_codes[coding["code"]] += 1
    # BCG, bOPV, hep B, pentavalent, PCV13, rotavirus, IPV, measles-rubella, Td
    assert set(given_codes) == {"19", "178", "08", "198", "133", "119", "10", "04", "09"}


# --- references and entries -------------------------------------------------------------------


def test_every_reference_resolves_within_its_bundle(bundles: list[Json]) -> None:
    for bundle in bundles:
        urls = {entry["fullUrl"] for entry in bundle["entry"]}
        found = list(references(bundle))
        assert found
        assert all(ref.startswith("urn:uuid:") and ref in urls for ref in found)


def test_each_entry_comes_after_everything_it_refers_to(bundles: list[Json]) -> None:
    # What lets resource_bundles cut a patient short and still have every reference resolve.
    for bundle in bundles:
        written: set[str] = set()
        for entry in bundle["entry"]:
            assert set(references(entry["resource"])) <= written
            written.add(entry["fullUrl"])


def test_full_urls_are_unique_urn_uuids(bundles: list[Json]) -> None:
    for bundle in bundles:
        urls = [entry["fullUrl"] for entry in bundle["entry"]]
        assert len(urls) == len(set(urls))
        for url in urls:
            assert url.startswith("urn:uuid:")
            uuid.UUID(url.removeprefix("urn:uuid:"))


def test_entries_are_posts_and_shared_resources_are_conditional(bundles: list[Json]) -> None:
    for bundle in bundles:
        for entry in bundle["entry"]:
            resource, request = entry["resource"], entry["request"]
            assert request["method"] == "POST"
            assert request["url"] == resource["resourceType"]
            if resource["resourceType"] in ("Practitioner", "Organization"):
                (identifier,) = resource["identifier"]
                expected = f"identifier={identifier['system']}|{identifier['value']}"
                assert request["ifNoneExist"] == expected
            else:
                assert "ifNoneExist" not in request
                assert uuid.UUID(entry["fullUrl"].removeprefix("urn:uuid:")).version == 4


def test_a_facility_is_the_same_resource_in_every_bundle(bundles: list[Json]) -> None:
    by_identifier: dict[str, str] = {}
    for bundle in bundles:
        for r in resources(bundle):
            if r["resourceType"] in ("Practitioner", "Organization"):
                key = r["identifier"][0]["value"]
                assert by_identifier.setdefault(key, json.dumps(r, sort_keys=True)) == json.dumps(
                    r, sort_keys=True
                )
    organizations = {k for k in by_identifier if k.count("-") == 1}
    regions = ("demo", "kilosa", "ulanga")
    assert organizations == {f"{p}-{n:02d}" for p in regions for n in range(1, 6)}


# --- time and people --------------------------------------------------------------------------


def test_times_are_zoned_and_inside_the_window(bundles: list[Json]) -> None:
    windows = {
        None: (START, END),
        "kilosa": (date(2022, 7, 15), date(2024, 7, 15)),
        "ulanga": (date(2000, 1, 1), date(2020, 1, 1)),
    }
    for bundle in bundles:
        region = next(iter(values(bundle, "entry.resource.meta.tag.code")), None)
        start, end = windows[region]
        for r in resources(bundle):
            for key, text in strings(r):
                if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                    assert key == "birthDate"  # the only plain date
                elif re.fullmatch(r"\d{4}-\d{2}-\d{2}T.*", text):
                    moment = datetime.fromisoformat(text)
                    assert text.endswith("+03:00")
                    assert moment.date() < end, (r["resourceType"], key)
                    if key != "onsetDateTime":  # an onset may predate the window
                        assert moment.date() >= start, (r["resourceType"], key)


def test_ages_fit_the_kind_of_care(bundles: list[Json]) -> None:
    seen: Counter[str] = Counter()
    for bundle in bundles:
        for kind, sex, years, days in encounters_by_age(bundle):
            seen[kind] += 1
            assert days >= 0
            if kind in ("anc_contact", "delivery"):
                assert sex == "female"
                assert 15 <= years <= 45
            elif kind == "immunisation":
                assert years < 5
            elif kind == "sick_child":
                assert days >= 60
                assert years < 5
            elif kind == "hypertension_followup":
                assert years >= 18
            elif kind == "tb_screen":
                assert years >= 15
    assert set(seen) == set(ENCOUNTER_KINDS)


def test_encounter_kinds_are_named_in_the_agreed_system(bundles: list[Json]) -> None:
    for bundle in bundles[:50]:
        for r in resources(bundle):
            if r["resourceType"] == "Encounter":
                (coding,) = r["type"][0]["coding"]
                assert coding["system"] == ENCOUNTER_KIND_SYSTEM
                assert coding["code"] in ENCOUNTER_KINDS


def test_measles_rubella_is_given_from_nine_months(bundles: list[Json]) -> None:
    checked = 0
    for bundle in bundles:
        patient = resources(bundle)[0]
        born = date.fromisoformat(patient["birthDate"])
        for r in resources(bundle):
            if (
                r["resourceType"] == "Immunization"
                and r["vaccineCode"]["coding"][0]["code"] == "04"
            ):
                given_on = datetime.fromisoformat(r["occurrenceDateTime"]).date()
                assert (given_on - born).days >= 274
                checked += 1
    assert checked


def test_names_phones_and_sexes_look_right(bundles: list[Json]) -> None:
    for bundle in bundles:
        for r in resources(bundle):
            if r["resourceType"] in ("Patient", "Practitioner"):
                (name,) = r["name"]
                for part in [name["family"], *name["given"]]:
                    assert re.fullmatch(r"[A-Z][a-z]+", part)
                assert r["gender"] in ("female", "male")
            for phone in values(r, "telecom.value"):
                assert re.fullmatch(r"\+2557990\d{5}", phone)
            for phone in values(r, "contact.telecom.value"):
                assert re.fullmatch(r"\+2557990\d{5}", phone)


def test_patients_under_fifteen_have_a_caregiver_not_a_phone_of_their_own() -> None:
    for bundle in population(3, 120):
        patient = resources(bundle)[0]
        born = date.fromisoformat(patient["birthDate"])
        child = age_in_years(born, max(START, born)) < 15
        assert ("contact" in patient) == child
        if child:
            assert "telecom" not in patient


def test_sizes_are_those_of_five_years_of_rural_care(bundles: list[Json]) -> None:
    sizes = [len(b["entry"]) for b in bundles[:250]]
    assert 20 <= statistics.median(sizes) <= 150
    assert min(sizes) >= 2  # a patient always has some care in five years
    assert max(sizes) < 300


# --- regions ----------------------------------------------------------------------------------


def test_every_resource_carries_the_region_tag_when_asked(bundles: list[Json]) -> None:
    for bundle, region in zip(bundles[250:], ["kilosa"] * 60 + ["ulanga"] * 30, strict=True):
        for r in resources(bundle):
            assert r["meta"]["tag"] == [{"system": REGION_TAG_SYSTEM, "code": region}]


def test_no_resource_has_meta_without_a_region(bundles: list[Json]) -> None:
    for bundle in bundles[:250]:
        assert all("meta" not in r for r in resources(bundle))


# --- determinism ------------------------------------------------------------------------------


def dump(items: Any) -> str:
    return json.dumps(list(items), sort_keys=True)


def test_the_same_seed_gives_the_same_patients() -> None:
    assert dump(population(5, 15)) == dump(population(5, 15))
    one = patient_bundle(random.Random(9), start=START, region="x")
    assert one == patient_bundle(random.Random(9), start=START, region="x")


def test_another_seed_gives_other_patients() -> None:
    assert dump(population(5, 15)) != dump(population(6, 15))
    assert patient_bundle(random.Random(1), start=START) != patient_bundle(
        random.Random(2), start=START
    )


def test_the_first_patients_of_a_seed_do_not_depend_on_how_many_are_asked_for() -> None:
    assert dump(population(5, 4)) == dump(list(population(5, 30))[:4])


def test_the_same_seed_gives_the_same_resource_bundles() -> None:
    assert dump(resource_bundles(2, 550, per_bundle=60)) == dump(
        resource_bundles(2, 550, per_bundle=60)
    )
    assert dump(resource_bundles(2, 550, per_bundle=60)) != dump(
        resource_bundles(3, 550, per_bundle=60)
    )


# --- resource_bundles -------------------------------------------------------------------------


def check_self_contained(bundle: Json) -> None:
    urls = [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(urls) == len(set(urls))
    assert set(references(bundle)) <= set(urls)


def test_resource_bundles_are_full_except_the_last() -> None:
    sizes = [len(b["entry"]) for b in resource_bundles(4, 1234, per_bundle=100)]
    assert sizes == [100] * 12 + [34]


@settings(max_examples=25, deadline=None)
@given(total=st.integers(0, 700), per_bundle=st.integers(1, 260))
def test_resource_bundles_hold_exactly_the_total_and_resolve_alone(
    total: int, per_bundle: int
) -> None:
    produced = list(resource_bundles(8, total, per_bundle=per_bundle))
    assert sum(len(b["entry"]) for b in produced) == total
    assert all(len(b["entry"]) == per_bundle for b in produced[:-1])
    assert len(produced) == -(-total // per_bundle)
    for bundle in produced:
        assert bundle["type"] == "transaction"
        check_self_contained(bundle)


def test_resource_bundles_never_continue_a_patient_in_the_next_bundle() -> None:
    patients_seen: set[str] = set()
    for bundle in resource_bundles(6, 2_000, per_bundle=70):
        check_self_contained(bundle)
        subjects = set(references([r.get("subject", r.get("patient")) for r in resources(bundle)]))
        patients = {e["fullUrl"] for e in bundle["entry"] if e["request"]["url"] == "Patient"}
        assert subjects <= patients
        assert not patients & patients_seen
        patients_seen |= patients


def test_resource_bundles_hold_each_facility_and_clinician_once() -> None:
    for bundle in resource_bundles(6, 1_500, per_bundle=250):
        shared = [
            e["request"]["ifNoneExist"] for e in bundle["entry"] if "ifNoneExist" in e["request"]
        ]
        assert shared
        assert len(shared) == len(set(shared))
        assert sum(r["resourceType"] == "Patient" for r in resources(bundle)) >= 2


def test_resource_bundles_validate_and_carry_the_region() -> None:
    for bundle in resource_bundles(1, 400, per_bundle=100, region="morogoro"):
        for r in resources(bundle):
            get_fhir_model_class(r["resourceType"]).model_validate(r)
            assert r["meta"]["tag"] == [{"system": REGION_TAG_SYSTEM, "code": "morogoro"}]


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "per_bundle"), [(10, 0), (10, -1), (-1, 100)], ids=["empty", "negative", "total"]
)
def test_resource_bundles_refuse_impossible_sizes(total: int, per_bundle: int) -> None:
    with pytest.raises(ValueError, match="per_bundle"):
        next(resource_bundles(1, total, per_bundle=per_bundle))


def test_no_resources_means_no_bundles() -> None:
    assert list(resource_bundles(1, 0)) == []


def test_a_care_window_shorter_than_a_year_is_refused() -> None:
    with pytest.raises(ValueError, match="years"):
        patient_bundle(random.Random(1), start=START, years=0)


def test_a_one_year_window_still_makes_valid_patients() -> None:
    for bundle in population(21, 40, start=date(2024, 2, 29), years=1):
        for r in resources(bundle):
            get_fhir_model_class(r["resourceType"]).model_validate(r)
        for _key, text in strings(resources(bundle)):
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}T.*", text):
                assert datetime.fromisoformat(text).date() < date(2025, 3, 1)
