"""Decision rules as data: danger signs, referral urgency, follow-up tasks and reminders.

A rule file sits beside its Questionnaire (``NAME.rules.json``); its format, ``care-rules/1``,
is documented in docs/forms.md. Each rule has a FHIRPath condition over the form's answers
(``when``), the source table its threshold comes from, and what it concludes when the condition
is true. Rules are evaluated by the same engine that drives the form, after every answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from care_record.schema import Urgency
from field_app.errors import ContentError
from field_app.forms.expressions import Expression

RULES_FORMAT = "care-rules/1"
# The chart's urgency levels, lowest first: a referral takes the highest level fired.
URGENCIES: tuple[Urgency, ...] = ("routine", "urgent", "emergency")
RecordKind = Literal["visit", "patient", "household"]


@dataclass(frozen=True)
class ReminderRule:
    template: str
    days_before: int


@dataclass(frozen=True)
class TaskRule:
    kind: str
    description: str
    due_in_days: int | None
    due: Expression | None
    reminders: tuple[ReminderRule, ...]


@dataclass(frozen=True)
class Rule:
    id: str
    when: Expression
    source: str
    reason: str
    danger_sign: str | None = None
    referral: Urgency | None = None
    tasks: tuple[TaskRule, ...] = ()


@dataclass(frozen=True)
class RuleSet:
    form: str
    version: str
    record: RecordKind
    sources: dict[str, str]
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class PlannedReminder:
    send_on: date
    template: str


@dataclass(frozen=True)
class PlannedTask:
    kind: str
    description: str
    due: date
    rule: str
    reminders: tuple[PlannedReminder, ...]


@dataclass(frozen=True)
class Conclusions:
    """What the rules conclude from the answers so far (texts not yet translated)."""

    fired: tuple[Rule, ...] = ()
    tasks: tuple[PlannedTask, ...] = ()

    @property
    def danger_signs(self) -> tuple[str, ...]:
        return tuple(r.danger_sign for r in self.fired if r.danger_sign)

    @property
    def urgency(self) -> Urgency | None:
        levels = [URGENCIES.index(r.referral) for r in self.fired if r.referral]
        return URGENCIES[max(levels)] if levels else None

    @property
    def referral_rules(self) -> tuple[Rule, ...]:
        """The rules behind the referral: those at its urgency, in file order."""
        urgency = self.urgency
        return tuple(r for r in self.fired if urgency and r.referral == urgency)


def parse_rules(raw: object, *, source: str) -> RuleSet:
    """Parse a rule file. Raises ContentError naming ``source`` and the faulty rule."""
    if not isinstance(raw, dict) or raw.get("format") != RULES_FORMAT:
        raise ContentError(f"{source}: not a rule file (format must be {RULES_FORMAT})")
    try:
        sources = {str(k): str(v) for k, v in raw["sources"].items()}
        record = _record_kind(raw.get("record", "visit"))
        rules = _distinct(tuple(_rule(r, sources, source) for r in raw["rules"]))
        return RuleSet(str(raw["form"]), str(raw["version"]), record, sources, rules)
    except ContentError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        missing = f"missing {exc.args[0]}" if isinstance(exc, KeyError) else str(exc)
        raise ContentError(f"{source}: {missing}") from None


def _record_kind(record: object) -> RecordKind:
    if record in ("visit", "patient", "household"):
        return record
    raise ValueError("record must be visit, patient or household")


def _distinct(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids):
        raise ValueError("two rules share an id")
    return rules


def _rule(raw: dict[str, Any], sources: Mapping[str, str], source: str) -> Rule:
    rule_id = str(raw["id"])
    where = f"{source}: rule {rule_id}"
    if raw["source"] not in sources:
        raise ContentError(f"{where}: source {raw['source']!r} is not listed under 'sources'")
    referral = raw.get("referral")
    if referral is not None and referral not in URGENCIES:
        raise ContentError(f"{where}: referral must be one of {', '.join(URGENCIES)}")
    unknown = set(raw) - {
        "id",
        "when",
        "source",
        "reason",
        "danger_sign",
        "referral",
        "tasks",
        "note",
    }
    if unknown:
        raise ContentError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    return Rule(
        id=rule_id,
        when=Expression(str(raw["when"]), where=f"{where} when"),
        source=str(raw["source"]),
        reason=str(raw["reason"]),
        danger_sign=raw.get("danger_sign"),
        referral=referral,
        tasks=tuple(_task(t, f"{where} task") for t in raw.get("tasks", [])),
    )


def _task(raw: dict[str, Any], where: str) -> TaskRule:
    due_in_days, due = raw.get("due_in_days"), raw.get("due")
    if (due_in_days is None) == (due is None):
        raise ContentError(
            f"{where} {raw.get('kind', '?')}: give exactly one of due_in_days and due"
        )
    return TaskRule(
        kind=str(raw["kind"]),
        description=str(raw["description"]),
        due_in_days=None if due_in_days is None else int(due_in_days),
        due=None if due is None else Expression(str(due), where=f"{where} {raw['kind']} due"),
        reminders=tuple(
            ReminderRule(str(r["template"]), int(r.get("days_before", 0)))
            for r in raw.get("reminders", [])
        ),
    )


def conclude(
    rules: RuleSet, answers: Mapping[str, Any], env: Mapping[str, Any], today: date
) -> Conclusions:
    """Evaluate every rule over ``answers``; tasks of the same kind keep the earliest due date."""
    fired = tuple(r for r in rules.rules if r.when.is_true(answers, env))
    tasks: dict[str, PlannedTask] = {}
    for rule in fired:
        for task_rule in rule.tasks:
            task = _plan(task_rule, rule.id, answers, env, today)
            if task.kind not in tasks or task.due < tasks[task.kind].due:
                tasks[task.kind] = task
    return Conclusions(fired=fired, tasks=tuple(tasks.values()))


def _plan(
    rule: TaskRule, rule_id: str, answers: Mapping[str, Any], env: Mapping[str, Any], today: date
) -> PlannedTask:
    due = today + timedelta(days=rule.due_in_days or 0)
    if rule.due is not None:
        # An overdue date (a dose missed weeks ago) or none at all means: due today.
        found = rule.due.evaluate(answers, env)
        computed = _date_of(found[0]) if len(found) == 1 else None
        due = max(today, computed) if computed is not None else today
    reminders = tuple(
        PlannedReminder(max(today, due - timedelta(days=r.days_before)), r.template)
        for r in rule.reminders
    )
    return PlannedTask(rule.kind, rule.description, due, rule_id, reminders)


def _date_of(value: object) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None
