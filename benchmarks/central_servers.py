"""Real servers for the central benchmark: central and a hub, each in its own process group.

Each runs in a ``benchmarks.servers.ServerProcess`` (central forks several worker processes,
which stop with it). ``central_server`` starts ``python -m central serve`` on a database
URL with ``CENTRAL_WORKERS=2``; ``hub_server`` starts ``python -m sync_hub serve`` pushing to a
central. Clients are registered in central's database with ``central.clients.add_client``
before the server starts, each with a P-384 key made here, and get their bearer tokens at
``/auth/token`` with a client assertion signed by ``sync_hub.credentials.client_assertion``
(the hub's own code for it). ``postgres_schema`` gives a fresh schema of the local PostgreSQL,
dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks.servers import ServerProcess, process_cpu_seconds
from central.clients import add_client
from central.database import open_database
from field_app.demo.ports import free_port
from sync_hub.credentials import client_assertion, public_jwk

POSTGRES_URL = os.environ.get(
    "CENTRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
START_SECONDS = 60.0
STOP_SECONDS = 15.0
# Long enough that no token runs out during a scene; central allows up to an hour.
TOKEN_SECONDS = 3600
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
READ_SCOPE = "system/*.read"
# Validating FHIR is CPU-bound: one worker process per core of this 2-core machine.
WORKERS = 2


# -- central --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Central:
    url: str
    database_url: str
    workers: int
    process: ServerProcess

    @property
    def token_url(self) -> str:
        return f"{self.url}/auth/token"

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by central's processes, workers included."""
        return sum(process_cpu_seconds(pid) for pid in self.process.group_pids())


@contextmanager
def central_server(folder: Path, database_url: str) -> Iterator[Central]:
    """``python -m central serve`` over ``database_url`` on a free port."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CENTRAL_")}
    env |= {
        "CENTRAL_DATABASE_URL": database_url,
        "CENTRAL_BASE_URL": url,
        "CENTRAL_PORT": str(port),
        "CENTRAL_TOKEN_SECONDS": str(TOKEN_SECONDS),
        "CENTRAL_WORKERS": str(WORKERS),
    }
    command = [sys.executable, "-m", "central", "serve"]
    with ServerProcess("central", command, env, f"{url}/health", folder / "central.log") as server:
        yield Central(url, database_url, WORKERS, server)


@dataclass(frozen=True)
class ClientKey:
    client_id: str
    key: ec.EllipticCurvePrivateKey


def register_client(database_url: str, client_id: str, region: str, scopes: str) -> ClientKey:
    """A new key, registered at central in its database (what ``client add`` does)."""
    key = ec.generate_private_key(ec.SECP384R1())
    database = open_database(database_url)
    try:
        database.create()
        with database.write() as session:
            add_client(session, client_id, region, public_jwk(key), scopes, now=datetime.now(UTC))
    finally:
        database.close()
    return ClientKey(client_id, key)


def fetch_token(http: httpx.Client, central: Central, client: ClientKey, scope: str) -> str:
    """A bearer token from ``/auth/token`` (SMART Backend Services)."""
    assertion = client_assertion(
        client.key, client_id=client.client_id, token_url=central.token_url, now=datetime.now(UTC)
    )
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    answer = http.post(central.token_url, data=form, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


# -- the hub --------------------------------------------------------------------------------------


@contextmanager
def hub_server(
    folder: Path, hub_db: Path, central: Central, settings: Mapping[str, str]
) -> Iterator[str]:
    """``python -m sync_hub --db HUB_DB serve`` with ``settings`` (its SYNC_HUB_* variables)
    pushing to ``central``; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_HUB_")}
    env |= {**settings, "SYNC_HUB_CENTRAL_URL": central.url}
    command = [sys.executable, "-m", "sync_hub", "--db", str(hub_db), "serve", "--port", str(port)]
    with ServerProcess("the hub", command, env, f"{url}/health", folder / "hub.log"):
        yield url


# -- PostgreSQL -----------------------------------------------------------------------------------


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema ``bench_<random>`` of the local PostgreSQL, dropped afterwards: yields the
    URL that has it as the search path."""
    name = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    joiner = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{joiner}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")
