"""Rules from DESIGN.md that import-linter cannot check."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ["care_record", "field_app", "sync_hub", "central", "sms", "audio_consult"]

# Each deployable builds its settings once from the environment; nothing else reads it.
MAY_READ_ENVIRONMENT = {
    "field_app/settings.py",
    "field_app/__main__.py",
    "field_app/demo/__main__.py",
    "sync_hub/settings.py",
    "sync_hub/__main__.py",
    "central/settings.py",
    "central/__main__.py",
}


def _sources() -> list[Path]:
    return [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]


def test_only_settings_read_the_environment() -> None:
    readers = {
        str(p.relative_to(ROOT))
        for p in _sources()
        if "os.environ" in p.read_text(encoding="utf-8")
        or "getenv(" in p.read_text(encoding="utf-8")
    }
    assert readers <= MAY_READ_ENVIRONMENT
    assert "field_app/settings.py" in readers


def test_every_package_has_one_errors_module_when_it_raises_its_own_errors() -> None:
    for package in PACKAGES:
        sources = list((ROOT / package).rglob("*.py"))
        defines_errors = [p for p in sources if "(Exception)" in p.read_text(encoding="utf-8")]
        assert all(p.name == "errors.py" for p in defines_errors), defines_errors
