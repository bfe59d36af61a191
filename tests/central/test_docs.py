"""README.md's "The central FHIR server" is central's manual: every command (with its
sub-commands and options) and every setting is in it."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from central.cli import build_parser
from central.settings import Settings

README = (Path(__file__).parent.parent.parent / "README.md").read_text(encoding="utf-8")


def _section() -> str:
    start = README.index("## The central FHIR server")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command as typed (``client add``), with its parser, sub-commands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                typed = f"{prefix}{name}"
                nested = list(_commands(sub, f"{typed} "))
                yield from nested or [(typed, sub)]


def test_every_central_command_is_in_the_readme() -> None:
    commands = dict(_commands(build_parser()))
    assert {"client add", "audit verify", "serve", "import"} <= set(commands)
    section = _section()
    assert [c for c in commands if f"| `{c}" not in section] == []


def test_every_central_option_is_in_the_readme() -> None:
    section = _section()
    for name, parser in _commands(build_parser()):
        flags = [f for a in parser._actions for f in a.option_strings if f.startswith("--")]
        assert [f for f in flags if f not in section and f != "--help"] == [], name


def test_every_central_setting_is_in_the_readme_with_its_default() -> None:
    section = _section()
    for variable, default, _help in Settings.documented():
        assert f"| `{variable}` | `{default}` |" in section
