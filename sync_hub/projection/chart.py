"""A chart as FHIR R4 resources: the hub's projection (docs/fhir.md, "The projection")."""

from __future__ import annotations

import re
import uuid

from care_record import ChartView
from sync_hub.projection.encounters import encounter_resources
from sync_hub.projection.fhir import REGION, Region, Resource, Targets, known_zone, records
from sync_hub.projection.messages import communication
from sync_hub.projection.patient import (
    allergies,
    consents,
    medications,
    patient,
    pregnancy_status,
)
from sync_hub.projection.referrals import referral_resources
from sync_hub.projection.tasks import CENTRAL_KINDS, task_resources

# FHIR's code type: no leading or trailing whitespace, no runs of it.
CODE = re.compile(r"^[^\s]+( [^\s]+)*$")


def project_chart(view: ChartView, *, region: Region) -> list[Resource]:
    """The chart as plain-JSON FHIR R4 resources, each with its stable ID and the region tag.

    The same chart always projects to the same list. A household projects to nothing (for
    now). Raises ValueError for a region whose code is not a FHIR code or whose time zone is
    unknown, a chart whose ID is not a UUID, or a damaged chart (a value its schema does not
    allow, a record without a field care_record always writes); messages name the record,
    never its values.
    """
    if view.kind == "household":
        return []
    _check(view, region)
    try:
        found = _project(view, region, Targets.of(view))
    except KeyError as missing:
        # A field every record of its kind has (written by care_record) is gone: a damaged chart.
        raise ValueError(f"a record of chart {view.id} has no {missing.args[0]!r}") from missing
    return [_tagged(r, region.code) for r in found]


# Only a CHW's own notes start on a tablet. Advice, referral answers, patient replies and
# reminder outcomes start at central and reach the chart through the hub's fetch; pushing them
# back would overwrite central's richer resource (its category, basedOn and sender).
PUSHED_DIRECTIONS = frozenset({"from_chw"})


def _project(view: ChartView, region: Region, targets: Targets) -> list[Resource]:
    found = [
        patient(view, region),
        *pregnancy_status(view, targets),
        *consents(view, targets),
        *allergies(view, targets),
        *medications(view, targets),
    ]
    for encounter in records(view, "encounters"):
        found += encounter_resources(encounter, targets)
    for referral in records(view, "referrals"):
        found += referral_resources(referral, targets)
    for task in records(view, "tasks"):
        if task["kind"] not in CENTRAL_KINDS:
            found += task_resources(task, targets)
    found += [
        communication(message, targets)
        for message in records(view, "messages")
        if message.get("direction") in PUSHED_DIRECTIONS
    ]
    return found


def _check(view: ChartView, region: Region) -> None:
    if view.kind != "patient":
        raise ValueError(f"cannot project a document of kind {view.kind!r}")
    if not CODE.match(region.code):
        raise ValueError("the region must be a FHIR code: not empty, no surrounding spaces")
    if not known_zone(region.timezone):
        raise ValueError("the region's time zone is not a known IANA time zone")
    try:
        canonical = str(uuid.UUID(view.id)) == view.id
    except ValueError:
        canonical = False
    if not canonical:
        raise ValueError("the chart's ID is not a UUID in canonical form")


def _tagged(found: Resource, region: str) -> Resource:
    head = {"resourceType": found["resourceType"], "id": found["id"]}
    meta = {"tag": [{"system": REGION, "code": region}]}
    return head | {"meta": meta} | found
