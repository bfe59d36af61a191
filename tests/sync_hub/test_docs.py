"""README.md's "The regional hub" is the hub's manual: every command and setting is in it."""

from __future__ import annotations

import argparse
from pathlib import Path

from sync_hub import Settings
from sync_hub.cli import build_parser

README = (Path(__file__).parent.parent.parent / "README.md").read_text(encoding="utf-8")


def _section() -> str:
    start = README.index("## The regional hub")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    return [
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    ]


def test_every_hub_command_is_in_the_readme() -> None:
    commands = _commands(build_parser())
    assert "enroll-code" in commands  # the walk itself works
    section = _section()
    assert [c for c in commands if f"| `{c}" not in section] == []


def test_every_hub_option_is_in_the_readme() -> None:
    section = _section()
    parser = build_parser()
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in action.choices.values():
            flags = [f for a in sub._actions for f in a.option_strings if f.startswith("--")]
            assert [f for f in flags if f not in section and f != "--help"] == []


def test_every_hub_setting_is_in_the_readme_with_its_default() -> None:
    section = _section()
    for variable, default, _help in Settings.documented():
        assert f"| `{variable}` | `{default}` |" in section
