"""SqlJobStore keeps APScheduler's jobs in central's database, on SQLite and PostgreSQL: the whole
BaseJobStore contract, jobs that cannot be restored, two stores adding one job at once, and a
job surviving a restart."""

from __future__ import annotations

import logging
import pickle
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from central.database import Database
from sms.jobstore import SqlJobStore

T0 = datetime(2030, 1, 1, 6, 0, tzinfo=UTC)
SCHEDULER = BackgroundScheduler(timezone=UTC)  # never started: jobs only point at it


@pytest.fixture
def store(database: Database) -> SqlJobStore:
    return started(SqlJobStore(database))


def started(store: SqlJobStore) -> SqlJobStore:
    store.start(SCHEDULER, "default")
    return store


def job(job_id: str, next_run_time: datetime | None, *, seconds: float = 60) -> Job:
    return Job(
        SCHEDULER,
        id=job_id,
        func="sms.scheduler:run_task",
        trigger=IntervalTrigger(seconds=seconds, timezone=UTC),
        executor="default",
        args=(job_id,),
        kwargs={},
        name=job_id,
        misfire_grace_time=30,
        coalesce=True,
        max_instances=1,
        next_run_time=next_run_time,
    )


def stored_ids(database: Database) -> list[str]:
    with database.read() as session:
        return [row[0] for row in session.execute("SELECT id FROM sms_jobs ORDER BY id")]


def present(store: SqlJobStore, job_id: str) -> Job:
    found = store.lookup_job(job_id)
    assert found is not None
    return found


def ids(jobs: list[Job]) -> list[str]:
    return [found.id for found in jobs]


def test_an_added_job_is_looked_up_whole(store: SqlJobStore) -> None:
    store.add_job(job("sms:plan", T0 + timedelta(seconds=10.25), seconds=45))

    found = present(store, "sms:plan")

    assert found.id == "sms:plan"
    assert found.next_run_time == T0 + timedelta(seconds=10.25)
    assert found.func_ref == "sms.scheduler:run_task"
    assert found.args == ("sms:plan",)
    assert found.trigger.interval == timedelta(seconds=45)
    assert (found.coalesce, found.max_instances, found.misfire_grace_time) == (True, 1, 30)
    # The store ties the job to its scheduler and alias, as APScheduler requires.
    assert found._scheduler is SCHEDULER
    assert found._jobstore_alias == "default"


def test_looking_up_a_missing_job_gives_none(store: SqlJobStore) -> None:
    assert store.lookup_job("sms:nothing") is None


def test_adding_an_existing_id_conflicts_and_keeps_the_stored_job(store: SqlJobStore) -> None:
    store.add_job(job("sms:plan", T0))

    with pytest.raises(ConflictingIdError):
        store.add_job(job("sms:plan", T0 + timedelta(hours=1)))

    assert present(store, "sms:plan").next_run_time == T0


def test_two_stores_adding_one_job_at_once_write_it_once(database: Database) -> None:
    stores = [started(SqlJobStore(database)) for _ in range(2)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def add(store: SqlJobStore) -> None:
        barrier.wait()
        try:
            store.add_job(job("sms:plan", T0))
            outcomes.append("added")
        except ConflictingIdError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=add, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(outcomes) == ["added", "conflict"]
    assert stored_ids(database) == ["sms:plan"]


def test_update_replaces_the_stored_job(store: SqlJobStore) -> None:
    store.add_job(job("sms:plan", T0))

    store.update_job(job("sms:plan", T0 + timedelta(minutes=5), seconds=120))

    found = present(store, "sms:plan")
    assert found.next_run_time == T0 + timedelta(minutes=5)
    assert found.trigger.interval == timedelta(seconds=120)
    assert store.get_due_jobs(T0 + timedelta(minutes=4)) == []


def test_updating_a_missing_job_is_a_lookup_error(store: SqlJobStore) -> None:
    with pytest.raises(JobLookupError):
        store.update_job(job("sms:nothing", T0))

    assert store.lookup_job("sms:nothing") is None


def test_remove_deletes_one_job(database: Database, store: SqlJobStore) -> None:
    store.add_job(job("sms:plan", T0))
    store.add_job(job("sms:dispatch", T0))

    store.remove_job("sms:plan")

    assert store.lookup_job("sms:plan") is None
    assert stored_ids(database) == ["sms:dispatch"]


def test_removing_a_missing_job_is_a_lookup_error(store: SqlJobStore) -> None:
    store.add_job(job("sms:plan", T0))

    with pytest.raises(JobLookupError):
        store.remove_job("sms:nothing")

    assert ids(store.get_all_jobs()) == ["sms:plan"]


def test_due_jobs_are_those_at_or_before_now_in_run_time_order(store: SqlJobStore) -> None:
    for job_id, seconds in [("c", 30), ("a", 10), ("d", 40), ("b", 20)]:
        store.add_job(job(job_id, T0 + timedelta(seconds=seconds)))
    store.add_job(job("paused", None))

    due = store.get_due_jobs(T0 + timedelta(seconds=30))

    assert ids(due) == ["a", "b", "c"]
    assert [found.next_run_time for found in due] == [
        T0 + timedelta(seconds=s) for s in (10, 20, 30)
    ]
    assert store.get_due_jobs(T0) == []


def test_due_jobs_compare_instants_whatever_the_zone(store: SqlJobStore) -> None:
    store.add_job(job("sms:plan", T0))
    dar_es_salaam = timezone(timedelta(hours=3))

    assert ids(store.get_due_jobs(T0.astimezone(dar_es_salaam))) == ["sms:plan"]
    assert store.get_due_jobs((T0 - timedelta(seconds=1)).astimezone(dar_es_salaam)) == []


def test_next_run_time_is_the_earliest_active_one(store: SqlJobStore) -> None:
    assert store.get_next_run_time() is None
    store.add_job(job("paused", None))
    assert store.get_next_run_time() is None

    store.add_job(job("later", T0 + timedelta(hours=1)))
    store.add_job(job("sooner", T0 + timedelta(seconds=1.5)))

    earliest = store.get_next_run_time()
    assert earliest == T0 + timedelta(seconds=1.5)
    assert earliest is not None
    assert earliest.tzinfo is not None


def test_all_jobs_come_in_run_time_order_with_paused_ones_last(store: SqlJobStore) -> None:
    store.add_job(job("paused-1", None))
    store.add_job(job("later", T0 + timedelta(hours=1)))
    store.add_job(job("paused-2", None))
    store.add_job(job("sooner", T0))

    everything = store.get_all_jobs()

    assert ids(everything) == ["sooner", "later", "paused-1", "paused-2"]
    assert [found.next_run_time for found in everything][2:] == [None, None]


def test_remove_all_jobs_empties_the_store(database: Database, store: SqlJobStore) -> None:
    store.add_job(job("a", T0))
    store.add_job(job("b", None))

    store.remove_all_jobs()

    assert store.get_all_jobs() == []
    assert stored_ids(database) == []


def test_jobs_that_cannot_be_restored_are_removed_and_the_rest_load(
    database: Database, store: SqlJobStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.add_job(job("sms:good", T0))
    # A job whose function no longer exists; its name carries something a log must not show.
    gone = job("sms:gone", T0).__getstate__()
    gone["func"] = "sms.nowhere_255712345678:missing"
    with database.write() as session:
        session.executemany(
            "INSERT INTO sms_jobs (id, next_run_time, job_state) VALUES (?, ?, ?)",
            [
                ("sms:garbage", T0.timestamp(), b"not a pickle at all"),
                ("sms:gone", T0.timestamp(), pickle.dumps(gone)),
            ],
        )

    with caplog.at_level(logging.WARNING, logger="sms.jobstore"):
        assert ids(store.get_due_jobs(T0)) == ["sms:good"]

    assert stored_ids(database) == ["sms:good"]
    assert "sms:garbage" in caplog.text
    assert "sms:gone" in caplog.text
    assert "255712345678" not in caplog.text


def test_looking_up_a_job_that_cannot_be_restored_removes_it(
    database: Database, store: SqlJobStore
) -> None:
    with database.write() as session:
        session.execute(
            "INSERT INTO sms_jobs (id, next_run_time, job_state) VALUES (?, ?, ?)",
            ("sms:garbage", None, b"\x80\x05garbage"),
        )

    assert store.lookup_job("sms:garbage") is None
    assert stored_ids(database) == []


def test_a_job_survives_a_restart(database: Database, store: SqlJobStore) -> None:
    store.add_job(job("sms:plan", T0 + timedelta(seconds=7.125), seconds=90))
    store.shutdown()

    after_restart = started(SqlJobStore(database))

    found = present(after_restart, "sms:plan")
    assert found.next_run_time == T0 + timedelta(seconds=7.125)
    assert found.trigger.interval == timedelta(seconds=90)
    assert after_restart.get_next_run_time() == T0 + timedelta(seconds=7.125)
