"""Encrypted attachment files (voice notes, photos), content-addressed.

A chart refers to an attachment by the SHA-256 of its plain content, so every device and the
hub agree on its name. On disk the file is named by an HMAC of that hash under a key derived
from the data key, so a file name does not reveal which content the tablet holds.

File format (all chunks AES-256-GCM, streamed, never the whole file in memory)::

    magic "RCA1" | salt (16 bytes) | chunk 0 | chunk 1 | ... | last chunk
    chunk = ciphertext of up to 64 KiB + 16-byte tag
    file key = HKDF(attachment key, salt); nonce = 11-byte big-endian chunk number | last flag

The chunk number in the nonce stops reordering; the last-chunk flag stops truncation; the
per-file key means nonces never repeat under one key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_app.errors import BadInput, StoreCorrupt
from field_app.keystore import derive_key

MAGIC = b"RCA1"
CHUNK = 64 * 1024
TAG = 16
SALT = 16


class AttachmentStore:
    def __init__(self, folder: Path, data_key: bytes) -> None:
        self.folder = folder
        self._key = derive_key(data_key, "field_app/attachments")
        self._names = derive_key(data_key, "field_app/attachment-names")

    def put(self, source: BinaryIO) -> tuple[str, int]:
        """Encrypt ``source`` into the store; return (sha256 of the content, size in bytes)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        salt = os.urandom(SALT)
        aead = AESGCM(derive_key(self._key + salt, "file"))
        digest, size = hashlib.sha256(), 0
        tmp = self.folder / f".incoming-{os.urandom(8).hex()}"
        try:
            with tmp.open("wb") as out:
                out.write(MAGIC + salt)
                for index, chunk, last in _chunks(source):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(aead.encrypt(_nonce(index, last), chunk, MAGIC + salt))
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            tmp.replace(self._path(sha))
        finally:
            tmp.unlink(missing_ok=True)
        return sha, size

    def put_bytes(self, content: bytes) -> tuple[str, int]:
        from io import BytesIO  # noqa: PLC0415 - only this convenience needs it

        return self.put(BytesIO(content))

    def open(self, sha256: str) -> Iterator[bytes]:
        """Yield the plain content chunk by chunk, each authenticated before it is yielded.

        Raises BadInput for an unknown attachment, StoreCorrupt if the file was tampered with
        or cut short (the content hash is checked at the end as well).
        """
        path = self._path(sha256)
        if not path.exists():
            raise BadInput("no attachment with that ID on this tablet")
        return self._decrypt(path, sha256)

    def read(self, sha256: str) -> bytes:
        return b"".join(self.open(sha256))

    def has(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def _decrypt(self, path: Path, sha256: str) -> Iterator[bytes]:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            header = f.read(len(MAGIC) + SALT)
            if len(header) != len(MAGIC) + SALT or not header.startswith(MAGIC):
                raise StoreCorrupt("an attachment file is damaged")
            aead = AESGCM(derive_key(self._key + header[len(MAGIC) :], "file"))
            index, block = 0, f.read(CHUNK + TAG)
            while True:
                following = f.read(CHUNK + TAG)
                last = not following
                try:
                    plain = aead.decrypt(_nonce(index, last), block, header)
                except InvalidTag:
                    raise StoreCorrupt("an attachment file is damaged or incomplete") from None
                digest.update(plain)
                yield plain
                if last:
                    break
                index, block = index + 1, following
        if not hmac.compare_digest(digest.hexdigest(), sha256):
            raise StoreCorrupt("an attachment does not match its content hash")

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BadInput("an attachment ID is a 64-character SHA-256 in hexadecimal")
        name = hmac.new(self._names, sha256.encode(), hashlib.sha256).hexdigest()
        return self.folder / name


def _chunks(source: BinaryIO) -> Iterable[tuple[int, bytes, bool]]:
    index, current = 0, source.read(CHUNK)
    while True:
        following = source.read(CHUNK)
        yield index, current, not following
        if not following:
            return
        index, current = index + 1, following


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
