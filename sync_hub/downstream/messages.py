"""Communications as chart messages: the projection's mapping (``sync_hub.projection.
messages``) turned round, so a message pushed by the hub comes back as itself. A referral
answer comes down as advice to the CHW (to_chw) that also accepts its referral."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sync_hub.downstream.fhir import coded, instant, last_updated, reference_id, text_of
from sync_hub.projection.fhir import MESSAGE_CATEGORY, V3_PARTICIPATION_MODE
from sync_hub.projection.messages import CATEGORIES, MEDIA

REFERRAL_ANSWER = "referral-answer"
SERVICE_REQUEST = "ServiceRequest/"
COMMUNICATION = "Communication/"

# Category -> direction: the projection's table turned round, and a referral answer, which is
# advice to the CHW about one referral.
DIRECTIONS = {category: direction for direction, category in CATEGORIES.items()}
DIRECTIONS[REFERRAL_ANSWER] = "to_chw"
# Medium code -> channel: the first channel the projection writes with that code (reversed,
# so that the first one is written last and wins).
CHANNELS = {code: channel for channel, (code, _display) in reversed(MEDIA.items())}
# A Communication without a medium: how such a message usually travels.
USUAL_CHANNELS = {
    "to_chw": "console",
    "from_chw": "app",
    "from_patient": "sms",
    "to_patient": "sms",
}
USUAL_AUTHORS = {"from_patient": "patient"}


def message(
    communication: dict[str, Any], messages: set[str], *, now: datetime
) -> dict[str, Any] | None:
    """The chart message a Communication is, or None if it is not one a chart holds.
    ``messages`` are the IDs the chart holds (a reply links only to one of them); ``now``
    stands in for a Communication that says neither when it was sent nor updated."""
    direction = DIRECTIONS.get(_category(communication) or "")
    text = _text(communication)
    if direction is None or text is None:
        return None
    reply_to = reference_id(communication.get("inResponseTo"), COMMUNICATION)
    found: dict[str, Any] = {
        "direction": direction,
        "channel": _channel(communication) or USUAL_CHANNELS[direction],
        "author": _sender(communication) or USUAL_AUTHORS.get(direction, "clinician"),
        "text": text,
        "sent_at": _sent_at(communication) or now,
    }
    if reply_to in messages:
        found["in_reply_to"] = reply_to
    return found


def answered_referral(
    communication: dict[str, Any], referrals: dict[str, dict[str, Any]]
) -> str | None:
    """The chart's referral a referral answer is based on, if it still waits for one."""
    if _category(communication) != REFERRAL_ANSWER:
        return None
    referral = reference_id(communication.get("basedOn"), SERVICE_REQUEST)
    if referral is None or referrals.get(referral, {}).get("status") != "requested":
        return None
    return referral


def _category(communication: dict[str, Any]) -> str | None:
    return coded(communication.get("category"), MESSAGE_CATEGORY)


def _channel(communication: dict[str, Any]) -> str | None:
    for concept in communication.get("medium") or []:
        for coding in concept.get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(coding, dict) and coding.get("system") == V3_PARTICIPATION_MODE:
                return CHANNELS.get(str(coding.get("code")))
    return None


def _text(communication: dict[str, Any]) -> str | None:
    payload = communication.get("payload") or []
    first = payload[0] if isinstance(payload, list) and payload else None
    return text_of(first.get("contentString") if isinstance(first, dict) else None)


def _sender(communication: dict[str, Any]) -> str | None:
    sender = communication.get("sender")
    return text_of(sender.get("display") if isinstance(sender, dict) else None)


def _sent_at(communication: dict[str, Any]) -> datetime | None:
    """When it was sent: ``sent`` if it is an instant with a zone, else ``meta.lastUpdated``."""
    return instant(communication.get("sent")) or last_updated(communication)
