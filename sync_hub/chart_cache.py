"""Charts kept loaded between syncs: the hub's ``care_record.sync.engine.DocumentCache``.

Loading a chart is most of what a sync costs the hub: Automerge rebuilds the document from its
bytes, hashing every change again, about half a millisecond for a chart with ten visits, and a
CHW's day touches fifteen charts. A chart kept loaded takes a tablet's changes for a fifth of
that. The price is memory: a loaded chart with ten visits takes about 110 KB, so
``SYNC_HUB_CHART_CACHE`` (a number of charts, least recently used dropped first) bounds it.

A kept document is used only while the database still holds what it was kept for: the stored
bytes it was kept with, or else the same heads with every change chunk stored after the saved
document in it. Heads name the whole history, so the two are then the same document, whatever
wrote the row meanwhile (another request, the CLI, a rollback). A sync that changes a chart
takes its document out (``take``) and changes it, and keeps the result once its answer is
built. One that a request is reading at that moment (``reading``) is taken as a fork instead, so
the reader's copy does not change under it; once read, it is changed in place again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import automerge.core as am

from care_record.sync import Stored, heads_key
from care_record.sync.documents import settled


@dataclass
class _Kept:
    data: bytes
    heads: bytes
    doc: am.Document
    readers: int = 0  # requests reading it now: while any are, it is taken as a fork


class ChartCache:
    """Up to ``capacity`` loaded charts, the least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @contextmanager
    def reading(self, stored: Stored) -> Iterator[am.Document | None]:
        """``stored`` as a loaded document to read inside the block, or None if none is kept
        that loading its data would give. It is not changed while the block runs."""
        with self._lock:
            kept = self._kept.get(stored.doc)
            if kept is not None:
                self._kept.move_to_end(stored.doc)
                kept.readers += 1
        try:
            found = self._match(kept, stored)
            yield None if found is None else found.doc
        finally:
            if kept is not None:
                with self._lock:
                    kept.readers -= 1

    def take(self, stored: Stored) -> am.Document | None:
        """As ``reading``, but handed over: no longer kept, so the caller may change it."""
        with self._lock:
            kept = self._kept.pop(stored.doc, None)
            read_now = kept is not None and kept.readers > 0
        found = self._match(kept, stored)
        if found is None:
            return None
        return found.doc.fork() if read_now else found.doc

    def keep(self, doc_id: str, doc: am.Document, data: bytes) -> None:
        if self.capacity <= 0:
            return
        kept = _Kept(data, heads_key(doc.get_heads()), doc)
        with self._lock:
            self._kept[doc_id] = kept
            self._kept.move_to_end(doc_id)
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)

    def _match(self, kept: _Kept | None, stored: Stored) -> _Kept | None:
        """``kept`` if loading ``stored`` gives it, counted as a hit; else None, a miss."""
        if kept is not None and _same(kept, stored):
            self.hits += 1
            return kept
        self.misses += 1
        return None

    def __len__(self) -> int:
        return len(self._kept)


def _same(kept: _Kept, stored: Stored) -> bool:
    """Whether loading ``stored`` gives the kept document."""
    if kept.data == stored.data:
        return True
    return kept.heads == heads_key(stored.heads) and settled(kept.doc, stored.data)
