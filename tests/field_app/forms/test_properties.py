"""Property tests over every shipped form: random fillings never break the engine, and whatever
completes is a response the chart can trust.

For each form in the packaged content, hypothesis drives a FormState with random sequences of
answers to random questions: values of the right type inside and outside the limits, values of
the wrong type, option codes that exist and that do not, None to clear, lists for repeating
questions, and shapes the engine documents as caller bugs (a list for a single answer, an
object for a number, a calculated or unknown linkId). Only the last kind may raise, and only
BadAnswer. Whenever the form completes, the completed answers are checked against the form.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from field_app.errors import BadAnswer, FormIncomplete
from field_app.forms import CompletedForm, Form, FormLibrary, FormState, Item, Quantity
from field_app.forms.answers import in_canonical_unit
from field_app.forms.response import response_items

LIBRARY = FormLibrary()
TODAY = date(2026, 11, 21)
PHONE = "+255712345678"
TYPOS = ["abc", "", " ", "12,5", "-3", "1e3", "yes", "no", "2025-13-40", "31/12/2025", "0", "NaN"]


def answerable(item: Item) -> bool:
    return item.is_question and not item.read_only and not item.calculated


def _number_range(item: Item, default: tuple[float, float]) -> tuple[float, float]:
    low = item.min_value if isinstance(item.min_value, int | float) else default[0]
    high = item.max_value if isinstance(item.max_value, int | float) else default[1]
    span = max(high - low, 1)
    return low - span / 4, high + span / 4


def _date_range(item: Item) -> tuple[date, date]:
    low = item.min_value if isinstance(item.min_value, date) else TODAY - timedelta(days=365 * 60)
    high = item.max_value if isinstance(item.max_value, date) else TODAY
    return low - timedelta(days=60), high + timedelta(days=60)


def typed_value(item: Item) -> st.SearchStrategy[object]:
    """A value of the item's own type, inside or just outside its limits."""
    match item.type:
        case "boolean":
            return st.one_of(st.booleans(), st.sampled_from(["yes", "no", "true", "false"]))
        case "integer":
            low, high = _number_range(item, (-100, 1000))
            ints = st.integers(int(low), int(high) + 1)
            return st.one_of(ints, ints.map(str))
        case "decimal":
            low, high = _number_range(item, (-100.0, 1000.0))
            floats = st.floats(low, high, allow_nan=False).map(lambda f: round(f, 2))
            return st.one_of(floats, floats.map(lambda f: str(f).replace(".", ",")))
        case "date":
            dates = st.dates(*_date_range(item))
            return st.one_of(dates, dates.map(date.isoformat))
        case "string" | "text":
            size = (item.max_length or 40) + 3
            return st.text(st.sampled_from("abc XYZ\n-éñ"), max_size=size)
        case "choice":
            codes = [o.code for o in item.options]
            return st.one_of(st.sampled_from(codes), st.just("not_an_option"))
        case "quantity":
            low, high = _number_range(item, (0.0, 500.0))
            units = [u.code for u in item.units]
            number = st.floats(low, high, allow_nan=False).map(lambda f: round(f, 3))
            in_unit = st.builds(
                lambda v, u: {"value": v, "unit": u}, number, st.sampled_from([*units, "furlong"])
            )
            return st.one_of(number, in_unit, st.builds(Quantity, number, st.sampled_from(units)))
    raise AssertionError(f"not a question type: {item.type}")


def valid_value(item: Item) -> st.SearchStrategy[object]:
    """A value the item must accept: its type, inside its limits."""
    match item.type:
        case "integer" | "decimal" | "quantity":
            low = item.min_value if isinstance(item.min_value, int | float) else 0
            high = item.max_value if isinstance(item.max_value, int | float) else low + 100
            numbers = st.integers(int(low) + 1, max(int(high) - 1, int(low) + 1))
            return numbers if item.type != "quantity" else numbers.map(float)
        case "date":
            first = item.min_value if isinstance(item.min_value, date) else TODAY - timedelta(3000)
            last = item.max_value if isinstance(item.max_value, date) else TODAY
            return st.dates(first, last)
        case "string" | "text":
            low, high = item.min_length or 1, item.max_length or 40
            words = st.text(st.sampled_from("abcdef"), min_size=low, max_size=max(low, high))
            # A phone number in E.164 form, for text items that carry such a constraint.
            return st.one_of(words, st.just(PHONE)) if low <= len(PHONE) <= high else words
        case "choice":
            codes = st.sampled_from([o.code for o in item.options])
            return st.lists(codes, min_size=1, unique=True) if item.repeats else codes
    return typed_value(item).filter(lambda v: v not in ("not_an_option",))


def fill_in(state: FormState, data: st.DataObject) -> None:
    """Answer what is missing or invalid with valid values until nothing is (as a CHW would)."""
    for _ in range(10):
        needs_work = [*state.missing, *state.errors]
        if not needs_work:
            return
        for link_id in needs_work:
            item = state.form.questionnaire.items[link_id]
            state.answer(link_id, data.draw(valid_value(item), label=f"fill {link_id}"))


def wrong_value() -> st.SearchStrategy[object]:
    """What a person or a sloppy screen could give for any question."""
    return st.one_of(
        st.sampled_from(TYPOS),
        st.from_regex(r"-?[0-9]{0,4}[.,]?[0-9]{0,2}", fullmatch=True),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.dates(),
    )


@st.composite
def one_answer(draw: st.DrawFn, form: Form) -> tuple[str, object, bool]:
    """(linkId, value, whether the engine must refuse it as a caller bug)."""
    items = list(form.questionnaire.items.values())
    questions = [i for i in items if answerable(i)]
    kind = draw(
        st.sampled_from(["good", "good", "good", "wrong", "clear", "shape", "not_a_question"])
    )
    if kind == "not_a_question":
        others = [i.link_id for i in items if not answerable(i)]
        return (
            draw(st.sampled_from([*others, "no_such_question"])),
            draw(typed_value(questions[0])),
            True,
        )
    item = draw(st.sampled_from(questions))
    if kind == "clear":
        return item.link_id, draw(st.sampled_from([None, []])), False
    if kind == "shape":
        if item.repeats and item.type != "quantity":
            return item.link_id, [[1], draw(typed_value(item))], True
        if item.repeats:
            return item.link_id, draw(typed_value(item)), False
        bad_shape = draw(st.sampled_from([[draw(typed_value(item))], (1, 2), {"value": 1}]))
        is_bug = isinstance(bad_shape, list | tuple) or item.type != "quantity"
        return item.link_id, bad_shape, is_bug
    value = draw(typed_value(item) if kind == "good" else wrong_value())
    if item.repeats and draw(st.booleans()):
        extra = draw(st.lists(typed_value(item), max_size=3))
        return item.link_id, [value, *extra], False
    return item.link_id, value, False


def check_completed(state: FormState, done: CompletedForm) -> None:
    items = done.form.questionnaire.items
    assert set(done.answers) <= state.enabled
    for link_id, values in done.answers.items():
        item = items[link_id]
        assert values, link_id
        assert item.repeats or len(values) == 1, link_id
        if item.calculated:
            assert state.given(link_id) is None, link_id
            continue
        for value in values:
            check_within_limits(item, value, done.today)
    for item in items.values():
        if item.required and answerable(item) and item.link_id in state.enabled:
            assert item.link_id in done.answers, item.link_id
    check_response_items(response_items(done), state.enabled)


def check_within_limits(item: Item, value: object, today: date) -> None:
    if item.type == "choice":
        assert item.option(str(value)) is not None, item.link_id
    number = in_canonical_unit(item, value) if isinstance(value, Quantity) else value
    if isinstance(number, int | float | date) and not isinstance(number, bool):
        if item.min_value is not None:
            assert number >= item.min_value, item.link_id  # type: ignore[operator]
        if item.max_value is not None:
            assert number <= item.max_value, item.link_id  # type: ignore[operator]
        elif isinstance(number, date):
            assert number <= today, item.link_id
    if isinstance(value, str) and item.type in ("string", "text"):
        assert value.strip(), item.link_id
        assert len(value) >= (item.min_length or 0), item.link_id
        assert item.max_length is None or len(value) <= item.max_length, item.link_id


def check_response_items(entries: list[dict[str, Any]], enabled: frozenset[str]) -> None:
    for entry in entries:
        assert entry["linkId"] in enabled, entry["linkId"]
        assert ("answer" in entry) != ("item" in entry), entry["linkId"]
        check_response_items(entry.get("item", []), enabled)


def test_every_shipped_form_is_tested() -> None:
    assert LIBRARY.names(), "no forms in the packaged content"


@pytest.mark.parametrize("name", LIBRARY.names())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_fillings_never_break_the_engine(name: str, data: st.DataObject) -> None:
    form = LIBRARY.get(name)
    patient = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "birth_date": st.dates(date(1940, 1, 1), TODAY).map(date.isoformat),
                "sex": st.sampled_from(["female", "male"]),
                "pregnancy_status": st.sampled_from(["pregnant", "not_pregnant", "unknown"]),
            },
        ),
        label="patient",
    )
    state = FormState(form, today=TODAY, patient=patient)
    steps = data.draw(st.lists(one_answer(form), min_size=1, max_size=40), label="answers")
    for link_id, value, is_caller_bug in steps:
        if is_caller_bug:
            with pytest.raises(BadAnswer):
                state.answer(link_id, value)
            continue
        state.answer(link_id, value)
        assert set(state.errors) <= state.enabled
        needs_work = set(state.missing) | set(state.errors)
        if needs_work:
            assert needs_work <= state.enabled
            with pytest.raises(FormIncomplete) as caught:
                state.complete()
            assert set(caught.value.problems) == needs_work
            continue
        event("completed")
        check_completed(state, state.complete())
    fill_in(state, data)
    try:
        done = state.complete()
    except FormIncomplete:
        # Only a questionnaire-constraint our values do not know of can still refuse.
        event("incomplete after filling in")
        return
    event("completed after filling in")
    check_completed(state, done)
