"""SMART Backend Services at central: client assertions in, short-lived bearer tokens out.

A registered client (``central.clients``) posts to ``/auth/token`` a form with
``grant_type=client_credentials``, ``scope``, and ``client_assertion``: a JWT it signed with
one of its registered keys (ES384, RS384 or EdDSA; never ``none`` or a shared secret) whose
``iss`` and ``sub`` are its client ID, ``aud`` is central's token URL, ``exp`` at most five
minutes ahead and ``jti`` used once. Central answers with an access token: a JWT signed with
HS256 under a secret kept in the database (``meta``), so every central process on the same
database verifies every other one's tokens. The token names the client, its region and the
scopes granted (those requested that the client is allowed).

``authenticate`` runs on every FHIR request: it checks the token's signature, audience and
expiry with the secret cached in this process (a few tens of microseconds), then that the
client has not been revoked since the token was issued (one primary-key read, remembered for
``CLIENT_RECHECK_SECONDS``).
"""

from __future__ import annotations

import math
import secrets
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

from central.callers import Caller
from central.clients import Client, algorithm_of, get_client
from central.clock import Clock
from central.database import Database, Session
from central.errors import NotAuthenticated, TokenRefused
from central.settings import Settings

GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = frozenset({"ES384", "RS384", "EdDSA"})
MAX_ASSERTION_SECONDS = 300  # SMART: an assertion expires no more than five minutes ahead
MAX_JTI_LENGTH = 255
ACCESS_ALGORITHM = "HS256"
SIGNING_KEY_ROW = "access_token_secret"
# How long a process trusts what it last read of a client's row. A revocation (by the CLI, in
# another process) takes effect within this many seconds in every central process.
CLIENT_RECHECK_SECONDS = 2.0


# -- the token endpoint ---------------------------------------------------------------------------


def issue_token(
    database: Database, settings: Settings, form: Mapping[str, str], clock: Clock
) -> dict[str, Any]:
    """The token endpoint's JSON answer for ``form`` (the posted fields). Raises TokenRefused
    with RFC 6749's error code; nothing is remembered of a refused request."""
    _check_grant(form)
    assertion = _required(form, "client_assertion")
    requested = _required(form, "scope").split()
    header = _assertion_header(assertion)
    client_id = _claimed_client(assertion, form)
    now = clock.now()
    with database.write() as session:
        client = _active_client(session, client_id)
        claims = _verified_assertion(assertion, header, client, settings)
        expires = _assertion_expiry(claims, now)
        _remember_assertion(session, client_id, claims["jti"], expires, now)
        granted = _granted(requested, client.scopes)
    token = _access_token(token_secret(database), settings, client, granted, now)
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": settings.token_seconds,
        "scope": " ".join(granted),
    }


def operator_token(
    database: Database, settings: Settings, client_id: str, scopes: str, clock: Clock
) -> dict[str, Any]:
    """A token for a registered client, issued to an operator who can reach the database
    (``python -m central token``): for curl, scripts and the demo. The client's region and
    allowed scopes bound it exactly as at /auth/token. Raises TokenRefused."""
    with database.read() as session:
        client = _active_client(session, client_id)
    granted = _granted(scopes.split() or list(client.scopes), client.scopes)
    now = clock.now()
    return {
        "access_token": _access_token(token_secret(database), settings, client, granted, now),
        "token_type": "bearer",
        "expires_in": settings.token_seconds,
        "scope": " ".join(granted),
    }


def _check_grant(form: Mapping[str, str]) -> None:
    grant_type = _required(form, "grant_type")
    if grant_type != GRANT_TYPE:
        raise TokenRefused(
            "unsupported_grant_type", f"central issues tokens for grant_type={GRANT_TYPE} only"
        )
    if _required(form, "client_assertion_type") != ASSERTION_TYPE:
        raise TokenRefused("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise TokenRefused("invalid_request", f"the request has no {name}")
    return value


def _refused_client(description: str) -> TokenRefused:
    return TokenRefused("invalid_client", description, status=401)


def _assertion_header(assertion: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise _refused_client("the client assertion is not a JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ASSERTION_ALGORITHMS:
        raise _refused_client(
            f"the client assertion is signed with {str(algorithm)[:16]}; central accepts "
            f"{', '.join(sorted(ASSERTION_ALGORITHMS))}"
        )
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise _refused_client("the client assertion's header has no kid")
    return header


def _claimed_client(assertion: str, form: Mapping[str, str]) -> str:
    """The client the assertion claims to come from (its ``iss``), before any signature check:
    it says whose keys to check the signature with."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _refused_client("the client assertion's claims cannot be read") from None
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise _refused_client("the client assertion has no iss")
    if form.get("client_id", issuer) != issuer:
        raise _refused_client("client_id and the client assertion's iss differ")
    return issuer


def _active_client(session: Session, client_id: str) -> Client:
    client = get_client(session, client_id)
    if client is None:
        raise _refused_client("unknown client")
    if not client.active:
        raise _refused_client("this client has been revoked")
    return client


def _verified_assertion(
    assertion: str, header: dict[str, Any], client: Client, settings: Settings
) -> dict[str, Any]:
    """The assertion's claims once its signature, issuer, subject and audience are checked.
    Times are checked against central's clock by the caller."""
    key = client.key(header["kid"])
    if key is None:
        raise _refused_client(f"the client has no key with kid '{header['kid'][:64]}'")
    algorithm = header["alg"]
    if algorithm_of(key) != algorithm:
        raise _refused_client(
            f"key '{header['kid']}' signs with {algorithm_of(key)}, not {algorithm}"
        )
    try:
        claims = jwt.decode(
            assertion,
            jwt.PyJWK(key, algorithm=algorithm),
            algorithms=[algorithm],
            audience=settings.token_url,
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "require": ["iss", "sub", "aud", "exp", "jti"],
            },
        )
    except jwt.InvalidSignatureError:
        raise _refused_client("the client assertion's signature does not verify") from None
    except jwt.InvalidAudienceError:
        raise _refused_client(f"the client assertion's aud must be {settings.token_url}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _refused_client(f"the client assertion has no {exc.claim}") from None
    except jwt.PyJWTError:
        raise _refused_client("the client assertion cannot be verified") from None
    if claims["iss"] != client.client_id or claims["sub"] != client.client_id:
        raise _refused_client("the client assertion's iss and sub must both be the client ID")
    if not isinstance(claims["jti"], str) or not 0 < len(claims["jti"]) <= MAX_JTI_LENGTH:
        raise _refused_client(
            f"the client assertion's jti must be 1 to {MAX_JTI_LENGTH} characters"
        )
    return claims


def _assertion_expiry(claims: dict[str, Any], now: datetime) -> int:
    """The assertion's ``exp``, checked against ``now``: not past, not too far ahead."""
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise _refused_client("the client assertion's exp is not a time")
    if exp <= now.timestamp():
        raise _refused_client("the client assertion has expired")
    if exp > now.timestamp() + MAX_ASSERTION_SECONDS:
        raise _refused_client(
            f"the client assertion's exp is more than {MAX_ASSERTION_SECONDS} seconds ahead"
        )
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf > now.timestamp():
        raise _refused_client("the client assertion is not valid yet (nbf)")
    return math.ceil(exp)


def _remember_assertion(
    session: Session, client_id: str, jti: str, expires: int, now: datetime
) -> None:
    """Accept each assertion once: its jti is kept until it expires (after that the assertion
    is refused for its exp anyway). Two requests racing with one assertion: one wins."""
    session.execute("DELETE FROM assertion_ids WHERE expires_at < ?", (int(now.timestamp()),))
    inserted = session.execute(
        "INSERT INTO assertion_ids (client_id, jti, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (client_id, jti) DO NOTHING RETURNING jti",
        (client_id, jti, expires),
    )
    if not inserted:
        raise _refused_client("this client assertion was already used (jti seen before)")


def _granted(requested: list[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
    granted = tuple(dict.fromkeys(s for s in requested if s in allowed))
    if not granted:
        raise TokenRefused(
            "invalid_scope",
            f"none of the requested scopes is allowed for this client "
            f"(allowed: {' '.join(allowed)})",
        )
    return granted


def _access_token(
    secret: bytes, settings: Settings, client: Client, granted: tuple[str, ...], now: datetime
) -> str:
    issued = int(now.timestamp())
    claims = {
        "sub": client.client_id,
        "region": client.region,
        "scope": " ".join(granted),
        "iat": issued,
        "exp": issued + settings.token_seconds,
        "jti": secrets.token_urlsafe(16),
        "aud": settings.fhir_base,
    }
    return jwt.encode(claims, secret, algorithm=ACCESS_ALGORITHM)


# -- bearer tokens on every request ---------------------------------------------------------------


def authenticate(
    database: Database, settings: Settings, authorization_header: str | None, clock: Clock
) -> Caller:
    """The caller behind ``Authorization: Bearer <token>``. Raises NotAuthenticated, with a
    message that says what is wrong, for a missing, malformed, expired or forged token, and for
    a token of a client revoked since it was issued."""
    token = _bearer_token(authorization_header)
    now = clock.now()
    claims = _verified_token(token, token_secret(database), settings)
    if claims["exp"] <= now.timestamp():
        raise NotAuthenticated("the token has expired; ask /auth/token for a new one")
    if not _client_still_active(database, claims["sub"], now):
        raise NotAuthenticated("this client has been revoked")
    return Caller(claims["sub"], claims["region"], frozenset(claims["scope"].split()))


def _bearer_token(authorization_header: str | None) -> str:
    if authorization_header is None or not authorization_header.strip():
        raise NotAuthenticated("no bearer token (send Authorization: Bearer <token>)")
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("the Authorization header is not a bearer token")
    return token.strip()


def _verified_token(token: str, secret: bytes, settings: Settings) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ACCESS_ALGORITHM],
            audience=settings.fhir_base,
            # Expiry is checked against the injected clock, not PyJWT's.
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["sub", "region", "scope", "exp", "aud"],
            },
        )
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
        raise NotAuthenticated("the token was not issued by central") from None
    except jwt.InvalidAudienceError:
        raise NotAuthenticated("the token was issued for another server") from None
    except jwt.PyJWTError:
        raise NotAuthenticated("the bearer token is malformed") from None
    if not all(isinstance(claims[c], str) for c in ("sub", "region", "scope")) or not isinstance(
        claims["exp"], int
    ):
        raise NotAuthenticated("the bearer token is malformed")
    return claims


# -- what each process keeps: the secret, and recent client checks -------------------------------


@dataclass
class _Checked:
    at: datetime
    active: bool


class _ProcessCache:
    """Per database object: the token secret (fixed once created) and when each client's row
    was last read."""

    def __init__(self) -> None:
        self.secret: bytes | None = None
        self.clients: dict[str, _Checked] = {}


_CACHES: weakref.WeakKeyDictionary[Database, _ProcessCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache(database: Database) -> _ProcessCache:
    cache = _CACHES.get(database)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.setdefault(database, _ProcessCache())
    return cache


def token_secret(database: Database) -> bytes:
    """The access tokens' signing secret, shared by every central process on this database:
    created once, on first need, by whichever process gets there first."""
    cache = _cache(database)
    if cache.secret is None:
        cache.secret = _load_or_create_secret(database)
    return cache.secret


def _load_or_create_secret(database: Database) -> bytes:
    with database.write() as session:
        # Insert-if-missing then read: two processes racing both end up with the first one's.
        session.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            (SIGNING_KEY_ROW, secrets.token_bytes(32).hex()),
        )
        rows = session.execute("SELECT value FROM meta WHERE key = ?", (SIGNING_KEY_ROW,))
    return bytes.fromhex(rows[0][0])


def _client_still_active(database: Database, client_id: str, now: datetime) -> bool:
    cache = _cache(database)
    checked = cache.clients.get(client_id)
    if checked is None or not 0 <= (now - checked.at).total_seconds() < CLIENT_RECHECK_SECONDS:
        with database.read() as session:
            client = get_client(session, client_id)
        checked = _Checked(now, client is not None and client.active)
        cache.clients[client_id] = checked
    return checked.active
