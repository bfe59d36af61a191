"""Tablet -> hub -> central, and clinician advice central -> hub -> tablet, every process real.

Central is ``python -m central serve`` on SQLite and on PostgreSQL (every test runs on both);
the hub is ``python -m sync_hub serve`` pushing to it and fetching from it every second;
tablets are real encrypted stores syncing with the hub over HTTP; the clinician console is a
client of central (region ``*``) with tokens from ``python -m central token``. The processes of one backend serve every test
of this module (a test that stops central starts it again); each test works on patients and
tablets of its own, so no test depends on another.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from care_record import Chart
from field_app.forms import FormLibrary
from field_app.visits import record_form_visit
from sync_hub import outbox
from sync_hub.devices import stamp
from tests.integration.central_fixtures import (
    ALL_REGIONS,
    BACKENDS,
    MESSAGE_CATEGORY,
    CentralProcess,
    SmartClient,
    central_database,
    eventually,
    hub_store,
    wire_hub,
)
from tests.integration.conftest import HubProcess, Tablet, World

REGION = "kilosa"
VILLAGE = "Kilosa"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
REGION_TAG = "urn:rural-care:region"
# What a patient's chart becomes at central besides the Patient, each searched by patient.
CHART_TYPES = (
    "Encounter",
    "Observation",
    "QuestionnaireResponse",
    "ServiceRequest",
    "Condition",
    "Task",
    "CommunicationRequest",
    "Communication",
)
DOCTOR = "Dr. Mwakasege"


# -- the processes of one backend -------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def central(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CentralProcess]:
    folder = tmp_path_factory.mktemp(f"central-{request.param}")
    with central_database(request.param, folder) as url:
        process = CentralProcess(folder, url)
        process.start()
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture(scope="module")
def console(central: CentralProcess) -> Iterator[SmartClient]:
    """The clinician console: a client of every region."""
    client = SmartClient.registered(central, "console", ALL_REGIONS)
    yield client
    client.close()


@pytest.fixture(scope="module")
def kilosa(
    central: CentralProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubProcess]:
    """The hub of region kilosa, wired to central."""
    hub = HubProcess(tmp_path_factory.mktemp("hub-kilosa"))
    wire_hub(hub, central, region=REGION, client_id="hub-kilosa")
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def world(kilosa: HubProcess, tmp_path: Path) -> Iterator[World]:
    made = World(kilosa, tmp_path)
    try:
        yield made
    finally:
        made.close()


# -- what the tablets do ----------------------------------------------------------------------------


def anc_answers(today: date) -> dict[str, object]:
    """An antenatal contact at 26 weeks with severe headache, blurred vision and 148/96: danger
    signs of WHO's ANC.DT.01, so an emergency referral (as in ``make demo``)."""
    lmp = today - timedelta(weeks=26, days=2)
    return {
        "contact_number": 2,
        "lmp": lmp.isoformat(),
        "has_danger_sign": True,
        "danger_signs": ["severe_headache", "visual_disturbance"],
        "central_cyanosis": False,
        "bp_taken": True,
        "systolic": 148,
        "diastolic": 96,
        "fetal_movement": True,
        "ifa_daily": True,
        "td_status": "this_pregnancy",
        "itn_last_night": True,
        "birth_plan": False,
    }


def pregnant_patient(tablet: Tablet) -> str:
    chart_id = tablet.new_patient(VILLAGE, language="sw")
    tablet.edit(chart_id, lambda c: c.set_pregnancy_status("pregnant"))
    return chart_id


def anc_visit(tablet: Tablet, chart_id: str) -> str:
    """The antenatal contact recorded through the form engine, as the CLI's ``visit record
    --form anc_contact --answers FILE`` does; returns the encounter's ID."""
    library = FormLibrary(tablet.settings.forms_dir)
    today = datetime.now(UTC).date()
    visit = record_form_visit(tablet.session, library, chart_id, "anc_contact", anc_answers(today))
    tablet.ledger.add(chart_id, visit.encounter_id)
    return visit.encounter_id


# -- what central holds -------------------------------------------------------------------------------


def at_central(console: SmartClient, chart_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every resource of the patient's compartment at central, by type, sorted by ID."""
    found = {"Patient": [console.read(f"Patient/{chart_id}")]}
    for kind in CHART_TYPES:
        found[kind] = sorted(console.search(kind, patient=chart_id), key=lambda r: r["id"])
    return found


def ids(resources: list[dict[str, Any]]) -> list[str]:
    return sorted(r["id"] for r in resources)


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def version(resource: dict[str, Any]) -> str:
    return str(resource["meta"]["versionId"])


def encounters_at_central(console: SmartClient, chart_id: str, count: int) -> list[str] | None:
    found = ids(console.search("Encounter", patient=chart_id))
    return found if len(found) >= count else None


def read_when(
    console: SmartClient, reference: str, wanted: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The resource at central once it is as ``wanted``."""
    return eventually(
        lambda: found if wanted(found := console.read(reference)) else None,
        what=f"{reference.split('/', maxsplit=1)[0]} as expected at central",
    )


def codings(concept: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c.get("system", ""), c["code"]) for c in concept.get("coding", [])]


def phone_of(patient: dict[str, Any]) -> str:
    return str(next(t["value"] for t in patient["telecom"] if t["system"] == "phone"))


def advice(
    chart_id: str, text: str, *, category: str = "advice", based_on: str = ""
) -> dict[str, Any]:
    """A clinician's Communication as the console writes it."""
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": MESSAGE_CATEGORY, "code": category}]}],
        "subject": {"reference": f"Patient/{chart_id}"},
        "sent": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "sender": {"display": DOCTOR},
        "payload": [{"contentString": text}],
    }
    if based_on:
        resource["basedOn"] = [{"reference": based_on}]
    return resource


# -- 1. the round trip ----------------------------------------------------------------------------------


def test_a_visit_with_danger_signs_reaches_central_as_valid_r4_whose_references_resolve(
    world: World, console: SmartClient
) -> None:
    tablet = world.tablet("amina", VILLAGE)
    chart_id = pregnant_patient(tablet)
    encounter_id = anc_visit(tablet, chart_id)
    tablet.sync()

    assert eventually(
        lambda: encounters_at_central(console, chart_id, 1), what="the encounter at central"
    ) == [encounter_id]
    found = at_central(console, chart_id)
    view = tablet.view(chart_id)
    encounter = view.collections["encounters"][encounter_id]
    [referral] = view.records("referrals")
    tasks = view.records("tasks")
    reminders = [r for t in tasks for r in t.get("reminders", {})]

    observations = {codings(o["code"])[0]: o for o in found["Observation"]}
    expected_codes = {(LOINC, o["code"]) for o in encounter["observations"].values()}
    assert expected_codes | {(LOINC, "82810-3")} == set(observations)  # and pregnancy status
    systolic = observations[(LOINC, "8480-6")]["valueQuantity"]
    assert systolic == {"value": 148, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}
    for observation in found["Observation"]:
        if "valueQuantity" in observation:
            assert observation["valueQuantity"]["system"] == UCUM
    assert ids(found["QuestionnaireResponse"]) == [encounter_id]
    [response] = found["QuestionnaireResponse"]
    assert response["questionnaire"] == "urn:rural-care:form:anc_contact"
    assert referral["urgency"] == "emergency"
    [request] = found["ServiceRequest"]
    assert (request["id"], request["priority"]) == (referral["id"], "stat")
    assert ids(found["Condition"]) == [referral["id"]]
    assert ids(found["Task"]) == sorted(t["id"] for t in tasks)
    assert ids(found["CommunicationRequest"]) == sorted(reminders)
    assert reminders, "the next contact has an SMS reminder"
    assert found["Communication"] == []

    for kind, resources in found.items():
        for resource in resources:
            get_fhir_model_class(kind).model_validate(resource)
            assert {"system": REGION_TAG, "code": REGION} in resource["meta"]["tag"]
            for reference in references(resource):
                assert console.read(reference)["id"] == reference.split("/")[1]


def test_an_edit_makes_a_new_version_and_a_push_of_the_same_chart_makes_none(
    world: World, console: SmartClient, kilosa: HubProcess
) -> None:
    tablet = world.tablet("amina", VILLAGE)
    chart_id = pregnant_patient(tablet)
    anc_visit(tablet, chart_id)
    tablet.sync()
    eventually(lambda: encounters_at_central(console, chart_id, 1), what="the visit at central")

    tablet.set_phone(chart_id, "+255700111222")
    tablet.sync()
    patient = read_when(console, f"Patient/{chart_id}", lambda p: version(p) == "2")
    assert phone_of(patient) == "+255700111222"
    before = at_central(console, chart_id)
    assert {version(r) for kind, rs in before.items() if kind != "Patient" for r in rs} == {"1"}

    queued_at = queue_again(kilosa, chart_id)
    wait_delivered(kilosa, chart_id)
    with hub_store(kilosa).read() as db:
        last_push = outbox.status(db).last_push_at
    assert last_push is not None
    assert last_push >= queued_at
    assert at_central(console, chart_id) == before
    assert [version(p) for p in console.history(f"Patient/{chart_id}")] == ["2", "1"]
    for encounter in before["Encounter"]:
        assert len(console.history(f"Encounter/{encounter['id']}")) == 1


def queue_again(hub: HubProcess, chart_id: str) -> str:
    """Queue an unchanged chart at the hub again, for its push loop to send; returns the
    hub's stamp of that moment."""
    now = stamp(datetime.now(UTC))
    with hub_store(hub).write() as db:
        outbox.queue(db, chart_id, at=now)
    return now


def wait_delivered(hub: HubProcess, chart_id: str) -> None:
    """Wait until central has acknowledged the chart's push: a chart leaves the hub's queue
    only when central took it, or into quarantine, which is checked to hold nothing of it."""
    eventually(
        lambda: not hub.query("SELECT 1 FROM fhir_outbox WHERE doc = ?", [chart_id]),
        what="the push acknowledged",
    )
    assert not hub.query("SELECT 1 FROM fhir_quarantine WHERE doc = ?", [chart_id])


# -- 2. two tablets, one patient, offline --------------------------------------------------------------


def test_two_tablets_editing_one_patient_offline_both_reach_central_as_the_merged_chart(
    world: World, console: SmartClient, kilosa: HubProcess
) -> None:
    one, two = world.tablet("amina", VILLAGE), world.tablet("baraka", VILLAGE)
    chart_id = one.new_patient(VILLAGE, phone="+255713111222")
    one.sync()
    two.sync()
    assert chart_id in two.chart_ids()

    first = one.visit(chart_id, systolic=152)
    one.set_phone(chart_id, "+255713999000")
    second = two.visit(chart_id, systolic=118)
    two.set_phone(chart_id, "+255784555666")
    world.sync_all()
    world.assert_converged()

    merged = kilosa.chart(chart_id).view()
    assert [c.path for c in merged.conflicts] == ["phone"]
    assert eventually(
        lambda: encounters_at_central(console, chart_id, 2), what="both visits at central"
    ) == sorted([first, second])
    patient = read_when(
        console, f"Patient/{chart_id}", lambda p: phone_of(p) == merged.demographics["phone"]
    )
    assert phone_of(patient) in ("+255713999000", "+255784555666")
    assert phone_of(patient) == one.view(chart_id).demographics["phone"]
    assert phone_of(patient) == two.view(chart_id).demographics["phone"]


# -- 3. advice and a referral answer, central -> hub -> tablet ---------------------------------------


def test_a_clinicians_advice_and_referral_answer_reach_the_tablet_and_stay_as_written(
    world: World, console: SmartClient, kilosa: HubProcess
) -> None:
    tablet = world.tablet("amina", VILLAGE)
    chart_id = pregnant_patient(tablet)
    anc_visit(tablet, chart_id)
    [referral] = tablet.view(chart_id).records("referrals")
    tablet.sync()
    eventually(lambda: encounters_at_central(console, chart_id, 1), what="the visit at central")

    text = "Give her the first dose of MgSO4 now and call for transport to Kilosa hospital."
    written = console.create(advice(chart_id, text))
    answer = console.create(
        advice(
            chart_id,
            "Accepted: the ward expects her this afternoon.",
            category="referral-answer",
            based_on=f"ServiceRequest/{referral['id']}",
        )
    )
    eventually(
        lambda: {written["id"], answer["id"]} <= set(hub_messages(kilosa, chart_id)) or None,
        what="the hub fetched both",
    )
    tablet.sync()

    shown = tablet.cli("patient", "show", chart_id, "--json")
    assert shown.code == 0, shown.err
    chart = json.loads(shown.out)
    messages = {m["id"]: m for m in chart["messages"]}
    assert messages[written["id"]]["direction"] == "to_chw"
    assert messages[written["id"]]["text"] == text
    assert messages[written["id"]]["author"] == DOCTOR
    assert messages[answer["id"]]["direction"] == "to_chw"
    [accepted] = chart["referrals"]
    assert (accepted["id"], accepted["status"]) == (referral["id"], "accepted")

    # The hub pushed the chart it changed; what the clinician wrote stays as written.
    wait_delivered(kilosa, chart_id)
    assert console.read(f"ServiceRequest/{referral['id']}")["status"] == "active"
    for resource in (written, answer):
        held = console.read(f"Communication/{resource['id']}")
        assert version(held) == "1"
        assert held == resource
        assert len(console.history(f"Communication/{resource['id']}")) == 1


def hub_messages(hub: HubProcess, chart_id: str) -> dict[str, Any]:
    return dict(hub.chart(chart_id).view().collections.get("messages", {}))


# -- 4. another region -----------------------------------------------------------------------------------


def test_a_hub_of_another_region_can_neither_read_nor_overwrite_a_patient(
    world: World,
    console: SmartClient,
    central: CentralProcess,
    tmp_path: Path,
) -> None:
    tablet = world.tablet("amina", VILLAGE)
    chart_id = pregnant_patient(tablet)
    anc_visit(tablet, chart_id)
    tablet.sync()
    eventually(lambda: encounters_at_central(console, chart_id, 1), what="the visit at central")
    before = at_central(console, chart_id)

    # Mikumi's hub is registered for mikumi, but tags what it pushes as kilosa's.
    mikumi = HubProcess(tmp_path / "hub-mikumi")
    wire_hub(mikumi, central, region=REGION, client_id="hub-mikumi", registered_region="mikumi")
    mikumi.start()
    try:
        as_mikumi = SmartClient(central, "hub-mikumi")
        try:
            answer = as_mikumi.get(f"Patient/{chart_id}")
            assert answer.status_code == 403
            assert answer.json()["resourceType"] == "OperationOutcome"
            assert as_mikumi.search("Encounter", patient=chart_id) == []
        finally:
            as_mikumi.close()

        other = World(mikumi, tmp_path / "mikumi")
        try:
            there = other.tablet("juma", f"{VILLAGE},Mikumi")
            copy = Chart.load(
                tablet.store.get_chart(chart_id).save(),
                author=there.store.author,
                clock=there.clock,
            )
            copy.update_demographics({"phone": "+255799000111"})
            there.store.put_chart(copy)
            newcomer = there.new_patient("Mikumi")
            there.visit(newcomer)
            there.sync()
            status = eventually(
                lambda: quarantined_status(mikumi, {chart_id, newcomer}),
                what="both charts quarantined at mikumi's hub",
            )
        finally:
            other.close()
    finally:
        mikumi.stop()
    assert "pending: 0 charts" in status
    assert "last push: never" in status
    assert "quarantined: 2 charts" in status
    assert at_central(console, chart_id) == before
    assert console.get(f"Patient/{newcomer}").status_code == 404
    assert console.search("Encounter", patient=newcomer) == []


def quarantined_status(hub: HubProcess, charts: set[str]) -> str | None:
    """``python -m sync_hub fhir-status`` once it shows every chart of ``charts`` refused by
    central as out of region."""
    shown = hub.ok("fhir-status")
    lines = [line for line in shown.splitlines() if line.startswith("  ")]
    held = {line.split()[0]: line for line in lines}
    if not charts <= set(held):
        return None
    for chart_id in charts:
        assert " 403 " in held[chart_id]
        assert "another region" in held[chart_id]
    return shown


# -- 5. central down ----------------------------------------------------------------------------------


def test_visits_made_while_central_is_down_arrive_in_order_when_it_returns(
    world: World, console: SmartClient, central: CentralProcess, kilosa: HubProcess
) -> None:
    tablet = world.tablet("amina", VILLAGE)
    central.stop()
    try:
        first = tablet.new_patient(VILLAGE)
        tablet.visit(first, systolic=131)
        assert tablet.sync().quarantined == []
        second = tablet.new_patient(VILLAGE, phone="+255715000999")
        tablet.visit(second, systolic=142)
        tablet.visit(first, systolic=127)
        assert tablet.sync().quarantined == []
        world.assert_converged()  # the hub answered the tablet as usual
        queued = [row[0] for row in kilosa.query("SELECT doc FROM fhir_outbox ORDER BY seq")]
        assert queued == [first, second]
        assert "quarantined: 0 charts" in kilosa.ok("fhir-status")
    finally:
        central.start()

    expected = world.ledger.expected()
    assert len(expected[first]) == 2

    def all_arrived() -> dict[str, list[str]] | None:
        found = {c: ids(console.search("Encounter", patient=c)) for c in expected}
        return found if found == expected else None

    eventually(all_arrived, what="every visit made while central was down, once")
    first_patient = console.read(f"Patient/{first}")
    second_patient = console.read(f"Patient/{second}")
    assert first_patient["meta"]["lastUpdated"] <= second_patient["meta"]["lastUpdated"]
    assert version(first_patient) == version(second_patient) == "1"
