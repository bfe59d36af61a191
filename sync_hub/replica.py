"""The hub's side of the sync exchange for one device: ``care_record.sync.engine.Replica``
over the hub's database, inside the request's transaction.

What the device may see is decided in SQL (``catchments.VISIBLE_SQL``) over the charts its
CHW's catchment and its own creations point at, so the cost of a sync follows the size of one
catchment, not of the hub.

The charts a request names are read ahead (``read_ahead``): their rows, and what the device
holds of them, in three queries rather than several small statements per chart. Under the
write lock that matters more than the statements' own cost: each one lets the other request
threads take Python's interpreter lock, and the writer then waits to get it back while every
other sync waits for the writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import automerge.core as am
import sqlite_utils

from care_record.sync import DocNotice, Stored, heads_key, split_heads
from sync_hub import quarantine, store
from sync_hub.catchments import CANDIDATES_SQL, VISIBLE_SQL

REASSIGNED = "reassigned"
_BATCH = 400  # chart IDs per read-ahead query, well under SQLite's limit on bound parameters
REASSIGNED_DETAIL = "this chart was assigned to another health worker's catchment"

# Each query below is built only from the fixed fragments above; values are bound parameters.
_VISIBLE_ONE = f"SELECT {VISIBLE_SQL} FROM charts c WHERE c.id = :doc"  # noqa: S608
_MISSING = f"""
    WITH candidates(id) AS ({CANDIDATES_SQL})
    SELECT c.id FROM candidates JOIN charts c ON c.id = candidates.id
    WHERE {VISIBLE_SQL}
      AND NOT EXISTS (SELECT 1 FROM device_docs d WHERE d.device = :device AND d.doc = c.id)
    ORDER BY c.kind = 'patient', c.id"""  # noqa: S608
_OUTGOING = f"""
    SELECT c.id FROM device_docs d JOIN charts c ON c.id = d.doc
    WHERE d.device = :device AND c.heads != d.heads AND {VISIBLE_SQL}
    ORDER BY c.id"""  # noqa: S608
_LEAVING = f"""
    SELECT c.id FROM device_docs d JOIN charts c ON c.id = d.doc
    WHERE d.device = :device AND NOT {VISIBLE_SQL}
    ORDER BY c.id"""  # noqa: S608


class HubReplica:
    """The hub's documents as one device may use them.

    ``receive_only`` (a retiring device) takes the device's changes and sends it nothing: no
    updates, no new charts, no notices to drop.
    """

    def __init__(
        self,
        db: sqlite_utils.Database,
        *,
        device: str,
        chw: str,
        at: str,
        receive_only: bool = False,
        exchange: int = 0,
    ) -> None:
        self.db = db
        self.device = device
        self.chw = chw
        self.at = at
        self.receive_only = receive_only
        self.exchange = exchange  # this sync's number among the device's syncs
        # Read ahead, and kept up to date by this replica's own writes (see read_ahead).
        self._charts: dict[str, Stored | None] = {}
        self._held: dict[str, list[bytes] | None] = {}
        self._offers: set[str] | None = None

    def read_ahead(self, doc_ids: Sequence[str]) -> None:
        """Read these charts and what the device holds of them, and its offers, at once;
        later calls about them are answered from memory. Everything this replica writes keeps
        that memory true; the caller must not change those rows by other means meanwhile."""
        wanted = list(dict.fromkeys(doc_ids))
        for first in range(0, len(wanted), _BATCH):
            self._read_batch(wanted[first : first + _BATCH])
        rows = self.db.execute("SELECT doc FROM offers WHERE device = ?", [self.device])
        self._offers = {row[0] for row in rows}

    def _read_batch(self, doc_ids: list[str]) -> None:
        marks = ", ".join("?" * len(doc_ids))
        self._charts.update(dict.fromkeys(doc_ids))
        self._held.update(dict.fromkeys(doc_ids))
        sql = f"SELECT id, kind, data, heads FROM charts WHERE id IN ({marks})"  # noqa: S608
        for doc_id, kind, data, heads in self.db.execute(sql, doc_ids):
            self._charts[doc_id] = Stored(doc_id, kind, bytes(data), split_heads(heads))
        sql = f"SELECT doc, heads FROM device_docs WHERE device = ? AND doc IN ({marks})"  # noqa: S608
        for doc_id, heads in self.db.execute(sql, [self.device, *doc_ids]):
            self._held[doc_id] = split_heads(heads)

    # -- documents ------------------------------------------------------------------------------

    def get(self, doc_id: str) -> Stored | None:
        if doc_id in self._charts:
            return self._charts[doc_id]
        return store.get_chart(self.db, doc_id)

    def put(
        self,
        doc_id: str,
        kind: str,
        data: bytes,
        heads: list[bytes],
        document: am.Document | None = None,
    ) -> None:
        store.put_chart(
            self.db, doc_id, kind, data, heads, device=self.device, at=self.at, document=document
        )
        if doc_id in self._charts:
            old = self._charts[doc_id]
            self._charts[doc_id] = Stored(doc_id, old.kind if old else kind, data, sorted(heads))

    # -- what the device has ----------------------------------------------------------------------

    def peer_heads(self, peer: str, doc_id: str) -> list[bytes] | None:
        if peer == self.device and doc_id in self._held:
            return self._held[doc_id]
        row = self.db.execute(
            "SELECT heads FROM device_docs WHERE device = ? AND doc = ?", [peer, doc_id]
        ).fetchone()
        return None if row is None else split_heads(row[0])

    def set_peer_heads(self, peer: str, doc_id: str, heads: list[bytes]) -> None:
        # An acknowledgement is believed only for a chart the device has had, may see, created,
        # or was sent: a forged one would otherwise give it a foothold to write any chart. (A
        # chart sent, then reassigned before the ack came, is still acknowledged, so that the
        # tablet is then told to drop it.)
        if not (
            self._had(doc_id)
            or self._offered(doc_id)
            or self._visible(doc_id)
            or self._created(doc_id)
        ):
            return
        self.db.execute(
            "INSERT INTO device_docs (device, doc, heads, learned) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (device, doc) DO UPDATE SET heads = excluded.heads, "
            "learned = excluded.learned",
            [peer, doc_id, heads_key(heads), self.exchange],
        )
        self._forget_offer(peer, doc_id)
        if peer == self.device and doc_id in self._held:
            self._held[doc_id] = sorted(heads)

    def forget_since(self, heard: int) -> int:
        """The device last heard of sync number ``heard``: forget what it was known to hold
        from syncs after that one, which a device restored from a backup no longer holds.
        Those charts become new to it and are sent whole (a lost answer makes the same happen
        for one sync's charts, which costs bytes, never data). Returns how many."""
        cursor = self.db.execute(
            "DELETE FROM device_docs WHERE device = ? AND learned > ?", [self.device, heard]
        )
        self._held.clear()  # read again from the table when asked
        return int(cursor.rowcount)

    def forget_peer(self, peer: str, doc_id: str) -> None:
        self.db.execute("DELETE FROM device_docs WHERE device = ? AND doc = ?", [peer, doc_id])
        self._forget_offer(peer, doc_id)
        if peer == self.device and doc_id in self._held:
            self._held[doc_id] = None

    def _forget_offer(self, peer: str, doc_id: str) -> None:
        if peer == self.device and self._offers is not None:
            if doc_id not in self._offers:
                return  # read ahead: there is no row to delete
            self._offers.discard(doc_id)
        self.db.execute("DELETE FROM offers WHERE device = ? AND doc = ?", [peer, doc_id])

    def offered(self, doc_ids: Iterable[str]) -> None:
        """Remember the new charts sent in this answer, until the device acknowledges them."""
        offered = list(doc_ids)
        self.db.conn.executemany(
            "INSERT OR IGNORE INTO offers (device, doc) VALUES (?, ?)",
            [(self.device, doc_id) for doc_id in offered],
        )
        if self._offers is not None:
            self._offers.update(offered)

    # -- what goes down -------------------------------------------------------------------------

    def outgoing(self, peer: str) -> Iterable[str]:
        return [] if self.receive_only else self._ids(_OUTGOING)

    def missing(self, peer: str) -> Iterable[str]:
        return [] if self.receive_only else self._ids(_MISSING)

    def leaving(self, peer: str) -> Iterable[DocNotice]:
        if self.receive_only:
            return []
        return [DocNotice(doc, REASSIGNED, REASSIGNED_DETAIL) for doc in self._ids(_LEAVING)]

    # -- what comes up --------------------------------------------------------------------------

    def may_write(self, peer: str, doc_id: str, kind: str, exists: bool) -> bool:
        """A chart the device may see, has had (so a tablet can still push edits to a chart
        just reassigned away), or a new one it is creating."""
        if kind not in store.KINDS:
            return False
        return not exists or self._had(doc_id) or self._visible(doc_id)

    def quarantine(self, peer: str, doc_id: str, kind: str, payload: bytes, reason: str) -> None:
        quarantine.hold(
            self.db, device=peer, doc=doc_id, kind=kind, payload=payload, reason=reason, at=self.at
        )

    # -- internals ------------------------------------------------------------------------------

    def _params(self, **extra: str) -> dict[str, str]:
        return {"device": self.device, "chw": self.chw, **extra}

    def _ids(self, sql: str) -> list[str]:
        return [row[0] for row in self.db.execute(sql, self._params())]

    def _visible(self, doc_id: str) -> bool:
        row = self.db.execute(_VISIBLE_ONE, self._params(doc=doc_id)).fetchone()
        return bool(row and row[0])

    def _had(self, doc_id: str) -> bool:
        if doc_id in self._held:
            return self._held[doc_id] is not None
        sql = "SELECT 1 FROM device_docs WHERE device = ? AND doc = ?"
        return self.db.execute(sql, [self.device, doc_id]).fetchone() is not None

    def _offered(self, doc_id: str) -> bool:
        if self._offers is not None:
            return doc_id in self._offers
        sql = "SELECT 1 FROM offers WHERE device = ? AND doc = ?"
        return self.db.execute(sql, [self.device, doc_id]).fetchone() is not None

    def _created(self, doc_id: str) -> bool:
        sql = "SELECT 1 FROM charts WHERE id = ? AND created_by_device = ?"
        return self.db.execute(sql, [doc_id, self.device]).fetchone() is not None
