"""The headless tablet, ``python -m field_app``: every command, in process and once for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from care_record import FixedClock, new_id
from field_app import Settings, unlock
from field_app.cli import build_parser
from field_app.session import keystore
from field_app.store import DB_FILE

USER, PIN = "amina", "482913"
OTHER_USER, OTHER_PIN = "baraka", "739164"
ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NEEMA = "patient add --given Neema --family Lyimo --sex female --birth-date 1990-01-01"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def add_amina(cli, **extra: str) -> str:
    argv = ["patient", "add", "--given", "Amina", "--family", "Juma", "--sex", "female"]
    argv += ["--birth-date", extra.pop("birth_date", "1994-06-15")]
    for name, value in extra.items():
        argv += [f"--{name}", value]
    return cli.ok(*argv)


# -- init, patients, visits -------------------------------------------------------------------


def test_init_creates_an_encrypted_store(cli, settings: Settings) -> None:
    out = cli.ok("init", "--user", USER)

    assert USER in out
    assert str(settings.data_dir) in out
    assert sorted(p.name for p in settings.data_dir.iterdir()) == ["keys.json", "store.db"]


def test_init_twice_is_refused(tablet, settings: Settings) -> None:
    before = (settings.data_dir / "keys.json").read_bytes()

    result = tablet("init", "--user", "someone")

    assert result.code == 1
    assert "already exists" in result.err
    assert (settings.data_dir / "keys.json").read_bytes() == before


def test_init_with_a_weak_pin_is_refused(cli, settings: Settings) -> None:
    result = cli("init", "--user", USER, FIELD_APP_PIN="123456")

    assert result.code == 1
    assert "PIN" in result.err
    assert not (settings.data_dir / "keys.json").exists()


def test_patient_add_prints_a_new_id_and_search_finds_it(tablet) -> None:
    patient = add_amina(tablet, village="Kijiji cha Mlima", phone="+255712345678")

    assert UUID.match(patient)
    found = tablet("patient", "search", "AMÍNA jum")
    assert found.code == 0
    assert found.out == f"{patient}  Amina Juma  born 1994-06-15  Kijiji cha Mlima\n"
    assert found.err.strip() == "1 found"
    assert tablet("patient", "search", "mina").err.strip() == "0 found"


def test_patient_show_as_text_and_json(tablet) -> None:
    patient = add_amina(tablet, phone="+255712345678")
    readings = "--systolic 128 --diastolic 84 --temperature 37.2"
    tablet.ok("visit", "record", "--patient", patient, *readings.split(), "--note", "mild headache")

    text = tablet.ok("patient", "show", patient)
    data = json.loads(tablet.ok("patient", "show", patient, "--json"))

    assert text.splitlines()[0] == f"Amina Juma  (female, born 1994-06-15)  ID {patient}"
    assert "  phone +255712345678" in text
    assert "Systolic blood pressure: 128 mm[Hg]  [LOINC 8480-6]" in text
    assert "Body temperature: 37.2 Cel  [LOINC 8310-5]" in text
    assert data["id"] == patient
    assert data["fields"]["given"] == "Amina"
    [visit] = data["encounters"]
    assert visit["note"] == "mild headache"
    assert visit["zone"] == "UTC"
    assert sorted(o["code"] for o in visit["observations"].values()) == [
        "8310-5",
        "8462-4",
        "8480-6",
    ]
    assert data["conflicts"] == []


def test_visit_record_reports_the_encounter(tablet) -> None:
    patient = add_amina(tablet)

    readings = "--pulse 72 --spo2 97 --respiratory-rate 18 --muac 240 --weight 61.5"

    out = tablet.ok("visit", "record", "--patient", patient, *readings.split())

    encounter = re.fullmatch(r"recorded visit (\S+) \(vital_signs\)", out)
    assert encounter is not None
    assert UUID.match(encounter[1])


def test_the_visit_zone_comes_from_the_settings(tablet) -> None:
    patient = add_amina(tablet)

    zone = "Africa/Dar_es_Salaam"

    tablet.ok("visit", "record", "--patient", patient, "--pulse", "72", FIELD_APP_TIMEZONE=zone)

    [visit] = json.loads(tablet.ok("patient", "show", patient, "--json"))["encounters"]
    assert visit["zone"] == "Africa/Dar_es_Salaam"


# -- tasks ------------------------------------------------------------------------------------


def test_tasks_add_due_and_done(tablet) -> None:
    patient = add_amina(tablet)
    task = tablet.ok(
        "tasks", "add", "--patient", patient, "--description", "Check BP", "--due", "2025-03-05"
    )
    assert UUID.match(task)

    due = tablet("tasks", "due", "--on", "2025-03-05")
    assert due.out.strip() == (
        f"2025-03-05  Amina Juma  Check BP  (patient {patient}, task {task})"
    )
    assert due.err.strip() == "1 due by 2025-03-05"
    assert tablet("tasks", "due", "--on", "2025-03-04").out == ""

    assert tablet.ok("tasks", "done", "--patient", patient, "--task", task) == "done"
    assert tablet("tasks", "due", "--on", "2025-03-05").err.strip() == "0 due by 2025-03-05"


def test_tasks_due_defaults_to_today_in_the_chws_time_zone(tablet, clock: FixedClock) -> None:
    patient = add_amina(tablet)
    tablet.ok("tasks", "add", "--patient", patient, "--description", "Visit", "--due", "2025-03-02")
    clock.set(datetime(2025, 3, 1, 22, 30, tzinfo=UTC))  # 01:30 on 2 March in Dar es Salaam

    in_utc = tablet("tasks", "due")
    in_dar = tablet("tasks", "due", FIELD_APP_TIMEZONE="Africa/Dar_es_Salaam")

    assert in_utc.err.strip() == "0 due by 2025-03-01"
    assert in_dar.err.strip() == "1 due by 2025-03-02"


def test_an_unknown_task_is_refused(tablet, chart_doc: Callable[[str], bytes]) -> None:
    patient = add_amina(tablet)
    before = chart_doc(patient)

    result = tablet("tasks", "done", "--patient", patient, "--task", new_id())

    assert result.code == 1
    assert "no task" in result.err
    assert chart_doc(patient) == before


# -- conflicts --------------------------------------------------------------------------------


def test_patient_show_lists_the_clinicians_advice_and_the_chws_notes(
    tablet, settings: Settings, clock: FixedClock
) -> None:
    patient = add_amina(tablet)
    session = unlock(settings, clock, USER, PIN)
    chart = session.store.get_chart(patient)
    note = chart.add_message(
        {"direction": "from_chw", "channel": "app", "author": "amina", "text": "Swollen feet.",
         "sent_at": clock.now()}
    )  # fmt: skip
    clock.advance(timedelta(minutes=5))
    chart.add_message(
        {"direction": "to_chw", "channel": "console", "author": "Dr. Mwakasege",
         "text": "Check her blood pressure today.", "sent_at": clock.now(), "in_reply_to": note}
    )  # fmt: skip
    session.store.put_chart(chart)
    session.lock()

    text = tablet.ok("patient", "show", patient).splitlines()

    shown = [line for line in text if "from amina" in line or "from Dr. Mwakasege" in line]
    assert [line.split(" ", 4)[2] for line in shown] == ["note", "advice"]
    assert shown[1].endswith("from Dr. Mwakasege: Check her blood pressure today.")


def make_phone_conflict(settings: Settings, clock: FixedClock, patient: str) -> None:
    """What two tablets editing the phone offline leave after a sync."""
    session = unlock(settings, clock, USER, PIN)
    chart = session.store.get_chart(patient)
    other_tablet = chart.fork(author="chw-baraka")
    chart.update_demographics({"phone": "+255700000001"})
    clock.advance(timedelta(seconds=1))
    other_tablet.update_demographics({"phone": "+255700000002"})
    chart.merge(other_tablet)
    session.store.put_chart(chart)
    session.lock()


def test_conflicts_are_listed_for_review_and_settled(
    tablet, settings: Settings, clock: FixedClock
) -> None:
    patient = add_amina(tablet, phone="+255712345678")
    add_amina(tablet, birth_date="1980-01-01")
    make_phone_conflict(settings, clock, patient)

    listing = tablet("conflicts")
    assert listing.code == 0
    assert listing.err.strip() == "1 conflicts"
    lines = listing.out.splitlines()
    assert lines[0] == f"REVIEW {patient} phone:"
    values = dict(re.findall(r"'(\+\d+)'  \(value (\S+), by", listing.out))
    assert sorted(values) == ["+255700000001", "+255700000002"]
    assert "[conflicts to review]" in tablet.ok("patient", "search", "amina")
    assert "REVIEW conflict in phone" in tablet.ok("patient", "show", patient)
    assert tablet.ok("conflicts", "--patient", patient) == listing.out.strip()

    settled = tablet.ok(
        "conflicts", "--patient", patient, "--resolve", "phone", "--keep", values["+255700000002"]
    )

    assert settled == "settled phone"
    assert tablet("conflicts").err.strip() == "0 conflicts"
    data = json.loads(tablet.ok("patient", "show", patient, "--json"))
    assert data["fields"]["phone"] == "+255700000002"
    assert data["conflicts"] == []


def test_settling_needs_a_patient_and_a_known_value(
    tablet, settings: Settings, clock: FixedClock, chart_doc: Callable[[str], bytes]
) -> None:
    patient = add_amina(tablet, phone="+255712345678")
    make_phone_conflict(settings, clock, patient)
    before = chart_doc(patient)

    no_patient = tablet("conflicts", "--resolve", "phone", "--keep", new_id())
    unknown_value = tablet(
        "conflicts", "--patient", patient, "--resolve", "phone", "--keep", new_id()
    )

    assert (no_patient.code, unknown_value.code) == (1, 1)
    assert "--patient ID --resolve FIELD --keep VALUE_ID" in no_patient.err
    assert "no value" in unknown_value.err
    assert chart_doc(patient) == before


# -- users and PINs ---------------------------------------------------------------------------


def test_a_second_chw_is_chosen_with_user(tablet, settings: Settings, clock) -> None:
    assert (
        tablet.ok("user", "add", OTHER_USER, FIELD_APP_NEW_PIN=OTHER_PIN) == f"added {OTHER_USER}"
    )

    ambiguous = tablet("patient", "search", "amina")
    assert ambiguous.code == 1
    assert "--user NAME" in ambiguous.err

    assert sorted(tablet.ok("--user", USER, "user", "list").splitlines()) == [
        f"{USER}\tchw",
        f"{OTHER_USER}\tchw",
    ]
    as_baraka = tablet("--user", OTHER_USER, "patient", "search", "amina", FIELD_APP_PIN=OTHER_PIN)
    assert as_baraka.code == 0
    by_env = tablet("patient", "search", "x", FIELD_APP_USER=OTHER_USER, FIELD_APP_PIN=OTHER_PIN)
    assert by_env.code == 0
    wrong = tablet("--user", OTHER_USER, "patient", "search", "amina")
    assert wrong.code == 1
    assert "wrong PIN" in wrong.err


def test_a_patient_added_by_one_chw_is_seen_by_another(tablet) -> None:
    tablet.ok("user", "add", OTHER_USER, FIELD_APP_NEW_PIN=OTHER_PIN)
    patient = tablet.ok("--user", USER, *NEEMA.split())

    shown = tablet.ok("--user", OTHER_USER, "patient", "show", patient, FIELD_APP_PIN=OTHER_PIN)

    assert shown.startswith("Neema Lyimo")


def test_pins_can_come_from_standard_input(tablet) -> None:
    added = tablet("user", "add", OTHER_USER, stdin=f"{PIN}\n{OTHER_PIN}\n", FIELD_APP_PIN=None)
    assert added.code == 0, added.err

    found = tablet(
        "--user", OTHER_USER, "patient", "search", "x", stdin=f"{OTHER_PIN}\r\n", FIELD_APP_PIN=None
    )
    assert found.code == 0, found.err

    missing = tablet("--user", OTHER_USER, "patient", "search", "x", FIELD_APP_PIN=None)
    assert missing.code == 1
    assert "no PIN given" in missing.err


def test_init_reads_the_pin_from_standard_input(cli, settings: Settings, clock) -> None:
    result = cli("init", "--user", USER, stdin=f"{PIN}\n", FIELD_APP_PIN=None)

    assert result.code == 0, result.err
    unlock(settings, clock, USER, PIN).lock()


def test_reset_pin_clears_a_lock_out(tablet, settings: Settings, clock: FixedClock) -> None:
    tablet.ok("user", "add", OTHER_USER, FIELD_APP_NEW_PIN=OTHER_PIN)
    for _ in range(settings.max_pin_failures):
        wrong = tablet("--user", USER, "user", "list", FIELD_APP_PIN="999888")
        clock.advance(timedelta(hours=1))
    assert "locked out" in wrong.err
    assert tablet("--user", USER, "user", "list").code == 1

    as_baraka = {"FIELD_APP_PIN": OTHER_PIN, "FIELD_APP_NEW_PIN": "516273"}
    out = tablet.ok("--user", OTHER_USER, "user", "reset-pin", USER, **as_baraka)

    assert out == f"new PIN set for {USER}"
    assert tablet("--user", USER, "user", "list", FIELD_APP_PIN="516273").code == 0
    assert keystore(settings, clock).failures(USER) == 0


# -- unlock, lock, erase ----------------------------------------------------------------------


def test_unlock_prints_a_token_that_later_commands_use_without_a_pin(tablet) -> None:
    patient = add_amina(tablet)
    unlocked = tablet("unlock")
    assert unlocked.code == 0
    assert re.fullmatch(r"export FIELD_APP_SESSION=[A-Za-z0-9_-]{40,}\n", unlocked.out)
    assert "unlocked for amina" in unlocked.err
    token = unlocked.out.strip().split("=", 1)[1]

    shown = tablet("patient", "show", patient, FIELD_APP_SESSION=token, FIELD_APP_PIN=None)

    assert shown.code == 0, shown.err
    assert shown.out.startswith("Amina Juma")
    assert shown.err == ""


def test_lock_makes_the_token_useless(tablet, settings: Settings) -> None:
    token = tablet.ok("unlock").split("=", 1)[1]

    assert tablet.ok("lock") == "locked"
    assert tablet.ok("lock") == "locked (no session was open)"

    refused = tablet("patient", "search", "x", FIELD_APP_SESSION=token, FIELD_APP_PIN=None)
    assert refused.code == 1
    assert "locked" in refused.err
    assert "no PIN given" in refused.err
    assert not (settings.data_dir / "session.json").exists()


def test_a_token_expires_after_the_idle_time(tablet, settings: Settings, clock) -> None:
    token = tablet.ok("unlock").split("=", 1)[1]
    clock.advance(timedelta(seconds=settings.idle_lock_seconds - 1))
    assert tablet("patient", "search", "x", FIELD_APP_SESSION=token, FIELD_APP_PIN=None).code == 0

    clock.advance(timedelta(seconds=settings.idle_lock_seconds + 1))
    expired = tablet("patient", "search", "x", FIELD_APP_SESSION=token, FIELD_APP_PIN=None)

    assert expired.code == 1
    assert "idle" in expired.err


def test_an_expired_token_falls_back_to_the_pin(tablet, settings: Settings, clock) -> None:
    token = tablet.ok("unlock").split("=", 1)[1]
    clock.advance(timedelta(seconds=settings.idle_lock_seconds + 1))

    result = tablet("patient", "search", "x", FIELD_APP_SESSION=token)

    assert result.code == 0
    assert "idle" in result.err


def test_erase_needs_yes(tablet, settings: Settings) -> None:
    patient = add_amina(tablet)

    refused = tablet("erase")
    assert refused.code == 1
    assert "--yes" in refused.err
    assert tablet.ok("patient", "show", patient).startswith("Amina")

    assert "erased" in tablet.ok("erase", "--yes")
    assert sorted(p.name for p in settings.data_dir.iterdir()) == ["erased"]
    after = tablet("patient", "show", patient)
    assert after.code == 1
    assert "erased" in after.err
    again = tablet("erase", "--yes")
    assert again.code == 1
    assert "already erased" in again.err


# -- refused input changes nothing ------------------------------------------------------------


def test_a_wrong_pin_changes_nothing(
    tablet, row_counts: Callable[[], tuple[int, int]], settings: Settings, clock
) -> None:
    add_amina(tablet)
    before = row_counts()

    result = tablet(*NEEMA.split(), FIELD_APP_PIN="999888")

    assert result.code == 1
    assert result.err == "error: wrong PIN: 9 tries left before this user is locked out\n"
    assert result.out == ""
    assert row_counts() == before


@pytest.mark.parametrize(
    ("readings", "message"),
    [
        (["--systolic", "400", "--diastolic", "80"], "systolic: must be at most 300"),
        (["--temperature", "73"], "temperature: must be at most 45"),
        (["--systolic", "90", "--diastolic", "95"], "diastolic: must be lower than systolic"),
        (["--spo2", "101"], "spo2: must be at most 100"),
        ([], "give a form and its answers"),
    ],
)
def test_an_impossible_vital_sign_changes_nothing(
    tablet, chart_doc: Callable[[str], bytes], readings: list[str], message: str
) -> None:
    patient = add_amina(tablet)
    before = chart_doc(patient)

    result = tablet("visit", "record", "--patient", patient, *readings)

    assert result.code == 1
    assert message in result.err
    assert chart_doc(patient) == before


def test_an_unknown_patient_changes_nothing(
    tablet, row_counts: Callable[[], tuple[int, int]]
) -> None:
    add_amina(tablet)
    before = row_counts()
    nobody = new_id()

    for argv in (
        ["visit", "record", "--patient", nobody, "--pulse", "80"],
        ["patient", "show", nobody],
        ["tasks", "add", "--patient", nobody, "--description", "Visit", "--due", "2025-03-04"],
        ["conflicts", "--patient", nobody],
    ):
        result = tablet(*argv)
        assert result.code == 1
        assert result.err == "error: no patient with that ID on this tablet\n"
    assert row_counts() == before


@pytest.mark.parametrize(
    ("birth_date", "message"),
    [
        ("2025-02-30", "birth_date"),
        ("2025-03-02", "cannot be in the future"),
        ("1880-01-01", "more than 130 years ago"),
        ("15/06/1994", "birth_date"),
        ("", "birth_date"),
    ],
)
def test_a_bad_birth_date_changes_nothing(
    tablet, row_counts: Callable[[], tuple[int, int]], birth_date: str, message: str
) -> None:
    add_amina(tablet)
    before = row_counts()

    result = tablet(*NEEMA.split()[:-1], birth_date)

    assert result.code == 1
    assert result.err.startswith("error: ")
    assert message in result.err
    assert birth_date not in result.err.removeprefix("error: ") or birth_date == ""
    assert row_counts() == before


def test_a_bad_phone_is_refused_without_repeating_it(
    tablet, row_counts: Callable[[], tuple[int, int]]
) -> None:
    before = row_counts()

    result = tablet(*NEEMA.split(), "--phone", "0712 999 888")

    assert result.code == 1
    assert "phone: must be in E.164 form" in result.err
    assert "999" not in result.err
    assert row_counts() == before


def test_a_damaged_database_is_a_clear_error(tablet, settings: Settings) -> None:
    patient = add_amina(tablet)
    path = settings.data_dir / DB_FILE
    data = bytearray(path.read_bytes())
    for start in range(4096, len(data), 4096):
        data[start + 1000 : start + 1016] = os.urandom(16)
    path.write_bytes(bytes(data))

    for argv in (
        ["patient", "show", patient],
        ["patient", "search", "amina"],
        ["visit", "record", "--patient", patient, "--pulse", "80"],
    ):
        result = tablet(*argv)
        assert result.code == 1
        assert result.err == (
            "error: the tablet's database is damaged; sync what you can and ask for help\n"
        )
    assert path.read_bytes() == bytes(data)


def test_a_damaged_first_page_is_a_clear_error(tablet, settings: Settings) -> None:
    path = settings.data_dir / DB_FILE
    data = bytearray(path.read_bytes())
    data[200:216] = os.urandom(16)
    path.write_bytes(bytes(data))

    result = tablet("patient", "search", "amina")

    assert result.code == 1
    assert "damaged" in result.err


def test_a_damaged_key_file_is_a_clear_error(tablet, settings: Settings) -> None:
    (settings.data_dir / "keys.json").write_text('{"format": 1, "slots": {"x": 1}}')

    result = tablet("patient", "search", "amina")

    assert result.code == 1
    assert result.err == "error: the key file of this store is damaged\n"


def test_no_store_yet_says_run_init(cli) -> None:
    result = cli("patient", "search", "amina")

    assert result.code == 1
    assert "run 'init' first" in result.err


def test_a_bad_setting_is_a_clear_error(tablet) -> None:
    result = tablet("patient", "search", "amina", FIELD_APP_IDLE_LOCK_SECONDS="soon")

    assert result.code == 1
    assert "FIELD_APP_IDLE_LOCK_SECONDS" in result.err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["patient"],
        ["patient", "add", "--given", "A"],
        ["patient", "add", "--given", "A", "--family", "B", "--sex", "f", "--birth-date", "x"],
        ["tasks", "due", "--on", "tomorrow"],
        ["visit", "record", "--patient", "p", "--pulse", "fast"],
        ["dance"],
    ],
)
def test_a_wrong_command_line_exits_2(tablet, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        tablet(*argv)

    assert exited.value.code == 2


def test_the_data_dir_option_overrides_the_environment(cli, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"

    cli.ok("--data-dir", str(folder), "init", "--user", USER)

    assert (folder / "keys.json").exists()
    assert cli("patient", "search", "x").code == 1
    assert cli("--data-dir", str(folder), "patient", "search", "x").code == 0


# -- documentation ----------------------------------------------------------------------------


def readme_commands() -> set[str]:
    """The first word of every command in the README's CLI table."""
    table = README.read_text(encoding="utf-8").split("## The tablet CLI", 1)[1]
    return set(re.findall(r"^\| `([a-z-]+)[ `]", table.split("\n## ", 1)[0], flags=re.M))


def parser_commands() -> set[str]:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return set(subparsers.choices)  # type: ignore[arg-type]


def test_every_command_is_in_the_readme_and_every_readme_command_exists() -> None:
    expected = {"init", "user", "patient", "visit", "tasks", "conflicts", "lock", "erase"}

    assert expected | {"unlock"} <= readme_commands()
    assert readme_commands() == parser_commands()


def test_help_of_the_real_program_lists_every_command(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "FIELD_APP_DATA": str(tmp_path / "tablet"),
        "FIELD_APP_PIN": PIN,
        "FIELD_APP_SCRYPT_LOG2_N": "12",
    }

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "field_app", *argv],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    listed = re.findall(r"^    ([a-z][a-z-]*) ", helped.stdout.split("COMMAND\n", 1)[1], flags=re.M)
    assert set(listed) == readme_commands()

    assert run("init", "--user", USER).returncode == 0
    added = run(*NEEMA.split())
    assert UUID.match(added.stdout.strip()), added.stderr
    found = run("patient", "search", "neema")
    assert found.stdout.startswith(added.stdout.strip())
    refused = run("visit", "record", "--patient", added.stdout.strip(), "--pulse", "999")
    assert refused.returncode == 1
    assert "pulse: must be at most 250" in refused.stderr
    assert run("patient").returncode == 2
