"""Sessions: the idle lock, CLI session tokens between commands, and crypto-erase."""

from __future__ import annotations

import json
import os
import shutil
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from care_record import FixedClock
from field_app import (
    Locked,
    Session,
    Settings,
    StoreCorrupt,
    StoreErased,
    StoreMissing,
    UnknownUser,
    add_patient,
    end_sessions,
    erase,
    init_store,
    issue_token,
    patient_chart,
    resume,
    search_patients,
    unlock,
)
from field_app.session import SESSION_FILE
from field_app.store import DB_FILE, connect

USER, PIN = "amina", "482913"
PATIENT = {"given": "Zawadi", "family": "Mushi", "sex": "female", "birth_date": "2001-02-03"}


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


# -- the idle lock ----------------------------------------------------------------------------


def test_an_idle_session_locks_itself(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    session.store.count()
    clock.advance(seconds(settings.idle_lock_seconds + 1))

    with pytest.raises(Locked, match="idle"):
        session.store  # noqa: B018 - the property is the check
    assert session.locked
    with pytest.raises(Locked, match="locked"):
        session.store  # noqa: B018
    with pytest.raises(Locked):
        session.attachments  # noqa: B018
    with pytest.raises(Locked):
        session.add_user("baraka", "739164")


def test_a_session_idle_for_exactly_the_limit_is_still_open(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    clock.advance(seconds(settings.idle_lock_seconds))

    assert session.store.count() == 0
    assert not session.locked


def test_use_within_the_window_keeps_the_session_open(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    patient = add_patient(session, PATIENT)
    for _ in range(5):
        clock.advance(seconds(settings.idle_lock_seconds - 1))
        assert patient_chart(session, patient).fields["given"] == "Zawadi"

    assert not session.locked
    clock.advance(seconds(settings.idle_lock_seconds + 1))
    with pytest.raises(Locked):
        search_patients(session, "zawadi")


def test_the_idle_limit_is_a_setting(make_settings, clock: FixedClock) -> None:
    settings = make_settings(idle_lock_seconds=30)
    opened = init_store(settings, clock, USER, PIN)
    clock.advance(seconds(31))

    with pytest.raises(Locked):
        opened.store  # noqa: B018


def test_lock_by_hand(session: Session, settings: Settings, clock: FixedClock) -> None:
    add_patient(session, PATIENT)

    session.lock()
    session.lock()

    assert session.locked
    with pytest.raises(Locked, match="enter your PIN"):
        search_patients(session, "zawadi")
    assert not (settings.data_dir / f"{DB_FILE}-wal").exists()
    reopened = unlock(settings, clock, USER, PIN)
    assert len(search_patients(reopened, "zawadi")) == 1
    reopened.lock()


# -- CLI sessions -----------------------------------------------------------------------------


def test_a_token_resumes_the_session(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    patient = add_patient(session, PATIENT)
    token = issue_token(session)
    session.lock()

    resumed = resume(settings, clock, token)

    assert resumed.user == session.user
    assert patient_chart(resumed, patient).fields["family"] == "Mushi"
    resumed.lock()


def test_the_session_file_holds_neither_the_token_nor_the_key(
    session: Session, settings: Settings
) -> None:
    token = issue_token(session)
    path = settings.data_dir / SESSION_FILE
    raw = path.read_bytes()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token.encode() not in raw
    assert session._key().hex().encode() not in raw
    assert session._key() not in raw
    assert set(json.loads(raw)) == {"user", "nonce", "wrapped", "last_used"}


def test_each_resume_restarts_the_idle_timer(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    token = issue_token(session)
    session.lock()

    for _ in range(3):
        clock.advance(seconds(settings.idle_lock_seconds - 1))
        resume(settings, clock, token).lock()


def test_a_token_after_the_idle_timeout_is_refused_and_forgotten(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    token = issue_token(session)
    session.lock()
    clock.advance(seconds(settings.idle_lock_seconds + 1))

    with pytest.raises(Locked, match="idle"):
        resume(settings, clock, token)

    assert not (settings.data_dir / SESSION_FILE).exists()
    clock.set(clock.now() - seconds(settings.idle_lock_seconds + 1))
    with pytest.raises(Locked):
        resume(settings, clock, token)


def test_a_wrong_token_is_refused(session: Session, settings: Settings, clock: FixedClock) -> None:
    token = issue_token(session)
    session.lock()

    with pytest.raises(Locked, match="does not match"):
        resume(settings, clock, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    with pytest.raises(Locked):
        resume(settings, clock, "")

    resume(settings, clock, token).lock()


def test_a_session_of_another_store_does_not_resume(
    make_settings, clock: FixedClock, session: Session, settings: Settings
) -> None:
    token = issue_token(session)
    other = make_settings("other")
    init_store(other, clock, USER, PIN).lock()
    shutil.copy(settings.data_dir / SESSION_FILE, other.data_dir / SESSION_FILE)

    with pytest.raises(Locked):
        resume(other, clock, token)


@pytest.mark.parametrize("content", ["", "{", "[]", '{"user": "amina"}'])
def test_a_damaged_session_file_locks(
    session: Session, settings: Settings, clock: FixedClock, content: str
) -> None:
    token = issue_token(session)
    (settings.data_dir / SESSION_FILE).write_text(content, encoding="utf-8")

    with pytest.raises(Locked):
        resume(settings, clock, token)

    assert not (settings.data_dir / SESSION_FILE).exists()


def test_end_sessions_forgets_the_token(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    token = issue_token(session)

    assert end_sessions(settings) is True

    assert not (settings.data_dir / SESSION_FILE).exists()
    with pytest.raises(Locked):
        resume(settings, clock, token)
    assert end_sessions(settings) is False


# -- crypto-erase -----------------------------------------------------------------------------


def test_erase_destroys_the_keys_and_the_files(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    add_patient(session, PATIENT)
    session.attachments.put_bytes(b"a voice note")
    issue_token(session)
    session.lock()
    folder = settings.data_dir
    assert sorted(p.name for p in folder.iterdir()) == [
        "attachments", "keys.json", "session.json", "store.db",
    ]  # fmt: skip

    erase(settings)

    assert sorted(p.name for p in folder.iterdir()) == ["erased"]
    assert "erased" in (folder / "erased").read_text(encoding="utf-8")
    with pytest.raises(StoreErased, match="cannot be recovered"):
        unlock(settings, clock, USER, PIN)
    with pytest.raises(StoreErased):
        erase(settings)


def test_erase_without_a_store_is_refused(make_settings) -> None:
    settings = make_settings("nothing")
    settings.data_dir.mkdir()

    with pytest.raises(StoreMissing):
        erase(settings)


def test_a_copy_taken_before_erase_is_unreadable(
    session: Session, settings: Settings, clock: FixedClock, tmp_path: Path, make_settings
) -> None:
    marker = "Zqx" + os.urandom(6).hex()
    add_patient(session, {**PATIENT, "given": marker})
    assert len(search_patients(session, marker)) == 1
    session.lock()
    copy = tmp_path / "stolen.db"
    shutil.copy(settings.data_dir / DB_FILE, copy)
    stolen_key_file = (settings.data_dir / "keys.json").read_bytes()

    erase(settings)

    assert not (settings.data_dir / "keys.json").exists()
    raw = copy.read_bytes()
    assert marker.encode() not in raw
    assert marker.lower().encode() not in raw
    assert not raw.startswith(b"SQLite format 3")
    with pytest.raises(StoreCorrupt):
        connect(copy, os.urandom(32))

    # The copy does hold the patient: with the destroyed key file (and the PIN) it opens.
    # That is why erase destroys the key file first, and what a PIN alone cannot protect.
    revived = make_settings("revived")
    revived.data_dir.mkdir()
    shutil.copy(copy, revived.data_dir / DB_FILE)
    (revived.data_dir / "keys.json").write_bytes(stolen_key_file)
    opened = unlock(revived, clock, USER, PIN)
    assert len(search_patients(opened, marker)) == 1
    opened.lock()


def test_a_new_store_can_be_made_after_erase(
    session: Session, settings: Settings, clock: FixedClock
) -> None:
    add_patient(session, PATIENT)
    session.lock()
    erase(settings)

    fresh = init_store(settings, clock, "baraka", "739164")

    assert fresh.store.count() == 0
    assert not (settings.data_dir / "erased").exists()
    fresh.lock()
    with pytest.raises(UnknownUser):
        unlock(settings, clock, USER, PIN)
