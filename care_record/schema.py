"""What a chart may hold: the validated shapes of every write.

Each model validates one write before it touches a document. Messages name the field and the
rule, never the value, so a refused write can be shown and logged without leaking patient data.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from care_record.errors import InvalidValue
from care_record.ids import is_uuid7

SCHEMA_VERSION = 1

M = TypeVar("M", bound="BaseModel")

Sex = Literal["female", "male", "other", "unknown"]
ConsentScope = Literal["data_sharing", "sms_reminders", "voice_reminders"]
ConsentStatus = Literal["granted", "refused", "withdrawn"]
PregnancyStatus = Literal["pregnant", "not_pregnant", "unknown"]
Urgency = Literal["emergency", "urgent", "routine"]
TaskStatus = Literal["requested", "completed", "cancelled"]
ReferralStatus = Literal["requested", "accepted", "completed", "cancelled"]
ItemStatus = Literal["active", "inactive", "entered_in_error"]
Criticality = Literal["low", "high", "unable_to_assess"]
MessageDirection = Literal["to_chw", "from_chw", "to_patient", "from_patient"]
MessageChannel = Literal["console", "sms", "voice", "app"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_OLDEST_YEARS = 130


def _clean_text(text: str) -> str:
    text = " ".join(text.split())
    if _CONTROL.search(text):
        raise ValueError("must not contain control characters")
    return text


def _check_uuid7(text: str) -> str:
    if not is_uuid7(text):
        raise ValueError("must be a UUIDv7 in canonical form")
    return text


def _check_aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("must carry a time zone")
    return moment.astimezone(UTC)


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("is not a known IANA time zone") from exc
    return name


Name = Annotated[str, AfterValidator(_clean_text), Field(min_length=1, max_length=100)]
ShortText = Annotated[str, AfterValidator(_clean_text), Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(min_length=1, max_length=4000)]
Reason = Annotated[str, AfterValidator(_clean_text), Field(min_length=1, max_length=1000)]
RecordId = Annotated[str, AfterValidator(_check_uuid7)]
UtcTime = Annotated[datetime, AfterValidator(_check_aware)]
ZoneName = Annotated[str, AfterValidator(_check_zone)]
LanguageTag = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")]
FormName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _check_phone(phone: str) -> str:
    if not _E164.match(phone):
        raise ValueError("must be in E.164 form, for example +255712345678")
    return phone


def _check_birth_date(birth: date, info: ValidationInfo) -> date:
    context = info.context or {}
    today = context.get("today") or datetime.now(UTC).date()
    if birth > today:
        raise ValueError("cannot be in the future")
    if today.year - birth.year > _OLDEST_YEARS:
        raise ValueError(f"is more than {_OLDEST_YEARS} years ago")
    return birth


Phone = Annotated[str, AfterValidator(_check_phone)]
BirthDate = Annotated[date, AfterValidator(_check_birth_date)]


class Demographics(Strict):
    """Who the patient is. Validate with ``context={"today": date}`` to check against a clock."""

    given: Name
    family: Name
    sex: Sex
    birth_date: BirthDate
    phone: Phone | None = None
    village: ShortText | None = None
    household_id: RecordId | None = None
    language: LanguageTag | None = None


class DemographicsUpdate(Strict):
    """A partial update: only the fields given are written."""

    given: Name | None = None
    family: Name | None = None
    sex: Sex | None = None
    birth_date: BirthDate | None = None
    phone: Phone | None = None
    village: ShortText | None = None
    household_id: RecordId | None = None
    language: LanguageTag | None = None


class Observation(Strict):
    """One coded finding: a LOINC code and exactly one value.

    A measurement has ``value`` and its UCUM ``unit``; a yes/no finding has ``value_boolean``;
    a coded answer has ``value_code`` (the option's code, from ``value_system``).
    """

    code: str = Field(pattern=r"^[0-9]{1,7}-[0-9]$")
    display: ShortText
    value: float | None = None
    unit: str | None = Field(default=None, min_length=1, max_length=20)
    value_boolean: bool | None = None
    value_code: str | None = Field(default=None, min_length=1, max_length=64)
    value_system: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_value(self) -> Observation:
        given = [v for v in (self.value, self.value_boolean, self.value_code) if v is not None]
        if len(given) != 1:
            raise ValueError("needs exactly one of value, value_boolean, value_code")
        if (self.value is None) != (self.unit is None):
            raise ValueError("a measured value needs its UCUM unit, and only a measured value")
        return self


class FormResponse(Strict):
    """The answers of a form, as the ``item`` list of a FHIR QuestionnaireResponse in JSON."""

    questionnaire: str = Field(min_length=1, max_length=300)
    language: LanguageTag
    items: str = Field(min_length=2, max_length=200_000)


class Encounter(Strict):
    kind: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    started_at: UtcTime
    zone: ZoneName
    observations: tuple[Observation, ...] = ()
    note: LongText | None = None
    amends: RecordId | None = None
    form: FormResponse | None = None


class ReminderPlan(Strict):
    """A reminder to send the patient before a task falls due (sent by central, see sms/)."""

    send_on: date
    template: FormName
    language: LanguageTag


class Task(Strict):
    kind: FormName
    description: ShortText
    due: date
    encounter_id: RecordId | None = None
    rule: ShortText | None = None
    reminders: tuple[ReminderPlan, ...] = ()


class Referral(Strict):
    """A referral. Its reason joins every reason at its urgency, so it may run to a paragraph."""

    urgency: Urgency
    reason: Reason
    encounter_id: RecordId | None = None
    danger_signs: Reason | None = None
    rules: Reason | None = None


class Visit(Strict):
    """A visit as one write: the encounter and the referral and tasks its rules concluded."""

    encounter: Encounter
    referral: Referral | None = None
    tasks: tuple[Task, ...] = ()


class Message(Strict):
    direction: MessageDirection
    channel: MessageChannel
    author: ShortText
    text: LongText
    sent_at: UtcTime
    in_reply_to: RecordId | None = None


class AttachmentRef(Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    media_type: str = Field(pattern=r"^[a-z]+/[a-z0-9.+-]+$")
    size: int = Field(ge=0, le=2**40)
    encounter_id: RecordId | None = None


class Allergy(Strict):
    substance: ShortText
    criticality: Criticality = "unable_to_assess"
    status: ItemStatus = "active"


class Medication(Strict):
    name: ShortText
    dosage: ShortText | None = None
    status: ItemStatus = "active"


class ConsentWrite(Strict):
    scope: ConsentScope
    status: ConsentStatus


class PregnancyWrite(Strict):
    status: PregnancyStatus


class TaskStatusWrite(Strict):
    status: TaskStatus


class ReferralStatusWrite(Strict):
    status: ReferralStatus


class Household(Strict):
    name: ShortText
    village: ShortText | None = None


def validated(model: type[M], data: object, *, today: date | None = None) -> M:
    """Validate ``data`` as ``model`` or raise InvalidValue naming each field and rule.

    The message never repeats the input, which may be patient data.
    """
    if isinstance(data, model):
        # Keep only the fields the caller set: a partial update must not write the others.
        data = data.model_dump(exclude_unset=True)
    try:
        return model.model_validate(data, context={"today": today} if today else None)
    except ValidationError as exc:
        raise InvalidValue(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "value"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
