"""The TwiML of a reminder call: the reminder spoken in the patient's language (or a recorded
clip of it, where the programme has one), then one key: 1 to confirm, 2 to ask for a call back.
"""

from __future__ import annotations

from twilio.twiml.voice_response import Gather, VoiceResponse

from sms import templates
from sms.config import SmsConfig
from sms.model import OutboxRow

GATHER_SECONDS = 8


def reminder_twiml(row: OutboxRow, config: SmsConfig) -> str:
    response = VoiceResponse()
    gather = Gather(
        num_digits=1,
        action=config.gather_url(row.reminder_id),
        method="POST",
        timeout=GATHER_SECONDS,
    )
    _speak(gather, row, config)
    response.append(gather)
    # No key pressed: say it once more, then hang up.
    _speak(response, row, config)
    return str(response)


def reply_twiml(text: str, language: str) -> str:
    response = VoiceResponse()
    response.say(text, language=templates.say_language(language))
    return str(response)


def _speak(into: VoiceResponse | Gather, row: OutboxRow, config: SmsConfig) -> None:
    if config.voice_clips_url:
        into.play(f"{config.voice_clips_url.rstrip('/')}/{row.language}/{row.template}.mp3")
    else:
        into.say(row.body, language=templates.say_language(row.language))
