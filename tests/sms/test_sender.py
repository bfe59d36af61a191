"""TwilioSender: the real ``twilio`` client against the local Twilio, and Twilio's failures as
the two errors the dispatcher acts on."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sms.errors import TwilioBusy, TwilioError, TwilioRefused, TwilioUnknown
from sms.local_twilio import LocalTwilio
from sms.sender import Sender, TwilioSender

ACCOUNT = "AC" + "fedcba9876543210" * 2
TOKEN = "sender-test-token"
FROM = "+15005550006"
PHONE = "+255712345678"
OTHER = "+255787654321"
BODY = "Mama Neema, your antenatal visit at Kibaha is tomorrow."
CALLBACK = "http://127.0.0.1:9/sms/status?reminder=r-1"  # nobody listens: callbacks just fail
TWIML = "<Response><Say>Your visit is tomorrow.</Say></Response>"


@pytest.fixture
def twilio() -> Iterator[LocalTwilio]:
    with LocalTwilio(ACCOUNT, TOKEN, callback_backoff=0.01) as local:
        yield local


def sender_for(local: LocalTwilio, *, token: str = TOKEN, timeout: float = 5.0) -> TwilioSender:
    return TwilioSender(
        account_sid=ACCOUNT,
        auth_token=token,
        from_number=FROM,
        api_url=local.url,
        timeout_seconds=timeout,
    )


@pytest.fixture
def sender(twilio: LocalTwilio) -> TwilioSender:
    return sender_for(twilio)


def an_hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def test_it_is_a_sender(sender: TwilioSender) -> None:
    implementation: Sender = sender
    assert isinstance(implementation.send_sms, type(sender.send_sms))


def test_send_sms_goes_to_the_configured_api(twilio: LocalTwilio, sender: TwilioSender) -> None:
    sid = sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)

    assert re.fullmatch("SM[0-9a-f]{32}", sid)
    [message] = twilio.messages()
    assert (message.sid, message.to, message.from_, message.body) == (sid, PHONE, FROM, BODY)
    assert message.status_callback == CALLBACK


def test_place_call_sends_twiml_and_asks_for_completed_only(
    twilio: LocalTwilio, sender: TwilioSender
) -> None:
    sid = sender.place_call(to=PHONE, twiml=TWIML, status_callback=CALLBACK)

    assert re.fullmatch("CA[0-9a-f]{32}", sid)
    [call] = twilio.calls()
    assert (call.sid, call.to, call.from_, call.twiml) == (sid, PHONE, FROM, TWIML)
    assert (call.status_callback, call.events) == (CALLBACK, ("completed",))


def test_wrong_credentials_are_refused(twilio: LocalTwilio) -> None:
    sender = sender_for(twilio, token="a-wrong-token")

    with pytest.raises(TwilioRefused) as refused:
        sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    assert (refused.value.status, refused.value.code) == (401, 20003)
    assert "a-wrong-token" not in str(refused.value)
    with pytest.raises(TwilioRefused) as on_lookup:
        sender.find_message(to=PHONE, body=BODY, since=an_hour_ago())
    assert (on_lookup.value.status, on_lookup.value.code) == (401, 20003)


def test_an_invalid_number_is_refused_without_naming_it(sender: TwilioSender) -> None:
    with pytest.raises(TwilioRefused) as refused:
        sender.send_sms(to="0712345678", body=BODY, status_callback=CALLBACK)

    assert str(refused.value) == "Twilio refused the message (code 21211: invalid 'To' number)"
    assert (refused.value.status, refused.value.code) == (400, 21211)
    with pytest.raises(TwilioRefused) as on_call:
        sender.place_call(to="0712345678", twiml=TWIML, status_callback=CALLBACK)
    assert str(on_call.value) == "Twilio refused the call (code 21211: invalid 'To' number)"


def test_an_opted_out_phone_is_refused(twilio: LocalTwilio, sender: TwilioSender) -> None:
    twilio.opt_out(PHONE)

    with pytest.raises(TwilioRefused) as refused:
        sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    assert refused.value.code == 21610
    assert "opted out" in str(refused.value)


def test_429_is_busy_with_retry_after_then_the_next_send_goes(
    twilio: LocalTwilio, sender: TwilioSender
) -> None:
    twilio.fail_next(429, retry_after=7)

    with pytest.raises(TwilioBusy) as busy:
        sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    assert (busy.value.status, busy.value.code, busy.value.retry_after) == (429, 20429, 7.0)
    assert str(busy.value) == "Twilio is busy (HTTP 429, code 20429); retry after 7 s"
    assert twilio.messages() == []

    sid = sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    assert [m.sid for m in twilio.messages()] == [sid]


def test_a_429_without_retry_after_leaves_it_to_the_caller(
    twilio: LocalTwilio, sender: TwilioSender
) -> None:
    twilio.fail_next(429)
    with pytest.raises(TwilioBusy) as busy:
        sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    assert busy.value.retry_after is None


def test_a_retry_after_does_not_stick_to_the_next_answer(
    twilio: LocalTwilio, sender: TwilioSender
) -> None:
    twilio.fail_next(429, retry_after=30)
    twilio.fail_next(503)
    with pytest.raises(TwilioBusy):
        sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    with pytest.raises(TwilioBusy) as busy:
        sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    assert (busy.value.status, busy.value.retry_after) == (503, None)


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_busy(twilio: LocalTwilio, sender: TwilioSender, status: int) -> None:
    twilio.fail_next(status)
    with pytest.raises(TwilioBusy) as busy:
        sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    assert busy.value.status == status

    twilio.fail_next(status)
    with pytest.raises(TwilioBusy):
        sender.place_call(to=PHONE, twiml=TWIML, status_callback=CALLBACK)


def test_twilio_out_of_reach_is_busy(twilio: LocalTwilio, sender: TwilioSender) -> None:
    twilio.stop()

    with pytest.raises(TwilioBusy) as busy:
        sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    assert busy.value.status is None
    assert str(busy.value) == "Twilio could not be reached (ConnectionError)"
    with pytest.raises(TwilioBusy):
        sender.find_calls(to=PHONE, since=an_hour_ago())


def test_a_lost_answer_is_unknown_and_the_message_is_found_at_twilio(
    twilio: LocalTwilio,
) -> None:
    sender = sender_for(twilio, timeout=0.5)
    since = datetime.now(UTC) - timedelta(minutes=2)
    sender.send_sms(to=PHONE, body="another reminder", status_callback=CALLBACK)
    twilio.hold_creates()

    with pytest.raises(TwilioUnknown) as unknown:
        sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    assert "ReadTimeout" in str(unknown.value)
    [held] = [m for m in twilio.messages() if m.body == BODY]

    assert sender.find_message(to=PHONE, body=BODY, since=since) == held.sid
    assert sender.find_message(to=OTHER, body=BODY, since=since) is None
    assert sender.find_message(to=PHONE, body=BODY + ".", since=since) is None
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert sender.find_message(to=PHONE, body=BODY, since=later) is None
    twilio.release_creates()


def test_find_message_reads_every_page(twilio: LocalTwilio, sender: TwilioSender) -> None:
    since = an_hour_ago()
    first = sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    for n in range(120):
        sender.send_sms(to=PHONE, body=f"reminder {n}", status_callback=CALLBACK)

    assert sender.find_message(to=PHONE, body=BODY, since=since) == first


def test_find_message_takes_any_time_zone_and_refuses_a_naive_time(
    twilio: LocalTwilio, sender: TwilioSender
) -> None:
    eat = datetime.now(UTC).astimezone(ZoneInfo("Africa/Dar_es_Salaam"))
    sid = sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)

    # Three hours ahead of UTC: sent as UTC, the time still finds a message sent just now.
    assert sender.find_message(to=PHONE, body=BODY, since=eat - timedelta(minutes=1)) == sid
    with pytest.raises(ValueError, match="time zone"):
        sender.find_message(to=PHONE, body=BODY, since=datetime(2025, 1, 1))  # noqa: DTZ001


def test_find_calls_lists_calls_to_the_phone(twilio: LocalTwilio, sender: TwilioSender) -> None:
    since = an_hour_ago()
    ours = [sender.place_call(to=PHONE, twiml=TWIML, status_callback=CALLBACK) for _ in range(2)]
    sender.place_call(to=OTHER, twiml=TWIML, status_callback=CALLBACK)

    assert sorted(sender.find_calls(to=PHONE, since=since)) == sorted(ours)
    assert sender.find_calls(to=PHONE, since=datetime.now(UTC) + timedelta(minutes=1)) == []


def test_senders_in_threads_keep_their_own_answers(
    twilio: LocalTwilio, sender: TwilioSender
) -> None:
    twilio.fail_next(429, count=5, retry_after=3)
    outcomes: list[object] = []
    lock = threading.Lock()

    def send_one() -> None:
        try:
            outcome: object = sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
        except TwilioError as exc:
            outcome = exc
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=send_one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    busy = [o for o in outcomes if isinstance(o, TwilioBusy)]
    assert len(busy) == 5
    assert {b.retry_after for b in busy} == {3.0}
    assert len([o for o in outcomes if isinstance(o, str)]) == 5


def test_no_phone_number_or_text_reaches_the_logs(
    twilio: LocalTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sender = sender_for(twilio)
    since = an_hour_ago()

    sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    sender.place_call(to=PHONE, twiml=TWIML, status_callback=CALLBACK)
    sender.find_message(to=PHONE, body=BODY, since=since)
    sender.find_calls(to=PHONE, since=since)
    with pytest.raises(TwilioRefused) as refused:
        sender.send_sms(to="0712345678", body=BODY, status_callback=CALLBACK)
    twilio.fail_next(429)
    with pytest.raises(TwilioBusy) as busy:
        sender.send_sms(to=PHONE, body=BODY, status_callback=CALLBACK)
    assert twilio.drain()

    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    digits = PHONE.removeprefix("+")
    for secret in (digits, "0712345678", "Mama Neema", "Kibaha", "visit is tomorrow"):
        assert secret not in logged
        assert secret not in str(refused.value) + str(busy.value)
    assert logging.getLogger("twilio.http_client").getEffectiveLevel() >= logging.WARNING
