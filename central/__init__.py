"""The central FHIR R4 server: FHIR API and store, hub authentication, the audit trail
(README.md, "The central FHIR server"; docs/fhir.md). The clinician console comes later.

The server is ``central.app.create_app(central.settings.Settings)``. Nothing is imported here,
so that the operator's commands (``python -m central audit verify``, ``token``) start without
loading the web stack and the FHIR models.
"""
