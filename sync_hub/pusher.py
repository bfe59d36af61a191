"""The pusher: queued charts to central as transaction bundles, in order, under the lease.

One pass (``Pusher.push_pending``) walks the outbox once in queue order. Each chart is loaded
as stored now and projected (``sync_hub.projection``); charts are packed whole into bundles of
at most ``SYNC_HUB_PUSH_BATCH_RESOURCES`` resources (a larger chart goes alone). A bundle
central takes (200) removes exactly the versions pushed from the queue. A bundle central
refuses (a 4xx with an OperationOutcome: nothing was written) is split in halves until the
refused chart stands alone; that chart goes to quarantine and the others go on. A chart that
cannot be loaded or projected is quarantined the same way. Central unreachable or busy ends
the pass with CentralUnavailable: nothing is lost, the caller retries after a back-off.

Resource IDs are stable (docs/fhir.md), so a bundle sent twice (the answer was lost) writes
the same resources again: a no-op.

``PushLoop`` runs passes in ``serve``: woken when a sync commits, at least every
``SYNC_HUB_PUSH_INTERVAL_SECONDS``, fetching central's replies every
``SYNC_HUB_FETCH_INTERVAL_SECONDS``, backing off after failures. Passes run in a worker
thread: SQLite and Automerge never block the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from care_record import CareRecordError, Chart, ChartView, Clock
from sync_hub import central, outbox
from sync_hub.backoff import Backoff
from sync_hub.central import CentralClient
from sync_hub.devices import stamp
from sync_hub.downstream import Fetcher
from sync_hub.errors import BundleRejected, CentralError, CentralUnavailable, LeaseLost
from sync_hub.lease import Lease
from sync_hub.outbox import Pending
from sync_hub.projection import Region, project_chart, transaction_bundle
from sync_hub.settings import Settings
from sync_hub.store import Store

log = logging.getLogger(__name__)

PAGE_CHARTS = 50  # charts read from the outbox at a time: bounded memory however long the queue
STOP_WAIT_SECONDS = 15.0


class Project(Protocol):
    """Turns a chart's view into FHIR resources (``sync_hub.projection.project_chart``)."""

    def __call__(self, view: ChartView, *, region: Region) -> list[dict[str, Any]]: ...


def never() -> bool:
    return False


@dataclass
class PushReport:
    """What one pass (or several, for the CLI) did."""

    charts: int = 0
    resources: int = 0
    bundles: int = 0
    splits: int = 0  # refused bundles split to find the chart central refuses
    quarantined: int = 0
    retries: int = 0
    pending: int = 0  # still queued when the pass ended
    leased_by: str | None = None  # another process held the lease: this pass did nothing


@dataclass
class _Projected:
    pending: Pending
    resources: list[dict[str, Any]]


@dataclass
class Pusher:
    """Pushes the outbox of one hub database to one central server, under ``lease``."""

    store: Store
    central: CentralClient
    lease: Lease
    region: Region
    batch_resources: int
    clock: Clock
    project: Project = project_chart

    def has_pending(self) -> bool:
        """Whether anything waits; a read, so a wake with nothing to do takes no write lock."""
        with self.store.read() as db:
            return db.execute("SELECT 1 FROM fhir_outbox LIMIT 1").fetchone() is not None

    def push_pending(
        self,
        *,
        stop: Callable[[], bool] = never,
        report: PushReport | None = None,
        progress: Callable[[PushReport], None] | None = None,
    ) -> PushReport:
        """Push everything queued now, once, in queue order, counting into ``report``.

        Returns the report (``leased_by`` set if another process is pushing). Raises
        CentralUnavailable (retry later; what was pushed stays pushed, and counted),
        CredentialsRefused, or LeaseLost.
        """
        report = report if report is not None else PushReport()
        report.leased_by = None
        if not self.has_pending():
            report.pending = 0
            return report
        if not self.lease.hold():
            report.leased_by = self.lease.held_by()
            return report
        try:
            for batch in self._bundles(report):
                if stop():
                    break
                self._deliver(batch, report)
                if progress is not None:
                    progress(report)
        finally:
            self.lease.release()
        with self.store.read() as db:
            report.pending = outbox.pending_count(db)
        return report

    # -- packing --------------------------------------------------------------------------------

    def _bundles(self, report: PushReport) -> Iterator[list[_Projected]]:
        """Charts in queue order, packed whole into bundles of at most ``batch_resources``."""
        batch: list[_Projected] = []
        size = 0
        for chart in self._projected(report):
            if batch and size + len(chart.resources) > self.batch_resources:
                yield batch
                batch, size = [], 0
            batch.append(chart)
            size += len(chart.resources)
        if batch:
            yield batch

    def _projected(self, report: PushReport) -> Iterator[_Projected]:
        """Each queued chart once, read a page at a time after the last place read: a chart
        queued again during the pass keeps its place and waits for the next pass."""
        after = 0
        while True:
            with self.store.read() as db:
                page = outbox.pending_after(db, after, PAGE_CHARTS)
            if not page:
                return
            after = page[-1].seq
            for pending in page:
                resources = self._project(pending, report)
                if resources is not None:
                    yield _Projected(pending, resources)

    def _project(self, pending: Pending, report: PushReport) -> list[dict[str, Any]] | None:
        """The chart's resources, or None after quarantining a chart that cannot be read or
        projected (the reason names the error, never the chart's contents)."""
        try:
            chart = Chart.load(pending.data, author="hub", clock=self.clock)
            return self.project(chart.view(), region=self.region)
        except CareRecordError as exc:  # NotAChart, ChartTooNew: their messages name no data
            reason = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - one chart's fault must not stop the others
            reason = _projection_failure(exc)
        log.warning("chart %s quarantined for central: %s", pending.doc, reason)
        self._quarantine(pending, "unprojectable", reason, report)
        return None

    # -- delivery -------------------------------------------------------------------------------

    def _deliver(self, batch: list[_Projected], report: PushReport) -> None:
        """Send one bundle; on a refusal, halve it until the refused chart stands alone."""
        if not self.lease.hold():
            raise LeaseLost("another hub process took over pushing to central")
        resources = [r for chart in batch for r in chart.resources]
        try:
            self.central.transaction(transaction_bundle(resources))
        except BundleRejected as refusal:
            if len(batch) == 1:
                log.warning(
                    "chart %s refused by central (%d)", batch[0].pending.doc, refusal.http_status
                )
                self._quarantine(
                    batch[0].pending, str(refusal.http_status), refusal.diagnostics, report
                )
                return
            report.splits += 1
            middle = len(batch) // 2
            self._deliver(batch[:middle], report)
            self._deliver(batch[middle:], report)
            return
        with self.store.write() as db:
            outbox.delivered(
                db,
                [(chart.pending.doc, chart.pending.version) for chart in batch],
                at=stamp(self.clock.now()),
            )
        report.bundles += 1
        report.charts += len(batch)
        report.resources += len(resources)

    def _quarantine(self, pending: Pending, status: str, reason: str, report: PushReport) -> None:
        with self.store.write() as db:
            outbox.quarantine(
                db,
                pending.doc,
                pending.version,
                status=status,
                reason=reason,
                at=stamp(self.clock.now()),
            )
        report.quarantined += 1


@dataclass(frozen=True)
class Link:
    """Everything that talks to central for one hub database, sharing one client and lease."""

    central: CentralClient
    pusher: Pusher
    fetcher: Fetcher

    def close(self) -> None:
        self.central.close()


def link(
    settings: Settings, store: Store, clock: Clock, *, http: httpx.Client | None = None
) -> Link:
    """Wire the pusher and the fetcher to the central server the settings name.

    Raises CentralNotConfigured if SYNC_HUB_CENTRAL_URL is empty or the key file is missing.
    """
    client = central.connect(settings, clock=clock, http=http)
    lease = Lease(store, clock, seconds=max(120.0, 4.0 * settings.central_timeout_seconds))
    pusher = Pusher(
        store,
        client,
        lease,
        region=Region(settings.region, settings.timezone, settings.facility),
        batch_resources=settings.push_batch_resources,
        clock=clock,
    )
    fetcher = Fetcher(store, client, lease, author=f"hub:{settings.name}", clock=clock)
    return Link(client, pusher, fetcher)


def _projection_failure(exc: Exception) -> str:
    """Why a projection failed, in words that quote nothing of the chart. The projection's
    own refusals are plain ValueErrors naming the record and the rule; other errors may quote
    values (pydantic's ValidationError, a ValueError too, does), so only their type is kept."""
    if type(exc) is ValueError:
        return f"projection failed: {exc}"
    return f"projection failed: {type(exc).__name__}"


# -- the background loop --------------------------------------------------------------------------


class Fetch(Protocol):
    """One pass that may stop between steps: ``downstream.Fetcher.fetch`` or a push."""

    def __call__(self, *, stop: Callable[[], bool]) -> object: ...


class PushLoop:
    """``serve``'s link to central: push when woken or every interval, fetch every interval.

    It never ends on an error: each is logged (without patient data) and retried after a
    back-off. ``wake`` may be called from any thread.
    """

    def __init__(
        self,
        pusher: Pusher,
        fetch: Fetch,
        *,
        push_interval: float,
        fetch_interval: float,
        backoff: Backoff | None = None,
    ) -> None:
        self.pusher = pusher
        self.fetch = fetch
        self.push_interval = push_interval
        self.fetch_interval = fetch_interval
        # Separate back-offs: a fetch that keeps failing must not slow the pushes, nor a
        # successful push reset the fetch's.
        self.backoff = backoff or Backoff()
        self.fetch_backoff = Backoff()
        self._stopping = threading.Event()  # read by the passes, in their worker threads
        self._woken = asyncio.Event()
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        # A thread of its own: a pass waiting on central (up to its timeout) must not hold one
        # of the threads that answer the tablets (the loop's default executor).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sync-hub-push")

    def start(self) -> None:
        """Start the loop as a task of the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self.run(), name="sync_hub push loop")

    async def stop(self) -> None:
        """Stop after the current step (a pass stops between bundles) and wait for it."""
        self._stopping.set()
        self._stopped.set()
        self._woken.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_SECONDS)
            except TimeoutError:
                log.warning("the push loop did not stop in time; leaving it")
                self._task.cancel()
        self._thread.shutdown(wait=False)

    def wake(self) -> None:
        """A sync committed: push soon. Safe from any thread; a no-op before ``start``."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._woken.set)
        except RuntimeError:  # the loop closed as the server stopped: nothing left to wake
            return

    async def run(self) -> None:
        clock = asyncio.get_running_loop()
        next_fetch = clock.time()
        while not self._stopping.is_set():
            self._woken.clear()
            if clock.time() >= next_fetch:
                failed = await self._step("fetch", self.fetch, self.fetch_backoff)
                next_fetch = clock.time() + (self.fetch_interval if failed is None else failed)
            if self._stopping.is_set():
                return
            failed = await self._step("push", self._push, self.backoff)
            if failed is not None:
                await self._wait(self._stopped, failed)  # a sync's wake does not cut it short
                continue
            await self._wait(self._woken, min(self.push_interval, next_fetch - clock.time()))

    def _push(self, *, stop: Callable[[], bool]) -> PushReport:
        report = self.pusher.push_pending(stop=stop)
        if report.charts or report.quarantined:
            log.info(
                "pushed %d charts (%d resources) in %d bundles; %d quarantined, %d pending",
                report.charts,
                report.resources,
                report.bundles,
                report.quarantined,
                report.pending,
            )
        return report

    async def _step(self, what: str, step: Fetch, backoff: Backoff) -> float | None:
        """Run one pass on the push loop's own thread (not the event loop's, nor one that
        answers tablets); None if it went well, else the back-off delay."""
        try:
            pass_ = functools.partial(step, stop=self._stopping.is_set)
            await asyncio.get_running_loop().run_in_executor(self._thread, pass_)
        except CentralUnavailable as exc:
            delay = backoff.next_delay(exc.retry_after)
            log.warning("%s: %s; next try in %.0f s", what, exc, delay)
            return delay
        except CentralError as exc:
            delay = backoff.next_delay()
            # The message says what the operator must do; a trace would add nothing.
            log.error("%s: %s; next try in %.0f s", what, exc, delay)  # noqa: TRY400
            return delay
        except Exception:
            delay = backoff.next_delay()
            # A fault of the hub's own. Projection and merge errors, whose messages might
            # quote a chart, are caught per chart before this; what is left names code.
            log.exception("%s failed; next try in %.0f s", what, delay)
            return delay
        backoff.reset()
        return None

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        """Wait until ``event`` is set or ``seconds`` have passed."""
        try:
            await asyncio.wait_for(event.wait(), max(0.0, seconds))
        except TimeoutError:
            return
