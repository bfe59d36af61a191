"""The tablet's store seen by the sync engine: documents, and what each peer is known to have.

Tables (in the same encrypted database as the charts)::

    sync_peer_heads(peer, doc, heads)     heads the peer (the hub, or a peer tablet) has
    sync_pending_acks(peer, doc, heads)   received from the peer, to acknowledge next time
    sync_dropped(peer, doc, reason, at)   dropped on the peer's word, to report to it
    sync_quarantine(peer, doc, kind, payload, reason, at)   what could not be applied
    sync_exchanges(peer, exchange)        the peer's count of our syncs, as last heard
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import automerge.core as am

from care_record.sync import DocHeads, DocNotice, Stored, heads_key, split_heads
from field_app.store import Store

_TABLES = (
    (
        "CREATE TABLE IF NOT EXISTS sync_peer_heads ("
        " peer TEXT NOT NULL, doc TEXT NOT NULL, heads BLOB NOT NULL, PRIMARY KEY (peer, doc))"
    ),
    (
        "CREATE TABLE IF NOT EXISTS sync_pending_acks ("
        " peer TEXT NOT NULL, doc TEXT NOT NULL, heads BLOB NOT NULL, PRIMARY KEY (peer, doc))"
    ),
    (
        "CREATE TABLE IF NOT EXISTS sync_dropped ("
        " peer TEXT NOT NULL, doc TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL,"
        " reported INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (peer, doc))"
    ),
    (
        "CREATE TABLE IF NOT EXISTS sync_quarantine ("
        " id INTEGER PRIMARY KEY, peer TEXT NOT NULL, doc TEXT NOT NULL, kind TEXT NOT NULL,"
        " payload BLOB NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS sync_exchanges ("
        " peer TEXT PRIMARY KEY, exchange INTEGER NOT NULL)"
    ),
)


def ensure_sync_tables(store: Store) -> None:
    for statement in _TABLES:
        store.db.execute(statement)


class StoreReplica:
    """The sync engine's view of a tablet store. ``initiator``: this tablet starts the sync (and
    so sends its own new charts as changes); a tablet serving a peer sends them as snapshots."""

    def __init__(self, store: Store, *, initiator: bool) -> None:
        self.store = store
        self.initiator = initiator
        ensure_sync_tables(store)

    # -- documents --------------------------------------------------------------------------

    def get(self, doc_id: str) -> Stored | None:
        found = self.store.get_document(doc_id)
        if found is None:
            return None
        kind, data, heads = found
        return Stored(doc_id, kind, data, split_heads(heads))

    def put(
        self,
        doc_id: str,
        kind: str,
        data: bytes,
        heads: list[bytes],
        document: am.Document | None = None,
    ) -> None:
        self.store.put_document(kind, data, doc_id)

    # -- what peers have ----------------------------------------------------------------------

    def peer_heads(self, peer: str, doc_id: str) -> list[bytes] | None:
        row = self._one(
            "SELECT heads FROM sync_peer_heads WHERE peer = ? AND doc = ?", peer, doc_id
        )
        return None if row is None else split_heads(row[0])

    def set_peer_heads(self, peer: str, doc_id: str, heads: list[bytes]) -> None:
        self.store.db.execute(
            "INSERT INTO sync_peer_heads (peer, doc, heads) VALUES (?, ?, ?) "
            "ON CONFLICT (peer, doc) DO UPDATE SET heads = excluded.heads",
            [peer, doc_id, heads_key(heads)],
        )

    def outgoing(self, peer: str) -> Iterable[str]:
        join = "LEFT JOIN" if self.initiator else "JOIN"
        sql = (
            f"SELECT c.id FROM charts c {join} sync_peer_heads p ON p.doc = c.id AND p.peer = ? "  # noqa: S608
            "WHERE p.heads IS NULL OR p.heads != c.heads ORDER BY c.id"
        )
        return [r[0] for r in self.store.db.execute(sql, [peer])]

    def missing(self, peer: str) -> Iterable[str]:
        sql = (
            "SELECT c.id FROM charts c WHERE NOT EXISTS ("
            " SELECT 1 FROM sync_peer_heads p WHERE p.peer = ? AND p.doc = c.id) ORDER BY c.id"
        )
        return [r[0] for r in self.store.db.execute(sql, [peer])]

    def may_write(self, peer: str, doc_id: str, kind: str, exists: bool) -> bool:
        # Peers are paired by hand with a one-time code; a paired peer may share any chart.
        return kind in ("patient", "household")

    def leaving(self, peer: str) -> Iterable[DocNotice]:
        return []

    def forget_peer(self, peer: str, doc_id: str) -> None:
        self.store.db.execute(
            "DELETE FROM sync_peer_heads WHERE peer = ? AND doc = ?", [peer, doc_id]
        )

    def quarantine(self, peer: str, doc_id: str, kind: str, payload: bytes, reason: str) -> None:
        self.store.db.execute(
            "INSERT INTO sync_quarantine (peer, doc, kind, payload, reason, at) VALUES (?, ?, ?, ?, ?, ?)",
            [peer, doc_id, kind, payload, reason, self.store.clock.now().isoformat()],
        )

    # -- acknowledgements and drops -------------------------------------------------------------

    def pending_acks(self, peer: str) -> list[DocHeads]:
        rows = self.store.db.execute(
            "SELECT doc, heads FROM sync_pending_acks WHERE peer = ? ORDER BY doc", [peer]
        )
        return [DocHeads(doc, split_heads(heads)) for doc, heads in rows]

    def add_pending_ack(self, peer: str, doc_id: str, heads: list[bytes]) -> None:
        self.store.db.execute(
            "INSERT INTO sync_pending_acks (peer, doc, heads) VALUES (?, ?, ?) "
            "ON CONFLICT (peer, doc) DO UPDATE SET heads = excluded.heads",
            [peer, doc_id, heads_key(heads)],
        )

    def clear_pending_acks(self, peer: str, doc_ids: Iterable[str]) -> None:
        self.store.db.conn.executemany(
            "DELETE FROM sync_pending_acks WHERE peer = ? AND doc = ?", [(peer, d) for d in doc_ids]
        )

    def drop(self, peer: str, doc_id: str, reason: str) -> None:
        self.store.delete_document(doc_id)
        for table in ("sync_peer_heads", "sync_pending_acks"):
            self.store.db.execute(f"DELETE FROM {table} WHERE doc = ?", [doc_id])  # noqa: S608
        self.store.db.execute(
            "INSERT OR REPLACE INTO sync_dropped (peer, doc, reason, at) VALUES (?, ?, ?, ?)",
            [peer, doc_id, reason, self.store.clock.now().isoformat()],
        )

    def dropped_docs(self, peer: str) -> list[str]:
        rows = self.store.db.execute(
            "SELECT doc FROM sync_dropped WHERE peer = ? AND reported = 0 ORDER BY doc", [peer]
        )
        return [r[0] for r in rows]

    def clear_dropped(self, peer: str, doc_ids: Iterable[str]) -> None:
        self.store.db.conn.executemany(
            "UPDATE sync_dropped SET reported = 1 WHERE peer = ? AND doc = ?",
            [(peer, d) for d in doc_ids],
        )

    def heard_exchange(self, peer: str) -> int:
        """The peer's count of our syncs as last stored here (0: never)."""
        row = self._one("SELECT exchange FROM sync_exchanges WHERE peer = ?", peer)
        return 0 if row is None else int(row[0])

    def note_exchange(self, peer: str, number: int) -> bool:
        """Remember the peer's count of our syncs (``SyncResponse.exchange``). True if it went
        back: the peer lost what it stored since (restored from a backup, a new hub), so what
        we remember it has is wrong. That memory is forgotten here; every chart then goes up
        whole and the peer takes what it lacks, which Automerge makes safe to repeat."""
        if number <= 0:
            return False
        row = self._one("SELECT exchange FROM sync_exchanges WHERE peer = ?", peer)
        self.store.db.execute(
            "INSERT INTO sync_exchanges (peer, exchange) VALUES (?, ?) "
            "ON CONFLICT (peer) DO UPDATE SET exchange = excluded.exchange",
            [peer, number],
        )
        if row is None or number > int(row[0]):
            return False
        for table in ("sync_peer_heads", "sync_pending_acks"):
            self.store.db.execute(f"DELETE FROM {table} WHERE peer = ?", [peer])  # noqa: S608
        return True

    def quarantined(self) -> list[dict[str, Any]]:
        rows = self.store.db.execute("SELECT doc, reason, at FROM sync_quarantine ORDER BY id")
        return [{"doc": d, "reason": r, "at": a} for d, r, a in rows]

    def _one(self, sql: str, *params: object) -> tuple[Any, ...] | None:
        row = self.store.db.execute(sql, list(params)).fetchone()
        return None if row is None else tuple(row)
