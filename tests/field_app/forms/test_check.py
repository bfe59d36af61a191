"""``forms check`` finds each class of content problem, and passes the shipped content."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polib
import pytest

from field_app.forms import PACKAGED_CONTENT, FormLibrary
from field_app.forms.check import check_library

Edit = Callable[[dict[str, Any]], None]


def test_the_shipped_content_has_no_problem() -> None:
    assert check_library(FormLibrary()) == []


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "content"
    shutil.copytree(PACKAGED_CONTENT, folder)
    return folder


def _edit(folder: Path, name: str, change: Edit) -> None:
    path = folder / name
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _item(data: dict[str, Any], link_id: str) -> dict[str, Any]:
    stack = list(data["item"])
    while stack:
        item = stack.pop()
        if item["linkId"] == link_id:
            return item
        stack += item.get("item", [])
    raise KeyError(link_id)


def _when(link_id: str, condition: dict[str, Any]) -> Edit:
    def change(data: dict[str, Any]) -> None:
        _item(data, link_id)["enableWhen"] = [condition]

    return change


CASES = [
    (
        "vital_signs.questionnaire.json",
        _when("note", {"question": "nowhere", "operator": "exists", "answerBoolean": True}),
        "item note: enableWhen names 'nowhere', which is not in the form",
    ),
    (
        "vital_signs.questionnaire.json",
        _when("note", {"question": "readings", "operator": "exists", "answerBoolean": True}),
        "enableWhen names 'readings', a group item with no answer",
    ),
    (
        "vital_signs.questionnaire.json",
        _when("note", {"question": "spo2", "operator": "=", "answerBoolean": True}),
        "compares 'spo2' (integer) with a value it can never have",
    ),
    (
        "vital_signs.questionnaire.json",
        _when("note", {"question": "spo2", "operator": ">", "answerInteger": 100}),
        "item note: can never be shown",
    ),
    (
        "vital_signs.rules.json",
        lambda d: d["rules"][0].update(when="spo2 < 90 and pulse_rate > 1"),
        "rule low_oxygen: names 'pulse_rate', which is not an item of the form",
    ),
    (
        "vital_signs.rules.json",
        lambda d: d["rules"][0]["tasks"][0].update(due="readings", due_in_days=None),
        "rule low_oxygen task referral_check: names 'readings', a group item with no answer",
    ),
    (
        "vital_signs.questionnaire.json",
        lambda d: _item(d, "note").update(required=True, type="display"),
        "item note: a display item cannot be required",
    ),
]


@pytest.mark.parametrize(("file", "change", "message"), CASES)
def test_a_broken_form_is_reported(tmp_path: Path, file: str, change: Edit, message: str) -> None:
    folder = _copy(tmp_path)
    _edit(folder, file, change)
    if "due_in_days" in json.dumps(json.loads((folder / file).read_text())):
        _edit(folder, file, _drop_none_due)

    problems = [str(p) for p in check_library(FormLibrary(folder))]

    assert any(message in p for p in problems), problems


def _drop_none_due(data: dict[str, Any]) -> None:
    for rule in data.get("rules", []):
        for task in rule.get("tasks", []):
            if task.get("due_in_days") is None:
                task.pop("due_in_days", None)


def test_a_file_that_does_not_load_is_reported_and_the_rest_still_checked(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "tb_screen.rules.json").write_text("{", encoding="utf-8")

    problems = [str(p) for p in check_library(FormLibrary(folder))]

    assert problems == [
        "tb_screen: files: tb_screen.rules.json: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    ]


def test_missing_and_stale_translations_are_reported(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    path = folder / "locale" / "sw" / "LC_MESSAGES" / "vital_signs.po"
    catalogue = polib.pofile(str(path))
    catalogue.remove(catalogue.find("Pulse"))
    catalogue.append(polib.POEntry(msgid="A text no form has", msgstr="Maandishi"))
    catalogue.save()
    (folder / "locale" / "sw" / "LC_MESSAGES" / "tb_screen.po").unlink()

    problems = [str(p) for p in check_library(FormLibrary(folder))]

    assert "vital_signs: language sw: no translation for 'Pulse'" in problems
    assert (
        "vital_signs: language sw: translation of 'A text no form has', a text the form no longer has"
        in problems
    )
    assert "tb_screen: language sw: no catalogue for this form" in problems


def test_an_empty_folder_is_reported(tmp_path: Path) -> None:
    problems = check_library(FormLibrary(tmp_path))

    assert len(problems) == 1
    assert "no forms found" in problems[0].message
