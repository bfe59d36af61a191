"""The words of a reminder, by SMS or by voice, in the patient's language.

Patients mostly have feature phones and some cannot read, so each reminder exists as an SMS
and as the words a voice call speaks, in English (``en``) and Swahili (``sw``). The words are
data, one JSON file per language in ``sms/content/``, read once through ``importlib.resources``
(so they load from an installed package too) and checked when read.

Each template of ``sms.model.TEMPLATES`` has three texts:

- ``sms``: the full text, with the reply keywords (``sms.keywords``) the patient may answer;
- ``sms_short``: the same without ``{facility}``, sent when the full text would cost more
  than one segment (``sms.segments``);
- ``voice``: what the call says; no reply keywords, it ends with the keypad choices (1 to
  confirm, 2 for a call back).

Placeholders, filled in one pass so that a value is never read as a placeholder itself (a
name containing ``{facility}`` stays as written):

- ``{greeting}``: the language's greeting with the first name ("Hello Amina,"), or without one
  ("Hello,") when the name is missing;
- ``{name}``: the patient's first name, for templates that name the patient in the sentence
  (an immunisation reminder names the child to its caregiver); when the name is missing the
  template's ``name_fallback`` ("your child") is used;
- ``{facility}``: the health facility, or the language's ``facility_fallback`` ("the clinic");
- ``{date}``: the day the patient should come, written by ``format_day`` (no ``locale``: the
  servers' locales vary and rarely include Swahili).

Names, facilities and the texts built from them are patient data: this module inserts them and
never logs them; its errors name templates and languages, never values.

Voice language (``say_language``), as far as I could check it in Twilio's documentation:
``<Say language=...>`` takes "any supported language/locale combination" from the voice list of
Twilio's Text-to-Speech page, spoken by Amazon Polly voices (``Polly.*``) or Google voices
(``Google.*``, e.g. ``Google.en-GB-Standard-A``). English is "en-GB" (Polly's British voices,
Google's en-GB voices, and "en-GB" in Twilio's older list; one example on the current page
writes "en-UK"). Swahili is NOT confirmed: I could not read Twilio's voice table itself. Amazon
Polly's published voice list has no Swahili. Google Cloud Text-to-Speech has Kenyan Swahili
voices (``sw-KE-Standard-A`` and others) and Twilio passes Google voices through, so "sw-KE" is
the code that can work, and then only with a Google voice named in ``voice=``
("Google.sw-KE-Standard-A"); with the account's default voice Twilio may refuse the
combination, and Twilio warns that an invalid voice and language pair makes ``<Say>`` fail.
I found no reliable source for a Tanzanian Swahili (sw-TZ) voice. Before Swahili calls go live,
place one test call; if Twilio refuses it, play recorded Swahili audio with ``<Play>`` (a human
voice in the patient's own accent is better for patients anyway).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Any, Literal

from sms import segments
from sms.model import TEMPLATES

LANGUAGES = ("en", "sw")
REPLIES = ("confirmed", "stopped", "started", "help", "call_back", "received")
Medium = Literal["sms", "voice"]

# Twilio <Say language=...>; see "Voice language" in the module docstring.
_SAY_LANGUAGE = {"en": "en-GB", "sw": "sw-KE"}

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_TEXT_PLACEHOLDERS = frozenset({"greeting", "name", "facility", "date"})
_DATE_LISTS = {"weekday": 7, "weekday_abbr": 7, "month": 12, "month_abbr": 12}


@dataclass(frozen=True)
class _Template:
    sms: str
    sms_short: str
    voice: str
    name_fallback: str | None


@dataclass(frozen=True)
class _Dates:
    formats: Mapping[str, str]  # medium -> format
    names: Mapping[str, tuple[str, ...]]  # "weekday", "month_abbr", ... -> names in order


@dataclass(frozen=True)
class _Content:
    greeting_with_name: str
    greeting_without_name: str
    facility_fallback: str
    dates: _Dates
    templates: Mapping[str, _Template]
    replies: Mapping[str, str]


def language_for(requested: str | None, default: str = "en") -> str:
    """The supported language for a BCP-47 tag ("sw-TZ", "SW", "en_GB" -> "sw", "sw", "en"),
    or ``default`` when the tag is missing or names a language we do not have.

    Raises ValueError if ``default`` itself is not supported.
    """
    if default not in LANGUAGES:
        raise ValueError(f"default language {default!r} is not one of {LANGUAGES}")
    if not requested:
        return default
    primary = re.split(r"[-_]", requested.strip(), maxsplit=1)[0].lower()
    return primary if primary in LANGUAGES else default


def say_language(language: str) -> str:
    """The ``language`` attribute of Twilio's ``<Say>`` for one of ``LANGUAGES``.

    "sw" gives "sw-KE", which Twilio's voice list could not be checked for (see the comment on
    ``_SAY_LANGUAGE``). Raises ValueError for an unsupported language.
    """
    _require_language(language)
    return _SAY_LANGUAGE[language]


def format_day(day: date, language: str, medium: Medium = "sms") -> str:
    """The day as a patient reads it ("Tue 24 Nov", "Jumanne 24 Novemba") or hears it
    ("Tuesday 24 November", "Jumanne tarehe 24 Novemba")."""
    dates = _content(language).dates
    values = {"day": str(day.day)}
    for key, names in dates.names.items():
        index = day.weekday() if key.startswith("weekday") else day.month - 1
        values[key] = names[index]
    return _fill(dates.formats[medium], values)


def render_sms(
    template: str,
    language: str,
    *,
    first_name: str | None,
    facility: str | None,
    day: date,
) -> str:
    """The SMS for ``template``: the full text if it fits in one segment, else the short one.

    The short text is returned even when it too is longer than one segment (a very long name):
    a reminder in two segments is better than none. Raises ValueError for an unknown template
    or language.
    """
    content = _content(language)
    texts = _template(content, template)
    values = _values(content, texts, first_name, facility, format_day(day, language, "sms"))
    full = _fill(texts.sms, values)
    if segments.count(full).segments == 1:
        return full
    return _fill(texts.sms_short, values)


def render_voice(
    template: str,
    language: str,
    *,
    first_name: str | None,
    facility: str | None,
    day: date,
) -> str:
    """The words a reminder call speaks. Raises ValueError for an unknown template or language."""
    content = _content(language)
    texts = _template(content, template)
    values = _values(content, texts, first_name, facility, format_day(day, language, "voice"))
    return _fill(texts.voice, values)


def reply_text(kind: str, language: str) -> str:
    """The SMS sent back to a patient's reply: one of ``REPLIES``, in one GSM-7 segment.

    Raises ValueError for an unknown kind or language.
    """
    replies = _content(language).replies
    if kind not in replies:
        raise ValueError(f"no reply text {kind!r}; known: {REPLIES}")
    return replies[kind]


def _require_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r} is not one of {LANGUAGES}")


def _template(content: _Content, template: str) -> _Template:
    if template not in content.templates:
        raise ValueError(f"no reminder template {template!r}; known: {TEMPLATES}")
    return content.templates[template]


def _values(
    content: _Content,
    texts: _Template,
    first_name: str | None,
    facility: str | None,
    day_text: str,
) -> dict[str, str]:
    name = _clean(first_name)
    if name is None:
        greeting = content.greeting_without_name
    else:
        greeting = _fill(content.greeting_with_name, {"name": name})
    return {
        "greeting": greeting,
        "name": name if name is not None else texts.name_fallback or "",
        "facility": _clean(facility) or content.facility_fallback,
        "date": day_text,
    }


def _clean(value: str | None) -> str | None:
    # A stray newline or double space from a form would show in the SMS and cost units.
    if value is None:
        return None
    return " ".join(value.split()) or None


def _fill(text: str, values: Mapping[str, str]) -> str:
    # One pass over the template: a value is inserted as it is and never scanned again.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


@cache
def _content(language: str) -> _Content:
    _require_language(language)
    source = resources.files("sms") / "content" / f"{language}.json"
    raw = json.loads(source.read_text(encoding="utf-8"))
    return _parse_content(raw, f"sms/content/{language}.json")


def _parse_content(raw: Any, where: str) -> _Content:
    greeting = _mapping(raw, "greeting", where)
    with_name = _text(greeting, "with_name", where, allowed={"name"})
    if "{name}" not in with_name:
        raise ValueError(f"{where}: greeting.with_name must contain {{name}}")
    return _Content(
        greeting_with_name=with_name,
        greeting_without_name=_text(greeting, "without_name", where),
        facility_fallback=_text(raw, "facility_fallback", where),
        dates=_parse_dates(_mapping(raw, "dates", where), where),
        templates=_parse_templates(_mapping(raw, "templates", where), where),
        replies=_parse_replies(_mapping(raw, "replies", where), where),
    )


def _parse_replies(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    return {kind: _text(raw, kind, f"{where}: replies") for kind in REPLIES}


def _parse_dates(raw: Mapping[str, Any], where: str) -> _Dates:
    names: dict[str, tuple[str, ...]] = {}
    for key, length in _DATE_LISTS.items():
        if key in raw:
            names[key] = _names(raw, key, length, where)
    allowed = {"day", *names}
    formats = {medium: _text(raw, medium, where, allowed=allowed) for medium in ("sms", "voice")}
    return _Dates(formats=formats, names=names)


def _parse_templates(raw: Mapping[str, Any], where: str) -> dict[str, _Template]:
    parsed = {}
    for name in TEMPLATES:
        texts = _mapping(raw, name, f"{where}: templates")
        spot = f"{where}: templates.{name}"
        template = _Template(
            sms=_text(texts, "sms", spot, allowed=_TEXT_PLACEHOLDERS),
            sms_short=_text(texts, "sms_short", spot, allowed=_TEXT_PLACEHOLDERS - {"facility"}),
            voice=_text(texts, "voice", spot, allowed=_TEXT_PLACEHOLDERS),
            name_fallback=_text(texts, "name_fallback", spot) if "name_fallback" in texts else None,
        )
        uses_name = any("{name}" in t for t in (template.sms, template.sms_short, template.voice))
        if uses_name and template.name_fallback is None:
            raise ValueError(f"{spot}: uses {{name}} but has no name_fallback")
        parsed[name] = template
    return parsed


def _mapping(raw: Any, key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(value, dict):
        # A malformed content file is a bad value, like every other check here.
        raise ValueError(f"{where}: {key} must be an object")  # noqa: TRY004
    return value


def _text(
    raw: Mapping[str, Any], key: str, where: str, allowed: AbstractSet[str] = frozenset()
) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key} must be non-empty text")
    unknown = set(_PLACEHOLDER.findall(value)) - allowed
    if unknown:
        raise ValueError(f"{where}: {key} uses placeholders {sorted(unknown)} not allowed here")
    return value


def _names(raw: Mapping[str, Any], key: str, length: int, where: str) -> tuple[str, ...]:
    value = raw.get(key)
    if not (isinstance(value, list) and len(value) == length and all(_is_text(v) for v in value)):
        raise ValueError(f"{where}: dates.{key} must be a list of {length} names")
    return tuple(value)


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())
