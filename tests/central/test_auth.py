"""SMART Backend Services at central: client assertions signed with real keys (PyJWT over
``cryptography``) exchanged for bearer tokens, and those tokens checked on every request."""

from __future__ import annotations

import secrets
import threading
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from central.auth import (
    ASSERTION_TYPE,
    CLIENT_RECHECK_SECONDS,
    SIGNING_KEY_ROW,
    authenticate,
    issue_token,
    token_secret,
)
from central.callers import Caller
from central.clients import add_client, revoke_client
from central.clock import FixedClock
from central.database import Database, PostgresDatabase, SqliteDatabase, open_database
from central.errors import NotAuthenticated, TokenRefused
from central.settings import Settings

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SETTINGS = Settings()
TOKEN_URL = "http://127.0.0.1:8800/auth/token"
ALLOWED = "system/*.read system/*.write"


def another_process(database: Database) -> Database:
    """A second Database object on the same file or schema, as a second central process has."""
    if isinstance(database, SqliteDatabase):
        return open_database(f"sqlite:///{database.path}")
    assert isinstance(database, PostgresDatabase)
    return open_database(database.url)


@dataclass
class Hub:
    """A client as a hub is one: its private key and the kid it registered it under."""

    client_id: str
    key: Any
    kid: str
    algorithm: str
    clock: FixedClock = field(default_factory=lambda: FixedClock(NOW))

    def assertion(
        self,
        *,
        exp_in: float = 60,
        headers: dict[str, Any] | None = None,
        key: Any = None,
        algorithm: str | None = None,
        **claims: Any,
    ) -> str:
        body: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": TOKEN_URL,
            "exp": int(self.clock.now().timestamp() + exp_in),
            "jti": str(uuid.uuid4()),
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(
            body,
            key if key is not None else self.key,
            algorithm=algorithm or self.algorithm,
            headers={"kid": self.kid, **(headers or {})},
        )

    def form(self, assertion: str | None = None, scope: str = ALLOWED) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or self.assertion(),
            "scope": scope,
        }


def register(
    database: Database,
    client_id: str = "hub-north",
    *,
    region: str = "north",
    scopes: str = ALLOWED,
    kind: str = "ec",
    clock: FixedClock | None = None,
) -> Hub:
    if kind == "ec":
        key: Any = ec.generate_private_key(ec.SECP384R1())
        jwk, algorithm = ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "ES384"
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk, algorithm = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "RS384"
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        jwk, algorithm = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "EdDSA"
    kid = f"{client_id}-{kind}-1"
    with database.write() as session:
        add_client(session, client_id, region, {"keys": [{**jwk, "kid": kid}]}, scopes, now=NOW)
    return Hub(client_id, key, kid, algorithm, clock or FixedClock(NOW))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def hub(database: Database, clock: FixedClock) -> Hub:
    return register(database, clock=clock)


def refused(database: Database, form: dict[str, str], clock: FixedClock) -> TokenRefused:
    with pytest.raises(TokenRefused) as caught:
        issue_token(database, SETTINGS, form, clock)
    return caught.value


def bearer(answer: dict[str, Any]) -> str:
    return f"Bearer {answer['access_token']}"


# -- tokens issued --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ec", "rsa", "ed25519"])
def test_a_signed_assertion_gets_a_token_that_names_the_client(
    database: Database, clock: FixedClock, kind: str
) -> None:
    hub = register(database, kind=kind)
    answer = issue_token(database, SETTINGS, hub.form(), clock)
    assert answer["token_type"] == "bearer"
    assert answer["expires_in"] == SETTINGS.token_seconds
    assert answer["scope"] == ALLOWED
    caller = authenticate(database, SETTINGS, bearer(answer), clock)
    assert caller == Caller("hub-north", "north", frozenset(ALLOWED.split()))


def test_the_access_token_carries_the_agreed_claims(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    answer = issue_token(database, SETTINGS, hub.form(), clock)
    claims = jwt.decode(
        answer["access_token"],
        token_secret(database),
        algorithms=["HS256"],
        audience=SETTINGS.fhir_base,
        options={"verify_exp": False, "verify_iat": False},
    )
    now = int(NOW.timestamp())
    assert claims["sub"] == "hub-north"
    assert claims["region"] == "north"
    assert claims["scope"] == ALLOWED
    assert (claims["iat"], claims["exp"]) == (now, now + SETTINGS.token_seconds)
    assert claims["aud"] == "http://127.0.0.1:8800/fhir"
    assert claims["jti"]
    assert jwt.get_unverified_header(answer["access_token"])["alg"] == "HS256"


def test_the_grant_is_the_requested_scopes_the_client_is_allowed(
    database: Database, clock: FixedClock
) -> None:
    hub = register(database, scopes="system/*.read system/Patient.write")
    wanted = "system/Patient.write system/*.write system/*.read system/Patient.write"
    answer = issue_token(database, SETTINGS, hub.form(scope=wanted), clock)
    assert answer["scope"] == "system/Patient.write system/*.read"
    caller = authenticate(database, SETTINGS, bearer(answer), clock)
    assert caller.may("write", "Patient")
    assert not caller.may("write", "Observation")


def test_a_client_of_every_region_gets_a_token_for_every_region(
    database: Database, clock: FixedClock
) -> None:
    console = register(database, "console", region="*")
    answer = issue_token(database, SETTINGS, console.form(), clock)
    assert authenticate(database, SETTINGS, bearer(answer), clock).sees_all_regions


# -- the token endpoint's refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"grant_type": "password"}, "unsupported_grant_type", "client_credentials"),
        ({"grant_type": ""}, "invalid_request", "no grant_type"),
        ({"client_assertion_type": "urn:other"}, "invalid_request", "jwt-bearer"),
        ({"client_assertion_type": None}, "invalid_request", "no client_assertion_type"),
        ({"client_assertion": None}, "invalid_request", "no client_assertion"),
        ({"scope": " "}, "invalid_request", "no scope"),
    ],
)
def test_malformed_requests_are_refused(
    database: Database, hub: Hub, change: dict[str, str | None], error: str, words: str
) -> None:
    form = hub.form()
    for name, value in change.items():
        if value is None:
            del form[name]
        else:
            form[name] = value
    refusal = refused(database, form, FixedClock(NOW))
    assert (refusal.oauth_error, refusal.status) == (error, 400)
    assert words in str(refusal)


def _invalid_client(database: Database, form: dict[str, str], clock: FixedClock) -> str:
    refusal = refused(database, form, clock)
    assert (refusal.oauth_error, refusal.status) == ("invalid_client", 401)
    return str(refusal)


def test_an_unknown_client_is_refused(database: Database, hub: Hub, clock: FixedClock) -> None:
    stranger = Hub("stranger", hub.key, hub.kid, hub.algorithm)
    assert "unknown client" in _invalid_client(database, stranger.form(), clock)


def test_a_revoked_client_gets_no_token(database: Database, hub: Hub, clock: FixedClock) -> None:
    with database.write() as session:
        revoke_client(session, hub.client_id, now=NOW)
    assert "revoked" in _invalid_client(database, hub.form(), clock)


def test_a_signature_by_another_key_is_refused(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    impostor = ec.generate_private_key(ec.SECP384R1())
    form = hub.form(hub.assertion(key=impostor))
    assert "signature does not verify" in _invalid_client(database, form, clock)


def test_a_kid_the_client_did_not_register_is_refused(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    form = hub.form(hub.assertion(headers={"kid": "other"}))
    assert "no key with kid 'other'" in _invalid_client(database, form, clock)


def test_an_assertion_without_a_kid_is_refused(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    assertion = jwt.encode(
        {"iss": hub.client_id, "sub": hub.client_id, "aud": TOKEN_URL, "exp": 0, "jti": "j"},
        hub.key,
        algorithm="ES384",
    )
    assert "no kid" in _invalid_client(database, hub.form(assertion), clock)


def test_the_none_algorithm_is_refused(database: Database, hub: Hub, clock: FixedClock) -> None:
    form = hub.form(hub.assertion(key="", algorithm="none"))
    assert "signed with none" in _invalid_client(database, form, clock)


def test_a_shared_secret_algorithm_is_refused(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    form = hub.form(hub.assertion(key=secrets.token_bytes(32), algorithm="HS256"))
    assert "signed with HS256" in _invalid_client(database, form, clock)


def test_an_algorithm_smart_does_not_name_is_refused(database: Database, clock: FixedClock) -> None:
    hub = register(database)
    p256 = ec.generate_private_key(ec.SECP256R1())
    form = hub.form(hub.assertion(key=p256, algorithm="ES256"))
    assert "signed with ES256" in _invalid_client(database, form, clock)


def test_an_algorithm_that_does_not_fit_the_key_is_refused(
    database: Database, clock: FixedClock
) -> None:
    hub = register(database, kind="rsa")
    form = hub.form(hub.assertion(key=hub.key, algorithm="PS384"))
    assert "signed with PS384" in _invalid_client(database, form, clock)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    form = hub.form(hub.assertion(key=ec_key, algorithm="ES384"))
    assert "signs with RS384, not ES384" in _invalid_client(database, form, clock)


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"iss": "hub-south"}, "client_id and"),
        ({"sub": "hub-south"}, "iss and sub must both be"),
        ({"aud": "https://elsewhere.example/auth/token"}, f"aud must be {TOKEN_URL}"),
        ({"aud": None}, "has no aud"),
        ({"exp": None}, "has no exp"),
        ({"jti": None}, "has no jti"),
        ({"jti": "x" * 256}, "jti must be"),
        ({"exp": "soon"}, "exp is not a time"),
        ({"nbf": int(NOW.timestamp()) + 30}, "not valid yet"),
    ],
)
def test_claims_that_are_wrong_are_refused(
    database: Database, hub: Hub, clock: FixedClock, claims: dict[str, Any], words: str
) -> None:
    form = hub.form(hub.assertion(**claims))
    if "iss" in claims:
        form["client_id"] = hub.client_id
    assert words in _invalid_client(database, form, clock)


def test_an_assertion_whose_issuer_is_not_a_client_is_refused(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    form = hub.form(hub.assertion(iss="hub-south"))
    assert "unknown client" in _invalid_client(database, form, clock)


def test_an_expired_assertion_is_refused(database: Database, hub: Hub, clock: FixedClock) -> None:
    assertion = hub.assertion(exp_in=30)
    clock.advance(30)
    assert "expired" in _invalid_client(database, hub.form(assertion), clock)


def test_an_assertion_valid_too_long_is_refused(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    issue_token(database, SETTINGS, hub.form(hub.assertion(exp_in=300)), clock)
    form = hub.form(hub.assertion(exp_in=301))
    assert "more than 300 seconds ahead" in _invalid_client(database, form, clock)


def test_a_replayed_assertion_is_refused(database: Database, hub: Hub, clock: FixedClock) -> None:
    assertion = hub.assertion(exp_in=120)
    issue_token(database, SETTINGS, hub.form(assertion), clock)
    clock.advance(60)
    assert "already used" in _invalid_client(database, hub.form(assertion), clock)
    with closing(another_process(database)) as other:  # a second central process
        assert "already used" in _invalid_client(other, hub.form(assertion), clock)


def test_a_refused_request_leaves_its_assertion_unused(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    assertion = hub.assertion()
    refusal = refused(database, hub.form(assertion, scope="system/*.delete"), clock)
    assert refusal.oauth_error == "invalid_scope"
    assert issue_token(database, SETTINGS, hub.form(assertion), clock)["scope"] == ALLOWED


def test_none_of_the_scopes_allowed_is_invalid_scope(database: Database, clock: FixedClock) -> None:
    hub = register(database, scopes="system/*.read")
    refusal = refused(database, hub.form(scope="system/*.write system/Patient.write"), clock)
    assert (refusal.oauth_error, refusal.status) == ("invalid_scope", 400)
    assert "allowed: system/*.read" in str(refusal)


def test_used_assertion_ids_are_forgotten_once_expired(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    issue_token(database, SETTINGS, hub.form(hub.assertion(exp_in=60)), clock)
    issue_token(database, SETTINGS, hub.form(hub.assertion(exp_in=300)), clock)
    clock.advance(120)
    issue_token(database, SETTINGS, hub.form(hub.assertion(exp_in=60)), clock)
    with database.read() as session:
        left = session.execute("SELECT expires_at FROM assertion_ids ORDER BY expires_at")
    now = int(NOW.timestamp())
    assert [row[0] for row in left] == [now + 180, now + 300]


# -- bearer tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (None, "no bearer token"),
        ("", "no bearer token"),
        ("Basic aHViOnB3", "not a bearer token"),
        ("Bearer", "not a bearer token"),
        ("Bearer not-a-jwt", "malformed"),
    ],
)
def test_requests_without_a_usable_token_are_refused(
    database: Database, clock: FixedClock, header: str | None, words: str
) -> None:
    with pytest.raises(NotAuthenticated, match=words):
        authenticate(database, SETTINGS, header, clock)


def test_the_scheme_is_case_insensitive(database: Database, hub: Hub, clock: FixedClock) -> None:
    token = issue_token(database, SETTINGS, hub.form(), clock)["access_token"]
    assert authenticate(database, SETTINGS, f"bearer {token}", clock).client_id == "hub-north"


def test_a_token_expires_after_token_seconds(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    header = bearer(issue_token(database, SETTINGS, hub.form(), clock))
    clock.advance(SETTINGS.token_seconds - 1)
    authenticate(database, SETTINGS, header, clock)
    clock.advance(1)
    with pytest.raises(NotAuthenticated, match="the token has expired"):
        authenticate(database, SETTINGS, header, clock)


def _forge(claims: dict[str, Any], secret: bytes, algorithm: str = "HS256") -> str:
    return "Bearer " + jwt.encode(claims, secret, algorithm=algorithm)


def _claims(**change: Any) -> dict[str, Any]:
    now = int(NOW.timestamp())
    claims = {
        "sub": "hub-north",
        "region": "*",
        "scope": "system/*.write",
        "iat": now,
        "exp": now + 300,
        "jti": "j",
        "aud": SETTINGS.fhir_base,
    }
    claims.update(change)
    return {k: v for k, v in claims.items() if v is not None}


def test_a_forged_token_is_refused(database: Database, hub: Hub, clock: FixedClock) -> None:
    with pytest.raises(NotAuthenticated, match="not issued by central"):
        authenticate(database, SETTINGS, _forge(_claims(), secrets.token_bytes(32)), clock)
    unsigned = jwt.encode(_claims(), "", algorithm="none")
    with pytest.raises(NotAuthenticated, match="not issued by central"):
        authenticate(database, SETTINGS, f"Bearer {unsigned}", clock)


def test_a_token_for_another_server_is_refused(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    header = _forge(_claims(aud="https://other.example/fhir"), token_secret(database))
    with pytest.raises(NotAuthenticated, match="issued for another server"):
        authenticate(database, SETTINGS, header, clock)


@pytest.mark.parametrize("change", [{"region": None}, {"scope": 7}, {"exp": "later"}])
def test_a_signed_token_with_bad_claims_is_malformed(
    database: Database, hub: Hub, clock: FixedClock, change: dict[str, Any]
) -> None:
    header = _forge(_claims(**change), token_secret(database))
    with pytest.raises(NotAuthenticated, match="malformed"):
        authenticate(database, SETTINGS, header, clock)


def test_a_revoked_clients_tokens_stop_working(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    header = bearer(issue_token(database, SETTINGS, hub.form(), clock))
    authenticate(database, SETTINGS, header, clock)
    with closing(another_process(database)) as cli:  # the operator's CLI, another process
        with cli.write() as session:
            revoke_client(session, hub.client_id, now=clock.now())
        # A process that has not seen the client yet refuses at once.
        with pytest.raises(NotAuthenticated, match="revoked"):
            authenticate(cli, SETTINGS, header, clock)
    # A process that checked the client a moment ago refuses within CLIENT_RECHECK_SECONDS.
    clock.advance(CLIENT_RECHECK_SECONDS)
    with pytest.raises(NotAuthenticated, match="revoked"):
        authenticate(database, SETTINGS, header, clock)


def test_a_token_of_a_client_that_is_gone_is_refused(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    header = _forge(_claims(sub="never-registered"), token_secret(database))
    with pytest.raises(NotAuthenticated, match="revoked"):
        authenticate(database, SETTINGS, header, clock)


# -- several processes on one database ------------------------------------------------------------


def test_two_processes_share_the_token_secret(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    with closing(another_process(database)) as other:
        header = bearer(issue_token(other, SETTINGS, hub.form(), clock))
        assert authenticate(database, SETTINGS, header, clock).client_id == "hub-north"
        header = bearer(issue_token(database, SETTINGS, hub.form(), clock))
        assert authenticate(other, SETTINGS, header, clock).client_id == "hub-north"
    with database.read() as session:
        stored = session.execute("SELECT value FROM meta WHERE key = ?", (SIGNING_KEY_ROW,))
    assert bytes.fromhex(stored[0][0]) == token_secret(database)
    assert len(token_secret(database)) == 32


def test_processes_starting_together_create_one_secret(database: Database) -> None:
    processes = [another_process(database) for _ in range(4)]
    found: list[bytes] = []
    start = threading.Barrier(len(processes))

    def first_need(db: Database) -> None:
        start.wait()
        found.append(token_secret(db))

    threads = [threading.Thread(target=first_need, args=(db,)) for db in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for db in processes:
        db.close()
    assert len(found) == 4
    assert len(set(found)) == 1
    assert found[0] == token_secret(database)


def test_a_token_issued_now_is_still_accepted_a_moment_later(
    database: Database, hub: Hub, clock: FixedClock
) -> None:
    header = bearer(issue_token(database, SETTINGS, hub.form(), clock))
    clock.advance(timedelta(minutes=1).total_seconds())
    assert authenticate(database, SETTINGS, header, clock).region == "north"
