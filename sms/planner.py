"""When, how and whether to send a reminder: pure functions of the reminder, the patient, their
consents and opt-out, a policy and the time now (passed in, never read from the system).

``decide`` skips, in this order, a revoked reminder, a patient who opted out (STOP wins over
any consent), one without consent to either channel, one without a phone number, and a reminder
that could not go out before the end of the ``late_days``-th day after its own. Otherwise it
sends by the channel the patient permitted (both: the one the request names, else SMS), in the
reminder's language, else the patient's, else the default (mapped to a supported one), at
``send_time`` on its day or now if that has passed, never in quiet hours.

Time is the patient's: the send time and quiet hours are wall-clock times in the patient's IANA
zone (the policy's default zone if theirs is missing or unknown), turned into UTC instants with
``zoneinfo``. Across a daylight-saving change:

- a local time that does not exist (the spring-forward gap) becomes the first instant after the
  gap: 01:30 on a night the clock jumps from 01:00 to 02:00 becomes 02:00;
- a local time that happens twice (the fall-back repeat) is its first occurrence (fold=0).

Quiet hours are the span from the instant ``quiet_start`` begins to the instant ``quiet_end``
next comes, both read as above; so a fall-back night's quiet hours last an hour longer, a
spring-forward night's an hour shorter. A window may wrap midnight (20:00-07:00) or lie within
one day (12:00-14:00); a window that starts and ends at the same time is no quiet hours at all.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sms import templates
from sms.model import Channel, Consents, Decision, Recipient, Reminder, Send, Skip

REVOKED = "the reminder was revoked"
OPTED_OUT = "the patient opted out (STOP)"
NO_CONSENT = "no consent to reminders"
NO_PHONE = "no phone number"
TOO_LATE = "too late: its day has passed"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Policy:
    """The planner's rules, from central's settings. Raises ValueError for a default zone or
    language that does not exist, a language without templates, or negative late days."""

    quiet_start: time = time(20, 0)  # local time quiet hours begin
    quiet_end: time = time(7, 0)  # ... and end (may wrap midnight, or lie within one day)
    send_time: time = time(9, 0)  # local time a reminder is sent on its day
    default_zone: str = "Africa/Dar_es_Salaam"
    default_language: str = "en"
    languages: tuple[str, ...] = ("en", "sw")
    late_days: int = 1  # a reminder not sent within this many days after its day is cancelled

    def __post_init__(self) -> None:
        # A bad policy is a configuration error: refuse it at start, not at the first send.
        if not _known_zone(self.default_zone):
            raise ValueError("the policy's default zone is not an IANA time zone")
        if self.default_language not in self.languages:
            raise ValueError("the policy's default language is not one of its languages")
        if not set(self.languages) <= set(templates.LANGUAGES):
            raise ValueError("the policy names a language the reminder templates do not have")
        if self.late_days < 0:
            raise ValueError("the policy's late_days must not be negative")
        if any(t.tzinfo is not None for t in (self.quiet_start, self.quiet_end, self.send_time)):
            raise ValueError("the policy's times are local wall-clock times, without a zone")


def decide(
    reminder: Reminder,
    recipient: Recipient,
    consents: Consents,
    *,
    opted_out: bool,
    policy: Policy,
    now: datetime,
) -> Decision:
    """Send the reminder (by which channel, to which number, in which language, when) or skip
    it, saying why. An opt-out (STOP) wins over any consent. Raises ValueError if the recipient
    is not the reminder's patient, or ``now`` is naive."""
    if recipient.patient_id != reminder.patient_id:
        raise ValueError("the recipient is not the patient the reminder is for")
    if not reminder.active:
        return Skip(REVOKED)
    if opted_out:
        return Skip(OPTED_OUT)
    channel = choose_channel(consents, reminder.medium)
    if channel is None:
        return Skip(NO_CONSENT)
    if not recipient.phone:
        return Skip(NO_PHONE)
    zone = recipient.zone
    send_at = max(send_time(reminder.send_on, zone, policy), next_allowed(now, zone, policy))
    # Checked at the send time, not now: a reminder held by quiet hours past its last day
    # would otherwise go out late.
    if too_late(reminder.send_on, zone, policy, send_at):
        return Skip(TOO_LATE)
    language = choose_language(reminder.language, recipient.language, policy)
    return Send(channel=channel, phone=recipient.phone, language=language, send_at=send_at)


def choose_channel(consents: Consents, medium: Channel | None) -> Channel | None:
    """SMS or voice, whichever alone the patient permitted; if both, the one the request names,
    else SMS; None if neither (never asked is no: the programme is opt-in)."""
    if consents.sms is True and consents.voice is True:
        return medium or "sms"
    if consents.sms is True:
        return "sms"
    if consents.voice is True:
        return "voice"
    return None


def choose_language(requested: str | None, patient: str | None, policy: Policy) -> str:
    """The reminder's language, else the patient's, else the default, as one the policy
    supports ("sw-TZ" is "sw"); a language it does not support gives the default."""
    language = templates.language_for(requested or patient, policy.default_language)
    return language if language in policy.languages else policy.default_language


def send_time(day: date, zone: str | None, policy: Policy) -> datetime:
    """The UTC instant of ``policy.send_time`` on ``day`` in ``zone``, moved to the end of quiet
    hours if it falls within them."""
    tz = resolve_zone(zone, policy)
    return next_allowed(_instant(day, policy.send_time, tz), zone, policy)


def in_quiet_hours(moment: datetime, zone: str | None, policy: Policy) -> bool:
    """Whether ``moment`` (timezone-aware) falls in the quiet hours of ``zone``."""
    return _night_around(_utc(moment), resolve_zone(zone, policy), policy) is not None


def next_allowed(moment: datetime, zone: str | None, policy: Policy) -> datetime:
    """The first instant at or after ``moment`` outside quiet hours, in UTC."""
    tz = resolve_zone(zone, policy)
    moment = _utc(moment)
    # A loop, not one step: on a day the clock changes, one night's end can be the next one's
    # start (both moved to the end of the same gap).
    while (night := _night_around(moment, tz, policy)) is not None:
        moment = night[1]
    return moment


def too_late(reminder_day: date, zone: str | None, policy: Policy, now: datetime) -> bool:
    """Whether ``now`` is past the last day a reminder for ``reminder_day`` may go out: the
    end of the day ``policy.late_days`` after it, in the patient's zone."""
    tz = resolve_zone(zone, policy)
    last_day = reminder_day + timedelta(days=policy.late_days)
    return _utc(now) >= _instant(last_day + timedelta(days=1), time(0, 0), tz)


def zone_of(zone: str | None, policy: Policy) -> str:
    """The IANA name of the zone the planner uses for a patient: theirs, or the policy's default
    if theirs is missing or not an IANA name. A caller that logs the fallback compares the two
    (and logs that it happened, not the name, which came from the patient's record)."""
    return zone if zone and _known_zone(zone) else policy.default_zone


def resolve_zone(zone: str | None, policy: Policy) -> ZoneInfo:
    """The ``ZoneInfo`` of ``zone_of(zone, policy)``."""
    return ZoneInfo(zone_of(zone, policy))


def _known_zone(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: not a key at all ("../x"); OSError: a folder of zones ("America").
        return False
    return True


# -- quiet hours ------------------------------------------------------------------------------


def _night_around(
    moment: datetime, tz: ZoneInfo, policy: Policy
) -> tuple[datetime, datetime] | None:
    """The quiet hours (start, end) that hold ``moment``, or None."""
    for start, end in _nights(moment.astimezone(tz).date(), tz, policy):
        if start <= moment < end:
            return start, end
    return None


# Planning decides thousands of reminders for the same few days and zones.
@functools.lru_cache(maxsize=4096)
def _nights(day: date, tz: ZoneInfo, policy: Policy) -> tuple[tuple[datetime, datetime], ...]:
    """The quiet hours that begin on the days around ``day``, as UTC instants."""
    wraps = policy.quiet_start > policy.quiet_end
    nights = []
    for offset in (-1, 0, 1):
        begins = day + timedelta(days=offset)
        ends = begins + timedelta(days=1 if wraps else 0)
        nights.append(
            (_instant(begins, policy.quiet_start, tz), _instant(ends, policy.quiet_end, tz))
        )
    return tuple(nights)


def _instant(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The UTC instant the clocks in ``tz`` show ``wall`` on ``day``: its first occurrence if
    it happens twice, the end of the gap if the clocks skip it."""
    local = datetime.combine(day, wall, tzinfo=tz)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    return _gap_end(local, tz)


def _gap_end(local: datetime, tz: ZoneInfo) -> datetime:
    """The instant the clocks jumped over ``local``: found by halving, to the second (zones
    change at whole seconds), between its two readings, with the offset before the jump and
    with the offset after it."""
    readings = (local.replace(fold=0).astimezone(UTC), local.replace(fold=1).astimezone(UTC))
    second = timedelta(seconds=1)
    before = (min(readings) - _EPOCH) // second  # floor: still before the jump
    after = -((_EPOCH - max(readings)) // second)  # ceiling: already after it
    offset_after = _at(after).astimezone(tz).utcoffset()
    while after - before > 1:
        middle = (before + after) // 2
        if _at(middle).astimezone(tz).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return _at(after)


def _at(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a time must be timezone-aware")
    return moment.astimezone(UTC)
