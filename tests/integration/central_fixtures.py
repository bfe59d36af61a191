"""Helpers for the round trip tablet -> hub -> central and back, with every process real.

``CentralProcess`` is ``python -m central serve`` in a subprocess on a free port, on a SQLite
file in the test's folder or on a fresh schema of the PostgreSQL at ``CENTRAL_TEST_POSTGRES_URL``
(by default the local one; the schema is dropped afterwards). Clients are registered with
``python -m central client add``. ``SmartClient`` is a registered client (the clinician
console, or a hub seen from outside) reading and writing FHIR with bearer tokens from
``python -m central token``. ``wire_hub`` makes a ``HubProcess`` (tests/integration/
conftest.py) push to central: its key from ``python -m sync_hub central-key``, registered at
central for its region.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from field_app.demo.ports import free_port
from sync_hub import credentials
from sync_hub.store import Store as HubStore
from tests.integration.conftest import ROOT, HubProcess, wait_until_answering

POSTGRES_URL = os.environ.get(
    "CENTRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")
START_SECONDS = 30
FHIR_JSON = "application/fhir+json"
MESSAGE_CATEGORY = "urn:rural-care:message"
ALL_REGIONS = "*"

T = TypeVar("T")


# -- central's database ---------------------------------------------------------------------------


@contextmanager
def central_database(backend: str, folder: Path) -> Iterator[str]:
    """The URL of an empty database for central on ``backend``: a SQLite file in ``folder``,
    or a fresh PostgreSQL schema, dropped afterwards."""
    if backend == "sqlite":
        folder.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{folder / 'central.db'}"
        return
    with postgres_schema() as url:
        yield url


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema of the test PostgreSQL as the search path of the URL yielded."""
    name = f"rt_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc.__class__.__name__}): "
            "start it, or set CENTRAL_TEST_POSTGRES_URL to one that is",
            pytrace=False,
        )
    joiner = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{joiner}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


# -- central ---------------------------------------------------------------------------------------


class CentralProcess:
    """``python -m central serve`` as a subprocess on one database, and its command line."""

    def __init__(
        self, folder: Path, database_url: str, extra_env: dict[str, str] | None = None
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.log_path = folder / "central.log"
        self.process: subprocess.Popen[bytes] | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("CENTRAL_")}
        self.env = {
            **env,
            "CENTRAL_DATABASE_URL": database_url,
            "CENTRAL_BASE_URL": self.url,
            "CENTRAL_PORT": str(self.port),
            # The tests' processes share two cores with each other.
            "CENTRAL_POOL_SIZE": "4",
            **(extra_env or {}),
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fhir_url(self) -> str:
        return f"{self.url}/fhir"

    def command(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "central", *argv]

    def start(self) -> None:
        """Start the server (again after a stop: same database, same port) and wait until
        GET /health answers."""
        assert self.process is None, "central is already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command("serve", "--port", str(self.port)),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
            )
        try:
            wait_until_answering(self.process, f"{self.url}/health", START_SECONDS)
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"central {exc}:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last commit."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """``python -m central ARGV`` on the server's database and settings; it must succeed."""
        done = subprocess.run(
            self.command(*argv),
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=self.env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done

    def token(self, client_id: str) -> tuple[str, float]:
        """``python -m central token --client ID``: a bearer token, and the monotonic time at
        which to get a new one (a minute before it expires)."""
        done = self.run("token", "--client", client_id)
        lifetime = re.search(r"valid (\d+) s", done.stderr)
        assert lifetime is not None, done.stderr
        return done.stdout.strip(), time.monotonic() + int(lifetime.group(1)) - 60

    def add_client(self, client_id: str, region: str, jwk: dict[str, Any]) -> None:
        """``python -m central client add`` with the public JWK in a file."""
        path = self.folder / f"{client_id}.jwk"
        path.write_text(json.dumps(jwk), encoding="utf-8")
        self.run("client", "add", "--id", client_id, "--region", region, "--jwk", str(path))


class SmartClient:
    """A registered client of central, as the clinician console or a hub: bearer tokens from
    ``python -m central token --client ID``, FHIR over httpx."""

    def __init__(self, central: CentralProcess, client_id: str) -> None:
        self.central = central
        self.client_id = client_id
        self.http = httpx.Client(base_url=central.fhir_url, timeout=30)
        self._token: tuple[str, float] | None = None

    @classmethod
    def registered(cls, central: CentralProcess, client_id: str, region: str) -> SmartClient:
        """A new client with a P-384 key of its own, registered at central for ``region``."""
        key = ec.generate_private_key(ec.SECP384R1())
        central.add_client(client_id, region, credentials.public_jwk(key))
        return cls(central, client_id)

    def token(self) -> str:
        """A bearer token, renewed a minute before it expires."""
        if self._token is None or time.monotonic() > self._token[1]:
            self._token = self.central.token(self.client_id)
        return self._token[0]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}", "Accept": FHIR_JSON}

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params, headers=self.headers())

    def read(self, reference: str) -> dict[str, Any]:
        answer = self.get(reference)
        assert answer.status_code == 200, f"{reference}: {answer.status_code} {answer.text}"
        found: dict[str, Any] = answer.json()
        return found

    def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        """Every match of a search, following the ``next`` links."""
        answer = self.get(resource_type, _count="200", **params)
        found: list[dict[str, Any]] = []
        while True:
            assert answer.status_code == 200, answer.text
            page = answer.json()
            found += [
                e["resource"] for e in page.get("entry", []) if e["search"]["mode"] == "match"
            ]
            following = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
            if not following:
                return found
            answer = self.http.get(following[0], headers=self.headers())

    def history(self, reference: str) -> list[dict[str, Any]]:
        answer = self.get(f"{reference}/_history")
        assert answer.status_code == 200, answer.text
        return [e.get("resource", {}) for e in answer.json().get("entry", [])]

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(resource).encode()
        headers = {**self.headers(), "Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        answer = self.http.post(resource["resourceType"], content=body, headers=headers)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def close(self) -> None:
        self.http.close()


# -- a hub wired to central ------------------------------------------------------------------------


def wire_hub(
    hub: HubProcess,
    central: CentralProcess,
    *,
    region: str,
    client_id: str,
    registered_region: str | None = None,
) -> None:
    """Point a hub (not started yet) at central as ``client_id``: its key made by
    ``python -m sync_hub central-key`` and registered at central for ``registered_region``
    (by default the region the hub tags its pushes with)."""
    hub.env.update(
        {
            "SYNC_HUB_CENTRAL_URL": central.url,
            "SYNC_HUB_REGION": region,
            "SYNC_HUB_CLIENT_ID": client_id,
            "SYNC_HUB_CENTRAL_KEY": str(hub.folder / "central_key.pem"),
            "SYNC_HUB_PUSH_INTERVAL_SECONDS": "1",
            "SYNC_HUB_FETCH_INTERVAL_SECONDS": "1",
            "SYNC_HUB_CENTRAL_TIMEOUT_SECONDS": "5",
        }
    )
    jwk = json.loads(hub.ok("central-key"))
    central.add_client(client_id, registered_region or region, jwk)


def hub_store(hub: HubProcess) -> HubStore:
    return HubStore(hub.db, busy_timeout_seconds=30)


# -- waiting ---------------------------------------------------------------------------------------


def eventually(check: Callable[[], T | None], *, seconds: float = 30.0, what: str = "") -> T:
    """Call ``check`` until it returns something other than None (or False); fail after
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)
