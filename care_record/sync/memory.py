"""A Replica held in memory: for tests, and as the reference for what a store must do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import automerge.core as am

from care_record.sync.documents import heads_key
from care_record.sync.engine import Stored
from care_record.sync.wire import DocHeads, DocNotice


@dataclass
class MemoryReplica:
    docs: dict[str, Stored] = field(default_factory=dict)
    known: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)
    acks: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)
    quarantined: list[tuple[str, str, str]] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    to_report: dict[str, list[str]] = field(default_factory=dict)
    visible: Callable[[str, str], bool] = lambda _peer, _doc_id: True

    def get(self, doc_id: str) -> Stored | None:
        return self.docs.get(doc_id)

    def put(
        self,
        doc_id: str,
        kind: str,
        data: bytes,
        heads: list[bytes],
        document: am.Document | None = None,
    ) -> None:
        self.docs[doc_id] = Stored(doc_id, kind, data, sorted(heads))

    def peer_heads(self, peer: str, doc_id: str) -> list[bytes] | None:
        return self.known.get((peer, doc_id))

    def set_peer_heads(self, peer: str, doc_id: str, heads: list[bytes]) -> None:
        self.known[(peer, doc_id)] = sorted(heads)

    def outgoing(self, peer: str) -> Iterable[str]:
        return sorted(
            doc_id
            for doc_id, stored in self.docs.items()
            if self.visible(peer, doc_id)
            and heads_key(stored.heads) != heads_key(self.known.get((peer, doc_id)) or [])
            and ((peer, doc_id) in self.known or self._initiator)
        )

    def missing(self, peer: str) -> Iterable[str]:
        return sorted(d for d in self.docs if self.visible(peer, d) and (peer, d) not in self.known)

    def may_write(self, peer: str, doc_id: str, kind: str, exists: bool) -> bool:
        # A chart just reassigned away may still take the edits its old device holds: the
        # device pushes them, then drops the chart (see ``leaving``).
        return self.visible(peer, doc_id) or (peer, doc_id) in self.known

    def quarantine(self, peer: str, doc_id: str, kind: str, payload: bytes, reason: str) -> None:
        self.quarantined.append((peer, doc_id, reason))

    def pending_acks(self, peer: str) -> list[DocHeads]:
        return [DocHeads(d, h) for (p, d), h in sorted(self.acks.items()) if p == peer]

    def add_pending_ack(self, peer: str, doc_id: str, heads: list[bytes]) -> None:
        self.acks[(peer, doc_id)] = sorted(heads)

    def clear_pending_acks(self, peer: str, doc_ids: Iterable[str]) -> None:
        for doc_id in doc_ids:
            self.acks.pop((peer, doc_id), None)

    def drop(self, peer: str, doc_id: str, reason: str) -> None:
        self.docs.pop(doc_id, None)
        self.known.pop((peer, doc_id), None)
        self.dropped[doc_id] = reason
        self.to_report.setdefault(peer, []).append(doc_id)

    def dropped_docs(self, peer: str) -> list[str]:
        return list(self.to_report.get(peer, []))

    def clear_dropped(self, peer: str, doc_ids: Iterable[str]) -> None:
        gone = set(doc_ids)
        self.to_report[peer] = [d for d in self.to_report.get(peer, []) if d not in gone]

    def leaving(self, peer: str) -> Iterable[DocNotice]:
        return [
            DocNotice(doc_id, "reassigned", "this chart was assigned to another health worker")
            for (p, doc_id) in sorted(self.known)
            if p == peer and doc_id in self.docs and not self.visible(peer, doc_id)
        ]

    def forget_peer(self, peer: str, doc_id: str) -> None:
        self.known.pop((peer, doc_id), None)

    # A tablet sends documents its peer never had (its own new charts); a hub sends those as
    # snapshots instead, through ``missing``.
    _initiator: bool = False
