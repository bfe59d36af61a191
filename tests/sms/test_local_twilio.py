"""The local Twilio, driven by the real ``twilio`` client and checked by a webhook receiver
that validates every signature with Twilio's own ``RequestValidator``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from field_app.demo.ports import free_port
from sms.local_twilio import DEFAULT_NUMBER, LocalTwilio

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "local-auth-token"
PHONE = "+255712345678"
OTHER = "+255787654321"
FROM = DEFAULT_NUMBER
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Received:
    path: str  # the request target as it arrived: path and query
    url: str  # what Twilio requested: the receiver's base plus the target
    params: dict[str, str]
    signature: str
    valid: bool


class Receiver:
    """Our side of the webhooks: records each request, checks its signature, answers what the
    test scripted for its path (default 200 with an empty TwiML response)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: dict[str, deque[tuple[int, str]]] = {}
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                params = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                receiver.take(self.path, params, self.headers.get("X-Twilio-Signature", ""), self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{target}"

    def answer(self, path: str, *replies: tuple[int, str]) -> None:
        self.answers[path] = deque(replies)

    def take(
        self, target: str, params: dict[str, str], signature: str, handler: BaseHTTPRequestHandler
    ) -> None:
        url = self.url(target)
        valid = RequestValidator(TOKEN).validate(url, params, signature)
        with self.changed:
            self.requests.append(Received(target, url, params, signature, valid))
            self.changed.notify_all()
            queue = self.answers.get(urlsplit(target).path)
            status, body = queue.popleft() if queue else (200, "<Response/>")
        handler.send_response(status)
        handler.send_header("Content-Type", "text/xml")
        handler.send_header("Content-Length", str(len(body.encode())))
        handler.end_headers()
        handler.wfile.write(body.encode())

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    ours = Receiver()
    yield ours
    ours.close()


@pytest.fixture
def twilio(receiver: Receiver) -> Iterator[LocalTwilio]:
    with LocalTwilio(ACCOUNT, TOKEN, sms_url=receiver.url("/sms"), callback_backoff=0.01) as local:
        yield local


def client_for(local: LocalTwilio, token: str = TOKEN) -> Client:
    client = Client(ACCOUNT, token)
    client.api.base_url = local.url
    return client


@pytest.fixture
def client(twilio: LocalTwilio) -> Client:
    return client_for(twilio)


def send(client: Client, body: str = "Your clinic visit is tomorrow.", **kwargs: Any) -> Any:
    return client.messages.create(to=kwargs.pop("to", PHONE), from_=FROM, body=body, **kwargs)


# -- messages ---------------------------------------------------------------------------------


def test_a_message_is_accepted_in_twilios_shape(twilio: LocalTwilio, client: Client) -> None:
    message = send(client, "a" * 161, status_callback="https://central.example/status")

    assert re.fullmatch("SM[0-9a-f]{32}", message.sid)
    assert message.status == "queued"
    assert message.num_segments == "2"
    assert (message.to, message.from_, message.body) == (PHONE, FROM, "a" * 161)
    assert message.account_sid == ACCOUNT
    assert message.direction == "outbound-api"
    assert message.api_version == "2010-04-01"
    assert message.num_media == "0"
    assert message.price is None
    assert message.error_code is None
    assert message.uri == f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{message.sid}.json"
    assert message.date_created.tzinfo is not None
    assert abs(message.date_created - datetime.now(UTC)) < timedelta(minutes=1)
    assert message.subresource_uris["media"].endswith(f"{message.sid}/Media.json")
    [held] = twilio.messages()
    assert held.status_callback == "https://central.example/status"


@pytest.mark.parametrize(
    ("body", "segments"),
    [("a" * 160, "1"), ("€" * 80, "1"), ("€" * 81, "2"), ("ë" * 70, "1"), ("ë" * 71, "2")],
    ids=["gsm-160", "gsm-80-escapes", "gsm-81-escapes", "ucs2-70", "ucs2-71"],
)
def test_segments_are_counted_by_encoding(client: Client, body: str, segments: str) -> None:
    assert send(client, body).num_segments == segments


def test_wrong_credentials_are_refused_with_20003(twilio: LocalTwilio) -> None:
    with pytest.raises(TwilioRestException) as refused:
        send(client_for(twilio, token="not-the-token"))
    assert (refused.value.status, refused.value.code) == (401, 20003)

    answer = httpx.post(f"{twilio.url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json", data={})
    assert answer.status_code == 401
    assert answer.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert twilio.messages() == []


def test_another_accounts_path_is_not_found(twilio: LocalTwilio) -> None:
    other = "AC" + "f" * 32
    answer = httpx.get(
        f"{twilio.url}/2010-04-01/Accounts/{other}/Messages.json", auth=(ACCOUNT, TOKEN)
    )
    assert (answer.status_code, answer.json()["code"]) == (404, 20404)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"to": "0712345678"}, 21211),
        ({"to": "+2557"}, 21211),
        ({"to": ""}, 21604),
        ({"body": ""}, 21602),
        ({"from_": ""}, 21603),
        ({"status_callback": "not a url"}, 21609),
    ],
)
def test_bad_fields_are_refused_with_twilios_codes(
    twilio: LocalTwilio, client: Client, fields: dict[str, str], code: int
) -> None:
    given = {"to": PHONE, "from_": FROM, "body": "Hello"} | fields
    with pytest.raises(TwilioRestException) as refused:
        client.messages.create(**given)
    assert (refused.value.status, refused.value.code) == (400, code)
    assert twilio.messages() == []


def test_an_opted_out_phone_answers_21610(twilio: LocalTwilio, client: Client) -> None:
    twilio.opt_out(PHONE)
    with pytest.raises(TwilioRestException) as refused:
        send(client)
    assert refused.value.code == 21610
    assert "unsubscribed recipient" in refused.value.msg
    send(client, to=OTHER)

    twilio.opt_in(PHONE)
    send(client)


def test_stop_and_start_from_the_patient_opt_out_and_in(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    twilio.inbound_sms(PHONE, " stop ")
    with pytest.raises(TwilioRestException) as refused:
        send(client)
    assert refused.value.code == 21610

    twilio.inbound_sms(PHONE, "START")
    assert send(client).status == "queued"
    assert [r.params["Body"] for r in receiver.wait_for(2)] == [" stop ", "START"]


def test_a_message_can_be_fetched_and_an_unknown_one_is_404(
    twilio: LocalTwilio, client: Client
) -> None:
    sid = send(client).sid
    assert twilio.drain()

    fetched = client.messages(sid).fetch()
    assert (fetched.sid, fetched.status, fetched.body) == (
        sid,
        "delivered",
        "Your clinic visit is tomorrow.",
    )
    with pytest.raises(TwilioRestException) as missing:
        client.messages("SM" + "0" * 32).fetch()
    assert (missing.value.status, missing.value.code) == (404, 20404)


# -- status callbacks -------------------------------------------------------------------------


def test_status_callbacks_come_sent_then_delivered_and_signed(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    sid = send(client, status_callback=receiver.url("/status?reminder=r-17")).sid

    first, second = receiver.wait_for(2)

    assert [first.params["MessageStatus"], second.params["MessageStatus"]] == ["sent", "delivered"]
    for request in (first, second):
        assert request.path == "/status?reminder=r-17"
        assert request.valid
        assert request.params["SmsStatus"] == request.params["MessageStatus"]
        assert request.params["MessageSid"] == request.params["SmsSid"] == sid
        assert request.params["AccountSid"] == ACCOUNT
        assert (request.params["From"], request.params["To"]) == (FROM, PHONE)
        assert request.params["ApiVersion"] == "2010-04-01"
        assert "ErrorCode" not in request.params
    validator = RequestValidator(TOKEN)
    assert not validator.validate(
        receiver.url("/status?reminder=r-18"), first.params, first.signature
    )
    assert not validator.validate(receiver.url("/status"), first.params, first.signature)
    assert not RequestValidator("another-token").validate(first.url, first.params, first.signature)


def test_a_failing_phone_gets_undelivered_with_its_error_code(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    twilio.fail_delivery(PHONE, 30003)
    sid = send(client, status_callback=receiver.url("/status")).sid

    first, second = receiver.wait_for(2)

    assert [first.params["MessageStatus"], second.params["MessageStatus"]] == [
        "sent",
        "undelivered",
    ]
    assert second.params["ErrorCode"] == "30003"
    assert twilio.drain()
    fetched = client.messages(sid).fetch()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)


def test_a_failed_message_goes_straight_to_failed(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    twilio.fail_delivery(PHONE, 30008, status="failed")
    send(client, status_callback=receiver.url("/status"))

    [only] = receiver.wait_for(1)
    assert twilio.drain()

    assert (only.params["MessageStatus"], only.params["ErrorCode"]) == ("failed", "30008")
    assert len(receiver.requests) == 1


def test_retry_override_retries_a_5xx_callback(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    receiver.answer("/flaky", (500, "boom"), (200, ""), (200, ""))
    send(client, status_callback=receiver.url("/flaky?reminder=r-1#rc=3&rp=5xx"))

    requests = receiver.wait_for(3)
    assert twilio.drain()

    assert [r.params["MessageStatus"] for r in requests] == ["sent", "sent", "delivered"]
    assert all(r.valid and r.path == "/flaky?reminder=r-1" for r in requests)
    assert [(c.attempt, c.status, c.failure) for c in twilio.callbacks()] == [
        (1, 500, "5xx"),
        (2, 200, None),
        (1, 200, None),
    ]
    assert all(c.url == receiver.url("/flaky?reminder=r-1") for c in twilio.callbacks())


def test_without_a_retry_policy_a_5xx_callback_is_not_retried(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    receiver.answer("/down", *[(500, "")] * 10)
    send(client, status_callback=receiver.url("/down"))
    # Twilio's default policy (rp=ct) retries failed connections only, whatever rc says.
    send(client, status_callback=receiver.url("/down#rc=3"))

    assert twilio.drain()

    assert len(receiver.requests) == 4
    assert {(c.attempt, c.failure) for c in twilio.callbacks()} == {(1, "5xx")}


def test_a_connection_that_fails_is_retried_as_twilio_does(
    twilio: LocalTwilio, client: Client
) -> None:
    closed = free_port()
    send(client, status_callback=f"http://127.0.0.1:{closed}/status")
    send(client, status_callback=f"http://127.0.0.1:{closed}/status#rc=0")
    send(client, status_callback=f"http://127.0.0.1:{closed}/status#rc=2&ct=100")

    assert twilio.drain()

    by_message: dict[str, list[int]] = {}
    for attempt in twilio.callbacks():
        assert (attempt.status, attempt.failure) == (None, "ct")
        by_message.setdefault(attempt.sid, []).append(attempt.attempt)
    # Each message makes two callbacks (sent, delivered): 1 + rc attempts each, rc 1 by default.
    assert sorted(len(a) for a in by_message.values()) == [2, 4, 6]


# -- calls ------------------------------------------------------------------------------------

GATHER_TWIML = (
    "<Response>"
    '<Gather numDigits="1" action="{action}">'
    "<Say>Your visit is tomorrow. Press 1 to confirm.</Say>"
    "</Gather>"
    "<Say>We did not hear from you.</Say>"
    "</Response>"
)


def test_a_call_speaks_gathers_a_digit_and_reports_completed(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    twilio.set_voice_answer(PHONE, "1")
    receiver.answer("/gather", (200, "<Response><Say>Thank you.</Say></Response>"))
    twiml = GATHER_TWIML.format(action=receiver.url("/gather?reminder=r-9"))
    call = client.calls.create(
        to=PHONE,
        from_=FROM,
        twiml=twiml,
        status_callback=receiver.url("/call-status?reminder=r-9"),
        status_callback_event=["completed"],
    )

    assert re.fullmatch("CA[0-9a-f]{32}", call.sid)
    assert (call.status, call.direction, call.to) == ("queued", "outbound-api", PHONE)
    gathered, status = receiver.wait_for(2)

    assert gathered.path == "/gather?reminder=r-9"
    assert gathered.valid
    assert gathered.params["Digits"] == "1"
    assert gathered.params["CallSid"] == call.sid
    assert gathered.params["CallStatus"] == "in-progress"
    assert (gathered.params["From"], gathered.params["To"]) == (FROM, PHONE)
    assert gathered.params["AccountSid"] == ACCOUNT
    assert status.path == "/call-status?reminder=r-9"
    assert status.valid
    assert status.params["CallStatus"] == "completed"
    assert status.params["CallSid"] == call.sid
    assert int(status.params["CallDuration"]) > 0
    [placed] = twilio.calls()
    assert placed.said == ["Your visit is tomorrow. Press 1 to confirm.", "Thank you."]
    assert (placed.digits, placed.status, placed.twiml) == ("1", "completed", twiml)
    assert client.calls(call.sid).fetch().status == "completed"


def test_a_call_nobody_answers_reports_no_answer(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    client.calls.create(
        to=PHONE,
        from_=FROM,
        twiml=GATHER_TWIML.format(action=receiver.url("/gather")),
        status_callback=receiver.url("/call-status"),
    )

    [status] = receiver.wait_for(1)
    assert twilio.drain()

    assert (status.params["CallStatus"], status.params["CallDuration"]) == ("no-answer", "0")
    [placed] = twilio.calls()
    assert (placed.said, placed.digits) == ([], None)


def test_an_answer_without_digits_hears_the_rest_and_posts_no_gather(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    twilio.set_voice_answer(PHONE, "")
    client.calls.create(
        to=PHONE,
        from_=FROM,
        twiml=GATHER_TWIML.format(action=receiver.url("/gather")),
        status_callback=receiver.url("/call-status"),
        status_callback_event=["initiated", "ringing", "answered", "completed"],
    )

    assert twilio.drain()

    statuses = [r.params["CallStatus"] for r in receiver.requests]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"]
    [placed] = twilio.calls()
    assert placed.said == [
        "Your visit is tomorrow. Press 1 to confirm.",
        "We did not hear from you.",
    ]


def test_a_call_with_a_url_fetches_its_twiml_signed(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    twilio.set_voice_answer(PHONE, "busy")
    twilio.set_voice_answer(OTHER, "2")
    receiver.answer(
        "/twiml", (200, "<Response><Play>https://clips.example/sw/follow_up.mp3</Play></Response>")
    )
    client.calls.create(to=OTHER, from_=FROM, url=receiver.url("/twiml?reminder=r-3"))
    busy = client.calls.create(
        to=PHONE, from_=FROM, url=receiver.url("/twiml"), status_callback=receiver.url("/s")
    )

    assert twilio.drain()

    fetches = [r for r in receiver.requests if r.path.startswith("/twiml")]
    assert [f.path for f in fetches] == ["/twiml?reminder=r-3"]
    assert fetches[0].valid
    assert fetches[0].params["CallStatus"] == "in-progress"
    played = {c.to: c for c in twilio.calls()}
    assert played[OTHER].played == ["https://clips.example/sw/follow_up.mp3"]
    assert played[PHONE].status == "busy"
    [status] = [r for r in receiver.requests if r.path == "/s"]
    assert (status.params["CallSid"], status.params["CallStatus"]) == (busy.sid, "busy")


def test_calls_can_be_listed_and_fetched(twilio: LocalTwilio, client: Client) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    ours = client.calls.create(to=PHONE, from_=FROM, twiml="<Response><Say>Hi</Say></Response>")
    client.calls.create(to=OTHER, from_=FROM, twiml="<Response><Say>Hi</Say></Response>")

    assert [c.sid for c in client.calls.list(to=PHONE, start_time_after=since)] == [ours.sid]
    assert client.calls.list(to=PHONE, start_time_after=since + timedelta(hours=1)) == []
    assert client.calls(ours.sid).fetch().to == PHONE


def test_a_call_is_refused_without_twiml(client: Client) -> None:
    with pytest.raises(TwilioRestException) as refused:
        client.calls.create(to=PHONE, from_=FROM)
    assert refused.value.code == 21205


# -- listing ----------------------------------------------------------------------------------


def test_messages_page_through_the_real_client() -> None:
    moment = [datetime(2025, 3, 1, 8, 0, tzinfo=UTC)]
    with LocalTwilio(ACCOUNT, TOKEN, clock=lambda: moment[0], callback_backoff=0.01) as local:
        client = client_for(local)
        early = send(client, "early").sid
        moment[0] += timedelta(hours=1)
        sids = [send(client, f"reminder {n}").sid for n in range(5)]
        send(client, "someone else", to=OTHER)

        listed = client.messages.list(
            to=PHONE, date_sent_after=datetime(2025, 3, 1, 8, 30, tzinfo=UTC), page_size=2
        )
        first = client.messages.page(to=PHONE, page_size=2)
        pages = [first]
        while (following := pages[-1].next_page()) is not None:
            pages.append(following)
        everything = client.messages.list(to=PHONE)
        before = client.messages.list(
            to=PHONE, date_sent_before=datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
        )

    assert [m.sid for m in listed] == sids[::-1]
    assert [len(list(page)) for page in pages] == [2, 2, 2]
    assert [m.sid for m in everything] == [*sids[::-1], early]
    assert [m.sid for m in before] == [early]


def test_a_list_page_has_twilios_keys(twilio: LocalTwilio, client: Client) -> None:
    for n in range(3):
        send(client, f"n{n}")

    answer = httpx.get(
        f"{twilio.url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
        params={"To": PHONE, "PageSize": "2"},
        auth=(ACCOUNT, TOKEN),
    ).json()

    assert set(answer) == {
        "messages", "first_page_uri", "next_page_uri", "previous_page_uri",
        "page", "page_size", "start", "end", "uri",
    }  # fmt: skip
    assert (answer["page"], answer["page_size"], answer["start"], answer["end"]) == (0, 2, 0, 1)
    assert answer["previous_page_uri"] is None
    assert answer["next_page_uri"].startswith(f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json?")
    assert "Page=1" in answer["next_page_uri"]
    assert "PageToken=PA" in answer["next_page_uri"]


# -- faults -----------------------------------------------------------------------------------


def test_fail_next_answers_errors_then_accepts(twilio: LocalTwilio) -> None:
    url = f"{twilio.url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    form = {"To": PHONE, "From": FROM, "Body": "Hello"}
    twilio.fail_next(429, retry_after=2)
    twilio.fail_next(503, count=2)

    answers = [httpx.post(url, data=form, auth=(ACCOUNT, TOKEN)) for _ in range(4)]

    assert [a.status_code for a in answers] == [429, 503, 503, 201]
    assert answers[0].headers["Retry-After"] == "2"
    assert answers[0].json()["code"] == 20429
    assert answers[1].json()["code"] == 20503
    assert "Retry-After" not in answers[1].headers
    assert [m.sid for m in twilio.messages()] == [answers[3].json()["sid"]]


def test_a_held_create_is_recorded_before_its_answer(twilio: LocalTwilio, client: Client) -> None:
    twilio.hold_creates()
    answered: list[str] = []
    sending = threading.Thread(target=lambda: answered.append(send(client).sid))
    sending.start()

    assert twilio.created_event.wait(5)
    [held] = twilio.messages()
    assert answered == []
    assert sending.is_alive()

    twilio.release_creates()
    sending.join(5)
    assert answered == [held.sid]


# -- inbound SMS ------------------------------------------------------------------------------


def test_an_inbound_sms_reaches_our_webhook_signed(twilio: LocalTwilio, receiver: Receiver) -> None:
    reply = "<Response><Message>Asante!</Message></Response>"
    receiver.answer("/sms", (200, reply))

    sent = twilio.inbound_sms(PHONE, "Ndiyo, nitakuja")

    assert (sent.status, sent.answer, sent.failure) == (200, reply, None)
    [request] = receiver.requests
    assert request.valid
    assert request.params["Body"] == "Ndiyo, nitakuja"
    assert (request.params["From"], request.params["To"]) == (PHONE, DEFAULT_NUMBER)
    assert request.params["MessageSid"].startswith("SM")
    assert request.params["AccountSid"] == ACCOUNT
    assert request.params["NumMedia"] == "0"
    [inbound] = twilio.messages()
    assert (inbound.direction, inbound.status) == ("inbound", "received")


# -- admin API --------------------------------------------------------------------------------


def test_the_admin_api_drives_it_from_another_process(
    twilio: LocalTwilio, client: Client, receiver: Receiver
) -> None:
    admin = httpx.Client(base_url=twilio.url)
    receiver.answer("/sms", (200, "<Response/>"))

    assert admin.post("/_local/opt-out", json={"phone": PHONE}).status_code == 200
    with pytest.raises(TwilioRestException):
        send(client)
    assert admin.post("/_local/fail-next", json={"status": 503}).status_code == 200
    with pytest.raises(TwilioRestException) as busy:
        send(client, to=OTHER)
    assert busy.value.status == 503
    sid = send(client, to=OTHER, status_callback=receiver.url("/status")).sid
    admin.post("/_local/voice-answer", json={"phone": OTHER, "digits": "1"})
    client.calls.create(to=OTHER, from_=FROM, twiml="<Response><Say>Hi</Say></Response>")
    inbound = admin.post("/_local/inbound", json={"from": OTHER, "body": "Habari"}).json()
    assert twilio.drain()

    messages = admin.get("/_local/messages").json()
    assert next((m["sid"], m["to"], m["from"]) for m in messages) == (sid, OTHER, FROM)
    assert messages[0]["status"] == "delivered"
    [call] = admin.get("/_local/calls").json()
    assert (call["digits"], call["said"], call["status"]) == ("1", ["Hi"], "completed")
    assert inbound == {"status": 200, "body": "<Response/>"}
    kinds = [c["kind"] for c in admin.get("/_local/callbacks").json()]
    assert sorted(kinds) == ["inbound", "message-status", "message-status"]
    assert admin.post("/_local/opt-out", content=b"{not json").status_code == 400
    assert admin.post("/_local/voice-answer", json={"phone": OTHER}).status_code == 400
    assert admin.get("/_local/nothing").status_code == 404
    twilio.sms_url = None
    assert admin.post("/_local/inbound", json={"from": OTHER, "body": "x"}).status_code == 409


def test_the_admin_api_holds_and_releases_creates(twilio: LocalTwilio, client: Client) -> None:
    admin = httpx.Client(base_url=twilio.url)
    admin.post("/_local/hold")
    sending = threading.Thread(target=send, args=(client,))
    sending.start()
    assert twilio.wait_until(lambda: len(twilio.messages()) == 1)
    assert sending.is_alive()

    admin.post("/_local/release")
    sending.join(5)
    assert not sending.is_alive()


# -- running it -------------------------------------------------------------------------------


def test_stop_joins_every_thread(receiver: Receiver) -> None:
    local = LocalTwilio(ACCOUNT, TOKEN, callback_backoff=0.01).start()
    client = client_for(local)
    send(client, status_callback=receiver.url("/status"))
    local.hold_creates()
    outcomes: list[object] = []

    def send_held() -> None:
        # stop() opens the gate: the held create is answered or cut, either way it ends.
        try:
            outcomes.append(send(client).sid)
        except Exception as exc:  # noqa: BLE001
            outcomes.append(exc)

    stuck = threading.Thread(target=send_held)
    stuck.start()
    assert local.created_event.wait(5)

    local.stop()
    stuck.join(5)

    assert not stuck.is_alive()
    assert len(outcomes) == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("local-twilio")]
    with pytest.raises(RuntimeError):
        _ = local.url


def test_it_runs_as_a_command_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sms.local_twilio", "--port", "0", "--account-sid", ACCOUNT,
         "--auth-token", TOKEN, "--sms-url", "http://127.0.0.1:9/sms"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/_local/messages").json() == []
        answer = httpx.post(
            f"{url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
            data={"To": PHONE, "From": FROM, "Body": "Hi"},
            auth=(ACCOUNT, TOKEN),
        )
        assert answer.status_code == 201
        assert json.loads(httpx.get(f"{url}/_local/messages").text)[0]["body"] == "Hi"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
