"""Who may do what at central, and the trail it leaves, on both backends: bearer tokens (missing,
malformed, expired, forged), regions (a hub sees and writes only its own region's patients; the
console sees all), read-only scopes, and an AuditEvent for every interaction, in a chain that
verifies and that never holds a search's values."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from central.audit import verify
from tests.central.fhir_fixtures import (
    PATIENT_SYSTEM,
    PATIENT_VALUES,
    READ_WRITE,
    Api,
    Caller,
    encounter,
    nothing_written,
    observation,
    patient,
    refusal,
    region_tag,
)


def ids_found(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [e["resource"]["id"] for e in answer.json().get("entry", [])]


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def put_entry(resource: dict[str, Any]) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"resource": resource, "request": {"method": "PUT", "url": url}}


def morogoro_chart(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    """A patient of morogoro and an encounter of theirs, written by morogoro's hub."""
    person = api.morogoro.put("/fhir/Patient/m-1", patient("morogoro", rid="m-1", chart="m-1"))
    seen = api.morogoro.post("/fhir/Encounter", encounter("m-1", "morogoro"))
    assert (person.status_code, seen.status_code) == (201, 201)
    return person.json(), seen.json()


# -- tokens ---------------------------------------------------------------------------------------


def test_no_token_is_401_with_www_authenticate_and_writes_nothing(api: Api) -> None:
    nobody = api.central.anonymous()
    with nothing_written(api.central):
        for answer in (
            nobody.get("/fhir/Patient"),
            nobody.get("/fhir/Patient/p-1"),
            nobody.post("/fhir/Patient", patient()),
            nobody.put("/fhir/Patient/p-1", patient(rid="p-1")),
            nobody.post("/fhir", transaction(put_entry(patient(rid="p-1")))),
        ):
            assert "bearer token" in refusal(answer, 401)
            assert answer.headers["www-authenticate"].startswith("Bearer")


def malformed(api: Api) -> str:
    return "Bearer not.a.token"


def not_a_bearer_token(api: Api) -> str:
    return f"Basic {api.kilosa.token}"


def expired(api: Api) -> str:
    token = api.kilosa.token
    api.central.clock.advance(api.central.settings.token_seconds)
    return f"Bearer {token}"


def forged_with_another_secret(api: Api) -> str:
    claims = {
        "sub": "console",
        "region": "*",
        "scope": READ_WRITE,
        "exp": int(api.central.clock.now().timestamp()) + 60,
        "aud": api.central.settings.fhir_base,
    }
    return f"Bearer {jwt.encode(claims, secrets.token_bytes(32), algorithm='HS256')}"


def signed_by_the_clients_own_key(api: Api) -> str:
    """A client cannot mint its own access token with the key it signs assertions with."""
    client = api.central.clients["hub-kilosa"]
    claims = {
        "sub": "hub-kilosa",
        "region": "*",
        "scope": READ_WRITE,
        "exp": int(api.central.clock.now().timestamp()) + 60,
        "aud": api.central.settings.fhir_base,
    }
    return f"Bearer {jwt.encode(claims, client.key, algorithm='ES384')}"


BAD_TOKENS = [
    malformed,
    not_a_bearer_token,
    expired,
    forged_with_another_secret,
    signed_by_the_clients_own_key,
]


@pytest.mark.parametrize("bad", BAD_TOKENS, ids=[b.__name__ for b in BAD_TOKENS])
def test_a_bad_token_is_401_and_writes_nothing(api: Api, bad: Callable[[Api], str]) -> None:
    api.kilosa.put("/fhir/Patient/p-1", patient(rid="p-1"))
    header = bad(api)
    caller = Caller(api.central.http, None)
    with nothing_written(api.central):
        for answer in (
            api.central.http.get("/fhir/Patient/p-1", headers={"Authorization": header}),
            caller.send("PUT", "/fhir/Patient/p-1", patient(rid="p-1"), authorization=header),
        ):
            refusal(answer, 401)
            assert answer.headers["www-authenticate"].startswith("Bearer")


# -- regions --------------------------------------------------------------------------------------


def test_a_hub_cannot_read_another_regions_resources(api: Api) -> None:
    person, seen = morogoro_chart(api)
    own = api.kilosa.put("/fhir/Patient/k-1", patient(rid="k-1")).json()
    pid = person["id"]
    for path in (
        f"/fhir/Patient/{pid}",
        f"/fhir/Patient/{pid}/_history/1",
        f"/fhir/Patient/{pid}/_history",
        f"/fhir/Encounter/{seen['id']}",
    ):
        assert "another region" in refusal(api.kilosa.get(path), 403)
    assert ids_found(api.kilosa.get("/fhir/Patient")) == [own["id"]]
    assert ids_found(api.kilosa.get(f"/fhir/Patient?_id={pid}")) == []
    assert ids_found(api.kilosa.get(f"/fhir/Patient?identifier={PATIENT_SYSTEM}|m-1")) == []
    assert ids_found(api.kilosa.get(f"/fhir/Encounter?patient={pid}")) == []
    assert ids_found(api.kilosa.get(f"/fhir/Encounter?subject=Patient/{pid}")) == []
    for path in ("/fhir/_history", "/fhir/Patient/_history", "/fhir/Encounter/_history"):
        history = api.kilosa.get(path).json().get("entry", [])
        assert all(pid not in e["fullUrl"] and seen["id"] not in e["fullUrl"] for e in history)
    assert ids_found(api.morogoro.get(f"/fhir/Encounter?patient={pid}")) == [seen["id"]]


def test_a_hub_cannot_write_another_regions_resources(api: Api) -> None:
    person, seen = morogoro_chart(api)
    pid = person["id"]
    retagged = person | {"meta": region_tag("kilosa"), "gender": "male"}
    with nothing_written(api.central):
        for answer in (
            api.kilosa.put(f"/fhir/Patient/{pid}", person | {"gender": "male"}),
            api.kilosa.put(f"/fhir/Patient/{pid}", retagged),
            api.kilosa.delete(f"/fhir/Patient/{pid}"),
            api.kilosa.delete(f"/fhir/Encounter/{seen['id']}"),
            api.kilosa.post("/fhir", transaction(put_entry(retagged))),
            api.kilosa.post("/fhir/Patient", patient("morogoro")),
        ):
            assert "region" in refusal(answer, 403)
    assert api.morogoro.get(f"/fhir/Patient/{pid}").json() == person


def test_a_conditional_update_does_not_reach_into_another_region(api: Api) -> None:
    person, _ = morogoro_chart(api)
    answer = api.kilosa.put(f"/fhir/Patient?identifier={PATIENT_SYSTEM}|m-1", patient(chart="m-1"))
    assert answer.status_code == 201
    assert answer.json()["id"] != person["id"]
    assert api.morogoro.get(f"/fhir/Patient/{person['id']}").json() == person


def test_an_observation_in_kilosa_about_a_morogoro_patient_is_403(api: Api) -> None:
    person, _ = morogoro_chart(api)
    untagged = observation(f"Patient/{person['id']}")
    del untagged["meta"]
    with nothing_written(api.central):
        for answer in (
            api.kilosa.post("/fhir/Observation", observation(f"Patient/{person['id']}")),
            api.kilosa.post("/fhir/Observation", untagged),
            api.kilosa.post(
                "/fhir",
                transaction(put_entry(observation(f"Patient/{person['id']}") | {"id": "o1"})),
            ),
        ):
            assert "region" in refusal(answer, 403)


def test_a_read_only_token_reads_but_cannot_write(api: Api) -> None:
    made = api.kilosa.put("/fhir/Patient/p-1", patient(rid="p-1")).json()
    reader = api.central.caller("hub-kilosa", "system/*.read")
    assert reader.get("/fhir/Patient/p-1").json() == made
    with nothing_written(api.central):
        for answer in (
            reader.post("/fhir/Patient", patient()),
            reader.put("/fhir/Patient/p-1", made | {"gender": "male"}),
            reader.put(f"/fhir/Patient?identifier={PATIENT_SYSTEM}|new", patient(chart="new")),
            reader.delete("/fhir/Patient/p-1"),
            reader.post("/fhir", transaction(put_entry(patient(rid="p-2")))),
        ):
            assert "scopes do not allow write" in refusal(answer, 403)


def test_the_console_sees_every_region(api: Api) -> None:
    person, seen = morogoro_chart(api)
    own = api.kilosa.put("/fhir/Patient/k-1", patient(rid="k-1")).json()
    assert sorted(ids_found(api.console.get("/fhir/Patient"))) == sorted([own["id"], person["id"]])
    assert api.console.get(f"/fhir/Patient/{person['id']}").json() == person
    assert api.console.get("/fhir/Patient/k-1").json() == own
    assert ids_found(api.console.get(f"/fhir/Encounter?patient={person['id']}")) == [seen["id"]]
    history = api.console.get("/fhir/_history").json()["entry"]
    assert len(history) == 3


# -- the audit trail ------------------------------------------------------------------------------


def events(api: Api) -> list[dict[str, Any]]:
    return [json.loads(text) for text in api.central.audit_events()]


def audited(
    api: Api, call: Callable[[], httpx.Response], interaction: str, action: str, *, count: int = 1
) -> httpx.Response:
    """Do ``call``; check that it appended ``count`` AuditEvents of ``interaction`` by the
    kilosa hub."""
    before = api.central.audit_rows()
    answer = call()
    assert answer.status_code < 400, answer.text
    assert api.central.audit_rows() == before + count, interaction
    for event in events(api)[-count:]:
        assert event["subtype"][0]["code"] == interaction
        assert event["action"] == action, interaction
        assert event["outcome"] == "0"
        assert event["agent"][0]["who"]["identifier"]["value"] == "hub-kilosa"
    return answer


def test_every_interaction_appends_an_audit_event_to_a_chain_that_verifies(api: Api) -> None:
    k = api.kilosa
    chart = str(uuid.uuid4())
    made = audited(api, lambda: k.post("/fhir/Patient", patient(chart=chart)), "create", "C")
    pid = made.json()["id"]
    changed = made.json() | {"gender": "other"}
    unchanged = patient(chart=chart) | {"id": pid}
    audited(api, lambda: k.get(f"/fhir/Patient/{pid}"), "read", "R")
    audited(api, lambda: k.get(f"/fhir/Patient/{pid}/_history/1"), "vread", "R")
    audited(api, lambda: k.get("/fhir/Patient?gender=female"), "search-type", "E")
    audited(api, lambda: k.put(f"/fhir/Patient/{pid}", changed), "update", "U")
    audited(api, lambda: k.put(f"/fhir/Patient/{pid}", changed), "update", "U")
    matched = audited(
        api,
        lambda: k.post(
            "/fhir/Patient", unchanged, if_none_exist=f"identifier={PATIENT_SYSTEM}|{chart}"
        ),
        "create",
        "R",  # it created nothing: it read the match and answered with it
    )
    assert matched.status_code == 200
    conditional = f"/fhir/Patient?identifier={PATIENT_SYSTEM}|{chart}"
    audited(api, lambda: k.put(conditional, unchanged), "update", "U")
    audited(api, lambda: k.get(f"/fhir/Patient/{pid}/_history"), "history-instance", "E")
    audited(api, lambda: k.get("/fhir/Patient/_history"), "history-type", "E")
    audited(api, lambda: k.get("/fhir/_history"), "history-system", "E")
    bundle = transaction(put_entry(encounter(pid) | {"id": "visit-1"}))
    audited(api, lambda: k.post("/fhir", bundle), "transaction", "E")
    batch = {**bundle, "type": "batch", "entry": [*bundle["entry"], *bundle["entry"]]}
    audited(api, lambda: k.post("/fhir", batch), "update", "U", count=2)
    audited(api, lambda: k.delete("/fhir/Encounter/visit-1"), "delete", "D")
    trail = events(api)
    # A search names what it found, not a patient it was about; a delete's event names the
    # deleted resource only (its content is gone from the stored version it records).
    about = [e for e in trail if e["subtype"][0]["code"] not in ("search-type", "delete")]
    assert len(about) == len(trail) - 2
    assert {x["what"]["reference"] for x in trail[-1]["entity"]} == {"Encounter/visit-1"}
    for event in about:
        assert f"Patient/{pid}" in {x["what"]["reference"] for x in event["entity"] if "what" in x}
    report = verify(api.central.database)
    assert report.intact
    assert report.entries == len(trail) == api.central.audit_rows()
    assert chart not in str(api.central.audit_events())


def test_a_transactions_audit_event_names_what_it_read_too(api: Api) -> None:
    api.kilosa.put("/fhir/Patient/read-1", patient(rid="read-1"))
    api.kilosa.put("/fhir/Patient/written-1", patient(rid="written-1"))
    bundle = transaction(
        {"request": {"method": "GET", "url": "Patient/read-1"}},
        put_entry(encounter("written-1") | {"id": "visit-1"}),
    )
    audited(api, lambda: api.kilosa.post("/fhir", bundle), "transaction", "E")
    named = {x["what"]["reference"] for x in events(api)[-1]["entity"] if "what" in x}
    assert named >= {"Patient/read-1", "Encounter/visit-1", "Patient/written-1"}


def test_the_audit_trail_never_holds_what_was_searched_for(api: Api) -> None:
    person = api.kilosa.put("/fhir/Patient/p-1", patient(rid="p-1")).json()
    family, given = "Mwakasege", "Zawadi"
    phone, born = "+255754000111", "1994-06-11"
    searches = [
        f"/fhir/Patient?name={family}",
        f"/fhir/Patient?family={family}&given={given}",
        f"/fhir/Patient?phone={phone.replace('+', '%2B')}&birthdate={born}",
    ]
    for path in searches:
        assert ids_found(api.kilosa.get(path)) == [person["id"]]
    form = f"name={family}&birthdate={born}"
    answer = api.kilosa.http.post(
        "/fhir/Patient/_search",
        content=form,
        headers=api.kilosa.headers({"Content-Type": "application/x-www-form-urlencoded"}),
    )
    assert ids_found(answer) == [person["id"]]
    trail = api.central.audit_events()
    assert len(trail) == 5  # the write and the four searches
    for value in PATIENT_VALUES:
        assert not [text for text in trail if value in text]
    searched = [e for e in events(api) if e["subtype"][0]["code"] == "search-type"]
    described = [x["description"] for e in searched for x in e["entity"] if "description" in x]
    assert described == [
        "search parameters (names only): name",
        "search parameters (names only): family, given",
        "search parameters (names only): birthdate, phone",
        "search parameters (names only): birthdate, name",
    ]
