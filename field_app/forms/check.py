"""``forms check``: find what is wrong with the content before a CHW meets it.

It reports, for every form in a content folder: files that do not load; enableWhen conditions
that name a missing item or compare a value the question can never give; items that can never
be shown; expressions (rules, task dates, calculations) that name an item the form does not
have; observation items without a LOINC code or unit; registration answers the chart cannot
take; and every text with no translation in a language the folder has a catalogue for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import get_args

from care_record.schema import ConsentScope
from field_app.errors import ContentError
from field_app.forms.answers import UNIT_FACTORS
from field_app.forms.expressions import Expression
from field_app.forms.library import Form, FormLibrary
from field_app.forms.questionnaire import Condition, Item, Quantity, Value
from field_app.forms.response import CONSENT_PREFIX

# Words an expression may use that are not linkIds: FHIRPath's keywords and calendar units.
FHIRPATH_WORDS = frozenset(
    [
        "and",
        "or",
        "xor",
        "implies",
        "not",
        "is",
        "as",
        "in",
        "contains",
        "div",
        "mod",
        "true",
        "false",
        "year",
        "years",
        "month",
        "months",
        "week",
        "weeks",
        "day",
        "days",
        "hour",
        "hours",
        "minute",
        "minutes",
        "second",
        "seconds",
        "millisecond",
        "milliseconds",
    ]
)
CONSENT_SCOPES = frozenset(get_args(ConsentScope))


@dataclass(frozen=True)
class Problem:
    form: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.form}: {self.where}: {self.message}"


def check_library(library: FormLibrary) -> list[Problem]:
    """Every problem in every form of ``library``; an empty list means all is well."""
    problems: list[Problem] = []
    if not library.names():
        return [
            Problem("(content)", str(library.folder), "no forms found (NAME.questionnaire.json)")
        ]
    for name in library.names():
        try:
            form = library.get(name)
        except ContentError as exc:
            problems.append(Problem(name, "files", str(exc)))
            continue
        problems += check_form(form, library.languages())
    return problems


def check_form(form: Form, languages: list[str]) -> list[Problem]:
    """Every problem in one loaded form."""
    found = [Problem(form.name, where, message) for where, message in _structure(form)]
    found += [Problem(form.name, where, message) for where, message in _expressions(form)]
    found += [
        Problem(form.name, where, message) for where, message in _translations(form, languages)
    ]
    return found


def _structure(form: Form) -> list[tuple[str, str]]:
    items = form.questionnaire.items
    found: list[tuple[str, str]] = []
    for item in items.values():
        where = f"item {item.link_id}"
        for condition in item.enable_when:
            problem = _condition_problem(item, condition, items)
            if problem:
                found.append((where, problem))
        if item.extract and (
            item.code is None or (item.type in ("integer", "decimal") and not item.units)
        ):
            found.append(
                (where, "an observation item needs a LOINC code, and a number its UCUM unit")
            )
        if item.extract and item.type not in (
            "integer",
            "decimal",
            "quantity",
            "boolean",
            "choice",
        ):
            found.append((where, f"a {item.type} answer cannot become an Observation"))
        if item.children and item.is_question:
            found.append((where, "questions cannot hold items; put follow-up questions in a group"))
        if any(not _convertible(u.code, item.units[0].code) for u in item.units[1:]):
            found.append((where, "each unit must convert to the first (mm/cm/m, g/kg/[lb_av])"))
        if item.required and not item.is_question:
            found.append((where, f"a {item.type} item cannot be required"))
    found += [
        (f"item {i}", "can never be shown: its conditions can never all hold")
        for i in _unreachable(form)
    ]
    if form.rules.record == "patient":
        found += [
            (f"item {link_id}", f"is not a consent scope ({', '.join(sorted(CONSENT_SCOPES))})")
            for link_id, item in items.items()
            if item.is_question
            and link_id.startswith(CONSENT_PREFIX)
            and link_id.removeprefix(CONSENT_PREFIX) not in CONSENT_SCOPES
        ]
    return found


def _convertible(unit: str, canonical: str) -> bool:
    factors = UNIT_FACTORS.get(unit), UNIT_FACTORS.get(canonical)
    return factors[0] is not None and factors[1] is not None and factors[0][0] == factors[1][0]


def _condition_problem(item: Item, condition: Condition, items: dict[str, Item]) -> str | None:
    target = items.get(condition.question)
    if target is None:
        return f"enableWhen names '{condition.question}', which is not in the form"
    if not target.is_question:
        return f"enableWhen names '{condition.question}', a {target.type} item with no answer"
    if condition.question == item.link_id:
        return "enableWhen depends on the item itself"
    if condition.operator == "exists":
        return None if isinstance(condition.answer, bool) else "'exists' takes answerBoolean"
    if not _fits(target, condition.answer):
        return f"enableWhen compares '{condition.question}' ({target.type}) with a value it can never have"
    return None


def _fits(target: Item, value: Value) -> bool:
    kinds: dict[str, tuple[type, ...]] = {
        "boolean": (bool,),
        "integer": (int, float),
        "decimal": (int, float),
        "date": (date,),
        "string": (str,),
        "text": (str,),
        "choice": (str,),
        "quantity": (Quantity,),
    }
    if isinstance(value, bool) and target.type != "boolean":
        return False
    if not isinstance(value, kinds[target.type]):
        return False
    if target.type == "choice":
        return target.option(str(value)) is not None
    if target.type == "quantity" and isinstance(value, Quantity):
        return value.unit in {u.code for u in target.units}
    return True


def _unreachable(form: Form) -> list[str]:
    """Items that no answers can show: an 'all' condition that can never hold (a value out of
    the question's range), a parent or a needed question that is itself never shown."""
    items = form.questionnaire.items
    never: set[str] = set()
    changed = True
    while changed:
        changed = False
        for item in items.values():
            if item.link_id in never:
                continue
            impossible = [_impossible(c, items, never) for c in item.enable_when]
            blocked = bool(impossible) and (
                all(impossible) if item.enable_behavior == "any" else any(impossible)
            )
            if blocked or (item.parent is not None and item.parent in never):
                never.add(item.link_id)
                changed = True
    return [link_id for link_id in items if link_id in never]


def _impossible(condition: Condition, items: dict[str, Item], never: set[str]) -> bool:
    target = items.get(condition.question)
    if target is None or condition.question in never:
        # A question never shown never has an answer: only "no answer" conditions can hold.
        no_answer_holds = condition.operator == "!=" or (
            condition.operator == "exists" and condition.answer is False
        )
        return not no_answer_holds
    value = condition.answer
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return _out_of_range(condition.operator, value, target.min_value, target.max_value)


def _out_of_range(operator: str, value: float, low: object, high: object) -> bool:
    """True when no answer between ``low`` and ``high`` can make ``answer OPERATOR value``."""
    if isinstance(high, int | float) and (
        (operator == ">" and value >= high) or (operator in (">=", "=") and value > high)
    ):
        return True
    return isinstance(low, int | float) and (
        (operator == "<" and value <= low) or (operator in ("<=", "=") and value < low)
    )


def _expressions(form: Form) -> list[tuple[str, str]]:
    known = set(form.questionnaire.items)
    expressions: list[tuple[str, Expression]] = [
        (f"item {link_id} calculation", e) for link_id, e in form.calculations.items()
    ]
    for rule in form.rules.rules:
        expressions.append((f"rule {rule.id}", rule.when))
        expressions += [(f"rule {rule.id} task {t.kind}", t.due) for t in rule.tasks if t.due]
    found = []
    for where, expression in expressions:
        for name in sorted(expression.names - known - FHIRPATH_WORDS):
            found.append((where, f"names '{name}', which is not an item of the form"))
        for name in sorted(expression.names & known):
            if not form.questionnaire.items[name].is_question:
                found.append(
                    (
                        where,
                        f"names '{name}', a {form.questionnaire.items[name].type} item with no answer",
                    )
                )
    return found


def texts(form: Form) -> list[str]:
    """Every text of a form a CHW or patient reads, in English (the catalogue msgids)."""
    found = [form.questionnaire.title]
    for item in form.questionnaire.items.values():
        found += [item.text] if item.text else []
        found += [o.display for o in item.options]
        found += [human for _, human in item.constraints]
    for rule in form.rules.rules:
        found += [rule.reason, *([rule.danger_sign] if rule.danger_sign else [])]
        found += [t.description for t in rule.tasks]
    return list(dict.fromkeys(found))


def _translations(form: Form, languages: list[str]) -> list[tuple[str, str]]:
    found = []
    wanted = texts(form)
    for language in languages[1:]:
        catalogue = form.catalogues.get(language)
        if catalogue is None:
            found.append((f"language {language}", "no catalogue for this form"))
            continue
        missing = [t for t in wanted if not catalogue.messages.get(t)]
        found += [(f"language {language}", f"no translation for '{_short(t)}'") for t in missing]
        stale = sorted(set(catalogue.messages) - set(wanted))
        found += [
            (f"language {language}", f"translation of '{_short(t)}', a text the form no longer has")
            for t in stale
        ]
    return found


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
