"""When the reminder service's periodic work runs: APScheduler 3, its jobs kept in central's
database (``sms.jobstore``), so that a restart does not reset the schedule.

Central calls ``start_scheduler`` once with its tasks (plan the reminders, dispatch the due ones,
reconcile stale sends), each a closure over this process's collaborators, and calls
``scheduler.shutdown(wait=True)`` when it stops.

Two central processes that share a database each run a scheduler over the same jobs. APScheduler
3 does not coordinate schedulers sharing a store (APScheduler 4 would, but DESIGN.md fixes 3), so
both may run a task in the same period. That is safe because every task is: the outbox claims a
row before sending it, so a reminder goes out once whichever process dispatches it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from sms.database import Database
from sms.errors import SmsError
from sms.jobstore import SqlJobStore

log = logging.getLogger(__name__)

_RUN_TASK = "sms.scheduler:run_task"
_THREADS = 2
# A run that starts late (a busy or sleeping process) still happens within this many intervals.
_MISFIRE_INTERVALS = 3


@dataclass(frozen=True)
class Task:
    """Periodic work: ``run`` is called every ``every_seconds``."""

    run: Callable[[], object]
    every_seconds: float

    def __post_init__(self) -> None:
        if not self.every_seconds > 0:
            raise ValueError("a task runs every so many seconds, more than zero")


# APScheduler pickles a persisted job's function as its name ("module:qualname"), so a job cannot
# hold a closure over this process's database, Twilio sender and clock. Every job calls
# ``run_task`` with its task's name instead, and ``run_task`` finds the closure here, where
# ``start_scheduler`` put it. This also keeps every persisted job restorable by any version of
# the code: a task that a version no longer has is skipped, not an unpicklable job.
_TASKS: dict[str, Task] = {}


def start_scheduler(
    database: Database, tasks: Mapping[str, Task], *, name: str = "sms", retry_seconds: float = 5
) -> BackgroundScheduler:
    """A started background scheduler that runs each of ``tasks`` every ``every_seconds``, as
    job ``{name}:{task}`` in ``database``'s job store.

    A job already stored with the same settings keeps its next run time; one with other settings
    is replaced; stored ``{name}:`` jobs of tasks not given are removed. After a failing store,
    the scheduler tries again in ``retry_seconds``.
    """
    _TASKS.update(tasks)
    scheduler = _Scheduler(
        jobstores={"default": SqlJobStore(database)},
        executors={"default": ThreadPoolExecutor(_THREADS)},
        timezone=UTC,
        jobstore_retry_interval=retry_seconds,
    )
    # Paused: nothing runs until the stored jobs match ``tasks``.
    scheduler.start(paused=True)
    try:
        _reconcile(scheduler, tasks, f"{name}:")
    except BaseException:
        scheduler.shutdown(wait=False)
        raise
    scheduler.resume()
    return scheduler


def run_task(name: str) -> None:
    """Run this process's task ``name``: what every persisted job calls.

    A failure is logged and goes no further: APScheduler would log the exception's message,
    which another library may fill with data (psycopg's repeats a row's key values). A name
    this process does not know (a job left by another version) is logged and skipped.
    """
    task = _TASKS.get(name)
    if task is None:
        log.warning("no task %r in this process (a job left by another version?): skipped", name)
        return
    try:
        task.run()
    # Any failure of one run: the next run must still happen, and the failure is logged.
    except Exception as exc:  # noqa: BLE001
        log.error("task %r failed: %s", name, _describe(exc))  # noqa: TRY400


def _describe(exc: Exception) -> str:
    """The exception's class and where it was raised; its message only if it is one of ours,
    whose messages carry no patient data by rule."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    message = f": {exc}" if isinstance(exc, SmsError) else ""
    return f"{type(exc).__name__}{where}{message}"


def _reconcile(scheduler: BackgroundScheduler, tasks: Mapping[str, Task], prefix: str) -> None:
    for job in scheduler.get_jobs():
        if job.id.startswith(prefix) and job.id.removeprefix(prefix) not in tasks:
            # Another process may have removed it first.
            with contextlib.suppress(JobLookupError):
                scheduler.remove_job(job.id)
    for task_name, task in tasks.items():
        _ensure_job(scheduler, prefix + task_name, task_name, task)


def _ensure_job(scheduler: BackgroundScheduler, job_id: str, task_name: str, task: Task) -> None:
    stored = scheduler.get_job(job_id)
    if stored is not None and _matches(stored, task_name, task):
        return
    try:
        scheduler.add_job(
            _RUN_TASK,
            IntervalTrigger(seconds=task.every_seconds, timezone=UTC),
            args=(task_name,),
            id=job_id,
            name=job_id,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=_misfire_grace_time(task),
            replace_existing=stored is not None,
        )
    except ConflictingIdError:
        # Another process added it between our look and our add: its job stands.
        log.info("job %s was added by another process", job_id)


def _matches(job: Job, task_name: str, task: Task) -> bool:
    """Whether the stored ``job`` is the one ``task`` asks for."""
    trigger = job.trigger
    return bool(
        isinstance(trigger, IntervalTrigger)
        and trigger.interval == timedelta(seconds=task.every_seconds)
        and job.func_ref == _RUN_TASK
        and tuple(job.args) == (task_name,)
        and not job.kwargs
        and job.coalesce
        and job.max_instances == 1
        and job.misfire_grace_time == _misfire_grace_time(task)
    )


def _misfire_grace_time(task: Task) -> int:
    # APScheduler takes whole seconds here.
    return max(1, math.ceil(_MISFIRE_INTERVALS * task.every_seconds))


class _Scheduler(BackgroundScheduler):  # type: ignore[misc]  # APScheduler 3 has no type hints
    """A ``BackgroundScheduler`` whose loop survives a failing job store.

    APScheduler 3 tries again later when reading the due jobs fails, but not when saving a job's
    next run time or reading the next wake-up fails: the exception ends its thread, and no task
    runs again while the process looks healthy. Both fail when the database is away for a moment,
    and saving fails when another process has just removed the job.
    """

    def _process_jobs(self) -> float | None:
        try:
            wait_seconds: float | None = super()._process_jobs()
        # Whatever the store raised; the loop must go on, and the failure is logged.
        except Exception as exc:  # noqa: BLE001
            log.warning(
                "job store failed (%s): trying again in %s s",
                type(exc).__name__,
                self.jobstore_retry_interval,
            )
            return float(self.jobstore_retry_interval)
        return wait_seconds
