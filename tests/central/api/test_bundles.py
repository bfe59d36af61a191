"""Transaction and batch bundles at ``POST /fhir`` on both backends: ``urn:uuid`` full URLs and
conditional references resolved, ``ifNoneExist``, answers in request order, atomicity (a bad
entry anywhere writes nothing), the hub's repeated push, batches, and the size limit."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.central.fhir_fixtures import (
    PATIENT_SYSTEM,
    Api,
    Caller,
    Central,
    encounter,
    nothing_written,
    observation,
    patient,
    practitioner,
    refusal,
)

PRACTITIONER_SYSTEM = "urn:rural-care:practitioner"
Bundle = dict[str, Any]


def bundle(entries: list[dict[str, Any]], kind: str = "transaction") -> Bundle:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post(resource: dict[str, Any], full_url: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url is not None:
        entry["fullUrl"] = full_url
    return entry


def put(resource: dict[str, Any], **request: str) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"resource": resource, "request": {"method": "PUT", "url": url, **request}}


def get(url: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": url}}


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def answered(caller: Caller, sent: Bundle, kind: str = "transaction-response") -> list[Any]:
    """The response entries of a bundle that succeeded as a whole."""
    answer = caller.post("/fhir", sent)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert (found["resourceType"], found["type"]) == ("Bundle", kind)
    assert len(found["entry"]) == len(sent["entry"])
    entries: list[Any] = found["entry"]
    return entries


def location(entry: dict[str, Any]) -> tuple[str, str]:
    """(type, id) of a response entry's location ``Type/id/_history/v``."""
    kind, rid, *_ = entry["response"]["location"].split("/")
    return kind, rid


def stored(caller: Caller, kind: str, rid: str) -> dict[str, Any]:
    answer = caller.get(f"/fhir/{kind}/{rid}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def count(central: Central, kind: str) -> int:
    with central.database.read() as session:
        rows = session.execute(
            "SELECT COUNT(*) FROM resources WHERE rtype = ? AND deleted = 0", (kind,)
        )
    return int(rows[0][0])


# -- transactions ---------------------------------------------------------------------------------


def test_urn_uuid_full_urls_become_server_ids_in_every_reference(api: Api) -> None:
    patient_url, encounter_url = urn(), urn()
    sent = bundle(
        [
            # The encounter comes before the patient it refers to: order carries no meaning.
            post(encounter("placeholder") | {"subject": {"reference": patient_url}}, encounter_url),
            post(patient(chart="t-1"), patient_url),
            post(observation(patient_url, encounter={"reference": encounter_url})),
        ]
    )
    entries = answered(api.kilosa, sent)
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * 3
    assert [location(e)[0] for e in entries] == ["Encounter", "Patient", "Observation"]
    for entry in entries:
        assert entry["response"]["location"].endswith("/_history/1")
        assert entry["response"]["etag"] == 'W/"1"'
        assert entry["response"]["lastModified"]
    (_, eid), (_, pid), (_, oid) = (location(e) for e in entries)
    assert stored(api.kilosa, "Encounter", eid)["subject"] == {"reference": f"Patient/{pid}"}
    made = stored(api.kilosa, "Observation", oid)
    assert made["subject"] == {"reference": f"Patient/{pid}"}
    assert made["encounter"] == {"reference": f"Encounter/{eid}"}
    assert "urn:uuid" not in str(made)
    found = api.kilosa.get(f"/fhir/Observation?patient={pid}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [oid]


def test_answers_come_in_request_order_whatever_order_they_are_done_in(api: Api) -> None:
    api.kilosa.put("/fhir/Patient/kept", patient(rid="kept"))
    api.kilosa.put("/fhir/Patient/gone", patient(rid="gone"))
    sent = bundle(
        [
            get("Patient/kept"),
            put(patient(rid="fresh")),
            {"request": {"method": "DELETE", "url": "Patient/gone"}},
            post(observation("Patient/fresh")),
        ]
    )
    entries = answered(api.kilosa, sent)
    statuses = [e["response"]["status"] for e in entries]
    assert statuses == ["200 OK", "201 Created", "204 No Content", "201 Created"]
    assert entries[0]["resource"]["id"] == "kept"
    assert entries[0]["resource"]["meta"] == stored(api.kilosa, "Patient", "kept")["meta"]
    assert entries[0]["response"]["etag"] == 'W/"1"'
    assert location(entries[1]) == ("Patient", "fresh")
    assert location(entries[3])[0] == "Observation"
    refusal(api.kilosa.get("/fhir/Patient/gone"), 410)


def test_if_none_exist_reuses_a_stored_match_and_creates_a_missing_one(api: Api) -> None:
    existing = api.kilosa.post("/fhir/Practitioner", practitioner("p-1")).json()
    subject = api.kilosa.post("/fhir/Patient", patient()).json()["id"]
    known, unknown = urn(), urn()
    seen = encounter(
        subject,
        participant=[
            {"individual": {"reference": known}},
            {"individual": {"reference": unknown}},
        ],
    )
    sent = bundle(
        [
            post(practitioner("p-1"), known, ifNoneExist=f"identifier={PRACTITIONER_SYSTEM}|p-1"),
            post(practitioner("p-2"), unknown, ifNoneExist=f"identifier={PRACTITIONER_SYSTEM}|p-2"),
            post(seen),
        ]
    )
    entries = answered(api.kilosa, sent)
    assert [e["response"]["status"] for e in entries] == ["200 OK", "201 Created", "201 Created"]
    assert location(entries[0]) == ("Practitioner", existing["id"])
    new_id = location(entries[1])[1]
    made = stored(api.kilosa, "Encounter", location(entries[2])[1])
    assert [p["individual"]["reference"] for p in made["participant"]] == [
        f"Practitioner/{existing['id']}",
        f"Practitioner/{new_id}",
    ]
    assert count(api.central, "Practitioner") == 2
    # The same bundle again creates no third practitioner.
    again = answered(api.kilosa, bundle(sent["entry"][:2]))
    assert [location(e)[1] for e in again] == [existing["id"], new_id]
    assert count(api.central, "Practitioner") == 2


def test_a_conditional_reference_resolves_to_the_one_match(api: Api) -> None:
    nurse = api.kilosa.post("/fhir/Practitioner", practitioner("p-7")).json()
    subject = api.kilosa.post("/fhir/Patient", patient()).json()["id"]
    query = f"Practitioner?identifier={PRACTITIONER_SYSTEM}|p-7"
    seen = encounter(subject, participant=[{"individual": {"reference": query}}])
    entries = answered(api.kilosa, bundle([post(seen)]))
    made = stored(api.kilosa, "Encounter", location(entries[0])[1])
    assert made["participant"] == [{"individual": {"reference": f"Practitioner/{nurse['id']}"}}]


def test_the_hubs_push_repeated_changes_nothing(api: Api) -> None:
    """The hub's bundles are PUTs at fixed IDs with no fullUrl (docs/fhir.md)."""
    chart = str(uuid.uuid4())
    resources = [
        patient(rid=chart, chart=chart),
        encounter(chart) | {"id": "visit-1"},
        observation(f"Patient/{chart}", encounter={"reference": "Encounter/visit-1"})
        | {"id": "temp-1"},
    ]
    first = answered(api.kilosa, bundle([put(dict(r)) for r in resources]))
    assert [e["response"]["status"] for e in first] == ["201 Created"] * 3
    api.central.clock.advance(120)
    with nothing_written(api.central):
        again = answered(api.kilosa, bundle([put(dict(r)) for r in resources]))
    assert [e["response"]["status"] for e in again] == ["200 OK"] * 3
    assert [e["response"]["etag"] for e in again] == ['W/"1"'] * 3
    assert [e["response"]["lastModified"] for e in again] == [
        e["response"]["lastModified"] for e in first
    ]


# -- transactions that write nothing --------------------------------------------------------------


def one_bad_entry_among_fifty(api: Api) -> Bundle:
    chart = urn()
    entries = [post(patient(), chart)]
    entries += [post(observation(chart)) for _ in range(49)]
    entries[37]["resource"]["status"] = "Zawadi"
    return bundle(entries)


def a_reference_to_nothing(api: Api) -> Bundle:
    return bundle([post(patient()), post(observation("Patient/no-such-patient"))])


def a_full_url_no_entry_has(api: Api) -> Bundle:
    return bundle([post(patient(), urn()), post(observation(urn()))])


def the_same_resource_twice(api: Api) -> Bundle:
    return bundle([put(patient(rid="twice")), put(patient(rid="twice", given="Rehema"))])


def the_same_resource_deleted_twice(api: Api) -> Bundle:
    api.kilosa.put("/fhir/Patient/deleted", patient(rid="deleted"))
    delete = {"request": {"method": "DELETE", "url": "Patient/deleted"}}
    return bundle([delete, dict(delete)])


def two_entries_with_one_full_url(api: Api) -> Bundle:
    shared = urn()
    return bundle([post(patient(), shared), post(patient(), shared), post(observation(shared))])


def a_conditional_reference_to_nothing(api: Api) -> Bundle:
    seen = encounter("x", participant=[{"individual": {"reference": "Practitioner?name=Zawadi"}}])
    return bundle([post(patient(rid="x")), post(seen)])


def an_if_match_on_another_version(api: Api) -> Bundle:
    api.kilosa.put("/fhir/Patient/stale", patient(rid="stale"))
    api.kilosa.put("/fhir/Patient/stale", patient(rid="stale", given="Rehema"))
    return bundle([post(patient()), put(patient(rid="stale"), ifMatch='W/"1"')])


BROKEN: list[tuple[Callable[[Api], Bundle], int, str]] = [
    (one_bad_entry_among_fifty, 400, "entry 37: Observation.status"),
    (a_reference_to_nothing, 400, "Patient"),
    (a_full_url_no_entry_has, 400, "entry 1"),
    (the_same_resource_twice, 400, "twice"),
    (the_same_resource_deleted_twice, 400, "twice"),
    (two_entries_with_one_full_url, 400, "entry 1: another entry has the same fullUrl"),
    (a_conditional_reference_to_nothing, 400, "entry 1"),
    (an_if_match_on_another_version, 412, "version"),
]


@pytest.mark.parametrize(("broken", "status", "said"), BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_a_transaction_with_one_bad_entry_writes_nothing(
    api: Api, broken: Callable[[Api], Bundle], status: int, said: str
) -> None:
    sent = broken(api)
    with nothing_written(api.central):
        text = refusal(api.kilosa.post("/fhir", sent), status)
    assert said in text


# -- batches and size -----------------------------------------------------------------------------


def test_a_batch_does_each_entry_on_its_own(api: Api) -> None:
    api.kilosa.put("/fhir/Patient/there", patient(rid="there"))
    sent = bundle(
        [
            put(patient(rid="b-1")),
            post(observation("Patient/no-such-patient")),
            post(patient() | {"gender": "Zawadi"}),
            get("Patient/there"),
            get("Patient/not-there"),
            post(observation("Patient/b-1")),
        ],
        kind="batch",
    )
    before = api.central.rows()
    entries = answered(api.kilosa, sent, "batch-response")
    statuses = [e["response"]["status"][:3] for e in entries]
    assert statuses == ["201", "400", "400", "200", "404", "201"]
    for failed in (entries[1], entries[2], entries[4]):
        issue = failed["response"]["outcome"]["issue"][0]
        assert issue["severity"] == "error"
        assert issue["diagnostics"]
        assert "Zawadi" not in str(failed)
    assert "entry 2: Patient.gender" in entries[2]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert entries[3]["resource"]["id"] == "there"
    after = api.central.rows()
    # The two entries that succeeded wrote; the three that failed wrote nothing.
    assert (after["resources"], after["history"]) == (
        before["resources"] + 2,
        before["history"] + 2,
    )
    assert stored(api.kilosa, "Patient", "b-1")["id"] == "b-1"


def test_a_bundle_larger_than_the_limit_is_413_and_writes_nothing(api: Api) -> None:
    # A second central on the same database, with a lower limit. Not entered as a context:
    # its shutdown would close the database, which the ``api`` fixture owns.
    small = Central(api.central.database, max_bundle_entries=10)
    small.register("hub-kilosa-small", "kilosa")
    hub = small.caller("hub-kilosa-small")
    at_limit = bundle([put(patient(rid=f"p-{n}")) for n in range(10)])
    assert len(answered(hub, at_limit)) == 10
    with nothing_written(small):
        for kind in ("transaction", "batch"):
            over = bundle([put(patient(rid=f"q-{n}")) for n in range(11)], kind)
            assert "at most 10" in refusal(hub.post("/fhir", over), 413)
    assert api.kilosa.get("/fhir/Patient/p-9").status_code == 200


def test_a_bundle_that_is_neither_transaction_nor_batch_is_refused(api: Api) -> None:
    with nothing_written(api.central):
        for kind in ("collection", "document", "searchset"):
            text = refusal(api.kilosa.post("/fhir", bundle([post(patient())], kind)), 400)
            assert "transaction or a batch" in text
        refusal(api.kilosa.post("/fhir", patient()), 400)


def test_if_none_exist_in_a_transaction_matching_two_is_412(api: Api) -> None:
    for _ in range(2):
        api.kilosa.post("/fhir/Patient", patient(chart="same"))
    sent = bundle([post(patient(chart="same"), ifNoneExist=f"identifier={PATIENT_SYSTEM}|same")])
    with nothing_written(api.central):
        assert "entry 0" in refusal(api.kilosa.post("/fhir", sent), 412)
