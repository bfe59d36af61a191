"""Encrypted, content-addressed attachment files: round trips and every kind of tampering."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from field_app import AttachmentStore, BadInput, Session, StoreCorrupt
from field_app.attachments import CHUNK, MAGIC, SALT, TAG

HEADER = len(MAGIC) + SALT
SEALED = CHUNK + TAG


@pytest.fixture
def store(session: Session) -> AttachmentStore:
    return session.attachments


def content_of(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def only_file(store: AttachmentStore) -> Path:
    [path] = list(store.folder.iterdir())
    return path


def test_a_small_attachment_round_trips(store: AttachmentStore) -> None:
    content = b"voice note: cough for three days"

    sha, size = store.put_bytes(content)

    assert sha == hashlib.sha256(content).hexdigest()
    assert size == len(content)
    assert store.has(sha)
    assert store.read(sha) == content


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 200 * 1024])
def test_attachments_of_every_size_round_trip(store: AttachmentStore, size: int) -> None:
    content = content_of(size)

    sha, stored = store.put_bytes(content)

    assert (sha, stored) == (hashlib.sha256(content).hexdigest(), size)
    assert store.read(sha) == content
    chunks = (size + CHUNK - 1) // CHUNK or 1
    assert only_file(store).stat().st_size == HEADER + size + chunks * TAG


def test_a_large_attachment_is_read_chunk_by_chunk(store: AttachmentStore) -> None:
    content = content_of(200 * 1024)
    sha, _ = store.put_bytes(content)

    chunks = list(store.open(sha))

    assert [len(c) for c in chunks] == [CHUNK, CHUNK, CHUNK, 200 * 1024 - 3 * CHUNK]
    assert b"".join(chunks) == content


def test_the_file_name_and_bytes_do_not_reveal_the_content(store: AttachmentStore) -> None:
    content = b"Photo of Zawadi Mushi's rash, left arm. " * 5000
    sha, _ = store.put_bytes(content)

    path = only_file(store)
    raw = path.read_bytes()

    assert path.name != sha
    assert sha not in path.name
    assert hashlib.sha256(content).digest() not in raw
    assert b"Zawadi" not in raw
    assert b"rash, left arm" not in raw
    assert raw.startswith(MAGIC)


def test_the_same_content_twice_is_one_file(store: AttachmentStore) -> None:
    content = content_of(100_000)

    first = store.put_bytes(content)
    second = store.put_bytes(content)

    assert first == second
    assert store.read(first[0]) == content
    assert len(list(store.folder.iterdir())) == 1


def test_another_tablets_key_finds_nothing(store: AttachmentStore) -> None:
    sha, _ = store.put_bytes(b"a voice note")

    stranger = AttachmentStore(store.folder, os.urandom(32))

    assert not stranger.has(sha)
    with pytest.raises(BadInput):
        stranger.read(sha)


@pytest.mark.parametrize(
    "attachment_id",
    [hashlib.sha256(b"never stored").hexdigest(), "ABCDEF" * 10 + "ABCD", "../../keys.json", ""],
    ids=["unknown", "upper-case", "path", "empty"],
)
def test_an_unknown_or_malformed_id_is_bad_input(store: AttachmentStore, attachment_id) -> None:
    store.put_bytes(b"something")

    with pytest.raises(BadInput, match="attachment"):
        store.read(attachment_id)


# -- tampering ----------------------------------------------------------------------------------


def tamper(store: AttachmentStore, size: int, change) -> str:
    """Store ``size`` bytes, apply ``change`` to the file's bytes, return the attachment ID."""
    sha, _ = store.put_bytes(content_of(size))
    path = only_file(store)
    path.write_bytes(change(bytearray(path.read_bytes())))
    return sha


def flip(offset: int):
    def change(raw: bytearray) -> bytes:
        raw[offset] ^= 0x01
        return bytes(raw)

    return change


@pytest.mark.parametrize(
    "offset",
    [0, len(MAGIC), HEADER, HEADER + 1000, HEADER + SEALED - 1, HEADER + 2 * SEALED + 5, -1],
    ids=["magic", "salt", "first-byte", "first-chunk", "first-tag", "third-chunk", "last-tag"],
)
def test_a_flipped_bit_is_store_corrupt(store: AttachmentStore, offset: int) -> None:
    sha = tamper(store, 200 * 1024, flip(offset))

    with pytest.raises(StoreCorrupt, match="attachment"):
        store.read(sha)


def test_dropping_the_last_chunk_is_store_corrupt(store: AttachmentStore) -> None:
    sha = tamper(store, 200 * 1024, lambda raw: bytes(raw[: HEADER + 3 * SEALED]))

    with pytest.raises(StoreCorrupt, match="incomplete"):
        store.read(sha)


def test_dropping_the_last_chunk_of_an_exact_multiple_is_store_corrupt(
    store: AttachmentStore,
) -> None:
    sha = tamper(store, 3 * CHUNK, lambda raw: bytes(raw[: HEADER + 2 * SEALED]))

    with pytest.raises(StoreCorrupt):
        store.read(sha)


@pytest.mark.parametrize("keep", [0, 1, HEADER - 1, HEADER, HEADER + 100])
def test_a_cut_short_file_is_store_corrupt(store: AttachmentStore, keep: int) -> None:
    sha = tamper(store, 1000, lambda raw: bytes(raw[:keep]))

    with pytest.raises(StoreCorrupt):
        store.read(sha)


def test_swapped_chunks_are_store_corrupt(store: AttachmentStore) -> None:
    def swap(raw: bytearray) -> bytes:
        first = raw[HEADER : HEADER + SEALED]
        second = raw[HEADER + SEALED : HEADER + 2 * SEALED]
        return bytes(raw[:HEADER] + second + first + raw[HEADER + 2 * SEALED :])

    sha = tamper(store, 200 * 1024, swap)

    with pytest.raises(StoreCorrupt):
        store.read(sha)


def test_an_appended_chunk_is_store_corrupt(store: AttachmentStore) -> None:
    sha = tamper(store, 200 * 1024, lambda raw: bytes(raw + raw[HEADER : HEADER + SEALED]))

    with pytest.raises(StoreCorrupt):
        store.read(sha)


def test_one_attachment_put_in_place_of_another_is_store_corrupt(
    store: AttachmentStore,
) -> None:
    photo, _ = store.put_bytes(b"photo " * 1000)
    photo_path = only_file(store)
    note, _ = store.put_bytes(b"voice note " * 1000)
    note_path = next(p for p in store.folder.iterdir() if p != photo_path)

    note_path.write_bytes(photo_path.read_bytes())

    with pytest.raises(StoreCorrupt, match="content hash"):
        store.read(note)
    assert store.read(photo) == b"photo " * 1000


def test_damage_is_found_before_the_damaged_chunk_is_released(store: AttachmentStore) -> None:
    sha = tamper(store, 200 * 1024, flip(HEADER + SEALED + 10))
    chunks = store.open(sha)

    assert len(next(chunks)) == CHUNK
    with pytest.raises(StoreCorrupt):
        next(chunks)
