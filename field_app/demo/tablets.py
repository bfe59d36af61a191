"""Parts one and two of the demo: one tablet through the CLI, then a hub and two tablets."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx

from care_record import Chart, SystemClock
from field_app.cli import main
from field_app.demo.ports import free_port
from field_app.session import resume, unlock
from field_app.settings import Settings


class Script:
    def __init__(self, folder: Path, name: str = "") -> None:
        self.env = {
            "FIELD_APP_DATA": str(folder),
            "FIELD_APP_TIMEZONE": "Africa/Dar_es_Salaam",
        }
        self.clock = SystemClock()
        self.name = name

    def run(
        self, *argv: str, pin: str | None = None, expect_fail: bool = False, quiet: bool = False
    ) -> str:
        """Run the tablet's CLI in process, printing the command and, unless ``quiet``, what
        it wrote."""
        env = dict(self.env)
        if pin is not None:
            env["FIELD_APP_PIN"] = pin
        out, err = io.StringIO(), io.StringIO()
        shown = " ".join(shlex.quote(a) for a in argv)
        where = f"[{self.name}] " if self.name else ""
        print(f"\n{where}$ python -m field_app {shown}")
        code = main(
            list(argv), env=env, clock=self.clock, stdin=io.StringIO(), stdout=out, stderr=err
        )
        for line in (err.getvalue() + ("" if quiet else out.getvalue())).splitlines():
            print(f"  {line}")
        if (code != 0) != expect_fail:
            raise SystemExit(f"demo step failed unexpectedly (exit {code}): {shown}")
        if expect_fail:
            print(f"  (refused as expected, exit {code}; nothing was changed)")
        return out.getvalue().strip()


# Part one's patient and her antenatal contact; part three records them again, for central.
REGISTRATION = {
    "given": "Ámina", "family": "Mwakilema", "sex": "female", "birth_date": "1998-06-14",
    "phone": "+255712345678", "village": "Kilosa", "language": "sw",
    "pregnancy_status": "pregnant", "consent_data_sharing": True,
    "consent_sms_reminders": True, "consent_voice_reminders": False,
}  # fmt: skip


def anc_answers(s: Script) -> dict[str, object]:
    """An antenatal contact at 26 weeks: severe headache, blurred vision, 148/96."""
    lmp = s.clock.now().date() - timedelta(weeks=26, days=2)
    return {
        "contact_number": 2, "lmp": lmp.isoformat(), "has_danger_sign": True,
        "danger_signs": ["severe_headache", "visual_disturbance"], "central_cyanosis": False,
        "bp_taken": True, "systolic": 148, "diastolic": 96, "fetal_movement": True,
        "ifa_daily": True, "td_status": "this_pregnancy", "itn_last_night": True,
        "birth_plan": False,
    }  # fmt: skip


def answers_file(folder: Path, name: str, answers: dict[str, object]) -> str:
    """Write a form's answers for the CLI to read, beside (never inside) the tablet's store."""
    path = folder.parent / f"{name}.answers.json"
    path.write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
    return str(path)


def say(text: str) -> None:
    print(f"\n# {text}")


def demo(folder: Path) -> None:
    s = Script(folder)
    say("A new tablet: create the encrypted store for CHW Amina (PIN from FIELD_APP_PIN).")
    s.run("init", "--user", "amina", pin="482913")
    say("Amina unlocks once; the shell keeps the token, the store locks itself when idle.")
    token = s.run("unlock", pin="482913").split("=", 1)[1]
    s.env["FIELD_APP_SESSION"] = token
    say("A second CHW shares the tablet with her own PIN.")
    s.env["FIELD_APP_NEW_PIN"] = "739201"
    s.run("user", "add", "baraka")
    s.run("user", "list")

    say("Register a pregnant woman through the registration form (answers from a file).")
    mother = s.run(
        "register", "--form", "patient_registration",
        "--answers", answers_file(folder, "registration", REGISTRATION),
    )  # fmt: skip
    say("And two more patients with the short command.")
    child = s.run(
        "patient", "add", "--given", "Neema", "--family", "Mwakilema", "--sex", "female",
        "--birth-date", "2024-09-02", "--village", "Kilosa",
    )  # fmt: skip
    s.run(
        "patient", "add", "--given", "Joseph", "--family", "Kimaro", "--sex", "male",
        "--birth-date", "1961-01-20", "--village", "Mikumi",
    )  # fmt: skip

    say("Search ignores case and accents.")
    s.run("patient", "search", "AMINA mwak")

    say(
        "An antenatal contact at 26 weeks: she has a severe headache and blurred vision, and her"
        " blood pressure is 148/96. The rules of WHO's decision table ANC.DT.01 find the danger"
        " signs and create the urgent referral, a check that she reached hospital, and her next"
        " contact with an SMS reminder in her own language."
    )
    s.run(
        "visit", "record", "--patient", mother, "--form", "anc_contact",
        "--answers", answers_file(folder, "anc", anc_answers(s)),
    )  # fmt: skip
    say("The chart now holds the visit, its coded observations, the referral and the tasks.")
    s.run("patient", "show", mother)
    say("Vital signs alone: the short form of the vital_signs questionnaire.")
    s.run(
        "visit",
        "record",
        "--patient",
        child,
        "--temperature",
        "38.4",
        "--weight",
        "9.1",
        "--muac",
        "128",
    )
    say("An impossible reading (37 typed as 73) is refused.")
    s.run("visit", "record", "--patient", child, "--temperature", "73", expect_fail=True)

    say("Follow-ups, and what is due.")
    today = s.clock.now().date()
    s.run(
        "tasks",
        "add",
        "--patient",
        mother,
        "--description",
        "Recheck blood pressure",
        "--due",
        str(today),
    )
    s.run(
        "tasks",
        "add",
        "--patient",
        child,
        "--description",
        "MUAC again",
        "--due",
        str(today + timedelta(days=7)),
    )
    s.run("tasks", "due")

    say("Baraka edits the same patient on another tablet while both are offline.")
    print("  (tablet-to-tablet sync arrives with the sync issue; here the second tablet's copy")
    print("   is a fork of the same Automerge document, edited and merged in this process)")
    other_tablet_edits(s, mother)
    s.run("conflicts")
    s.run("patient", "show", mother)

    say("The CHW checks with the patient and keeps the number she confirms.")
    keep = pick_value(s, mother)
    s.run("conflicts", "--patient", mother, "--resolve", "phone", "--keep", keep)
    s.run("conflicts")

    say("Lock the tablet: the token is now useless and a wrong PIN is refused.")
    s.run("lock")
    s.run("--user", "amina", "patient", "search", "amina", pin="000000", expect_fail=True)
    s.env.pop("FIELD_APP_SESSION")

    say("No patient data sits on disk in clear: scan every file for the patients' names.")
    scan(folder, ["Mwakilema", "Kimaro", "Neema", "+255712345678"])

    say("A revoked tablet is wiped by destroying its keys (crypto-erase).")
    s.run("erase", "--yes")
    s.run("--user", "amina", "patient", "search", "amina", pin="482913", expect_fail=True)


def other_tablet_edits(s: Script, patient_id: str) -> None:
    settings = Settings.from_env(s.env)
    session = resume(settings, s.clock, s.env["FIELD_APP_SESSION"])
    store = session.store
    here = store.get_chart(patient_id)
    baraka = next(u for u in session.keys.users() if u.name == "baraka")
    there = Chart.load(here.save(), author=baraka.id, clock=s.clock)
    here.update_demographics({"phone": "+255712000111"})
    there.update_demographics({"phone": "+255754999888", "village": "Kilosa Mjini"})
    here.merge(there)
    store.put_chart(here)
    session.lock()
    print("  tablet 1 set the phone to +255712000111; tablet 2 set it to +255754999888")
    print("  and moved the village to 'Kilosa Mjini'; the charts were merged")


def pick_value(s: Script, patient_id: str) -> str:
    settings = Settings.from_env(s.env)
    session = resume(settings, s.clock, s.env["FIELD_APP_SESSION"])
    conflict = next(
        c for c in session.store.get_chart(patient_id).view().conflicts if c.path == "phone"
    )
    session.lock()
    return next(e.write_id for e in conflict.values if e.value == "+255754999888")


def scan(folder: Path, secrets: list[str]) -> None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    leaks = [(p.name, w) for p in files for w in secrets if w.encode() in p.read_bytes()]
    for p in files:
        print(f"  {p.relative_to(folder)}  {p.stat().st_size} bytes")
    if leaks:
        raise SystemExit(f"found patient data in clear: {leaks}")
    print(f"  none of {len(secrets)} names or numbers found in {len(files)} files")


def hub_demo(folder: Path) -> None:
    say("PART TWO: a regional hub and two tablets.")
    port = free_port()
    database = folder / "hub.db"
    hub_command = [sys.executable, "-m", "sync_hub", "--db", str(database)]
    print(f"\n$ python -m sync_hub serve --port {port}")
    log = (folder / "hub.log").open("w", encoding="utf-8")
    server = subprocess.Popen(  # noqa: S603
        [*hub_command, "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    print(f"  (the hub's log goes to {log.name})")
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(url)
        codes = {}
        for chw in ("amina", "baraka"):
            shown = f"enroll-code --chw {chw} --catchment Kilosa"
            print(f"\n$ python -m sync_hub {shown}")
            out = subprocess.run(  # noqa: S603
                [*hub_command, *shown.split()], capture_output=True, text=True, check=True
            )
            codes[chw] = out.stdout.split()[0]
            print(f"  {out.stdout.strip()}  {out.stderr.strip()}")
        one = Script(folder / "tablet-amina", "amina's tablet")
        two = Script(folder / "tablet-baraka", "baraka's tablet")
        for script, chw in ((one, "amina"), (two, "baraka")):
            script.env["FIELD_APP_PIN"] = "482913"
            script.run("init", "--user", chw)
            script.run("enroll", "--hub", url, "--code", codes[chw], "--label", f"{chw}-tablet")

        say("Amina registers a patient in Kilosa and syncs; Baraka's tablet receives her.")
        patient = one.run(
            "patient", "add", "--given", "Zawadi", "--family", "Mollel", "--sex", "female",
            "--birth-date", "2001-02-11", "--phone", "+255713111222", "--village", "Kilosa",
        )  # fmt: skip
        one.run("sync")
        two.run("sync")

        say("Both go out of network range and see the patient the same day.")
        one.run("visit", "record", "--patient", patient, "--systolic", "152", "--diastolic", "98")
        _set_phone(one, patient, "+255713999000")
        two.run("visit", "record", "--patient", patient, "--temperature", "38.1", "--pulse", "96")
        _set_phone(two, patient, "+255784555666")
        print("  (each tablet also changed the phone number, to a different one)")

        say(
            "Back in range, both sync. Nothing is lost: both visits are kept, and the two phone numbers are listed as a conflict for review on both tablets."
        )
        one.run("sync")
        two.run("sync")
        one.run("sync")
        one.run("patient", "show", patient)
        two.run("conflicts")
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _set_phone(script: Script, patient_id: str, phone: str) -> None:
    """Change the phone as the app's edit screen would (the CLI has no edit command yet)."""
    settings = Settings.from_env(script.env)
    session = unlock(settings, script.clock, settings_user(script), script.env["FIELD_APP_PIN"])
    chart = session.store.get_chart(patient_id)
    chart.update_demographics({"phone": phone})
    session.store.put_chart(chart)
    session.lock()


def settings_user(script: Script) -> str:
    return Path(script.env["FIELD_APP_DATA"]).name.removeprefix("tablet-")


def _wait_for(url: str) -> None:
    for _ in range(100):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the hub did not start")
