"""The audit trail: FHIR R4 AuditEvents in a hash chain that the database keeps append-only and
that ``verify`` checks entry by entry; tampering is done here by direct SQL, as an intruder
would, after dropping the triggers that refuse it."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from central.audit import (
    GENESIS,
    append,
    audit_event,
    canonical,
    entry_hash,
    query_parameter_names,
    recent,
    verify,
)
from central.callers import Caller
from central.database import Database, PostgresDatabase, SqliteDatabase, open_database

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
HUB = Caller("hub-north", "north", frozenset({"system/*.read", "system/*.write"}))


def another_process(database: Database) -> Database:
    """A second Database object on the same file or schema, as a second central process has."""
    if isinstance(database, SqliteDatabase):
        return open_database(f"sqlite:///{database.path}")
    assert isinstance(database, PostgresDatabase)
    return open_database(database.url)


def read_event(n: int, caller: Caller = HUB) -> dict[str, Any]:
    return audit_event(
        caller,
        action="R",
        interaction="read",
        outcome="0",
        entities=[f"Observation/obs-{n}"],
        patients=[f"Patient/pat-{n}"],
        query=None,
        at=NOW + timedelta(seconds=n),
    )


def fill(database: Database, count: int, per_call: int = 1) -> None:
    for start in range(0, count, per_call):
        events = [read_event(n) for n in range(start, min(count, start + per_call))]
        with database.write() as session:
            append(session, events, NOW + timedelta(seconds=start))


def allow_tampering(database: Database) -> None:
    """What an intruder with the database's owner rights must do first."""
    with database.write() as session:
        if session.dialect == "sqlite":
            session.execute("DROP TRIGGER audit_log_no_update")
            session.execute("DROP TRIGGER audit_log_no_delete")
        else:
            session.execute("DROP TRIGGER audit_log_no_update_or_delete ON audit_log")


def tamper(database: Database, *statements: tuple[str, tuple[object, ...]]) -> None:
    allow_tampering(database)
    with database.write() as session:
        for sql, params in statements:
            session.execute(sql, params)


# -- the event ------------------------------------------------------------------------------------


def test_an_audit_event_is_a_valid_r4_audit_event() -> None:
    event = audit_event(
        HUB,
        action="C",
        interaction="transaction",
        outcome="0",
        entities=["Patient/p1", "Encounter/e1", "Observation/o1"],
        patients=["Patient/p1"],
        query=None,
        at=NOW,
    )
    parsed = AuditEvent.model_validate(event)
    assert parsed.type.code == "rest"
    assert parsed.type.system == "http://terminology.hl7.org/CodeSystem/audit-event-type"
    assert [(c.system, c.code) for c in parsed.subtype] == [
        ("http://hl7.org/fhir/restful-interaction", "transaction")
    ]
    assert (parsed.action, parsed.outcome) == ("C", "0")
    assert event["recorded"] == "2026-03-01T08:00:00.000000Z"
    assert parsed.agent[0].requestor is True
    assert parsed.agent[0].who.identifier.value == "hub-north"
    assert parsed.source.observer.display == "central"
    roles = {e.what.reference: e.role.code for e in parsed.entity}
    assert roles == {"Patient/p1": "1", "Encounter/e1": "4", "Observation/o1": "4"}


def test_patients_not_among_the_entities_are_added_once() -> None:
    event = audit_event(
        HUB,
        action="R",
        interaction="search-type",
        outcome="0",
        entities=["Observation/o1", "Observation/o2"],
        patients=["Patient/p1", "p1", "p2"],
        query=None,
        at=NOW,
    )
    AuditEvent.model_validate(event)
    found = [(e["what"]["reference"], e["role"]["code"]) for e in event["entity"]]
    assert found == [
        ("Observation/o1", "4"),
        ("Observation/o2", "4"),
        ("Patient/p1", "1"),
        ("Patient/p2", "1"),
    ]


def test_a_search_keeps_the_parameter_names_and_never_their_values() -> None:
    query = "name=Amina%20Juma&phone=%2B255700000001&identifier=urn:x|ID-1234&_count=37&name=J"
    event = audit_event(
        HUB,
        action="E",
        interaction="search-type",
        outcome="0",
        entities=[],
        patients=[],
        query=query,
        at=NOW,
    )
    AuditEvent.model_validate(event)
    text = json.dumps(event)
    for value in ("Amina", "Juma", "255700000001", "ID-1234", "urn:x", "37"):
        assert value not in text
    (entity,) = event["entity"]
    assert entity["role"]["code"] == "24"
    assert base64.b64decode(entity["query"]).decode() == "name&phone&identifier&_count"
    assert "name, phone, identifier, _count" in entity["description"]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("", []),
        ("?subject=Patient/1", ["subject"]),
        ("/fhir/Patient?birthdate=ge1990&gender", ["birthdate", "gender"]),
        ("code:text=fever&_sort=-date", ["code:text", "_sort"]),
    ],
)
def test_query_parameter_names(query: str, names: list[str]) -> None:
    assert query_parameter_names(query) == names


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"action": "X"}, "action"),
        ({"interaction": "steal"}, "restful-interaction"),
        ({"outcome": "1"}, "outcome"),
    ],
)
def test_codes_outside_fhirs_value_sets_are_a_programming_error(
    change: dict[str, str], words: str
) -> None:
    arguments: dict[str, Any] = {"action": "R", "interaction": "read", "outcome": "0"} | change
    with pytest.raises(ValueError, match=words):
        audit_event(HUB, entities=[], patients=[], query=None, at=NOW, **arguments)


# -- the chain ------------------------------------------------------------------------------------


def test_entries_are_chained_from_32_zero_bytes(database: Database) -> None:
    events = [read_event(1), read_event(2)]
    with database.write() as session:
        append(session, events, NOW)
    with database.read() as session:
        rows = session.execute("SELECT seq, recorded, event, prev_hash, hash FROM audit_log")
    (s1, r1, e1, p1, h1), (s2, r2, e2, p2, h2) = sorted(rows)
    assert (s1, s2) == (1, 2)
    assert r1 == r2 == "2026-03-01T08:00:00.000000Z"
    assert (
        e1 == canonical(events[0]) == json.dumps(events[0], sort_keys=True, separators=(",", ":"))
    )
    assert bytes(p1) == GENESIS == bytes(32)
    expected = hashlib.sha256(
        bytes(32) + (1).to_bytes(8, "big") + r1.encode() + b"\0" + e1.encode()
    )
    assert bytes(h1) == expected.digest() == entry_hash(GENESIS, 1, r1, e1)
    assert bytes(p2) == bytes(h1)
    assert bytes(h2) == entry_hash(bytes(h1), 2, r2, e2)


def test_appending_nothing_writes_nothing(database: Database) -> None:
    with database.write() as session:
        append(session, [], NOW)
    assert verify(database).entries == 0
    assert verify(database).intact


def test_an_audit_entry_commits_with_its_write_or_not_at_all(database: Database) -> None:
    fill(database, 2)

    def a_write_that_fails_after_its_audit_entry() -> None:
        with database.write() as session:
            append(session, [read_event(3)], NOW)
            raise RuntimeError("the write failed")

    with pytest.raises(RuntimeError):
        a_write_that_fails_after_its_audit_entry()
    report = verify(database)
    assert (report.entries, report.intact) == (2, True)
    fill(database, 1)
    assert verify(database).entries == 3


def test_a_clean_chain_of_thousands_verifies_in_batches(database: Database) -> None:
    fill(database, 3000, per_call=250)
    seen: list[tuple[int, int]] = []
    report = verify(
        database, progress=lambda done, total: seen.append((done, total)), batch_size=700
    )
    assert report.intact
    assert report.entries == 3000
    assert report.reason == "intact"
    assert seen == [(700, 3000), (1400, 3000), (2100, 3000), (2800, 3000), (3000, 3000)]
    with database.read() as session:
        last = session.execute("SELECT hash FROM audit_log WHERE seq = 3000")[0][0]
    assert report.head_hash == bytes(last).hex()


def test_the_database_refuses_to_edit_or_remove_an_entry(database: Database) -> None:
    fill(database, 3)
    refusals = [
        "UPDATE audit_log SET event = '{}' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 3",
    ]
    if database.dialect == "postgresql":
        refusals.append("TRUNCATE audit_log")
    for sql in refusals:
        with (
            pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"),
            database.write() as session,
        ):
            session.execute(sql)
    assert verify(database).entries == 3


def test_an_edited_event_is_found(database: Database) -> None:
    fill(database, 20)
    tamper(
        database,
        ("UPDATE audit_log SET event = replace(event, 'obs-6', 'obs-9') WHERE seq = 7", ()),
    )
    report = verify(database)
    assert (report.first_bad_seq, report.entries) == (7, 6)
    assert "does not match its content" in report.reason


def test_an_edited_hash_is_found(database: Database) -> None:
    fill(database, 20)
    tamper(database, ("UPDATE audit_log SET hash = ? WHERE seq = 12", (bytes(32),)))
    assert verify(database).first_bad_seq == 12


def test_an_edited_event_with_its_hash_recomputed_breaks_the_next_link(
    database: Database,
) -> None:
    fill(database, 20)
    with database.read() as session:
        recorded, event, prev = session.execute(
            "SELECT recorded, event, prev_hash FROM audit_log WHERE seq = 7"
        )[0]
    forged = event.replace("obs-6", "obs-9")
    rehashed = entry_hash(bytes(prev), 7, recorded, forged)
    tamper(database, ("UPDATE audit_log SET event = ?, hash = ? WHERE seq = 7", (forged, rehashed)))
    report = verify(database)
    assert report.first_bad_seq == 8
    assert "prev_hash" in report.reason


@pytest.mark.parametrize("deleted", [1, 7, 19])
def test_a_deleted_entry_is_found(database: Database, deleted: int) -> None:
    fill(database, 20)
    tamper(database, ("DELETE FROM audit_log WHERE seq = ?", (deleted,)))
    report = verify(database)
    assert report.first_bad_seq == deleted
    assert f"missing (the next entry there is {deleted + 1})" in report.reason


def test_a_deleted_entry_whose_followers_were_renumbered_is_found(database: Database) -> None:
    fill(database, 20)
    renumber = [("UPDATE audit_log SET seq = ? WHERE seq = ?", (n - 1, n)) for n in range(8, 21)]
    tamper(database, ("DELETE FROM audit_log WHERE seq = 7", ()), *renumber)
    report = verify(database)
    assert report.first_bad_seq == 7
    assert report.entries == 6


def test_a_moved_entry_is_found(database: Database) -> None:
    fill(database, 20)
    tamper(
        database,
        ("UPDATE audit_log SET seq = -1 WHERE seq = 9", ()),
        ("UPDATE audit_log SET seq = 9 WHERE seq = 10", ()),
        ("UPDATE audit_log SET seq = 10 WHERE seq = -1", ()),
    )
    assert verify(database).first_bad_seq == 9


def test_swapped_contents_are_found(database: Database) -> None:
    fill(database, 20)
    with database.read() as session:
        rows = dict(session.execute("SELECT seq, event FROM audit_log WHERE seq IN (4, 5)"))
    tamper(
        database,
        ("UPDATE audit_log SET event = ? WHERE seq = 4", (rows[5],)),
        ("UPDATE audit_log SET event = ? WHERE seq = 5", (rows[4],)),
    )
    assert verify(database).first_bad_seq == 4


def test_entries_cut_off_the_end_show_as_a_different_head(database: Database) -> None:
    """The chain alone cannot tell; the head hash kept elsewhere can."""
    fill(database, 20)
    anchored = verify(database).head_hash
    tamper(database, ("DELETE FROM audit_log WHERE seq > 18", ()))
    report = verify(database)
    assert report.intact
    assert report.entries == 18
    assert report.head_hash != anchored


def test_a_broken_entry_deep_in_a_long_chain_is_found_across_batches(
    database: Database,
) -> None:
    fill(database, 2500, per_call=500)
    tamper(database, ("DELETE FROM audit_log WHERE seq = 2222", ()))
    report = verify(database, batch_size=300)
    assert (report.first_bad_seq, report.entries) == (2222, 2221)


def test_two_processes_writing_at_once_make_one_chain(database: Database) -> None:
    writers = [another_process(database), another_process(database)]
    together = threading.Barrier(len(writers))

    def write_many(db: Database, who: str) -> None:
        caller = Caller(who, "north", frozenset())
        try:
            for n in range(40):
                together.wait(timeout=30)  # both race for the head in every round
                with db.write() as session:
                    append(session, [read_event(n, caller), read_event(n, caller)], NOW)
        except BaseException:
            together.abort()  # the other writer stops waiting for this one
            raise

    with ThreadPoolExecutor(len(writers)) as pool:
        running = [pool.submit(write_many, db, f"hub-{i}") for i, db in enumerate(writers)]
        for future in running:
            future.result()  # re-raises a writer's failure here
    for db in writers:
        db.close()
    report = verify(database)
    assert (report.intact, report.entries) == (True, 160)
    clients = [e.client for e in recent(database, 160)]
    assert clients.count("hub-0") == clients.count("hub-1") == 80
    # They really interleaved: neither wrote all its entries in one run.
    assert clients != sorted(clients)


# -- reading it -----------------------------------------------------------------------------------


def test_recent_entries_show_who_did_what_oldest_first(database: Database) -> None:
    search = audit_event(
        Caller("console", "*", frozenset()),
        action="E",
        interaction="search-type",
        outcome="4",
        entities=["Patient/a", "Patient/b"],
        patients=["Patient/a", "Patient/b"],
        query="name=Amina",
        at=NOW,
    )
    with database.write() as session:
        append(session, [read_event(1), read_event(2), search], NOW)
    found = recent(database, 2)
    assert [e.seq for e in found] == [2, 3]
    last = found[-1]
    assert (last.client, last.interaction, last.action, last.outcome) == (
        "console",
        "search-type",
        "E",
        "4",
    )
    assert last.entity_count == 2
    assert last.recorded == "2026-03-01T08:00:00.000000Z"
