"""``generate``, ``import`` and ``token`` from the command line, on both backends."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from central.auth import authenticate
from central.cli import main
from central.clock import FixedClock
from central.database import Database, PostgresDatabase, SqliteDatabase
from central.settings import Settings

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def url_of(database: Database) -> str:
    if isinstance(database, SqliteDatabase):
        return f"sqlite:///{database.path}"
    assert isinstance(database, PostgresDatabase)
    return database.url


def run(database: Database, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"CENTRAL_DATABASE_URL": url_of(database)}
    code = main(list(argv), env=env, clock=FixedClock(NOW), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def count(database: Database, sql: str) -> int:
    with database.read() as session:
        return int(session.execute(sql)[0][0])


def test_generated_patients_import_with_progress_and_an_audit_trail(
    database: Database, tmp_path: Path
) -> None:
    bundles = tmp_path / "patients.ndjson"
    code, _, said = run(
        database, "generate", "--patients", "5", "--region", "kilosa", "--out", str(bundles)
    )
    assert code == 0
    lines = bundles.read_text(encoding="utf-8").splitlines()
    written = sum(len(json.loads(line)["entry"]) for line in lines)
    assert len(lines) == 5
    assert f"wrote 5 patients, {written} resources" in said

    code, _, said = run(database, "import", str(bundles))

    assert code == 0
    assert f"imported 5 bundles ({written} resources" in said
    assert count(database, "SELECT count(*) FROM resources WHERE rtype = 'Patient'") == 5
    assert count(database, "SELECT count(*) FROM resources WHERE region = 'kilosa'") == count(
        database, "SELECT count(*) FROM resources"
    )
    assert count(database, "SELECT count(*) FROM audit_log") == 5
    assert run(database, "audit", "verify")[0] == 0


def test_a_refused_bundle_is_named_and_the_others_are_imported(
    database: Database, tmp_path: Path
) -> None:
    good = tmp_path / "good.ndjson"
    run(database, "generate", "--patients", "2", "--out", str(good))
    first, second = good.read_text(encoding="utf-8").splitlines()
    broken = json.loads(second)
    broken["entry"][1]["resource"]["status"] = "not-a-status"
    mixed = tmp_path / "mixed.ndjson"
    mixed.write_text(first + "\n" + json.dumps(broken) + "\n", encoding="utf-8")

    code, _, said = run(database, "import", str(mixed))

    assert code == 1
    assert f"{mixed}:2: refused: entry 1" in said
    assert "1 refused" in said
    assert count(database, "SELECT count(*) FROM resources WHERE rtype = 'Patient'") == 1


def test_a_file_that_is_not_json_is_refused(database: Database, tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("this is not FHIR\n", encoding="utf-8")

    code, _, said = run(database, "import", str(junk))

    assert code == 1
    assert "is neither a JSON bundle nor one bundle per line" in said
    assert count(database, "SELECT count(*) FROM resources") == 0


def test_token_prints_a_bearer_token_of_the_clients_region_and_scopes(
    database: Database, tmp_path: Path
) -> None:
    jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key()))
    jwk["kid"] = "console-1"
    key = tmp_path / "console.jwk"
    key.write_text(json.dumps(jwk), encoding="utf-8")
    assert (
        run(database, "client", "add", "--id", "console", "--region", "*", "--jwk", str(key))[0]
        == 0
    )

    code, out, said = run(database, "token", "--client", "console", "--scope", "system/*.read")

    assert code == 0
    assert "scopes: system/*.read" in said
    settings = Settings(database_url=url_of(database))
    caller = authenticate(database, settings, f"Bearer {out.strip()}", FixedClock(NOW))
    assert (caller.client_id, caller.region) == ("console", "*")
    assert caller.may("read", "Patient")
    assert not caller.may("write", "Patient")
    assert run(database, "token", "--client", "nobody")[0] == 1
