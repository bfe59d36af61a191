"""The hub's command line and settings, and ``serve`` under uvicorn for real."""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import stat
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from care_record import Chart, FixedClock, SystemClock, new_id
from care_record.sync import (
    DocUpdate,
    SyncRequest,
    SyncResponse,
    decode_frame,
    encode_frame,
    signed_message,
)
from care_record.sync.documents import changes_since
from field_app.demo.ports import free_port
from sync_hub import Settings, credentials, outbox
from sync_hub.cli import Central, main
from sync_hub.errors import BadSetting
from sync_hub.store import Store

from .conftest import FakeCentral, Result, jwk_thumbprint, new_chart, put

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
        ("SYNC_HUB_TIMEZONE", "Africa/Atlantis", "not a known IANA time zone"),
        ("SYNC_HUB_TIMEZONE", "../etc/passwd", "not a known IANA time zone"),
        ("SYNC_HUB_FACILITY", "x" * 201, "at most 200 characters"),
        ("SYNC_HUB_FACILITY", "Kilosa\tHealth Centre", "control characters"),
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


def test_serve_runs_the_hub_under_uvicorn(tmp_path: Path) -> None:
    """A tablet enrols and syncs a chart over real HTTP, on the real clock."""
    port = free_port()
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


# -- central: push, fhir-status, central-key ----------------------------------------------------


class CentralCli:
    """``python -m sync_hub`` with central played by the stand-in; sleeps are recorded."""

    def __init__(self, settings: Settings, central: FakeCentral, clock: FixedClock) -> None:
        self.env = {
            "SYNC_HUB_DB": str(settings.db),
            "SYNC_HUB_NAME": "kati",
            "SYNC_HUB_CENTRAL_URL": settings.central_url,
            "SYNC_HUB_CENTRAL_KEY": str(settings.central_key),
            "SYNC_HUB_PUSH_BATCH_RESOURCES": "20",
        }
        self.central, self.clock = central, clock
        self.slept: list[float] = []

    def __call__(self, *argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            list(argv),
            env=self.env,
            clock=self.clock,
            stdout=out,
            stderr=err,
            central=Central(self.central.client(), self.slept.append),
        )
        return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def central_cli(
    central_settings: Settings, central: FakeCentral, clock: FixedClock, hub_store: Store
) -> CentralCli:
    return CentralCli(central_settings, central, clock)


def test_push_pushes_everything_pending_and_says_how_it_went(
    central_cli: CentralCli, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    charts = [new_chart(clock) for _ in range(3)]
    for chart in charts:
        put(hub_store, chart, clock)
    central.script, central.retry_after = ["429", "ok", "503"], "3"  # push, push, fetch
    result = central_cli("push")
    assert result.code == 0, result.err
    assert "pushed 3 charts (3 resources) in 1 bundles, 1 retries" in result.out
    assert "0 pending" in result.out
    assert "fetched 0 communications and 0 tasks in 2 pages" in result.out
    assert "1 retries; cursor none, task cursor none" in result.out
    assert "retrying in 3 s" in result.err
    assert central_cli.slept == [3.0, 3.0]
    assert {f"Patient/{c.id}" for c in charts} <= set(central.resources)


def test_push_also_merges_replies_from_central(
    central_cli: CentralCli, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.store(
        {
            "resourceType": "Communication",
            "id": new_id(clock),
            "status": "completed",
            "category": [{"coding": [{"system": "urn:rural-care:message", "code": "advice"}]}],
            "subject": {"reference": f"Patient/{chart.id}"},
            "payload": [{"contentString": "Review in two days."}],
        }
    )
    central.store(
        {
            "resourceType": "Task",
            "id": new_id(clock),
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": "urn:rural-care:task-kind", "code": "call_back"}]},
            "description": "Call the patient back: they asked for a call",
            "for": {"reference": f"Patient/{chart.id}"},
            "restriction": {"period": {"end": "2025-03-01"}},
        }
    )
    result = central_cli("push")
    assert result.code == 0, result.err
    assert "1 messages and 1 tasks merged" in result.out
    with hub_store.read() as db:
        assert outbox.pending_count(db) == 0  # the merged chart was pushed as well


def test_push_exits_1_when_central_stays_unreachable_and_keeps_the_queue(
    central_cli: CentralCli, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    put(hub_store, new_chart(clock), clock)
    central.script = ["drop"] * 10
    result = central_cli("push")
    assert result.code == 1
    assert "central could not be reached" in result.err
    assert "gave up after 5 tries; 1 charts stay queued" in result.err
    assert len(central_cli.slept) == 4
    with hub_store.read() as db:
        assert outbox.pending_count(db) == 1


def test_push_exits_1_when_central_refuses_the_hubs_credentials(
    central_cli: CentralCli, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    put(hub_store, new_chart(clock), clock)
    central.refuse_credentials = True
    result = central_cli("push")
    assert result.code == 1
    assert "central refused the hub's credentials" in result.err
    assert "registered at central for client kati" in result.err
    assert central_cli.slept == []


def test_push_without_central_says_so(hub_cli: Any) -> None:
    result = hub_cli("push")
    assert result.code == 1
    assert "SYNC_HUB_CENTRAL_URL is not set" in result.err


def test_fhir_status_shows_the_queue_the_last_push_and_what_central_refused(
    central_cli: CentralCli, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    refused, accepted, pending = new_chart(clock), new_chart(clock), new_chart(clock)
    put(hub_store, refused, clock)
    put(hub_store, accepted, clock)
    central.refuse[refused.id] = 400
    assert central_cli("push").code == 0
    clock.advance(timedelta(hours=2, minutes=5))
    put(hub_store, pending, clock)
    clock.advance(timedelta(days=1, minutes=30))
    out = central_cli("fhir-status").out
    assert "central: http://central.test" in out
    assert "pending: 1 charts, oldest queued 2025-03-01T10:35:00+00:00 (1d 0h 30m ago)" in out
    assert "last push: 2025-03-01T08:30:00+00:00" in out
    assert "last fetch: 2025-03-01T08:30:00+00:00" in out
    assert "quarantined: 1 charts" in out
    assert f"{refused.id}  version 1  400" in out
    assert "Patient.birthDate: must not be in the future" in out


def test_push_can_retry_what_central_refused(
    central_cli: CentralCli, hub_store: Store, central: FakeCentral, clock: FixedClock
) -> None:
    chart = new_chart(clock)
    put(hub_store, chart, clock)
    central.refuse[chart.id] = 422
    assert "1 quarantined" in central_cli("push").out
    del central.refuse[chart.id]
    result = central_cli("push", "--retry-quarantined")
    assert "queued 1 quarantined charts again" in result.err
    assert "pushed 1 charts" in result.out
    assert "quarantined: 0 charts" in central_cli("fhir-status").out


def test_fhir_status_on_a_hub_that_has_never_pushed(hub_cli: Any) -> None:
    out = hub_cli.ok("fhir-status")
    assert "not set (SYNC_HUB_CENTRAL_URL)" in out
    assert "pending: 0 charts" in out
    assert "last push: never" in out
    assert "cursor: none" in out
    assert "task cursor: none" in out


def test_central_key_creates_the_key_once_and_prints_its_public_jwk(
    hub_cli: Any, tmp_path: Path
) -> None:
    path = tmp_path / "keys" / "central.pem"
    path.parent.mkdir()
    hub_cli.env["SYNC_HUB_CENTRAL_KEY"] = str(path)
    hub_cli.env["SYNC_HUB_REGION"] = "pwani"
    first = hub_cli("central-key")
    assert first.code == 0, first.err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    jwk = json.loads(first.out)
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}  # nothing private
    assert jwk["kid"] == jwk_thumbprint(credentials.load_key(path).public_key())
    assert "--id regional-hub --region pwani --jwk" in first.err
    key = path.read_bytes()
    again = hub_cli("central-key")
    assert json.loads(again.out) == jwk
    assert path.read_bytes() == key


def test_central_key_warns_about_a_key_others_can_read(hub_cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "central.pem"
    credentials.create_key(path)
    path.chmod(0o644)
    hub_cli.env["SYNC_HUB_CENTRAL_KEY"] = str(path)
    assert "readable by others" in hub_cli("central-key").err


def test_central_settings_have_laptop_defaults_and_are_checked() -> None:
    settings = Settings.from_env({})
    assert settings.central_url == ""
    assert settings.region == "region-1"
    assert settings.central_client_id == "regional-hub"
    assert settings.central_key == Path("sync_hub_central_key.pem")
    assert (settings.push_batch_resources, settings.push_interval_seconds) == (500, 10)
    assert settings.fetch_interval_seconds == 15
    assert (settings.timezone, settings.facility) == ("Africa/Dar_es_Salaam", "")
    with pytest.raises(BadSetting, match="SYNC_HUB_CENTRAL_URL"):
        Settings.from_env({"SYNC_HUB_CENTRAL_URL": "central.example"})
    with pytest.raises(BadSetting, match="SYNC_HUB_PUSH_BATCH_RESOURCES"):
        Settings.from_env({"SYNC_HUB_PUSH_BATCH_RESOURCES": "0"})
