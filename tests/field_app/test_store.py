"""The encrypted database: search, indexes, transactions, and what a damaged or foreign file does."""

from __future__ import annotations

import os
import unicodedata
from datetime import date
from typing import Any

import automerge.core as am
import pytest
import sqlcipher3

from care_record import FixedClock, InvalidValue, new_id
from field_app import (
    Session,
    Settings,
    StoreCorrupt,
    UnknownPatient,
    add_follow_up,
    add_patient,
    complete_task,
    fold,
    patient_chart,
    record_visit,
    search_patients,
    tasks_due,
    unlock,
)
from field_app.store import DB_FILE, connect

USER, PIN = "amina", "482913"
PAGE = 4096


def register(session: Session, given: str, family: str, **extra: Any) -> str:
    demographics = {"given": given, "family": family, "sex": "female", "birth_date": "1990-05-01"}
    return add_patient(session, {**demographics, **extra})


def names(found: list[Any]) -> list[str]:
    return [f"{p.given} {p.family}" for p in found]


def doc_of(session: Session, patient_id: str) -> bytes:
    row = session.store.db.execute("SELECT doc FROM charts WHERE id = ?", [patient_id]).fetchone()
    return bytes(row[0])


# -- search -----------------------------------------------------------------------------------


def test_fold_removes_case_accents_and_extra_spaces() -> None:
    assert fold("Ámína  MWÁKILEMA ") == "amina mwakilema"
    assert fold(unicodedata.normalize("NFD", "Ñaña Ołu")) == "nana ołu"
    assert fold("Straße") == "strasse"


@pytest.mark.parametrize(
    "query",
    ["AMINA", "amina", "mwakil", "amina mwa", "MWAKILEMA ámina", "  am   mw ", "Ámína"],
)
def test_search_ignores_case_and_accents(session: Session, query: str) -> None:
    register(session, "Ámína", "Mwákilema")
    register(session, "Baraka", "Mollel")

    assert names(search_patients(session, query)) == ["Ámína Mwákilema"]


@pytest.mark.parametrize("query", ["mina", "kilema", "amina mwakilemaa", "amina x", "ami-"])
def test_each_word_must_match_the_start_of_a_name(session: Session, query: str) -> None:
    register(session, "Ámína", "Mwákilema")

    assert search_patients(session, query) == []


def test_search_finds_a_second_given_name(session: Session) -> None:
    register(session, "Neema Grace", "Lyimo")

    assert names(search_patients(session, "grace")) == ["Neema Grace Lyimo"]


def test_search_treats_percent_underscore_and_backslash_as_letters(session: Session) -> None:
    for given in ("A_b", "Axb", "Zu%ri", "Zuberi", "Ke\\no", "Keno"):
        register(session, given, "Test")

    assert names(search_patients(session, "a_")) == ["A_b Test"]
    assert names(search_patients(session, "zu%")) == ["Zu%ri Test"]
    assert names(search_patients(session, "ke\\")) == ["Ke\\no Test"]
    assert names(search_patients(session, "%")) == []
    assert names(search_patients(session, "_")) == []


def test_an_empty_search_finds_nobody(session: Session) -> None:
    register(session, "Amina", "Juma")

    assert search_patients(session, "") == []
    assert search_patients(session, "   ") == []


def test_search_is_sorted_by_name_and_limited(session: Session) -> None:
    for given in ("Mwanaisha", "Mwajuma", "Mwamini", "Mwanahawa"):
        register(session, given, "Saidi")

    found = search_patients(session, "mwa", limit=3)

    assert names(found) == ["Mwajuma Saidi", "Mwamini Saidi", "Mwanahawa Saidi"]


def test_a_summary_carries_what_a_list_shows(session: Session) -> None:
    patient = register(session, "Amina", "Juma", village="Mlima")

    [summary] = search_patients(session, "amina")

    assert summary.id == patient
    assert (summary.village, summary.birth_date, summary.conflicts) == ("Mlima", "1990-05-01", 0)
    assert session.store.summary(patient) == summary


def test_patients_of_a_village(session: Session) -> None:
    register(session, "Zawadi", "Mushi", village="Kijiji cha Mlima")
    register(session, "Amina", "Juma", village="KIJIJI  CHA MLÍMA")
    register(session, "Baraka", "Mollel", village="Bondeni")
    register(session, "Neema", "Lyimo")

    found = session.store.in_village("kijiji cha mlima")

    assert names(found) == ["Amina Juma", "Zawadi Mushi"]
    assert names(session.store.in_village("Bondeni")) == ["Baraka Mollel"]
    assert session.store.in_village("Mji") == []


# -- tasks ------------------------------------------------------------------------------------


def test_tasks_due_are_open_ones_by_due_date_then_name(session: Session) -> None:
    zawadi = register(session, "Zawadi", "Mushi")
    amina = register(session, "Amina", "Juma")
    add_follow_up(session, zawadi, "Weigh the baby", date(2025, 3, 4))
    add_follow_up(session, amina, "Check blood pressure", date(2025, 3, 4))
    add_follow_up(session, amina, "Antenatal visit", date(2025, 3, 2))
    add_follow_up(session, zawadi, "Next month", date(2025, 4, 1))
    done = add_follow_up(session, zawadi, "Already done", date(2025, 3, 1))
    complete_task(session, zawadi, done)

    due = tasks_due(session, date(2025, 3, 4))

    assert [(t["due"], t["given"], t["description"]) for t in due] == [
        ("2025-03-02", "Amina", "Antenatal visit"),
        ("2025-03-04", "Amina", "Check blood pressure"),
        ("2025-03-04", "Zawadi", "Weigh the baby"),
    ]
    assert {t["chart_id"] for t in due} == {zawadi, amina}
    assert tasks_due(session, date(2025, 3, 1)) == []


def test_completing_a_task_takes_it_off_the_due_list(session: Session) -> None:
    patient = register(session, "Amina", "Juma")
    task = add_follow_up(session, patient, "Check blood pressure", date(2025, 3, 4))
    assert [t["id"] for t in tasks_due(session, date(2025, 3, 4))] == [task]

    complete_task(session, patient, task)

    assert tasks_due(session, date(2025, 3, 4)) == []
    [record] = patient_chart(session, patient).records("tasks")
    assert record["status"] == "completed"


def test_put_chart_is_one_transaction(session: Session, clock: FixedClock) -> None:
    """A chart that cannot be indexed (here: one claiming another chart's ID while carrying
    tasks already indexed elsewhere) leaves the chart row and every task row as they were."""
    store = session.store
    first = register(session, "Amina", "Juma")
    second = register(session, "Zawadi", "Mushi")
    add_follow_up(session, first, "First's follow-up", date(2025, 3, 4))
    add_follow_up(session, second, "Second's follow-up", date(2025, 3, 5))
    before = (doc_of(session, second), tasks_due(session, date(2025, 12, 31)), store.count())
    clash = store.get_chart(first)
    with clash.document.transaction() as tx:
        tx.put(am.ROOT, "id", am.ScalarType.Str, second)

    with pytest.raises(sqlcipher3.IntegrityError):
        store.put_chart(clash)

    after = (doc_of(session, second), tasks_due(session, date(2025, 12, 31)), store.count())
    assert after == before
    assert not store.db.conn.in_transaction
    add_follow_up(session, second, "Still writable", date(2025, 3, 6))


def test_charts_survive_locking_and_unlocking(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    patient = register(session, "Amina", "Juma")
    record_visit(session, patient, {"systolic": 118, "diastolic": 76}, note="well")
    session.lock()

    reopened = unlock(settings, clock, USER, PIN)
    [visit] = patient_chart(reopened, patient).records("encounters")
    reopened.lock()

    assert visit["note"] == "well"
    assert sorted(o["value"] for o in visit["observations"].values()) == [76.0, 118.0]


# -- refused writes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "readings",
    [
        {"systolic": 800, "diastolic": 80},
        {"temperature": 73},
        {"systolic": 80, "diastolic": 120},
        {"weight": 0},
        {"sugar": 5.5},
    ],
    ids=["systolic", "temperature", "diastolic-above", "weight", "unknown-sign"],
)
def test_an_impossible_vital_sign_is_refused_and_nothing_is_written(
    session: Session, readings: dict[str, float]
) -> None:
    patient = register(session, "Amina", "Juma")
    before = doc_of(session, patient)

    with pytest.raises(InvalidValue):
        record_visit(session, patient, readings)

    assert doc_of(session, patient) == before
    assert patient_chart(session, patient).records("encounters") == []


def test_invalid_demographics_write_nothing(session: Session) -> None:
    with pytest.raises(InvalidValue, match="birth_date"):
        register(session, "Amina", "Juma", birth_date="2025-02-30")
    with pytest.raises(InvalidValue, match="phone"):
        register(session, "Amina", "Juma", phone="0712 345 678")

    assert session.store.count() == 0


def test_an_unknown_patient_is_refused(session: Session) -> None:
    register(session, "Amina", "Juma")
    nobody = new_id()

    with pytest.raises(UnknownPatient):
        record_visit(session, nobody, {"pulse": 80})
    with pytest.raises(UnknownPatient):
        patient_chart(session, nobody)
    with pytest.raises(UnknownPatient):
        add_follow_up(session, nobody, "Visit", date(2025, 3, 4))
    with pytest.raises(UnknownPatient):
        session.store.summary(nobody)

    assert session.store.count() == 1
    assert tasks_due(session, date(2030, 1, 1)) == []


# -- the file ---------------------------------------------------------------------------------


def test_the_database_file_is_encrypted(session: Session, settings: Settings) -> None:
    register(session, "Amina", "Juma")
    session.lock()
    raw = (settings.data_dir / DB_FILE).read_bytes()

    assert not raw.startswith(b"SQLite format 3")
    assert b"CREATE TABLE" not in raw
    assert b"Amina" not in raw


def test_the_database_does_not_open_with_another_key(session: Session, settings: Settings) -> None:
    register(session, "Amina", "Juma")
    session.lock()

    with pytest.raises(StoreCorrupt, match="damaged or does not match"):
        connect(settings.data_dir / DB_FILE, os.urandom(32))
    with pytest.raises(StoreCorrupt):
        connect(settings.data_dir / DB_FILE, None)


def read_everything(settings: Settings, clock: FixedClock) -> list[Any]:
    """Unlock and read every chart, the search index, the village index and the tasks."""
    opened = unlock(settings, clock, USER, PIN)
    try:
        store = opened.store
        charts = [store.get_chart(i).view().fields for i in store.chart_ids()]
        return [
            charts,
            names(store.search("a")),
            names(store.in_village("Mlima")),
            store.tasks_due("2030-01-01"),
        ]
    finally:
        opened.lock()


@pytest.fixture
def filled_store(session: Session, settings: Settings, clock: FixedClock) -> list[Any]:
    """A closed store with a few patients, visits and tasks; returns what it holds."""
    for i in range(6):
        patient = register(session, f"Amina{i}", "Juma", village="Mlima", phone="+255712345678")
        record_visit(session, patient, {"systolic": 120 + i, "diastolic": 80}, note="x" * 3000)
        add_follow_up(session, patient, f"Follow-up {i}", date(2025, 3, 4))
    session.lock()
    return read_everything(settings, clock)


def test_a_damaged_first_page_is_refused_on_unlock(
    filled_store: list[Any], settings: Settings, clock: FixedClock
) -> None:
    path = settings.data_dir / DB_FILE
    data = bytearray(path.read_bytes())
    data[100:116] = os.urandom(16)
    path.write_bytes(bytes(data))

    with pytest.raises(StoreCorrupt, match="damaged"):
        unlock(settings, clock, USER, PIN)


def test_damage_anywhere_in_the_database_is_store_corrupt_or_harmless(
    filled_store: list[Any], settings: Settings, clock: FixedClock
) -> None:
    """Every page in turn gets 32 random bytes in its middle. Reading the store then either
    raises StoreCorrupt (never a driver error) or returns exactly what was stored (a page
    nothing reads, such as a free page)."""
    path = settings.data_dir / DB_FILE
    original = path.read_bytes()
    assert len(original) % PAGE == 0
    detected: dict[int, str] = {}
    for page in range(len(original) // PAGE):
        damaged = bytearray(original)
        middle = page * PAGE + PAGE // 2
        damaged[middle : middle + 32] = os.urandom(32)
        path.write_bytes(bytes(damaged))
        try:
            read = read_everything(settings, clock)
        except StoreCorrupt as exc:
            detected[page] = str(exc)
        else:
            assert read == filled_store, f"page {page} damaged, read without an error"
    path.write_bytes(original)

    assert all("damaged" in message for message in detected.values())
    assert 0 in detected
    assert len(detected) >= 3
    assert read_everything(settings, clock) == filled_store


def test_a_damaged_middle_of_the_file_is_store_corrupt_on_read(
    filled_store: list[Any], settings: Settings, clock: FixedClock
) -> None:
    """Damage to every page but the first: unlocking works (it reads only page 1), reading the
    charts does not."""
    path = settings.data_dir / DB_FILE
    data = bytearray(path.read_bytes())
    for start in range(PAGE, len(data), PAGE):
        data[start + 1000 : start + 1016] = os.urandom(16)
    path.write_bytes(bytes(data))

    opened = unlock(settings, clock, USER, PIN)
    try:
        with pytest.raises(StoreCorrupt, match="damaged"):
            opened.store.chart_ids()
        with pytest.raises(StoreCorrupt, match="damaged"):
            opened.store.search("amina")
        with pytest.raises(StoreCorrupt, match="damaged"):
            opened.store.tasks_due("2030-01-01")
    finally:
        opened.lock()


def test_a_store_file_of_another_kind_is_refused(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    session.lock()
    (settings.data_dir / DB_FILE).write_bytes(b"this is not a database at all" * 200)

    with pytest.raises(StoreCorrupt):
        unlock(settings, clock, USER, PIN)


def test_a_store_made_before_an_index_existed_gets_it_on_open(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    register(session, "Amina", "Juma")
    session.store.db.execute("DROP INDEX charts_name")
    session.lock()

    reopened = unlock(settings, clock, "amina", "482913")
    indexes = {
        r[0]
        for r in reopened.store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    plan = " ".join(
        str(r[-1])
        for r in reopened.store.db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM charts WHERE kind = 'patient' ORDER BY name_key"
        )
    )
    reopened.lock()
    assert "charts_name" in indexes
    assert "charts_name" in plan
