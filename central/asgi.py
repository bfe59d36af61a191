"""The ASGI entry point for several server processes: ``uvicorn --factory central.asgi:app``.

Each worker process builds its own settings from the environment (the same environment, so the
same settings) and its own connection pool; they share the database and nothing else.
"""

from __future__ import annotations

from litestar import Litestar

from central.app import create_app
from central.settings import Settings


def app() -> Litestar:
    return create_app(Settings.from_env())
