"""Errors central raises. Each one that reaches a client becomes an OperationOutcome with its
HTTP status, through the one exception handler in ``central.app`` (the token endpoint answers
in OAuth's own shape instead, as RFC 6749 requires).

    CentralError                     base: ``status``, ``issue`` (OperationOutcome issue code)
    ├── BadSetting                   an environment variable has a value central cannot use
    ├── Refused                      an operator's command cannot be done (CLI exit 1)
    ├── BadRequest              400  the request is wrong; nothing was written
    │   ├── InvalidResource     400  the resource does not validate as FHIR R4 (or a binding)
    │   ├── InvalidSearch       400  an unknown search parameter or a value it cannot take
    │   └── BadReference        400  a reference that points at nothing (in a bundle: at
    │                                no entry and no stored resource)
    ├── TokenRefused            400/401  /auth/token cannot issue a token (OAuth error code)
    ├── NotAuthenticated        401  no bearer token, or one that is expired or not ours
    ├── Forbidden               403  the client may not do this (scope, or another region)
    ├── NotFound                404  no such resource, type or version
    ├── NotAllowed              405  this interaction is not supported on this path
    ├── Conflict                409  a concurrent write got there first; read and retry
    ├── Gone                    410  the resource was deleted
    ├── PreconditionFailed      412  If-Match names another version; or a conditional
    │                                update matches more than one resource
    ├── TooLarge                413  the body or the bundle is larger than central accepts
    ├── UnsupportedMediaType    415  the body is not FHIR JSON
    └── Busy                    503  the database is unavailable or overloaded; try again

Messages are written for the person reading them and never contain patient data (no names,
identifiers' values or readings): they name the resource type, the element and the rule.
"""

from __future__ import annotations


class CentralError(Exception):
    """Base of every error central raises."""

    status = 500
    issue = "exception"


class BadSetting(CentralError):
    issue = "invalid"


class Refused(CentralError):
    status = 400
    issue = "processing"


class BadRequest(CentralError):
    status = 400
    issue = "invalid"


class InvalidResource(BadRequest):
    issue = "structure"


class InvalidSearch(BadRequest):
    issue = "not-supported"


class BadReference(BadRequest):
    issue = "not-found"


class TokenRefused(CentralError):
    """An OAuth error at /auth/token: ``oauth_error`` is RFC 6749's code."""

    status = 400
    issue = "login"

    def __init__(self, oauth_error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.oauth_error = oauth_error
        self.status = status


class NotAuthenticated(CentralError):
    status = 401
    issue = "login"


class Forbidden(CentralError):
    status = 403
    issue = "forbidden"


class NotFound(CentralError):
    status = 404
    issue = "not-found"


class NotAllowed(CentralError):
    status = 405
    issue = "not-supported"


class Conflict(CentralError):
    status = 409
    issue = "conflict"


class Gone(CentralError):
    status = 410
    issue = "deleted"


class PreconditionFailed(CentralError):
    status = 412
    issue = "conflict"


class TooLarge(CentralError):
    status = 413
    issue = "too-costly"


class UnsupportedMediaType(CentralError):
    status = 415
    issue = "not-supported"


class Busy(CentralError):
    status = 503
    issue = "transient"
