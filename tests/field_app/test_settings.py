"""Settings: read once from the environment, checked, and every one documented."""

from __future__ import annotations

import dataclasses
import io
import re
from dataclasses import fields
from pathlib import Path

import pytest

from field_app import BadInput, Settings
from field_app.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"

EVERY_VARIABLE = {
    "FIELD_APP_DATA": "/srv/tablet",
    "FIELD_APP_TIMEZONE": "Africa/Dar_es_Salaam",
    "FIELD_APP_IDLE_LOCK_SECONDS": "120",
    "FIELD_APP_SCRYPT_LOG2_N": "15",
    "FIELD_APP_FREE_PIN_ATTEMPTS": "2",
    "FIELD_APP_MAX_PIN_FAILURES": "6",
}


def test_from_env_reads_every_variable() -> None:
    settings = Settings.from_env(EVERY_VARIABLE)

    assert settings == Settings(
        data_dir=Path("/srv/tablet"),
        zone="Africa/Dar_es_Salaam",
        idle_lock_seconds=120,
        scrypt_log2_n=15,
        free_pin_attempts=2,
        max_pin_failures=6,
    )


@pytest.mark.parametrize("variable", sorted(EVERY_VARIABLE))
def test_each_variable_changes_its_setting_alone(variable: str) -> None:
    defaults = Settings.from_env({"HOME": "/home/chw"})

    changed = Settings.from_env({"HOME": "/home/chw", variable: EVERY_VARIABLE[variable]})

    differing = [
        f.name for f in fields(Settings) if getattr(changed, f.name) != getattr(defaults, f.name)
    ]
    assert differing == [next(f.name for f in fields(Settings) if f.metadata["env"] == variable)]


def test_defaults_work_on_a_laptop() -> None:
    settings = Settings.from_env({"HOME": "/home/chw"})

    assert settings.data_dir == Path("/home/chw/.local/share/field_app")
    assert (settings.zone, settings.idle_lock_seconds) == ("UTC", 300)
    assert (settings.scrypt_log2_n, settings.free_pin_attempts, settings.max_pin_failures) == (
        17,
        4,
        10,
    )


def test_the_data_folder_follows_xdg_and_expands_home() -> None:
    assert Settings.from_env({"XDG_DATA_HOME": "/data"}).data_dir == Path("/data/field_app")
    tilde = Settings.from_env({"FIELD_APP_DATA": "~/tablet"}).data_dir
    assert tilde.is_absolute()
    assert tilde.name == "tablet"


def test_empty_variables_mean_the_default() -> None:
    empty = dict.fromkeys(EVERY_VARIABLE, "")

    assert Settings.from_env({**empty, "HOME": "/h"}) == Settings.from_env({"HOME": "/h"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FIELD_APP_IDLE_LOCK_SECONDS", "five minutes"),
        ("FIELD_APP_IDLE_LOCK_SECONDS", "3"),
        ("FIELD_APP_IDLE_LOCK_SECONDS", "1.5"),
        ("FIELD_APP_SCRYPT_LOG2_N", "9"),
        ("FIELD_APP_SCRYPT_LOG2_N", "23"),
        ("FIELD_APP_SCRYPT_LOG2_N", "high"),
        ("FIELD_APP_FREE_PIN_ATTEMPTS", "-1"),
        ("FIELD_APP_FREE_PIN_ATTEMPTS", "four"),
        ("FIELD_APP_MAX_PIN_FAILURES", "0"),
        ("FIELD_APP_MAX_PIN_FAILURES", "ten"),
        ("FIELD_APP_TIMEZONE", "Mars/Olympus_Mons"),
        ("FIELD_APP_TIMEZONE", "../../etc/passwd"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(BadInput, match=f"^{variable}: "):
        Settings.from_env({variable: value})


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.idle_lock_seconds = 5  # type: ignore[misc]


def test_every_setting_has_a_variable_and_a_help_line() -> None:
    documented = Settings.documented()

    assert [variable for variable, _, _ in documented] == [
        f.metadata["env"] for f in fields(Settings)
    ]
    assert len({variable for variable, _, _ in documented}) == len(fields(Settings))
    for variable, default, text in documented:
        assert variable.startswith("FIELD_APP_")
        assert default
        assert len(text) > 20
        assert text.endswith(".")


def test_the_settings_command_lists_every_setting() -> None:
    out = io.StringIO()

    code = main(["settings"], env={}, stdout=out, stderr=io.StringIO())

    assert code == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == len(fields(Settings))
    for line, (variable, default, text) in zip(lines, Settings.documented(), strict=True):
        assert line == f"{variable} (default {default}): {text}"


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    section = README.read_text(encoding="utf-8").split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(FIELD_APP_[A-Z0-9_]+)` \| `([^`]*)` \|", section, flags=re.M))

    assert set(rows) == {variable for variable, _, _ in Settings.documented()}
    for variable, default, _ in Settings.documented():
        if variable != "FIELD_APP_DATA":  # a per-user folder, written as $XDG_DATA_HOME/...
            assert rows[variable] == default, variable
