"""Vital-sign limits and codes; time-ordered UUIDv7 record IDs."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from care_record import VITAL_SIGNS, FixedClock, InvalidValue, new_id, vital_observations
from care_record.ids import id_time_ms, is_uuid7, uuid7_from

# name -> (LOINC code, UCUM unit), written out here so a change to either is a visible change.
EXPECTED_CODES = {
    "systolic": ("8480-6", "mm[Hg]"),
    "diastolic": ("8462-4", "mm[Hg]"),
    "pulse": ("8867-4", "/min"),
    "temperature": ("8310-5", "Cel"),
    "spo2": ("59408-5", "%"),
    "weight": ("29463-7", "kg"),
    "muac": ("56072-2", "mm"),
    "respiratory_rate": ("9279-1", "/min"),
}

LIMITS = [
    pytest.param(name, limit, id=f"{name}-{end}")
    for name, sign in VITAL_SIGNS.items()
    for end, limit in (("low", sign.low), ("high", sign.high))
]


def test_every_vital_sign_has_its_code_and_unit() -> None:
    assert {name: (s.loinc, s.unit) for name, s in VITAL_SIGNS.items()} == EXPECTED_CODES


@pytest.mark.parametrize(("name", "limit"), LIMITS)
def test_a_reading_at_a_limit_is_accepted(name: str, limit: float) -> None:
    [observation] = vital_observations({name: limit})

    assert (observation.code, observation.unit) == EXPECTED_CODES[name]
    assert observation.value == limit
    assert observation.display == VITAL_SIGNS[name].display


@pytest.mark.parametrize(("name", "limit"), LIMITS)
def test_a_reading_just_outside_a_limit_is_refused(name: str, limit: float) -> None:
    sign = VITAL_SIGNS[name]
    outside = math.nextafter(limit, -math.inf if limit == sign.low else math.inf)

    with pytest.raises(InvalidValue) as refused:
        vital_observations({name: outside})

    assert str(refused.value).startswith(f"{name}: must be between {sign.low:g} and {sign.high:g}")


@pytest.mark.parametrize("name", list(VITAL_SIGNS))
def test_a_reading_a_step_inside_each_limit_is_accepted(name: str) -> None:
    sign = VITAL_SIGNS[name]
    step = (sign.high - sign.low) / 1000

    observations = vital_observations({name: sign.low + step}) + vital_observations(
        {name: sign.high - step}
    )

    assert [o.value for o in observations] == [sign.low + step, sign.high - step]


def test_every_bad_reading_is_named() -> None:
    with pytest.raises(InvalidValue) as refused:
        vital_observations({"pulse": 400, "temperature": 73, "glucose": 5.5, "spo2": 97})

    message = str(refused.value)
    assert "pulse: must be between 20 and 250 /min" in message
    assert "temperature: must be between 30 and 45 Cel" in message
    assert "glucose: not a known vital sign" in message
    assert "spo2" not in message.split("(", maxsplit=1)[0]


@pytest.mark.parametrize(("systolic", "diastolic"), [(120, 120), (90, 140)])
def test_diastolic_at_or_above_systolic_is_refused(systolic: float, diastolic: float) -> None:
    with pytest.raises(InvalidValue, match="diastolic: must be lower than systolic"):
        vital_observations({"systolic": systolic, "diastolic": diastolic})


def test_diastolic_just_below_systolic_is_accepted() -> None:
    systolic, diastolic = vital_observations({"systolic": 120, "diastolic": 119})

    assert (systolic.code, systolic.value) == ("8480-6", 120.0)
    assert (diastolic.code, diastolic.value) == ("8462-4", 119.0)


def test_readings_are_stored_as_floats() -> None:
    [observation] = vital_observations({"pulse": 72})

    assert isinstance(observation.value, float)


# -- IDs ----------------------------------------------------------------------------------------


def test_new_id_is_a_canonical_uuid7_carrying_the_clock_time(clock: FixedClock) -> None:
    record_id = new_id(clock)
    parsed = uuid.UUID(record_id)

    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == record_id
    assert is_uuid7(record_id)
    assert id_time_ms(record_id) == int(clock.now().timestamp()) * 1000


def test_ids_sort_by_the_clock_time(clock: FixedClock) -> None:
    made = []
    for _ in range(200):
        made.append(new_id(clock))
        clock.advance(timedelta(milliseconds=1))

    assert sorted(made) == made
    assert len(set(made)) == len(made)


def test_ids_made_in_one_millisecond_are_distinct(clock: FixedClock) -> None:
    made = {new_id(clock) for _ in range(1000)}

    assert len(made) == 1000
    assert {id_time_ms(i) for i in made} == {int(clock.now().timestamp() * 1000)}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(days=3650)),
)
def test_an_id_holds_its_unix_millisecond_and_later_ids_sort_after(
    moment: datetime, gap: timedelta
) -> None:
    earlier, later = str(uuid7_from(moment)), str(uuid7_from(moment + gap))

    assert id_time_ms(earlier) == (moment - EPOCH) // timedelta(milliseconds=1)
    assert id_time_ms(later) == (moment + gap - EPOCH) // timedelta(milliseconds=1)
    assert later > earlier
    assert is_uuid7(earlier)


def test_an_id_keeps_the_exact_millisecond_of_a_float_unfriendly_time() -> None:
    # moment.timestamp() * 1000 comes out a hair below ...832 for this time.
    moment = datetime(2038, 2, 27, 15, 16, 39, 832000, tzinfo=UTC)

    assert id_time_ms(str(uuid7_from(moment))) == 2150896599832


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0195533e-8f00-7abc-8def-0123456789ab", id="uuid7"),
    ],
)
def test_is_uuid7_accepts_canonical_text(text: str) -> None:
    assert is_uuid7(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0195533E-8F00-7ABC-8DEF-0123456789AB", id="upper case"),
        pytest.param("0195533e8f007abc8def0123456789ab", id="no hyphens"),
        pytest.param("{0195533e-8f00-7abc-8def-0123456789ab}", id="braces"),
        pytest.param("urn:uuid:0195533e-8f00-7abc-8def-0123456789ab", id="urn"),
        pytest.param(" 0195533e-8f00-7abc-8def-0123456789ab", id="leading space"),
        pytest.param("0195533e-8f00-4abc-8def-0123456789ab", id="version 4"),
        pytest.param("0195533e-8f00-7abc-cdef-0123456789ab", id="Microsoft variant"),
        pytest.param(str(uuid.uuid4()), id="random uuid4"),
        pytest.param("0195533e-8f00-7abc-8def-0123456789a", id="too short"),
        pytest.param("", id="empty"),
        pytest.param("patient-7", id="not a UUID"),
    ],
)
def test_is_uuid7_rejects_non_canonical_text(text: str) -> None:
    assert not is_uuid7(text)
