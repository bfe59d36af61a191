"""The client registry: hubs (and the console) allowed to ask for tokens, SMART Backend Services.

A client is registered with its public keys (a JWK Set, or one JWK), its region (``*`` for
every region) and the scopes it may be granted. It proves who it is at ``/auth/token`` with a
JWT signed by one of those keys; the ``kid`` in the JWT's header picks the key. Keys are what
SMART asks for: EC P-384 (ES384) or RSA of at least 2048 bits (RS384); Ed25519 (EdDSA) too.
Only public keys are stored: a JWK with private members is refused, so a private key that was
pasted by mistake never sits in central's database.

A revoked client stays in the table (its ID is never reused) and gets no token; tokens it
already holds stop working within seconds (``central.auth.authenticate`` checks the client
row; see ``CLIENT_RECHECK_SECONDS`` there).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from central.callers import ALL_REGIONS
from central.clock import instant
from central.database import Row, Session
from central.errors import Refused

CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
REGION = re.compile(r"\S+( \S+)*")  # a FHIR code: the region tag's code
SCOPE = re.compile(r"system/(\*|[A-Z][A-Za-z]{1,63})\.(read|write|\*|c?r?u?d?s?)")
DEFAULT_SCOPES = "system/*.read system/*.write"
MIN_RSA_BITS = 2048

# The private members of EC, RSA, OKP and symmetric JWKs (RFC 7518 section 6, RFC 8037).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True)
class Client:
    client_id: str
    region: str
    keys: tuple[dict[str, Any], ...]  # public JWKs, each with a kid
    scopes: tuple[str, ...]
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def key(self, kid: str) -> dict[str, Any] | None:
        """The JWK with this ``kid``, if the client has one."""
        return next((k for k in self.keys if k["kid"] == kid), None)


def add_client(
    session: Session,
    client_id: str,
    region: str,
    jwks: dict[str, Any],
    scopes: str,
    *,
    now: datetime,
) -> Client:
    """Register a client. Raises Refused for a bad ID, region, key or scope, or an ID in use
    (a revoked client's ID too)."""
    _check_client_id(client_id)
    _check_region(region)
    keys = public_keys(jwks)
    granted = parse_scopes(scopes)
    if get_client(session, client_id) is not None:
        raise Refused(f"a client '{client_id}' already exists (IDs are never reused)")
    session.execute(
        "INSERT INTO clients (client_id, region, jwks, scopes, created_at, revoked_at) "
        "VALUES (?, ?, ?, ?, ?, NULL)",
        (client_id, region, json.dumps({"keys": list(keys)}), " ".join(granted), instant(now)),
    )
    return Client(client_id, region, keys, granted, instant(now), None)


def revoke_client(session: Session, client_id: str, *, now: datetime) -> Client:
    """Revoke a client: no more tokens, and the ones it holds stop working. Revoking a revoked
    client changes nothing and returns it as it was. Raises Refused for an unknown client."""
    client = get_client(session, client_id)
    if client is None:
        raise Refused(f"no client '{client_id}'")
    if not client.active:
        return client
    session.execute(
        "UPDATE clients SET revoked_at = ? WHERE client_id = ?", (instant(now), client_id)
    )
    return get_client(session, client_id) or client


def get_client(session: Session, client_id: str) -> Client | None:
    rows = session.execute(
        "SELECT client_id, region, jwks, scopes, created_at, revoked_at FROM clients "
        "WHERE client_id = ?",
        (client_id,),
    )
    return _client(rows[0]) if rows else None


def list_clients(session: Session) -> list[Client]:
    """Every client, revoked ones too, by ID."""
    rows = session.execute(
        "SELECT client_id, region, jwks, scopes, created_at, revoked_at FROM clients "
        "ORDER BY client_id"
    )
    return [_client(row) for row in rows]


def parse_scopes(scopes: str) -> tuple[str, ...]:
    """SMART system scopes, space-separated, in order, without repeats. Raises Refused."""
    found = tuple(dict.fromkeys(scopes.split()))
    if not found:
        raise Refused("give at least one scope, e.g. system/*.read")
    wrong = [s for s in found if not SCOPE.fullmatch(s)]
    if wrong:
        raise Refused(
            f"not a SMART system scope: {', '.join(wrong)} "
            "(expected system/<Type or *>.<read|write|*|cruds letters>)"
        )
    return found


def public_keys(jwks: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The public keys of a JWK Set (``{"keys": [...]}``) or of one JWK, each checked. Raises
    Refused for a private key, a key of a kind SMART does not allow, or a missing/repeated
    kid."""
    given = jwks.get("keys") if "keys" in jwks else [jwks]
    if not isinstance(given, list) or not given:
        raise Refused("the JWK Set has no keys")
    keys = tuple(_checked_key(k) for k in given)
    kids = [k["kid"] for k in keys]
    if len(set(kids)) != len(kids):
        raise Refused("two keys have the same kid")
    return keys


def algorithm_of(jwk: dict[str, Any]) -> str:
    """The one signing algorithm a checked key is used with: ES384, RS384 or EdDSA."""
    return {"EC": "ES384", "RSA": "RS384", "OKP": "EdDSA"}[jwk["kty"]]


def _checked_key(jwk: object) -> dict[str, Any]:
    if not isinstance(jwk, dict):
        raise Refused("a key in the JWK Set is not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Refused("every key needs a kid (the client names it in its assertions' header)")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise Refused(f"key '{kid}' is a private key: give central the public key only")
    if jwk.get("use", "sig") != "sig":
        raise Refused(f"key '{kid}' is not a signing key (use is not 'sig')")
    try:
        loaded = jwt.PyJWK(jwk).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise Refused(f"key '{kid}' is not a usable JWK: {exc}") from None
    expected = _algorithm_for_loaded(kid, loaded)
    if jwk.get("alg", expected) != expected:
        raise Refused(f"key '{kid}' says alg {jwk['alg']}, but a key of its kind signs {expected}")
    return dict(jwk)


def _algorithm_for_loaded(kid: str, key: object) -> str:
    if isinstance(key, EllipticCurvePublicKey) and key.curve.name == "secp384r1":
        return "ES384"
    if isinstance(key, RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return "RS384"
    if isinstance(key, Ed25519PublicKey):
        return "EdDSA"
    raise Refused(
        f"key '{kid}' is not an EC P-384, RSA (at least {MIN_RSA_BITS} bits) or Ed25519 "
        "public key, as SMART Backend Services requires"
    )


def _check_client_id(client_id: str) -> None:
    if not CLIENT_ID.fullmatch(client_id):
        raise Refused("a client ID is 1 to 64 letters, digits, dots, dashes or underscores")


def _check_region(region: str) -> None:
    if region != ALL_REGIONS and not (len(region) <= 64 and REGION.fullmatch(region)):
        raise Refused("a region is its region tag's code (up to 64 characters), or * for all")


def _client(row: Row) -> Client:
    client_id, region, jwks, scopes, created_at, revoked_at = row
    keys = tuple(json.loads(jwks)["keys"])
    return Client(client_id, region, keys, tuple(scopes.split()), created_at, revoked_at)
