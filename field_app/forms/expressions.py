"""FHIRPath expressions over a form's answers, compiled once with fhirpathpy.

What an expression sees (documented in docs/forms.md):

- the answers of the enabled questions, each under its linkId: ``muac < 115``,
  ``danger_signs contains 'convulsing'`` for a repeating question; an unanswered or disabled
  question is an empty collection, so a comparison with it is empty and a rule does not fire;
- ``%today`` (the visit date, from the injected clock) and ``%patient`` (``birth_date``,
  ``sex``, ``pregnancy_status`` from the chart);
- the FHIRPath functions fhirpathpy implements, plus four of ours for what FHIRPath R4 cannot
  say: ``daysTo(end)``, ``weeksTo(end)``, ``monthsTo(end)``, ``yearsTo(end)``, the whole
  units from the input date to ``end`` (a child born 2024-01-31 is 1 month old on 2024-02-29).

``today()`` and ``now()`` read the machine's clock and are refused by ``forms check``: use
``%today`` so a visit can be replayed and tested.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token  # type: ignore[import-untyped]
from antlr4.error.ErrorListener import ErrorListener  # type: ignore[import-untyped]
from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from field_app.errors import ContentError

Compiled = Callable[[Mapping[str, Any], Mapping[str, Any]], list[Any]]

_NAME = re.compile(r"(?<![%.\w'@])([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")
_CLOCK = re.compile(r"\b(today|now|timeOfDay)\s*\(")


def _as_date(value: object) -> date | None:
    text = str(value)[:10]
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _months(start: date, end: date) -> int:
    months = (end.year - start.year) * 12 + end.month - start.month
    if end.day < start.day and not _is_month_end(end):
        months -= 1
    return months


def _is_month_end(day: date) -> bool:
    return (day + timedelta(days=1)).day == 1


def _between(unit: Callable[[date, date], int]) -> Callable[..., list[int]]:
    def function(inputs: list[Any], end: list[Any]) -> list[int]:
        if len(inputs) != 1 or len(end) != 1:
            return []
        start_day, end_day = _as_date(inputs[0]), _as_date(end[0])
        if start_day is None or end_day is None:
            return []
        return [unit(start_day, end_day)]

    return function


FUNCTIONS: dict[str, dict[str, Any]] = {
    "daysTo": {"fn": _between(lambda a, b: (b - a).days), "arity": {1: ["Any"]}},
    "weeksTo": {"fn": _between(lambda a, b: (b - a).days // 7), "arity": {1: ["Any"]}},
    "monthsTo": {"fn": _between(_months), "arity": {1: ["Any"]}},
    "yearsTo": {"fn": _between(lambda a, b: _months(a, b) // 12), "arity": {1: ["Any"]}},
}


class Expression:
    """A compiled FHIRPath expression and the names of the answers it reads."""

    def __init__(self, text: str, *, where: str) -> None:
        if _CLOCK.search(text):
            raise ContentError(f"{where}: use %today, not the machine's clock, in '{text}'")
        _check_syntax(text, where)
        try:
            self._compiled: Compiled = compile_fhirpath(
                text, options={"userInvocationTable": FUNCTIONS}
            )
        except Exception as exc:  # noqa: BLE001 - fhirpathpy's parser raises bare Exceptions
            raise ContentError(f"{where}: '{text}' is not valid FHIRPath ({exc})") from None
        self.text = text
        self.where = where
        self.names = frozenset(_NAME.findall(_strip_strings(text)))

    def evaluate(self, answers: Mapping[str, Any], env: Mapping[str, Any]) -> list[Any]:
        """Evaluate over ``answers``; raises ContentError if the expression fails at run time."""
        try:
            result = self._compiled(answers, env)
        except Exception as exc:  # noqa: BLE001 - a type clash in fhirpathpy is a bare Exception
            raise ContentError(f"{self.where}: '{self.text}' failed ({exc})") from None
        return [_plain(v) for v in result]

    def is_true(self, answers: Mapping[str, Any], env: Mapping[str, Any]) -> bool:
        """FHIRPath truth for a rule: the result is exactly ``true`` (empty means no)."""
        return self.evaluate(answers, env) == [True]


class _Refuse(ErrorListener):  # type: ignore[misc]
    def syntaxError(  # noqa: N802, PLR0917 - antlr's name and signature
        self, recognizer: object, offending: object, line: int, column: int, msg: str, e: object
    ) -> None:
        raise ValueError(f"at character {column + 1}: {msg}")


def _check_syntax(text: str, where: str) -> None:
    """Refuse what fhirpathpy would quietly repair: its parser recovers from syntax errors, so
    ``fever = `` or ``fever fever`` would load and then never fire."""
    lexer = FHIRPathLexer(InputStream(text))
    parser = FHIRPathParser(CommonTokenStream(lexer))
    for recognizer in (lexer, parser):
        recognizer.removeErrorListeners()
        recognizer.addErrorListener(_Refuse())
    try:
        parser.expression()
    except ValueError as exc:
        raise ContentError(f"{where}: '{text}' is not valid FHIRPath ({exc})") from None
    if parser.getTokenStream().LA(1) != Token.EOF:
        raise ContentError(f"{where}: '{text}' is not valid FHIRPath (text after the expression)")


def _strip_strings(text: str) -> str:
    return re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    if type(value).__module__.startswith("fhirpathpy"):
        return str(value)
    return value
