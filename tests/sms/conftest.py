"""The reminder service's tests run on central's database, on both backends: this re-exports
central's ``database`` fixture (ids ``sqlite`` and ``postgresql``), which creates the ``sms``
tables with central's own."""

from tests.central.conftest import database, postgres_schema  # noqa: F401
