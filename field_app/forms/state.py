"""The state of one form being filled in, driven answer by answer by a screen or a file.

After every answer the state knows which items are enabled, which answers are invalid and why,
which required questions are still unanswered, the calculated values and what the rules
conclude. Disabled items keep their answers in memory (the person may switch back) but nothing
reads them: not the rules, not the calculations, not the output (FHIR R4 enableWhen semantics).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from field_app.errors import BadAnswer, ContentError, FormIncomplete
from field_app.forms.answers import Invalid, check_limits, in_canonical_unit, read_answer
from field_app.forms.library import Form
from field_app.forms.questionnaire import Condition, Item, Quantity, Value
from field_app.forms.rules import Conclusions, conclude


@dataclass(frozen=True)
class CompletedForm:
    """A form whose answers are all valid and complete: ready to be written into a chart."""

    form: Form
    answers: dict[str, tuple[Value, ...]]
    conclusions: Conclusions
    language: str
    today: date

    def text(self, msgid: str) -> str:
        return self.form.catalogue(self.language).text(msgid)


class FormState:
    """One filling of ``form`` on ``today`` for a patient (``birth_date``, ``sex``, ...)."""

    def __init__(
        self,
        form: Form,
        *,
        today: date,
        patient: Mapping[str, Any] | None = None,
        language: str = "en",
    ) -> None:
        self.form = form
        self.today = today
        self.language = language
        self.patient = dict(patient or {})
        self._env = {"today": today.isoformat(), "patient": self.patient}
        self._given: dict[str, object] = {}
        self._valid: dict[str, tuple[Value, ...]] = {}
        self._invalid: dict[str, str] = {}
        self._calculated: dict[str, tuple[Value, ...]] = {}
        self._enabled: frozenset[str] = frozenset()
        self._conclusions = Conclusions()
        for item in form.questionnaire.items.values():
            if item.initial and not item.calculated:
                self._set(item, list(item.initial) if item.repeats else item.initial[0])
        self._refresh()

    # -- driving the form ---------------------------------------------------------------------

    def answer(self, link_id: str, value: object) -> None:
        """Give (or with ``None`` clear) the answer to one question, then re-evaluate.

        A value of the wrong kind for the item is kept as invalid with its reason. Raises
        BadAnswer for an unknown or read-only item, or a value of an impossible shape.
        """
        item = self._question(link_id)
        self._set(item, value)
        self._refresh()

    def answer_all(self, answers: Mapping[str, object]) -> None:
        """Give many answers at once (an answers file), re-evaluating once at the end.

        Raises BadAnswer for the first impossible answer, and then none of them is kept.
        """
        saved = (dict(self._given), dict(self._valid), dict(self._invalid))
        try:
            for link_id, value in answers.items():
                self._set(self._question(link_id), value)
        except BadAnswer:
            self._given, self._valid, self._invalid = saved
            raise
        self._refresh()

    # -- what the screen shows ----------------------------------------------------------------

    @property
    def enabled(self) -> frozenset[str]:
        return self._enabled

    def is_enabled(self, link_id: str) -> bool:
        return link_id in self._enabled

    @property
    def errors(self) -> dict[str, str]:
        """Invalid answers of enabled questions: linkId -> what is expected (never the value)."""
        found = {k: v for k, v in self._invalid.items() if k in self._enabled}
        return self._broken_constraints() | found

    def _broken_constraints(self) -> dict[str, str]:
        """Cross-answer checks that are false (an unanswered side leaves a check open)."""
        context = self._context()
        broken = {}
        for link_id, checks in self.form.constraints.items():
            if link_id not in self._enabled or not self._values(link_id):
                continue
            for expression, human in checks:
                if expression.evaluate(context, self._env) == [False]:
                    broken[link_id] = self.text(human)
                    break
        return broken

    @property
    def missing(self) -> tuple[str, ...]:
        """Enabled required questions with no valid answer yet, in form order."""
        return tuple(
            i.link_id
            for i in self.form.questionnaire.items.values()
            if i.required
            and i.is_question
            and i.link_id in self._enabled
            and i.link_id not in self._invalid
            and not self._values(i.link_id)
        )

    @property
    def conclusions(self) -> Conclusions:
        return self._conclusions

    def value(self, link_id: str) -> tuple[Value, ...]:
        """The valid answers (or calculated value) of an enabled item; empty otherwise."""
        return self._values(link_id) if link_id in self._enabled else ()

    def given(self, link_id: str) -> object:
        """What was given for the item, valid or not (for the screen to show back)."""
        return self._given.get(link_id)

    def text(self, msgid: str) -> str:
        return self.form.catalogue(self.language).text(msgid)

    def complete(self) -> CompletedForm:
        """The completed form. Raises FormIncomplete listing each question that needs work."""
        problems = dict.fromkeys(self.missing, "is required") | self.errors
        if problems:
            order = list(self.form.questionnaire.items)
            listed = "; ".join(f"{k}: {problems[k]}" for k in sorted(problems, key=order.index))
            raise FormIncomplete(f"{len(problems)} answer(s) need attention: {listed}", problems)
        answers = {
            link_id: values
            for link_id in self.form.questionnaire.items
            if (values := self.value(link_id))
        }
        return CompletedForm(self.form, answers, self._conclusions, self.language, self.today)

    # -- internals ------------------------------------------------------------------------------

    def _question(self, link_id: str) -> Item:
        item = self.form.questionnaire.items.get(link_id)
        if item is None or not item.is_question:
            raise BadAnswer(f"'{link_id}' is not a question of the form {self.form.name}")
        if item.read_only or item.calculated:
            raise BadAnswer(f"'{link_id}' is calculated by the form and cannot be answered")
        return item

    def _set(self, item: Item, value: object) -> None:
        """Record one answer. A BadAnswer leaves the state exactly as it was."""
        link_id = item.link_id
        if isinstance(value, list | tuple) and not value:
            value = None  # an empty list clears, like None
        if isinstance(value, list | tuple) and not item.repeats:
            raise BadAnswer(f"{link_id}: this question takes one answer, not a list")
        values = (
            [] if value is None else list(value) if isinstance(value, list | tuple) else [value]
        )
        typed: tuple[Value, ...] = ()
        problem = None
        try:
            typed = _read_all(item, values, self.today)
        except Invalid as exc:
            problem = str(exc)
        for store in (self._given, self._valid, self._invalid):
            store.pop(link_id, None)
        if not values:
            return
        self._given[link_id] = value
        if problem is not None:
            self._invalid[link_id] = problem
        else:
            self._valid[link_id] = typed

    def _values(self, link_id: str) -> tuple[Value, ...]:
        return self._calculated.get(link_id) or self._valid.get(link_id, ())

    def _refresh(self) -> None:
        # Each round settles at least one more level of items that depend on others.
        for _ in range(len(self.form.questionnaire.items) + 1):
            before = (self._enabled, dict(self._calculated))
            self._enabled = self._enablement()
            self._calculate()
            if (self._enabled, self._calculated) == before:
                break
        else:
            raise ContentError(
                f"{self.form.name}: enableWhen or calculations never settle (a cycle)"
            )
        self._conclusions = conclude(self.form.rules, self._context(), self._env, self.today)

    def _enablement(self) -> frozenset[str]:
        # Items earlier in the form are decided in this pass; later ones use the last pass.
        enabled: set[str] = set()
        decided: set[str] = set()
        for item in self.form.questionnaire.items.values():
            decided.add(item.link_id)
            if item.parent is not None and item.parent not in enabled:
                continue
            if self._conditions_hold(item, enabled, decided):
                enabled.add(item.link_id)
        return frozenset(enabled)

    def _conditions_hold(self, item: Item, enabled: set[str], decided: set[str]) -> bool:
        if not item.enable_when:
            return True
        results = (self._holds(c, enabled, decided) for c in item.enable_when)
        return all(results) if item.enable_behavior == "all" else any(results)

    def _holds(self, condition: Condition, enabled: set[str], decided: set[str]) -> bool:
        # Answers of a disabled question do not count (FHIR R4).
        source = self.form.questionnaire.items.get(condition.question)
        question = condition.question
        shown = question in enabled if question in decided else question in self._enabled
        values = self._values(condition.question) if source is not None and shown else ()
        if condition.operator == "exists":
            return bool(values) == condition.answer
        other = condition.answer
        if source is not None and source.type == "quantity":
            values = tuple(_canonical(source, v) for v in values)
            other = _canonical(source, other)
        if condition.operator == "!=":
            return not any(_compare(v, other) == 0 for v in values)
        return any(_test(condition.operator, _compare(v, other)) for v in values)

    def _calculate(self) -> None:
        context = self._context()
        for link_id, expression in self.form.calculations.items():
            item = self.form.questionnaire.items[link_id]
            result = expression.evaluate(context, self._env) if link_id in self._enabled else []
            values: tuple[Value, ...] = ()
            if len(result) == 1 and result[0] is not None:
                try:
                    values = (read_answer(item, result[0]),)
                except Invalid:
                    values = ()
            self._calculated[link_id] = values
            context = _with(context, item, values)

    def _context(self) -> dict[str, Any]:
        context: dict[str, Any] = {}
        for link_id in self._enabled:
            item = self.form.questionnaire.items[link_id]
            values = self._values(link_id)
            if values and item.is_question:
                context = _with(context, item, values)
        return context


def _read_all(item: Item, values: list[object], today: date) -> tuple[Value, ...]:
    """Read and check every answer given to ``item``. Raises Invalid, BadAnswer."""
    typed = tuple(read_answer(item, v) for v in values)
    for one in typed:
        check_limits(item, one, today)
    if len(set(typed)) != len(typed):
        raise Invalid("gives the same answer twice")
    return typed


def _with(context: dict[str, Any], item: Item, values: Iterable[Value]) -> dict[str, Any]:
    plain = [_plain(item, v) for v in values]
    if not plain:
        context.pop(item.link_id, None)
    else:
        context[item.link_id] = plain if item.repeats else plain[0]
    return context


def _plain(item: Item, value: Value) -> object:
    if isinstance(value, Quantity):
        return in_canonical_unit(item, value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _canonical(item: Item, value: Value) -> Value:
    """A quantity in the item's canonical unit, so 2000 g and 2 kg compare equal."""
    if isinstance(value, Quantity) and value.unit in {u.code for u in item.units}:
        return Quantity(in_canonical_unit(item, value), item.units[0].code)
    return value


def _compare(value: Value, other: Value) -> int | None:
    """-1, 0 or 1 as ``value`` is below, equal to or above ``other``; None if not comparable."""
    if isinstance(value, Quantity) and isinstance(other, Quantity):
        if value.unit != other.unit:
            return None
        value, other = value.value, other.value
    if isinstance(value, bool) or isinstance(other, bool):
        return 0 if value is other else None  # yes/no answers have no order
    if isinstance(value, int | float) and isinstance(other, int | float):
        return (value > other) - (value < other)
    if type(value) is type(other) and isinstance(value, str | date):
        return (value > other) - (value < other)  # type: ignore[operator]
    return None


def _test(operator: str, comparison: int | None) -> bool:
    if comparison is None:
        return False
    return {
        "=": comparison == 0,
        ">": comparison > 0,
        "<": comparison < 0,
        ">=": comparison >= 0,
        "<=": comparison <= 0,
    }[operator]
