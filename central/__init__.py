"""The central FHIR R4 server and clinician console (built in a later issue)."""
