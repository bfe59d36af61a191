"""The hub's client for central: SMART Backend Services tokens, FHIR answers sorted into what
to do about them, searches followed page by page. Central is the stand-in of conftest.py."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from care_record import FixedClock
from sync_hub import credentials
from sync_hub.central import CentralClient, connect
from sync_hub.errors import (
    BundleRejected,
    CentralMisbehaved,
    CentralNotConfigured,
    CentralUnavailable,
    CredentialsRefused,
    OutOfRegion,
)
from sync_hub.settings import Settings

from .conftest import CENTRAL_URL, TOKEN_URL, FakeCentral, jwk_thumbprint, outcome

PATIENT_ID = "019550d3-9b40-70c6-af6d-d404d3842f76"


def _bundle(*patient_ids: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": pid},
                "request": {"method": "PUT", "url": f"Patient/{pid}"},
            }
            for pid in patient_ids
        ],
    }


@pytest.fixture
def client(central_settings: Settings, central: FakeCentral, clock: FixedClock) -> CentralClient:
    return connect(central_settings, clock=clock, http=central.client())


# -- the key and the assertion ------------------------------------------------------------------


def test_the_key_file_is_created_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    assert credentials.create_key(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    assert credentials.create_key(path) is False
    assert path.read_bytes() == first
    assert credentials.load_key(path).curve.name == "secp384r1"


def test_the_public_jwk_has_no_private_part_and_its_kid_is_the_rfc7638_thumbprint(
    central_key: Path,
) -> None:
    key = credentials.load_key(central_key)
    jwk = credentials.public_jwk(key)
    assert "d" not in jwk
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-384", "ES384")
    assert jwk["kid"] == jwk_thumbprint(key.public_key())


def test_a_missing_or_foreign_key_file_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    with pytest.raises(CentralNotConfigured, match="central-key"):
        credentials.load_key(tmp_path / "absent.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(CentralNotConfigured, match="not an unencrypted PEM"):
        credentials.load_key(tmp_path / "junk.pem")


def test_no_central_url_means_no_client(settings: Settings, clock: FixedClock) -> None:
    with pytest.raises(CentralNotConfigured, match="SYNC_HUB_CENTRAL_URL"):
        connect(settings, clock=clock)


def test_the_client_assertion_carries_the_claims_central_checks(
    client: CentralClient, central: FakeCentral, clock: FixedClock
) -> None:
    client.token()
    clock.advance(timedelta(minutes=10))  # the first token has expired: a second assertion
    client.token()
    assert len(central.assertions) == 2  # each verified by PyJWT against the hub's public key
    for header, claims in central.assertions:
        assert header["alg"] == "ES384"
        assert header["kid"] == jwk_thumbprint(central.public_key)
        assert claims["aud"] == TOKEN_URL
        assert claims["iss"] == claims["sub"] == "kati"
        assert 0 < claims["exp"] - claims["iat"] <= 300
    assert central.assertions[0][1]["iat"] == int((clock.now() - timedelta(minutes=10)).timestamp())
    jtis = {claims["jti"] for _header, claims in central.assertions}
    assert len(jtis) == 2


def test_the_client_id_defaults_to_the_hub_name_and_can_be_set(
    central_settings: Settings, clock: FixedClock, central: FakeCentral
) -> None:
    central.client_id = "hub-7"
    settings = Settings.from_env(
        {
            "SYNC_HUB_CENTRAL_URL": CENTRAL_URL + "/",
            "SYNC_HUB_CENTRAL_KEY": str(central_settings.central_key),
            "SYNC_HUB_CLIENT_ID": "hub-7",
        }
    )
    client = connect(settings, clock=clock, http=central.client())
    assert client.token_url == TOKEN_URL  # a trailing slash in the setting is not doubled
    client.token()
    assert central.assertions[-1][1]["sub"] == "hub-7"


def test_the_token_is_reused_until_30_seconds_before_it_expires(
    client: CentralClient, central: FakeCentral, clock: FixedClock
) -> None:
    first = client.token()
    clock.advance(timedelta(seconds=269))
    assert client.token() == first
    clock.advance(timedelta(seconds=2))  # 29 s left
    assert client.token() != first
    assert len(central.assertions) == 2


def test_refused_credentials_say_what_central_said(
    client: CentralClient, central: FakeCentral
) -> None:
    central.refuse_credentials = True
    with pytest.raises(CredentialsRefused, match="invalid_client unknown client"):
        client.transaction(_bundle(PATIENT_ID))
    assert central.fhir_requests == []


def test_a_401_from_fhir_gets_a_new_token_once_and_retries(
    client: CentralClient, central: FakeCentral
) -> None:
    client.token()
    central.script = ["401"]  # central forgot every token
    client.transaction(_bundle(PATIENT_ID))
    assert len(central.assertions) == 2
    assert f"Patient/{PATIENT_ID}" in central.resources


def test_a_second_401_is_a_refusal_of_the_hub(client: CentralClient, central: FakeCentral) -> None:
    central.script = ["401", "401"]
    with pytest.raises(CredentialsRefused):
        client.transaction(_bundle(PATIENT_ID))
    assert central.resources == {}


# -- answers sorted ---------------------------------------------------------------------------


def test_the_bundle_goes_as_fhir_json_and_the_answer_is_checked(
    client: CentralClient, central: FakeCentral
) -> None:
    seen: list[httpx.Request] = []

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return central.handle(request)

    client.http = httpx.Client(transport=httpx.MockTransport(spy))
    answer = client.transaction(_bundle(PATIENT_ID))
    assert answer["type"] == "transaction-response"
    posted = seen[-1]
    assert posted.url == f"{CENTRAL_URL}/fhir"
    assert posted.headers["Content-Type"] == "application/fhir+json"
    assert posted.headers["Authorization"].startswith("Bearer ")
    assert json.loads(posted.content)["entry"][0]["request"]["url"] == f"Patient/{PATIENT_ID}"


@pytest.mark.parametrize(("retry_after", "seconds"), [("7", 7.0), (None, None)])
def test_429_is_unavailable_with_its_retry_after(
    client: CentralClient, central: FakeCentral, retry_after: str | None, seconds: float | None
) -> None:
    central.script, central.retry_after = ["429"], retry_after
    with pytest.raises(CentralUnavailable) as raised:
        client.transaction(_bundle(PATIENT_ID))
    assert raised.value.retry_after == seconds
    assert central.resources == {}


def test_retry_after_as_an_http_date(
    client: CentralClient, central: FakeCentral, clock: FixedClock
) -> None:
    central.script = ["503"]
    central.retry_after = format_datetime(clock.now() + timedelta(seconds=90), usegmt=True)
    with pytest.raises(CentralUnavailable) as raised:
        client.transaction(_bundle(PATIENT_ID))
    assert raised.value.retry_after == 90.0


@pytest.mark.parametrize("trouble", ["503", "drop", "timeout"])
def test_outages_are_unavailable(client: CentralClient, central: FakeCentral, trouble: str) -> None:
    central.script = [trouble]
    with pytest.raises(CentralUnavailable):
        client.transaction(_bundle(PATIENT_ID))


def test_a_refused_bundle_carries_central_diagnostics(
    client: CentralClient, central: FakeCentral
) -> None:
    central.refuse[PATIENT_ID] = 400
    with pytest.raises(BundleRejected) as raised:
        client.transaction(_bundle(PATIENT_ID))
    assert raised.value.http_status == 400
    assert "Patient.birthDate: must not be in the future" in raised.value.diagnostics
    assert not isinstance(raised.value, OutOfRegion)


def test_403_is_out_of_region(client: CentralClient, central: FakeCentral) -> None:
    central.refuse[PATIENT_ID] = 403
    with pytest.raises(OutOfRegion) as raised:
        client.transaction(_bundle(PATIENT_ID))
    assert raised.value.http_status == 403


def test_long_diagnostics_are_cut_short(client: CentralClient, central: FakeCentral) -> None:
    client.token()
    client.http = httpx.Client(
        transport=httpx.MockTransport(lambda _request: outcome(422, "x" * 5000))
    )
    with pytest.raises(BundleRejected) as raised:
        client.transaction(_bundle(PATIENT_ID))
    assert len(raised.value.diagnostics) <= 500


def test_a_wrong_url_is_not_mistaken_for_a_refusal(
    client: CentralClient, central: FakeCentral
) -> None:
    client.token()
    client.http = httpx.Client(
        transport=httpx.MockTransport(lambda _request: httpx.Response(404, text="<html>nginx"))
    )
    with pytest.raises(CentralMisbehaved, match="SYNC_HUB_CENTRAL_URL"):
        client.transaction(_bundle(PATIENT_ID))


def test_a_transaction_response_that_does_not_match_is_not_taken_as_success(
    client: CentralClient,
) -> None:
    client.token()
    short = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}
    client.http = httpx.Client(
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=short))
    )
    with pytest.raises(CentralMisbehaved):
        client.transaction(_bundle(PATIENT_ID))


# -- search -----------------------------------------------------------------------------------


def _communication(central: FakeCentral, number: int) -> None:
    central.store(
        {
            "resourceType": "Communication",
            "id": f"019550d3-9b40-7000-8000-{number:012d}",
            "status": "completed",
        }
    )


def test_a_search_follows_next_links_and_encodes_the_instant(
    client: CentralClient, central: FakeCentral, clock: FixedClock
) -> None:
    for number in range(5):
        _communication(central, number)
    central.page_size = 2
    pages = list(client.communications_since(clock.now() - timedelta(days=1)))
    assert [len(page["entry"]) for page in pages] == [2, 2, 1]
    first = central.searches[0]
    assert "%2B00%3A00" in str(first)  # the zone's + is not left to become a space
    assert first.params["_lastUpdated"] == "ge" + (clock.now() - timedelta(days=1)).isoformat()
    assert first.params["_count"] == "100"


def test_a_next_link_to_another_server_is_not_followed(
    client: CentralClient, clock: FixedClock
) -> None:
    client.token()
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": "http://elsewhere.test/fhir/Communication?p=2"}],
    }
    client.http = httpx.Client(
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=page))
    )
    pages = client.communications_since(clock.now())
    assert next(pages) == page
    with pytest.raises(CentralMisbehaved, match="another server"):
        next(pages)
