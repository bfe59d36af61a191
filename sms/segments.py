"""How many SMS a text costs: GSM-7 or UCS-2, and the segments a carrier splits it into.

A reminder that spills into a second segment costs twice as much and may reach an old phone as
two messages, so the templates are chosen by this count (``sms.templates``), not by ``len()``.

A text goes as GSM-7 (GSM 03.38) when every character is in the default alphabet or its
extension table; one character outside them (``ë``, ``á``, a curly quote, an emoji) sends the
whole text as UCS-2. The units counted are:

- GSM-7: septets. A character of the extension table (``^{}\\[~]|€`` and form feed) is sent as
  the escape septet followed by the character, so it counts 2.
- UCS-2: UTF-16 code units. A character outside the Basic Multilingual Plane (most emoji) is a
  surrogate pair and counts 2.

One segment holds 160 septets or 70 UCS-2 units. A longer text is sent as concatenated
segments, each carrying a 6-byte header (UDH), which leaves 153 septets or 67 units; an escape
pair or a surrogate pair is never split across two segments, so a pair that would straddle a
boundary starts the next segment and may cost one more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 default alphabet, in table order (0x00-0x7F); 0x1B is the escape to the extension
# table and not a character of its own, so it is left out.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# The extension table (escape + character): form feed, ^ { } \ [ ~ ] | and the euro sign.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE_GSM7 = 160
MULTI_GSM7 = 153
SINGLE_UCS2 = 70
MULTI_UCS2 = 67


@dataclass(frozen=True)
class Segments:
    encoding: Encoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def count(text: str) -> Segments:
    """The encoding, units and segments ``text`` costs as one SMS.

    An empty text counts as 1 segment of 0 units: carriers send an empty SMS as one segment.
    We never send one; the count only has to be defined for it.
    """
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        widths = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return _packed("GSM-7", widths, SINGLE_GSM7, MULTI_GSM7)
    widths = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return _packed("UCS-2", widths, SINGLE_UCS2, MULTI_UCS2)


def _packed(encoding: Encoding, widths: list[int], single: int, multi: int) -> Segments:
    units = sum(widths)
    if units <= single:
        return Segments(encoding, units, 1)
    return Segments(encoding, units, _segments_needed(widths, multi))


def _segments_needed(widths: list[int], capacity: int) -> int:
    # Fill each segment in order; a pair that does not fit whole moves to the next segment.
    segments, used = 1, 0
    for width in widths:
        if used + width > capacity:
            segments, used = segments + 1, 0
        used += width
    return segments
