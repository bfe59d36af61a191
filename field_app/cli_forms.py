"""The CLI's form commands: ``visit record``, ``register`` and ``forms list | show | check``.

``visit record`` and ``register`` read the answers from a JSON file (an object from linkId to
value) and go through the same engine as the screens, so a visit recorded from a file is
checked, concluded and written exactly as one filled in by hand.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from field_app import registration, visits
from field_app.errors import BadInput, ContentError
from field_app.forms import Form, FormLibrary
from field_app.forms.check import check_library
from field_app.session import Session
from field_app.settings import Settings

# The vital-sign shorthand of ``visit record``: each flag is a question of the vital_signs form.
VITAL_SIGNS = (
    "systolic",
    "diastolic",
    "pulse",
    "temperature",
    "spo2",
    "weight",
    "muac",
    "respiratory_rate",
)

if TYPE_CHECKING:
    from field_app.cli import Io


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    visit = commands.add_parser("visit", help="record visits").add_subparsers(
        dest="action", required=True
    )
    record = visit.add_parser("record", help="fill in a form for a patient and record the visit")
    record.add_argument("--patient", required=True, help="patient ID")
    record.add_argument("--form", help="the form's name (see: forms list)")
    record.add_argument("--answers", type=Path, help="JSON file: linkId -> answer")
    for name in VITAL_SIGNS:
        record.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            dest=name,
            help="shorthand for --form vital_signs",
        )
    record.add_argument("--note", help="a note, with the vital-sign shorthand")
    register = commands.add_parser("register", help="register a patient or household with a form")
    register.add_argument(
        "--form", required=True, help="patient_registration or household_registration"
    )
    register.add_argument("--answers", required=True, type=Path, help="JSON file: linkId -> answer")
    forms = commands.add_parser("forms", help="the forms on this tablet").add_subparsers(
        dest="action", required=True
    )
    forms.add_parser("list", help="every form, its version, size and languages")
    show = forms.add_parser("show", help="a form's questions, conditions and rules")
    show.add_argument("name")
    forms.add_parser("check", help="check every form, rule and translation; exit 1 on a problem")


def run_forms(args: argparse.Namespace, settings: Settings, io: Io) -> None:
    """``forms list | show | check``: they read content only, so no PIN is asked.

    ``check`` raises ContentError (exit status 1) when it finds a problem.
    """
    library = FormLibrary(settings.forms_dir)
    if args.action == "list":
        for name in library.names():
            io.say(_summary(library, name))
    elif args.action == "show":
        io.say(_outline(library.get(args.name), settings.language))
    else:
        problems = check_library(library)
        for problem in problems:
            io.say(str(problem))
        io.err(f"{len(library.names())} forms checked, {len(problems)} problem(s)")
        if problems:
            raise ContentError(f"the forms have {len(problems)} problem(s), listed above")


def run_visit_record(args: argparse.Namespace, session: Session, io: Io) -> None:
    library = FormLibrary(session.settings.forms_dir)
    form_name, answers = _visit_answers(args)
    visit = visits.record_form_visit(session, library, args.patient, form_name, answers)
    io.say(f"recorded visit {visit.encounter_id} ({form_name})")
    state_text = visit.completed.text
    signs = [state_text(s) for s in visit.completed.conclusions.danger_signs]
    if signs:
        io.say(f"DANGER SIGNS: {'; '.join(signs)}")
    for rule in visit.completed.conclusions.fired:
        io.say(f"  - {state_text(rule.reason)}")
    if visit.referral:
        io.say(f"REFERRAL ({visit.referral['urgency'].upper()}): {visit.referral['reason']}")
    _say_tasks(io.say, visit.tasks)


def run_register(args: argparse.Namespace, session: Session, io: Io) -> None:
    settings = session.settings
    library = FormLibrary(settings.forms_dir)
    state = registration.start_registration(
        session.store, library, args.form, language=settings.language, zone=settings.zone
    )
    state.answer_all(read_answers(args.answers))
    done = registration.register(session.store, state, zone=settings.zone)
    io.say(done.id)
    io.err(f"registered a {done.kind}")
    _say_tasks(io.err, done.tasks)


def _visit_answers(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    readings = {n: getattr(args, n) for n in VITAL_SIGNS if getattr(args, n) is not None}
    if args.form or args.answers:
        if readings or args.note:
            raise BadInput("give either --form with --answers, or vital-sign readings, not both")
        if not (args.form and args.answers):
            raise BadInput("a form needs its answers: --form NAME --answers FILE.json")
        return args.form, read_answers(args.answers)
    if not readings:
        raise BadInput("give a form and its answers (--form NAME --answers FILE.json) or readings")
    return "vital_signs", readings | ({"note": args.note} if args.note else {})


def read_answers(path: Path) -> dict[str, Any]:
    """The answers file: one JSON object from linkId to answer. Raises BadInput."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"no answers file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"the answers file could not be read ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        # The position only: the message must not repeat the file's content.
        raise BadInput(
            f"the answers file is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise BadInput("the answers file must hold one JSON object: linkId -> answer")
    return data


def _say_tasks(say: Callable[[str], None], tasks: tuple[dict[str, Any], ...]) -> None:
    for task in tasks:
        say(f"task due {task['due']}: {task['description']}")
        for reminder in task["reminders"]:
            say(
                f"  reminder on {reminder['send_on']} ({reminder['template']}, {reminder['language']})"
            )


def _summary(library: FormLibrary, name: str) -> str:
    try:
        form = library.get(name)
    except ContentError as exc:
        return f"{name}  BROKEN: {exc}"
    questions = sum(1 for i in form.questionnaire.items.values() if i.is_question)
    languages = ", ".join(["en", *sorted(form.catalogues)])
    return (
        f"{name}  v{form.questionnaire.version}  {form.questionnaire.title}  "
        f"({questions} questions, {len(form.rules.rules)} rules; {languages})"
    )


def _outline(form: Form, language: str) -> str:
    text = form.catalogue(language).text
    q = form.questionnaire
    lines = [f"{q.name} v{q.version}: {text(q.title)}  ({q.canonical})", "", "Items:"]
    for item in q.items.values():
        depth = 0
        parent = item.parent
        while parent is not None:
            depth, parent = depth + 1, q.items[parent].parent
        flags = [
            f
            for f, on in (
                ("required", item.required),
                ("repeats", item.repeats),
                ("calculated", bool(item.calculated)),
            )
            if on
        ]
        shown = f"  {'  ' * depth}{item.link_id} [{item.type}{', ' + ', '.join(flags) if flags else ''}] {text(item.text)}"
        lines.append(shown)
        if item.enable_when:
            conditions = f" {'and' if item.enable_behavior == 'all' else 'or'} ".join(
                f"{c.question} {c.operator} {c.answer}" for c in item.enable_when
            )
            lines.append(f"  {'  ' * depth}    shown when {conditions}")
    lines += ["", f"Rules ({form.rules.version}):"]
    for rule in form.rules.rules:
        level = f" -> {rule.referral}" if rule.referral else ""
        lines.append(f"  {rule.id}{level}: when {rule.when.text}  [{rule.source}]")
        lines.append(f"      {text(rule.reason)}")
    return "\n".join(lines)
