"""The reminder planner: quiet hours and send times in the patient's own zone (across
daylight-saving changes too), the channel, the language, and every reason not to send."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sms.model import Consents, Recipient, Reminder, Send, Skip
from sms.planner import (
    NO_CONSENT,
    NO_PHONE,
    OPTED_OUT,
    REVOKED,
    TOO_LATE,
    Policy,
    decide,
    in_quiet_hours,
    next_allowed,
    send_time,
    too_late,
    zone_of,
)

DAR = "Africa/Dar_es_Salaam"  # UTC+3, no daylight saving
LIMA = "America/Lima"  # UTC-5, no daylight saving
LONDON = "Europe/London"  # 2025: GMT->BST 30 March 01:00, BST->GMT 26 October 02:00
NEW_YORK = "America/New_York"  # 2025: EST->EDT 9 March 02:00, EDT->EST 2 November 02:00
POLICY = Policy()
SMS_ONLY = Consents(sms=True, voice=False)
DAY = date(2025, 3, 3)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc, arg-type]


def reminder(**changes: Any) -> Reminder:
    base = Reminder(
        id="019550d3-9b40-71ca-8fdd-14479d9efb45",
        patient_id="p1",
        template="follow_up",
        language=None,
        send_on=DAY,
        active=True,
    )
    return replace(base, **changes)


def recipient(**changes: Any) -> Recipient:
    base = Recipient(
        patient_id="p1",
        first_name="Amina",
        phone="+255712345678",
        language="sw",
        zone=DAR,
        facility="Mlima Dispensary",
    )
    return replace(base, **changes)


def plan(
    *,
    now: datetime,
    consents: Consents = SMS_ONLY,
    opted_out: bool = False,
    policy: Policy = POLICY,
    reminder_changes: dict[str, Any] | None = None,
    **recipient_changes: Any,
) -> Send | Skip:
    return decide(
        reminder(**(reminder_changes or {})),
        recipient(**recipient_changes),
        consents,
        opted_out=opted_out,
        policy=policy,
        now=now,
    )


def sent_at(decision: Send | Skip) -> datetime:
    assert isinstance(decision, Send), decision
    return decision.send_at


# -- quiet hours in the patient's own zone --------------------------------------------------------


def test_the_same_instant_is_quiet_for_one_patient_and_not_for_another() -> None:
    evening_in_dar = utc(2025, 3, 3, 18, 0)  # 21:00 in Dar es Salaam, 13:00 in Lima
    assert in_quiet_hours(evening_in_dar, DAR, POLICY)
    assert not in_quiet_hours(evening_in_dar, LIMA, POLICY)
    morning_in_dar = utc(2025, 3, 3, 5, 0)  # 08:00 in Dar es Salaam, 00:00 in Lima
    assert not in_quiet_hours(morning_in_dar, DAR, POLICY)
    assert in_quiet_hours(morning_in_dar, LIMA, POLICY)
    assert next_allowed(morning_in_dar, DAR, POLICY) == morning_in_dar
    assert next_allowed(morning_in_dar, LIMA, POLICY) == utc(2025, 3, 3, 12, 0)  # 07:00 Lima


def test_a_reminder_goes_at_nine_in_the_morning_where_the_patient_is() -> None:
    before = utc(2025, 3, 1, 12, 0)
    assert sent_at(plan(now=before, zone=DAR)) == utc(2025, 3, 3, 6, 0)
    assert sent_at(plan(now=before, zone=LIMA)) == utc(2025, 3, 3, 14, 0)


def test_a_missing_or_unknown_zone_is_the_policy_default() -> None:
    before = utc(2025, 3, 1, 12, 0)
    for zone in (None, "", "Mars/Olympus_Mons", "America", "../../etc/passwd"):
        assert zone_of(zone, POLICY) == DAR
        assert sent_at(plan(now=before, zone=zone)) == utc(2025, 3, 3, 6, 0)
        assert in_quiet_hours(utc(2025, 3, 3, 18, 0), zone, POLICY)
    assert zone_of(LIMA, POLICY) == LIMA


@pytest.mark.parametrize(
    ("local", "quiet"),
    [
        (time(19, 59), False),
        (time(20, 0), True),  # quiet hours start at their start...
        (time(23, 59), True),
        (time(0, 0), True),
        (time(6, 59), True),
        (time(7, 0), False),  # ...and are over at their end
        (time(12, 0), False),
    ],
)
def test_quiet_hours_that_wrap_midnight(local: time, quiet: bool) -> None:
    moment = datetime.combine(DAY, local, tzinfo=UTC)
    assert in_quiet_hours(moment, "UTC", POLICY) is quiet


@pytest.mark.parametrize(
    ("local", "quiet"),
    [
        (time(11, 59), False),
        (time(12, 0), True),
        (time(13, 59), True),
        (time(14, 0), False),
        (time(21, 0), False),
        (time(3, 0), False),
    ],
)
def test_quiet_hours_within_one_day(local: time, quiet: bool) -> None:
    siesta = Policy(quiet_start=time(12, 0), quiet_end=time(14, 0))
    moment = datetime.combine(DAY, local, tzinfo=UTC)
    assert in_quiet_hours(moment, "UTC", siesta) is quiet
    expected = datetime.combine(DAY, time(14, 0), tzinfo=UTC) if quiet else moment
    assert next_allowed(moment, "UTC", siesta) == expected


def test_a_window_that_starts_where_it_ends_is_no_quiet_hours() -> None:
    never = Policy(quiet_start=time(7, 0), quiet_end=time(7, 0))
    for hour in range(24):
        assert not in_quiet_hours(utc(2025, 3, 3, hour, 0), "UTC", never)


def test_quiet_hours_move_the_send_time_and_the_next_allowed_instant() -> None:
    early = Policy(send_time=time(6, 0))
    assert send_time(DAY, "UTC", early) == utc(2025, 3, 3, 7, 0)
    assert next_allowed(utc(2025, 3, 3, 23, 0), "UTC", POLICY) == utc(2025, 3, 4, 7, 0)
    assert next_allowed(utc(2025, 3, 3, 6, 59), "UTC", POLICY) == utc(2025, 3, 3, 7, 0)


def test_naive_times_are_refused() -> None:
    naive = datetime(2025, 3, 3, 12, 0)  # noqa: DTZ001 - the case under test
    with pytest.raises(ValueError, match="timezone-aware"):
        in_quiet_hours(naive, DAR, POLICY)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan(now=naive)


# -- daylight saving --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        (LONDON, date(2025, 3, 29), utc(2025, 3, 29, 9, 0)),  # GMT
        (LONDON, date(2025, 3, 30), utc(2025, 3, 30, 8, 0)),  # BST from 01:00 that night
        (LONDON, date(2025, 10, 25), utc(2025, 10, 25, 8, 0)),  # BST
        (LONDON, date(2025, 10, 26), utc(2025, 10, 26, 9, 0)),  # GMT from 02:00 that night
        (NEW_YORK, date(2025, 3, 8), utc(2025, 3, 8, 14, 0)),  # EST
        (NEW_YORK, date(2025, 3, 9), utc(2025, 3, 9, 13, 0)),  # EDT
        (NEW_YORK, date(2025, 11, 1), utc(2025, 11, 1, 13, 0)),  # EDT
        (NEW_YORK, date(2025, 11, 2), utc(2025, 11, 2, 14, 0)),  # EST
    ],
)
def test_nine_in_the_morning_on_the_days_the_clocks_change(
    zone: str, day: date, expected: datetime
) -> None:
    assert send_time(day, zone, POLICY) == expected


def test_quiet_hours_end_at_seven_local_on_the_spring_forward_night() -> None:
    # 20:00 GMT to 07:00 BST: ten hours, not eleven.
    assert not in_quiet_hours(utc(2025, 3, 29, 19, 59), LONDON, POLICY)
    assert in_quiet_hours(utc(2025, 3, 29, 20, 0), LONDON, POLICY)
    assert in_quiet_hours(utc(2025, 3, 30, 5, 59), LONDON, POLICY)
    assert not in_quiet_hours(utc(2025, 3, 30, 6, 0), LONDON, POLICY)
    assert next_allowed(utc(2025, 3, 29, 23, 0), LONDON, POLICY) == utc(2025, 3, 30, 6, 0)


def test_quiet_hours_end_at_seven_local_on_the_fall_back_night() -> None:
    # 20:00 BST to 07:00 GMT: twelve hours, 01:00-02:00 passing twice inside them.
    assert in_quiet_hours(utc(2025, 10, 25, 19, 0), LONDON, POLICY)
    assert in_quiet_hours(utc(2025, 10, 26, 0, 30), LONDON, POLICY)  # 01:30 BST
    assert in_quiet_hours(utc(2025, 10, 26, 1, 30), LONDON, POLICY)  # 01:30 GMT
    assert in_quiet_hours(utc(2025, 10, 26, 6, 59), LONDON, POLICY)
    assert not in_quiet_hours(utc(2025, 10, 26, 7, 0), LONDON, POLICY)
    assert next_allowed(utc(2025, 10, 25, 23, 0), LONDON, POLICY) == utc(2025, 10, 26, 7, 0)


def test_quiet_hours_in_new_york_on_the_transition_nights() -> None:
    assert next_allowed(utc(2025, 3, 9, 5, 0), NEW_YORK, POLICY) == utc(2025, 3, 9, 11, 0)
    assert next_allowed(utc(2025, 11, 2, 5, 0), NEW_YORK, POLICY) == utc(2025, 11, 2, 12, 0)


def test_a_quiet_window_ending_in_the_spring_forward_gap_ends_when_the_gap_does() -> None:
    # 00:30-01:30 on a night the clocks jump from 01:00 to 02:00: 01:30 never comes, so the
    # quiet hours end at the first instant after the gap, 02:00 BST (01:00 UTC).
    small_hours = Policy(quiet_start=time(0, 30), quiet_end=time(1, 30))
    assert in_quiet_hours(utc(2025, 3, 30, 0, 30), LONDON, small_hours)
    assert in_quiet_hours(utc(2025, 3, 30, 0, 59, 59), LONDON, small_hours)
    assert not in_quiet_hours(utc(2025, 3, 30, 1, 0), LONDON, small_hours)
    assert next_allowed(utc(2025, 3, 30, 0, 45), LONDON, small_hours) == utc(2025, 3, 30, 1, 0)
    # The same window on an ordinary night.
    assert next_allowed(utc(2025, 3, 23, 0, 45), LONDON, small_hours) == utc(2025, 3, 23, 1, 30)


def test_a_quiet_window_containing_the_whole_gap_lasts_an_hour_less() -> None:
    night = Policy(quiet_start=time(0, 0), quiet_end=time(3, 0))
    assert in_quiet_hours(utc(2025, 3, 30, 0, 0), LONDON, night)
    assert in_quiet_hours(utc(2025, 3, 30, 1, 59), LONDON, night)  # 02:59 BST
    assert not in_quiet_hours(utc(2025, 3, 30, 2, 0), LONDON, night)  # 03:00 BST


def test_a_send_time_the_clocks_skip_moves_to_the_end_of_the_gap() -> None:
    policy = Policy(send_time=time(1, 30), quiet_start=time(22, 0), quiet_end=time(1, 0))
    assert send_time(date(2025, 3, 30), LONDON, policy) == utc(2025, 3, 30, 1, 0)  # 02:00 BST
    half_past_two = replace(policy, send_time=time(2, 30))
    # 03:00 EDT, the first instant after the gap; on an ordinary day 02:30 EDT.
    assert send_time(date(2025, 3, 9), NEW_YORK, half_past_two) == utc(2025, 3, 9, 7, 0)
    assert send_time(date(2025, 3, 16), NEW_YORK, half_past_two) == utc(2025, 3, 16, 6, 30)


def test_a_send_time_that_happens_twice_is_its_first_occurrence() -> None:
    policy = Policy(send_time=time(1, 30), quiet_start=time(22, 0), quiet_end=time(1, 0))
    assert send_time(date(2025, 10, 26), LONDON, policy) == utc(2025, 10, 26, 0, 30)  # BST


def test_quiet_hours_ending_in_the_repeated_hour_end_at_its_first_occurrence() -> None:
    late = Policy(quiet_start=time(22, 0), quiet_end=time(1, 30))
    assert in_quiet_hours(utc(2025, 10, 26, 0, 29), LONDON, late)  # 01:29 BST
    assert not in_quiet_hours(utc(2025, 10, 26, 0, 30), LONDON, late)  # 01:30 BST
    assert not in_quiet_hours(utc(2025, 10, 26, 1, 15), LONDON, late)  # 01:15 GMT, again


def test_a_day_the_clocks_skipped_entirely() -> None:
    # Samoa skipped Friday 30 December 2011: Thursday 23:59:59 (-10) was followed by Saturday
    # 00:00 (+14). The night that would have started on the skipped day starts when it ended.
    apia = "Pacific/Apia"
    thursday_night = utc(2011, 12, 30, 7, 0)  # Thursday 21:00 local
    assert in_quiet_hours(thursday_night, apia, POLICY)
    assert next_allowed(thursday_night, apia, POLICY) == utc(2011, 12, 30, 17, 0)  # Sat 07:00
    # 09:00 on the skipped day becomes the end of the gap, Saturday 00:00, which is quiet.
    assert send_time(date(2011, 12, 30), apia, POLICY) == utc(2011, 12, 30, 17, 0)  # Sat 07:00
    assert send_time(date(2011, 12, 31), apia, POLICY) == utc(2011, 12, 30, 19, 0)  # Sat 09:00


# -- deciding -----------------------------------------------------------------------------------


def test_a_reminder_goes_now_once_its_day_has_come_and_it_is_not_quiet() -> None:
    ten = utc(2025, 3, 3, 7, 0)  # 10:00 in Dar es Salaam
    assert plan(now=ten) == Send(channel="sms", phone="+255712345678", language="sw", send_at=ten)
    early = utc(2025, 3, 3, 2, 0)  # 05:00: not before 09:00 on its day
    assert sent_at(plan(now=early)) == utc(2025, 3, 3, 6, 0)
    night = utc(2025, 3, 3, 19, 0)  # 22:00: at the end of quiet hours
    assert sent_at(plan(now=night)) == utc(2025, 3, 4, 4, 0)


def test_each_reason_to_skip() -> None:
    now = utc(2025, 3, 1, 12, 0)
    assert plan(now=now, reminder_changes={"active": False}) == Skip(REVOKED)
    assert plan(now=now, opted_out=True) == Skip(OPTED_OUT)
    assert plan(now=now, consents=Consents()) == Skip(NO_CONSENT)
    assert plan(now=now, phone=None) == Skip(NO_PHONE)
    assert plan(now=utc(2025, 3, 5, 6, 0)) == Skip(TOO_LATE)
    assert {REVOKED, OPTED_OUT, NO_CONSENT, NO_PHONE, TOO_LATE} == {
        "the reminder was revoked",
        "the patient opted out (STOP)",
        "no consent to reminders",
        "no phone number",
        "too late: its day has passed",
    }


def test_an_opt_out_wins_over_every_consent() -> None:
    both = Consents(sms=True, voice=True)
    assert plan(now=utc(2025, 3, 1, 12, 0), consents=both, opted_out=True) == Skip(OPTED_OUT)


def test_a_reminder_for_another_patient_is_refused() -> None:
    with pytest.raises(ValueError, match="not the patient"):
        plan(now=utc(2025, 3, 1, 12, 0), patient_id="p2")


@pytest.mark.parametrize(
    ("sms", "voice", "medium", "expected"),
    [
        (True, None, None, "sms"),
        (True, False, "voice", "sms"),  # the request cannot ask for what the patient refused
        (None, True, None, "voice"),
        (False, True, "sms", "voice"),
        (True, True, None, "sms"),
        (True, True, "sms", "sms"),
        (True, True, "voice", "voice"),
        (None, None, "sms", None),
        (False, False, None, None),
        (False, None, "voice", None),
    ],
)
def test_the_channel(sms: bool | None, voice: bool | None, medium: Any, expected: Any) -> None:
    decision = plan(
        now=utc(2025, 3, 1, 12, 0),
        consents=Consents(sms=sms, voice=voice),
        reminder_changes={"medium": medium},
    )
    if expected is None:
        assert decision == Skip(NO_CONSENT)
    else:
        assert isinstance(decision, Send)
        assert decision.channel == expected


@pytest.mark.parametrize(
    ("requested", "patients", "expected"),
    [
        ("sw", "en", "sw"),
        ("sw-TZ", "en", "sw"),
        ("en", "sw", "en"),
        (None, "sw", "sw"),
        (None, "SW", "sw"),
        (None, None, "en"),
        ("fr", "sw", "en"),  # the reminder's language counts, and is not supported
        (None, "pt-BR", "en"),
    ],
)
def test_the_language(requested: str | None, patients: str | None, expected: str) -> None:
    decision = plan(
        now=utc(2025, 3, 1, 12, 0),
        language=patients,
        reminder_changes={"language": requested},
    )
    assert isinstance(decision, Send)
    assert decision.language == expected


def test_a_policy_that_supports_fewer_languages_uses_its_default() -> None:
    english_only = Policy(languages=("en",))
    assert plan(now=utc(2025, 3, 1, 12, 0), policy=english_only, language="sw") == Send(
        channel="sms", phone="+255712345678", language="en", send_at=utc(2025, 3, 3, 6, 0)
    )


# -- too late -----------------------------------------------------------------------------------


def test_too_late_is_after_the_last_day_in_the_patients_zone() -> None:
    # Day 3 March, one late day: the last moment is 4 March 23:59:59 in Dar es Salaam.
    assert not too_late(DAY, DAR, POLICY, utc(2025, 3, 4, 20, 59, 59))
    assert too_late(DAY, DAR, POLICY, utc(2025, 3, 4, 21, 0))
    assert not too_late(DAY, LIMA, POLICY, utc(2025, 3, 5, 4, 59))
    assert too_late(DAY, LIMA, POLICY, utc(2025, 3, 5, 5, 0))
    same_day = Policy(late_days=0)
    assert too_late(DAY, DAR, same_day, utc(2025, 3, 3, 21, 0))
    assert not too_late(DAY, DAR, same_day, utc(2025, 3, 3, 20, 59))


def test_a_reminder_a_day_late_still_goes_and_one_held_past_its_last_day_does_not() -> None:
    next_morning = utc(2025, 3, 4, 7, 0)  # 10:00 the next day
    assert sent_at(plan(now=next_morning)) == next_morning
    # 22:00 on its last day: quiet hours would hold it until 07:00 the day after, too late.
    assert plan(now=utc(2025, 3, 4, 19, 0)) == Skip(TOO_LATE)


# -- the policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"default_zone": "Mars/Olympus_Mons"},
        {"default_language": "fr"},
        {"languages": ("en", "fr")},
        {"late_days": -1},
        {"send_time": time(9, 0, tzinfo=UTC)},
    ],
)
def test_a_bad_policy_is_refused_when_it_is_made(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="policy"):
        Policy(**changes)


# -- properties ---------------------------------------------------------------------------------

ZONES = [
    DAR,
    LIMA,
    LONDON,
    NEW_YORK,
    "UTC",
    "Australia/Lord_Howe",  # a 30-minute change
    "Antarctica/Troll",  # a 2-hour change
    "America/Havana",  # changes at midnight
    "America/Santiago",  # southern hemisphere, changes at midnight
    "Asia/Kathmandu",  # UTC+5:45
    "Pacific/Chatham",
    "Pacific/Apia",  # skipped 30 December 2011
]
MINUTES = st.integers(min_value=0, max_value=24 * 60 - 1)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """Quiet windows of up to 22 hours of wall-clock time: a window can last two hours longer
    than its wall-clock length on a night the clocks go back (Troll), and real policies are
    about eleven hours, so 22 keeps the 24-hour bound meaningful."""
    start = draw(MINUTES)
    length = draw(st.integers(min_value=0, max_value=22 * 60))
    end = (start + length) % (24 * 60)
    return Policy(quiet_start=_time(start), quiet_end=_time(end))


def _time(minutes: int) -> time:
    return time(minutes // 60, minutes % 60)


moments = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - bounds; the values are UTC
    max_value=datetime(2040, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(moment=moments, zone=st.sampled_from(ZONES), policy=policies())
@example(utc(2025, 3, 30, 0, 45), LONDON, Policy(quiet_start=time(0, 30), quiet_end=time(1, 30)))
@example(utc(2025, 10, 26, 1, 15), LONDON, Policy(quiet_start=time(1, 0), quiet_end=time(1, 30)))
@example(utc(2011, 12, 30, 9, 0), "Pacific/Apia", POLICY)
@example(utc(2025, 3, 30, 0, 45), LONDON, Policy(quiet_start=time(1, 30), quiet_end=time(1, 0)))
def test_next_allowed_is_the_first_instant_out_of_quiet_hours_within_a_day(
    moment: datetime, zone: str, policy: Policy
) -> None:
    allowed = next_allowed(moment, zone, policy)
    assert allowed.tzinfo is UTC
    assert moment <= allowed <= moment + timedelta(hours=24)
    assert not in_quiet_hours(allowed, zone, policy)
    if allowed > moment:
        assert in_quiet_hours(moment, zone, policy)
        assert in_quiet_hours(max(moment, allowed - timedelta(seconds=1)), zone, policy)
    assert next_allowed(allowed, zone, policy) == allowed
