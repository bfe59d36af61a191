"""The README is the manual: every command and every setting must be in it."""

from __future__ import annotations

import argparse
from pathlib import Path

from field_app.cli import build_parser
from field_app.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"{prefix}{name}")
                found += _commands(sub, f"{prefix}{name} ")
    return found


def test_every_cli_command_is_in_the_readme() -> None:
    commands = _commands(build_parser())
    assert "patient add" in commands  # the walk itself works
    missing = [c for c in commands if f"`{c}" not in README]
    assert missing == []


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    for variable, default, _help in Settings.documented():
        if variable == "FIELD_APP_DATA":
            continue  # its default is a per-user folder, documented by name
        assert f"| `{variable}` | `{default}` |" in README


def test_readme_names_the_two_setup_commands() -> None:
    assert "make demo" in README
    assert "make test" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
