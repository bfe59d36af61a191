"""Messages as Communication: advice, CHW notes, patient replies and reminder outcomes."""

from __future__ import annotations

from typing import Any

from sync_hub.projection.fhir import (
    MESSAGE_CATEGORY,
    V3_PARTICIPATION_MODE,
    Resource,
    Targets,
    code_for,
    concept,
    resource,
)

# docs/fhir.md, "Naming". Of the kinds central sends down, only a reminder outcome concerns a
# message to the patient, so that is what a chart's to_patient message is.
CATEGORIES = {
    "to_chw": "advice",
    "from_chw": "chw-note",
    "from_patient": "patient-reply",
    "to_patient": "reminder-outcome",
}
# v3 ParticipationMode as FHIR R4 ships it has no SMS code: an SMS is written text, a voice
# call or keypad answer is the telephone, console and app messages are written online.
MEDIA = {
    "sms": ("WRITTEN", "written"),
    "voice": ("PHONE", "telephone"),
    "console": ("ONLINEWRIT", "online written"),
    "app": ("ONLINEWRIT", "online written"),
}


def communication(record: dict[str, Any], targets: Targets) -> Resource:
    message_id = record["id"]
    direction = record.get("direction")
    category = code_for(CATEGORIES, direction, what="direction", record_id=message_id)
    medium = code_for(MEDIA, record.get("channel"), what="channel", record_id=message_id)
    reply_to = targets.message(record.get("in_reply_to"))
    return resource(
        "Communication",
        message_id,
        {
            "inResponseTo": [reply_to] if reply_to else None,
            "status": "completed",
            "category": [concept(MESSAGE_CATEGORY, category)],
            "medium": [concept(V3_PARTICIPATION_MODE, *medium)],
            "subject": targets.patient,
            "sent": record.get("sent_at"),
            "recipient": [targets.patient] if direction == "to_patient" else None,
            "sender": targets.patient if direction == "from_patient" else None,
            "payload": [{"contentString": record["text"]}] if record.get("text") else None,
        },
    )
