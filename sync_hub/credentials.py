"""The hub's credentials at central: a P-384 key pair and the client assertions it signs.

SMART Backend Services: the hub proves who it is with a short JWT signed by its private key
(ES384); central's operator has registered the public half (``central-key`` prints it as a
JWK) under the hub's client ID. The private key never leaves the key file, which only its owner
may read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sync_hub.errors import CentralNotConfigured

ALGORITHM = "ES384"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The contract allows five minutes at most; a little less leaves room for the two clocks.
ASSERTION_LIFETIME = timedelta(minutes=4)
_COORDINATE_BYTES = 48  # P-384


def create_key(path: Path) -> bool:
    """Write a new P-384 private key to ``path`` (PEM, mode 0600) unless one is there.

    Returns whether a key was created. Never overwrites: a key central knows must not change
    under it.
    """
    if path.exists():
        return False
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created with its final mode, so the key is never readable by others, even for a moment.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    return True


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The hub's private key. Raises CentralNotConfigured if the file is missing or is not a
    P-384 private key."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CentralNotConfigured(
            f"the hub's key file {path} does not exist: run `python -m sync_hub central-key` "
            "and register the printed key with central"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CentralNotConfigured(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
        raise CentralNotConfigured(f"{path} is not a P-384 (secp384r1) key")
    return key


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The public half as a JWK (RFC 7517), with ``kid`` its RFC 7638 thumbprint."""
    jwk = _public_members(key)
    return {**jwk, "kid": thumbprint(key), "use": "sig", "alg": ALGORITHM}


def thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638: SHA-256 of the required members in lexical order, no spaces, base64url."""
    members = json.dumps(_public_members(key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(members.encode()).digest())


def client_assertion(
    key: ec.EllipticCurvePrivateKey, *, client_id: str, token_url: str, now: datetime
) -> str:
    """A signed JWT that says "this is client ``client_id``" to ``token_url``, once."""
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
        "jti": secrets.token_urlsafe(24),
    }
    return jwt.encode(
        claims, key, algorithm=ALGORITHM, headers={"kid": thumbprint(key), "typ": "JWT"}
    )


def _public_members(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "crv": "P-384",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(_COORDINATE_BYTES, "big")),
        "y": _b64url(numbers.y.to_bytes(_COORDINATE_BYTES, "big")),
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
