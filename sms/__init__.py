"""SMS and voice reminders, and two-way messages with patients, through Twilio.

Central mounts it: ``ReminderService`` (planning, sending, webhooks, operator commands) over
central's database and FHIR store, with ``sms_router`` for Twilio's webhooks. See docs/sms.md.
"""

from sms.config import SmsConfig
from sms.errors import SmsError
from sms.routes import sms_router
from sms.sender import TwilioSender
from sms.service import ReminderService

__all__ = ["ReminderService", "SmsConfig", "SmsError", "TwilioSender", "sms_router"]
