"""Central's FHIR API in process, for the tests in tests/central/api/ (their conftest gives the
``api`` fixture on each backend of the ``database`` fixture): the app from ``create_app`` driven
by Litestar's ``TestClient``, with three registered clients that get real bearer tokens at
``/auth/token`` by signing a client assertion with their own P-384 keys, as a hub does.

    api.kilosa     the hub of region kilosa      system/*.read system/*.write
    api.morogoro   the hub of region morogoro    system/*.read system/*.write
    api.console    the console, region *         system/*.read system/*.write

``Caller`` wraps ``TestClient`` with a client's token and FHIR JSON; ``Central.rows()`` counts
the rows of every table a write touches, so a test can show that a refused request wrote
nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from litestar.testing import TestClient

from central.app import create_app
from central.auth import ASSERTION_TYPE
from central.clients import add_client
from central.clock import FixedClock
from central.database import Database
from central.settings import Settings

NOW = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)
BASE_URL = "http://testserver.local"
FHIR_JSON = "application/fhir+json"
REGION_SYSTEM = "urn:rural-care:region"
PATIENT_SYSTEM = "urn:rural-care:patient"
READ_WRITE = "system/*.read system/*.write"
SEARCH_TABLES = ("search_token", "search_string", "search_date", "search_reference")
WRITTEN_TABLES = ("resources", "history", *SEARCH_TABLES)


@dataclass
class Registered:
    """A client central knows: the private key it signs its assertions with."""

    client_id: str
    region: str
    key: ec.EllipticCurvePrivateKey
    kid: str


class Caller:
    """Requests to central as one client: its bearer token on each, bodies as FHIR JSON."""

    def __init__(self, http: TestClient[Any], token: str | None) -> None:
        self.http = http
        self.token = token

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        found = {"Accept": FHIR_JSON}
        if self.token is not None:
            found["Authorization"] = f"Bearer {self.token}"
        return {**found, **(extra or {})}

    def get(self, path: str, **headers: str) -> httpx.Response:
        return self.http.get(path, headers=self.headers(_header_names(headers)))

    def delete(self, path: str, **headers: str) -> httpx.Response:
        return self.http.delete(path, headers=self.headers(_header_names(headers)))

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        return self.send("POST", path, body, **headers)

    def put(self, path: str, body: Any, **headers: str) -> httpx.Response:
        return self.send("PUT", path, body, **headers)

    def send(self, method: str, path: str, body: Any, **headers: str) -> httpx.Response:
        """``body``: JSON to encode, or bytes sent as they are."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        given = {"Content-Type": FHIR_JSON, **_header_names(headers)}
        return self.http.request(method, path, content=content, headers=self.headers(given))


def _header_names(headers: dict[str, str]) -> dict[str, str]:
    """Keyword arguments as header names: ``if_match`` -> ``If-Match``."""
    return {"-".join(p.capitalize() for p in k.split("_")): v for k, v in headers.items()}


class Central:
    """Central in process on one database, with its clock and its registered clients."""

    def __init__(self, database: Database, *, max_bundle_entries: int = 5000) -> None:
        self.database = database
        self.clock = FixedClock(NOW)
        self.settings = Settings(
            database_url="sqlite:///unused.db",  # the database is passed in
            base_url=BASE_URL,
            max_bundle_entries=max_bundle_entries,
        )
        self.app = create_app(self.settings, database=database, clock=self.clock)
        self.http: TestClient[Any] = TestClient(self.app, base_url=BASE_URL)
        self.clients: dict[str, Registered] = {}

    def register(self, client_id: str, region: str, scopes: str = READ_WRITE) -> Registered:
        key = ec.generate_private_key(ec.SECP384R1())
        kid = f"{client_id}-key-1"
        jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}
        with self.database.write() as session:
            add_client(session, client_id, region, {"keys": [jwk]}, scopes, now=self.clock.now())
        self.clients[client_id] = Registered(client_id, region, key, kid)
        return self.clients[client_id]

    def assertion(self, client_id: str) -> str:
        """A client assertion as SMART Backend Services asks: signed ES384, iss = sub = the
        client, aud = the token URL, expiring within five minutes, a jti never used before."""
        client = self.clients[client_id]
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": self.settings.token_url,
            "exp": int(self.clock.now().timestamp()) + 240,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, client.key, algorithm="ES384", headers={"kid": client.kid})

    def token(self, client_id: str, scope: str = READ_WRITE) -> str:
        answer = self.http.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(client_id),
                "scope": scope,
            },
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    def caller(self, client_id: str, scope: str = READ_WRITE) -> Caller:
        return Caller(self.http, self.token(client_id, scope))

    def anonymous(self) -> Caller:
        return Caller(self.http, None)

    def rows(self) -> dict[str, int]:
        """Rows in each table a FHIR write touches, and the sum of the current versions (which
        an update in place would change without adding a row to ``resources``)."""
        with self.database.read() as session:
            found = {
                table: int(session.execute(f"SELECT COUNT(*) FROM {table}")[0][0])  # noqa: S608
                for table in WRITTEN_TABLES
            }
            found["versions"] = int(
                session.execute("SELECT COALESCE(SUM(version), 0) FROM resources")[0][0]
            )
        return found

    def audit_rows(self) -> int:
        with self.database.read() as session:
            count: int = session.execute("SELECT COUNT(*) FROM audit_log")[0][0]
        return count

    def audit_events(self) -> list[str]:
        """Every AuditEvent of the trail as stored (canonical JSON text)."""
        with self.database.read() as session:
            return [row[0] for row in session.execute("SELECT event FROM audit_log ORDER BY seq")]


class Api:
    """The central under test and its three clients, each of which asks for its token when a
    test first calls on it."""

    def __init__(self, central: Central) -> None:
        self.central = central
        central.register("hub-kilosa", "kilosa")
        central.register("hub-morogoro", "morogoro")
        central.register("console", "*")

    @cached_property
    def kilosa(self) -> Caller:
        return self.central.caller("hub-kilosa")

    @cached_property
    def morogoro(self) -> Caller:
        return self.central.caller("hub-morogoro")

    @cached_property
    def console(self) -> Caller:
        return self.central.caller("console")


# -- resources ------------------------------------------------------------------------------------


def region_tag(region: str) -> dict[str, Any]:
    return {"tag": [{"system": REGION_SYSTEM, "code": region}]}


def patient(
    region: str = "kilosa",
    *,
    family: str = "Mwakasege",
    given: str = "Zawadi",
    chart: str | None = None,
    rid: str | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "meta": region_tag(region),
        "identifier": [{"system": PATIENT_SYSTEM, "value": chart or str(uuid.uuid4())}],
        "active": True,
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1994-06-11",
        "telecom": [{"system": "phone", "value": "+255754000111", "use": "mobile"}],
    }
    if rid is not None:
        resource["id"] = rid
    return resource


def encounter(patient_id: str, region: str = "kilosa", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "meta": region_tag(region),
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "HH",
            "display": "home health",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": "2026-02-27T09:15:00Z"},
        **extra,
    }


def observation(subject: str, region: str = "kilosa", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "meta": region_tag(region),
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2026-02-27T09:20:00Z",
        "valueQuantity": {
            "value": 38.4,
            "unit": "Cel",
            "system": "http://unitsofmeasure.org",
            "code": "Cel",
        },
        **extra,
    }


def practitioner(value: str, region: str = "kilosa") -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "meta": region_tag(region),
        "identifier": [{"system": "urn:rural-care:practitioner", "value": value}],
        "name": [{"family": "Kombo", "given": ["Neema"]}],
    }


# Values of ``patient()`` that no error message may repeat (names, phone, birth date).
PATIENT_VALUES = ("Mwakasege", "Zawadi", "+255754000111", "1994-06-11")


def outcome_text(answer: httpx.Response) -> str:
    """The diagnostics of an OperationOutcome answer; fails the test if it is not one."""
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert answer.headers["content-type"].startswith(FHIR_JSON)
    issues = body["issue"]
    assert issues
    assert all(i["severity"] in ("error", "fatal") and i["code"] for i in issues)
    return " ".join(i.get("diagnostics", "") for i in issues)


def refusal(answer: httpx.Response, status: int) -> str:
    """The message of a refused request, checked: the status, an OperationOutcome that says
    something, and no patient value in the whole answer."""
    assert answer.status_code == status, answer.text
    text = outcome_text(answer)
    assert len(text) >= 20, text
    for value in PATIENT_VALUES:
        assert value not in answer.text, f"the answer repeats a patient value: {answer.text}"
    return text


@contextmanager
def nothing_written(central: Central) -> Iterator[None]:
    """Fails if the block adds, removes or changes the count of any row a FHIR write touches."""
    before = central.rows()
    yield
    assert central.rows() == before
