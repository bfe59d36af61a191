"""Part four of the demo: the follow-up the visit planned becomes a reminder SMS at a local
Twilio, the mother replies, and her answer reaches the CHW's tablet. Central, the hub and the
local Twilio are reached through their command lines and HTTP only."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from field_app.demo.ports import free_port
from field_app.demo.tablets import say

if TYPE_CHECKING:
    from field_app.demo.central import Console, Server

ACCOUNT = "AC" + "d" * 32
AUTH_TOKEN = "demo-local-twilio-token"  # noqa: S105 - the local Twilio's, no real account
FROM_NUMBER = "+255700000001"
WAIT_SECONDS = 30.0


class LocalTwilio:
    """``python -m sms.local_twilio``: Twilio's Messages and Calls API on this machine."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, sms_url: str) -> None:
        argv = ["--port", str(self.port), "--account-sid", ACCOUNT, "--auth-token", AUTH_TOKEN]
        argv += ["--sms-url", sms_url, "--callback-backoff", "0.5"]
        print(f"\n$ python -m sms.local_twilio {' '.join(argv)} &")
        with (self.folder / "local_twilio.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "sms.local_twilio", *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
            )
        _wait(lambda: _answers(f"{self.url}/_local/messages"), "the local Twilio did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    def outbound(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{self.url}/_local/messages", timeout=5).json()
        return [m for m in found if m["direction"] == "outbound-api"]

    def patient_replies(self, phone: str, text: str) -> dict[str, Any]:
        print(
            f"\n$ curl -s -X POST {self.url}/_local/inbound"
            f' -d \'{{"from": "{phone}", "body": "{text}"}}\''
        )
        answer: dict[str, Any] = httpx.post(
            f"{self.url}/_local/inbound", json={"from": phone, "body": text}, timeout=30
        ).json()
        return answer


def central_settings(twilio: LocalTwilio) -> dict[str, str]:
    """Central's SMS settings for the demo: the local Twilio, short intervals, and no quiet
    hours, so that the demo runs at any hour of the day."""
    return {
        "CENTRAL_SMS": "on",
        "CENTRAL_TWILIO_ACCOUNT_SID": ACCOUNT,
        "CENTRAL_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "CENTRAL_TWILIO_FROM": FROM_NUMBER,
        "CENTRAL_TWILIO_API_URL": twilio.url,
        "CENTRAL_SMS_PLAN_SECONDS": "1",
        "CENTRAL_SMS_DISPATCH_SECONDS": "1",
        "CENTRAL_SMS_QUIET_HOURS": "00:00-00:00",
    }


def reminder_demo(central: Server, twilio: LocalTwilio, console: Console, mother: str) -> str:
    """Returns the lastUpdated of the newest Communication about her at central."""
    say(
        "PART FOUR: the visit planned a follow-up with a reminder; central plans it for the"
        " mother's phone, at 09:00 in her own time zone on its day."
    )
    reminder_id = _wait_for_plan(central)
    central.cli("sms", "outbox")
    say("The demo cannot wait for that day: the operator sends it now.")
    central.cli("sms", "resend", reminder_id)
    message = _wait(twilio.outbound, "the reminder did not reach the local Twilio")[0]
    say("The local Twilio received it through the real twilio client, and delivered it:")
    segments = int(message["num_segments"])
    print(f"  to {message['to']} ({segments} SMS segment{'s' if segments > 1 else ''}):")
    print(f"  {message['body']}")
    if segments > 1:
        print("  (her name is written with Á, outside the GSM-7 alphabet: the whole text goes")
        print("  as UCS-2, 70 characters a segment; a name in plain letters fits in one)")
    phone = message["to"]
    say("She replies NDIYO (yes) from her phone; Twilio calls central's signed webhook.")
    answer = twilio.patient_replies(phone, "NDIYO")
    print(f"  central answered {answer['status']}: {answer['body']}")
    central.cli("sms", "status")
    return str(max(c["meta"]["lastUpdated"] for c in console.search("Communication", mother)))


def _wait_for_plan(central: Server) -> str:
    """The ID of the soonest reminder of her follow-ups (not a missed-visit one)."""

    def planned() -> str | None:
        found = []
        for line in central.cli("sms", "outbox", quiet=True).splitlines():
            words = line.split()
            if len(words) > 3 and words[1] == "planned" and words[3] != "missed_visit":
                found.append((line.split("  at ")[1], words[0]))
        return min(found)[1] if found else None

    reminder_id: str = _wait(planned, "central did not plan the reminder")
    return reminder_id


def _wait(check: Any, failure: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise SystemExit(failure)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
