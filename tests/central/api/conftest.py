"""The ``api`` fixture: central in process on each backend with its three clients
(tests/central/fhir_fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from central.database import Database
from tests.central.fhir_fixtures import Api, Central


@pytest.fixture
def api(database: Database) -> Iterator[Api]:
    central = Central(database)
    with central.http:
        yield Api(central)
