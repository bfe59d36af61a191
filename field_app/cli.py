"""The headless tablet: ``python -m field_app COMMAND``. See README.md, "The tablet CLI".

The PIN never comes from an argument (it would sit in the shell history and the process list):
it comes from ``FIELD_APP_PIN`` or the first line of standard input. A new user's PIN comes
from ``FIELD_APP_NEW_PIN`` or the next line. Exit status: 0 done, 1 refused (the message says
why; nothing was changed), 2 the command line itself is wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, TextIO

import httpx

from care_record import CareRecordError, ChartView, Clock, SystemClock, local_today
from field_app import cli_forms, cli_sync, patients, tasks
from field_app.errors import BadInput, FieldAppError, Locked
from field_app.session import (
    Session,
    end_sessions,
    erase,
    init_store,
    issue_token,
    only_user,
    resume,
    unlock,
)
from field_app.settings import Settings
from field_app.store import DatabaseError


class Io:
    """Where the CLI reads secrets and writes output; passed in so tests can drive it."""

    def __init__(
        self,
        env: Mapping[str, str],
        stdin: TextIO,
        stdout: TextIO,
        stderr: TextIO,
        http: Callable[[], httpx.Client],
    ) -> None:
        self.env, self.stdin, self.stdout, self.stderr = env, stdin, stdout, stderr
        self.http = http

    def say(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def err(self, text: str) -> None:
        """Progress and notes: to standard error, so standard output stays parseable."""
        print(text, file=self.stderr, flush=True)

    def secret(self, variable: str, prompt: str) -> str:
        value = self.env.get(variable)
        if value:
            return value
        if self.stdin.isatty():
            return getpass.getpass(prompt)
        line = self.stdin.readline()
        if not line:
            raise BadInput(f"no PIN given: set {variable} or write it on standard input")
        return line.rstrip("\r\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m field_app", description="The CHW tablet, headless."
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="store folder (default: FIELD_APP_DATA, else a per-user folder)",
    )
    parser.add_argument(
        "--user", help="CHW user name (default: FIELD_APP_USER, else the only user)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create the encrypted store and its first CHW user")
    init.add_argument("--user", dest="init_user", required=True, help="name of the first CHW")

    commands.add_parser(
        "unlock", help="unlock for later commands; prints an export line for the shell"
    )
    commands.add_parser("lock", help="lock the tablet now: later commands need the PIN again")
    erase_cmd = commands.add_parser("erase", help="crypto-erase every patient byte on this tablet")
    erase_cmd.add_argument(
        "--yes", action="store_true", help="confirm; nothing is erased without it"
    )
    commands.add_parser("settings", help="list every setting, its variable and default")

    user = commands.add_parser("user", help="CHW users of this tablet").add_subparsers(
        dest="action", required=True
    )
    user.add_parser("list", help="users who can unlock this tablet")
    add = user.add_parser("add", help="let another CHW use this tablet with their own PIN")
    add.add_argument("name")
    reset = user.add_parser("reset-pin", help="set a new PIN for a user (clears a lock-out)")
    reset.add_argument("name")

    patient = commands.add_parser(
        "patient", help="register, find and show patients"
    ).add_subparsers(dest="action", required=True)
    padd = patient.add_parser("add", help="register a patient; prints the new ID")
    padd.add_argument("--given", required=True)
    padd.add_argument("--family", required=True)
    padd.add_argument("--sex", required=True, choices=["female", "male", "other", "unknown"])
    padd.add_argument("--birth-date", required=True, help="YYYY-MM-DD")
    padd.add_argument("--phone", help="E.164, for example +255712345678")
    padd.add_argument("--village")
    search = patient.add_parser("search", help="find patients by name (case and accents ignored)")
    search.add_argument("text")
    show = patient.add_parser("show", help="show a patient's chart")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    cli_forms.add_commands(commands)

    task = commands.add_parser("tasks", help="follow-ups").add_subparsers(
        dest="action", required=True
    )
    due = task.add_parser("due", help="open follow-ups due by a day (default today)")
    due.add_argument("--on", type=date.fromisoformat, help="YYYY-MM-DD")
    tadd = task.add_parser("add", help="schedule a follow-up")
    tadd.add_argument("--patient", required=True)
    tadd.add_argument("--description", required=True)
    tadd.add_argument("--due", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    done = task.add_parser("done", help="mark a follow-up done")
    done.add_argument("--patient", required=True)
    done.add_argument("--task", required=True)

    conflicts = commands.add_parser("conflicts", help="fields edited on two devices at once")
    conflicts.add_argument("--patient", help="only this patient")
    conflicts.add_argument("--resolve", metavar="FIELD", help="settle FIELD of --patient ...")
    conflicts.add_argument("--keep", metavar="VALUE_ID", help="... keeping the value with this ID")
    cli_sync.add_commands(commands)
    return parser


def main(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    clock: Clock | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    http: Callable[[], httpx.Client] | None = None,
) -> int:
    io = Io(
        env, stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr, http or httpx.Client
    )
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(env)
        if args.data_dir is not None:
            settings = dataclasses.replace(settings, data_dir=args.data_dir)
        run(args, settings, clock or SystemClock(), io)
    except (FieldAppError, CareRecordError) as exc:
        print(f"error: {exc}", file=io.stderr)
        return 1
    except DatabaseError:
        # Damage is StoreCorrupt already; what is left is a busy or full disk, or a bug.
        print(
            "error: the tablet's database could not be used just now; try again, "
            "and ask for help if it keeps happening",
            file=io.stderr,
        )
        return 1
    return 0


def run(args: argparse.Namespace, settings: Settings, clock: Clock, io: Io) -> None:
    simple: dict[str, Callable[[], None]] = {
        "init": lambda: _init(args, settings, clock, io),
        "lock": lambda: io.say(
            "locked" if end_sessions(settings) else "locked (no session was open)"
        ),
        "erase": lambda: _erase(args, settings, io),
        "settings": lambda: _settings(io),
        "forms": lambda: cli_forms.run_forms(args, settings, io),
    }
    if args.command in simple:
        simple[args.command]()
        return
    session = _open(args, settings, clock, io)
    try:
        _dispatch(args, session, io)
    finally:
        session.lock()


def _dispatch(args: argparse.Namespace, session: Session, io: Io) -> None:
    command = (args.command, getattr(args, "action", None))
    handlers: dict[tuple[str, str | None], Callable[[argparse.Namespace, Session, Io], None]] = {
        ("unlock", None): _unlock,
        ("user", "list"): _user_list,
        ("user", "add"): _user_add,
        ("user", "reset-pin"): _user_reset,
        ("patient", "add"): _patient_add,
        ("patient", "search"): _patient_search,
        ("patient", "show"): _patient_show,
        ("visit", "record"): cli_forms.run_visit_record,
        ("register", None): cli_forms.run_register,
        ("tasks", "due"): _tasks_due,
        ("tasks", "add"): _tasks_add,
        ("tasks", "done"): _tasks_done,
        ("conflicts", None): _conflicts,
        ("enroll", None): cli_sync.run_enroll,
        ("sync", None): cli_sync.run_sync,
        ("serve-peer", None): cli_sync.run_serve_peer,
    }
    handlers[command](args, session, io)


def _open(args: argparse.Namespace, settings: Settings, clock: Clock, io: Io) -> Session:
    token = io.env.get("FIELD_APP_SESSION")
    if token and args.command != "unlock":
        try:
            return resume(settings, clock, token)
        except Locked as exc:
            io.stderr.write(f"{exc}\n")
    name = args.user or io.env.get("FIELD_APP_USER") or only_user(settings, clock)
    if not name:
        raise BadInput("several CHWs use this tablet: say which with --user NAME")
    return unlock(settings, clock, name, io.secret("FIELD_APP_PIN", f"PIN for {name}: "))


def _init(args: argparse.Namespace, settings: Settings, clock: Clock, io: Io) -> None:
    pin = io.secret("FIELD_APP_PIN", "Choose a PIN (6 or more characters): ")
    session = init_store(settings, clock, args.init_user, pin)
    session.lock()
    io.say(f"created an encrypted store in {settings.data_dir} for {args.init_user}")


def _erase(args: argparse.Namespace, settings: Settings, io: Io) -> None:
    if not args.yes:
        raise BadInput("erasing destroys every patient record on this tablet: add --yes to confirm")
    erase(settings)
    io.say("erased: the keys are destroyed and this tablet's patient data can no longer be read")


def _settings(io: Io) -> None:
    for variable, default, text in Settings.documented():
        io.say(f"{variable} (default {default}): {text}")


def _unlock(_args: argparse.Namespace, session: Session, io: Io) -> None:
    token = issue_token(session)
    io.say(f"export FIELD_APP_SESSION={token}")
    io.stderr.write(
        f"unlocked for {session.user.name}; locks after {session.settings.idle_lock_seconds} s idle\n"
    )


def _user_list(_args: argparse.Namespace, session: Session, io: Io) -> None:
    for user in session.keys.users():
        io.say(f"{user.name}\t{user.role}")


def _user_add(args: argparse.Namespace, session: Session, io: Io) -> None:
    pin = io.secret("FIELD_APP_NEW_PIN", f"PIN for {args.name}: ")
    session.add_user(args.name, pin)
    io.say(f"added {args.name}")


def _user_reset(args: argparse.Namespace, session: Session, io: Io) -> None:
    session.reset_pin(args.name, io.secret("FIELD_APP_NEW_PIN", f"new PIN for {args.name}: "))
    io.say(f"new PIN set for {args.name}")


def _patient_add(args: argparse.Namespace, session: Session, io: Io) -> None:
    fields = {
        "given": args.given,
        "family": args.family,
        "sex": args.sex,
        "birth_date": args.birth_date,
        "phone": args.phone,
        "village": args.village,
    }
    io.say(patients.add_patient(session, {k: v for k, v in fields.items() if v is not None}))


def _patient_search(args: argparse.Namespace, session: Session, io: Io) -> None:
    found = patients.search_patients(session, args.text)
    for p in found:
        flag = "  [conflicts to review]" if p.conflicts else ""
        io.say(f"{p.id}  {p.given} {p.family}  born {p.birth_date}  {p.village or ''}{flag}")
    io.stderr.write(f"{len(found)} found\n")


def _patient_show(args: argparse.Namespace, session: Session, io: Io) -> None:
    view = patients.patient_chart(session, args.id)
    if args.json:
        io.say(json.dumps(_view_json(view), indent=2, ensure_ascii=False))
        return
    io.say(format_chart(view))


def _tasks_due(args: argparse.Namespace, session: Session, io: Io) -> None:
    day = args.on or local_today(session.clock, session.settings.zone)
    due = tasks.tasks_due(session, day)
    for t in due:
        io.say(
            f"{t['due']}  {t['given']} {t['family']}  {t['description']}  (patient {t['chart_id']}, task {t['id']})"
        )
    io.stderr.write(f"{len(due)} due by {day.isoformat()}\n")


def _tasks_add(args: argparse.Namespace, session: Session, io: Io) -> None:
    io.say(tasks.add_follow_up(session, args.patient, args.description, args.due))


def _tasks_done(args: argparse.Namespace, session: Session, io: Io) -> None:
    tasks.complete_task(session, args.patient, args.task)
    io.say("done")


def _conflicts(args: argparse.Namespace, session: Session, io: Io) -> None:
    store = session.store
    if args.resolve:
        if not (args.patient and args.keep):
            raise BadInput("to settle a conflict give --patient ID --resolve FIELD --keep VALUE_ID")
        chart = store.get_chart(args.patient)
        chart.resolve(args.resolve, args.keep)
        store.put_chart(chart)
        io.say(f"settled {args.resolve}")
        return
    ids = [args.patient] if args.patient else store.with_conflicts()
    names = {u.id: u.name for u in session.keys.users()}
    count = 0
    for chart_id in ids:
        view = store.get_chart(chart_id).view()
        for conflict in view.conflicts:
            count += 1
            mark = "REVIEW " if conflict.risky else ""
            io.say(f"{mark}{chart_id} {conflict.path}:")
            for entry in conflict.values:
                who = names.get(entry.by, f"user {entry.by}")
                io.say(f"    {entry.value!r}  (value {entry.write_id}, by {who} at {entry.at})")
    io.stderr.write(f"{count} conflicts\n")


def format_chart(view: ChartView) -> str:
    d = view.demographics
    lines = [f"{d['given']} {d['family']}  ({d['sex']}, born {d['birth_date']})  ID {view.id}"]
    lines += [f"  phone {d['phone']}"] if d["phone"] else []
    lines += [f"  village {d['village']}"] if d["village"] else []
    for encounter in view.records("encounters"):
        lines.append(f"  visit {encounter['started_at']} ({encounter['zone']}) {encounter['kind']}")
        for obs in sorted(encounter.get("observations", {}).values(), key=lambda o: str(o["code"])):
            lines.append(f"    {obs['display']}: {_finding(obs)}  [LOINC {obs['code']}]")
    for referral in view.records("referrals"):
        lines.append(
            f"  referral ({referral['urgency']}, {referral['status']}): {referral['reason']}"
        )
    for task in view.records("tasks"):
        lines.append(f"  task due {task['due']}: {task['description']} ({task['status']})")
    for message in sorted(view.records("messages"), key=lambda m: str(m["sent_at"])):
        lines.append(
            f"  {_MESSAGE_HEADINGS.get(message['direction'], 'message')} {message['sent_at']} "
            f"from {message['author']}: {message['text']}"
        )
    for conflict in view.conflicts:
        values = ", ".join(repr(e.value) for e in conflict.values)
        lines.append(
            f"  {'REVIEW ' if conflict.risky else ''}conflict in {conflict.path}: {values}"
        )
    return "\n".join(lines)


_MESSAGE_HEADINGS = {
    "to_chw": "advice",
    "from_chw": "note to the clinician",
    "from_patient": "patient's reply",
    "to_patient": "sent to the patient",
}


def _finding(observation: Mapping[str, Any]) -> str:
    if observation.get("value") is not None:
        return f"{observation['value']:g} {observation['unit']}"
    if observation.get("value_boolean") is not None:
        return "yes" if observation["value_boolean"] else "no"
    return str(observation.get("value_code"))


def _view_json(view: ChartView) -> dict[str, Any]:
    return {
        "id": view.id,
        "schema_version": view.schema_version,
        "fields": view.fields,
        **{name: view.records(name) for name in view.collections},
        "conflicts": [
            {"field": c.path, "risky": c.risky, "values": [dataclasses.asdict(e) for e in c.values]}
            for c in view.conflicts
        ],
    }
