"""What a patient's SMS reply means: confirm, stop, start, help, call back, or anything else.

Patients answer a reminder from feature phones, in English or Swahili, in any case, often with
a full stop or an accent their keyboard added. ``parse`` reads the first word only, upper-cased,
with accents folded away (NFKD: "ndíyo" is NDIYO) and punctuation ignored ("yes.", " Stop!"); a
known two-word phrase ("call me", "opt out") is matched before its first word. A message that
is a lone digit "1" or "2" means what the keypad means on a reminder call: confirm, call back.

    kind      English                                        Swahili
    confirm   CONFIRM YES Y                                  NDIYO NDIO THIBITISHA SAWA
    stop      STOP STOPALL UNSUBSCRIBE CANCEL END QUIT       ACHA SITISHA
              REVOKE OPTOUT, "OPT OUT"
    start     START UNSTOP                                   ANZA
    help      HELP INFO                                      MSAADA
    call      CALL CALLBACK, "CALL ME"                       PIGA NIPIGIE

The English stop words are Twilio's own opt-out keywords, which Twilio acts on by itself; we
honour every one of them the same way. Twilio's Advanced Opt-Out documentation also lists
REVOKE and OPTOUT among its defaults, so they are here too. NDIO is the common spelling of
NDIYO in text messages.

Things to know:

- YES is also one of Twilio's opt-in words. If the account has Twilio's Advanced Opt-Out on,
  Twilio itself re-subscribes a patient who writes YES after STOP; we treat YES as confirm and
  nothing else, so our own opt-out record, not Twilio's, must decide whether we send.
- Carriers and Twilio act on a keyword only when it is the whole message; we read the first
  word, so "stop sending these" is a stop here even where Twilio lets it through. That errs
  towards stopping, and also reads "End of the month I will come" or "Acha nikuambie" as a
  stop; the ``stopped`` reply tells the patient how to start again.
- ``language`` is the language of the keyword matched, so a reply can go back in the words the
  patient used; it is None for a digit and for anything else.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["confirm", "stop", "start", "help", "call", "other"]


@dataclass(frozen=True)
class Reply:
    kind: Kind
    language: str | None


_WORDS: Mapping[str, Mapping[Kind, tuple[str, ...]]] = {
    "en": {
        "confirm": ("CONFIRM", "YES", "Y"),
        "stop": (
            "STOP",
            "STOPALL",
            "UNSUBSCRIBE",
            "CANCEL",
            "END",
            "QUIT",
            "REVOKE",
            "OPTOUT",
            "OPT OUT",
        ),
        "start": ("START", "UNSTOP"),
        "help": ("HELP", "INFO"),
        "call": ("CALL", "CALLBACK", "CALL ME"),
    },
    "sw": {
        "confirm": ("NDIYO", "NDIO", "THIBITISHA", "SAWA"),
        "stop": ("ACHA", "SITISHA"),
        "start": ("ANZA",),
        "help": ("MSAADA",),
        "call": ("PIGA", "NIPIGIE"),
    },
}
_DIGITS: Mapping[str, Kind] = {"1": "confirm", "2": "call"}
# A word is a run of letters or digits: punctuation and "_" separate words and are dropped.
_WORD = re.compile(r"[^\W_]+")


def _phrases() -> dict[tuple[str, ...], Reply]:
    table: dict[tuple[str, ...], Reply] = {}
    for language, kinds in _WORDS.items():
        for kind, words in kinds.items():
            for phrase in words:
                table[tuple(phrase.split())] = Reply(kind, language)
    return table


_PHRASES = _phrases()
_LONGEST = max(len(phrase) for phrase in _PHRASES)


def parse(text: str) -> Reply:
    """What the reply ``text`` asks for (see the module docstring); never raises."""
    words = _words(text)
    if len(words) == 1 and words[0] in _DIGITS:
        return Reply(_DIGITS[words[0]], None)
    for length in range(min(_LONGEST, len(words)), 0, -1):
        match = _PHRASES.get(tuple(words[:length]))
        if match is not None:
            return match
    return Reply("other", None)


def _words(text: str) -> list[str]:
    """The first words of ``text``, upper-cased, with accents and compatibility forms folded
    (NFKD, combining marks dropped: "Ndíyo" reads as NDIYO, full-width letters as ASCII)."""
    decomposed = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    # More words than the longest phrase are never read; two are enough to tell a lone digit.
    return _WORD.findall(folded.upper())[: max(_LONGEST, 2)]
