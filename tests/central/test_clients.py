"""The client registry: who may ask central for tokens, with which keys, region and scopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from central.clients import add_client, get_client, list_clients, revoke_client
from central.database import Database
from central.errors import Refused

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def ec_jwk(kid: str = "k1", curve: ec.EllipticCurve | None = None) -> dict[str, Any]:
    key = ec.generate_private_key(curve or ec.SECP384R1())
    return {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}


def rsa_jwk(kid: str = "r1", bits: int = 2048) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}


def ed_jwk(kid: str = "e1") -> dict[str, Any]:
    key = ed25519.Ed25519PrivateKey.generate()
    return {**OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}


def test_a_client_is_added_with_its_keys_region_and_scopes(database: Database) -> None:
    keys = {"keys": [ec_jwk("a"), rsa_jwk("b"), ed_jwk("c")]}
    with database.write() as session:
        added = add_client(
            session, "hub-north", "north", keys, "system/*.read system/*.write", now=NOW
        )
    with database.read() as session:
        found = get_client(session, "hub-north")
    assert found == added
    assert found is not None
    assert found.active
    assert found.region == "north"
    assert found.scopes == ("system/*.read", "system/*.write")
    assert [k["kid"] for k in found.keys] == ["a", "b", "c"]
    assert found.key("b") == keys["keys"][1]
    assert found.key("nope") is None
    assert found.created_at == "2026-03-01T08:00:00.000000Z"


def test_a_single_jwk_is_taken_as_a_set_of_one(database: Database) -> None:
    jwk = ec_jwk("only")
    with database.write() as session:
        add_client(session, "console", "*", jwk, "system/*.read", now=NOW)
        found = get_client(session, "console")
    assert found is not None
    assert found.keys == (jwk,)
    assert found.region == "*"


def test_clients_are_listed_by_id_and_revoked_ones_stay(database: Database) -> None:
    with database.write() as session:
        for client_id in ("hub-b", "hub-a", "hub-c"):
            add_client(session, client_id, "r", ec_jwk(), "system/*.read", now=NOW)
        revoked = revoke_client(session, "hub-b", now=NOW + timedelta(hours=1))
    with database.read() as session:
        listed = list_clients(session)
    assert [c.client_id for c in listed] == ["hub-a", "hub-b", "hub-c"]
    assert [c.active for c in listed] == [True, False, True]
    assert revoked.revoked_at == "2026-03-01T09:00:00.000000Z"


def test_revoking_twice_keeps_the_first_time(database: Database) -> None:
    with database.write() as session:
        add_client(session, "hub", "r", ec_jwk(), "system/*.read", now=NOW)
        revoke_client(session, "hub", now=NOW)
        again = revoke_client(session, "hub", now=NOW + timedelta(days=1))
    assert again.revoked_at == "2026-03-01T08:00:00.000000Z"


def test_revoking_an_unknown_client_is_refused(database: Database) -> None:
    with database.write() as session, pytest.raises(Refused, match="no client 'ghost'"):
        revoke_client(session, "ghost", now=NOW)


def test_an_id_is_never_reused_even_after_revocation(database: Database) -> None:
    with database.write() as session:
        add_client(session, "hub", "r", ec_jwk(), "system/*.read", now=NOW)
        revoke_client(session, "hub", now=NOW)
    with database.write() as session, pytest.raises(Refused, match="already exists"):
        add_client(session, "hub", "r", ec_jwk(), "system/*.read", now=NOW)


@pytest.mark.parametrize(
    ("jwks", "words"),
    [
        ({"keys": []}, "no keys"),
        ({"keys": ["not a key"]}, "not a JSON object"),
        ({k: v for k, v in ec_jwk().items() if k != "kid"}, "needs a kid"),
        ({"keys": [ec_jwk("same"), ed_jwk("same")]}, "same kid"),
        (ec_jwk(curve=ec.SECP256R1()), "P-384"),
        (rsa_jwk(bits=1024), "at least 2048"),
        ({"kty": "oct", "kid": "s", "k": "c2VjcmV0"}, "private key"),
        ({**ec_jwk(), "d": "AAAA"}, "private key"),
        ({**ec_jwk(), "use": "enc"}, "not a signing key"),
        ({**ec_jwk(), "alg": "ES256"}, "signs ES384"),
        ({"kty": "EC", "kid": "x", "crv": "P-384", "x": "AA", "y": "AA"}, "not a usable JWK"),
    ],
    ids=[
        "empty",
        "not-object",
        "no-kid",
        "repeated-kid",
        "p256",
        "short-rsa",
        "symmetric",
        "private-ec",
        "encryption-key",
        "wrong-alg",
        "broken",
    ],
)
def test_keys_smart_does_not_allow_are_refused_and_nothing_is_written(
    database: Database, jwks: dict[str, Any], words: str
) -> None:
    with database.write() as session, pytest.raises(Refused, match=words):
        add_client(session, "hub", "r", jwks, "system/*.read", now=NOW)
    with database.read() as session:
        assert list_clients(session) == []


@pytest.mark.parametrize(
    ("client_id", "region", "scopes", "words"),
    [
        ("hub north", "r", "system/*.read", "client ID"),
        ("x" * 65, "r", "system/*.read", "client ID"),
        ("", "r", "system/*.read", "client ID"),
        ("hub", "", "system/*.read", "region"),
        ("hub", " north", "system/*.read", "region"),
        ("hub", "r", "", "at least one scope"),
        ("hub", "r", "user/*.read", "not a SMART system scope: user/"),
        ("hub", "r", "system/Patient.rwx", "not a SMART system scope"),
    ],
)
def test_bad_ids_regions_and_scopes_are_refused(
    database: Database, client_id: str, region: str, scopes: str, words: str
) -> None:
    with database.write() as session, pytest.raises(Refused, match=words):
        add_client(session, client_id, region, ec_jwk(), scopes, now=NOW)


def test_v2_scopes_and_type_scopes_are_accepted(database: Database) -> None:
    with database.write() as session:
        client = add_client(
            session, "hub", "r", ec_jwk(), "system/Patient.rs system/Observation.cruds", now=NOW
        )
    assert client.scopes == ("system/Patient.rs", "system/Observation.cruds")
