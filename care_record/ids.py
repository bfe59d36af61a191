"""Time-ordered record IDs (UUIDv7, RFC 9562), created where the record is made."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

from care_record.clock import Clock, SystemClock

_SYSTEM_CLOCK = SystemClock()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def new_id(clock: Clock = _SYSTEM_CLOCK) -> str:
    """Return a new UUIDv7 as a string: 48 bits of Unix milliseconds, then 74 random bits."""
    return str(uuid7_from(clock.now()))


def uuid7_from(moment: datetime) -> uuid.UUID:
    # Integer arithmetic: a float timestamp times 1000 can land a millisecond early.
    millis = ((moment - _EPOCH) // timedelta(milliseconds=1)) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


def id_time_ms(record_id: str) -> int:
    """The Unix millisecond timestamp inside a UUIDv7."""
    return uuid.UUID(record_id).int >> 80


def is_uuid7(text: str) -> bool:
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return False
    return parsed.version == 7 and str(parsed) == text
