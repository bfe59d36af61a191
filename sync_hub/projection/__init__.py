"""The hub's projection of patient charts to FHIR R4 resources, and the transaction bundle
that pushes them to central (docs/fhir.md, "The projection").

Plain JSON only: the hub does not depend on fhir.resources at run time.
"""

from sync_hub.projection.bundle import transaction_bundle
from sync_hub.projection.chart import project_chart
from sync_hub.projection.fhir import Region, Resource

__all__ = ["Region", "Resource", "project_chart", "transaction_bundle"]
