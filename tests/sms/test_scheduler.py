"""start_scheduler runs the reminder service's tasks from jobs kept in central's database, on
SQLite and PostgreSQL: repeated runs, a restart keeping the schedule, a changed interval
replacing it, stale jobs removed, two processes sharing the store, and failures (a task's, the
store's) that do not stop later runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from central.database import Database, PostgresDatabase, SqliteDatabase, open_database
from sms.errors import NotFound
from sms.jobstore import SqlJobStore
from sms.scheduler import Task, run_task, start_scheduler

TICK = 0.2  # seconds between runs in the tests that wait for runs
WAIT = 10  # seconds to wait for runs before failing


class Runs:
    """Counts a task's runs and signals when it has run ``enough`` times."""

    def __init__(self, enough: int, action: Callable[[int], None] = lambda _n: None) -> None:
        self.count = 0
        self.enough = enough
        self.done = threading.Event()
        self._action = action
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.count += 1
            n = self.count
        if n >= self.enough:
            self.done.set()
        self._action(n)


@contextmanager
def running(
    database: Any, tasks: Mapping[str, Task], **options: Any
) -> Iterator[BackgroundScheduler]:
    scheduler = start_scheduler(database, tasks, **options)
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=True)


def stored(database: Database, job_id: str) -> Any:
    return started_store(database).lookup_job(job_id)


def started_store(database: Database) -> SqlJobStore:
    store = SqlJobStore(database)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    return store


def reopen(database: Database) -> Database:
    """A second handle on the same database, as another central process would have (its own
    connections and, on SQLite, its own writer lock)."""
    if isinstance(database, SqliteDatabase):
        return open_database(f"sqlite:///{database.path}")
    assert isinstance(database, PostgresDatabase)
    return open_database(database.url)


def never() -> None:
    raise AssertionError("this task runs an hour from now, not in a test")


def test_a_task_runs_repeatedly(database: Database) -> None:
    runs = Runs(enough=3)

    with running(database, {"repeat": Task(runs, TICK)}):
        assert runs.done.wait(WAIT)


def test_the_job_is_an_interval_job_that_names_its_task(database: Database) -> None:
    with running(database, {"plan": Task(never, 3600)}):
        pass

    job = stored(database, "sms:plan")
    assert job.func_ref == "sms.scheduler:run_task"
    assert job.args == ("plan",)
    assert job.trigger.interval == timedelta(hours=1)
    assert (job.coalesce, job.max_instances) == (True, 1)
    assert job.misfire_grace_time == 3 * 3600
    assert job.next_run_time > datetime.now(UTC) + timedelta(minutes=59)


def test_a_restart_keeps_the_stored_next_run_time(database: Database) -> None:
    with running(database, {"plan": Task(never, 3600)}):
        pass
    before = stored(database, "sms:plan").next_run_time

    with running(database, {"plan": Task(never, 3600)}):
        pass

    assert stored(database, "sms:plan").next_run_time == before


def test_a_changed_interval_replaces_the_job(database: Database) -> None:
    with running(database, {"plan": Task(never, 3600)}):
        pass
    before = stored(database, "sms:plan").next_run_time

    with running(database, {"plan": Task(never, 7200)}):
        pass

    after = stored(database, "sms:plan")
    assert after.trigger.interval == timedelta(hours=2)
    assert after.next_run_time > before + timedelta(minutes=59)


def test_jobs_of_tasks_no_longer_given_are_removed(database: Database) -> None:
    with running(database, {"plan": Task(never, 3600), "old": Task(never, 3600)}):
        pass
    # Another scheduler's jobs in the same table are not ours to remove.
    with running(database, {"plan": Task(never, 3600)}, name="other"):
        pass

    with running(database, {"plan": Task(never, 3600)}):
        pass

    assert stored(database, "sms:old") is None
    assert stored(database, "sms:plan") is not None
    assert stored(database, "other:plan") is not None


def test_two_processes_sharing_the_store_both_start_and_the_task_runs(database: Database) -> None:
    runs = Runs(enough=3)
    handles = [database, reopen(database)]
    barrier = threading.Barrier(len(handles))

    def start(handle: Database) -> BackgroundScheduler:
        barrier.wait()  # both add the job at once, as two processes starting together would
        return start_scheduler(handle, {"shared": Task(runs, TICK)})

    with ThreadPoolExecutor(len(handles)) as pool:
        starting = [pool.submit(start, handle) for handle in handles]
    schedulers = [future.result() for future in starting if future.exception() is None]
    try:
        assert [future.exception() for future in starting] == [None, None]
        assert runs.done.wait(WAIT)
        assert [job.id for job in started_store(database).get_all_jobs()] == ["sms:shared"]
    finally:
        for scheduler in schedulers:
            scheduler.shutdown(wait=True)
        handles[1].close()


def test_a_failing_run_does_not_stop_later_runs(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    def fail_first(n: int) -> None:
        if n == 1:
            raise RuntimeError("row +255712345678 already exists")

    runs = Runs(enough=3, action=fail_first)

    with (
        caplog.at_level(logging.ERROR, logger="sms.scheduler"),
        running(database, {"flaky": Task(runs, TICK)}),
    ):
        assert runs.done.wait(WAIT)

    assert "task 'flaky' failed: RuntimeError at " in caplog.text
    # Another library's message may carry data (psycopg's repeats a row's key values).
    assert "255712345678" not in caplog.text


def test_a_failure_of_ours_is_logged_with_its_message(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    def missing() -> None:
        raise NotFound("no reminder with that ID")

    with running(database, {"ours": Task(missing, 3600)}), caplog.at_level(logging.ERROR):
        run_task("ours")

    [failure] = [r.getMessage() for r in caplog.records if r.name == "sms.scheduler"]
    assert failure.startswith("task 'ours' failed: NotFound at ")
    assert failure.endswith(": no reminder with that ID")


def test_a_task_this_process_does_not_know_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sms.scheduler"):
        run_task("left-by-an-older-version")

    assert "no task 'left-by-an-older-version' in this process" in caplog.text


class FlakyDatabase:
    """The database, whose writes fail while ``down`` is set, as they do while PostgreSQL
    restarts."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self.dialect = database.dialect
        self.down = threading.Event()

    def write(self) -> AbstractContextManager[Any]:
        if self.down.is_set():
            raise ConnectionError("the database is away")
        return self._database.write()  # type: ignore[no-any-return]

    def read(self) -> AbstractContextManager[Any]:
        return self._database.read()  # type: ignore[no-any-return]


def test_the_scheduler_survives_a_store_that_cannot_save(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyDatabase(database)
    during = Runs(enough=2)
    after = Runs(enough=3)
    current = [during]

    def run() -> None:
        current[0]()

    with (
        caplog.at_level(logging.WARNING, logger="sms.scheduler"),
        running(flaky, {"steady": Task(run, TICK)}, retry_seconds=TICK) as scheduler,
    ):
        flaky.down.set()
        # Runs go on while the next run time cannot be saved (they run again: tasks are safe to).
        assert during.done.wait(WAIT)
        current[0] = after
        flaky.down.clear()
        assert after.done.wait(WAIT)
        assert stored(database, "sms:steady").next_run_time > datetime.now(UTC) - timedelta(
            seconds=1
        )
        assert scheduler.running

    assert "job store failed (ConnectionError)" in caplog.text
