"""The forms a tablet knows: each a Questionnaire, its rules and its catalogues, read once.

A content folder holds, for each form NAME::

    NAME.questionnaire.json                 the FHIR R4 Questionnaire
    NAME.rules.json                         its decision rules (care-rules/1)
    locale/LANG/LC_MESSAGES/NAME.po         its text in each language other than English

The app ships its content in ``field_app/forms/content``; a programme points
``FIELD_APP_FORMS_DIR`` at its own folder to add a form or change a threshold without Python.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from field_app.errors import ContentError, UnknownForm
from field_app.forms.catalogue import ENGLISH, Catalogue, load_catalogue
from field_app.forms.expressions import Expression
from field_app.forms.questionnaire import Questionnaire, parse_questionnaire
from field_app.forms.rules import RuleSet, parse_rules

PACKAGED_CONTENT = Path(__file__).parent / "content"
FORM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class Form:
    """A ready form: its questionnaire, rules, compiled expressions and catalogues."""

    questionnaire: Questionnaire
    rules: RuleSet
    catalogues: dict[str, Catalogue]
    calculations: dict[str, Expression] = field(repr=False)
    constraints: dict[str, tuple[tuple[Expression, str], ...]] = field(repr=False)

    @property
    def name(self) -> str:
        return self.questionnaire.name

    def catalogue(self, language: str) -> Catalogue:
        """The catalogue for ``language``; English (the msgids) for English or an unknown one."""
        return self.catalogues.get(language, ENGLISH)


class FormLibrary:
    """Finds forms by name in a content folder; each is read and compiled on first use."""

    def __init__(self, folder: Path = PACKAGED_CONTENT) -> None:
        self.folder = folder
        self._cache: dict[str, Form] = {}

    def names(self) -> list[str]:
        return sorted(
            p.name.removesuffix(".questionnaire.json")
            for p in self.folder.glob("*.questionnaire.json")
        )

    def languages(self) -> list[str]:
        locale = self.folder / "locale"
        found = sorted(p.name for p in locale.iterdir() if p.is_dir()) if locale.is_dir() else []
        return ["en", *found]

    def get(self, name: str) -> Form:
        """The form called ``name``. Raises UnknownForm, or ContentError for a broken file."""
        if name not in self._cache:
            if not FORM_NAME.match(name) or name not in self.names():
                known = ", ".join(self.names()) or "none"
                raise UnknownForm(f"there is no form called '{name}' (forms here: {known})")
            self._cache[name] = self._load(name)
        return self._cache[name]

    def _load(self, name: str) -> Form:
        questionnaire = parse_questionnaire(
            _read_json(self.folder / f"{name}.questionnaire.json"),
            source=f"{name}.questionnaire.json",
        )
        if questionnaire.name != name:
            raise ContentError(
                f"{name}.questionnaire.json: its name is '{questionnaire.name}', not '{name}'"
            )
        rules = parse_rules(
            _read_json(self.folder / f"{name}.rules.json"), source=f"{name}.rules.json"
        )
        if rules.form != name:
            raise ContentError(f"{name}.rules.json: it is for form '{rules.form}', not '{name}'")
        calculations = {
            item.link_id: Expression(item.calculated, where=f"{name}: item {item.link_id}")
            for item in questionnaire.items.values()
            if item.calculated
        }
        constraints = {
            item.link_id: tuple(
                (Expression(text, where=f"{name}: item {item.link_id} constraint"), human)
                for text, human in item.constraints
            )
            for item in questionnaire.items.values()
            if item.constraints
        }
        catalogues = {
            language: load_catalogue(path, language)
            for language in self.languages()[1:]
            if (path := self.folder / "locale" / language / "LC_MESSAGES" / f"{name}.po").exists()
        }
        return Form(questionnaire, rules, catalogues, calculations, constraints)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContentError(f"{path.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise ContentError(f"{path.name}: not valid JSON ({exc})") from None
