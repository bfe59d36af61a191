"""Reading what central sends down: resources of a searchset page, references, codes, text
and instants, each checked for its JSON shape (central validated the resources, but the hub
trusts nothing it did not write)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def resources(page: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    """The resources of that type in a searchset page, in its order."""
    entries = page.get("entry") or []
    found = [e.get("resource") for e in entries if isinstance(e, dict)]
    return [r for r in found if isinstance(r, dict) and r.get("resourceType") == resource_type]


def reference_id(references: object, prefix: str) -> str | None:
    """The ID of the first ``Type/id`` reference of that type in a list of references."""
    if not isinstance(references, list):
        return None
    for found in references:
        reference = found.get("reference") if isinstance(found, dict) else None
        if isinstance(reference, str) and reference.startswith(prefix):
            return reference.removeprefix(prefix)
    return None


def coded(concepts: object, system: str) -> str | None:
    """The code of the first coding in that system in a list of CodeableConcepts."""
    for concept in concepts if isinstance(concepts, list) else []:
        for coding in concept.get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(coding, dict) and coding.get("system") == system:
                code = coding.get("code")
                return code if isinstance(code, str) else None
    return None


def text_of(value: object) -> str | None:
    """A string with something in it, else None."""
    return value if isinstance(value, str) and value.strip() else None


def last_updated(resource: dict[str, Any]) -> datetime | None:
    meta = resource.get("meta")
    return instant(meta.get("lastUpdated") if isinstance(meta, dict) else None)


def instant(value: object) -> datetime | None:
    """An ISO 8601 time with a zone, in UTC; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None
