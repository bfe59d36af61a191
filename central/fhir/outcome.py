"""OperationOutcome: how every error leaves central (and how a batch entry says it failed)."""

from __future__ import annotations

from typing import Any

from central.errors import CentralError


def operation_outcome(exc: CentralError) -> dict[str, Any]:
    """The error as an OperationOutcome: severity, FHIR issue code, and the message."""
    return outcome("error", exc.issue, str(exc))


def outcome(severity: str, code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
