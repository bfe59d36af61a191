"""One answer to one question: read it as the item's type, then check the item's limits.

A value that cannot be an answer of that type at all (a list for a single answer, an object
for a number) is a bug in the caller: BadAnswer. A value a person could type by mistake (a
word in a number box, 1150 mm for MUAC, a date in the future) is an *invalid* answer: it is
kept so the screen can show it with the reason, and it blocks completion.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Any

from field_app.errors import BadAnswer
from field_app.forms.questionnaire import Item, Quantity, Value

# Linear factors to each unit's base, for quantity items offering more than one unit.
UNIT_FACTORS = {
    "mm": ("m", 0.001),
    "cm": ("m", 0.01),
    "m": ("m", 1.0),
    "g": ("kg", 0.001),
    "kg": ("kg", 1.0),
    "[lb_av]": ("kg", 0.45359237),
}


EARLIEST_YEAR = 1900


class Invalid(ValueError):
    """An answer a person could give by mistake; the message says what is expected."""


def read_answer(item: Item, raw: object) -> Value:
    """Read ``raw`` (a typed value or what a screen or JSON file holds) as ``item``'s type.

    Raises Invalid for a mistyped value, BadAnswer for a value of the wrong shape.
    """
    if isinstance(raw, list | tuple | dict) and item.type != "quantity":
        raise BadAnswer(f"{item.link_id}: one value expected here, not a list or an object")
    match item.type:
        case "boolean":
            return _boolean(raw)
        case "integer":
            return _integer(raw)
        case "decimal":
            return _decimal(raw)
        case "string" | "text":
            return _text(item, raw)
        case "date":
            return _date(raw)
        case "choice":
            return _choice(item, raw)
        case "quantity":
            return _quantity(item, raw)
    raise BadAnswer(f"{item.link_id}: a {item.type} item takes no answer")


def check_limits(item: Item, value: Value, today: date) -> None:
    """Raise Invalid if ``value`` breaks the item's min/max value or length.

    A quantity's limits are in the item's first (canonical) unit, whatever unit was given.
    """
    number = in_canonical_unit(item, value) if isinstance(value, Quantity) else value
    if isinstance(number, int | float | date) and not isinstance(number, bool):
        if item.min_value is not None and _below(number, item.min_value):
            raise Invalid(f"must be at least {_show(item.min_value)}")
        if item.max_value is not None and _below(item.max_value, number):
            raise Invalid(f"must be at most {_show(item.max_value)}")
    if isinstance(value, date) and item.max_value is None and value > today:
        raise Invalid("cannot be in the future")
    if isinstance(value, str) and item.type in ("string", "text"):
        if item.min_length is not None and len(value) < item.min_length:
            raise Invalid(f"must be at least {item.min_length} characters")
        if item.max_length is not None and len(value) > item.max_length:
            raise Invalid(f"must be at most {item.max_length} characters")


def in_canonical_unit(item: Item, quantity: Quantity) -> float:
    """The quantity's value in the item's first unit (the one rules compare against)."""
    canonical = item.units[0].code
    if quantity.unit == canonical:
        return quantity.value
    _, factor = UNIT_FACTORS[quantity.unit]
    _, canonical_factor = UNIT_FACTORS[canonical]
    return round(quantity.value * factor / canonical_factor, 6)


def _below(a: int | float | date, b: int | float | date) -> bool:
    if isinstance(a, date) != isinstance(b, date):
        raise BadAnswer("a date is compared with a number: check the item's limits")
    return a < b  # type: ignore[operator]


def _show(bound: int | float | date) -> str:
    return bound.isoformat() if isinstance(bound, date) else f"{bound:g}"


def _boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "yes", "false", "no"):
        return raw.strip().lower() in ("true", "yes")
    raise Invalid("must be yes or no")


def _integer(raw: object) -> int:
    if isinstance(raw, bool):
        raise Invalid("must be a whole number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"-?[0-9]{1,12}", raw.strip(), flags=re.ASCII):
        return int(raw.strip())
    raise Invalid("must be a whole number")


def _decimal(raw: object) -> float:
    if isinstance(raw, bool):
        raise Invalid("must be a number")
    if isinstance(raw, int | float):
        try:
            number = float(raw)
        except OverflowError:
            raise Invalid("must be a number") from None
    elif isinstance(raw, str):
        try:
            number = float(raw.strip().replace(",", "."))
        except ValueError:
            raise Invalid("must be a number") from None
    else:
        raise Invalid("must be a number")
    if not math.isfinite(number):
        raise Invalid("must be a number")
    return number


def _text(item: Item, raw: object) -> str:
    if not isinstance(raw, str):
        raise Invalid("must be text")
    text = raw.strip() if item.type == "string" else raw.strip("\n ")
    if not text:
        raise Invalid("must not be empty")
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise Invalid("must not contain control characters")
    return text


def _date(raw: object) -> date:
    day = None
    if isinstance(raw, datetime):
        day = raw.date()
    elif isinstance(raw, date):
        day = raw
    elif isinstance(raw, str):
        try:
            day = date.fromisoformat(raw.strip())
        except ValueError:
            day = None
    if day is None:
        raise Invalid("must be a date like 2026-03-31")
    # A year typed short (0202 for 2022) is a slip, not a date anyone was born or seen on.
    if day.year < EARLIEST_YEAR:
        raise Invalid(f"must be in {EARLIEST_YEAR} or later")
    return day


def _choice(item: Item, raw: object) -> str:
    if not isinstance(raw, str) or item.option(raw) is None:
        raise Invalid("is not one of the options")
    return raw


def _quantity(item: Item, raw: Any) -> Quantity:
    value: object
    unit: object
    if isinstance(raw, Quantity):
        value, unit = raw.value, raw.unit
    elif isinstance(raw, dict):
        value, unit = raw.get("value"), raw.get("unit", raw.get("code", item.units[0].code))
    else:
        value, unit = raw, item.units[0].code
    if not isinstance(unit, str) or unit not in {u.code for u in item.units}:
        raise Invalid(f"unit must be one of {', '.join(u.code for u in item.units)}")
    return Quantity(_decimal(value), str(unit))
