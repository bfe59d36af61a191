"""The key file: PIN slots that wrap one data key, back-off, lock-out and the AAD binding."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from care_record import FixedClock
from field_app import (
    BadInput,
    LockedOut,
    Session,
    Settings,
    StoreCorrupt,
    StoreExists,
    StoreMissing,
    TooSoon,
    UnknownUser,
    WrongPin,
    add_patient,
    init_store,
    patient_chart,
    unlock,
)
from field_app.session import keystore

USER, PIN = "amina", "482913"
OTHER_USER, OTHER_PIN = "baraka", "739164"
WRONG_PIN = "000111"
PATIENT = {"given": "Zawadi", "family": "Mushi", "sex": "female", "birth_date": "2001-02-03"}
THREE_USERS = [(USER, PIN), (OTHER_USER, OTHER_PIN), ("chausiku", "905172")]


def key_file(settings: Settings) -> dict[str, Any]:
    return json.loads((settings.data_dir / "keys.json").read_text(encoding="utf-8"))


def write_key_file(settings: Settings, content: dict[str, Any]) -> None:
    (settings.data_dir / "keys.json").write_text(json.dumps(content), encoding="utf-8")


def fail_once(settings: Settings, clock: FixedClock, user: str = USER) -> None:
    """One wrong PIN, waiting out any back-off first. Raises LockedOut when it locks out."""
    try:
        unlock(settings, clock, user, WRONG_PIN)
    except TooSoon as exc:
        clock.advance(timedelta(seconds=exc.wait_seconds))
        fail_once(settings, clock, user)
    except WrongPin:
        return


def lock_out(settings: Settings, clock: FixedClock, user: str = USER) -> None:
    for _ in range(settings.max_pin_failures - 1):
        fail_once(settings, clock, user)
    with pytest.raises(LockedOut, match="now locked out"):
        fail_once(settings, clock, user)


# -- unwrapping ------------------------------------------------------------------------------


def test_the_right_pin_unwraps_the_data_key(session: Session, settings: Settings, clock) -> None:
    patient = add_patient(session, PATIENT)
    session.lock()

    user, data_key = keystore(settings, clock).unlock(USER, PIN)

    assert user.name == USER
    assert len(data_key) == 32
    reopened = unlock(settings, clock, USER, PIN)
    assert reopened._key() == data_key
    assert patient_chart(reopened, patient).fields["given"] == "Zawadi"
    reopened.lock()


def test_the_data_key_is_not_in_the_key_file(session: Session, settings: Settings) -> None:
    raw = (settings.data_dir / "keys.json").read_bytes()

    assert session._key().hex().encode() not in raw
    assert session._key() not in raw
    assert PIN.encode() not in raw


def test_several_chws_share_one_tablet_each_with_their_own_pin(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    patient = add_patient(session, PATIENT)
    session.add_user(OTHER_USER, OTHER_PIN)
    session.add_user("chausiku", "905172")
    session.lock()

    keys = keystore(settings, clock)
    assert sorted(u.name for u in keys.users()) == ["amina", "baraka", "chausiku"]
    opened = [unlock(settings, clock, name, pin) for name, pin in THREE_USERS]
    assert len({s._key() for s in opened}) == 1
    assert len({s.user.id for s in opened}) == 3
    for other in opened:
        assert patient_chart(other, patient).fields["given"] == "Zawadi"
        other.lock()
    salts = {slot["kdf"]["salt"] for slot in key_file(settings)["slots"].values()}
    assert len(salts) == 3
    with pytest.raises(WrongPin):
        unlock(settings, clock, OTHER_USER, PIN)


def test_a_second_user_needs_a_new_name(session: Session, settings: Settings) -> None:
    before = key_file(settings)

    with pytest.raises(BadInput, match="already uses this tablet"):
        session.add_user(USER, OTHER_PIN)
    with pytest.raises(BadInput, match="user name"):
        session.add_user("no spaces please", OTHER_PIN)

    assert key_file(settings) == before


def test_an_unknown_user_is_refused(session: Session, settings: Settings, clock) -> None:
    with pytest.raises(UnknownUser):
        unlock(settings, clock, "zuhura", PIN)


def test_a_folder_without_a_store_and_a_second_init_are_refused(
    session: Session, settings: Settings, make_settings, clock
) -> None:
    with pytest.raises(StoreMissing, match="init"):
        unlock(make_settings("empty"), clock, USER, PIN)
    before = (settings.data_dir / "keys.json").read_bytes()

    with pytest.raises(StoreExists):
        init_store(settings, clock, "someone", "390671")

    assert (settings.data_dir / "keys.json").read_bytes() == before


# -- wrong PINs ------------------------------------------------------------------------------


def test_a_wrong_pin_says_how_many_tries_are_left_and_is_counted(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    session.lock()
    keys = keystore(settings, clock)

    with pytest.raises(WrongPin, match="9 tries left"):
        unlock(settings, clock, USER, WRONG_PIN)
    assert keys.failures(USER) == 1
    with pytest.raises(WrongPin, match="8 tries left"):
        unlock(settings, clock, USER, WRONG_PIN)
    assert keys.failures(USER) == 2


def test_wrong_pins_of_one_user_do_not_count_against_another(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    session.add_user(OTHER_USER, OTHER_PIN)
    for _ in range(3):
        fail_once(settings, clock)

    keys = keystore(settings, clock)
    assert keys.failures(USER) == 3
    assert keys.failures(OTHER_USER) == 0
    unlock(settings, clock, OTHER_USER, OTHER_PIN).lock()


def test_after_the_free_attempts_even_the_right_pin_must_wait(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    assert settings.free_pin_attempts == 4
    for _ in range(settings.free_pin_attempts):
        with pytest.raises(WrongPin):
            unlock(settings, clock, USER, WRONG_PIN)

    with pytest.raises(TooSoon, match="wait 30 seconds") as waited:
        unlock(settings, clock, USER, PIN)
    assert waited.value.wait_seconds == 30

    clock.advance(timedelta(seconds=29))
    with pytest.raises(TooSoon) as waited:
        unlock(settings, clock, USER, PIN)
    assert waited.value.wait_seconds == 1
    assert keystore(settings, clock).failures(USER) == settings.free_pin_attempts

    clock.advance(timedelta(seconds=1))
    unlock(settings, clock, USER, PIN).lock()


def test_the_wait_doubles_with_each_wrong_pin_up_to_an_hour(
    make_settings: Callable[..., Settings], clock: FixedClock
) -> None:
    settings = make_settings(max_pin_failures=20)
    init_store(settings, clock, USER, PIN).lock()
    for _ in range(settings.free_pin_attempts - 1):
        fail_once(settings, clock)

    waits = []
    for _ in range(10):
        fail_once(settings, clock)
        with pytest.raises(TooSoon) as waited:
            unlock(settings, clock, USER, WRONG_PIN)
        waits.append(waited.value.wait_seconds)
        clock.advance(timedelta(seconds=waited.value.wait_seconds))

    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_a_large_lock_out_limit_does_not_break_the_back_off(
    make_settings: Callable[..., Settings], clock: FixedClock
) -> None:
    settings = make_settings(max_pin_failures=100)
    init_store(settings, clock, USER, PIN).lock()
    content = key_file(settings)
    slot = next(iter(content["slots"].values()))
    slot["failures"] = 90
    write_key_file(settings, content)

    with pytest.raises(WrongPin, match="9 tries left"):
        unlock(settings, clock, USER, WRONG_PIN)
    with pytest.raises(TooSoon) as waited:
        unlock(settings, clock, USER, PIN)
    assert waited.value.wait_seconds == 3600


def test_a_correct_pin_resets_the_count(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    for _ in range(3):
        fail_once(settings, clock)
    keys = keystore(settings, clock)
    assert keys.failures(USER) == 3

    unlock(settings, clock, USER, PIN).lock()

    assert keys.failures(USER) == 0
    with pytest.raises(WrongPin, match="9 tries left"):
        unlock(settings, clock, USER, WRONG_PIN)


def test_too_many_wrong_pins_lock_the_user_out_even_with_the_right_pin(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    session.lock()
    lock_out(settings, clock)

    assert keystore(settings, clock).failures(USER) == settings.max_pin_failures
    clock.advance(timedelta(days=30))
    with pytest.raises(LockedOut, match="reset the PIN"):
        unlock(settings, clock, USER, PIN)


def test_another_users_reset_pin_clears_a_lock_out(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    session.add_user(OTHER_USER, OTHER_PIN)
    session.lock()
    lock_out(settings, clock)

    helper = unlock(settings, clock, OTHER_USER, OTHER_PIN)
    helper.reset_pin(USER, "516273")
    helper.lock()

    assert keystore(settings, clock).failures(USER) == 0
    with pytest.raises(WrongPin):
        unlock(settings, clock, USER, PIN)
    reopened = unlock(settings, clock, USER, "516273")
    assert reopened.user.name == USER
    reopened.lock()


def test_reset_pin_names_a_known_user_and_checks_the_new_pin(
    session: Session, settings: Settings
) -> None:
    before = key_file(settings)

    with pytest.raises(BadInput, match="no user called"):
        session.reset_pin("zuhura", "516273")
    with pytest.raises(BadInput, match="PIN"):
        session.reset_pin(USER, "111111")

    assert key_file(settings) == before


# -- the file --------------------------------------------------------------------------------


def _slot(content: dict[str, Any]) -> dict[str, Any]:
    return next(iter(content["slots"].values()))


DAMAGE: dict[str, Callable[[dict[str, Any]], object]] = {
    "format": lambda c: c.__setitem__("format", 99),
    "slots": lambda c: c.__setitem__("slots", []),
    "slot not an object": lambda c: c["slots"].__setitem__("x", 5),
    "store_id": lambda c: c.pop("store_id"),
    "device_actor": lambda c: c.__setitem__("device_actor", "not hex"),
    "kdf": lambda c: _slot(c).pop("kdf"),
    "salt base64": lambda c: _slot(c)["kdf"].__setitem__("salt", "!!!"),
    "cost": lambda c: _slot(c)["kdf"].__setitem__("log2_n", "many"),
    "nonce": lambda c: _slot(c).__setitem__("nonce", "AAAA"),
    "failures": lambda c: _slot(c).__setitem__("failures", "two"),
    "not_before": lambda c: _slot(c).__setitem__("not_before", "tomorrow"),
}


@pytest.mark.parametrize("part", sorted(DAMAGE))
def test_a_damaged_key_file_is_store_corrupt(
    session: Session, settings: Settings, clock: FixedClock, part: str
) -> None:
    session.lock()
    content = key_file(settings)
    DAMAGE[part](content)
    write_key_file(settings, content)

    with pytest.raises(StoreCorrupt, match="key file"):
        unlock(settings, clock, USER, PIN)


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[1, 2]", b"\xff\xfe\x00garbage", b'{"format": 1, "slots": {'],
    ids=["empty", "text", "list", "binary", "truncated"],
)
def test_an_unreadable_key_file_is_store_corrupt(
    session: Session, settings: Settings, clock: FixedClock, raw: bytes
) -> None:
    session.lock()
    (settings.data_dir / "keys.json").write_bytes(raw)

    with pytest.raises(StoreCorrupt, match="key file"):
        unlock(settings, clock, USER, PIN)


def test_the_key_file_and_folder_are_private(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    path = settings.data_dir / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) & 0o077 == 0

    fail_once(settings, clock)  # rewrites the file
    session.add_user(OTHER_USER, OTHER_PIN)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_suffix(".tmp").exists()


@pytest.mark.parametrize(
    "pin",
    [
        "48291",
        "111111",
        "123456",
        "654321",
        "0123456789",
        " 482913",
        "482913 ",
        ("482913" * 11)[:65],
    ],
    ids=["short", "repeated", "running", "running-down", "long-running", "lead", "trail", "long"],
)
def test_weak_or_malformed_pins_are_refused(
    make_settings: Callable[..., Settings], clock: FixedClock, pin: str
) -> None:
    settings = make_settings()

    with pytest.raises(BadInput, match="PIN"):
        init_store(settings, clock, USER, pin)

    assert not (settings.data_dir / "keys.json").exists()


def test_a_weak_pin_is_refused_for_a_second_user(session: Session, settings: Settings) -> None:
    with pytest.raises(BadInput, match="PIN"):
        session.add_user(OTHER_USER, "222222")

    assert len(key_file(settings)["slots"]) == 1


def test_a_passphrase_is_a_good_pin(make_settings: Callable[..., Settings], clock) -> None:
    settings = make_settings()
    init_store(settings, clock, USER, "mti wa mwembe 7").lock()

    unlock(settings, clock, USER, "mti wa mwembe 7").lock()


# -- binding a slot to its store and user ------------------------------------------------------


def test_a_slot_copied_from_another_store_does_not_unwrap(
    make_settings: Callable[..., Settings], clock: FixedClock
) -> None:
    first, second = make_settings("first"), make_settings("second")
    init_store(first, clock, USER, PIN).lock()
    init_store(second, clock, USER, PIN).lock()
    foreign_id, foreign_slot = next(iter(key_file(first)["slots"].items()))
    content = key_file(second)
    own_id = next(iter(content["slots"]))

    content["slots"] = {own_id: foreign_slot}
    write_key_file(second, content)
    with pytest.raises(WrongPin):
        unlock(second, clock, USER, PIN)

    content["slots"] = {foreign_id: foreign_slot}
    write_key_file(second, content)
    with pytest.raises(WrongPin):
        unlock(second, clock, USER, PIN)

    unlock(first, clock, USER, PIN).lock()


def test_a_slot_moved_to_another_user_does_not_unwrap(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    baraka = session.add_user(OTHER_USER, OTHER_PIN)
    session.lock()
    content = key_file(settings)
    amina_slot = next(s for s in content["slots"].values() if s["name"] == USER)

    content["slots"][baraka.id] = {**amina_slot, "name": OTHER_USER}
    write_key_file(settings, content)

    with pytest.raises(WrongPin):
        unlock(settings, clock, OTHER_USER, PIN)
    unlock(settings, clock, USER, PIN).lock()
