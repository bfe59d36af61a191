"""APScheduler 3's job store in central's own database (table ``sms_jobs``), so that the
reminder service's schedule outlives a restart.

``sms`` reaches the database only through the ``Database`` shape central hands it
(``sms.database``), so APScheduler's SQLAlchemy store, which opens an engine of its own, does not
fit. This store follows it otherwise: a job is its pickled ``Job.__getstate__()``; its next run
time sits beside it as epoch seconds (UTC), so that both backends find the due jobs with one
indexed comparison; a job that can no longer be restored (its pickle unreadable, its function
gone) is removed with a warning that names only its ID.

Several central processes may share the table. Adding a job is one
``INSERT ... ON CONFLICT DO NOTHING``: when two add the same ID at once, one row is written and
the other caller gets ``ConflictingIdError``. Statements use ``RETURNING`` to learn whether a row
was touched (SQLite 3.35 or later).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError

from sms.database import Database, Row

log = logging.getLogger(__name__)

_SELECT = "SELECT id, job_state FROM sms_jobs"
# Paused jobs (no next run time) last, as APScheduler asks; SQLite would sort NULL first.
_ORDER = " ORDER BY next_run_time IS NULL, next_run_time, id"


class SqlJobStore(BaseJobStore):  # type: ignore[misc]  # APScheduler 3 has no type hints
    """APScheduler's ``BaseJobStore`` over ``database``'s ``sms_jobs`` table (which central
    creates). Raises ``ConflictingIdError`` when adding an ID that is there, and
    ``JobLookupError`` when updating or removing one that is not."""

    def __init__(
        self, database: Database, *, pickle_protocol: int = pickle.HIGHEST_PROTOCOL
    ) -> None:
        super().__init__()
        self._database = database
        self._pickle_protocol = pickle_protocol

    def lookup_job(self, job_id: str) -> Job | None:
        jobs = self._select(" WHERE id = ?", (job_id,))
        return jobs[0] if jobs else None

    def get_due_jobs(self, now: datetime) -> list[Job]:
        return self._select(" WHERE next_run_time <= ?" + _ORDER, (_epoch(now),))

    def get_next_run_time(self) -> datetime | None:
        with self._database.read() as session:
            rows = session.execute("SELECT MIN(next_run_time) FROM sms_jobs")
        earliest = rows[0][0] if rows else None
        return None if earliest is None else datetime.fromtimestamp(earliest, UTC)

    def get_all_jobs(self) -> list[Job]:
        return self._select(_ORDER, ())

    def add_job(self, job: Job) -> None:
        state = self._pickle(job)
        with self._database.write() as session:
            added = session.execute(
                "INSERT INTO sms_jobs (id, next_run_time, job_state) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                (job.id, _epoch(job.next_run_time), state),
            )
        if not added:
            raise ConflictingIdError(job.id)

    def update_job(self, job: Job) -> None:
        state = self._pickle(job)
        with self._database.write() as session:
            updated = session.execute(
                "UPDATE sms_jobs SET next_run_time = ?, job_state = ? WHERE id = ? RETURNING id",
                (_epoch(job.next_run_time), state, job.id),
            )
        if not updated:
            raise JobLookupError(job.id)

    def remove_job(self, job_id: str) -> None:
        with self._database.write() as session:
            removed = session.execute("DELETE FROM sms_jobs WHERE id = ? RETURNING id", (job_id,))
        if not removed:
            raise JobLookupError(job_id)

    def remove_all_jobs(self) -> None:
        with self._database.write() as session:
            session.execute("DELETE FROM sms_jobs")

    def shutdown(self) -> None:
        """Nothing to free: the database is central's, and central closes it."""

    def __repr__(self) -> str:
        return f"<SqlJobStore (sms_jobs on {self._database.dialect})>"

    def _pickle(self, job: Job) -> bytes:
        return pickle.dumps(job.__getstate__(), self._pickle_protocol)

    def _select(self, tail: str, params: Sequence[object]) -> list[Job]:
        with self._database.read() as session:
            rows = session.execute(_SELECT + tail, params)
        return self._restore(rows)

    def _restore(self, rows: list[Row]) -> list[Job]:
        """The jobs of ``rows``; those that cannot be restored are removed from the store."""
        jobs: list[Job] = []
        broken: list[str] = []
        for job_id, state in rows:
            try:
                jobs.append(self._reconstitute(state))
            # Whatever unpickling raises: a bad row must not keep the other jobs from running.
            except Exception as exc:  # noqa: BLE001
                # The class name only: an unpickling message may quote the stored bytes.
                log.warning("cannot restore job %s (%s): removing it", job_id, type(exc).__name__)
                broken.append(job_id)
        if broken:
            self._remove_broken(broken)
        return jobs

    def _remove_broken(self, job_ids: list[str]) -> None:
        with self._database.write() as session:
            session.executemany("DELETE FROM sms_jobs WHERE id = ?", [(i,) for i in job_ids])

    def _reconstitute(self, state: bytes | memoryview) -> Job:
        # Only this store writes the table, and it is central's own database: whoever can
        # write it can already run code as central, so unpickling it adds no exposure.
        job_state: dict[str, Any] = pickle.loads(bytes(state))  # noqa: S301
        job_state["jobstore"] = self
        job = Job.__new__(Job)
        job.__setstate__(job_state)
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job


def _epoch(moment: datetime | None) -> float | None:
    """``moment`` as UTC epoch seconds, as APScheduler's ``datetime_to_utc_timestamp`` gives it
    (None stays None: a paused job)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("the job store takes timezone-aware times only")
    return moment.timestamp()
