"""The search parameters central supports, and the index rows a resource gives them.

Names and expressions are FHIR R4's (4.0.1), written as dotted paths over the JSON: a choice
element ``effective[x]`` is spelled once per type it can take (``effectiveDateTime``,
``effectivePeriod``), ``.where(system='phone')`` keeps the items whose element has that value,
and R4's ``.where(resolve() is Patient)`` is a reference parameter whose ``targets`` are
``("Patient",)``: a reference parameter indexes only references to its targets (all types when
``targets`` is empty). Where central departs from R4 it says so beside the parameter.

What each datatype gives (the R4 search page's tables):

- token: Coding and each coding of a CodeableConcept → (system, code); Identifier → (system,
  value); ContactPoint → value (no system); code, string, uri, id → the value; boolean →
  ``true``/``false``. CodeableConcept.text, Coding.display and Identifier.type.text go to the
  string index under ``<name>:text``, for the ``:text`` modifier.
- string: the value normalised (``normalise``) for the default starts-with and ``:contains``,
  and as sent under ``<name>:exact`` for ``:exact``; HumanName → family, given, prefix, suffix,
  text; Address → line, city, district, state, postalCode, country, text.
- date: the [low, high] instants the value covers at its own precision (``date_range``); a
  Period → start..end, an open end reaching the first or last instant; Timing → its events.
- reference: ``Type/id`` for a relative reference, or an absolute one under our own base URL;
  references to other servers, to contained resources or by identifier only are not indexed
  (a Reference.identifier goes to the token index under ``<name>:identifier``). A canonical
  (a plain string, e.g. QuestionnaireResponse.questionnaire) is indexed as written, and without
  its ``|version`` too.

Indexed text is cut at ``MAX_INDEXED`` characters (PostgreSQL's B-tree takes at most ~2.7 kB a
row); searches cut their values the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any, Literal

ParamType = Literal["token", "string", "date", "reference"]

MAX_INDEXED = 256
FIRST_INSTANT = "0001-01-01T00:00:00.000000Z"
LAST_INSTANT = "9999-12-31T23:59:59.999999Z"

_REFERENCE = re.compile(
    r"(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_DATE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_STEP = re.compile(r"(?P<name>[A-Za-z]+)(?:\((?P<key>[A-Za-z]+)='(?P<value>[^']*)'\))?")
_CONTACT_POINT_SYSTEMS = frozenset(("phone", "fax", "email", "pager", "url", "sms", "other"))
_STRING_PARTS = (
    "text",
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
)


@dataclass(frozen=True)
class SearchParam:
    """One search parameter of one resource type. ``paths`` is empty for ``_id`` and
    ``_lastUpdated``, which search ``resources`` itself rather than an index table."""

    name: str
    type: ParamType
    paths: tuple[str, ...]
    targets: tuple[str, ...] = ()


@dataclass
class IndexRows:
    """A resource's index rows, per table, without its type and id."""

    token: list[tuple[str, str, str]] = field(default_factory=list)  # param, system, code
    string: list[tuple[str, str]] = field(default_factory=list)  # param, value
    date: list[tuple[str, str, str]] = field(default_factory=list)  # param, low, high
    reference: list[tuple[str, str]] = field(default_factory=list)  # param, target

    def deduplicated(self) -> IndexRows:
        return IndexRows(
            list(dict.fromkeys(self.token)),
            list(dict.fromkeys(self.string)),
            list(dict.fromkeys(self.date)),
            list(dict.fromkeys(self.reference)),
        )


# -- the registry ---------------------------------------------------------------------------------


def _token(name: str, *paths: str) -> SearchParam:
    return SearchParam(name, "token", paths)


def _string(name: str, *paths: str) -> SearchParam:
    return SearchParam(name, "string", paths)


def _date(name: str, *paths: str) -> SearchParam:
    return SearchParam(name, "date", paths)


def _reference(name: str, path: str | tuple[str, ...], *targets: str) -> SearchParam:
    return SearchParam(name, "reference", (path,) if isinstance(path, str) else path, targets)


def _patient(path: str) -> SearchParam:
    return _reference("patient", path, "Patient")


_ANY: tuple[str, ...] = ()  # a reference parameter whose targets are any type
_GROUP_PATIENT = ("Group", "Patient")
_PEOPLE = ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson")
_AGENTS = ("Device", "Organization", *_PEOPLE)

_COMMON = (
    _token("_id"),
    _date("_lastUpdated"),
    _token("_tag", "meta.tag"),
    _token("_security", "meta.security"),
)

_PERSON = (
    _token("identifier", "identifier"),
    _string("name", "name"),
    _string("family", "name.family"),
    _string("given", "name.given"),
    _token("gender", "gender"),
    _token("active", "active"),
    _token("telecom", "telecom"),
    _token("phone", "telecom.where(system='phone')"),
    _token("email", "telecom.where(system='email')"),
    _string("address", "address"),
    _string("address-city", "address.city"),
    _string("address-country", "address.country"),
    _string("address-postalcode", "address.postalCode"),
    _string("address-state", "address.state"),
)

_BY_TYPE: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        *_PERSON,
        _date("birthdate", "birthDate"),
        _date("death-date", "deceasedDateTime"),
        _reference(
            "general-practitioner",
            "generalPractitioner",
            "Organization",
            "Practitioner",
            "PractitionerRole",
        ),
        _reference("organization", "managingOrganization", "Organization"),
        _reference("link", "link.other", "Patient", "RelatedPerson"),
    ),
    "Practitioner": _PERSON,
    "Organization": (
        _token("identifier", "identifier"),
        _string("name", "name", "alias"),
        _token("active", "active"),
        _token("type", "type"),
        _reference("partof", "partOf", "Organization"),
        _string("address", "address"),
        _string("address-city", "address.city"),
    ),
    "Location": (
        _token("identifier", "identifier"),
        _string("name", "name", "alias"),
        _token("status", "status"),
        _token("type", "type"),
        _string("address", "address"),
        _string("address-city", "address.city"),
        _reference("organization", "managingOrganization", "Organization"),
        _reference("partof", "partOf", "Location"),
    ),
    "Encounter": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", *_GROUP_PATIENT),
        _date("date", "period"),
        _token("status", "status"),
        _token("class", "class"),
        _token("type", "type"),
        _token("reason-code", "reasonCode"),
        _reference(
            "participant",
            "participant.individual",
            "Practitioner",
            "PractitionerRole",
            "RelatedPerson",
        ),
        _reference("practitioner", "participant.individual", "Practitioner"),
        _reference("service-provider", "serviceProvider", "Organization"),
        _reference("part-of", "partOf", "Encounter"),
        _reference("based-on", "basedOn", "ServiceRequest"),
        _reference("appointment", "appointment", "Appointment"),
        _reference("location", "location.location", "Location"),
    ),
    "Observation": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", "Group", "Device", "Patient", "Location"),
        _reference("encounter", "encounter", "Encounter"),
        _token("code", "code"),
        _token("category", "category"),
        _token("status", "status"),
        _date(
            "date",
            "effectiveDateTime",
            "effectivePeriod",
            "effectiveTiming.event",
            "effectiveInstant",
        ),
        _token("value-concept", "valueCodeableConcept"),
        _date("value-date", "valueDateTime", "valuePeriod"),
        _string("value-string", "valueString"),
        _reference(
            "based-on",
            "basedOn",
            "CarePlan",
            "DeviceRequest",
            "ImmunizationRecommendation",
            "MedicationRequest",
            "NutritionOrder",
            "ServiceRequest",
        ),
        _reference(
            "derived-from",
            "derivedFrom",
            "DocumentReference",
            "ImagingStudy",
            "Media",
            "QuestionnaireResponse",
            "Observation",
            "MolecularSequence",
        ),
        _reference(
            "has-member", "hasMember", "Observation", "QuestionnaireResponse", "MolecularSequence"
        ),
        _reference("performer", "performer", "Organization", "CareTeam", *_PEOPLE),
    ),
    "Condition": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", *_GROUP_PATIENT),
        _reference("encounter", "encounter", "Encounter"),
        _token("code", "code"),
        _token("category", "category"),
        _token("clinical-status", "clinicalStatus"),
        _token("verification-status", "verificationStatus"),
        _token("severity", "severity"),
        _token("body-site", "bodySite"),
        _date("onset-date", "onsetDateTime", "onsetPeriod"),
        _date("abatement-date", "abatementDateTime", "abatementPeriod"),
        _date("recorded-date", "recordedDate"),
        _reference("asserter", "asserter", *_PEOPLE),
    ),
    "ServiceRequest": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", "Group", "Device", "Patient", "Location"),
        _reference("encounter", "encounter", "Encounter"),
        _token("status", "status"),
        _token("intent", "intent"),
        _token("priority", "priority"),
        _token("code", "code"),
        _token("category", "category"),
        _date("authored", "authoredOn"),
        _date("occurrence", "occurrenceDateTime", "occurrencePeriod", "occurrenceTiming.event"),
        _reference("requester", "requester", *_AGENTS),
        _reference(
            "performer", "performer", "Organization", "CareTeam", "HealthcareService", *_AGENTS
        ),
        _reference("based-on", "basedOn", "CarePlan", "ServiceRequest", "MedicationRequest"),
        _reference("replaces", "replaces", "ServiceRequest"),
    ),
    "Task": (
        _token("identifier", "identifier"),
        _patient("for"),
        _reference("subject", "for", *_ANY),
        _reference("encounter", "encounter", "Encounter"),
        _token("status", "status"),
        _token("business-status", "businessStatus"),
        _token("intent", "intent"),
        _token("priority", "priority"),
        _token("code", "code"),
        _date("authored-on", "authoredOn"),
        _date("modified", "lastModified"),
        # R4's expression is Task.executionPeriod; the hub writes a follow-up's due date as
        # restriction.period, so central searches both.
        _date("period", "executionPeriod", "restriction.period"),
        _reference("based-on", "basedOn", *_ANY),
        _reference("focus", "focus", *_ANY),
        _reference("part-of", "partOf", "Task"),
        _reference("owner", "owner", "CareTeam", "HealthcareService", *_AGENTS),
        _reference("requester", "requester", *_AGENTS),
    ),
    "Communication": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", *_GROUP_PATIENT),
        _reference("encounter", "encounter", "Encounter"),
        _token("status", "status"),
        _token("category", "category"),
        _token("medium", "medium"),
        _date("sent", "sent"),
        _date("received", "received"),
        _reference("recipient", "recipient", "Group", "CareTeam", *_AGENTS),
        _reference("sender", "sender", "HealthcareService", *_AGENTS),
        _reference("based-on", "basedOn", *_ANY),
        _reference("part-of", "partOf", *_ANY),
    ),
    "CommunicationRequest": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", *_GROUP_PATIENT),
        _reference("encounter", "encounter", "Encounter"),
        _token("status", "status"),
        _token("category", "category"),
        _token("medium", "medium"),
        _token("priority", "priority"),
        # R4's expression is occurrence as dateTime only; a Period is searched by its range too.
        _date("occurrence", "occurrenceDateTime", "occurrencePeriod"),
        _date("authored", "authoredOn"),
        _reference("based-on", "basedOn", *_ANY),
        _reference("recipient", "recipient", "Group", "CareTeam", "HealthcareService", *_AGENTS),
        _reference("requester", "requester", *_AGENTS),
        _reference("sender", "sender", "HealthcareService", *_AGENTS),
        _reference("replaces", "replaces", "CommunicationRequest"),
    ),
    "QuestionnaireResponse": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", *_ANY),
        _reference("encounter", "encounter", "Encounter"),
        _date("authored", "authored"),
        _token("status", "status"),
        _reference("questionnaire", "questionnaire", "Questionnaire"),
        _reference("author", "author", *_AGENTS),
        _reference("based-on", "basedOn", "ServiceRequest", "CarePlan"),
        _reference("part-of", "partOf", "Observation", "Procedure"),
        _reference("source", "source", *_PEOPLE),
    ),
    "Consent": (
        _token("identifier", "identifier"),
        _reference("patient", "patient", "Patient"),
        _token("status", "status"),
        _token("category", "category"),
        _token("scope", "scope"),
        _token("action", "provision.action"),
        _date("date", "dateTime"),
        _date("period", "provision.period"),
        _reference("organization", "organization", "Organization"),
    ),
    "AllergyIntolerance": (
        _token("identifier", "identifier"),
        _reference("patient", "patient", "Patient"),
        _token("clinical-status", "clinicalStatus"),
        _token("verification-status", "verificationStatus"),
        _token("code", "code", "reaction.substance"),
        _token("category", "category"),
        _token("criticality", "criticality"),
        _token("type", "type"),
        _token("manifestation", "reaction.manifestation"),
        _token("severity", "reaction.severity"),
        _date("date", "recordedDate"),
        _date("onset", "reaction.onset"),
        _date("last-date", "lastOccurrence"),
        _reference("recorder", "recorder", *_PEOPLE),
        _reference("asserter", "asserter", *_PEOPLE),
    ),
    "MedicationStatement": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", *_GROUP_PATIENT),
        _token("status", "status"),
        _token("category", "category"),
        _token("code", "medicationCodeableConcept"),
        _reference("medication", "medicationReference", "Medication"),
        _date("effective", "effectiveDateTime", "effectivePeriod"),
        _reference("context", "context", "Encounter", "EpisodeOfCare"),
        _reference("source", "informationSource", "Organization", *_PEOPLE),
    ),
    "Immunization": (
        _token("identifier", "identifier"),
        _reference("patient", "patient", "Patient"),
        _token("status", "status"),
        _token("status-reason", "statusReason"),
        _token("vaccine-code", "vaccineCode"),
        _token("reason-code", "reasonCode"),
        _token("target-disease", "protocolApplied.targetDisease"),
        _date("date", "occurrenceDateTime"),
        _date("reaction-date", "reaction.date"),
        _string("lot-number", "lotNumber"),
        _reference("location", "location", "Location"),
        _reference("manufacturer", "manufacturer", "Organization"),
        _reference(
            "performer", "performer.actor", "Practitioner", "PractitionerRole", "Organization"
        ),
    ),
    "MedicationRequest": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", *_GROUP_PATIENT),
        _reference("encounter", "encounter", "Encounter"),
        _token("status", "status"),
        _token("intent", "intent"),
        _token("priority", "priority"),
        _token("category", "category"),
        _token("code", "medicationCodeableConcept"),
        _reference("medication", "medicationReference", "Medication"),
        _date("authoredon", "authoredOn"),
        _date("date", "dosageInstruction.timing.event"),
        _reference("requester", "requester", *_AGENTS),
        _reference("intended-performer", "performer", "Organization", "CareTeam", *_AGENTS),
    ),
    "Procedure": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", *_GROUP_PATIENT),
        _reference("encounter", "encounter", "Encounter"),
        _token("status", "status"),
        _token("code", "code"),
        _token("category", "category"),
        _token("reason-code", "reasonCode"),
        _date("date", "performedDateTime", "performedPeriod"),
        _reference("based-on", "basedOn", "CarePlan", "ServiceRequest"),
        _reference("part-of", "partOf", "Procedure", "Observation", "MedicationAdministration"),
        _reference("performer", "performer.actor", "Organization", *_AGENTS),
        _reference("location", "location", "Location"),
    ),
    "CarePlan": (
        _token("identifier", "identifier"),
        _patient("subject"),
        _reference("subject", "subject", *_GROUP_PATIENT),
        _reference("encounter", "encounter", "Encounter"),
        _token("status", "status"),
        _token("intent", "intent"),
        _token("category", "category"),
        _token("activity-code", "activity.detail.code"),
        _date("date", "period"),
        _date(
            "activity-date",
            "activity.detail.scheduledPeriod",
            "activity.detail.scheduledTiming.event",
        ),
        _reference("based-on", "basedOn", "CarePlan"),
        _reference("part-of", "partOf", "CarePlan"),
        _reference("replaces", "replaces", "CarePlan"),
        _reference("condition", "addresses", "Condition"),
        _reference("goal", "goal", "Goal"),
        _reference("care-team", "careTeam", "CareTeam"),
        _reference(
            "performer", "activity.detail.performer", "CareTeam", "HealthcareService", *_AGENTS
        ),
    ),
    "Appointment": (
        _token("identifier", "identifier"),
        _reference("patient", "participant.actor", "Patient"),
        _reference(
            "actor",
            "participant.actor",
            "Patient",
            "Practitioner",
            "PractitionerRole",
            "RelatedPerson",
            "Device",
            "HealthcareService",
            "Location",
        ),
        _reference("practitioner", "participant.actor", "Practitioner"),
        _reference("location", "participant.actor", "Location"),
        _token("status", "status"),
        _token("part-status", "participant.status"),
        _date("date", "start"),
        _token("appointment-type", "appointmentType"),
        _token("service-type", "serviceType"),
        _token("specialty", "specialty"),
        _token("reason-code", "reasonCode"),
        _reference("based-on", "basedOn", "ServiceRequest"),
        _reference("slot", "slot", "Slot"),
    ),
}

PARAMETERS: dict[str, dict[str, SearchParam]] = {
    kind: {p.name: p for p in (*_COMMON, *params)} for kind, params in _BY_TYPE.items()
}


# -- extraction -----------------------------------------------------------------------------------


def index_rows(resource: dict[str, Any], *, base_url: str = "") -> IndexRows:
    """The index rows of every search parameter of ``resource``'s type. ``base_url`` is
    central's FHIR base (``Settings.fhir_base``): absolute references under it are indexed as
    relative ones; without it, no absolute reference is indexed. A value that cannot be indexed
    (a date in no FHIR format) is left out: validation has already accepted the resource."""
    rows = IndexRows()
    for param in PARAMETERS.get(str(resource.get("resourceType")), {}).values():
        for path in param.paths:
            for value in values_at(resource, path):
                _add_value(rows, param, value, base_url)
    return rows.deduplicated()


def values_at(resource: dict[str, Any], path: str) -> list[object]:
    """Every value at ``path`` (see the module docstring), arrays walked through."""
    found: list[object] = [resource]
    for name, key, wanted in _steps(path):
        found = [
            item
            for parent in found
            if isinstance(parent, dict)
            for item in _as_list(parent.get(name))
            if key is None or (isinstance(item, dict) and item.get(key) == wanted)
        ]
    return found


@cache
def _steps(path: str) -> tuple[tuple[str, str | None, str | None], ...]:
    steps = []
    for part in re.findall(r"[A-Za-z]+(?:\([^)]*\))?", path.replace(".where", "")):
        match = _STEP.fullmatch(part)
        if match is None:
            raise ValueError(f"not a search path: {path}")
        steps.append((match["name"], match["key"], match["value"]))
    return tuple(steps)


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _add_value(rows: IndexRows, param: SearchParam, value: object, base_url: str) -> None:
    name = param.name
    if param.type == "token":
        rows.token.extend((name, system, code) for system, code in _tokens(value))
        texts = (normalise(text) for text in _token_texts(value))
        rows.string.extend((f"{name}:text", text) for text in texts if text)
    elif param.type == "string":
        for text in _strings(value):
            if text.strip():
                rows.string.append((name, normalise(text)))
                rows.string.append((f"{name}:exact", indexed(text)))
    elif param.type == "date":
        rows.date.extend((name, low, high) for low, high in _dates(value))
    else:
        rows.reference.extend((name, target) for target in _targets(param, value, base_url))
        if isinstance(value, dict) and isinstance(value.get("identifier"), dict):
            for system, code in _tokens(value["identifier"]):
                rows.token.append((f"{name}:identifier", system, code))


def _tokens(value: object) -> Iterator[tuple[str, str]]:
    """(system, code) pairs of a token value; a missing system is ``""``."""
    if isinstance(value, bool):
        yield "", "true" if value else "false"
    elif isinstance(value, str):
        yield "", indexed(value)
    elif isinstance(value, dict):
        for coding in _as_list(value.get("coding")) if "coding" in value else [value]:
            if not isinstance(coding, dict):
                continue
            code = coding.get("code", coding.get("value"))
            system = coding.get("system")
            if not isinstance(code, str):
                continue
            if not isinstance(system, str) or system in _CONTACT_POINT_SYSTEMS:
                system = ""  # a ContactPoint's system names a kind of contact, not a namespace
            yield indexed(system), indexed(code)


def _token_texts(value: object) -> Iterator[str]:
    if not isinstance(value, dict):
        return
    for text in (value.get("text"), value.get("display")):
        if isinstance(text, str):
            yield text
    for coding in _as_list(value.get("coding")):
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            yield coding["display"]
    kind = value.get("type")
    if isinstance(kind, dict) and isinstance(kind.get("text"), str):
        yield kind["text"]


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for part in _STRING_PARTS:
            yield from (text for text in _as_list(value.get(part)) if isinstance(text, str))


def _dates(value: object) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        found = date_range(value)
        if found is not None:
            yield found
    elif isinstance(value, dict) and ("start" in value or "end" in value):
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        yield (start[0] if start else FIRST_INSTANT), (end[1] if end else LAST_INSTANT)


def _targets(param: SearchParam, value: object, base_url: str) -> Iterator[str]:
    if isinstance(value, str):  # a canonical: indexed as written, and without its version
        yield indexed(value)
        if "|" in value:
            yield indexed(value.partition("|")[0])
        return
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        return
    target = relative_reference(value["reference"], base_url)
    if target is not None and (not param.targets or target.partition("/")[0] in param.targets):
        yield target


def relative_reference(text: str, base_url: str = "") -> str | None:
    """``Type/id`` for a reference to a resource on this server (relative, or absolute under
    ``base_url``, a version dropped); None for anything else."""
    base = base_url.rstrip("/") + "/"
    if base_url and text.startswith(base):
        text = text[len(base) :]
    match = _REFERENCE.fullmatch(text)
    return f"{match['type']}/{match['id']}" if match else None


# -- values ---------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """``text`` as string search compares it: without accents, case-folded, its whitespace
    collapsed, cut at MAX_INDEXED characters."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    kept = "".join(c for c in folded if not unicodedata.combining(c))
    return indexed(" ".join(kept.split()))


def indexed(text: str) -> str:
    """``text`` as the index keeps it: at most MAX_INDEXED characters."""
    return text[:MAX_INDEXED]


def date_range(text: str) -> tuple[str, str] | None:
    """The first and last instants (UTC, microseconds, as ``central.clock.instant`` writes
    them) that a FHIR date, dateTime or instant covers at its precision: ``2026-11`` covers
    November. A time without a zone is read as UTC, and so is a date (FHIR gives a date no
    zone). None if ``text`` is not a valid date in one of FHIR's forms."""
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    try:
        low, step = _start_and_step(match)
    except ValueError:
        return None
    try:
        high = low + step - timedelta(microseconds=1)
    except OverflowError:
        return as_instant(low), LAST_INSTANT
    return as_instant(low), as_instant(high)


def _start_and_step(match: re.Match[str]) -> tuple[datetime, timedelta | _Months]:
    parts = {k: int(v) for k, v in match.groupdict().items() if v and k not in ("zone", "fraction")}
    fraction = match["fraction"]
    zone = _zone(match["zone"])
    start = datetime(
        parts["year"],
        parts.get("month", 1),
        parts.get("day", 1),
        parts.get("hour", 0),
        parts.get("minute", 0),
        parts.get("second", 0),
        int((fraction or "0")[:6].ljust(6, "0")),
        tzinfo=zone,
    )
    if fraction:
        return start, timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    if "second" in parts:
        return start, timedelta(seconds=1)
    if "minute" in parts:
        return start, timedelta(minutes=1)
    if "day" in parts:
        return start, timedelta(days=1)
    return start, _Months(1 if "month" in parts else 12)


def _zone(text: str | None) -> timezone:
    if text is None or text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError("not a time zone offset")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


@dataclass(frozen=True)
class _Months:
    """A step of whole months, added to the first instant of a month."""

    count: int

    def __radd__(self, start: datetime) -> datetime:
        months = start.year * 12 + start.month - 1 + self.count
        if months // 12 > 9999:
            raise OverflowError("past the last year")
        return start.replace(year=months // 12, month=months % 12 + 1)


def as_instant(moment: datetime) -> str:
    """``moment`` as an indexed instant (UTC, microseconds, fixed width)."""
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        return FIRST_INSTANT if moment.year == 1 else LAST_INSTANT
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond:06d}Z"
    )
