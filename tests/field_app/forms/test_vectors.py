"""Every test vector from the WHO tables, run through the engine: one case on each side of
every danger sign and threshold, with the urgency and the tasks the rules must conclude.

A vector file ``vectors/FORM.json``::

    {"form": "anc_contact", "cases": [
      {"name": "...", "source": "ANC.DT.01", "today": "2026-11-21",
       "patient": {"birth_date": "1998-04-02", "sex": "female"},
       "answers": {"linkId": value, ...},
       "expect": {"urgency": "emergency" | "urgent" | "routine" | null,
                  "fired": ["rule_id", ...], "not_fired": ["rule_id", ...],
                  "danger_signs": ["English label", ...],
                  "tasks": [{"kind": "...", "due": "2026-11-22"}],
                  "calculated": {"linkId": value},
                  "incomplete": ["linkId", ...], "tasks_exact": true}}]}

``fired``, ``not_fired``, ``tasks`` and ``calculated`` list what must (or must not) be there;
``urgency`` and ``danger_signs`` must match exactly, and ``tasks`` too with ``tasks_exact``. Every case must also complete, unless it
lists ``incomplete``: exactly the questions the form must refuse to complete without.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from field_app.errors import FormIncomplete
from field_app.forms import FormLibrary, FormState

VECTORS = Path(__file__).parent / "vectors"
LIBRARY = FormLibrary()


def _cases() -> list[Any]:
    found = []
    for path in sorted(VECTORS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for case in data["cases"]:
            found.append(pytest.param(data["form"], case, id=f"{data['form']}: {case['name']}"))
    return found


CASES = _cases()


def test_there_are_vectors_for_every_shipped_form() -> None:
    covered = {json.loads(p.read_text())["form"] for p in VECTORS.glob("*.json")}
    assert covered == set(LIBRARY.names())


@pytest.mark.parametrize(("form_name", "case"), CASES)
def test_vector(form_name: str, case: dict[str, Any]) -> None:
    state = FormState(
        LIBRARY.get(form_name),
        today=date.fromisoformat(case.get("today", "2026-11-21")),
        patient=case.get("patient", {}),
    )
    state.answer_all(case["answers"])
    expect = case["expect"]
    fired = [r.id for r in state.conclusions.fired]
    assert state.conclusions.urgency == expect.get("urgency"), fired
    for rule_id in expect.get("fired", []):
        assert rule_id in fired
    for rule_id in expect.get("not_fired", []):
        assert rule_id not in fired
    if "danger_signs" in expect:
        assert sorted(state.conclusions.danger_signs) == sorted(expect["danger_signs"])
    tasks = {(t.kind, t.due.isoformat()) for t in state.conclusions.tasks}
    for task in expect.get("tasks", []):
        assert (task["kind"], task["due"]) in tasks, tasks
    if expect.get("tasks_exact"):
        assert tasks == {(t["kind"], t["due"]) for t in expect["tasks"]}
    for link_id, value in expect.get("calculated", {}).items():
        assert [_plain(v) for v in state.value(link_id)] == [value]
    if "incomplete" in expect:
        with pytest.raises(FormIncomplete) as refused:
            state.complete()
        assert sorted(refused.value.problems) == sorted(expect["incomplete"])
        return
    completed = state.complete()
    assert completed.conclusions == state.conclusions


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value
