"""No patient byte is ever on disk in clear.

A unique marker goes everywhere patient data can go: a given name, a family name, a village, a
visit note, a follow-up, an attachment, searches, CLI commands (including refused ones). Then
every byte of every file in the store folder (database, WAL, shared memory, key file, session
file, attachments, temporary files) is scanned for it: as UTF-8, as UTF-16-LE, in any case.
The scan runs while the database is open with its WAL, in the middle of a transaction, and
after everything is closed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from care_record import Chart, FixedClock
from field_app import (
    Session,
    Settings,
    add_follow_up,
    add_patient,
    patient_chart,
    record_visit,
    search_patients,
    unlock,
)
from field_app.store import DB_FILE, Store, connect

USER, PIN = "amina", "482913"


def forms(marker: str) -> list[bytes]:
    """The byte patterns a marker can leave, lower-cased: UTF-8 and UTF-16 (both orders)."""
    text = marker.lower()
    return [text.encode("utf-8"), text.encode("utf-16-le"), text.encode("utf-16-be")]


def files_under(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path


def leaks(folder: Path, marker: str) -> list[str]:
    """Files under ``folder`` whose bytes hold the marker in any case, as UTF-8 or UTF-16."""
    found = []
    for path in files_under(folder):
        raw = path.read_bytes().lower()
        if any(pattern in raw for pattern in forms(marker)):
            found.append(str(path.relative_to(folder)))
    return found


@pytest.fixture
def marker() -> str:
    return "Zqx" + uuid.uuid4().hex[:12]


def test_the_scan_finds_a_marker_in_any_form(tmp_path: Path, marker: str) -> None:
    """The scan itself must work, or the tests below prove nothing."""
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / ".hidden-utf16").write_bytes(b"\0" + marker.encode("utf-16-le"))
    (tmp_path / "upper").write_bytes(b"xx" + marker.upper().encode() + b"yy")
    (tmp_path / "clean").write_bytes(b"nothing here " + marker[:-1].encode())

    assert leaks(tmp_path, marker) == ["deep/er/.hidden-utf16", "upper"]


def test_without_encryption_the_scan_does_find_the_marker(
    tmp_path: Path, clock: FixedClock, marker: str
) -> None:
    """The control: the same store opened without a key (as only the benchmark does) leaves the
    marker in its files, so a clean scan of the real store means something."""
    folder = tmp_path / "plain"
    folder.mkdir()
    store = Store(connect(folder / DB_FILE, None), actor=b"\x01" * 16, author="t", clock=clock)
    demographics = {"given": marker, "family": "Juma", "sex": "female", "birth_date": "1990-02-03"}
    store.put_chart(Chart.new_patient(demographics, author="t", clock=clock))

    assert leaks(folder, marker) != []
    store.close()
    assert leaks(folder, marker) == [DB_FILE]


def fill(session: Session, marker: str) -> list[str]:
    """Put the marker everywhere a chart can hold it; return the patient IDs."""
    first = add_patient(
        session, {"given": marker, "family": "Juma", "sex": "female", "birth_date": "1990-02-03"}
    )
    second = add_patient(
        session,
        {
            "given": "Neema",
            "family": marker,
            "sex": "female",
            "birth_date": "1988-07-09",
            "village": f"{marker} ya Juu",
            "phone": "+255712345678",
        },
    )
    for patient in (first, second):
        record_visit(
            session,
            patient,
            {"systolic": 124, "diastolic": 82, "temperature": 37.9},
            note=f"{marker} complains of headache; {marker.upper()} referred",
        )
        add_follow_up(session, patient, f"Visit {marker} again", date(2025, 3, 8))
    content = f"voice note about {marker}\n".encode() * 3000 + marker.encode("utf-16-le")
    sha, size = session.attachments.put_bytes(content)
    chart = session.store.get_chart(first)
    chart.add_attachment({"sha256": sha, "media_type": "audio/ogg", "size": size})
    session.store.put_chart(chart)
    return [first, second]


def crash_mid_transaction(session: Session, patient: str, marker: str) -> None:
    """Write many rows holding the marker in one transaction, scan, then fail before COMMIT."""
    store = session.store
    folder = session.settings.data_dir
    store.db.execute("PRAGMA cache_size = 10")
    wal_before = (folder / f"{DB_FILE}-wal").stat().st_size
    with store.transaction():
        for i in range(200):
            store.db.execute(
                "INSERT INTO tasks (id, chart_id, kind, description, due, status) "
                "VALUES (?, ?, 'follow_up', ?, '2025-03-09', 'requested')",
                [f"spill-{i}", patient, f"{marker} {i} " * 40],
            )
        assert store.db.conn.in_transaction
        assert (folder / f"{DB_FILE}-wal").stat().st_size > wal_before
        assert leaks(folder, marker) == []
        raise RuntimeError("simulated crash before commit")


def test_no_marker_in_any_file_while_open_mid_transaction_and_after_close(
    session: Session, settings: Settings, clock: FixedClock, marker: str
) -> None:
    folder = settings.data_dir
    patients = fill(session, marker)
    assert {p.id for p in search_patients(session, marker)} == set(patients)
    assert {p.id for p in search_patients(session, marker.lower()[:6])} == set(patients)
    assert len(session.store.in_village(f"{marker} ya juu")) == 1
    [attachment] = patient_chart(session, patients[0]).collections["attachments"]
    assert marker.encode() in session.attachments.read(attachment)

    # Open, with committed pages still in the write-ahead log.
    assert (folder / f"{DB_FILE}-wal").stat().st_size > 0
    assert leaks(folder, marker) == []

    # In the middle of a transaction too big for the page cache, so that it spills to disk;
    # then the process "crashes" before the commit.
    with pytest.raises(RuntimeError, match="crash"):
        crash_mid_transaction(session, patients[0], marker)
    assert leaks(folder, marker) == []

    # A second process (the CLI) opening the same store while this one is open.
    other = unlock(settings, clock, USER, PIN)
    assert len(search_patients(other, marker)) == 2
    assert leaks(folder, marker) == []
    other.lock()

    session.lock()
    assert not (folder / f"{DB_FILE}-wal").exists()
    assert leaks(folder, marker) == []
    assert (folder / DB_FILE).stat().st_size > 0


def test_no_marker_on_disk_or_in_error_messages_after_cli_commands(
    tablet, settings: Settings, clock: FixedClock, marker: str
) -> None:
    cli = tablet
    folder = settings.data_dir
    m = marker
    patient = cli.ok(
        *f"patient add --given {m} --family {m} --sex male --birth-date 1979-11-30".split(),
        *f"--village {m} --phone +255754000111".split(),
    )
    cli.ok(*f"visit record --patient {patient} --pulse 88 --note {m}".split())
    cli.ok(*f"tasks add --patient {patient} --description {m} --due 2025-03-02".split())
    token = cli.ok("unlock").removeprefix("export FIELD_APP_SESSION=")
    assert m in cli.ok("patient", "search", m.lower(), FIELD_APP_SESSION=token)
    assert m in cli.ok("patient", "show", patient, FIELD_APP_SESSION=token)
    assert m in cli.ok("patient", "show", patient, "--json", FIELD_APP_SESSION=token)
    assert m in cli.ok("tasks", "due", "--on", "2025-03-05")
    assert (folder / "session.json").exists()
    assert leaks(folder, m) == []

    add = "patient add --given {} --family {} --sex female --birth-date {}"
    refused = [
        cli(*add.format(m, m, "1990-01-01").split(), "--phone", m),
        cli(*add.format(m, m, f"19{m}").split()),
        cli(*add.format(m + "\x07", "X", "1990-01-01").split()),
        cli(*f"visit record --patient {patient} --systolic 900 --note {m}".split()),
        cli(*f"visit record --patient {m} --pulse 80".split()),
        cli(*f"tasks add --patient {patient} --description {m * 20} --due 2025-03-02".split()),
        cli(*f"tasks add --patient {patient} --description {m}\x1b --due 2025-03-02".split()),
        cli("patient", "search", m, FIELD_APP_PIN="999888"),
    ]
    assert [r.code for r in refused] == [1] * len(refused)
    for result in refused:
        assert result.err.startswith("error: ") or "wrong PIN" in result.err
        assert marker.lower() not in result.err.lower()
    for result in cli.results:
        assert marker.lower() not in result.err.lower()

    cli.ok("lock")
    assert leaks(folder, marker) == []
    assert sorted(p.name for p in folder.iterdir()) == ["keys.json", "store.db"]
