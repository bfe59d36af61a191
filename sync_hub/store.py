"""The hub's SQLite database, opened through sqlite-utils: charts, devices, catchments.

Each request opens its own connection and does all its writing in one ``BEGIN IMMEDIATE``
transaction, committed before the answer is sent: SQLite lets one writer in at a time, so two
requests never interleave inside a transaction, and one that finds the database locked waits
up to the busy timeout. The write-ahead log lets reads go on meanwhile; ``synchronous=FULL``
makes a commit survive the power going off the moment after.

Tables::

    charts(id, kind, data, heads, village_key, household_id, created_by_device, updated_at)
    chws(name)                       catchments(chw, kind 'village'|'household', value, label)
    devices(id, chw, public_key, label, state, enrolled_at, state_changed_at, last_seen,
            told_at)                 when it last heard it is revoked or retired
    enroll_codes(code_hash, chw, created_at, expires_at, used_at, device)
    device_docs(device, doc, heads)  what each device is known to hold of each chart
    offers(device, doc)              new charts sent to a device and not yet acknowledged
    nonces(device, nonce, at)        recent request nonces, pruned after the clock-skew window
    exchanges(device, count)         syncs committed per device (SyncResponse.exchange)
    quarantine(id, device, doc, kind, payload, digest, reason, first_at, last_at, times)
    meta(key, value)
    fhir_outbox(seq, doc, version, queued_at)     patient charts central has not acknowledged
    fhir_quarantine(doc, version, status, reason, at)   charts central refused, or unprojectable
    fhir_state(key, value)           the fetch cursors, the last push and fetch
    fhir_lease(name, holder, expires_at)           who may talk to central now (sync_hub/outbox.py)

A chart's ``data`` is a saved Automerge document, followed, once devices have changed it, by
the change chunks they sent (``care_record.sync.documents.apply_changes(append=True)``): loading
it reads both alike, and saving it again on every change would cost as much as the load.

Heads are stored as ``care_record.sync.heads_key`` (sorted hashes joined), so "the device has
what we have" is one comparison of two blobs in SQL.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import automerge.core as am
import sqlite_utils

from care_record import CareRecordError, Chart, ChartTooNew, HouseholdRecord, SystemClock, registers
from care_record.folding import fold
from care_record.sync import Stored, heads_key, split_heads
from care_record.sync.documents import load_snapshot
from sync_hub import outbox
from sync_hub.errors import Busy

log = logging.getLogger(__name__)

POOL_SIZE = 4  # connections kept open: one writer at a time, a few readers beside it

STORE_FORMAT = "1"
KINDS = ("patient", "household")
_INDEX_CLOCK = SystemClock()


class Store:
    """Where the database is, and how to open it for one request."""

    def __init__(self, path: Path, *, busy_timeout_seconds: int = 30) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        # The requests of one process queue here for the write transaction. Left to SQLite's
        # busy handler instead, each waiter sleeps and polls (up to 100 ms a try), so the
        # database sat idle between transactions while requests waited: with 200 tablets
        # syncing at once, the hub was busy less than half of the time. SQLite's own lock
        # still keeps other processes (the CLI) apart.
        self._writer = threading.Lock()
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._opened = threading.BoundedSemaphore(POOL_SIZE)  # connections still to open

    def create(self) -> None:
        """Create the file and its tables if missing; safe to run again."""
        with self.connect() as db:
            db.execute("PRAGMA journal_mode = WAL")
            with _locked(db):
                if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                    had_outbox = "fhir_outbox" in db.table_names()
                    for statement in _ADDED:
                        db.execute(statement)
                    if "learned" not in db.table("device_docs").columns_dict:
                        db.execute(_LEARNED_COLUMN)
                    if not had_outbox:
                        # A hub older than the push to central: every chart is new to central.
                        outbox.queue_all_patients(db)
                    return
                for statement in (*_SCHEMA, *_ADDED, _LEARNED_COLUMN):
                    db.execute(statement)
                db.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", [STORE_FORMAT])

    @contextmanager
    def connect(self) -> Iterator[sqlite_utils.Database]:
        """A connection from a small pool, returned afterwards: opening one per request cost
        about 3 ms of a 20 ms sync, and one per thread held a page cache in each of the
        server's 40 threads. Statements outside ``write`` autocommit."""
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self._open() if self._opened.acquire(blocking=False) else self._pool.get()
        try:
            if conn.in_transaction:  # left open by an interrupted request: start clean
                conn.execute("ROLLBACK")
            # recursive_triggers: set once when the connection is opened, not per request.
            yield sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        finally:
            self._pool.put(conn)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path),
            isolation_level=None,
            timeout=self.busy_timeout_seconds,
            check_same_thread=False,
        )
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA recursive_triggers = ON")  # as sqlite-utils would set it
        return conn

    def close(self) -> None:
        """Close the pooled connections that are idle."""
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction on a new connection: committed when the block ends, rolled
        back if it raises. Raises Busy if the database stays locked past the busy timeout."""
        # The lock first, then a connection: a request waiting its turn holds none of the
        # pool's few, which the requests still checking signatures and applying changes need.
        if not self._writer.acquire(timeout=self.busy_timeout_seconds):
            raise Busy("the hub is busy; try again in a moment")
        try:
            with self.connect() as db, _locked(db):
                yield db
        finally:
            self._writer.release()

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A consistent read on a new connection (a deferred transaction, rolled back)."""
        with self.connect() as db:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("ROLLBACK")


@contextmanager
def _locked(db: sqlite_utils.Database) -> Iterator[None]:
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise Busy("the hub is busy; try again in a moment") from None
        raise
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# -- charts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartIndex:
    """What the hub reads from a chart to decide who may see it."""

    village_key: str | None
    household_id: str | None


def get_chart(db: sqlite_utils.Database, doc_id: str) -> Stored | None:
    row = db.execute("SELECT kind, data, heads FROM charts WHERE id = ?", [doc_id]).fetchone()
    if row is None:
        return None
    return Stored(doc_id, row[0], bytes(row[1]), split_heads(row[2]))


def put_chart(
    db: sqlite_utils.Database,
    doc_id: str,
    kind: str,
    data: bytes,
    heads: list[bytes],
    *,
    device: str,
    at: str,
    document: am.Document | None = None,
) -> None:
    """Store a chart, new or merged, with its index. ``device`` is recorded as its creator
    only when the hub did not have it before. ``document``: the same chart already loaded.

    A patient chart is queued for central in the same transaction (household charts are not
    pushed yet): one small upsert, the projection waits for the pusher."""
    index = read_index(doc_id, kind, data, document)
    db.execute(
        "INSERT INTO charts (id, kind, data, heads, village_key, household_id, "
        "created_by_device, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET data = excluded.data, heads = excluded.heads, "
        "village_key = excluded.village_key, household_id = excluded.household_id, "
        "updated_at = excluded.updated_at",
        [doc_id, kind, data, heads_key(heads), index.village_key, index.household_id, device, at],
    )
    if kind == "patient":
        outbox.queue(db, doc_id, at=at)


def read_index(
    doc_id: str, kind: str, data: bytes, document: am.Document | None = None
) -> ChartIndex:
    """The chart's village (folded) and household, read from its registers.

    A chart the hub cannot read as its own schema (written by a newer app) is still stored and
    passed on; its registers are read as they stand. One whose fields cannot be read at all is
    indexed as having neither, so only the tablet that made it sees it until it is fixed.
    """
    try:
        fields = _fields(kind, data) if document is None else _register_values(document)
    except CareRecordError as exc:
        log.warning("chart %s stored without catchment index: %s", doc_id, type(exc).__name__)
        return ChartIndex(None, None)
    village = fields.get("village")
    household = doc_id if kind == "household" else fields.get("household_id")
    return ChartIndex(
        fold(village) if isinstance(village, str) and fold(village) else None,
        household.strip().lower() if isinstance(household, str) and household.strip() else None,
    )


def _fields(kind: str, data: bytes) -> dict[str, object]:
    """The chart's fields as its view shows them (each register's newest value). Read from
    the registers alone: building the whole view would copy out every encounter too."""
    loader = Chart if kind == "patient" else HouseholdRecord
    try:
        document = loader.load(data, author="hub", clock=_INDEX_CLOCK).document
    except ChartTooNew:
        document = load_snapshot(kind, data)
    return _register_values(document)


def _register_values(document: am.Document) -> dict[str, object]:
    found = registers.read_paths(document, _INDEXED)
    return {path: values[0].value for path, values in found.items()}


_INDEXED = {"village", "household_id"}


# -- schema -------------------------------------------------------------------------------------

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE charts (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        data BLOB NOT NULL,
        heads BLOB NOT NULL,
        village_key TEXT,
        household_id TEXT,
        created_by_device TEXT,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX charts_village ON charts (village_key)",
    "CREATE INDEX charts_household ON charts (household_id)",
    "CREATE INDEX charts_creator ON charts (created_by_device)",
    "CREATE TABLE chws (name TEXT PRIMARY KEY)",
    """CREATE TABLE catchments (
        chw TEXT NOT NULL REFERENCES chws (name),
        kind TEXT NOT NULL CHECK (kind IN ('village', 'household')),
        value TEXT NOT NULL,
        label TEXT NOT NULL,
        PRIMARY KEY (chw, kind, value)
    )""",
    "CREATE INDEX catchments_value ON catchments (kind, value)",
    """CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        chw TEXT NOT NULL REFERENCES chws (name),
        public_key BLOB NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'retired', 'revoked')),
        enrolled_at TEXT NOT NULL,
        state_changed_at TEXT NOT NULL,
        last_seen TEXT,
        told_at TEXT
    )""",
    """CREATE TABLE enroll_codes (
        code_hash TEXT PRIMARY KEY,
        chw TEXT NOT NULL REFERENCES chws (name),
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        device TEXT
    )""",
    """CREATE TABLE device_docs (
        device TEXT NOT NULL,
        doc TEXT NOT NULL,
        heads BLOB NOT NULL,
        PRIMARY KEY (device, doc)
    ) WITHOUT ROWID""",
    "CREATE INDEX device_docs_doc ON device_docs (doc)",
    """CREATE TABLE offers (
        device TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (device, doc)
    ) WITHOUT ROWID""",
    """CREATE TABLE nonces (
        device TEXT NOT NULL,
        nonce TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (device, nonce)
    ) WITHOUT ROWID""",
    "CREATE INDEX nonces_age ON nonces (device, at)",
    """CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        doc TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload BLOB NOT NULL,
        digest TEXT NOT NULL,
        reason TEXT NOT NULL,
        first_at TEXT NOT NULL,
        last_at TEXT NOT NULL,
        times INTEGER NOT NULL DEFAULT 1,
        UNIQUE (device, doc, digest)
    )""",
)

# In which of the device's syncs (its exchange count) the hub learned what it holds of a chart:
# when the device says it last heard an earlier count, it went back in time (restored from a
# backup) and what was learned since is forgotten, so those charts are sent to it again.
_LEARNED_COLUMN = "ALTER TABLE device_docs ADD COLUMN learned INTEGER NOT NULL DEFAULT 0"

# Tables added since format 1, created when an older database is opened.
_ADDED = (
    # Syncs committed per device: the count goes in each answer (SyncResponse.exchange).
    """CREATE TABLE IF NOT EXISTS exchanges (
        device TEXT PRIMARY KEY,
        count INTEGER NOT NULL
    ) WITHOUT ROWID""",
    # One row per chart central has not acknowledged, in the order they first changed (seq);
    # a new change bumps version and keeps the row's place, so a busy chart starves no other.
    """CREATE TABLE IF NOT EXISTS fhir_outbox (
        seq INTEGER PRIMARY KEY,
        doc TEXT NOT NULL UNIQUE,
        version INTEGER NOT NULL,
        queued_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS fhir_quarantine (
        doc TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS fhir_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS fhir_lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
)
