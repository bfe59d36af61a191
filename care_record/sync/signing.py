"""What a device signs for each request (the signature itself is Ed25519, made by each side
with its own crypto library; the care record only defines the bytes)."""

from __future__ import annotations

import hashlib

SIGNATURE_SCHEME = b"RCS1-SIG"
HEADER_DEVICE = "X-Device"
HEADER_TIME = "X-Time"
HEADER_NONCE = "X-Nonce"
HEADER_SIGNATURE = "X-Signature"


def signed_message(method: str, path: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    """The exact bytes a request's signature covers: scheme, method, path, Unix time, nonce,
    and the SHA-256 of the body, one per line."""
    digest = hashlib.sha256(body).hexdigest()
    lines = [SIGNATURE_SCHEME, method.upper().encode(), path.encode(), str(timestamp).encode()]
    lines += [nonce.encode(), digest.encode()]
    return b"\n".join(lines)
