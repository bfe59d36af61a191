"""FormState over small inline forms: enableWhen, answers and their limits, repeats, calculations.

Each test writes its own Questionnaire and rule file into a content folder under ``tmp_path``
and loads it through a real FormLibrary, as a programme's own content folder would be.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from field_app.errors import BadAnswer, ContentError, FormIncomplete
from field_app.forms import Form, FormLibrary, FormState, Quantity

Json = dict[str, Any]
EXT = "http://hl7.org/fhir/StructureDefinition/"
CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
TODAY = date(2025, 3, 1)


def write_form(folder: Path, items: list[Json], rules: list[Json] | None = None) -> Form:
    """Write form "f" (its Questionnaire and rules) into ``folder`` and load it."""
    questionnaire = {"resourceType": "Questionnaire", "name": "f", "url": "urn:f", "version": "1"}
    rule_file = {"format": "care-rules/1", "form": "f", "version": "1", "sources": {"S": "src"}}
    (folder / "f.questionnaire.json").write_text(json.dumps(questionnaire | {"item": items}))
    (folder / "f.rules.json").write_text(json.dumps(rule_file | {"rules": rules or []}))
    return FormLibrary(folder).get("f")


def units(*codes: str) -> list[Json]:
    return [{"url": EXT + "questionnaire-unitOption", "valueCoding": {"code": c}} for c in codes]


def limits(kind: str, low: object = None, high: object = None) -> list[Json]:
    found = []
    if low is not None:
        found.append({"url": EXT + "minValue", f"value{kind}": low})
    if high is not None:
        found.append({"url": EXT + "maxValue", f"value{kind}": high})
    return found


def calculated(expression: str) -> list[Json]:
    return [
        {
            "url": CALCULATED,
            "valueExpression": {"language": "text/fhirpath", "expression": expression},
        }
    ]


def options(*codes: str) -> list[Json]:
    return [{"valueCoding": {"code": c, "display": c.title()}} for c in codes]


def when(question: str, op: str, key: str, value: object) -> Json:
    return {"question": question, "operator": op, key: value}


def rule(rule_id: str, condition: str, **extra: Any) -> Json:
    return {"id": rule_id, "when": condition, "source": "S", "reason": rule_id} | extra


def state_of(form: Form, **patient: str) -> FormState:
    return FormState(form, today=TODAY, patient=patient)


# -- enableWhen -------------------------------------------------------------------------------

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}

# type, extra item JSON, answer[x] key, the condition's value, answers below / equal / above it.
# Each given answer is (what is given, its value as compared).
ORDERED: list[tuple[str, list[Json], str, Any, list[tuple[Any, Any]]]] = [
    ("integer", [], "answerInteger", 5, [(4, 4), (5, 5), (6, 6)]),
    ("decimal", [], "answerDecimal", 2.5, [(2.4, 2.4), ("2,5", 2.5), (2.6, 2.6)]),
    (
        "date",
        [],
        "answerDate",
        "2025-01-10",
        [("2025-01-09", 9), ("2025-01-10", 10), (date(2025, 1, 11), 11)],
    ),
    (
        "quantity",
        units("kg", "g"),
        "answerQuantity",
        {"value": 2.5, "code": "kg"},
        [(2.4, 2.4), ({"value": 2.5, "unit": "kg"}, 2.5), (Quantity(2.6, "kg"), 2.6)],
    ),
]
EQUAL_ONLY: list[tuple[str, list[Json], str, Any, list[tuple[Any, Any]]]] = [
    ("boolean", [], "answerBoolean", True, [(False, False), ("yes", True)]),
    ("choice", options("a", "b", "c"), "answerCoding", {"code": "b"}, [("a", "a"), ("b", "b")]),
]


def _operator_cases() -> list[Any]:
    cases = []
    for kind, extension, key, condition, givens in ORDERED + EQUAL_ONLY:
        ops = OPERATORS if kind in ("integer", "decimal", "date", "quantity") else ["=", "!="]
        compared = {"date": 10, "quantity": 2.5}.get(kind, condition)
        if kind == "choice":
            compared = "b"
        for op in ops:
            for given, value in givens:
                expected = OPERATORS[op](value, compared)
                name = f"{kind} {given!r} {op} {condition!r}"
                cases.append(
                    pytest.param(kind, extension, key, condition, op, given, expected, id=name)
                )
    return cases


@pytest.mark.parametrize(
    ("kind", "extension", "key", "condition", "op", "given", "expected"), _operator_cases()
)
def test_enable_when_operator(
    tmp_path: Path,
    *,
    kind: str,
    extension: list[Json],
    key: str,
    condition: object,
    op: str,
    given: object,
    expected: bool,
) -> None:
    source: Json = {"linkId": "src", "type": kind, "text": "s", "extension": extension}
    if kind == "choice":
        source = {"linkId": "src", "type": kind, "text": "s", "answerOption": extension}
    target = {
        "linkId": "t",
        "type": "string",
        "text": "t",
        "enableWhen": [when("src", op, key, condition)],
    }
    state = state_of(write_form(tmp_path, [source, target]))

    state.answer("src", given)

    assert state.errors == {}
    assert state.is_enabled("t") is expected


@pytest.mark.parametrize("kind", ["boolean", "integer", "decimal", "date", "choice", "quantity"])
@pytest.mark.parametrize("exists", [True, False])
def test_enable_when_exists(tmp_path: Path, kind: str, exists: bool) -> None:
    samples: dict[str, tuple[Json, object]] = {
        "boolean": ({}, False),
        "integer": ({}, 0),
        "decimal": ({}, 0.5),
        "date": ({}, "2024-02-29"),
        "choice": ({"answerOption": options("x")}, "x"),
        "quantity": ({"extension": units("cm", "mm")}, {"value": 3, "unit": "mm"}),
    }
    extra, answer = samples[kind]
    source = {"linkId": "src", "type": kind, "text": "s"} | extra
    condition = when("src", "exists", "answerBoolean", exists)
    target = {"linkId": "t", "type": "boolean", "text": "t", "enableWhen": [condition]}
    state = state_of(write_form(tmp_path, [source, target]))

    assert state.is_enabled("t") is (not exists)
    state.answer("src", answer)
    assert state.is_enabled("t") is exists
    state.answer("src", None)
    assert state.is_enabled("t") is (not exists)


def test_enable_when_compares_a_quantity_given_in_another_unit(tmp_path: Path) -> None:
    weight = {"linkId": "w", "type": "quantity", "text": "w", "extension": units("kg", "g")}
    low = when("w", "<", "answerQuantity", {"value": 2.5, "code": "kg"})
    target = {"linkId": "t", "type": "boolean", "text": "t", "enableWhen": [low]}
    state = state_of(write_form(tmp_path, [weight, target]))

    state.answer("w", {"value": 2000, "unit": "g"})

    assert state.is_enabled("t")


@pytest.mark.parametrize(
    ("behavior", "a", "b", "expected"),
    [
        ("all", True, True, True),
        ("all", True, False, False),
        ("all", False, False, False),
        ("any", True, False, True),
        ("any", False, True, True),
        ("any", False, False, False),
    ],
)
def test_enable_behavior(tmp_path: Path, behavior: str, a: bool, b: bool, expected: bool) -> None:
    questions = [{"linkId": n, "type": "boolean", "text": n} for n in ("a", "b")]
    conditions = [when(n, "=", "answerBoolean", True) for n in ("a", "b")]
    target = {
        "linkId": "t",
        "type": "string",
        "text": "t",
        "enableWhen": conditions,
        "enableBehavior": behavior,
    }
    state = state_of(write_form(tmp_path, [*questions, target]))

    state.answer_all({"a": a, "b": b})

    assert state.is_enabled("t") is expected


def test_a_disabled_group_disables_its_children_and_their_dependants(tmp_path: Path) -> None:
    child = {"linkId": "child", "type": "integer", "text": "c", "required": True}
    group = {
        "linkId": "g",
        "type": "group",
        "text": "g",
        "enableWhen": [when("open", "=", "answerBoolean", True)],
        "item": [child],
    }
    dependant = {
        "linkId": "dep",
        "type": "boolean",
        "text": "d",
        "required": True,
        "enableWhen": [when("child", "exists", "answerBoolean", True)],
    }
    opener = {"linkId": "open", "type": "boolean", "text": "o"}
    state = state_of(write_form(tmp_path, [opener, group, dependant]))
    state.answer_all({"open": True, "child": 3})
    assert {"g", "child", "dep"} <= state.enabled
    assert state.missing == ("dep",)

    state.answer("open", False)

    assert not {"g", "child", "dep"} & state.enabled
    assert state.value("child") == ()
    assert not state.missing


def test_an_answer_to_a_disabled_question_is_kept_but_unused_until_re_enabled(
    tmp_path: Path,
) -> None:
    items: list[Json] = [
        {"linkId": "has", "type": "boolean", "text": "h"},
        {
            "linkId": "n",
            "type": "integer",
            "text": "n",
            "enableWhen": [when("has", "=", "answerBoolean", True)],
        },
        {"linkId": "double", "type": "integer", "text": "d", "extension": calculated("n * 2")},
    ]
    form = write_form(tmp_path, items, [rule("many", "n > 5", referral="urgent")])
    state = state_of(form)
    state.answer_all({"has": True, "n": 10})
    assert state.value("double") == (20,)
    assert state.conclusions.urgency == "urgent"

    state.answer("has", False)

    assert state.given("n") == 10
    assert state.value("n") == ()
    assert state.value("double") == ()
    assert not state.conclusions.fired
    assert "n" not in state.complete().answers
    assert "double" not in state.complete().answers

    state.answer("has", True)

    assert state.value("n") == (10,)
    assert state.value("double") == (20,)
    assert [r.id for r in state.conclusions.fired] == ["many"]


def test_not_equal_with_no_answer_is_true(tmp_path: Path) -> None:
    source = {"linkId": "src", "type": "integer", "text": "s"}
    target = {
        "linkId": "t",
        "type": "boolean",
        "text": "t",
        "enableWhen": [when("src", "!=", "answerInteger", 3)],
    }
    state = state_of(write_form(tmp_path, [source, target]))

    assert state.is_enabled("t")
    state.answer("src", 3)
    assert not state.is_enabled("t")


def test_an_answer_to_a_disabled_question_does_not_enable_others(tmp_path: Path) -> None:
    items: list[Json] = [
        {"linkId": "a", "type": "boolean", "text": "a"},
        {
            "linkId": "b",
            "type": "integer",
            "text": "b",
            "enableWhen": [when("a", "=", "answerBoolean", True)],
        },
        {
            "linkId": "c",
            "type": "string",
            "text": "c",
            "enableWhen": [when("b", ">", "answerInteger", 1)],
        },
    ]
    state = state_of(write_form(tmp_path, items))
    state.answer_all({"a": True, "b": 5})
    assert state.is_enabled("c")

    state.answer("a", False)

    assert not state.is_enabled("c")


def test_a_long_chain_of_enable_when_settles_in_one_answers_file(tmp_path: Path) -> None:
    items = [{"linkId": "q0", "type": "boolean", "text": "q"}] + [
        {
            "linkId": f"q{i}",
            "type": "boolean",
            "text": "q",
            "enableWhen": [when(f"q{i - 1}", "exists", "answerBoolean", True)],
        }
        for i in range(1, 12)
    ]
    state = state_of(write_form(tmp_path, items))

    state.answer_all({f"q{i}": True for i in range(12)})

    assert len(state.enabled) == 12


# -- initial values, required ----------------------------------------------------------------


def test_initial_values_are_answers_until_changed_or_cleared(tmp_path: Path) -> None:
    items: list[Json] = [
        {"linkId": "b", "type": "boolean", "text": "b", "initial": [{"valueBoolean": False}]},
        {
            "linkId": "c",
            "type": "choice",
            "text": "c",
            "answerOption": options("x", "y"),
            "initial": [{"valueCoding": {"code": "y"}}],
        },
        {
            "linkId": "r",
            "type": "choice",
            "text": "r",
            "repeats": True,
            "answerOption": options("x", "y", "z"),
            "initial": [{"valueCoding": {"code": "x"}}, {"valueCoding": {"code": "z"}}],
        },
        {
            "linkId": "i",
            "type": "integer",
            "text": "i",
            "required": True,
            "initial": [{"valueInteger": 7}],
        },
    ]
    state = state_of(write_form(tmp_path, items))
    assert state.value("b") == (False,)
    assert state.value("c") == ("y",)
    assert state.value("r") == ("x", "z")
    assert not state.missing

    state.answer("c", "x")
    state.answer("i", None)

    assert state.value("c") == ("x",)
    assert state.missing == ("i",)


def test_a_question_is_required_only_while_enabled(tmp_path: Path) -> None:
    items: list[Json] = [
        {"linkId": "gate", "type": "boolean", "text": "g", "required": True},
        {
            "linkId": "detail",
            "type": "string",
            "text": "d",
            "required": True,
            "enableWhen": [when("gate", "=", "answerBoolean", True)],
        },
    ]
    state = state_of(write_form(tmp_path, items))
    assert state.missing == ("gate",)

    state.answer("gate", True)
    assert state.missing == ("detail",)
    with pytest.raises(FormIncomplete) as caught:
        state.complete()
    assert caught.value.problems == {"detail": "is required"}

    state.answer("gate", False)
    assert not state.missing
    assert state.complete().answers == {"gate": (False,)}


# -- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "given", "reason"),
    [
        ({"type": "integer", "extension": limits("Integer", 0, 10)}, 11, "must be at most 10"),
        ({"type": "integer", "extension": limits("Integer", 0, 10)}, "-1", "must be at least 0"),
        (
            {"type": "decimal", "extension": limits("Decimal", 35.0, 42.5)},
            42.6,
            "must be at most 42.5",
        ),
        (
            {"type": "decimal", "extension": limits("Decimal", 35.0, 42.5)},
            "34,9",
            "must be at least 35",
        ),
        (
            {"type": "date", "extension": limits("Date", "2020-01-01")},
            "2019-12-31",
            "must be at least 2020-01-01",
        ),
        (
            {"type": "date", "extension": limits("Date", None, "2026-12-31")},
            "2027-01-01",
            "must be at most 2026-12-31",
        ),
        ({"type": "date"}, "2025-03-02", "cannot be in the future"),
        (
            {"type": "string", "extension": [{"url": EXT + "minLength", "valueInteger": 3}]},
            "ab",
            "must be at least 3 characters",
        ),
        ({"type": "string", "maxLength": 4}, "abcde", "must be at most 4 characters"),
        ({"type": "text", "maxLength": 4}, "ab\ncd", "must be at most 4 characters"),
    ],
)
def test_a_value_outside_the_limits_is_invalid_with_a_message_that_hides_it(
    tmp_path: Path, item: Json, given: object, reason: str
) -> None:
    state = state_of(write_form(tmp_path, [{"linkId": "q", "text": "q"} | item]))

    state.answer("q", given)

    assert state.errors == {"q": reason}
    assert state.value("q") == ()
    assert state.given("q") == given
    assert str(given) not in reason
    with pytest.raises(FormIncomplete) as caught:
        state.complete()
    assert caught.value.problems == {"q": reason}
    assert str(given) not in str(caught.value)


@pytest.mark.parametrize(
    ("item", "given", "expected"),
    [
        ({"type": "integer", "extension": limits("Integer", 0, 10)}, "10", 10),
        ({"type": "decimal", "extension": limits("Decimal", 35.0, 42.5)}, 35, 35.0),
        (
            {"type": "date", "extension": limits("Date", None, "2026-12-31")},
            "2026-12-31",
            date(2026, 12, 31),
        ),
        ({"type": "string", "maxLength": 4}, "  abcd ", "abcd"),
    ],
)
def test_a_value_on_a_limit_is_valid(
    tmp_path: Path, item: Json, given: object, expected: object
) -> None:
    state = state_of(write_form(tmp_path, [{"linkId": "q", "text": "q"} | item]))

    state.answer("q", given)

    assert state.errors == {}
    assert state.value("q") == (expected,)


@pytest.mark.parametrize(
    ("unit_codes", "low", "high", "given", "canonical", "reason"),
    [
        (("kg", "g"), 0.5, 10.0, {"value": 2400, "unit": "g"}, 2.4, None),
        (("kg", "g"), 0.5, 10.0, {"value": 12000, "unit": "g"}, None, "must be at most 10"),
        (("kg", "g"), 0.5, 10.0, {"value": 400, "unit": "g"}, None, "must be at least 0.5"),
        (("cm", "mm"), 40.0, 120.0, {"value": 650, "unit": "mm"}, 65.0, None),
        (("cm", "mm"), 40.0, 120.0, {"value": 1250, "unit": "mm"}, None, "must be at most 120"),
        (
            ("cm", "mm"),
            40.0,
            120.0,
            {"value": 65, "unit": "kg"},
            None,
            "unit must be one of cm, mm",
        ),
    ],
)
def test_a_quantity_in_another_unit_is_converted_for_limits_and_rules(
    tmp_path: Path,
    *,
    unit_codes: tuple[str, str],
    low: float,
    high: float,
    given: Json,
    canonical: float | None,
    reason: str | None,
) -> None:
    item: Json = {"linkId": "q", "type": "quantity", "text": "q", "extension": units(*unit_codes)}
    item["extension"] += limits("Decimal", low, high)
    form = write_form(tmp_path, [item], [rule("small", "q < 70")])
    state = state_of(form)

    state.answer("q", given)

    if reason is None:
        assert state.errors == {}
        assert state.value("q") == (Quantity(float(given["value"]), given["unit"]),)
        assert [r.id for r in state.conclusions.fired] == (["small"] if canonical < 70 else [])  # type: ignore[operator]
    else:
        assert state.errors == {"q": reason}
        assert not state.conclusions.fired


def test_a_bare_number_for_a_quantity_is_in_its_first_unit(tmp_path: Path) -> None:
    item = {"linkId": "q", "type": "quantity", "text": "q", "extension": units("kg", "g")}
    state = state_of(write_form(tmp_path, [item]))

    state.answer("q", "3,2")

    assert state.value("q") == (Quantity(3.2, "kg"),)


# -- shapes and types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "extra", "given", "reason"),
    [
        ("integer", {}, "abc", "must be a whole number"),
        ("integer", {}, 2.5, "must be a whole number"),
        ("integer", {}, True, "must be a whole number"),
        ("decimal", {}, "abc", "must be a number"),
        ("decimal", {}, "nan", "must be a number"),
        ("boolean", {}, "maybe", "must be yes or no"),
        ("boolean", {}, 1, "must be yes or no"),
        ("date", {}, "31/03/2025", "must be a date like 2026-03-31"),
        ("string", {}, "   ", "must not be empty"),
        ("string", {}, 12, "must be text"),
        ("string", {}, "a\x00b", "must not contain control characters"),
        ("choice", {"answerOption": options("a")}, "zz", "is not one of the options"),
        ("quantity", {"extension": units("kg")}, "heavy", "must be a number"),
    ],
)
def test_a_mistyped_value_is_invalid_with_a_reason_not_an_exception(
    tmp_path: Path, kind: str, extra: Json, given: object, reason: str
) -> None:
    state = state_of(write_form(tmp_path, [{"linkId": "q", "type": kind, "text": "q"} | extra]))

    state.answer("q", given)

    assert state.errors == {"q": reason}
    assert state.value("q") == ()


@pytest.mark.parametrize(
    ("kind", "extra", "given"),
    [
        ("integer", {}, "--5"),
        ("integer", {}, "5²"),
        ("decimal", {}, 10**400),
        ("quantity", {"extension": units("kg", "g")}, {"value": 3, "unit": ["kg"]}),
    ],
    ids=["double minus", "superscript digit", "huge integer", "unit as a list"],
)
def test_odd_inputs_are_invalid_answers_not_crashes(
    tmp_path: Path, kind: str, extra: Json, given: object
) -> None:
    state = state_of(write_form(tmp_path, [{"linkId": "q", "type": kind, "text": "q"} | extra]))

    state.answer("q", given)

    assert "q" in state.errors


def test_a_datetime_for_a_date_question_is_read_as_its_day(tmp_path: Path) -> None:
    state = state_of(write_form(tmp_path, [{"linkId": "q", "type": "date", "text": "q"}]))

    state.answer("q", datetime(2024, 1, 1, 9, 30))  # noqa: DTZ001 - a naive value is the input

    assert state.errors == {}
    assert state.value("q") == (date(2024, 1, 1),)


def test_a_repeating_question_takes_a_list_without_duplicates(tmp_path: Path) -> None:
    item = {
        "linkId": "r",
        "type": "choice",
        "text": "r",
        "repeats": True,
        "answerOption": options("a", "b", "c"),
    }
    form = write_form(tmp_path, [item], [rule("has_b", "r contains 'b'")])
    state = state_of(form)

    state.answer("r", ["a", "b"])
    assert state.value("r") == ("a", "b")
    assert [r.id for r in state.conclusions.fired] == ["has_b"]

    state.answer("r", ["a", "a"])
    assert state.errors == {"r": "gives the same answer twice"}
    assert not state.conclusions.fired

    state.answer("r", "c")
    assert state.value("r") == ("c",)

    state.answer("r", ["a", "nope"])
    assert state.errors == {"r": "is not one of the options"}

    state.answer("r", [])
    assert state.value("r") == ()
    assert state.errors == {}


@pytest.mark.parametrize("given", [[1, 2], (1,), {"value": 1}])
def test_a_list_or_object_for_a_single_answer_is_a_caller_bug(
    tmp_path: Path, given: object
) -> None:
    state = state_of(write_form(tmp_path, [{"linkId": "q", "type": "integer", "text": "q"}]))

    with pytest.raises(BadAnswer, match="q"):
        state.answer("q", given)


def test_a_refused_answer_leaves_the_state_as_it_was(tmp_path: Path) -> None:
    items: list[Json] = [
        {"linkId": "n", "type": "integer", "text": "n"},
        {"linkId": "double", "type": "integer", "text": "d", "extension": calculated("n * 2")},
    ]
    state = state_of(write_form(tmp_path, items))
    state.answer("n", 4)

    with pytest.raises(BadAnswer):
        state.answer("n", [4, 5])

    assert state.value("n") == (4,)
    assert state.value("double") == (8,)


@pytest.mark.parametrize("link_id", ["nosuch", "g", "note", "double"])
def test_only_questions_a_person_answers_take_answers(tmp_path: Path, link_id: str) -> None:
    items: list[Json] = [
        {
            "linkId": "g",
            "type": "group",
            "text": "g",
            "item": [{"linkId": "n", "type": "integer", "text": "n"}],
        },
        {"linkId": "note", "type": "display", "text": "read this"},
        {"linkId": "double", "type": "integer", "text": "d", "extension": calculated("n * 2")},
    ]
    state = state_of(write_form(tmp_path, items))

    with pytest.raises(BadAnswer, match=link_id):
        state.answer(link_id, 1)
    with pytest.raises(BadAnswer):
        state.answer_all({link_id: 1})


# -- calculations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birth_date", "today", "months"),
    [
        ("2024-01-31", date(2024, 2, 29), 1),
        ("2024-01-31", date(2024, 2, 28), 0),
        ("2024-01-30", date(2024, 2, 29), 1),
        ("2024-03-31", date(2024, 4, 30), 1),
        ("2024-01-15", date(2024, 2, 14), 0),
        ("2024-01-15", date(2024, 2, 15), 1),
        ("2023-02-28", date(2025, 2, 28), 24),
        ("2024-02-29", date(2025, 2, 28), 12),
        ("2025-03-01", date(2025, 3, 1), 0),
    ],
)
def test_age_in_months_from_the_birth_date(
    tmp_path: Path, birth_date: str, today: date, months: int
) -> None:
    item = {
        "linkId": "age",
        "type": "integer",
        "text": "a",
        "extension": calculated("%patient.birth_date.monthsTo(%today)"),
    }
    form = write_form(tmp_path, [item, {"linkId": "x", "type": "boolean", "text": "x"}])

    state = FormState(form, today=today, patient={"birth_date": birth_date})

    assert state.value("age") == (months,)
    assert state.complete().answers["age"] == (months,)


def test_age_is_empty_without_a_birth_date(tmp_path: Path) -> None:
    item = {
        "linkId": "age",
        "type": "integer",
        "text": "a",
        "extension": calculated("%patient.birth_date.monthsTo(%today)"),
    }
    form = write_form(tmp_path, [item, {"linkId": "x", "type": "boolean", "text": "x"}])

    assert state_of(form).value("age") == ()


def test_bmi_from_weight_and_height_in_any_unit(tmp_path: Path) -> None:
    items: list[Json] = [
        {"linkId": "weight", "type": "quantity", "text": "w", "extension": units("kg", "g")},
        {"linkId": "height", "type": "quantity", "text": "h", "extension": units("cm", "m")},
        {
            "linkId": "bmi",
            "type": "decimal",
            "text": "b",
            "extension": calculated("(weight / ((height / 100) * (height / 100))).round(1)"),
        },
    ]
    form = write_form(tmp_path, items, [rule("obese", "bmi >= 30")])
    state = state_of(form)
    state.answer("weight", 80)
    assert state.value("bmi") == ()

    state.answer("height", {"value": 1.6, "unit": "m"})
    assert state.value("bmi") == (31.2,)
    assert [r.id for r in state.conclusions.fired] == ["obese"]

    state.answer("weight", {"value": 70000, "unit": "g"})
    assert state.value("bmi") == (27.3,)
    assert not state.conclusions.fired


@pytest.mark.parametrize(
    ("lmp", "weeks"), [("2025-03-01", 0), ("2025-02-23", 0), ("2025-02-22", 1), ("2024-06-01", 39)]
)
def test_gestational_age_in_weeks_from_the_last_period(
    tmp_path: Path, lmp: str, weeks: int
) -> None:
    items: list[Json] = [
        {"linkId": "lmp", "type": "date", "text": "l"},
        {
            "linkId": "ga",
            "type": "integer",
            "text": "g",
            "extension": calculated("lmp.weeksTo(%today)"),
        },
    ]
    state = state_of(write_form(tmp_path, items))

    state.answer("lmp", lmp)

    assert state.value("ga") == (weeks,)
    assert state.given("ga") is None


def test_a_calculation_that_fails_at_run_time_is_a_content_error(tmp_path: Path) -> None:
    items: list[Json] = [
        {"linkId": "s", "type": "string", "text": "s"},
        {"linkId": "bad", "type": "integer", "text": "b", "extension": calculated("s + 1")},
    ]
    state = state_of(write_form(tmp_path, items))

    with pytest.raises(ContentError, match="item bad"):
        state.answer("s", "word")


def test_a_typo_in_a_year_is_an_invalid_date_not_a_content_error(tmp_path: Path) -> None:
    items: list[Json] = [
        {"linkId": "lmp", "type": "date", "text": "l"},
        {"linkId": "edd", "type": "date", "text": "e", "extension": calculated("lmp + 280 days")},
    ]
    state = state_of(write_form(tmp_path, items))

    state.answer("lmp", "0202-05-01")  # 2022 with a digit slipped

    assert "lmp" in state.errors
