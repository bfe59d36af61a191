"""Property: whatever tablets do and whenever villages move, once everyone has synced, no edit
is lost, every tablet holds exactly its catchment's charts (plus its own uncovered ones), and
every copy equals the hub's."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import automerge.core as am
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from care_record.sync.documents import has_heads

CHWS = ("a", "b")
TABLET_CHWS = (0, 0, 1)  # two tablets of CHW a, one of CHW b
VILLAGES = 3  # V0 is a's, V1 is b's, V2 nobody's at first
STATUSES = ("pregnant", "not_pregnant", "unknown")

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("new"), st.integers(0, len(TABLET_CHWS) - 1), st.integers(0, VILLAGES - 1)
        ),
        st.tuples(st.just("edit"), st.integers(0, len(TABLET_CHWS) - 1), st.integers(0, 8)),
        st.tuples(st.just("sync"), st.integers(0, len(TABLET_CHWS) - 1), st.just(0)),
        st.tuples(st.just("reassign"), st.integers(0, VILLAGES - 1), st.integers(0, 1)),
    ),
    max_size=14,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=OPERATIONS)
def test_sync_converges_within_catchments(
    fresh_hub: Callable[[], AbstractContextManager[Any]], operations: list[tuple[str, int, int]]
) -> None:
    with fresh_hub() as hub:
        tablets = [
            hub.tablet("a", "V0"),
            hub.tablet("a"),
            hub.tablet("b", "V1"),
        ]
        covered: dict[int, str | None] = {0: "a", 1: "b", 2: None}
        made: dict[str, tuple[int, int]] = {}  # chart -> (village, creating tablet)
        written: dict[str, list[list[bytes]]] = {}  # chart -> heads after each local write
        for op, first, second in operations:
            if op == "new":
                chart = tablets[first].new_chart(village=f"V{second}")
                made[chart.id] = (second, first)
                written[chart.id] = [chart.heads]
            elif op == "edit" and tablets[first].holds():
                doc_id = sorted(tablets[first].holds())[second % len(tablets[first].holds())]
                chart = tablets[first].chart(doc_id)
                chart.set_pregnancy_status(STATUSES[second % len(STATUSES)])  # type: ignore[arg-type]
                tablets[first].store(chart)
                written[doc_id].append(chart.heads)
            elif op == "sync":
                tablets[first].sync()
            elif op == "reassign":
                hub.cli.ok("reassign", "--village", f"V{first}", "--to-chw", CHWS[second])
                covered[first] = CHWS[second]
        for _ in range(3):
            for tablet in tablets:
                tablet.sync_until_done()

        hub_heads = hub.chart_heads()
        assert set(hub_heads) == set(made)
        for doc_id, versions in written.items():
            stored = _hub_document(hub, doc_id)
            assert all(has_heads(stored, heads) for heads in versions), "an edit was lost"
        for index, tablet in enumerate(tablets):
            chw = CHWS[TABLET_CHWS[index]]
            expected = {
                doc_id
                for doc_id, (village, creator) in made.items()
                if covered[village] == chw or (covered[village] is None and creator == index)
            }
            assert tablet.holds() == expected
            for doc_id in expected:
                assert sorted(tablet.replica.docs[doc_id].heads) == sorted(hub_heads[doc_id])


def _hub_document(hub: Any, doc_id: str) -> am.Document:
    conn = sqlite3.connect(hub.settings.db)
    try:
        data = conn.execute("SELECT data FROM charts WHERE id = ?", [doc_id]).fetchone()[0]
    finally:
        conn.close()
    return am.Document.load(data)
