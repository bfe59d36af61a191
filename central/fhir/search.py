"""FHIR R4 search: a query string parsed into SQL over the index tables, run a page at a time,
with ``_include``/``_revinclude``, and the ``searchset`` Bundle it answers with.

Each parameter is a condition on an index table keyed by (rtype, param, value), which the query
uses in one of two ways: as the list of ids it starts from (the index by value, then
``resources`` by primary key), or as a probe of each row (``EXISTS (... WHERE x.rtype =
r.rtype AND x.id = r.id ...)``, the index by owner). PostgreSQL gets every parameter as a list
(``r.id IN (SELECT id ...)``), turns each into a semi-join and orders them from its statistics.
SQLite plans from guesses unless ANALYZE has run, and would build the whole list of every
``IN`` (tens of thousands of ids for a common code) or walk ``resources`` in sort order for a
patient's few encounters; so on SQLite each parameter's matches are first counted up to
``ESTIMATE_LIMIT``, the query starts from the fewest if they are few (a patient's encounters),
and otherwise walks ``resources`` in sort order probing each row until the page is full (every
vital-sign observation, newest first), with the join order and indexes stated in the SQL.
Values of one parameter separated by commas are ORed; a repeated parameter is ANDed. Deleted
resources never match, and a caller that does not see every region sees only its own region's
resources, included ones too.

Paging is by keyset, not offset: a page is ``ORDER BY <sort keys>, id LIMIT n+1``, and its
cursor names the last resource and its version (``{"id", "v"}``, URL-safe base64 of JSON).
The next page recomputes that version's sort keys from ``history`` and continues strictly after
them, so resources created or deleted between page requests make no other resource be skipped
or repeated (one updated in between moves to where its new sort keys put it), and the cursor
carries no clinical value (a birth date sort key stays in the database).

Choices where FHIR leaves the server free:
- empty values (``name=``) are ignored, as are ``_format`` and ``_pretty`` (the response's
  business, not the search's);
- ``_count`` above the largest page is served as the largest page; ``_total=estimate`` is
  counted exactly; ``_summary=count`` is ``_count=0&_total=accurate``;
- ``ap`` widens the value's range by 10% of its distance from ``now`` on each side (no widening
  when ``now`` is not given); a time without a zone is UTC;
- sorting by a date parameter uses a resource's earliest start ascending and its latest start
  descending; resources without the parameter come last either way;
- token ``:not`` with several values matches resources that have none of them (or no value);
  ``:text`` is a starts-with search of CodeableConcept.text and Coding.display;
- resources of a type the caller's scopes do not let it read are left out of ``_include``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

import msgspec

from central.callers import Caller
from central.database import Dialect, Session
from central.errors import InvalidSearch
from central.fhir.parameters import (
    FIRST_INSTANT,
    LAST_INSTANT,
    PARAMETERS,
    SearchParam,
    as_instant,
    date_range,
    index_rows,
    indexed,
    normalise,
    relative_reference,
)

Total = Literal["none", "estimate", "accurate"]

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MAX_VALUES = 1000  # comma-separated values in one parameter
ESTIMATE_LIMIT = 5000  # matches of one parameter counted before choosing where a query starts
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_\-.:]{1,64}")
_IGNORED = frozenset(("_format", "_pretty"))
_MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset(("", "not", "text", "missing")),
    "string": frozenset(("", "exact", "contains", "missing")),
    "date": frozenset(("", "missing")),
    "reference": frozenset(("", "missing", "identifier")),
}
_TABLES = {
    "token": "search_token",
    "string": "search_string",
    "date": "search_date",
    "reference": "search_reference",
}
_MISSING_LAST = {False: "~", True: ""}  # after every instant ascending, before every descending


@dataclass(frozen=True)
class Fragment:
    """A piece of SQL and the arguments of its ``?`` placeholders, in order."""

    sql: str
    args: tuple[object, ...] = ()


@dataclass(frozen=True)
class Criterion:
    """One parameter's condition. On an index table: ``condition`` on the value columns of its
    rows for ``param`` (``negated``: the resource has no such row). On ``resources`` itself
    (``table`` None): ``condition`` on the row ``r``, with ``ids`` when it lists ids (``_id``)."""

    condition: Fragment
    table: str | None = None
    param: str = ""
    negated: bool = False
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SortKey:
    name: str  # _lastUpdated, _id or a date parameter
    descending: bool


@dataclass(frozen=True)
class Include:
    source: str  # the type whose reference parameter is followed
    param: str
    target: str | None  # only references to this type (``Encounter:subject:Patient``)


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: its last resource, in the version it had then."""

    id: str
    version: int


@dataclass(frozen=True)
class SearchQuery:
    resource_type: str
    where: tuple[Criterion, ...]
    sort: tuple[SortKey, ...]
    count: int
    total: Total
    includes: tuple[Include, ...]
    revincludes: tuple[Include, ...]
    cursor: Cursor | None
    params: tuple[tuple[str, str], ...]  # the parameters that took effect, for the links
    ignored: tuple[str, ...]  # names left out under lenient handling


@dataclass(frozen=True)
class SearchPage:
    resources: list[dict[str, Any]]
    included: list[dict[str, Any]]
    total: int | None
    next_cursor: str | None


# -- parsing --------------------------------------------------------------------------------------


def parse(
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    page_size: int,
    max_page_size: int,
    lenient: bool = False,
    base_url: str = "",
    now: datetime | None = None,
) -> SearchQuery:
    """The search that ``params`` (decoded name/value pairs, in order) ask of
    ``resource_type``. Unknown or unsupported parameters raise InvalidSearch, or are left out
    (listed in ``ignored``) when ``lenient`` (``Prefer: handling=lenient``). ``base_url`` is
    central's FHIR base, for references written as absolute URLs; ``now`` is for ``ap``.
    Raises InvalidSearch naming the parameter (never repeating its value)."""
    known = PARAMETERS.get(resource_type)
    if known is None:
        raise InvalidSearch("this resource type cannot be searched")
    builder = _Builder(resource_type, known, lenient, base_url, now)
    for name, value in params:
        builder.add(name, value)
    return builder.build(page_size=page_size, max_page_size=max_page_size)


class _Builder:
    """Collects a query parameter by parameter."""

    def __init__(
        self,
        resource_type: str,
        known: dict[str, SearchParam],
        lenient: bool,
        base_url: str,
        now: datetime | None,
    ) -> None:
        self.resource_type = resource_type
        self.known = known
        self.lenient = lenient
        self.base_url = base_url
        self.now = now
        self.where: list[Criterion] = []
        self.sort: tuple[SortKey, ...] = (SortKey("_lastUpdated", descending=False),)
        self.count: int | None = None
        self.total: Total = "none"
        self.summary_count = False
        self.includes: list[Include] = []
        self.revincludes: list[Include] = []
        self.cursor: Cursor | None = None
        self.params: list[tuple[str, str]] = []
        self.ignored: list[str] = []

    def add(self, name: str, value: str) -> None:
        base, _, modifier = name.partition(":")
        if name in _IGNORED or (value == "" and name != "_cursor"):
            return
        if base.startswith("_") and base not in ("_id", "_lastUpdated", "_tag", "_security"):
            self._result_parameter(name, base, modifier, value)
            return
        param = self.known.get(base)
        if param is None:
            self._unsupported(name, "is not a search parameter of this resource type")
            return
        if not _modifier_allowed(param, modifier):
            self._unsupported(name, "has a modifier central does not support here")
            return
        criterion = self._criterion(param, modifier, value)
        if criterion is not None:  # None: only commas, no value
            self.where.append(criterion)
            self.params.append((name, value))

    def _result_parameter(self, name: str, base: str, modifier: str, value: str) -> None:
        if modifier and base not in ("_include", "_revinclude"):
            self._unsupported(name, "takes no modifier")
            return
        if modifier:
            self._unsupported(name, "is supported without :iterate only")
            return
        if base == "_cursor":
            self.cursor = _decode_cursor(value)
            return
        if base == "_count":
            self.count = _parse_count(value)
        elif base == "_sort":
            self.sort = _parse_sort(value, self.known)
        elif base == "_total":
            self.total = _parse_total(value)
        elif base == "_summary":
            self.summary_count = _parse_summary(value)
        elif base == "_include":
            self.includes.append(_parse_include(value, self.resource_type))
        elif base == "_revinclude":
            self.revincludes.append(_parse_revinclude(value, self.resource_type))
        else:
            self._unsupported(name, "is not supported by central")
            return
        self.params.append((name, value))

    def _unsupported(self, name: str, why: str) -> None:
        if not self.lenient:
            raise InvalidSearch(f"{_shown(name)}: {why}")
        self.ignored.append(name)

    def _criterion(self, param: SearchParam, modifier: str, value: str) -> Criterion | None:
        if modifier == "missing":
            return _missing(param, value)
        escaped = _or_values(param.name, value)
        if not escaped:
            return None
        if param.type == "token" and modifier != "text" and param.name != "_id":
            return _token_clause(param, modifier, escaped)
        values = [_unescape(v) for v in escaped]
        if param.name == "_id":
            return _id_clause(values)
        if param.type == "token":
            return _string_clause(f"{param.name}:text", "", values)
        if param.type == "string":
            return _string_clause(param.name, modifier, values)
        if param.type == "date":
            return _date_clause(param.name, values, self.now)
        return _reference_clause(param, modifier, values, self.base_url)

    def build(self, *, page_size: int, max_page_size: int) -> SearchQuery:
        count = page_size if self.count is None else self.count
        total = self.total
        if self.summary_count:
            count, total = 0, "accurate"
        return SearchQuery(
            resource_type=self.resource_type,
            where=tuple(self.where),
            sort=self.sort,
            count=min(count, max_page_size),
            total=total,
            includes=tuple(self.includes),
            revincludes=tuple(self.revincludes),
            cursor=self.cursor,
            params=tuple(self.params),
            ignored=tuple(self.ignored),
        )


def _shown(name: str) -> str:
    """A parameter name fit for an error message: as sent if it looks like a name at all."""
    return name if _SAFE_NAME.fullmatch(name) else "a parameter"


def _modifier_allowed(param: SearchParam, modifier: str) -> bool:
    if param.name in ("_id", "_lastUpdated"):
        return modifier == ""
    if param.type == "reference" and _TYPE.fullmatch(modifier):
        return not param.targets or modifier in param.targets
    return modifier in _MODIFIERS[param.type]


def _or_values(name: str, value: str) -> list[str]:
    """The comma-separated values of one parameter, their escapes kept."""
    values = [v for v in _split(value, ",") if v != ""]
    if len(values) > MAX_VALUES:
        raise InvalidSearch(f"{name}: at most {MAX_VALUES} values separated by commas")
    return values


def _split(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` not escaped with a backslash (escapes kept)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if char == separator and not escaped:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
        escaped = char == "\\" and not escaped
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", text)


# -- result parameters ----------------------------------------------------------------------------


def _parse_count(value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise InvalidSearch("_count: must be a whole number, 0 or more")
    return int(value)


def _parse_sort(value: str, known: dict[str, SearchParam]) -> tuple[SortKey, ...]:
    keys = []
    for item in value.split(","):
        name = item.removeprefix("-")
        param = known.get(name)
        if param is None or (param.type != "date" and name != "_id"):
            raise InvalidSearch("_sort: central sorts by _lastUpdated, _id or a date parameter")
        keys.append(SortKey(name, descending=item.startswith("-")))
    return tuple(keys)


def _parse_total(value: str) -> Total:
    if value == "none":
        return "none"
    if value == "estimate":
        return "estimate"
    if value == "accurate":
        return "accurate"
    raise InvalidSearch("_total: must be none, estimate or accurate")


def _parse_summary(value: str) -> bool:
    if value not in ("count", "false"):
        raise InvalidSearch("_summary: central supports count (and false) only")
    return value == "count"


def _parse_include(value: str, resource_type: str) -> Include:
    found = _include_parts(value, "_include")
    if found.source != resource_type:
        raise InvalidSearch("_include: must start with the type searched")
    return found


def _parse_revinclude(value: str, resource_type: str) -> Include:
    found = _include_parts(value, "_revinclude")
    targets = PARAMETERS[found.source][found.param].targets
    if targets and resource_type not in targets:
        raise InvalidSearch("_revinclude: that parameter does not refer to the type searched")
    return found


def _include_parts(value: str, name: str) -> Include:
    source, _, rest = value.partition(":")
    param_name, _, target = rest.partition(":")
    param = PARAMETERS.get(source, {}).get(param_name)
    if param is None or param.type != "reference":
        raise InvalidSearch(f"{name}: give Type:parameter with a reference parameter of Type")
    if target and not (_TYPE.fullmatch(target) and (not param.targets or target in param.targets)):
        raise InvalidSearch(f"{name}: the target type is not one the parameter refers to")
    return Include(source, param_name, target or None)


# -- criteria -------------------------------------------------------------------------------------


def _present(table: str, param: str, condition: Fragment) -> Criterion:
    return Criterion(condition, table, param)


def _absent(table: str, param: str, condition: Fragment = Fragment("1 = 1")) -> Criterion:
    return Criterion(condition, table, param, negated=True)


def _any_of(conditions: list[Fragment]) -> Fragment:
    return Fragment(
        " OR ".join(f"({c.sql})" for c in conditions),
        tuple(arg for c in conditions for arg in c.args),
    )


def _missing(param: SearchParam, value: str) -> Criterion:
    if value not in ("true", "false"):
        raise InvalidSearch(f"{param.name}:missing: must be true or false")
    table = _TABLES[param.type]
    if value == "true":
        return _absent(table, param.name)
    return _present(table, param.name, Fragment("1 = 1"))


def _id_clause(values: list[str]) -> Criterion:
    return Criterion(Fragment(f"r.id IN ({_marks(values)})", tuple(values)), ids=tuple(values))


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def _token_clause(param: SearchParam, modifier: str, values: list[str]) -> Criterion:
    """``values`` still escaped: a ``\\|`` is part of a code, not the system's end."""
    condition = _any_of([_token_condition(param.name, value) for value in values])
    if modifier == "not":
        return _absent("search_token", param.name, condition)
    return _present("search_token", param.name, condition)


def _token_condition(name: str, value: str) -> Fragment:
    parts = _split(value, "|")
    if len(parts) == 1:
        return Fragment("code = ?", (indexed(_unescape(value)),))
    if len(parts) != 2:
        raise InvalidSearch(f"{name}: give code, system|code, |code or system|")
    system, code = (indexed(_unescape(p)) for p in parts)
    if code == "":
        return Fragment("system = ?", (system,))
    return Fragment("code = ? AND system = ?", (code, system))


def _string_clause(name: str, modifier: str, values: list[str]) -> Criterion:
    if modifier == "exact":
        exact = [Fragment("value = ?", (indexed(v),)) for v in values]
        return _present("search_string", f"{name}:exact", _any_of(exact))
    conditions = [
        _contains(normalise(v)) if modifier == "contains" else _starts_with(normalise(v))
        for v in values
    ]
    return _present("search_string", name, _any_of(conditions))


def _starts_with(prefix: str) -> Fragment:
    """Every value beginning with ``prefix``, as an index range: the values from ``prefix`` up
    to (not including) the first string past all its continuations (text order is code point
    order: SQLite's BINARY and PostgreSQL's "C" collation)."""
    upper = _past_prefix(prefix)
    if upper is None:
        return Fragment("value >= ?", (prefix,))
    return Fragment("value >= ? AND value < ?", (prefix, upper))


def _past_prefix(prefix: str) -> str | None:
    while prefix:
        last = ord(prefix[-1]) + 1
        if 0xD800 <= last <= 0xDFFF:
            last = 0xE000  # surrogates cannot be stored
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def _contains(text: str) -> Fragment:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return Fragment("value LIKE ? ESCAPE '\\'", (f"%{escaped}%",))


def _date_clause(name: str, values: list[str], now: datetime | None) -> Criterion:
    if name == "_lastUpdated":
        conditions = [
            _date_condition(name, v, now, "r.last_updated", "r.last_updated") for v in values
        ]
        return Criterion(_any_of(conditions))
    conditions = [_date_condition(name, v, now, "low", "high") for v in values]
    return _present("search_date", name, _any_of(conditions))


def _date_condition(name: str, value: str, now: datetime | None, low: str, high: str) -> Fragment:
    """R4's range comparison of a target [low, high] with the search value's range [sl, sh]."""
    prefix = value[:2] if value[:2] in PREFIXES else "eq"
    text = value[2:] if value[:2] in PREFIXES else value
    found = date_range(text.replace(" ", "+"))  # an unencoded '+' in a zone arrives as a space
    if found is None:
        raise InvalidSearch(f"{name}: give a date as [prefix]YYYY[-MM[-DD[Thh:mm[:ss][Z|+hh:mm]]]]")
    sl, sh = found
    if prefix == "ap":
        sl, sh = _widened(sl, sh, now)
    comparisons = {
        "eq": (f"{low} >= ? AND {low} <= ? AND {high} <= ?", (sl, sh, sh)),
        "ne": (f"{low} < ? OR {high} > ?", (sl, sh)),
        "gt": (f"{high} > ?", (sh,)),
        "lt": (f"{low} < ?", (sl,)),
        "ge": (f"{high} > ? OR {low} >= ?", (sh, sl)),
        "le": (f"{low} < ? OR {high} <= ?", (sl, sh)),
        "sa": (f"{low} > ?", (sh,)),
        "eb": (f"{high} < ?", (sl,)),
        "ap": (f"{low} <= ? AND {high} >= ?", (sh, sl)),
    }
    sql, args = comparisons[prefix]
    return Fragment(sql, args)


def _widened(low: str, high: str, now: datetime | None) -> tuple[str, str]:
    if now is None:
        return low, high
    margin = abs(now - _moment(low)) / 10
    return _shifted(low, -margin), _shifted(high, margin)


def _shifted(instant: str, by: timedelta) -> str:
    try:
        return as_instant(_moment(instant) + by)
    except OverflowError:
        return FIRST_INSTANT if by < timedelta(0) else LAST_INSTANT


def _moment(instant: str) -> datetime:
    return datetime.fromisoformat(instant.removesuffix("Z")).replace(tzinfo=UTC)


def _reference_clause(
    param: SearchParam, modifier: str, values: list[str], base_url: str
) -> Criterion:
    if modifier == "identifier":
        condition = _any_of([_token_condition(param.name, v) for v in values])
        return _present("search_token", f"{param.name}:identifier", condition)
    targets = [t for v in values for t in _reference_targets(param, modifier, v, base_url)]
    return _present(
        "search_reference",
        param.name,
        Fragment(f"target IN ({_marks(targets)})", tuple(targets)),
    )


def _reference_targets(param: SearchParam, modifier: str, value: str, base_url: str) -> list[str]:
    relative = relative_reference(value, base_url)
    if modifier:
        if relative is not None and relative.partition("/")[0] != modifier:
            raise InvalidSearch(f"{param.name}:{modifier}: the reference names another type")
        if relative is None and not _ID.fullmatch(value):
            raise InvalidSearch(f"{param.name}:{modifier}: give an id or {modifier}/id")
        return [relative or f"{modifier}/{value}"]
    if relative is not None:
        return [relative]
    if ":" in value:  # an absolute URL elsewhere, or a canonical: compared as written
        return [indexed(value)]
    if not _ID.fullmatch(value):
        raise InvalidSearch(f"{param.name}: give a reference as Type/id, an id or a URL")
    if not param.targets:
        raise InvalidSearch(f"{param.name}: this parameter refers to any type; give Type/id")
    return [f"{kind}/{value}" for kind in param.targets]


# -- the cursor -----------------------------------------------------------------------------------


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps({"id": cursor.id, "v": cursor.version}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(text: str) -> Cursor:
    invalid = InvalidSearch("_cursor: not a cursor central gave; start the search again")
    if len(text) > 200:
        raise invalid
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise invalid from None
    if not isinstance(data, dict) or set(data) != {"id", "v"}:
        raise invalid
    rid, version = data["id"], data["v"]
    if not isinstance(rid, str) or not _ID.fullmatch(rid):
        raise invalid
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise invalid
    return Cursor(rid, version)


# -- running --------------------------------------------------------------------------------------


def execute(session: Session, query: SearchQuery, caller: Caller) -> SearchPage:
    """One page of ``query``'s results that ``caller`` may see, with what it includes. Raises
    InvalidSearch for a cursor that names no version this caller could have paged past."""
    plan = _plan(session, query)
    if plan is None:  # a parameter matches nothing at all
        return SearchPage([], [], None if query.total == "none" else 0, None)
    source, where = plan
    where = _scope(query, caller) + where
    total = None if query.total == "none" else _count(session, source, where)
    if query.count == 0:
        return SearchPage([], [], total, None)
    keys = _sort_keys(query, session.dialect)
    if query.cursor is not None:
        where.append(_after(keys, _anchor(session, query, caller, query.cursor)))
    rows = session.execute(*_page_sql(keys, source, where, query.count + 1))
    more = len(rows) > query.count
    rows = rows[: query.count]
    resources = [_decode(row[2]) for row in rows]
    next_cursor = encode_cursor(Cursor(rows[-1][0], int(rows[-1][1]))) if more else None
    included = _included(session, query, caller, resources)
    return SearchPage(resources, included, total, next_cursor)


def _plan(session: Session, query: SearchQuery) -> tuple[Fragment, list[Fragment]] | None:
    """Where the query starts (its FROM) and the conditions of its criteria; None if a
    criterion matches nothing. PostgreSQL: every criterion as a list of ids, for its planner to
    order. SQLite: the criterion with the fewest matches, if fewer than ESTIMATE_LIMIT, as the
    list the query starts from, joined to ``resources`` in that order (``CROSS JOIN`` keeps
    SQLite from reordering it), and every other criterion as a probe of each row."""
    rtype, criteria = query.resource_type, query.where
    if session.dialect == "postgresql":
        return Fragment("resources r"), [_listed(c, rtype) for c in criteria]
    start: tuple[Criterion, Fragment] | None = None
    fewest = ESTIMATE_LIMIT
    for criterion in criteria:
        sample = _sample(criterion, rtype)
        if sample is None:
            continue
        found = _bounded_count(session, sample, fewest)
        if found == 0:
            return None
        if found < fewest:
            start, fewest = (criterion, sample), found
    if start is None:
        return Fragment("resources r"), [_probe(c, session.dialect) for c in criteria]
    first, sample = start
    # OFFSET keeps SQLite from flattening the list into its DISTINCT, which it would then read
    # from the index by owner (ids in order, so no sorting) over every row of the type.
    source = Fragment(
        f"(SELECT DISTINCT id FROM ({sample.sql} LIMIT -1 OFFSET 0) AS s) AS d "
        "CROSS JOIN resources r",
        sample.args,
    )
    probes = [_probe(c, session.dialect) for c in criteria if c is not first]
    return source, [Fragment("r.id = d.id"), *probes]


def _sample(criterion: Criterion, rtype: str) -> Fragment | None:
    """The ids a criterion matches, as a query; None for one that cannot list them."""
    if criterion.ids:
        return Fragment(
            f"SELECT id FROM resources WHERE rtype = ? AND id IN ({_marks(criterion.ids)})",
            (rtype, *criterion.ids),
        )
    if criterion.table is None or criterion.negated:
        return None
    return Fragment(
        f"SELECT id FROM {criterion.table} WHERE rtype = ? AND param = ? "
        f"AND ({criterion.condition.sql})",
        (rtype, criterion.param, *criterion.condition.args),
    )


def _listed(criterion: Criterion, rtype: str) -> Fragment:
    sample = _sample(criterion, rtype)
    if sample is None or criterion.table is None:
        return _probe(criterion, "postgresql")
    return Fragment(f"r.id IN ({sample.sql})", sample.args)


def _probe(criterion: Criterion, dialect: Dialect) -> Fragment:
    """The criterion tested on the row ``r``: its index rows found by owner."""
    if criterion.table is None:
        return criterion.condition
    table = criterion.table
    return Fragment(
        f"{'NOT ' if criterion.negated else ''}EXISTS (SELECT 1 FROM {table} x"
        f"{_by_owner(table, dialect)} WHERE x.rtype = r.rtype AND x.id = r.id AND x.param = ? "
        f"AND ({criterion.condition.sql}))",
        (criterion.param, *criterion.condition.args),
    )


def _by_owner(table: str, dialect: Dialect) -> str:
    """SQLite's hint to look an index table up by owner: without statistics its planner would
    take the value index, which has more columns, and scan all of a parameter's rows."""
    return f" INDEXED BY {table}_owner" if dialect == "sqlite" else ""


def _bounded_count(session: Session, sample: Fragment, limit: int) -> int:
    rows = session.execute(
        f"SELECT COUNT(*) FROM ({sample.sql} LIMIT ?) AS sample", (*sample.args, limit)
    )
    return int(rows[0][0])


def _scope(query: SearchQuery, caller: Caller) -> list[Fragment]:
    scope = [Fragment("r.rtype = ?", (query.resource_type,)), Fragment("r.deleted = 0")]
    if not caller.sees_all_regions:
        scope.append(Fragment("r.region = ?", (caller.region,)))
    return scope


def _count(session: Session, source: Fragment, where: list[Fragment]) -> int:
    condition = _all_of(where)
    rows = session.execute(
        f"SELECT COUNT(*) FROM {source.sql} WHERE {condition.sql}",
        (*source.args, *condition.args),
    )
    return int(rows[0][0])


def _all_of(fragments: list[Fragment]) -> Fragment:
    return Fragment(
        " AND ".join(f"({f.sql})" for f in fragments),
        tuple(arg for f in fragments for arg in f.args),
    )


def _sort_keys(query: SearchQuery, dialect: Dialect) -> list[tuple[Fragment, bool]]:
    """(expression, descending) of every sort key, the id last unless a key already is."""
    keys = [(_sort_expression(key, dialect), key.descending) for key in query.sort]
    if all(key.name != "_id" for key in query.sort):
        keys.append((Fragment("r.id"), query.sort[-1].descending))
    return keys


def _sort_expression(key: SortKey, dialect: Dialect) -> Fragment:
    if key.name == "_lastUpdated":
        return Fragment("r.last_updated")
    if key.name == "_id":
        return Fragment("r.id")
    pick = "MAX" if key.descending else "MIN"
    return Fragment(
        f"COALESCE((SELECT {pick}(x.low) FROM search_date x{_by_owner('search_date', dialect)} "
        "WHERE x.rtype = r.rtype "
        f"AND x.id = r.id AND x.param = ?), '{_MISSING_LAST[key.descending]}')",
        (key.name,),
    )


def _page_sql(
    keys: list[tuple[Fragment, bool]], source: Fragment, where: list[Fragment], limit: int
) -> tuple[str, tuple[object, ...]]:
    selected = ", ".join(f"{expression.sql} AS k{i}" for i, (expression, _) in enumerate(keys))
    order = ", ".join(f"k{i}{' DESC' if desc else ''}" for i, (_, desc) in enumerate(keys))
    condition = _all_of(where)
    sql = (
        f"SELECT r.id, r.version, r.content, {selected} FROM {source.sql} "
        f"WHERE {condition.sql} ORDER BY {order} LIMIT ?"
    )
    select_args = tuple(arg for expression, _ in keys for arg in expression.args)
    return sql, (*select_args, *source.args, *condition.args, limit)


def _after(keys: list[tuple[Fragment, bool]], values: list[str]) -> Fragment:
    """Rows strictly after ``values`` in the order of ``keys``, with the first key's bound
    written on its own too so that an index on it can start there."""
    (first, descending), value = keys[0], values[0]
    bound = Fragment(f"{first.sql} {'<=' if descending else '>='} ?", (*first.args, value))
    return _all_of([bound, _strictly_after(keys, values)])


def _strictly_after(keys: list[tuple[Fragment, bool]], values: list[str]) -> Fragment:
    (expression, descending), value = keys[0], values[0]
    beyond = Fragment(f"{expression.sql} {'<' if descending else '>'} ?", (*expression.args, value))
    if len(keys) == 1:
        return beyond
    rest = _strictly_after(keys[1:], values[1:])
    return Fragment(
        f"{beyond.sql} OR ({expression.sql} = ? AND ({rest.sql}))",
        (*beyond.args, *expression.args, value, *rest.args),
    )


def _anchor(session: Session, query: SearchQuery, caller: Caller, cursor: Cursor) -> list[str]:
    """The sort keys the cursor's resource had in the version the previous page ended on."""
    rows = session.execute(
        "SELECT last_updated, region, content FROM history WHERE rtype = ? AND id = ? AND version = ?",
        (query.resource_type, cursor.id, cursor.version),
    )
    if (
        not rows
        or rows[0][2] is None
        or not (caller.sees_all_regions or rows[0][1] == caller.region)
    ):
        raise InvalidSearch("_cursor: not a cursor central gave; start the search again")
    last_updated, _, content = rows[0]
    dates = index_rows(_decode(content)).date
    values = []
    for key in query.sort:
        if key.name == "_lastUpdated":
            values.append(str(last_updated))
        elif key.name == "_id":
            values.append(cursor.id)
        else:
            lows = [low for name, low, _ in dates if name == key.name]
            pick = max if key.descending else min
            values.append(pick(lows) if lows else _MISSING_LAST[key.descending])
    if all(key.name != "_id" for key in query.sort):
        values.append(cursor.id)
    return values


def _decode(content: object) -> dict[str, Any]:
    found: dict[str, Any] = msgspec.json.decode(str(content))
    return found


# -- _include and _revinclude ---------------------------------------------------------------------


def _included(
    session: Session, query: SearchQuery, caller: Caller, matches: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    if not matches or not (query.includes or query.revincludes):
        return []
    ids = [str(m["id"]) for m in matches]
    wanted: dict[tuple[str, str], None] = {}
    for include in query.includes:
        wanted.update(dict.fromkeys(_included_targets(session, include, ids)))
    references = [f"{query.resource_type}/{rid}" for rid in ids]
    for include in query.revincludes:
        rows = session.execute(
            f"SELECT DISTINCT id FROM search_reference WHERE rtype = ? AND param = ? "
            f"AND target IN ({_marks(references)})",
            (include.source, include.param, *references),
        )
        wanted.update(dict.fromkeys(sorted((include.source, str(row[0])) for row in rows)))
    for rid in ids:
        wanted.pop((query.resource_type, rid), None)
    return _load(session, caller, list(wanted))


def _included_targets(session: Session, include: Include, ids: list[str]) -> list[tuple[str, str]]:
    by_owner = _by_owner("search_reference", session.dialect)
    rows = session.execute(
        f"SELECT DISTINCT target FROM search_reference{by_owner} WHERE rtype = ? AND param = ? "
        f"AND id IN ({_marks(ids)})",
        (include.source, include.param, *ids),
    )
    found = []
    for (target,) in rows:
        relative = relative_reference(str(target))
        kind, _, rid = (relative or "").partition("/")
        if relative is not None and include.target in (None, kind):
            found.append((kind, rid))
    return sorted(found)


def _load(session: Session, caller: Caller, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The live resources among ``keys`` that ``caller`` may read, in the order given."""
    by_type: dict[str, list[str]] = {}
    for kind, rid in keys:
        if caller.may("read", kind):
            by_type.setdefault(kind, []).append(rid)
    loaded: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, ids in by_type.items():
        region = "" if caller.sees_all_regions else " AND region = ?"
        rows = session.execute(
            f"SELECT id, content FROM resources WHERE rtype = ? AND deleted = 0{region} "
            f"AND id IN ({_marks(ids)})",
            (kind, *([] if caller.sees_all_regions else [caller.region]), *ids),
        )
        loaded.update(((kind, str(rid)), _decode(content)) for rid, content in rows)
    return [loaded[key] for key in keys if key in loaded]


# -- the Bundle -----------------------------------------------------------------------------------


def bundle(
    page: SearchPage,
    *,
    base_url: str,
    resource_type: str,
    params: Sequence[tuple[str, str]],
    self_url: str,
) -> dict[str, Any]:
    """The ``searchset`` Bundle of ``page``: ``base_url`` is central's FHIR base, ``params``
    the search's parameters (``SearchQuery.params``), to which the next link adds its cursor."""
    base = base_url.rstrip("/")
    links = [{"relation": "self", "url": self_url}]
    if page.next_cursor is not None:
        kept = [(name, value) for name, value in params if name != "_cursor"]
        query = urlencode([*kept, ("_cursor", page.next_cursor)])
        links.append({"relation": "next", "url": f"{base}/{resource_type}?{query}"})
    entries = [_entry(base, r, "match") for r in page.resources]
    entries += [_entry(base, r, "include") for r in page.included]
    found: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        found["total"] = page.total
    found["link"] = links
    if entries:
        found["entry"] = entries
    return found


def _entry(base: str, resource: dict[str, Any], mode: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "search": {"mode": mode},
    }
