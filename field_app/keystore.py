"""The key hierarchy of a tablet.

    PIN of a CHW --scrypt--> key-encryption key --AES-256-GCM--> data key (random, 256 bits)
                                                                  |
                                        SQLCipher raw key  <------+------> attachment key (HKDF)

The data key never touches the disk in clear. ``keys.json`` beside the database holds, for each
CHW who uses the tablet, the data key wrapped under a key derived from that CHW's PIN (one
*slot* per CHW), plus the count of wrong PINs. Removing every slot makes the database and the
attachments unreadable for good: that is how a tablet is wiped (crypto-erase).

The file is rewritten atomically (write, fsync, rename), so a crash never leaves a half-written
key file. How a slot wraps the key is a ``KeyWrapper``; a hardware key store (Android Keystore,
a TPM) plugs in there.
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from care_record import Clock
from field_app.errors import (
    BadInput,
    LockedOut,
    StoreCorrupt,
    StoreErased,
    StoreExists,
    StoreMissing,
    TooSoon,
    UnknownUser,
    WrongPin,
)

KEY_FILE = "keys.json"
FORMAT = 1
DATA_KEY_BYTES = 32
MIN_PIN_LENGTH = 6
MAX_PIN_LENGTH = 64
MAX_WAIT = timedelta(hours=1)
FIRST_WAIT = timedelta(seconds=30)


class KeyWrapper(Protocol):
    """Wraps the data key under a user secret. A hardware key store implements this too."""

    def wrap(self, data_key: bytes, secret: str, context: bytes) -> dict[str, Any]: ...

    def unwrap(self, slot: dict[str, Any], secret: str, context: bytes) -> bytes:
        """Return the data key, or raise WrongPin."""
        ...


class ScryptWrapper:
    """PIN -> scrypt (memory-hard) -> AES-256-GCM key wrap, bound to the store and user."""

    def __init__(self, log2_n: int = 17, r: int = 8, p: int = 1) -> None:
        self.log2_n, self.r, self.p = log2_n, r, p

    def wrap(self, data_key: bytes, secret: str, context: bytes) -> dict[str, Any]:
        salt = os.urandom(16)
        kek = _scrypt(secret, salt, self.log2_n, self.r, self.p)
        nonce = os.urandom(12)
        return {
            "kdf": {
                "name": "scrypt",
                "log2_n": self.log2_n,
                "r": self.r,
                "p": self.p,
                "salt": _b64(salt),
            },
            "nonce": _b64(nonce),
            "wrapped": _b64(AESGCM(kek).encrypt(nonce, data_key, context)),
        }

    def unwrap(self, slot: dict[str, Any], secret: str, context: bytes) -> bytes:
        kdf = slot["kdf"]
        kek = _scrypt(secret, _unb64(kdf["salt"]), int(kdf["log2_n"]), int(kdf["r"]), int(kdf["p"]))
        try:
            return AESGCM(kek).decrypt(_unb64(slot["nonce"]), _unb64(slot["wrapped"]), context)
        except InvalidTag:
            raise WrongPin("wrong PIN") from None


def _scrypt(secret: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p)
    return kdf.derive(secret.encode("utf-8"))


@dataclass(frozen=True)
class User:
    id: str
    name: str
    role: str


@dataclass(frozen=True)
class Policy:
    free_attempts: int = 4
    max_failures: int = 10


class KeyStore:
    """The key file of one store folder. All state lives in the file; none in this object."""

    def __init__(self, folder: Path, clock: Clock, wrapper: KeyWrapper, policy: Policy) -> None:
        self.path = folder / KEY_FILE
        self.clock = clock
        self.wrapper = wrapper
        self.policy = policy

    # -- creation ---------------------------------------------------------------------------

    def create(self, user: User, pin: str) -> bytes:
        """Make a new data key and the first user's slot. Returns the data key."""
        if self.path.exists():
            raise StoreExists("a store already exists in this folder")
        check_pin(pin)
        data_key = secrets.token_bytes(DATA_KEY_BYTES)
        store_id = secrets.token_hex(16)
        content: dict[str, Any] = {
            "format": FORMAT,
            "store_id": store_id,
            "device_actor": secrets.token_hex(16),
            "slots": {},
        }
        content["slots"][user.id] = self._new_slot(store_id, user, pin, data_key)
        self._write(content)
        return data_key

    def add_user(self, data_key: bytes, user: User, pin: str) -> None:
        """Give another CHW a slot; needs the data key, so only an unlocked session can."""
        check_pin(pin)
        content = self._read()
        if any(s["name"] == user.name for s in content["slots"].values()):
            raise BadInput(f"a user called '{user.name}' already uses this tablet")
        content["slots"][user.id] = self._new_slot(content["store_id"], user, pin, data_key)
        self._write(content)

    def reset_pin(self, data_key: bytes, user_id: str, pin: str) -> None:
        """Set a new PIN for a user (clears a lock-out); needs an unlocked session."""
        check_pin(pin)
        content = self._read()
        slot = self._slot(content, user_id)
        user = User(user_id, slot["name"], slot["role"])
        content["slots"][user_id] = self._new_slot(content["store_id"], user, pin, data_key)
        self._write(content)

    # -- unlocking ---------------------------------------------------------------------------

    def unlock(self, user_name: str, pin: str) -> tuple[User, bytes]:
        """Return the user and the data key, or raise WrongPin, TooSoon, LockedOut, UnknownUser."""
        content = self._read()
        user_id, slot = self._slot_by_name(content, user_name)
        try:
            self._refuse_if_waiting(slot)
            data_key = self.wrapper.unwrap(slot, pin, _context(content["store_id"], user_id))
        except WrongPin:
            self._record_failure(content, user_id)
            raise
        except (KeyError, TypeError, ValueError):
            # A slot that is valid JSON but not a slot (bad base64, missing or mistyped fields).
            raise StoreCorrupt("the key file of this store is damaged") from None
        if slot.get("failures"):
            slot["failures"], slot["not_before"] = 0, None
            self._write(content)
        return User(user_id, slot["name"], slot["role"]), data_key

    def _refuse_if_waiting(self, slot: dict[str, Any]) -> None:
        if slot.get("failures", 0) >= self.policy.max_failures:
            raise LockedOut(
                "this user is locked out after too many wrong PINs; "
                "another CHW on this tablet or a supervisor must reset the PIN"
            )
        not_before = slot.get("not_before")
        if not_before:
            wait = datetime.fromisoformat(not_before) - self.clock.now()
            if wait.total_seconds() > 0:
                seconds = math.ceil(wait.total_seconds())
                raise TooSoon(
                    f"too many wrong PINs: wait {seconds} seconds, then try again", seconds
                )

    def _record_failure(self, content: dict[str, Any], user_id: str) -> None:
        slot = content["slots"][user_id]
        failures = int(slot.get("failures", 0)) + 1
        slot["failures"] = failures
        # After `free_attempts` wrong PINs, every further try waits: 30 s, 60 s, 120 s, ...
        extra = failures - self.policy.free_attempts
        if extra >= 0:
            # The exponent is capped: a large max_pin_failures must not overflow timedelta.
            wait = min(FIRST_WAIT * 2 ** min(extra, 16), MAX_WAIT)
            slot["not_before"] = (self.clock.now() + wait).isoformat()
        self._write(content)
        left = self.policy.max_failures - failures
        if left <= 0:
            raise LockedOut(
                "wrong PIN. This user is now locked out; "
                "another CHW on this tablet or a supervisor must reset the PIN"
            )
        raise WrongPin(f"wrong PIN: {left} tries left before this user is locked out")

    # -- reading ------------------------------------------------------------------------------

    def users(self) -> list[User]:
        content = self._read()
        return [User(uid, s["name"], s["role"]) for uid, s in content["slots"].items()]

    def device_actor(self) -> bytes:
        return bytes.fromhex(self._read()["device_actor"])

    def store_id(self) -> str:
        return str(self._read()["store_id"])

    def failures(self, user_name: str) -> int:
        _, slot = self._slot_by_name(self._read(), user_name)
        return int(slot.get("failures", 0))

    # -- file ----------------------------------------------------------------------------------

    def _new_slot(self, store_id: str, user: User, pin: str, data_key: bytes) -> dict[str, Any]:
        wrapped = self.wrapper.wrap(data_key, pin, _context(store_id, user.id))
        return {"name": user.name, "role": user.role, "failures": 0, "not_before": None, **wrapped}

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            if (self.path.parent / "erased").exists():
                raise StoreErased("this tablet's data was erased and cannot be recovered") from None
            raise StoreMissing("no store here yet: run 'init' first") from None
        try:
            content = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            content = None
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            raise StoreCorrupt("the key file of this store is damaged")
        if not isinstance(content.get("slots"), dict) or not all(
            isinstance(slot, dict) and isinstance(slot.get("name"), str)
            for slot in content["slots"].values()
        ):
            raise StoreCorrupt("the key file of this store is damaged")
        if not isinstance(content.get("store_id"), str) or not _is_hex(content.get("device_actor")):
            raise StoreCorrupt("the key file of this store is damaged")
        return content

    def _write(self, content: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        _fsync_dir(self.path.parent)

    def _slot(self, content: dict[str, Any], user_id: str) -> dict[str, Any]:
        slot = content["slots"].get(user_id)
        if slot is None:
            raise UnknownUser("no such user on this tablet")
        return dict(slot)

    def _slot_by_name(self, content: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
        for user_id, slot in content["slots"].items():
            if slot["name"] == name:
                return user_id, slot
        raise UnknownUser(f"no user called '{name}' on this tablet")


def destroy_key_file(folder: Path) -> None:
    """Crypto-erase: overwrite the key file with random bytes, flush, then delete it.

    Flash storage may keep an old copy of the blocks; such a copy is still protected by the
    PINs and scrypt, which is what the README says a PIN can and cannot resist.
    """
    path = folder / KEY_FILE
    if not path.exists():
        return
    size = max(path.stat().st_size, 4096)
    with path.open("r+b") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
    _fsync_dir(folder)


def check_pin(pin: str) -> None:
    if not MIN_PIN_LENGTH <= len(pin) <= MAX_PIN_LENGTH or pin.strip() != pin:
        raise BadInput(
            f"a PIN must be {MIN_PIN_LENGTH} to {MAX_PIN_LENGTH} characters, no spaces at the ends"
        )
    if len(set(pin)) == 1 or pin in "01234567890" or pin in "09876543210":
        raise BadInput("choose a PIN that is not a repeated or running sequence of digits")


def derive_key(data_key: bytes, purpose: str) -> bytes:
    """A sub-key of the data key for one purpose (attachments, sessions)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
    return hkdf.derive(data_key)


def _context(store_id: str, user_id: str) -> bytes:
    return f"field_app/slot/{store_id}/{user_id}".encode()


def _is_hex(text: object) -> bool:
    try:
        return isinstance(text, str) and len(bytes.fromhex(text)) > 0
    except ValueError:
        return False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
