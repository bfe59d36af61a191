"""The hub's command line and settings, and ``serve`` under uvicorn for real."""

from __future__ import annotations

import base64
import io
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from care_record import Chart, SystemClock
from care_record.sync import (
    DocUpdate,
    SyncRequest,
    SyncResponse,
    decode_frame,
    encode_frame,
    signed_message,
)
from care_record.sync.documents import changes_since
from sync_hub import Settings
from sync_hub.cli import main
from sync_hub.errors import BadSetting

ROOT = Path(__file__).parent.parent.parent


def test_settings_have_laptop_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.db == Path("sync_hub.db")
    assert (settings.host, settings.port) == ("127.0.0.1", 8700)
    assert settings.clock_skew_seconds == 300
    assert settings.enroll_code_hours == 72
    assert all(help_line for _variable, _default, help_line in Settings.documented())


def test_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {"SYNC_HUB_PORT": "9000", "SYNC_HUB_NAME": "Wilaya ya Kati", "SYNC_HUB_DB": "/srv/hub/h.db"}
    )
    assert settings.port == 9000
    assert settings.name == "Wilaya ya Kati"
    assert settings.db == Path("/srv/hub/h.db")


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("SYNC_HUB_PORT", "eighty", "whole number"),
        ("SYNC_HUB_PORT", "70000", "between 1 and 65535"),
        ("SYNC_HUB_CLOCK_SKEW_SECONDS", "1", "at least 5"),
        ("SYNC_HUB_MAX_FRAME_BYTES", "2048", "at least SYNC_HUB_MAX_BODY_BYTES"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    variable: str, value: str, words: str
) -> None:
    with pytest.raises(BadSetting, match=variable) as refused:
        Settings.from_env({variable: value})
    assert words in str(refused.value)


def test_a_bad_setting_makes_the_cli_exit_1(hub_cli: Any) -> None:
    hub_cli.env["SYNC_HUB_ENROLL_CODE_HOURS"] = "0"
    result = hub_cli("devices")
    assert result.code == 1
    assert "SYNC_HUB_ENROLL_CODE_HOURS" in result.err


def test_settings_command_lists_every_setting(hub_cli: Any) -> None:
    out = hub_cli.ok("settings")
    for variable, default, _help in Settings.documented():
        assert f"{variable} (default {default})" in out


def test_db_option_overrides_the_environment(hub_cli: Any, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    hub_cli.ok("--db", str(other), "catchment", "--chw", "amina", "--add-village", "Kijiji")
    assert other.exists()


def test_quarantine_and_devices_on_an_empty_hub(hub_cli: Any) -> None:
    assert hub_cli("quarantine").err.strip() == "0 held in quarantine"
    assert hub_cli("devices").err.strip() == "0 devices"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_runs_the_hub_under_uvicorn(tmp_path: Path) -> None:
    """A tablet enrols and syncs a chart over real HTTP, on the real clock."""
    port = _free_port()
    env = {**os.environ, "SYNC_HUB_DB": str(tmp_path / "served.db"), "SYNC_HUB_NAME": "Kati"}
    out = io.StringIO()
    assert (
        main(["enroll-code", "--chw", "amina", "--catchment", "Kijiji"], env=env, stdout=out) == 0
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "sync_hub", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(server, f"{base}/health")
        key = Ed25519PrivateKey.generate()
        public = base64.b64encode(key.public_key().public_bytes_raw()).decode()
        enrolled = httpx.post(
            f"{base}/enroll",
            json={"code": out.getvalue().strip(), "public_key": public, "label": "t"},
            timeout=5,
        )
        assert enrolled.status_code == 200, enrolled.text
        assert enrolled.json()["hub"] == "Kati"
        clock = SystemClock()
        chart = Chart.new_patient(
            {
                "given": "Amina",
                "family": "Juma",
                "sex": "female",
                "birth_date": "1994-06-15",
                "village": "Kijiji",
            },
            author="amina",
            clock=clock,
        )
        body = encode_frame(
            SyncRequest(updates=[DocUpdate(chart.id, "patient", changes_since(chart.document, []))])
        )
        stamp, nonce = int(time.time()), secrets.token_hex(16)
        signature = key.sign(signed_message("POST", "/sync", stamp, nonce, body))
        headers = {
            "Content-Type": "application/x-rcs1",
            "X-Device": enrolled.json()["device_id"],
            "X-Time": str(stamp),
            "X-Nonce": nonce,
            "X-Signature": base64.b64encode(signature).decode(),
        }
        answer = httpx.post(f"{base}/sync", content=body, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        assert decode_frame(answer.content, SyncResponse).applied == [0]
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=10)
    log = err.decode()
    assert "sync device=" in log
    # The log names paths, devices and counts; no chart or patient data goes into it.
    assert "Amina" not in log
    assert "Kijiji" not in log
    assert chart.id not in log


def _wait_for(server: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            health = httpx.get(url, timeout=1)
        except httpx.TransportError:
            assert server.poll() is None, "the server stopped"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
            continue
        assert health.json() == {"status": "ok"}
        return
