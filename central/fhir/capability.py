"""The CapabilityStatement at ``/fhir/metadata``: what central supports, and nothing more.

It is built from the same tables the server runs on (accepted types, search parameters), so it
cannot claim a type or a parameter that the code does not handle.
"""

from __future__ import annotations

from typing import Any

from central.fhir.bindings import ACCEPTED_TYPES
from central.fhir.parameters import PARAMETERS
from central.settings import Settings

SOFTWARE_VERSION = "0.1.0"

_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
_SEARCH_RESULT_PARAMETERS = (
    ("_count", "number", "Results per page (at most CENTRAL_MAX_PAGE_SIZE)."),
    ("_sort", "string", "_lastUpdated, _id, or a date parameter; '-' for descending."),
    (
        "_include",
        "special",
        "Add the resources a reference parameter points at (e.g. Encounter:patient).",
    ),
    ("_total", "string", "none (default), estimate or accurate."),
)


def capability_statement(settings: Settings, *, published: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "rural care toolkit",
        "kind": "instance",
        "software": {"name": "central", "version": SOFTWARE_VERSION},
        "implementation": {"description": "Central FHIR store", "url": settings.fhir_base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": _security(settings),
                "resource": [_resource(kind) for kind in sorted(ACCEPTED_TYPES)],
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
            }
        ],
    }


def _resource(kind: str) -> dict[str, Any]:
    params = PARAMETERS.get(kind, {})
    includes = [f"{kind}:{name}" for name, p in sorted(params.items()) if p.type == "reference"]
    return {
        "type": kind,
        "interaction": [{"code": code} for code in _INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalUpdate": True,
        "conditionalDelete": "not-supported",
        "searchInclude": includes,
        "searchParam": [
            {"name": "_id", "type": "token"},
            {"name": "_lastUpdated", "type": "date"},
            *[
                {"name": name, "type": p.type}
                for name, p in sorted(params.items())
                if name not in ("_id", "_lastUpdated")
            ],
            *[
                {"name": name, "type": kind_, "documentation": text}
                for name, kind_, text in _SEARCH_RESULT_PARAMETERS
                # A type with no reference parameter has nothing _include could name.
                if name != "_include" or includes
            ],
        ],
    }


def _security(settings: Settings) -> dict[str, Any]:
    return {
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": "SMART Backend Services: a client signs a JWT assertion with its "
        f"registered key and exchanges it at {settings.token_url} for a bearer token. A "
        "client sees and writes only its own region's patients.",
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": settings.token_url}],
            }
        ],
    }
