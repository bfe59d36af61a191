"""Reading content: Questionnaire and rule files that the engine refuses, and the catalogues.

Every refusal is a ContentError that names the file, so that a programme editing its own
content folder knows where to look.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from field_app.errors import ContentError, UnknownForm
from field_app.forms import FormLibrary, FormState

Json = dict[str, Any]
EXT = "http://hl7.org/fhir/StructureDefinition/"
CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
TODAY = "2025-03-01"

GOOD_ITEMS: list[Json] = [
    {"linkId": "fever", "type": "boolean", "text": "Fever?"},
    {
        "linkId": "where",
        "type": "choice",
        "text": "Where does it hurt?",
        "answerOption": [
            {"valueCoding": {"code": "head", "display": "Head"}},
            {"valueCoding": {"code": "belly", "display": "Belly"}},
        ],
    },
]
GOOD_RULES: list[Json] = [
    {
        "id": "fever",
        "when": "fever = true",
        "source": "S",
        "reason": "Fever: see a clinician.",
        "referral": "urgent",
        "tasks": [{"kind": "recheck", "description": "Check the fever", "due_in_days": 2}],
    }
]


def write_content(
    folder: Path, items: list[Json] | None = None, rules: list[Json] | None = None, **rule_file: Any
) -> FormLibrary:
    questionnaire: Json = {
        "resourceType": "Questionnaire",
        "name": "f",
        "url": "urn:f",
        "version": "1",
    }
    rule_base: Json = {"format": "care-rules/1", "form": "f", "version": "1", "sources": {"S": "s"}}
    questionnaire["item"] = GOOD_ITEMS if items is None else items
    rule_base["rules"] = GOOD_RULES if rules is None else rules
    (folder / "f.questionnaire.json").write_text(json.dumps(questionnaire))
    (folder / "f.rules.json").write_text(json.dumps(rule_base | rule_file))
    return FormLibrary(folder)


def calculated(expression: str) -> Json:
    return {
        "url": CALCULATED,
        "valueExpression": {"language": "text/fhirpath", "expression": expression},
    }


def test_good_content_loads(tmp_path: Path) -> None:
    form = write_content(tmp_path).get("f")

    assert list(form.questionnaire.items) == ["fever", "where"]
    assert [r.id for r in form.rules.rules] == ["fever"]


BAD_ITEMS: list[tuple[str, list[Json], str]] = [
    (
        "unknown type",
        [{"linkId": "a", "type": "attachment", "text": "a"}],
        "'attachment' is not supported",
    ),
    (
        "repeating group",
        [{"linkId": "g", "type": "group", "text": "g", "repeats": True, "item": GOOD_ITEMS}],
        "repeating groups are not supported",
    ),
    (
        "two enableWhen without enableBehavior",
        [
            *GOOD_ITEMS,
            {
                "linkId": "x",
                "type": "string",
                "text": "x",
                "enableWhen": [
                    {"question": "fever", "operator": "=", "answerBoolean": True},
                    {"question": "where", "operator": "exists", "answerBoolean": True},
                ],
            },
        ],
        "enableBehavior is required",
    ),
    (
        "bad operator",
        [
            *GOOD_ITEMS,
            {
                "linkId": "x",
                "type": "string",
                "text": "x",
                "enableWhen": [{"question": "fever", "operator": "~", "answerBoolean": True}],
            },
        ],
        "'~' is not a FHIR R4 operator",
    ),
    (
        "duplicate linkId",
        [*GOOD_ITEMS, {"linkId": "fever", "type": "integer", "text": "again"}],
        "linkId is used twice",
    ),
    (
        "duplicate linkId in a group",
        [
            {
                "linkId": "g",
                "type": "group",
                "text": "g",
                "item": [{"linkId": "g", "type": "boolean", "text": "g"}],
            }
        ],
        "linkId is used twice",
    ),
    (
        "choice without options",
        [{"linkId": "c", "type": "choice", "text": "c"}],
        "needs answerOption",
    ),
    ("quantity without units", [{"linkId": "q", "type": "quantity", "text": "q"}], "unitOption"),
    (
        "unknown extension",
        [
            {
                "linkId": "q",
                "type": "integer",
                "text": "q",
                "extension": [{"url": EXT + "sliderStepValue", "valueInteger": 1}],
            }
        ],
        "unsupported extension",
    ),
    (
        "clock in a calculation",
        [
            *GOOD_ITEMS,
            {
                "linkId": "d",
                "type": "integer",
                "text": "d",
                "extension": [calculated("today().day()")],
            },
        ],
        "use %today",
    ),
    (
        "FHIRPath that cannot be read",
        [
            *GOOD_ITEMS,
            {"linkId": "d", "type": "integer", "text": "d", "extension": [calculated("'open")]},
        ],
        "is not valid FHIRPath",
    ),
    ("no items", [], "has no items"),
    ("item without linkId", [{"type": "boolean", "text": "b"}], "missing linkId"),
]


@pytest.mark.parametrize(("items", "message"), [pytest.param(i, m, id=n) for n, i, m in BAD_ITEMS])
def test_a_questionnaire_the_engine_would_misread_is_refused(
    tmp_path: Path, items: list[Json], message: str
) -> None:
    library = write_content(tmp_path, items=items)

    with pytest.raises(ContentError, match=r"f\.questionnaire\.json|f: item") as caught:
        library.get("f")
    assert message in str(caught.value)


def rule_with(**changes: Any) -> list[Json]:
    return [GOOD_RULES[0] | changes]


BAD_RULES: list[tuple[str, list[Json], str]] = [
    ("source not listed", rule_with(source="WHO-1"), "source 'WHO-1' is not listed"),
    ("unknown field", rule_with(urgency="urgent"), "unknown field 'urgency'"),
    ("unknown urgency", rule_with(referral="soon"), "referral must be one of"),
    (
        "task without due",
        rule_with(tasks=[{"kind": "recheck", "description": "d"}]),
        "give exactly one of due_in_days and due",
    ),
    (
        "task with two dues",
        rule_with(
            tasks=[{"kind": "recheck", "description": "d", "due_in_days": 1, "due": "%today"}]
        ),
        "give exactly one of due_in_days and due",
    ),
    ("duplicate rule id", [GOOD_RULES[0], GOOD_RULES[0]], "two rules share an id"),
    ("clock in a rule", rule_with(when="now() > @2025-01-01"), "use %today"),
    (
        "clock in a due date",
        rule_with(tasks=[{"kind": "k", "description": "d", "due": "today() + 2 days"}]),
        "use %today",
    ),
    ("unreadable FHIRPath", rule_with(when="'open"), "is not valid FHIRPath"),
    (
        "rule without when",
        [{k: v for k, v in GOOD_RULES[0].items() if k != "when"}],
        "missing when",
    ),
]


@pytest.mark.parametrize(("rules", "message"), [pytest.param(r, m, id=n) for n, r, m in BAD_RULES])
def test_a_rule_file_with_a_mistake_is_refused(
    tmp_path: Path, rules: list[Json], message: str
) -> None:
    library = write_content(tmp_path, rules=rules)

    with pytest.raises(ContentError, match=r"f\.rules\.json") as caught:
        library.get("f")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("rule_file", "message"),
    [
        ({"format": "care-rules/2"}, "format must be care-rules/1"),
        ({"form": "other"}, "it is for form 'other'"),
        ({"record": "clinic"}, "record must be visit, patient or household"),
    ],
)
def test_a_rule_file_of_another_kind_is_refused(
    tmp_path: Path, rule_file: Json, message: str
) -> None:
    library = write_content(tmp_path, **rule_file)

    with pytest.raises(ContentError, match=r"f\.rules\.json") as caught:
        library.get("f")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "expression", ["fever = ", "fever fever", "(fever", "1 +* 2", "fever = 'yes"]
)
def test_fhirpath_with_a_syntax_error_is_refused_when_the_form_loads(
    tmp_path: Path, expression: str
) -> None:
    library = write_content(tmp_path, rules=rule_with(when=expression))

    with pytest.raises(ContentError, match="not valid FHIRPath"):
        library.get("f")


def test_a_missing_rule_file_or_broken_json_names_the_file(tmp_path: Path) -> None:
    library = write_content(tmp_path)
    (tmp_path / "f.rules.json").unlink()
    with pytest.raises(ContentError, match=r"f\.rules\.json is missing"):
        library.get("f")

    (tmp_path / "f.rules.json").write_text("{not json")
    with pytest.raises(ContentError, match=r"f\.rules\.json: not valid JSON"):
        FormLibrary(tmp_path).get("f")


def test_an_unknown_form_lists_the_forms_there_are(tmp_path: Path) -> None:
    library = write_content(tmp_path)

    with pytest.raises(UnknownForm, match="forms here: f"):
        library.get("nosuch")
    with pytest.raises(UnknownForm):
        library.get("../f")


# -- catalogues -----------------------------------------------------------------------------

PO = """\
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\\n"
"Language: sw\\n"

msgid "Fever?"
msgstr "Homa?"

msgid "Head"
msgstr "Kichwa"

#, fuzzy
msgid "Belly"
msgstr "Mguu"

msgid "Where does it hurt?"
msgstr ""

msgid "Fever: see a clinician."
msgstr "Homa: mwone mtaalamu."
"""


def with_swahili(folder: Path, po: str = PO) -> FormLibrary:
    library = write_content(folder)
    messages = folder / "locale" / "sw" / "LC_MESSAGES"
    messages.mkdir(parents=True)
    (messages / "f.po").write_text(po, encoding="utf-8")
    return library


@pytest.mark.parametrize(
    ("msgid", "shown"),
    [
        ("Fever?", "Homa?"),
        ("Head", "Kichwa"),
        ("Belly", "Belly"),  # fuzzy: not trusted yet
        ("Where does it hurt?", "Where does it hurt?"),  # empty msgstr
        ("Not in the catalogue", "Not in the catalogue"),
    ],
)
def test_swahili_text_with_english_where_there_is_no_sure_translation(
    tmp_path: Path, msgid: str, shown: str
) -> None:
    form = with_swahili(tmp_path).get("f")

    state = FormState(form, today=date.fromisoformat(TODAY), language="sw")

    assert state.text(msgid) == shown
    assert form.catalogue("en").text(msgid) == msgid


def test_an_unknown_language_falls_back_to_english(tmp_path: Path) -> None:
    library = with_swahili(tmp_path)

    assert library.languages() == ["en", "sw"]
    assert library.get("f").catalogue("fr").text("Fever?") == "Fever?"


def test_a_form_without_a_catalogue_in_a_language_shows_english(tmp_path: Path) -> None:
    library = write_content(tmp_path)
    (tmp_path / "locale" / "sw" / "LC_MESSAGES").mkdir(parents=True)

    assert library.get("f").catalogue("sw").text("Fever?") == "Fever?"


def test_an_unreadable_catalogue_is_a_content_error_naming_it(tmp_path: Path) -> None:
    library = with_swahili(tmp_path, po="garbage, not a catalogue\n")

    with pytest.raises(ContentError, match=r"f\.po \(sw\)"):
        library.get("f")
