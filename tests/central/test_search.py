"""FHIR R4 search on both backends: every date prefix at its boundaries, token and string forms,
references, OR and AND, sorting, keyset paging with writes between pages, _include, regions,
deleted resources, and the errors a bad query gets.

Resources are stored the way ``central.fhir.store`` stores them (a ``resources`` row, a
``history`` row and the rows of ``index_rows``), by direct SQL, so that search is tested alone.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from central.callers import ALL_REGIONS, Caller
from central.clock import FixedClock, instant
from central.database import Database, Session
from central.errors import InvalidSearch
from central.fhir.parameters import index_rows
from central.fhir.search import ESTIMATE_LIMIT, SearchPage, bundle, execute, parse

BASE = "https://central.example/fhir"
START = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
CONSOLE = Caller("console", ALL_REGIONS, frozenset({"system/*.read"}))
NORTH = Caller("hub-north", "north", frozenset({"system/*.read"}))
SOUTH = Caller("hub-south", "south", frozenset({"system/*.read"}))
Params = Sequence[tuple[str, str]] | str


class Store:
    """Writes resources as central's store does, one second apart, and searches them."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.clock = FixedClock(START)
        self.versions: dict[tuple[str, str], int] = {}

    def put(self, resource: dict[str, Any], *, region: str = "north") -> str:
        """Store ``resource`` (a new version if it exists); return its lastUpdated."""
        self.clock.advance(1)
        updated = instant(self.clock.now())
        key = (resource["resourceType"], resource["id"])
        version = self.versions.get(key, 0) + 1
        self.versions[key] = version
        with self.database.write() as session:
            self._write(
                session, key, version=version, updated=updated, region=region, resource=resource
            )
        return updated

    def delete(self, resource_type: str, rid: str) -> None:
        self.clock.advance(1)
        key = (resource_type, rid)
        self.versions[key] += 1
        with self.database.write() as session:
            self._write(
                session,
                key,
                version=self.versions[key],
                updated=instant(self.clock.now()),
                region=None,
                resource=None,
            )

    def _write(
        self,
        session: Session,
        key: tuple[str, str],
        *,
        version: int,
        updated: str,
        region: str | None,
        resource: dict[str, Any] | None,
    ) -> None:
        text = None if resource is None else json.dumps(resource)
        region = (
            region
            or session.execute("SELECT region FROM resources WHERE rtype = ? AND id = ?", key)[0][0]
        )
        session.execute(
            "INSERT INTO resources (rtype, id, version, last_updated, region, deleted, content) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rtype, id) DO UPDATE SET "
            "version = excluded.version, last_updated = excluded.last_updated, "
            "region = excluded.region, deleted = excluded.deleted, content = excluded.content",
            (*key, version, updated, region, int(resource is None), text),
        )
        session.execute(
            "INSERT INTO history (rtype, id, version, last_updated, region, method, content) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*key, version, updated, region, "DELETE" if resource is None else "PUT", text),
        )
        for table in ("search_token", "search_string", "search_date", "search_reference"):
            session.execute(f"DELETE FROM {table} WHERE rtype = ? AND id = ?", key)  # noqa: S608
        if resource is None:
            return
        rows = index_rows(resource, base_url=BASE)
        inserts: dict[str, Sequence[tuple[str, ...]]] = {
            "search_token (rtype, id, param, system, code)": rows.token,
            "search_string (rtype, id, param, value)": rows.string,
            "search_date (rtype, id, param, low, high)": rows.date,
            "search_reference (rtype, id, param, target)": rows.reference,
        }
        for table, found in inserts.items():
            marks = ", ".join("?" for _ in range(table.count(",") + 1))
            session.executemany(
                f"INSERT INTO {table} VALUES ({marks})",  # noqa: S608
                [(*key, *row) for row in found],
            )

    def search(
        self,
        resource_type: str,
        params: Params,
        caller: Caller = CONSOLE,
        *,
        lenient: bool = False,
        now: datetime | None = None,
    ) -> SearchPage:
        pairs = parse_qsl(params, keep_blank_values=True) if isinstance(params, str) else params
        query = parse(
            resource_type,
            pairs,
            page_size=50,
            max_page_size=100,
            lenient=lenient,
            base_url=BASE,
            now=now,
        )
        with self.database.read() as session:
            return execute(session, query, caller)

    def ids(self, resource_type: str, params: Params, caller: Caller = CONSOLE) -> list[str]:
        return [str(r["id"]) for r in self.search(resource_type, params, caller).resources]


@pytest.fixture
def store(database: Database) -> Store:
    return Store(database)


def patient(rid: str, **elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, **elements}


def encounter(rid: str, patient_id: str, **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": rid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
        "subject": {"reference": f"Patient/{patient_id}"},
        **elements,
    }


def observation(rid: str, **elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", **elements}


def loinc(code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": "http://loinc.org", "code": code}
    return {"coding": [coding | ({"display": display} if display else {})]}


def invalid(store: Store, resource_type: str, params: Params, **kwargs: Any) -> str:
    with pytest.raises(InvalidSearch) as caught:
        store.search(resource_type, params, **kwargs)
    return str(caught.value)


# -- dates ----------------------------------------------------------------------------------------


@pytest.fixture
def birthdays(store: Store) -> Store:
    """Patients born on 14, 15, 16 November 2026, and two known only to the month or year."""
    for rid, born in [
        ("d14", "2026-11-14"),
        ("d15", "2026-11-15"),
        ("d16", "2026-11-16"),
        ("month", "2026-11"),
        ("year", "2026"),
    ]:
        store.put(patient(rid, birthDate=born))
    store.put(patient("unborn"))
    return store


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The search value 2026-11-15 covers that day; each target covers its own precision.
        ("2026-11-15", {"d15"}),
        ("eq2026-11-15", {"d15"}),
        ("ne2026-11-15", {"d14", "d16", "month", "year"}),
        ("gt2026-11-15", {"d16", "month", "year"}),
        ("lt2026-11-15", {"d14", "month", "year"}),
        ("ge2026-11-15", {"d15", "d16", "month", "year"}),
        ("le2026-11-15", {"d14", "d15", "month", "year"}),
        ("sa2026-11-15", {"d16"}),
        ("eb2026-11-15", {"d14"}),
        ("ap2026-11-15", {"d15", "month", "year"}),
        # A coarser search value contains the finer targets.
        ("2026-11", {"d14", "d15", "d16", "month"}),
        ("2026", {"d14", "d15", "d16", "month", "year"}),
        ("sa2026-10", {"d14", "d15", "d16", "month"}),
        ("eb2026-12", {"d14", "d15", "d16", "month"}),
        ("gt2026-11", {"year"}),
        ("lt2026-11", {"year"}),
        ("ge2026-11", {"d14", "d15", "d16", "month", "year"}),
        ("le2026-11", {"d14", "d15", "d16", "month", "year"}),
        ("ne2026-11", {"year"}),
        ("2025", set()),
    ],
)
def test_date_prefixes_compare_ranges_as_r4_defines(
    birthdays: Store, value: str, expected: set[str]
) -> None:
    assert set(birthdays.ids("Patient", [("birthdate", value)])) == expected


def test_date_missing(birthdays: Store) -> None:
    assert birthdays.ids("Patient", "birthdate:missing=true") == ["unborn"]
    assert len(birthdays.ids("Patient", "birthdate:missing=false")) == 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Targets: 23:59:59 (a second), 00:00:00 the next day, and 02:00+03:00 = 23:00Z.
        ("2026-11-15", {"last-second", "east"}),
        ("2026-11-16", {"midnight"}),
        ("lt2026-11-16", {"last-second", "east"}),
        ("le2026-11-15", {"last-second", "east"}),
        ("ge2026-11-16", {"midnight"}),
        ("gt2026-11-15", {"midnight"}),
        ("sa2026-11-15", {"midnight"}),
        ("eb2026-11-16", {"last-second", "east"}),
        ("2026-11-15T23:59:59Z", {"last-second"}),
        ("gt2026-11-15T23:59:59Z", {"midnight"}),
        ("lt2026-11-15T23:59:59Z", {"east"}),
        ("ge2026-11-15T23:59:59Z", {"last-second", "midnight"}),
        ("le2026-11-15T23:59:59Z", {"last-second", "east"}),
        ("2026-11-16T02:00:00+03:00", {"east"}),
        ("2026-11-16T02:00:00 03:00", {"east"}),  # a '+' sent unencoded arrives as a space
        ("2026-11-15T23:59:59.5Z", set()),  # a finer search value cannot contain the second
        ("ap2026-11-15T23:59:59.5Z", {"last-second"}),
    ],
)
def test_date_boundaries_at_the_instant(store: Store, value: str, expected: set[str]) -> None:
    for rid, moment in [
        ("last-second", "2026-11-15T23:59:59Z"),
        ("midnight", "2026-11-16T00:00:00Z"),
        ("east", "2026-11-16T02:00:00+03:00"),
    ]:
        store.put(observation(rid, effectiveDateTime=moment))
    assert set(store.ids("Observation", [("date", value)])) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11", {"closed"}),  # only a period inside November is contained by it
        ("2026-11-12", set()),
        ("ap2026-11-12", {"closed", "open"}),
        ("gt2026-11-30", {"open"}),
        ("ge2026-11-10", {"closed", "open"}),
        ("lt2026-11-10", set()),
        ("le2026-11-10", set()),  # starts before the 10th, or ends within it: neither
        ("sa2026-11-09", {"closed", "open"}),
        ("eb2026-11-15", set()),
        ("eb2026-11-16", {"closed"}),
        ("ne2026-11", {"open"}),
    ],
)
def test_a_period_is_its_range_and_an_open_end_reaches_the_last_instant(
    store: Store, value: str, expected: set[str]
) -> None:
    store.put(encounter("closed", "p", period={"start": "2026-11-10", "end": "2026-11-15"}))
    store.put(encounter("open", "p", period={"start": "2026-11-10T09:00:00Z"}))
    assert set(store.ids("Encounter", [("date", value)])) == expected


def test_approximately_widens_by_a_tenth_of_the_distance_from_now(store: Store) -> None:
    store.put(observation("near", effectiveDateTime="2026-11-04T12:00:00Z"))
    store.put(observation("far", effectiveDateTime="2026-11-07T12:00:00Z"))
    now = datetime(2026, 11, 15, tzinfo=UTC)  # ten days after the 5th: a day either side
    page = store.search("Observation", [("date", "ap2026-11-05")], now=now)
    assert [r["id"] for r in page.resources] == ["near"]
    assert store.ids("Observation", [("date", "ap2026-11-05")]) == []


def test_last_updated_uses_the_stored_instant(store: Store) -> None:
    first = store.put(patient("a"))  # 08:00:01
    store.put(patient("b"))  # 08:00:02
    store.put(patient("c"))  # 08:00:03
    assert first == "2026-11-21T08:00:01.000000Z"
    assert store.ids("Patient", "_lastUpdated=2026-11-21T08:00:02Z") == ["b"]
    assert store.ids("Patient", "_lastUpdated=gt2026-11-21T08:00:01Z") == ["b", "c"]
    assert store.ids("Patient", "_lastUpdated=le2026-11-21T08:00:02Z") == ["a", "b"]
    assert store.ids("Patient", "_lastUpdated=sa2026-11-21T08:00:02Z") == ["c"]
    assert store.ids("Patient", "_lastUpdated=eb2026-11-21T08:00:02Z") == ["a"]
    assert store.ids("Patient", "_lastUpdated=ne2026-11-21T08:00:02Z") == ["a", "c"]
    assert store.ids("Patient", "_lastUpdated=2026-11-21") == ["a", "b", "c"]
    assert store.ids("Patient", "_lastUpdated=lt2026-11-21T08:00:02Z&_lastUpdated=gt2026") == []


# -- tokens ---------------------------------------------------------------------------------------


@pytest.fixture
def coded(store: Store) -> Store:
    store.put(observation("systolic", code=loinc("8480-6", "Systolic blood pressure")))
    store.put(observation("local", code={"coding": [{"code": "8480-6"}], "text": "BP top"}))
    store.put(
        observation(
            "both",
            code={"coding": [*loinc("8462-4")["coding"], {"system": "urn:x", "code": "dia"}]},
        )
    )
    store.put(observation("uncoded", status="preliminary"))
    return store


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("code=8480-6", {"systolic", "local"}),
        ("code=http://loinc.org|8480-6", {"systolic"}),
        ("code=|8480-6", {"local"}),
        ("code=http://loinc.org|", {"systolic", "both"}),
        ("code=urn:other|8480-6", set()),
        ("code=8480-6,dia", {"systolic", "local", "both"}),
        ("code=8462-4&code=urn:x|dia", {"both"}),
        ("code=8462-4&code=8480-6", set()),
        ("code:not=8480-6", {"both", "uncoded"}),
        ("code:not=8480-6,dia", {"uncoded"}),
        ("code:not=http://loinc.org|8480-6", {"local", "both", "uncoded"}),
        ("code:text=systolic", {"systolic"}),
        ("code:text=bp", {"local"}),
        ("code:missing=true", {"uncoded"}),
        ("code:missing=false", {"systolic", "local", "both"}),
        ("status=preliminary", {"uncoded"}),
        ("status=final&code:missing=false", {"systolic", "local", "both"}),
    ],
)
def test_token_forms(coded: Store, params: str, expected: set[str]) -> None:
    assert set(coded.ids("Observation", params)) == expected


def test_tokens_of_identifiers_contact_points_booleans_and_tags(store: Store) -> None:
    store.put(
        patient(
            "p1",
            meta={"tag": [{"system": "urn:rural-care:region", "code": "north"}]},
            identifier=[{"system": "urn:rural-care:patient", "value": "C,1|x"}],
            telecom=[
                {"system": "phone", "value": "+255700000001"},
                {"system": "email", "value": "a@b.c"},
            ],
            active=True,
            gender="female",
        )
    )
    store.put(
        patient(
            "p2",
            active=False,
            gender="male",
            telecom=[{"system": "email", "value": "+255700000001"}],
        )
    )
    assert store.ids("Patient", [("identifier", r"urn:rural-care:patient|C\,1\|x")]) == ["p1"]
    assert store.ids("Patient", [("identifier", "C,1|x")]) == []  # unescaped: two values
    assert store.ids("Patient", [("phone", "+255700000001")]) == ["p1"]
    assert store.ids("Patient", [("telecom", "+255700000001")]) == ["p1", "p2"]
    assert store.ids("Patient", [("email", "a@b.c")]) == ["p1"]
    assert store.ids("Patient", "active=true") == ["p1"]
    assert store.ids("Patient", "active=false") == ["p2"]
    assert store.ids("Patient", "gender=male,female") == ["p1", "p2"]
    assert store.ids("Patient", "_tag=urn:rural-care:region|north") == ["p1"]
    assert store.ids("Patient", "_id=p2,nobody") == ["p2"]
    assert store.ids("Patient", "_id=p1&_id=p2") == []


# -- strings --------------------------------------------------------------------------------------


@pytest.fixture
def named(store: Store) -> Store:
    store.put(patient("juma", name=[{"family": "Jüma", "given": ["Amina"]}]))
    store.put(patient("jumanne", name=[{"family": "JUMANNE", "given": ["Zawadi  Neema"]}]))
    store.put(patient("odd", name=[{"family": "50%_off\\"}], address=[{"city": "Dar es  Salaam"}]))
    store.put(patient("nameless"))
    return store


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("family=juma", {"juma", "jumanne"}),
        ("family=JÚMA", {"juma", "jumanne"}),
        ("family=jumanne", {"jumanne"}),
        ("family=uma", set()),
        ("name=ami", {"juma"}),
        ("given=zawadi neema", {"jumanne"}),
        ("given=ZAWADI   NEEMA", {"jumanne"}),
        ("family:exact=Jüma", {"juma"}),
        ("family:exact=Juma", set()),
        ("family:exact=jüma", set()),
        ("family:exact=Jüm", set()),
        ("family:contains=UMA", {"juma", "jumanne"}),
        ("family:contains=anne", {"jumanne"}),
        ("family:contains=%", {"odd"}),
        ("family:contains=0%_", {"odd"}),
        ("family:contains=_", {"odd"}),
        ("family=50%_off\\", {"odd"}),
        ("family:contains=x%", set()),
        ("address-city=dar es sal", {"odd"}),
        ("address=DAR", {"odd"}),
        ("address=salaam", set()),  # starts-with on each part, not on each word
        ("name:missing=true", {"nameless"}),
        ("family:missing=false", {"juma", "jumanne", "odd"}),
        ("family=zzz,jumanne", {"jumanne"}),
        ("family=juma&given=amina", {"juma"}),
    ],
)
def test_string_forms(named: Store, params: str, expected: set[str]) -> None:
    # Split by hand: a query-string parser would decode the '%' and '+' these values hold.
    pairs = [(name, value) for name, _, value in (p.partition("=") for p in params.split("&"))]
    assert set(named.ids("Patient", pairs)) == expected


# -- references -----------------------------------------------------------------------------------


@pytest.fixture
def referring(store: Store) -> Store:
    store.put(patient("p1", identifier=[{"system": "urn:chart", "value": "C1"}]))
    store.put(encounter("e1", "p1"))
    store.put(encounter("e2", "p2"))
    store.put(
        {
            "resourceType": "Encounter",
            "id": "group",
            "status": "finished",
            "class": {"code": "HH"},
            "subject": {"reference": "Group/p1"},
        }
    )
    store.put(
        {
            "resourceType": "Encounter",
            "id": "absolute",
            "status": "finished",
            "class": {"code": "HH"},
            "subject": {"reference": f"{BASE}/Patient/p1"},
        }
    )
    store.put(
        {
            "resourceType": "Encounter",
            "id": "elsewhere",
            "status": "finished",
            "class": {"code": "HH"},
            "subject": {
                "reference": "https://other.example/fhir/Patient/p1",
                "identifier": {"system": "urn:chart", "value": "C1"},
            },
        }
    )
    return store


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("patient=Patient/p1", {"e1", "absolute"}),
        ("patient=p1", {"e1", "absolute"}),
        (f"patient={BASE}/Patient/p1", {"e1", "absolute"}),
        ("patient=Patient/p1/_history/3", {"e1", "absolute"}),
        ("patient=https://other.example/fhir/Patient/p1", set()),
        ("patient=Group/p1", set()),
        ("subject=p1", {"e1", "absolute", "group"}),
        ("subject=Group/p1", {"group"}),
        ("subject:Patient=p1", {"e1", "absolute"}),
        ("subject:Group=p1", {"group"}),
        ("subject:Patient=Patient/p1", {"e1", "absolute"}),
        ("patient=p1,p2", {"e1", "e2", "absolute"}),
        ("patient=p1&patient=p2", set()),
        ("subject:identifier=urn:chart|C1", {"elsewhere"}),
        ("subject:missing=true", {"elsewhere"}),
        ("subject:missing=false", {"e1", "e2", "group", "absolute"}),
    ],
)
def test_reference_forms(referring: Store, params: str, expected: set[str]) -> None:
    assert set(referring.ids("Encounter", params)) == expected


def test_canonical_references_match_as_written_and_without_version(store: Store) -> None:
    form = {
        "resourceType": "QuestionnaireResponse",
        "id": "qr",
        "status": "completed",
        "questionnaire": "urn:rural-care:form:anc_contact|2",
        "subject": {"reference": "Patient/p1"},
    }
    store.put(form)
    assert store.ids("QuestionnaireResponse", "questionnaire=urn:rural-care:form:anc_contact") == [
        "qr"
    ]
    assert store.ids(
        "QuestionnaireResponse", "questionnaire=urn:rural-care:form:anc_contact|2"
    ) == ["qr"]
    assert store.ids("QuestionnaireResponse", "questionnaire=urn:rural-care:form:sick_child") == []


def test_task_patient_and_subject_both_search_task_for(store: Store) -> None:
    store.put(
        {
            "resourceType": "Task",
            "id": "t1",
            "status": "requested",
            "intent": "order",
            "for": {"reference": "Patient/p1"},
            "restriction": {"period": {"end": "2026-12-01"}},
        }
    )
    store.put(
        {
            "resourceType": "Task",
            "id": "t2",
            "status": "requested",
            "intent": "order",
            "for": {"reference": "Group/g"},
        }
    )
    assert store.ids("Task", "patient=p1") == ["t1"]
    assert store.ids("Task", "subject=Patient/p1") == ["t1"]
    assert store.ids("Task", "subject=Group/g") == ["t2"]
    assert store.ids("Task", "period=le2026-12-01") == ["t1"]
    message = invalid(store, "Task", "subject=p1")
    assert message.startswith("subject:")


def test_common_and_rare_values_give_the_same_answers_whichever_index_a_query_starts_from(
    store: Store,
) -> None:
    """Past ESTIMATE_LIMIT matches SQLite walks resources in sort order instead of listing ids:
    both ways must find the same rows, page and count alike."""
    vital = {"coding": [{"system": "urn:category", "code": "vital-signs"}]}
    with store.database.write() as session:
        for n in range(ESTIMATE_LIMIT + 100):
            code = loinc("rare" if n % 2000 == 7 else "8480-6")
            resource = observation(f"o{n:05d}", category=[vital], code=code)
            store.clock.advance(1)
            store._write(
                session,
                ("Observation", resource["id"]),
                version=1,
                updated=instant(store.clock.now()),
                region="north" if n % 3 else "south",
                resource=resource,
            )
    newest = store.search("Observation", "category=vital-signs&_sort=-_lastUpdated&_count=4")
    assert [r["id"] for r in newest.resources] == ["o05099", "o05098", "o05097", "o05096"]
    assert newest.next_cursor is not None
    after = store.search(
        "Observation",
        [
            ("category", "vital-signs"),
            ("_sort", "-_lastUpdated"),
            ("_count", "2"),
            ("_cursor", newest.next_cursor),
        ],
    )
    assert [r["id"] for r in after.resources] == ["o05095", "o05094"]
    rare = store.search("Observation", "category=vital-signs&code=rare&_total=accurate", NORTH)
    assert [r["id"] for r in rare.resources] == ["o00007", "o04007"]  # o02007 is the south's
    assert rare.total == 2
    common = store.search("Observation", "code=8480-6&_count=0&_total=accurate", SOUTH)
    assert common.total == sum(
        1 for n in range(ESTIMATE_LIMIT + 100) if n % 3 == 0 and n % 2000 != 7
    )


# -- sorting and paging ---------------------------------------------------------------------------


def test_sort_by_last_updated_id_and_dates_both_ways(store: Store) -> None:
    store.put(patient("b", birthDate="1990"))
    store.put(patient("c", birthDate="1985-03-01"))
    store.put(patient("a"))
    store.put(patient("d", birthDate="1985-03-01"))
    assert store.ids("Patient", "") == ["b", "c", "a", "d"]
    assert store.ids("Patient", "_sort=-_lastUpdated") == ["d", "a", "c", "b"]
    assert store.ids("Patient", "_sort=_id") == ["a", "b", "c", "d"]
    assert store.ids("Patient", "_sort=-_id") == ["d", "c", "b", "a"]
    assert store.ids("Patient", "_sort=birthdate") == ["c", "d", "b", "a"]
    assert store.ids("Patient", "_sort=-birthdate") == ["b", "d", "c", "a"]
    assert store.ids("Patient", "_sort=birthdate,-_id") == ["d", "c", "b", "a"]


def page_through(
    store: Store, params: list[tuple[str, str]], between: Callable[[list[str]], None]
) -> list[str]:
    """Every id over all pages, calling ``between(seen so far)`` after each page."""
    seen: list[str] = []
    cursor: list[tuple[str, str]] = []
    for _ in range(50):
        page = store.search("Encounter", [*params, *cursor])
        seen += [str(r["id"]) for r in page.resources]
        if page.next_cursor is None:
            return seen
        cursor = [("_cursor", page.next_cursor)]
        between(seen)
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("sort", ["_lastUpdated", "-_lastUpdated", "-date", "date,_id", "_id"])
def test_paging_neither_skips_nor_repeats_when_others_write_between_pages(
    store: Store, sort: str
) -> None:
    days = ["03", "01", "02", "01", "05", "04", "01", "02", "03", "02"]
    for n, day in enumerate(days):
        store.put(encounter(f"e{n}", "p1", period={"start": f"2026-11-{day}"}))
    store.put(encounter("other-patient", "p2", period={"start": "2026-11-01"}))
    deleted: list[str] = []

    def write(seen: list[str]) -> None:
        store.put(encounter(f"new{len(seen)}", "p1", period={"start": "2026-11-02"}))
        store.put(encounter(f"other{len(seen)}", "p2"))
        if not deleted:
            deleted.append(next(f"e{n}" for n in range(len(days)) if f"e{n}" not in seen))
            store.delete("Encounter", deleted[0])

    seen = page_through(store, [("patient", "p1"), ("_count", "3"), ("_sort", sort)], write)
    assert len(seen) == len(set(seen))
    assert {f"e{n}" for n in range(len(days))} - set(seen) == set(deleted)
    assert not any(rid.startswith("other") for rid in seen)
    assert len(seen) >= 9  # four pages at least


def test_a_page_cursor_survives_its_anchor_being_changed_or_deleted(store: Store) -> None:
    for n in range(6):
        store.put(encounter(f"e{n}", "p1", period={"start": f"2026-11-0{n + 1}"}))
    params = [("patient", "p1"), ("_count", "2"), ("_sort", "date")]
    first = store.search("Encounter", params)
    assert [r["id"] for r in first.resources] == ["e0", "e1"]
    assert first.next_cursor is not None
    store.put(encounter("e1", "p1", period={"start": "2026-12-31"}))  # the anchor moves away
    second = store.search("Encounter", [*params, ("_cursor", first.next_cursor)])
    assert [r["id"] for r in second.resources] == ["e2", "e3"]
    assert second.next_cursor is not None
    store.delete("Encounter", "e3")
    third = store.search("Encounter", [*params, ("_cursor", second.next_cursor)])
    assert [r["id"] for r in third.resources] == ["e4", "e5"]


def test_the_cursor_holds_no_clinical_value(store: Store) -> None:
    for n in range(3):
        store.put(patient(f"p{n}", birthDate=f"1990-0{n + 1}-15"))
    page = store.search("Patient", "_sort=birthdate&_count=1")
    assert page.next_cursor is not None
    decoded = base64.urlsafe_b64decode(page.next_cursor + "==").decode()
    assert json.loads(decoded) == {"id": "p0", "v": 1}
    assert "1990" not in decoded


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'{"id": "p0"}').decode(),
        base64.urlsafe_b64encode(b'{"id": "p0", "v": "1"}').decode(),
        base64.urlsafe_b64encode(b'{"id": "p0", "v": 1, "x": 0}').decode(),
        base64.urlsafe_b64encode(b'{"id": "../etc", "v": 1}').decode(),
        base64.urlsafe_b64encode(b'{"id": "p0", "v": 9}').decode(),  # no such version
        base64.urlsafe_b64encode(b'{"id": "nobody", "v": 1}').decode(),
        base64.urlsafe_b64encode(b'{"id": "south", "v": 1}').decode(),  # another region's
        "",
        "A" * 500,
    ],
)
def test_a_tampered_cursor_is_an_invalid_search(store: Store, cursor: str) -> None:
    store.put(patient("p0"))
    store.put(patient("p1"))
    store.put(patient("south"), region="south")
    message = invalid(store, "Patient", [("_cursor", cursor), ("_count", "1")], caller=NORTH)
    assert message == "_cursor: not a cursor central gave; start the search again"


def test_count_total_and_summary(store: Store) -> None:
    for n in range(5):
        store.put(patient(f"p{n}", gender="female" if n % 2 else "male"))
    page = store.search("Patient", "gender=male&_count=2&_total=accurate")
    assert (len(page.resources), page.total) == (2, 3)
    assert page.next_cursor is not None
    assert store.search("Patient", "gender=male").total is None
    assert store.search("Patient", "_total=estimate").total == 5
    only_total = store.search("Patient", "_count=0&_total=accurate")
    assert (only_total.resources, only_total.total, only_total.next_cursor) == ([], 5, None)
    summary = store.search("Patient", "_summary=count&gender=female")
    assert (summary.resources, summary.total) == ([], 2)
    assert len(store.search("Patient", "_count=1000").resources) == 5  # served as at most 100


# -- _include -------------------------------------------------------------------------------------


def test_include_adds_each_referenced_resource_once(store: Store) -> None:
    store.put(patient("p1"))
    store.put(patient("p2"))
    store.put(encounter("e1", "p1"))
    store.put(encounter("e2", "p1"))
    store.put(encounter("e3", "p2"))
    store.put(
        observation(
            "o1", subject={"reference": "Patient/p1"}, encounter={"reference": "Encounter/e1"}
        )
    )
    page = store.search("Encounter", "patient=p1&_include=Encounter:patient")
    assert [r["id"] for r in page.resources] == ["e1", "e2"]
    assert [r["id"] for r in page.included] == ["p1"]
    page = store.search("Encounter", "_include=Encounter:subject:Patient&_count=2")
    assert [r["id"] for r in page.included] == ["p1"]
    page = store.search(
        "Observation", "_include=Observation:encounter&_include=Observation:subject"
    )
    assert sorted((r["resourceType"], r["id"]) for r in page.included) == [
        ("Encounter", "e1"),
        ("Patient", "p1"),
    ]
    page = store.search("Encounter", "_id=e1&_revinclude=Observation:encounter")
    assert [r["id"] for r in page.included] == ["o1"]
    page = store.search("Encounter", "_id=e3&_include=Encounter:subject:Group")
    assert page.included == []


def test_include_leaves_out_other_regions_deleted_resources_and_unreadable_types(
    store: Store,
) -> None:
    store.put(patient("south-patient"), region="south")
    store.put(patient("gone"))
    store.delete("Patient", "gone")
    store.put(encounter("e1", "south-patient"))
    store.put(encounter("e2", "gone"))
    page = store.search("Encounter", "_include=Encounter:patient", NORTH)
    assert [r["id"] for r in page.resources] == ["e1", "e2"]
    assert page.included == []
    store.put(patient("p1"))
    store.put(encounter("e3", "p1"))
    encounters_only = Caller("viewer", "north", frozenset({"system/Encounter.read"}))
    page = store.search("Encounter", "_id=e3&_include=Encounter:patient", encounters_only)
    assert page.included == []
    page = store.search("Encounter", "_id=e3&_include=Encounter:patient", NORTH)
    assert [r["id"] for r in page.included] == ["p1"]


# -- regions and deletions ------------------------------------------------------------------------


def test_a_caller_sees_only_its_region_and_never_deleted_resources(store: Store) -> None:
    store.put(patient("n1", gender="female"))
    store.put(patient("s1", gender="female"), region="south")
    store.put(patient("n2", gender="female"))
    store.delete("Patient", "n2")
    assert store.ids("Patient", "gender=female", NORTH) == ["n1"]
    assert store.ids("Patient", "gender=female", SOUTH) == ["s1"]
    assert store.ids("Patient", "gender=female") == ["n1", "s1"]
    assert store.search("Patient", "_total=accurate", NORTH).total == 1
    assert store.ids("Patient", "_id=s1,n2", NORTH) == []


# -- bad queries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ("birthdate=notadate", "birthdate"),
        ("birthdate=2026-13-01", "birthdate"),
        ("birthdate=xx2026", "birthdate"),
        ("_lastUpdated=2026-11-21T25:00:00Z", "_lastUpdated"),
        ("_count=-1", "_count"),
        ("_count=ten", "_count"),
        ("_sort=name", "_sort"),
        ("_total=maybe", "_total"),
        ("_summary=true", "_summary"),
        ("gender:missing=perhaps", "gender:missing"),
        ("identifier=a|b|c", "identifier"),
        ("organization=not a reference", "organization"),
        ("_include=Encounter:patient", "_include"),
        ("_include=Patient:name", "_include"),
        ("_include=Patient:organization:Patient", "_include"),
        ("_revinclude=Encounter:service-provider", "_revinclude"),
    ],
)
def test_a_bad_value_names_the_parameter_and_never_echoes_the_value(
    store: Store, params: str, named: str
) -> None:
    value = params.split("=", 1)[1]
    for lenient in (False, True):
        message = invalid(store, "Patient", params, lenient=lenient)
        assert message.startswith(f"{named}:")
        assert value not in message


def test_unknown_parameters_are_errors_unless_lenient(store: Store) -> None:
    store.put(patient("p1", gender="female"))
    for params in (
        "shoe-size=42",
        "name:fuzzy=amina",
        "_elements=id",
        "_include:iterate=Patient:organization",
    ):
        name = params.split("=")[0]
        assert invalid(store, "Patient", params).startswith(f"{name}:")
    query = parse(
        "Patient",
        [("shoe-size", "42"), ("gender", "female"), ("_elements", "id")],
        page_size=10,
        max_page_size=10,
        lenient=True,
    )
    assert query.ignored == ("shoe-size", "_elements")
    assert query.params == (("gender", "female"),)
    with store.database.read() as session:
        assert [r["id"] for r in execute(session, query, CONSOLE).resources] == ["p1"]


def test_an_error_never_repeats_a_name_that_could_carry_data(store: Store) -> None:
    message = invalid(store, "Patient", [("Amina Juma born 1994", "x")])
    assert "Amina" not in message
    assert invalid(store, "Basic", "code=x") == "this resource type cannot be searched"


def test_empty_values_and_format_parameters_are_ignored(store: Store) -> None:
    store.put(patient("p1"))
    assert store.ids("Patient", "name=&_format=json&_pretty=true&gender=&_id=,,") == ["p1"]
    assert store.ids("Patient", "gender=,female,") == []


# -- the Bundle -----------------------------------------------------------------------------------


def test_bundle_links_the_next_page_and_marks_included_entries(store: Store) -> None:
    store.put(patient("p1"))
    for n in range(3):
        store.put(encounter(f"e{n}", "p1"))
    params = [
        ("patient", "p1"),
        ("_count", "2"),
        ("_include", "Encounter:patient"),
        ("_total", "accurate"),
    ]
    page = store.search("Encounter", params)
    self_url = f"{BASE}/Encounter?patient=p1&_count=2"
    found = bundle(
        page, base_url=BASE + "/", resource_type="Encounter", params=params, self_url=self_url
    )
    assert found["resourceType"] == "Bundle"
    assert found["type"] == "searchset"
    assert found["total"] == 3
    assert [e["search"]["mode"] for e in found["entry"]] == ["match", "match", "include"]
    assert [e["fullUrl"] for e in found["entry"]] == [
        f"{BASE}/Encounter/e0",
        f"{BASE}/Encounter/e1",
        f"{BASE}/Patient/p1",
    ]
    links = {link["relation"]: link["url"] for link in found["link"]}
    assert links["self"] == self_url
    next_url = urlsplit(links["next"])
    assert f"{next_url.scheme}://{next_url.netloc}{next_url.path}" == f"{BASE}/Encounter"
    next_params = parse_qsl(next_url.query)
    assert next_params[:4] == params
    assert next_params[4][0] == "_cursor"
    last = store.search("Encounter", next_params)
    assert [r["id"] for r in last.resources] == ["e2"]
    final = bundle(
        last, base_url=BASE, resource_type="Encounter", params=next_params, self_url=links["next"]
    )
    assert [link["relation"] for link in final["link"]] == ["self"]
    empty = bundle(
        store.search("Encounter", "patient=nobody"),
        base_url=BASE,
        resource_type="Encounter",
        params=[],
        self_url=BASE,
    )
    assert "entry" not in empty
    assert "total" not in empty
