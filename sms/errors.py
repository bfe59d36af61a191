"""What goes wrong in the reminder service.

    SmsError
    ├── BadWebhook          a webhook without a valid X-Twilio-Signature (403, nothing read)
    ├── NotFound            no reminder, message or opt-out with that key (operator commands)
    ├── BadPhone            not a phone number in E.164 form
    └── TwilioError         Twilio answered with an error, or could not be reached
        ├── TwilioBusy      429, 5xx or no connection: try again later (retry_after seconds)
        ├── TwilioUnknown   the request went out but its answer was lost (a read timeout):
        │                   Twilio may hold the message, so it must be looked up, not resent
        └── TwilioRefused   any other 4xx: retrying would not help (code is Twilio's)

Messages name what went wrong, never a phone number, a name or a message's text.
"""

from __future__ import annotations


class SmsError(Exception):
    """Base of every error the reminder service raises on purpose."""


class BadWebhook(SmsError):
    pass


class NotFound(SmsError):
    pass


class BadPhone(SmsError):
    pass


class TwilioError(SmsError):
    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class TwilioBusy(TwilioError):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class TwilioUnknown(TwilioError):
    pass


class TwilioRefused(TwilioError):
    pass
