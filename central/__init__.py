"""The central FHIR R4 server: FHIR API and store, hub authentication, the audit trail
(README.md, "The central FHIR server"; docs/fhir.md). The clinician console comes later."""

from central.app import create_app
from central.settings import Settings

__all__ = ["Settings", "create_app"]
