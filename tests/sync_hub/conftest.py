"""Shared fixtures for the hub tests: a real SQLite file in ``tmp_path``, the Litestar app in
process, a fixed clock, the hub's CLI, and tablets that enrol and sync as real ones do.

A test tablet is ``care_record.sync``'s reference replica (``MemoryReplica``, initiating) with
an Ed25519 key of its own: it signs every request over ``signed_message`` and sends real
Automerge charts through real frames.
"""

from __future__ import annotations

import base64
import io
import secrets
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from httpx import Response
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
from sync_hub import Settings, create_app
from sync_hub.cli import main

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
