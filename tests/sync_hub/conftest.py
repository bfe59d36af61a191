"""Shared fixtures for the hub tests: a real SQLite file in ``tmp_path``, the Litestar app in
process, a fixed clock, the hub's CLI, and tablets that enrol and sync as real ones do.

A test tablet is ``care_record.sync``'s reference replica (``MemoryReplica``, initiating) with
an Ed25519 key of its own: it signs every request over ``signed_message`` and sends real
Automerge charts through real frames.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from httpx import Response
from jwt.algorithms import ECAlgorithm
from litestar.testing import TestClient

from care_record import Chart, FixedClock, HouseholdRecord
from care_record.sync import (
    Absorbed,
    Session,
    SyncRequest,
    SyncResponse,
    absorb,
    build_request,
    decode_frame,
    encode_frame,
    signed_message,
    split_heads,
)
from care_record.sync.memory import MemoryReplica
from sync_hub import Settings, create_app, credentials
from sync_hub.cli import main
from sync_hub.devices import stamp
from sync_hub.store import Store, put_chart

START = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
FRAME_TYPE = "application/x-rcs1"
TABLES = ("charts", "devices", "device_docs", "nonces", "quarantine", "enroll_codes")

PATIENT: dict[str, Any] = {
    "given": "Amina",
    "family": "Juma",
    "sex": "female",
    "birth_date": "1994-06-15",
    "village": "Kijiji cha Mlima",
}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"SYNC_HUB_DB": str(tmp_path / "hub.db")})


@pytest.fixture
def client(settings: Settings, clock: FixedClock) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(settings, clock=clock)) as test_client:
        yield test_client


@dataclass
class Result:
    code: int
    out: str
    err: str


class HubCli:
    """``python -m sync_hub`` in process, on the test's database and clock."""

    def __init__(self, settings: Settings, clock: FixedClock) -> None:
        self.env = {"SYNC_HUB_DB": str(settings.db)}
        self.clock = clock

    def __call__(self, *argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), env=self.env, clock=self.clock, stdout=out, stderr=err)
        return Result(code, out.getvalue(), err.getvalue())

    def ok(self, *argv: str) -> str:
        result = self(*argv)
        assert result.code == 0, result.err
        return result.out.strip()

    def code_for(self, chw: str, villages: str = "", *households: str) -> str:
        """A fresh enrolment code for ``chw`` (created with ``villages`` if new)."""
        argv = ["enroll-code", "--chw", chw]
        argv += ["--catchment", villages] if villages else []
        for household in households:
            argv += ["--household", household]
        return self.ok(*argv).splitlines()[0]


@pytest.fixture
def hub_cli(settings: Settings, clock: FixedClock) -> HubCli:
    return HubCli(settings, clock)


@dataclass
class Tablet:
    """A CHW's tablet: its key, its documents and its sync session with the hub."""

    client: TestClient[Any]
    clock: FixedClock
    device_id: str
    key: Ed25519PrivateKey
    name: str = "tablet"
    replica: MemoryReplica = field(default_factory=lambda: MemoryReplica(_initiator=True))
    session: Session = field(default_factory=lambda: Session("hub"))
    last: SyncResponse | None = None

    # -- charts -----------------------------------------------------------------------------

    def new_chart(self, **fields: Any) -> Chart:
        chart = Chart.new_patient({**PATIENT, **fields}, author=self.name, clock=self.clock)
        self.store(chart)
        return chart

    def new_household(self, village: str) -> HouseholdRecord:
        household = HouseholdRecord.new(
            {"name": "Nyumba", "village": village}, author=self.name, clock=self.clock
        )
        self.store(household)
        return household

    def store(self, record: Chart | HouseholdRecord) -> None:
        self.replica.put(record.id, record.KIND, record.save(), record.heads)

    def chart(self, doc_id: str) -> Chart:
        stored = self.replica.get(doc_id)
        assert stored is not None, "the tablet does not hold that chart"
        return Chart.load(stored.data, author=self.name, clock=self.clock)

    def holds(self) -> set[str]:
        return set(self.replica.docs)

    # -- requests ---------------------------------------------------------------------------

    def request(self) -> SyncRequest:
        return build_request(self.replica, self.session, max_snapshot_bytes=1024 * 1024)

    def headers(
        self,
        body: bytes,
        *,
        time: int | None = None,
        nonce: str | None = None,
        path: str = "/sync",
        method: str = "POST",
    ) -> dict[str, str]:
        stamp = int(self.clock.now().timestamp()) if time is None else time
        nonce = nonce or secrets.token_hex(16)
        signature = self.key.sign(signed_message(method, path, stamp, nonce, body))
        return {
            "Content-Type": FRAME_TYPE,
            "X-Device": self.device_id,
            "X-Time": str(stamp),
            "X-Nonce": nonce,
            "X-Signature": base64.b64encode(signature).decode(),
        }

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> Response:
        return self.client.post("/sync", content=body, headers=headers or self.headers(body))

    def exchange(self, request: SyncRequest) -> tuple[Absorbed, SyncResponse]:
        """Send ``request``; absorb the answer as the tablet would."""
        answer = self.post(encode_frame(request))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith(FRAME_TYPE)
        response = decode_frame(answer.content, SyncResponse)
        self.last = response
        return absorb(self.replica, self.session, request, response), response

    def sync(self) -> Absorbed:
        return self.exchange(self.request())[0]

    def sync_until_done(self, rounds: int = 10) -> list[Absorbed]:
        outcomes = []
        for _ in range(rounds):
            outcomes.append(self.sync())
            if not outcomes[-1].more and not self.replica.dropped_docs("hub"):
                return outcomes
        raise AssertionError("the sync did not settle")


MakeTablet = Callable[..., Tablet]


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def enrol(
    client: TestClient[Any],
    clock: FixedClock,
    hub_cli: HubCli,
    chw: str,
    villages: str,
    *households: str,
) -> Tablet:
    code = hub_cli.code_for(chw, villages, *households)
    key = Ed25519PrivateKey.generate()
    answer = client.post(
        "/enroll", json={"code": code, "public_key": public_key_b64(key), "label": chw}
    )
    assert answer.status_code == 200, answer.text
    return Tablet(client, clock, answer.json()["device_id"], key, name=chw)


@pytest.fixture
def make_tablet(client: TestClient[Any], clock: FixedClock, hub_cli: HubCli) -> MakeTablet:
    """Enrol a new tablet for ``chw`` (created with ``villages``, comma-separated, if new)."""

    def make(chw: str = "amina", villages: str = "Kijiji cha Mlima", *households: str) -> Tablet:
        return enrol(client, clock, hub_cli, chw, villages, *households)

    return make


@dataclass
class HubUnderTest:
    """A hub of its own, for tests that need many (one per hypothesis example)."""

    client: TestClient[Any]
    cli: HubCli
    clock: FixedClock
    settings: Settings

    def tablet(self, chw: str, villages: str = "") -> Tablet:
        return enrol(self.client, self.clock, self.cli, chw, villages)

    def chart_heads(self) -> dict[str, list[bytes]]:
        conn = sqlite3.connect(self.settings.db)
        try:
            return {r[0]: split_heads(r[1]) for r in conn.execute("SELECT id, heads FROM charts")}
        finally:
            conn.close()


@pytest.fixture
def fresh_hub() -> Callable[[], AbstractContextManager[HubUnderTest]]:
    """Start a new hub in a temporary folder (the fixture itself holds no state)."""

    @contextmanager
    def start() -> Iterator[HubUnderTest]:
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings.from_env({"SYNC_HUB_DB": str(Path(folder) / "hub.db")})
            clock = FixedClock(START)
            with TestClient(create_app(settings, clock=clock)) as test_client:
                yield HubUnderTest(test_client, HubCli(settings, clock), clock, settings)

    return start


@pytest.fixture
def tablet(make_tablet: MakeTablet) -> Tablet:
    return make_tablet()


@pytest.fixture
def rows(settings: Settings) -> Callable[[], dict[str, int]]:
    """Rows in each of the hub's tables, read through a connection of the test's own."""

    def count() -> dict[str, int]:
        conn = sqlite3.connect(settings.db)
        try:
            # Table names come from the fixed tuple above.
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # noqa: S608
        finally:
            conn.close()

    return count


@pytest.fixture
def hub_db(settings: Settings) -> Callable[[str, list[Any] | None], list[tuple[Any, ...]]]:
    """Run a read-only query on the hub's database."""

    def query(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(settings.db)
        try:
            return conn.execute(sql, params or []).fetchall()
        finally:
            conn.close()

    return query


# -- central, played by a small FHIR server in process ------------------------------------------

CENTRAL_URL = "http://central.test"
TOKEN_URL = f"{CENTRAL_URL}/auth/token"
CENTRAL_START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
SEARCHED = ("/fhir/Communication", "/fhir/Task")


def jwk_thumbprint(public_key: EllipticCurvePublicKey) -> str:
    """RFC 7638, computed here from PyJWT's own JWK of the key (not the hub's code)."""
    jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def outcome(
    status: int, diagnostics: str, code: str = "invalid", headers: dict[str, str] | None = None
) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return Response(status, json=body, headers=headers)


@dataclass
class FakeCentral:
    """Central as far as the hub can tell: SMART Backend Services tokens (the assertion checked
    with PyJWT against the hub's public key), atomic transaction bundles of PUTs stored by
    type/id, and Communication and Task searches by ``_lastUpdated`` (and a Task's ``code``,
    ``system|code`` tokens joined by commas) in pages with absolute ``next`` links. Tests script trouble per FHIR request (``script``: "429", "503", "drop", "timeout",
    "lost" (written, then the answer lost), "401") and refuse charts by patient ID
    (``refuse``: 400 with an OperationOutcome, or 403)."""

    public_key: EllipticCurvePublicKey
    client_id: str
    clock: FixedClock
    token_seconds: int = 300
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)
    transactions: list[list[str]] = field(default_factory=list)  # URLs of each one applied
    fhir_requests: list[str] = field(default_factory=list)  # method and path of each
    script: list[str] = field(default_factory=list)
    retry_after: str | None = None
    refuse: dict[str, int] = field(default_factory=dict)
    refuse_credentials: bool = False
    assertions: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    searches: list[httpx.URL] = field(default_factory=list)
    page_size: int | None = None
    ignores_code: bool = False  # as a FHIR server that does not know the parameter (lenient)
    _updates: int = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=self.transport(), timeout=5)

    def handle(self, request: httpx.Request) -> Response:
        if request.url.path == "/auth/token":
            return self._token(request)
        if not request.url.path.startswith("/fhir"):
            return Response(404, text="not here")
        self.fhir_requests.append(f"{request.method} {request.url.path}")
        trouble = self.script.pop(0) if self.script else None
        if trouble in ("drop", "timeout"):
            error = httpx.ConnectError if trouble == "drop" else httpx.ReadTimeout
            raise error("scripted", request=request)
        if trouble in ("429", "503"):
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return outcome(int(trouble), "scripted", "transient", headers)
        if trouble == "401":
            self.tokens.clear()
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return outcome(401, "no valid token", "login")
        if request.method == "POST" and request.url.path == "/fhir":
            answer = self._transaction(json.loads(request.content))
            if trouble == "lost":
                raise httpx.ReadError("scripted: answer lost", request=request)
            return answer
        if request.method == "GET" and request.url.path in SEARCHED:
            return self._search(request.url)
        return outcome(404, "unknown path", "not-found")

    # -- tokens ---------------------------------------------------------------------------------

    def _token(self, request: httpx.Request) -> Response:
        form = dict(urllib.parse.parse_qsl(request.content.decode()))
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self.public_key,
                algorithms=["ES384"],
                audience=TOKEN_URL,
                issuer=self.client_id,
                # Times are checked below against the test's clock, not the machine's.
                options={
                    "require": ["exp", "iat", "jti", "iss", "sub", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            return Response(401, json={"error": "invalid_client", "error_description": str(exc)})
        now = self.clock.now().timestamp()
        if not claims["iat"] - 60 <= now < claims["exp"] or claims["sub"] != self.client_id:
            return Response(401, json={"error": "invalid_client", "error_description": "expired"})
        self.assertions.append((header, claims))
        if self.refuse_credentials or form.get("grant_type") != "client_credentials":
            return Response(
                401, json={"error": "invalid_client", "error_description": "unknown client"}
            )
        token = secrets.token_hex(8)
        self.tokens.add(token)
        return Response(
            200,
            json={
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.token_seconds,
                "scope": form.get("scope"),
            },
        )

    # -- transactions -----------------------------------------------------------------------------

    def _transaction(self, bundle: dict[str, Any]) -> Response:
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] == "transaction"
        entries = bundle.get("entry", [])
        for entry in entries:
            resource = entry["resource"]
            assert entry["request"] == {
                "method": "PUT",
                "url": f"{resource['resourceType']}/{resource['id']}",
            }
            status = (
                self.refuse.get(resource["id"]) if resource["resourceType"] == "Patient" else None
            )
            if status == 403:
                return outcome(403, "resource outside the client's regions", "forbidden")
            if status is not None:
                return outcome(status, "Patient.birthDate: must not be in the future")
        answers = [self._put(entry["resource"]) for entry in entries]
        self.transactions.append([e["request"]["url"] for e in entries])
        return Response(
            200,
            json={
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [{"response": {"status": status}} for status in answers],
            },
        )

    def _put(self, resource: dict[str, Any]) -> str:
        url = f"{resource['resourceType']}/{resource['id']}"
        existed = url in self.resources
        self.store(resource)
        return "200 OK" if existed else "201 Created"

    def store(self, resource: dict[str, Any], *, updated: datetime | None = None) -> None:
        """Keep a resource as central would, stamping meta.lastUpdated."""
        self._updates += 1
        when = updated or CENTRAL_START + timedelta(milliseconds=self._updates)
        url = f"{resource['resourceType']}/{resource['id']}"
        meta = {**resource.get("meta", {}), "lastUpdated": when.isoformat()}
        self.resources[url] = {**resource, "meta": meta}
        self.writes[url] = self.writes.get(url, 0) + 1

    def content(self, url: str) -> dict[str, Any]:
        """A stored resource without what central adds (meta.lastUpdated)."""
        resource = dict(self.resources[url])
        meta = {k: v for k, v in resource.pop("meta").items() if k != "lastUpdated"}
        return {**resource, "meta": meta}

    def of_type(self, resource_type: str) -> list[str]:
        return sorted(url for url in self.resources if url.startswith(f"{resource_type}/"))

    # -- search ---------------------------------------------------------------------------------

    def _search(self, url: httpx.URL) -> Response:
        self.searches.append(url)
        resource_type = url.path.removeprefix("/fhir/")
        since = datetime.fromisoformat(url.params["_lastUpdated"].removeprefix("ge"))
        asked = "code" in url.params and not self.ignores_code
        codes = set(url.params["code"].split(",")) if asked else None
        assert url.params["_sort"] == "_lastUpdated"
        count = self.page_size or int(url.params["_count"])
        offset = int(url.params.get("_offset", "0"))
        found = sorted(
            (
                r
                for r in self.resources.values()
                if r["resourceType"] == resource_type
                and datetime.fromisoformat(r["meta"]["lastUpdated"]) >= since
                and (codes is None or _tokens(r.get("code")) & codes)
            ),
            key=lambda r: r["meta"]["lastUpdated"],
        )
        page = found[offset : offset + count]
        links = [{"relation": "self", "url": str(url)}]
        if offset + count < len(found):
            following = url.copy_set_param("_offset", str(offset + count))
            links.append({"relation": "next", "url": str(following)})
        return Response(
            200,
            json={
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(found),
                "link": links,
                "entry": [{"resource": r, "search": {"mode": "match"}} for r in page],
            },
        )


def _tokens(concept: Any) -> set[str]:
    """A CodeableConcept's codings as the ``system|code`` tokens a search names."""
    codings = concept.get("coding", []) if isinstance(concept, dict) else []
    return {f"{c.get('system')}|{c.get('code')}" for c in codings}


@pytest.fixture
def central_key(tmp_path: Path) -> Path:
    path = tmp_path / "hub-central-key.pem"
    credentials.create_key(path)
    return path


@pytest.fixture
def central_settings(tmp_path: Path, central_key: Path) -> Settings:
    return Settings.from_env(
        {
            "SYNC_HUB_DB": str(tmp_path / "hub.db"),
            "SYNC_HUB_NAME": "kati",
            "SYNC_HUB_CENTRAL_URL": CENTRAL_URL,
            "SYNC_HUB_CENTRAL_KEY": str(central_key),
            "SYNC_HUB_REGION": "region-1",
            "SYNC_HUB_PUSH_BATCH_RESOURCES": "20",
        }
    )


@pytest.fixture
def central(central_key: Path, clock: FixedClock) -> FakeCentral:
    key = credentials.load_key(central_key)
    return FakeCentral(public_key=key.public_key(), client_id="kati", clock=clock)


@pytest.fixture
def hub_store(central_settings: Settings) -> Iterator[Store]:
    store = Store(central_settings.db)
    store.create()
    yield store
    store.close()


def put(store: Store, chart: Chart | HouseholdRecord, clock: FixedClock) -> None:
    """Store a chart in the hub as a sync would: ``put_chart`` in a write transaction."""
    with store.write() as db:
        put_chart(
            db,
            chart.id,
            chart.KIND,
            chart.save(),
            chart.heads,
            device="test-device",
            at=stamp(clock.now()),
            document=chart.document,
        )


def new_chart(clock: FixedClock, **fields: Any) -> Chart:
    return Chart.new_patient({**PATIENT, **fields}, author="amina", clock=clock)
