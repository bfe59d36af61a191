"""Health workers and their catchments: which charts each CHW's tablets receive.

A catchment is a set of villages (matched folded: case, accents and extra spaces ignored) and
of households (by household ID). Who sees a chart:

1. If its household is in some CHW's catchment, those CHWs: a household assignment is the more
   precise one, so it wins over the village (that is what lets ``reassign --household`` move a
   household out of a village another CHW covers).
2. Otherwise, the CHWs whose catchment has its village.
3. Otherwise (nobody covers it), the tablet that created it, so a new chart never vanishes from
   the tablet it was made on.

Reassigning a village or a household moves it: it leaves every other CHW's catchment and joins
the new one. Tablets that had its charts are told to drop them, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from care_record import fold
from sync_hub.errors import Refused, UnknownChw

VILLAGE, HOUSEHOLD = "village", "household"

# Whether charts row ``c`` is visible to the tablet ``:device`` of CHW ``:chw``. Every test of
# a NULL column is positive, so a NULL anywhere can only make a clause false: COALESCE turns
# the overall NULL into "not visible".
VISIBLE_SQL = """COALESCE((
    c.household_id IN (SELECT value FROM catchments WHERE kind = 'household' AND chw = :chw)
    OR (NOT EXISTS (SELECT 1 FROM catchments h
                    WHERE h.kind = 'household' AND h.value = c.household_id)
        AND (c.village_key IN (SELECT value FROM catchments WHERE kind = 'village' AND chw = :chw)
             OR (c.created_by_device = :device
                 AND NOT EXISTS (SELECT 1 FROM catchments v
                                 WHERE v.kind = 'village' AND v.value = c.village_key))))
), 0)"""

# Charts that could be visible to the device, found through the indexes: its CHW's villages
# and households, and what it created. VISIBLE_SQL then decides on these few rows only.
CANDIDATES_SQL = """
    SELECT id FROM charts WHERE village_key IN
        (SELECT value FROM catchments WHERE kind = 'village' AND chw = :chw)
    UNION SELECT id FROM charts WHERE household_id IN
        (SELECT value FROM catchments WHERE kind = 'household' AND chw = :chw)
    UNION SELECT id FROM charts WHERE created_by_device = :device"""


@dataclass(frozen=True)
class Catchment:
    chw: str
    villages: list[str]  # as the supervisor typed them
    households: list[str]


def normalise(kind: str, value: str) -> str:
    """The form a village or household is matched in."""
    return fold(value) if kind == VILLAGE else value.strip().lower()


def ensure_chw(db: sqlite_utils.Database, name: str) -> bool:
    """Create the CHW if new; True if it was created."""
    clean = name.strip()
    if not clean or len(clean) > 100:
        raise Refused("a CHW name must be 1 to 100 characters")
    cursor = db.execute("INSERT OR IGNORE INTO chws (name) VALUES (?)", [clean])
    return cursor.rowcount == 1


def require_chw(db: sqlite_utils.Database, name: str) -> str:
    clean = name.strip()
    if db.execute("SELECT 1 FROM chws WHERE name = ?", [clean]).fetchone() is None:
        raise UnknownChw(f"no CHW named '{clean}' on this hub (see `enroll-code`)")
    return clean


def catchment_of(db: sqlite_utils.Database, chw: str) -> Catchment:
    rows = db.execute(
        "SELECT kind, label FROM catchments WHERE chw = ? ORDER BY kind, value", [chw]
    ).fetchall()
    return Catchment(
        chw,
        villages=[label for kind, label in rows if kind == VILLAGE],
        households=[label for kind, label in rows if kind == HOUSEHOLD],
    )


def add(db: sqlite_utils.Database, chw: str, kind: str, value: str) -> list[str]:
    """Add a village or household to ``chw``'s catchment. Returns the other CHWs who also
    cover it (they keep it: adding shares, ``reassign`` moves)."""
    key = _checked(kind, value)
    db.execute(
        "INSERT OR IGNORE INTO catchments (chw, kind, value, label) VALUES (?, ?, ?, ?)",
        [chw, kind, key, value.strip()],
    )
    return _holders(db, kind, key, besides=chw)


def remove(db: sqlite_utils.Database, chw: str, kind: str, value: str) -> None:
    key = _checked(kind, value)
    cursor = db.execute(
        "DELETE FROM catchments WHERE chw = ? AND kind = ? AND value = ?", [chw, kind, key]
    )
    if cursor.rowcount == 0:
        raise Refused(f"that {kind} is not in {chw}'s catchment")


def reassign(db: sqlite_utils.Database, kind: str, value: str, to_chw: str) -> list[str]:
    """Move a village or household to ``to_chw``'s catchment alone. Returns who had it."""
    key = _checked(kind, value)
    before = _holders(db, kind, key, besides=to_chw)
    db.execute(
        "DELETE FROM catchments WHERE kind = ? AND value = ? AND chw != ?", [kind, key, to_chw]
    )
    db.execute(
        "INSERT OR IGNORE INTO catchments (chw, kind, value, label) VALUES (?, ?, ?, ?)",
        [to_chw, kind, key, value.strip()],
    )
    return before


def charts_in(db: sqlite_utils.Database, kind: str, value: str) -> int:
    """How many charts a village or household holds (for the operator's messages)."""
    column = "village_key" if kind == VILLAGE else "household_id"
    # ``column`` is one of two fixed names; the value is a bound parameter.
    sql = f"SELECT count(*) FROM charts WHERE {column} = ?"  # noqa: S608
    return int(db.execute(sql, [normalise(kind, value)]).fetchone()[0])


def _holders(db: sqlite_utils.Database, kind: str, key: str, *, besides: str) -> list[str]:
    rows = db.execute(
        "SELECT chw FROM catchments WHERE kind = ? AND value = ? AND chw != ? ORDER BY chw",
        [kind, key, besides],
    )
    return [r[0] for r in rows]


def _checked(kind: str, value: str) -> str:
    if kind not in (VILLAGE, HOUSEHOLD):
        raise Refused(f"a catchment holds villages and households, not '{kind}'")
    key = normalise(kind, value)
    if not key or len(key) > 200:
        raise Refused(f"a {kind} must be 1 to 200 characters")
    return key
