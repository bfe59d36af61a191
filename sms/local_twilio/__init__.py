"""A local Twilio: the parts of Twilio's REST API and webhooks the reminder service uses.

Nothing in the test suite or the demo may reach the internet, so the real ``twilio`` client is
pointed at this server instead (``TwilioSender(api_url=...)``). It answers the same paths, form
fields, JSON shapes and error codes as ``api.twilio.com/2010-04-01`` for Messages and Calls, and
plays the rest of the world: after accepting a message it posts the status callbacks (``sent``
then ``delivered``, or a scripted failure), after accepting a call it fetches and runs the TwiML
and answers as a scripted patient would, and it delivers inbound SMS to our webhook. Every
webhook is signed with ``X-Twilio-Signature`` exactly as Twilio signs it, and honours Twilio's
connection overrides in the URL fragment (``#rc=3&rp=5xx&ct=500&rt=2000``).

Connection overrides follow Twilio's documented defaults: ``rc`` (retries) defaults to 1 and
``rp`` (retry policy: ``ct``, ``rt``, ``4xx``, ``5xx``, ``all``, comma-separated) to ``ct``, so
without overrides a webhook is retried once when the connection fails and never after an HTTP
error; ``#rc=3&rp=5xx`` retries a 5xx answer three times. The fragment is neither sent nor signed.

Tests and the demo drive it with Python methods or, from another process, with the JSON admin
API under ``/_local/`` (no authentication: it binds 127.0.0.1 only). Run it on its own with
``python -m sms.local_twilio --port 8089 --account-sid AC... --auth-token ... --sms-url URL``.

It logs no message text and no phone number: request lines are not logged at all.
"""

from sms.local_twilio.command import main
from sms.local_twilio.records import LocalCall, LocalMessage, WebhookAttempt
from sms.local_twilio.rest import API_VERSION
from sms.local_twilio.twilio import DEFAULT_NUMBER, LocalTwilio

__all__ = [
    "API_VERSION",
    "DEFAULT_NUMBER",
    "LocalCall",
    "LocalMessage",
    "LocalTwilio",
    "WebhookAttempt",
    "main",
]
