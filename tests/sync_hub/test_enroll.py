"""Enrolment with a supervisor's one-time code."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync_hub.devices import CODE_ALPHABET


def _key() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return base64.b64encode(raw).decode()


def _enroll(client: Any, code: str, key: str | None = None) -> Any:
    return client.post(
        "/enroll", json={"code": code, "public_key": key or _key(), "label": "tablet 7"}
    )


def test_a_code_enrols_one_tablet_and_tells_it_its_catchment(
    client: Any, hub_cli: Any, hub_db: Callable[..., list[tuple[Any, ...]]]
) -> None:
    result = hub_cli("enroll-code", "--chw", "amina", "--catchment", "Kijiji cha Mlima, Mto wa Mbu")
    assert result.code == 0, result.err
    code = result.out.strip()
    assert re.fullmatch(rf"[{CODE_ALPHABET}]{{4}}(-[{CODE_ALPHABET}]{{4}}){{3}}", code)
    assert "expires 2025-03-04 08:30 UTC" in result.err
    answer = _enroll(client, code)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["chw"] == "amina"
    assert body["hub"] == "regional-hub"
    assert body["catchment"] == {"villages": ["Kijiji cha Mlima", "Mto wa Mbu"], "households": []}
    assert hub_db("SELECT id, chw, label, state FROM devices") == [
        (body["device_id"], "amina", "tablet 7", "active")
    ]
    # Only a hash of the code is kept.
    assert code.replace("-", "") not in str(hub_db("SELECT * FROM enroll_codes"))


def test_a_code_is_single_use(client: Any, hub_cli: Any) -> None:
    code = hub_cli.code_for("amina", "Kijiji cha Mlima")
    assert _enroll(client, code).status_code == 200
    again = _enroll(client, code)
    assert again.status_code == 403
    assert again.json()["error"] == "code_used"


def test_a_code_is_typed_forgivingly(client: Any, hub_cli: Any) -> None:
    code = hub_cli.code_for("amina", "Kijiji cha Mlima")
    typed = " " + code.lower().replace("-", " ") + " "
    assert _enroll(client, typed).status_code == 200


def test_an_expired_code_is_refused(client: Any, hub_cli: Any, clock: Any) -> None:
    code = hub_cli.code_for("amina", "Kijiji cha Mlima")
    clock.advance(timedelta(hours=72))
    answer = _enroll(client, code)
    assert answer.status_code == 403
    assert answer.json()["error"] == "code_expired"


def test_a_wrong_code_is_refused_and_nothing_written(
    client: Any, hub_cli: Any, rows: Callable[[], dict[str, int]]
) -> None:
    hub_cli.code_for("amina", "Kijiji cha Mlima")
    before = rows()
    answer = _enroll(client, "AAAA-AAAA-AAAA-AAAA")
    assert answer.status_code == 403
    assert answer.json()["error"] == "invalid_code"
    assert rows() == before


def test_a_bad_public_key_is_refused_and_the_code_not_spent(client: Any, hub_cli: Any) -> None:
    code = hub_cli.code_for("amina", "Kijiji cha Mlima")
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        answer = _enroll(client, code, bad)
        assert answer.status_code == 400
        assert answer.json()["error"] == "bad_public_key"
    assert _enroll(client, code).status_code == 200


def test_a_new_chw_needs_a_catchment(hub_cli: Any) -> None:
    result = hub_cli("enroll-code", "--chw", "nobody")
    assert result.code == 1
    assert "--catchment" in result.err
    # A CHW who already has one gets a code for a second tablet without repeating it.
    hub_cli.code_for("amina", "Kijiji cha Mlima")
    assert hub_cli("enroll-code", "--chw", "amina").code == 0
