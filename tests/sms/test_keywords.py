"""What a patient's reply means: keywords in English and Swahili, digits, and free text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms.keywords import Reply, parse

KEYWORDS = [
    ("CONFIRM", "confirm", "en"),
    ("YES", "confirm", "en"),
    ("Y", "confirm", "en"),
    ("STOP", "stop", "en"),
    ("STOPALL", "stop", "en"),
    ("UNSUBSCRIBE", "stop", "en"),
    ("CANCEL", "stop", "en"),
    ("END", "stop", "en"),
    ("QUIT", "stop", "en"),
    ("REVOKE", "stop", "en"),
    ("OPTOUT", "stop", "en"),
    ("START", "start", "en"),
    ("UNSTOP", "start", "en"),
    ("HELP", "help", "en"),
    ("INFO", "help", "en"),
    ("CALL", "call", "en"),
    ("CALLBACK", "call", "en"),
    ("CALL ME", "call", "en"),
    ("NDIYO", "confirm", "sw"),
    ("NDIO", "confirm", "sw"),
    ("THIBITISHA", "confirm", "sw"),
    ("SAWA", "confirm", "sw"),
    ("ACHA", "stop", "sw"),
    ("SITISHA", "stop", "sw"),
    ("ANZA", "start", "sw"),
    ("MSAADA", "help", "sw"),
    ("PIGA", "call", "sw"),
    ("NIPIGIE", "call", "sw"),
]


@pytest.mark.parametrize(("word", "kind", "language"), KEYWORDS)
def test_each_keyword_in_any_case(word: str, kind: str, language: str) -> None:
    expected = Reply(kind, language)  # type: ignore[arg-type]
    assert parse(word) == expected
    assert parse(word.lower()) == expected
    assert parse(word.title()) == expected


@pytest.mark.parametrize(("word", "kind", "language"), KEYWORDS)
def test_each_keyword_with_whitespace_punctuation_and_more_words(
    word: str, kind: str, language: str
) -> None:
    expected = Reply(kind, language)  # type: ignore[arg-type]
    assert parse(f"  {word.lower()}!\n") == expected
    assert parse(f"{word}. asante / thank you") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes.", Reply("confirm", "en")),
        (" Stop!", Reply("stop", "en")),
        ("YES!!!", Reply("confirm", "en")),
        ('"yes"', Reply("confirm", "en")),
        ("Yes,I will come", Reply("confirm", "en")),
        ("Yes I will come", Reply("confirm", "en")),
        ("Ndiyo, nitakuja", Reply("confirm", "sw")),
        ("opt-out", Reply("stop", "en")),
        ("Opt out", Reply("stop", "en")),
        ("call me", Reply("call", "en")),
        ("Call me please", Reply("call", "en")),
        ("Nipigie tafadhali", Reply("call", "sw")),
    ],
)
def test_case_and_punctuation_do_not_matter(text: str, expected: Reply) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ndíyo", Reply("confirm", "sw")),
        ("STÓP", Reply("stop", "en")),
        ("yés", Reply("confirm", "en")),
        ("\uff33\uff34\uff2f\uff30", Reply("stop", "en")),  # full-width STOP
        ("Ye\u0301s", Reply("confirm", "en")),  # e + combining acute
    ],
)
def test_accents_and_compatibility_forms_are_folded(text: str, expected: Reply) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "kind"),
    [("1", "confirm"), ("2", "call"), (" 1. ", "confirm"), ("2!", "call"), ("\uff11", "confirm")],
)
def test_a_lone_digit_means_what_it_means_on_the_call(text: str, kind: str) -> None:
    assert parse(text) == Reply(kind, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["3", "0", "12", "1 2", "1 nitakuja", "1.5"])
def test_other_digits_are_not_keywords(text: str) -> None:
    assert parse(text) == Reply("other", None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "!!!",
        "I will come tomorrow",
        "Nitakuja kesho",
        "no",
        "Yesterday I was sick",  # a keyword as the start of a word is not the keyword
        "stopped",
        "Callum here",
        "Asante",
    ],
)
def test_free_text_is_other(text: str) -> None:
    assert parse(text) == Reply("other", None)


def test_only_the_first_word_counts() -> None:
    assert parse("Please stop") == Reply("other", None)
    assert parse("I said YES") == Reply("other", None)


@given(st.text(max_size=300))
def test_parse_takes_any_text(text: str) -> None:
    reply = parse(text)
    assert reply.kind in {"confirm", "stop", "start", "help", "call", "other"}
    if reply.kind == "other":
        assert reply.language is None
    else:
        assert reply.language in {"en", "sw", None}
