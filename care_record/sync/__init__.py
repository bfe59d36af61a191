"""Sync between tablets, hubs and peers: the wire format and the exchange (docs/sync-protocol.md)."""

from care_record.sync.documents import changes_since, has_heads, heads_key, split_heads
from care_record.sync.engine import (
    Absorbed,
    Replica,
    Session,
    Stored,
    TabletReplica,
    absorb,
    build_request,
    respond,
)
from care_record.sync.signing import signed_message
from care_record.sync.wire import (
    PROTOCOL,
    DocHeads,
    DocNotice,
    DocSnapshot,
    DocSync,
    DocUpdate,
    ErrorBody,
    MalformedFrame,
    SyncRequest,
    SyncResponse,
    decode_frame,
    encode_frame,
)

__all__ = [
    "PROTOCOL",
    "Absorbed",
    "DocHeads",
    "DocNotice",
    "DocSnapshot",
    "DocSync",
    "DocUpdate",
    "ErrorBody",
    "MalformedFrame",
    "Replica",
    "Session",
    "Stored",
    "SyncRequest",
    "SyncResponse",
    "TabletReplica",
    "absorb",
    "build_request",
    "changes_since",
    "decode_frame",
    "encode_frame",
    "has_heads",
    "heads_key",
    "respond",
    "signed_message",
    "split_heads",
]
