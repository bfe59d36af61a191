"""Who is asking: the client behind a bearer token, its region and its scopes.

Scopes follow SMART on FHIR: ``system/<Type or *>.<read|write>`` (v1), and the v2 spellings
``system/<Type or *>.<cruds letters>`` are understood too.
"""

from __future__ import annotations

from dataclasses import dataclass

from central.errors import Forbidden

ALL_REGIONS = "*"


@dataclass(frozen=True)
class Caller:
    client_id: str
    region: str  # ALL_REGIONS for a client that sees every region (the console)
    scopes: frozenset[str]

    @property
    def sees_all_regions(self) -> bool:
        return self.region == ALL_REGIONS

    def may(self, action: str, resource_type: str) -> bool:
        """``action``: ``read`` (read, vread, search, history) or ``write`` (create, update,
        delete)."""
        letters = "rs" if action == "read" else "cud"
        for scope in self.scopes:
            context, _, rest = scope.partition("/")
            kind, _, permission = rest.partition(".")
            if context != "system" or kind not in ("*", resource_type):
                continue
            if permission in (action, "*"):
                return True
            if permission and set(permission) <= set("cruds") and set(letters) & set(permission):
                return True
        return False

    def require(self, action: str, resource_type: str) -> None:
        """Raise Forbidden unless the caller's scopes allow ``action`` on ``resource_type``."""
        if not self.may(action, resource_type):
            raise Forbidden(f"this client's scopes do not allow {action} of {resource_type}")

    def require_region(self, region: str | None) -> None:
        """Raise Forbidden unless the caller may see or write data of ``region``."""
        if self.sees_all_regions:
            return
        if region != self.region:
            raise Forbidden("this resource belongs to another region than this client's")
