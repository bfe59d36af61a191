"""FHIR R4 Questionnaires: the parts of the resource the engine understands, parsed once.

A Questionnaire file is plain FHIR R4 JSON. The engine reads these elements of each item:
``linkId type text required repeats readOnly answerOption initial enableWhen enableBehavior
maxLength code item``, and these standard extensions:

- ``minValue`` / ``maxValue`` (integer, decimal, date) and ``minLength``;
- ``questionnaire-unitOption`` (the units a quantity may be given in; the first is canonical);
- SDC ``sdc-questionnaire-calculatedExpression`` (a FHIRPath expression, see expressions.py);
- SDC ``sdc-questionnaire-observationExtract`` (the answer becomes a coded Observation,
  using the item's LOINC ``code``);
- ``questionnaire-constraint`` (a FHIRPath check across answers, such as diastolic below
  systolic; when it is false the item's answer is invalid with the constraint's ``human`` text).

Anything else in the file is kept in the raw JSON but ignored by the engine; ``forms check``
refuses item types and extensions the engine would silently misread.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Literal

from field_app.errors import ContentError

ItemType = Literal[
    "group",
    "display",
    "boolean",
    "integer",
    "decimal",
    "string",
    "text",
    "date",
    "choice",
    "quantity",
]
QUESTION_TYPES = frozenset(
    {"boolean", "integer", "decimal", "string", "text", "date", "choice", "quantity"}
)
OPERATORS = frozenset({"exists", "=", "!=", ">", "<", ">=", "<="})

EXT = "http://hl7.org/fhir/StructureDefinition/"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
MIN_VALUE = EXT + "minValue"
MAX_VALUE = EXT + "maxValue"
MIN_LENGTH = EXT + "minLength"
UNIT_OPTION = EXT + "questionnaire-unitOption"
CALCULATED = SDC + "sdc-questionnaire-calculatedExpression"
OBSERVATION_EXTRACT = SDC + "sdc-questionnaire-observationExtract"
CONSTRAINT = EXT + "questionnaire-constraint"
KNOWN_EXTENSIONS = frozenset(
    {MIN_VALUE, MAX_VALUE, MIN_LENGTH, UNIT_OPTION, CALCULATED, OBSERVATION_EXTRACT, CONSTRAINT}
)
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class Coding:
    code: str
    display: str
    system: str | None = None


@dataclass(frozen=True)
class Quantity:
    """A quantity answer: a number and a UCUM unit code."""

    value: float
    unit: str


Value = bool | int | float | str | date | Quantity


@dataclass(frozen=True)
class Condition:
    """One ``enableWhen``: the question it reads, the operator and the value it compares."""

    question: str
    operator: str
    answer: Value


@dataclass(frozen=True)
class Item:
    link_id: str
    type: ItemType
    text: str
    required: bool = False
    repeats: bool = False
    read_only: bool = False
    options: tuple[Coding, ...] = ()
    units: tuple[Coding, ...] = ()
    initial: tuple[Value, ...] = ()
    enable_when: tuple[Condition, ...] = ()
    enable_behavior: Literal["all", "any"] = "all"
    min_value: int | float | date | None = None
    max_value: int | float | date | None = None
    min_length: int | None = None
    max_length: int | None = None
    calculated: str | None = None
    code: Coding | None = None
    extract: bool = False
    constraints: tuple[tuple[str, str], ...] = ()
    parent: str | None = None
    children: tuple[str, ...] = ()

    @property
    def is_question(self) -> bool:
        return self.type in QUESTION_TYPES

    def option(self, code: str) -> Coding | None:
        return next((o for o in self.options if o.code == code), None)


@dataclass(frozen=True)
class Questionnaire:
    """A parsed Questionnaire: its items in document order, keyed by linkId."""

    name: str
    url: str
    version: str
    title: str
    items: dict[str, Item]
    top: tuple[str, ...]

    @property
    def canonical(self) -> str:
        return f"{self.url}|{self.version}"


def parse_questionnaire(raw: object, *, source: str) -> Questionnaire:
    """Parse Questionnaire JSON. Raises ContentError naming ``source`` and the faulty place."""
    if not isinstance(raw, dict) or raw.get("resourceType") != "Questionnaire":
        raise ContentError(f"{source}: not a FHIR Questionnaire (resourceType)")
    for required in ("name", "url", "version"):
        if not isinstance(raw.get(required), str) or not raw[required]:
            raise ContentError(f"{source}: the Questionnaire needs a {required}")
    items: dict[str, Item] = {}
    top = tuple(_parse_items(raw.get("item", []), None, items, source))
    if not top:
        raise ContentError(f"{source}: the Questionnaire has no items")
    return Questionnaire(
        name=raw["name"],
        url=raw["url"],
        version=raw["version"],
        title=str(raw.get("title", raw["name"])),
        items=items,
        top=top,
    )


def _parse_items(raws: object, parent: str | None, into: dict[str, Item], source: str) -> list[str]:
    if not isinstance(raws, list):
        raise ContentError(f"{source}: 'item' must be a list (under {parent or 'the root'})")
    ids = []
    for raw in raws:
        where = f"{source}: item {raw.get('linkId', '?') if isinstance(raw, dict) else '?'}"
        if not isinstance(raw, dict):
            raise ContentError(f"{where}: an item must be an object")
        try:
            item = _parse_item(raw, parent)
        except (KeyError, TypeError, ValueError) as exc:
            raise ContentError(f"{where}: {_reason(exc)}") from None
        if item.link_id in into:
            raise ContentError(f"{where}: linkId is used twice")
        into[item.link_id] = item
        ids.append(item.link_id)
        children = tuple(_parse_items(raw.get("item", []), item.link_id, into, source))
        into[item.link_id] = replace(item, children=children)
    return ids


def _parse_item(raw: dict[str, Any], parent: str | None) -> Item:
    item_type = raw["type"]
    if item_type not in QUESTION_TYPES | {"group", "display"}:
        raise ValueError(f"type {item_type!r} is not supported by the engine")
    extensions = {e["url"]: e for e in raw.get("extension", [])}
    unknown = set(extensions) - KNOWN_EXTENSIONS
    if unknown:
        raise ValueError(f"unsupported extension {sorted(unknown)[0]}")
    if raw.get("repeats") and item_type == "group":
        raise ValueError("repeating groups are not supported; repeat the questions instead")
    options = tuple(_coding(o["valueCoding"]) for o in raw.get("answerOption", []))
    units = tuple(
        _coding(e["valueCoding"]) for e in raw.get("extension", []) if e["url"] == UNIT_OPTION
    )
    if len(raw.get("enableWhen", [])) > 1 and "enableBehavior" not in raw:
        raise ValueError("enableBehavior is required when there is more than one enableWhen")
    item = Item(
        link_id=str(raw["linkId"]),
        type=item_type,
        text=str(raw.get("text", "")),
        required=bool(raw.get("required", False)),
        repeats=bool(raw.get("repeats", False)),
        read_only=bool(raw.get("readOnly", False)),
        options=options,
        units=units,
        initial=tuple(_typed_value(v) for v in raw.get("initial", [])),
        enable_when=tuple(_condition(c) for c in raw.get("enableWhen", [])),
        enable_behavior=raw.get("enableBehavior", "all"),
        min_value=_bound(extensions.get(MIN_VALUE)),
        max_value=_bound(extensions.get(MAX_VALUE)),
        min_length=_int_ext(extensions.get(MIN_LENGTH)),
        max_length=raw.get("maxLength"),
        calculated=_expression(extensions.get(CALCULATED)),
        code=_loinc(raw.get("code", [])),
        extract=bool(extensions.get(OBSERVATION_EXTRACT, {}).get("valueBoolean", False)),
        constraints=tuple(
            _constraint(e) for e in raw.get("extension", []) if e["url"] == CONSTRAINT
        ),
        parent=parent,
    )
    if item.enable_behavior not in ("all", "any"):
        raise ValueError("enableBehavior must be 'all' or 'any'")
    if item_type == "choice" and not options:
        raise ValueError("a choice item needs answerOption codings")
    if item_type == "quantity" and not units:
        raise ValueError("a quantity item needs at least one questionnaire-unitOption")
    return item


def _coding(raw: dict[str, Any]) -> Coding:
    return Coding(
        code=str(raw["code"]),
        display=str(raw.get("display", raw["code"])),
        system=raw.get("system"),
    )


def _condition(raw: dict[str, Any]) -> Condition:
    operator = raw["operator"]
    if operator not in OPERATORS:
        raise ValueError(f"enableWhen operator {operator!r} is not a FHIR R4 operator")
    answers = [k for k in raw if k.startswith("answer")]
    if len(answers) != 1:
        raise ValueError("each enableWhen needs exactly one answer[x]")
    return Condition(
        question=str(raw["question"]),
        operator=operator,
        answer=_answer_x(answers[0], raw[answers[0]]),
    )


def _answer_x(key: str, value: Any) -> Value:
    kind = key.removeprefix("answer").removeprefix("value")
    if kind == "Boolean":
        return bool(value)
    if kind == "Integer":
        return int(value)
    if kind == "Decimal":
        return float(value)
    if kind == "Date":
        return date.fromisoformat(value)
    if kind == "String":
        return str(value)
    if kind == "Coding":
        return str(value["code"])
    if kind == "Quantity":
        return Quantity(float(value["value"]), str(value["code"]))
    raise ValueError(f"{key} is not supported")


def _typed_value(raw: dict[str, Any]) -> Value:
    """The one ``value[x]`` of an ``initial`` or an extension."""
    keys = [k for k in raw if k.startswith("value")]
    if len(keys) != 1:
        raise ValueError("each initial and each limit needs exactly one value[x]")
    return _answer_x(keys[0], raw[keys[0]])


def _bound(ext: dict[str, Any] | None) -> int | float | date | None:
    if ext is None:
        return None
    value = _typed_value(ext)
    if isinstance(value, bool) or not isinstance(value, int | float | date):
        raise TypeError("minValue and maxValue must be integer, decimal or date")
    return value


def _int_ext(ext: dict[str, Any] | None) -> int | None:
    return None if ext is None else int(ext["valueInteger"])


def _expression(ext: dict[str, Any] | None) -> str | None:
    if ext is None:
        return None
    expression = ext["valueExpression"]
    if expression.get("language") != "text/fhirpath":
        raise ValueError("calculatedExpression must be text/fhirpath")
    return str(expression["expression"])


def _constraint(ext: dict[str, Any]) -> tuple[str, str]:
    """(FHIRPath expression, the message shown when it is false)."""
    parts = {e["url"]: e for e in ext["extension"]}
    return str(parts["expression"]["valueString"]), str(parts["human"]["valueString"])


def _loinc(codes: list[dict[str, Any]]) -> Coding | None:
    return next((_coding(c) for c in codes if c.get("system") == LOINC), None)


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]}"
    return str(exc)
