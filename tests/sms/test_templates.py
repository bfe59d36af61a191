"""The words of reminders and replies: every template in both languages, one segment where it
matters, safe insertion of patient data, dates, and the language codes."""

from __future__ import annotations

import copy
import json
import re
from datetime import date, timedelta
from importlib import resources
from typing import Any

import pytest

from sms import keywords, segments, templates
from sms.model import TEMPLATES
from sms.templates import (
    LANGUAGES,
    REPLIES,
    format_day,
    language_for,
    render_sms,
    render_voice,
    reply_text,
    say_language,
)

TUESDAY = date(2026, 11, 24)
EVERY_DAY = [date(2027, 1, 1) + timedelta(days=n) for n in range(365)]
PAIRS = [(t, lang) for t in TEMPLATES for lang in LANGUAGES]
# The reply keywords each SMS names, and what they must mean to sms.keywords.
SMS_KEYWORDS = {
    "en": {"YES": "confirm", "CALL": "call", "STOP": "stop"},
    "sw": {"NDIYO": "confirm", "PIGA": "call", "ACHA": "stop"},
}
VOICE_ENDING = {
    "en": "Press 1 to confirm. Press 2 to ask for a call back.",
    "sw": "Bonyeza 1 kuthibitisha. Bonyeza 2 ili tukupigie simu.",
}
NEUTRAL_FACILITY = {"en": "the clinic", "sw": "kituo cha afya"}
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def _raw(language: str) -> dict[str, Any]:
    source = resources.files("sms") / "content" / f"{language}.json"
    loaded: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    return loaded


def _one_gsm_segment(text: str) -> bool:
    found = segments.count(text)
    return found.encoding == "GSM-7" and found.segments == 1


# --- every template, every language -----------------------------------------------------------


@pytest.mark.parametrize(("template", "language"), PAIRS)
def test_every_template_renders_as_sms_and_voice(template: str, language: str) -> None:
    for first_name in ("Amina", None):
        for facility in ("Kilosa Health Centre", None):
            sms = render_sms(
                template, language, first_name=first_name, facility=facility, day=TUESDAY
            )
            voice = render_voice(
                template, language, first_name=first_name, facility=facility, day=TUESDAY
            )
            assert not PLACEHOLDER.search(sms)
            assert not PLACEHOLDER.search(voice)
            assert _one_gsm_segment(sms)
            assert voice.endswith(VOICE_ENDING[language])


@pytest.mark.parametrize(("template", "language"), PAIRS)
def test_every_sms_names_its_reply_keywords_and_they_mean_what_it_says(
    template: str, language: str
) -> None:
    texts = _raw(language)["templates"][template]
    for variant in ("sms", "sms_short"):
        words = set(re.findall(r"[A-Z]{2,}", texts[variant]))
        assert set(SMS_KEYWORDS[language]) <= words
        for word, kind in SMS_KEYWORDS[language].items():
            assert keywords.parse(word) == keywords.Reply(kind, language)  # type: ignore[arg-type]


@pytest.mark.parametrize(("template", "language"), PAIRS)
def test_the_voice_text_has_no_reply_keywords(template: str, language: str) -> None:
    voice = _raw(language)["templates"][template]["voice"]
    assert not set(re.findall(r"\b[A-Z]{2,}\b", voice)) & set(SMS_KEYWORDS[language])
    assert "Reply" not in voice
    assert "Jibu" not in voice


@pytest.mark.parametrize(("template", "language"), PAIRS)
def test_the_short_text_leaves_out_the_facility(template: str, language: str) -> None:
    texts = _raw(language)["templates"][template]
    assert "{facility}" in texts["sms"]
    assert "{facility}" not in texts["sms_short"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_fixed_word_is_gsm_7(language: str) -> None:
    # Accents and curly quotes would send every reminder as UCS-2 (70 characters a segment).
    raw = _raw(language)
    texts = [
        *(t for entry in raw["templates"].values() for t in entry.values()),
        *raw["replies"].values(),
        *raw["greeting"].values(),
        raw["facility_fallback"],
        *(n for key, names in raw["dates"].items() if isinstance(names, list) for n in names),
    ]
    for text in texts:
        assert segments.count(text).encoding == "GSM-7", text


def test_both_languages_have_the_same_templates_and_replies() -> None:
    en, sw = _raw("en"), _raw("sw")
    assert set(en["templates"]) == set(sw["templates"]) == set(TEMPLATES)
    assert set(en["replies"]) == set(sw["replies"]) == set(REPLIES)


# --- one segment in the common case, and the short fallback ------------------------------------


@pytest.mark.parametrize(("template", "language"), PAIRS)
@pytest.mark.parametrize("facility", ["Kilosa Health Centre", "Mpwapwa District Hospital"])
@pytest.mark.parametrize("first_name", ["Christabella", "Jo"])
def test_the_common_case_is_the_full_text_in_one_gsm_7_segment(
    template: str, language: str, facility: str, first_name: str
) -> None:
    # Names of up to 12 characters, facilities of up to 25, on every day of a year (the
    # longest weekday and month names included).
    assert len(first_name) <= 12
    assert len(facility) <= 25
    for day in EVERY_DAY:
        text = render_sms(template, language, first_name=first_name, facility=facility, day=day)
        assert facility in text
        assert _one_gsm_segment(text), text


@pytest.mark.parametrize(("template", "language"), PAIRS)
def test_a_long_name_falls_back_to_the_short_text(template: str, language: str) -> None:
    name = "Kokuhumbya" * 4  # 40 characters
    facility = "Kilosa Health Centre"
    full = templates._fill(
        _raw(language)["templates"][template]["sms"],
        {
            "greeting": _raw(language)["greeting"]["with_name"].replace("{name}", name),
            "name": name,
            "facility": facility,
            "date": format_day(TUESDAY, language),
        },
    )
    assert segments.count(full).segments == 2
    text = render_sms(template, language, first_name=name, facility=facility, day=TUESDAY)
    assert facility not in text
    assert name in text
    assert _one_gsm_segment(text)


def test_a_very_long_name_still_gets_the_short_text() -> None:
    name = "A" * 150
    text = render_sms(
        "followup_due", "en", first_name=name, facility="Kilosa Health Centre", day=TUESDAY
    )
    assert text == (
        f"Hello {name}, your follow-up visit is on Tue 24 Nov. "
        "Reply YES to confirm, CALL for a call back, STOP to end."
    )
    assert segments.count(text).segments == 2


def test_a_name_outside_gsm_7_makes_the_sms_ucs_2_and_keeps_the_name() -> None:
    text = render_sms(
        "followup_due", "en", first_name="Zoë", facility="Kilosa Health Centre", day=TUESDAY
    )
    # The full text is more than 70 UCS-2 units, so the short one goes, name as written.
    assert text == (
        "Hello Zoë, your follow-up visit is on Tue 24 Nov. "
        "Reply YES to confirm, CALL for a call back, STOP to end."
    )
    assert segments.count(text).encoding == "UCS-2"


# --- patient data is inserted, never interpreted ------------------------------------------------


@pytest.mark.parametrize("name", ["{x}", "{facility}", "{date}", "{name}", "{0}", "{", "}{", "%s"])
def test_braces_in_a_name_are_inserted_as_written(name: str) -> None:
    text = render_sms(
        "followup_due", "en", first_name=name, facility="Kilosa Health Centre", day=TUESDAY
    )
    assert text.startswith(f"Hello {name}, please come to Kilosa Health Centre on Tue 24 Nov")
    voice = render_voice("immunisation_due", "sw", first_name=name, facility="{date}", day=TUESDAY)
    assert f"mlete {name} apate chanjo" in voice
    assert "kutoka {date}." in voice


def test_the_common_sms_reads_as_written() -> None:
    assert render_sms(
        "followup_due", "en", first_name="Amina", facility="Kilosa Health Centre", day=TUESDAY
    ) == (
        "Hello Amina, please come to Kilosa Health Centre on Tue 24 Nov for your follow-up "
        "visit. Reply YES to confirm, CALL for a call back, STOP to end."
    )
    assert render_sms(
        "followup_due", "sw", first_name="Amina", facility="Kilosa Health Centre", day=TUESDAY
    ) == (
        "Habari Amina, tafadhali fika Kilosa Health Centre Jumanne 24 Novemba kwa ufuatiliaji. "
        "Jibu NDIYO kuthibitisha, PIGA tukupigie, ACHA kusitisha."
    )


@pytest.mark.parametrize(("language", "greeting"), [("en", "Hello,"), ("sw", "Habari,")])
@pytest.mark.parametrize("first_name", [None, "", "   "])
def test_without_a_name_the_greeting_is_neutral(
    language: str, greeting: str, first_name: str | None
) -> None:
    for render in (render_sms, render_voice):
        text = render("followup_due", language, first_name=first_name, facility=None, day=TUESDAY)
        assert text.startswith(greeting + " ")


@pytest.mark.parametrize(("language", "child"), [("en", "your child"), ("sw", "mtoto wako")])
def test_an_immunisation_reminder_without_a_name_speaks_of_the_child(
    language: str, child: str
) -> None:
    for render in (render_sms, render_voice):
        text = render("immunisation_due", language, first_name=None, facility=None, day=TUESDAY)
        assert child in text


@pytest.mark.parametrize("language", LANGUAGES)
def test_without_a_facility_a_neutral_word_stands_in(language: str) -> None:
    for render in (render_sms, render_voice):
        text = render("followup_due", language, first_name="Amina", facility=None, day=TUESDAY)
        assert NEUTRAL_FACILITY[language] in text


def test_whitespace_in_names_is_tidied() -> None:
    text = render_sms(
        "missed_visit", "en", first_name="  Amina\n Joy ", facility=" Kilosa\tHC ", day=TUESDAY
    )
    assert text.startswith(
        "Hello Amina Joy, we missed you at Kilosa HC. Please come on Tue 24 Nov."
    )


# --- dates --------------------------------------------------------------------------------------


def test_english_dates() -> None:
    assert format_day(TUESDAY, "en") == "Tue 24 Nov"
    assert format_day(TUESDAY, "en", "voice") == "Tuesday 24 November"
    assert format_day(date(2027, 1, 3), "en") == "Sun 3 Jan"
    assert format_day(date(2026, 12, 31), "en", "voice") == "Thursday 31 December"


def test_swahili_dates() -> None:
    assert format_day(TUESDAY, "sw") == "Jumanne 24 Novemba"
    assert format_day(TUESDAY, "sw", "voice") == "Jumanne tarehe 24 Novemba"
    assert format_day(date(2027, 1, 3), "sw") == "Jumapili 3 Januari"
    assert format_day(date(2026, 9, 3), "sw") == "Alhamisi 3 Septemba"


@pytest.mark.parametrize(
    ("language", "week"),
    [
        ("en", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
        ("sw", ["Jumatatu", "Jumanne", "Jumatano", "Alhamisi", "Ijumaa", "Jumamosi", "Jumapili"]),
    ],
)
def test_every_weekday_has_its_name(language: str, week: list[str]) -> None:
    monday = date(2026, 11, 23)
    for offset, name in enumerate(week):
        assert format_day(monday + timedelta(days=offset), language).split()[0] == name


def test_every_month_has_its_swahili_name() -> None:
    months = [format_day(date(2026, m, 1), "sw").split()[-1] for m in range(1, 13)]
    assert months == [
        "Januari", "Februari", "Machi", "Aprili", "Mei", "Juni",
        "Julai", "Agosti", "Septemba", "Oktoba", "Novemba", "Desemba",
    ]  # fmt: skip


# --- replies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", REPLIES)
def test_every_reply_is_one_gsm_7_segment(kind: str, language: str) -> None:
    assert _one_gsm_segment(reply_text(kind, language))


@pytest.mark.parametrize(
    ("language", "start", "stop", "help_word"),
    [("en", "START", "STOP", "HELP"), ("sw", "ANZA", "ACHA", "MSAADA")],
)
def test_replies_name_keywords_that_work(
    language: str, start: str, stop: str, help_word: str
) -> None:
    assert start in reply_text("stopped", language)
    assert keywords.parse(start).kind == "start"
    assert stop in reply_text("started", language)
    assert keywords.parse(stop).kind == "stop"
    assert help_word in reply_text("started", language)
    assert keywords.parse(help_word).kind == "help"
    for word, kind in SMS_KEYWORDS[language].items():
        assert word in reply_text("help", language)
        assert keywords.parse(word).kind == kind


# --- languages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "default", "expected"),
    [
        ("sw", "en", "sw"),
        ("sw-TZ", "en", "sw"),
        ("sw-KE", "en", "sw"),
        ("SW", "en", "sw"),
        ("sw_TZ", "en", "sw"),
        (" sw ", "en", "sw"),
        ("en", "sw", "en"),
        ("en-GB", "sw", "en"),
        ("fr", "en", "en"),
        ("fr-FR", "sw", "sw"),
        ("swa", "en", "en"),
        (None, "en", "en"),
        (None, "sw", "sw"),
        ("", "sw", "sw"),
    ],
)
def test_language_for(requested: str | None, default: str, expected: str) -> None:
    assert language_for(requested, default) == expected


def test_language_for_defaults_to_english() -> None:
    assert language_for(None) == "en"
    assert language_for("lg-UG") == "en"


@pytest.mark.parametrize("default", ["fr", "sw-TZ", ""])
def test_language_for_refuses_an_unsupported_default(default: str) -> None:
    with pytest.raises(ValueError, match="default language"):
        language_for("sw", default)


def test_say_language() -> None:
    assert say_language("en") == "en-GB"
    assert say_language("sw") == "sw-KE"
    with pytest.raises(ValueError, match="'fr'"):
        say_language("fr")


# --- bad input ----------------------------------------------------------------------------------


def test_an_unknown_template_is_named_in_the_error() -> None:
    for render in (render_sms, render_voice):
        with pytest.raises(ValueError, match="'follow_up'"):
            render("follow_up", "en", first_name="Amina", facility=None, day=TUESDAY)


def test_an_unknown_language_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="'sw-TZ'"):
        render_sms("followup_due", "sw-TZ", first_name=None, facility=None, day=TUESDAY)
    with pytest.raises(ValueError, match="'fr'"):
        reply_text("help", "fr")
    with pytest.raises(ValueError, match="'fr'"):
        format_day(TUESDAY, "fr")


def test_an_unknown_reply_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="'thanks'"):
        reply_text("thanks", "en")


def test_errors_do_not_carry_patient_data() -> None:
    with pytest.raises(ValueError, match="'nope'") as raised:
        render_sms("nope", "en", first_name="Amina", facility="Kilosa", day=TUESDAY)
    assert "Amina" not in str(raised.value)
    assert "Kilosa" not in str(raised.value)


# --- the content files are checked when read ------------------------------------------------------


def _broken(change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(_raw("en"))
    change(raw)
    return raw


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["templates"].pop("missed_visit"), "missed_visit must be an object"),
        (
            lambda r: r["templates"]["followup_due"].update(sms="Hi {phone}"),
            r"placeholders \['phone'\]",
        ),
        (
            lambda r: r["templates"]["followup_due"].update(sms_short="At {facility}"),
            r"sms_short uses placeholders \['facility'\]",
        ),
        (
            lambda r: r["templates"]["immunisation_due"].pop("name_fallback"),
            "no name_fallback",
        ),
        (lambda r: r["replies"].pop("help"), "help must be non-empty text"),
        (lambda r: r["replies"].update(help="Hi {name}"), "placeholders"),
        (lambda r: r["greeting"].update(with_name="Hello,"), "must contain"),
        (lambda r: r["dates"]["month"].pop(), "12 names"),
        (lambda r: r["dates"].update(sms="{weekday} {year}"), r"\['year'\]"),
        (lambda r: r["dates"].pop("weekday_abbr"), r"\['weekday_abbr'\]"),
    ],
)
def test_broken_content_is_refused_with_where_and_why(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        templates._parse_content(_broken(change), "en.json")


def test_the_shipped_content_parses() -> None:
    for language in LANGUAGES:
        templates._parse_content(_raw(language), f"{language}.json")
