"""Unlocking the tablet: a CHW's PIN opens a session; idleness or a tap locks it again.

A ``Session`` holds the data key and the open database. Every use checks the idle timer first:
past it, the session locks itself (closes the database, forgets the key) and raises Locked.

The headless CLI runs one process per command, so it can also keep a session between commands
the way password-manager CLIs do: ``unlock`` prints a random token for the shell to keep, and
writes the data key wrapped under that token to ``session.json``. Neither half opens the store
alone; the file expires after the idle timeout and ``lock`` deletes it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from care_record import Clock, new_id
from field_app.attachments import AttachmentStore
from field_app.errors import BadInput, Locked, StoreErased, StoreMissing
from field_app.keystore import (
    KEY_FILE,
    KeyStore,
    Policy,
    ScryptWrapper,
    User,
    derive_key,
    destroy_key_file,
)
from field_app.settings import Settings
from field_app.store import DB_FILE, Store, connect

SESSION_FILE = "session.json"
ERASED_MARK = "erased"
ATTACHMENTS = "attachments"


class Session:
    """An unlocked tablet for one CHW. Locks itself after ``idle_seconds`` without use."""

    def __init__(
        self, settings: Settings, clock: Clock, keys: KeyStore, user: User, data_key: bytes
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.keys = keys
        self.user = user
        self._data_key: bytes | None = data_key
        db = connect(settings.data_dir / DB_FILE, data_key)
        self._store: Store | None = Store(
            db, actor=keys.device_actor(), author=user.id, clock=clock
        )
        self._last_used = clock.now()

    @property
    def store(self) -> Store:
        """The open store. Raises Locked if the session is locked or has been idle too long."""
        self._check_idle()
        assert self._store is not None  # noqa: S101 - _check_idle guarantees it
        return self._store

    @property
    def attachments(self) -> AttachmentStore:
        return AttachmentStore(self.settings.data_dir / ATTACHMENTS, self._key())

    @property
    def locked(self) -> bool:
        return self._store is None

    def add_user(self, name: str, pin: str, role: str = "chw") -> User:
        """Let another CHW use this tablet with their own PIN."""
        user = User(new_id(self.clock), _check_name(name), role)
        self.keys.add_user(self._key(), user, pin)
        return user

    def reset_pin(self, name: str, pin: str) -> None:
        """Give a user a new PIN (and clear a lock-out)."""
        target = next((u for u in self.keys.users() if u.name == name), None)
        if target is None:
            raise BadInput(f"no user called '{name}' on this tablet")
        self.keys.reset_pin(self._key(), target.id, pin)

    def lock(self) -> None:
        if self._store is not None:
            self._store.close()
        self._store, self._data_key = None, None

    def _key(self) -> bytes:
        self._check_idle()
        assert self._data_key is not None  # noqa: S101 - _check_idle guarantees it
        return self._data_key

    def _check_idle(self) -> None:
        if self._store is None:
            raise Locked("the tablet is locked: enter your PIN")
        idle = (self.clock.now() - self._last_used).total_seconds()
        if idle > self.settings.idle_lock_seconds:
            self.lock()
            raise Locked("the tablet locked itself after being idle: enter your PIN")
        self._last_used = self.clock.now()


def keystore(settings: Settings, clock: Clock) -> KeyStore:
    wrapper = ScryptWrapper(log2_n=settings.scrypt_log2_n)
    policy = Policy(
        free_attempts=settings.free_pin_attempts, max_failures=settings.max_pin_failures
    )
    return KeyStore(settings.data_dir, clock, wrapper, policy)


def init_store(settings: Settings, clock: Clock, user_name: str, pin: str) -> Session:
    """Create the store and its first CHW user; returns an unlocked session."""
    folder = settings.data_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / ERASED_MARK).unlink(missing_ok=True)
    keys = keystore(settings, clock)
    user = User(new_id(clock), _check_name(user_name), "chw")
    data_key = keys.create(user, pin)
    return Session(settings, clock, keys, user, data_key)


def unlock(settings: Settings, clock: Clock, user_name: str, pin: str) -> Session:
    """Open the store with a CHW's PIN. Raises WrongPin, TooSoon, LockedOut, UnknownUser."""
    keys = keystore(settings, clock)
    user, data_key = keys.unlock(user_name, pin)
    return Session(settings, clock, keys, user, data_key)


def only_user(settings: Settings, clock: Clock) -> str | None:
    users = keystore(settings, clock).users()
    return users[0].name if len(users) == 1 else None


def erase(settings: Settings) -> None:
    """Crypto-erase: destroy the key file first (the data is unreadable from that moment),
    then delete the database, its log, the attachments and any CLI session."""
    folder = settings.data_dir
    if not (folder / KEY_FILE).exists():
        if (folder / ERASED_MARK).exists():
            raise StoreErased("this tablet was already erased")
        raise StoreMissing("no store here to erase")
    destroy_key_file(folder)
    leftovers = (f"{DB_FILE}-wal", f"{DB_FILE}-shm", f"{DB_FILE}-journal", "keys.tmp")
    for name in (DB_FILE, *leftovers, SESSION_FILE, f"{SESSION_FILE}.tmp"):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / ATTACHMENTS, ignore_errors=True)
    (folder / ERASED_MARK).write_text("This tablet's data was erased.\n", encoding="utf-8")


# -- CLI sessions between commands ---------------------------------------------------------


def issue_token(session: Session) -> str:
    """Keep ``session`` open for later commands; return the token the shell must hold."""
    token = secrets.token_urlsafe(32)
    nonce = os.urandom(12)
    wrapped = AESGCM(_token_key(token)).encrypt(nonce, session._key(), session.user.id.encode())
    record = {
        "user": session.user.name,
        "nonce": nonce.hex(),
        "wrapped": wrapped.hex(),
        "last_used": session.clock.now().isoformat(),
    }
    _write_session_file(session.settings.data_dir, record)
    return token


def resume(settings: Settings, clock: Clock, token: str) -> Session:
    """Reopen the session kept by ``issue_token``. Raises Locked if it expired or was locked."""
    path = settings.data_dir / SESSION_FILE
    record = _read_session_file(path)
    idle = (clock.now() - datetime.fromisoformat(record["last_used"])).total_seconds()
    if idle > settings.idle_lock_seconds:
        path.unlink(missing_ok=True)
        raise Locked("the tablet locked itself after being idle: enter your PIN")
    keys = keystore(settings, clock)
    user = next((u for u in keys.users() if u.name == record["user"]), None)
    if user is None:
        raise Locked("the session's user no longer exists: enter your PIN")
    try:
        data_key = AESGCM(_token_key(token)).decrypt(
            bytes.fromhex(record["nonce"]), bytes.fromhex(record["wrapped"]), user.id.encode()
        )
    except (InvalidTag, ValueError):
        raise Locked("the session token does not match: enter your PIN") from None
    record["last_used"] = clock.now().isoformat()
    _write_session_file(settings.data_dir, record)
    return Session(settings, clock, keys, user, data_key)


def end_sessions(settings: Settings) -> bool:
    """Lock the tablet: forget any session kept between commands. True if one was open."""
    path = settings.data_dir / SESSION_FILE
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def _token_key(token: str) -> bytes:
    return derive_key(token.encode("ascii"), "field_app/cli-session")


def _read_session_file(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Locked("the tablet is locked: enter your PIN") from None
    except ValueError:
        path.unlink(missing_ok=True)
        raise Locked("the tablet is locked: enter your PIN") from None
    if (
        not isinstance(record, dict)
        or not {"user", "nonce", "wrapped", "last_used"} <= record.keys()
    ):
        path.unlink(missing_ok=True)
        raise Locked("the tablet is locked: enter your PIN")
    return record


def _write_session_file(folder: Path, record: dict[str, Any]) -> None:
    tmp = folder / f"{SESSION_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
    tmp.replace(folder / SESSION_FILE)


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 40 or not all(c.isalnum() or c in "._-" for c in name):
        raise BadInput("a user name is 1 to 40 letters, digits, '.', '_' or '-'")
    return name
