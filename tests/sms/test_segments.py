"""SMS segment counting: GSM-7 against UCS-2, and where a carrier splits a long text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms.segments import GSM7_BASIC, GSM7_EXTENSION, Segments, count

BASIC_AS_LISTED = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EMOJI = "\N{GRINNING FACE}"  # outside the BMP: a surrogate pair in UTF-16


def test_the_tables_are_exactly_gsm_03_38() -> None:
    assert set(BASIC_AS_LISTED) == GSM7_BASIC
    assert len(GSM7_BASIC) == 127  # 128 positions, one of which is the escape
    assert frozenset("\f^{}\\[~]|€") == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize("char", sorted(GSM7_BASIC))
def test_a_basic_character_is_one_septet(char: str) -> None:
    assert count(char) == Segments("GSM-7", 1, 1)


@pytest.mark.parametrize("char", sorted(GSM7_EXTENSION))
def test_an_extension_character_is_escape_plus_character(char: str) -> None:
    assert count(char) == Segments("GSM-7", 2, 1)


@pytest.mark.parametrize(
    "char",
    ["ë", "á", "ó", "í", "ú", "ç", "ê", "\u2019", "\u201c", "`", "\t", "\x1b", "Ł", "n\u0303"],
)
def test_a_character_outside_gsm_7_makes_the_text_ucs_2(char: str) -> None:
    assert count("Hello " + char).encoding == "UCS-2"


def test_empty_text_is_one_segment_of_nothing() -> None:
    assert count("") == Segments("GSM-7", 0, 1)


def test_a_line_break_is_one_septet() -> None:
    assert count("a\nb") == Segments("GSM-7", 3, 1)
    assert count("a\r\nb") == Segments("GSM-7", 4, 1)


@pytest.mark.parametrize(
    ("length", "segments"), [(160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm_7_boundaries(length: int, segments: int) -> None:
    assert count("a" * length) == Segments("GSM-7", length, segments)


def test_an_extension_character_at_the_end_of_one_segment() -> None:
    assert count("a" * 158 + "€") == Segments("GSM-7", 160, 1)
    assert count("a" * 159 + "€") == Segments("GSM-7", 161, 2)


def test_an_escape_pair_is_never_split_across_segments() -> None:
    # 152 + 2 + 152 = 306 septets would fit two segments of 153 if the pair could be split.
    assert count("a" * 152 + "€" + "a" * 152) == Segments("GSM-7", 306, 3)
    # The same units with the pair ending exactly at the boundary: two segments.
    assert count("a" * 151 + "€" + "a" * 153) == Segments("GSM-7", 306, 2)


@pytest.mark.parametrize(
    ("length", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_ucs_2_boundaries(length: int, segments: int) -> None:
    assert count("ë" * length) == Segments("UCS-2", length, segments)


def test_a_character_outside_the_bmp_is_two_units() -> None:
    assert count(EMOJI) == Segments("UCS-2", 2, 1)
    assert count("ë" * 68 + EMOJI) == Segments("UCS-2", 70, 1)
    assert count("ë" * 69 + EMOJI) == Segments("UCS-2", 71, 2)


def test_a_surrogate_pair_is_never_split_across_segments() -> None:
    assert count("ë" * 66 + EMOJI + "ë" * 66) == Segments("UCS-2", 134, 3)
    assert count("ë" * 65 + EMOJI + "ë" * 67) == Segments("UCS-2", 134, 2)


def test_one_non_gsm_character_turns_a_short_text_into_two_ucs_2_segments() -> None:
    text = "a" * 99 + "ë"
    assert count(text[:99]) == Segments("GSM-7", 99, 1)
    assert count(text) == Segments("UCS-2", 100, 2)


def test_the_euro_sign_counts_one_unit_in_ucs_2() -> None:
    # In UCS-2 every BMP character is one unit: the escape exists only in GSM-7.
    assert count("€ë") == Segments("UCS-2", 2, 1)


CHARACTERS = st.one_of(
    st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION)),
    st.sampled_from(["ë", "ç", "\u2019", EMOJI, "\N{EURO SIGN}"]),
    st.characters(codec="utf-8"),
)


@given(st.text(CHARACTERS, max_size=400), CHARACTERS)
def test_appending_a_character_never_lowers_the_count(text: str, char: str) -> None:
    before, after = count(text), count(text + char)
    assert after.segments >= before.segments
    if before.encoding == after.encoding:
        assert after.units > before.units


@given(st.text(CHARACTERS, max_size=400))
def test_the_segments_hold_the_units(text: str) -> None:
    found = count(text)
    single, multi = (160, 153) if found.encoding == "GSM-7" else (70, 67)
    capacity = single if found.segments == 1 else multi * found.segments
    assert found.units <= capacity
    # A pair moved to the next segment leaves at most one unit of a full segment unused.
    if found.segments > 1:
        assert found.units >= (multi - 1) * (found.segments - 1) + 1
