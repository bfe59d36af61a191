"""Translations of form text through gettext catalogues (``.po`` files, read with polib).

Every text a CHW or a patient sees (item text, option displays, danger signs, reasons, task
descriptions, reminder templates) is written in English in the content files and used as the
msgid. Each other language has one catalogue per form:
``content/locale/LANG/LC_MESSAGES/FORM.po``. A missing translation falls back to English at run
time and is reported by ``forms check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polib

from field_app.errors import ContentError

SOURCE_LANGUAGE = "en"


@dataclass(frozen=True)
class Catalogue:
    language: str
    messages: dict[str, str]

    def text(self, msgid: str) -> str:
        """The translation of ``msgid``, or ``msgid`` itself where there is none yet."""
        return self.messages.get(msgid) or msgid


ENGLISH = Catalogue(SOURCE_LANGUAGE, {})


def load_catalogue(path: Path, language: str) -> Catalogue:
    """Read one ``.po`` file. Raises ContentError if it cannot be parsed."""
    try:
        entries = polib.pofile(str(path), encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise ContentError(f"{path.name} ({language}): not a readable .po file ({exc})") from None
    messages = {
        e.msgid: e.msgstr for e in entries if e.msgstr and not e.obsolete and "fuzzy" not in e.flags
    }
    return Catalogue(language, messages)
