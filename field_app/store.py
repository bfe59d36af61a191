"""The tablet's encrypted database: charts as Automerge bytes, plus the indexes the app needs.

The database is SQLCipher 4 (AES-256, page HMACs), keyed with the raw 256-bit data key so that
opening it pays no second key derivation. It is opened through sqlite-utils. Temporary tables
and sorts stay in memory (``temp_store=MEMORY``) and the write-ahead log is encrypted by
SQLCipher like the main file, so no patient byte reaches the disk in clear.

Tables::

    charts(id, kind, doc, given, family, name_key, village, village_key, birth_date,
           conflicts, updated_at)                one row per chart document
    tasks(id, chart_id, kind, description, due, status)   follow-ups, rebuilt from each chart
    meta(key, value)                              store format version
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlcipher3
import sqlite_utils

from care_record import CareRecordError, Chart, ChartView, Clock, HouseholdRecord, NotAChart
from care_record.folding import fold
from care_record.sync import heads_key
from field_app.errors import StoreCorrupt, StoreError, UnknownPatient

DB_FILE = "store.db"

# What the database driver raises for a damaged file; callers at the edge turn it into words.
DatabaseError = sqlcipher3.DatabaseError
STORE_FORMAT = "1"

# SQLite's primary result codes for a damaged file (SQLCipher reports a failed page HMAC so).
_SQLITE_BUSY = 5
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

P = ParamSpec("P")
R = TypeVar("R")


def _damage_is_store_corrupt(
    method: Callable[Concatenate[Store, P], R],
) -> Callable[Concatenate[Store, P], R]:
    """Turn SQLite's "database disk image is malformed" into StoreCorrupt.

    ``connect`` reads only the first page; a damaged page further in shows when a query reaches
    it, and must reach every caller (the CLI, the UI) as StoreCorrupt, not a driver exception.
    After that SQLCipher answers every later query on the connection with "out of memory", so
    the store remembers the damage and keeps saying so.
    """

    @functools.wraps(method)
    def wrapper(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._damaged:
            raise StoreCorrupt(_DAMAGED)
        try:
            return method(self, *args, **kwargs)
        except sqlcipher3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is None or code & 0xFF not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise
            self._damaged = True
            raise StoreCorrupt(_DAMAGED) from None

    return wrapper


_DAMAGED = "the tablet's database is damaged; sync what you can and ask for help"


@dataclass(frozen=True)
class PatientSummary:
    id: str
    given: str
    family: str
    village: str | None
    birth_date: str | None
    conflicts: int


def connect(path: Path, key: bytes | None) -> sqlite_utils.Database:
    """Open (or create) the database at ``path``. ``key=None`` opens it without encryption,
    which only the benchmark does, to measure what encryption costs.

    Raises StoreCorrupt when the file cannot be read with this key.
    """
    path.touch(mode=0o600, exist_ok=True)
    conn = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        if key is not None:
            conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        # SQLCipher's own log goes to the process's stderr; our errors say what went wrong.
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a visit the CHW saw saved survives the battery dying a second later.
        conn.execute("PRAGMA synchronous = FULL")
    except sqlcipher3.DatabaseError as exc:
        conn.close()
        if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_BUSY:
            raise StoreError(
                "the tablet's database is in use by another program; try again"
            ) from None
        raise StoreCorrupt(
            "the tablet's database is damaged or does not match its key file"
        ) from None
    return sqlite_utils.Database(conn)


class Store:
    """Charts and their indexes in one database. Writes happen in short transactions."""

    def __init__(
        self, db: sqlite_utils.Database, *, actor: bytes, author: str, clock: Clock
    ) -> None:
        self.db = db
        self.actor = actor
        self.author = author
        self.clock = clock
        self._damaged = False
        self._ensure_schema()

    def close(self) -> None:
        self.db.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction; rolled back if anything inside raises. Nested use becomes a
        savepoint, so a sync can wrap many chart writes in one transaction."""
        conn = self.db.conn
        if conn.in_transaction:
            conn.execute("SAVEPOINT nested")
            try:
                yield
            except BaseException:
                conn.execute("ROLLBACK TO nested")
                conn.execute("RELEASE nested")
                raise
            conn.execute("RELEASE nested")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- charts -----------------------------------------------------------------------------

    @_damage_is_store_corrupt
    def put_chart(self, chart: Chart) -> ChartView:
        """Save a chart and rebuild its index rows, in one transaction."""
        return self._put(chart.view(), chart.save(), chart.heads)

    @_damage_is_store_corrupt
    def put_document(self, kind: str, data: bytes, doc_id: str | None = None) -> ChartView:
        """Save a document that arrived by sync (a chart or a household), with its indexes.

        Raises StoreCorrupt-free CareRecordError (NotAChart, ChartTooNew) if it cannot be read,
        NotAChart if it is not the document ``doc_id`` (it would replace that one's row).
        """
        opener = Chart if kind == "patient" else HouseholdRecord
        document = opener.load(data, author=self.author, clock=self.clock)
        if doc_id is not None and document.id != doc_id:
            raise NotAChart(f"the changes sent for {doc_id} make the document {document.id}")
        return self._put(document.view(), data, document.heads)

    @_damage_is_store_corrupt
    def get_document(self, doc_id: str) -> tuple[str, bytes, bytes] | None:
        """(kind, saved bytes, heads key) of a stored document, or None."""
        found = self.db.execute(
            "SELECT kind, doc, heads FROM charts WHERE id = ?", [doc_id]
        ).fetchone()
        return None if found is None else (found[0], found[1], found[2] or b"")

    @_damage_is_store_corrupt
    def delete_document(self, doc_id: str) -> None:
        """Remove a document and its index rows (a chart that moved to another CHW)."""
        self.db.execute("DELETE FROM tasks WHERE chart_id = ?", [doc_id])
        self.db.execute("DELETE FROM charts WHERE id = ?", [doc_id])

    def _put(self, view: ChartView, data: bytes, heads: list[bytes]) -> ChartView:
        row = _chart_row(view, data, heads, self.clock.now().isoformat())
        with self.transaction():
            self.db.table("charts").upsert(row, pk="id")
            self.db.execute("DELETE FROM tasks WHERE chart_id = ?", [view.id])
            tasks = (
                [_task_row(view.id, t) for t in view.records("tasks")]
                if "tasks" in view.collections
                else []
            )
            if tasks:
                self.db.table("tasks").insert_all(tasks, pk="id")
        return view

    @_damage_is_store_corrupt
    def get_chart(self, chart_id: str) -> Chart:
        """Load a chart. Raises UnknownPatient, or StoreCorrupt if its bytes are damaged."""
        found = self.db.execute("SELECT doc FROM charts WHERE id = ?", [chart_id]).fetchone()
        if found is None:
            raise UnknownPatient("no patient with that ID on this tablet")
        try:
            return Chart.load(found[0], author=self.author, clock=self.clock, actor=self.actor)
        except CareRecordError as exc:
            raise StoreCorrupt(f"a chart on this tablet cannot be read: {exc}") from None

    @_damage_is_store_corrupt
    def chart_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM charts ORDER BY id")]

    @_damage_is_store_corrupt
    def search(self, text: str, limit: int = 50) -> list[PatientSummary]:
        """Patients whose names contain every word of ``text`` at a word start, folded."""
        words = fold(text).split()
        if not words:
            return []
        clauses = " AND ".join("(' ' || name_key) LIKE ? ESCAPE '\\'" for _ in words)
        params: list[Any] = [f"% {_escape_like(w)}%" for w in words]
        # Only fixed fragments are joined here; every value is a bound parameter.
        sql = f"SELECT {_SUMMARY} FROM charts WHERE kind = 'patient' AND {clauses} "  # noqa: S608
        sql += "ORDER BY name_key LIMIT ?"
        return [PatientSummary(*r) for r in self.db.execute(sql, [*params, limit])]

    @_damage_is_store_corrupt
    def in_village(self, village: str, limit: int = 500) -> list[PatientSummary]:
        sql = _SUMMARY_SQL + "WHERE village_key = ? ORDER BY name_key LIMIT ?"
        return [PatientSummary(*r) for r in self.db.execute(sql, [fold(village), limit])]

    @_damage_is_store_corrupt
    def summary(self, chart_id: str) -> PatientSummary:
        sql = _SUMMARY_SQL + "WHERE id = ?"
        found = self.db.execute(sql, [chart_id]).fetchone()
        if found is None:
            raise UnknownPatient("no patient with that ID on this tablet")
        return PatientSummary(*found)

    @_damage_is_store_corrupt
    def with_conflicts(self) -> list[str]:
        return [
            r[0] for r in self.db.execute("SELECT id FROM charts WHERE conflicts > 0 ORDER BY id")
        ]

    @_damage_is_store_corrupt
    def tasks_due(self, on_or_before: str) -> list[dict[str, Any]]:
        sql = (
            "SELECT t.id, t.chart_id, t.kind, t.description, t.due, c.given, c.family, c.village "
            "FROM tasks t JOIN charts c ON c.id = t.chart_id "
            "WHERE t.status = 'requested' AND t.due <= ? ORDER BY t.due, c.name_key"
        )
        columns = ["id", "chart_id", "kind", "description", "due", "given", "family", "village"]
        return [dict(zip(columns, r, strict=True)) for r in self.db.execute(sql, [on_or_before])]

    @_damage_is_store_corrupt
    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM charts").fetchone()[0])

    # -- schema -----------------------------------------------------------------------------

    @_damage_is_store_corrupt
    def _ensure_schema(self) -> None:
        if "charts" in self.db.table_names():
            # A store made before an index or column existed gets it here; one already there
            # costs a lookup in the schema, and no write.
            if "heads" not in self.db.table("charts").columns_dict:
                self.db.execute("ALTER TABLE charts ADD COLUMN heads BLOB")
            for statement in _INDEX_SQL:
                self.db.execute(statement)
            return
        with self.transaction():
            for statement in (*_SCHEMA_SQL, *_INDEX_SQL):
                self.db.execute(statement)
            self.db.table("meta").insert({"key": "format", "value": STORE_FORMAT}, pk="key")


_SUMMARY = "id, given, family, village, birth_date, conflicts"
_SUMMARY_SQL = "SELECT id, given, family, village, birth_date, conflicts FROM charts "

_SCHEMA_SQL = (
    """CREATE TABLE charts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    doc BLOB NOT NULL,
    given TEXT, family TEXT, name_key TEXT,
    village TEXT, village_key TEXT,
    birth_date TEXT,
    conflicts INTEGER NOT NULL DEFAULT 0,
    heads BLOB,
    updated_at TEXT NOT NULL
)""",
    """CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    chart_id TEXT NOT NULL REFERENCES charts(id),
    kind TEXT NOT NULL, description TEXT NOT NULL,
    due TEXT NOT NULL, status TEXT NOT NULL
)""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

_INDEX_SQL = (
    "CREATE INDEX IF NOT EXISTS charts_village ON charts(village_key)",
    # A name search matches inside name_key (LIKE '% word%'), which no index can seek. Without
    # this one it reads every chart row, document bytes and all: under SQLCipher that is every
    # page of the table decrypted on every search (about 70 ms at 10,000 patients). With it,
    # the search reads short index entries already in name order (about 2 ms).
    "CREATE INDEX IF NOT EXISTS charts_name ON charts(kind, name_key)",
    "CREATE INDEX IF NOT EXISTS tasks_due ON tasks(status, due)",
    "CREATE INDEX IF NOT EXISTS tasks_chart ON tasks(chart_id)",
)


def _chart_row(view: ChartView, doc: bytes, heads: list[bytes], now: str) -> dict[str, Any]:
    given, family = view.fields.get("given"), view.fields.get("family")
    village = view.fields.get("village")
    return {
        "id": view.id,
        "kind": view.kind,
        "doc": doc,
        "given": given,
        "family": family,
        "name_key": fold(f"{given or ''} {family or ''}"),
        "village": village,
        "village_key": fold(str(village)) if village else None,
        "birth_date": view.fields.get("birth_date"),
        "conflicts": len(view.conflicts),
        "heads": heads_key(heads),
        "updated_at": now,
    }


def _task_row(chart_id: str, task: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": task["id"],
        "chart_id": chart_id,
        "kind": task["kind"],
        "description": task["description"],
        "due": task["due"],
        "status": task.get("status") or "requested",
    }


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
