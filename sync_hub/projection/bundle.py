"""Projected resources as one FHIR transaction that central can apply any number of times."""

from __future__ import annotations

from collections.abc import Iterable

from sync_hub.projection.fhir import Resource


def transaction_bundle(resources: Iterable[Resource]) -> Resource:
    """A ``transaction`` Bundle that PUTs every resource at ``Type/id``, Patients first.

    Every entry names its resource by its fixed ID, so applying the bundle again changes
    nothing. Entries carry no fullUrl (docs/fhir.md, "The projection", says why). Raises
    ValueError if two resources share a type and ID: a transaction cannot write one twice.
    """
    ordered = sorted(resources, key=lambda r: r["resourceType"] != "Patient")
    urls = [f"{r['resourceType']}/{r['id']}" for r in ordered]
    if len(set(urls)) != len(urls):
        raise ValueError("two resources in the bundle have the same type and ID")
    bundle: Resource = {"resourceType": "Bundle", "type": "transaction"}
    if ordered:
        bundle["entry"] = [
            {"resource": r, "request": {"method": "PUT", "url": url}}
            for r, url in zip(ordered, urls, strict=True)
        ]
    return bundle
