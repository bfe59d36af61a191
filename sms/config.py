"""How the reminder service is set up: built once by central from its settings, passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

from sms.planner import Policy


@dataclass(frozen=True)
class SmsConfig:
    account_sid: str
    auth_token: str
    from_number: str  # the number or sender ID reminders come from, E.164
    # Central's address as Twilio reaches it (through the reverse proxy): webhooks are signed
    # over this URL, so it is what signatures are checked against, whatever the proxy forwards.
    public_url: str
    api_url: str | None = None  # None: Twilio's own API; a local Twilio for tests and the demo
    per_second: float = 10.0  # sends per second for the account, across every central process
    batch: int = 50  # reminders claimed per transaction
    lease_seconds: float = 60.0  # how long a claimed reminder waits for its answer
    retry_seconds: float = 30.0  # first wait after Twilio was busy; doubles each time
    max_attempts: int = 8  # then the reminder fails
    voice_clips_url: str | None = None  # recorded clips at {url}/{language}/{template}.mp3
    worker: str = "central"  # this process, as it appears in claims
    policy: Policy = field(default_factory=Policy)

    def webhook(self, path: str) -> str:
        """The URL Twilio calls for ``path`` (which may carry a query)."""
        return self.public_url.rstrip("/") + path

    def status_url(self, reminder_id: str) -> str:
        # The fragment asks Twilio to retry the callback if central cannot be reached (its
        # webhook connection overrides); Twilio leaves it out of the request and signature.
        return self.webhook(f"{STATUS_PATH}?reminder={reminder_id}") + "#rc=5&rp=ct,rt,5xx"

    def gather_url(self, reminder_id: str) -> str:
        return self.webhook(f"{GATHER_PATH}?reminder={reminder_id}")


# The webhooks central mounts for Twilio (sms.routes).
INBOUND_PATH = "/sms/inbound"
STATUS_PATH = "/sms/status"
GATHER_PATH = "/sms/voice/gather"
