"""Checking a resource before it is stored: FHIR R4 structure through ``fhir.resources``' R4B
models (see docs/fhir.md for why R4B stands for R4 here), then the required bindings.

Validation works on the JSON as sent and stores that JSON (with central's ``meta``), not the
model's re-serialisation: dumping a model costs twice what validating it does, and what a
client sent is what it should read back.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

from central.errors import InvalidResource
from central.fhir.bindings import ACCEPTED_TYPES, check_bindings

REGION_SYSTEM = "urn:rural-care:region"
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_MAX_PROBLEMS = 5
# Extension value types that R4B added; R4 has neither.
_R4B_ONLY_KEYS = frozenset({"valueCodeableReference", "valueRatioRange"})
_R4_OBSERVATION_SUBJECTS = ("Patient/", "Group/", "Device/", "Location/")


def require_accepted(resource_type: str) -> None:
    """Raise InvalidResource unless central stores resources of this type."""
    if resource_type not in ACCEPTED_TYPES:
        raise InvalidResource(
            f"central does not store {_printable(resource_type)} resources; see "
            "/fhir/metadata for the types it does"
        )


def validate(resource: object, *, expected_type: str | None = None) -> dict[str, Any]:
    """Check ``resource`` (parsed JSON) and return it. Raises InvalidResource saying which
    element is wrong and why, never with the value sent."""
    if not isinstance(resource, dict):
        raise InvalidResource("the body is not a FHIR resource (a JSON object)")
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        raise InvalidResource("the resource has no resourceType")
    if expected_type is not None and kind != expected_type:
        raise InvalidResource(f"the body is a {_printable(kind)} but the URL names {expected_type}")
    require_accepted(kind)
    rid = resource.get("id")
    if rid is not None and not (isinstance(rid, str) and ID_PATTERN.match(rid)):
        raise InvalidResource(f"{kind}.id: must be 1-64 letters, digits, '-' or '.'")
    _check_contained(kind, resource)
    try:
        _model(kind).model_validate(resource)
    except ValidationError as exc:
        raise InvalidResource(_describe(kind, exc)) from None
    except (KeyError, TypeError, ValueError):
        # fhir.resources raises these for shapes its models cannot even look up.
        raise InvalidResource(
            f"{kind}: the resource's structure cannot be read as FHIR R4"
        ) from None
    _check_r4_only(kind, resource)
    check_bindings(resource)
    return resource


def _check_contained(kind: str, resource: dict[str, Any]) -> None:
    """A contained resource must be of a type central accepts (each is validated by its own
    type's model, and R4B lacks some of R4's types)."""
    contained = resource.get("contained", [])
    if not isinstance(contained, list):
        return  # the model reports the wrong shape
    for item in contained:
        inner = item.get("resourceType") if isinstance(item, dict) else None
        if not isinstance(inner, str) or inner not in ACCEPTED_TYPES:
            raise InvalidResource(
                f"{kind}.contained: each contained resource must be one of the types central "
                "accepts (see /fhir/metadata)"
            )


def _check_r4_only(kind: str, resource: dict[str, Any]) -> None:
    """Refuse what R4B allows and R4 does not (docs/fhir.md, "R4B models standing in for R4")."""
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _R4B_ONLY_KEYS:
                    raise InvalidResource(f"{kind}: {key} is not FHIR R4 (it came with R4B)")
                if isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    if kind == "Observation":
        target = resource.get("subject", {}).get("reference", "")
        if (
            isinstance(target, str)
            and "/" in target
            and not target.startswith(_R4_OBSERVATION_SUBJECTS)
        ):
            raise InvalidResource(
                "Observation.subject: in FHIR R4 must refer to a Patient, Group, Device or Location"
            )


def region_tag(resource: dict[str, Any]) -> str | None:
    """The region the resource is tagged with, if any."""
    for tag in resource.get("meta", {}).get("tag", []):
        if isinstance(tag, dict) and tag.get("system") == REGION_SYSTEM:
            code = tag.get("code")
            return code if isinstance(code, str) else None
    return None


def with_region_tag(resource: dict[str, Any], region: str) -> None:
    """Tag the resource with its region (in place), replacing another region's tag."""
    meta = resource.setdefault("meta", {})
    tags = [t for t in meta.get("tag", []) if t.get("system") != REGION_SYSTEM]
    meta["tag"] = [*tags, {"system": REGION_SYSTEM, "code": region}]


@cache
def _model(kind: str) -> type[BaseModel]:
    model: type[BaseModel] = get_fhir_model_class(kind)
    return model


def _describe(kind: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:_MAX_PROBLEMS]:
        where = ".".join(str(p) for p in error["loc"] if p != "__root__") or kind
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{kind}.{where}: {message}")
    more = exc.error_count() - len(problems)
    if more > 0:
        problems.append(f"and {more} more")
    return "; ".join(problems)


def _printable(text: str) -> str:
    """A type name as sent, shortened and stripped of anything but letters."""
    return re.sub(r"[^A-Za-z]", "", text)[:40] or "unnamed"
