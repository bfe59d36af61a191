"""Shared fixtures for the care record tests: a fixed clock and a way to make charts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from care_record import Chart, FixedClock

START = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)

AMINA: dict[str, Any] = {
    "given": "Amina",
    "family": "Juma",
    "sex": "female",
    "birth_date": "1994-06-15",
    "phone": "+255712345678",
    "village": "Kijiji cha Mlima",
}

MakeChart = Callable[..., Chart]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def amina() -> dict[str, Any]:
    """Valid demographics of a new patient."""
    return dict(AMINA)


@pytest.fixture
def make_chart(clock: FixedClock) -> MakeChart:
    """Make a patient chart on the test's clock; keyword arguments override demographics."""

    def make(*, author: str = "chw-amina", **demographics: Any) -> Chart:
        return Chart.new_patient({**AMINA, **demographics}, author=author, clock=clock)

    return make


@pytest.fixture
def chart(make_chart: MakeChart) -> Chart:
    return make_chart()
