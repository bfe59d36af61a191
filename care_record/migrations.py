"""Schema versions of the chart and the migrations between them, applied on read.

A migration upgrades a document by one version inside one transaction. Two devices may migrate
the same chart at the same time, offline, so a migration may only put scalars or add entries
under fresh unique keys; it must never create an object under a fixed key (the two objects
would conflict and one would hide the other).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import automerge.core as am

from care_record.errors import ChartTooNew, NotAChart

Migration = Callable[[am.Transaction], None]

# version produced -> the migration that produces it from the version before.
MIGRATIONS: Mapping[int, Migration] = {}


def schema_version(doc: am.Document) -> int:
    found = doc.get(am.ROOT, "schema_version")
    if found is None or isinstance(found[0], am.ObjType) or not isinstance(found[0][1], int):
        raise NotAChart("the chart has no schema version")
    return found[0][1]


def migrate(doc: am.Document, migrations: Mapping[int, Migration], *, target: int) -> int:
    """Bring ``doc`` up to ``target`` in one transaction; return the version it had.

    Raises ChartTooNew when the chart is newer than ``target``, NotAChart when a step is missing.
    """
    version = schema_version(doc)
    if version > target:
        raise ChartTooNew(
            f"this chart uses schema version {version}; this app reads up to {target}. "
            "Update the app to open it."
        )
    if version == target:
        return version
    missing = [v for v in range(version + 1, target + 1) if v not in migrations]
    if missing:
        raise NotAChart(f"no migration to schema version {missing[0]}")
    with doc.transaction() as tx:
        for step in range(version + 1, target + 1):
            migrations[step](tx)
        tx.put(am.ROOT, "schema_version", am.ScalarType.Int, target)
    return version
