"""Errors the hub raises. Each one that reaches a tablet becomes the one JSON error shape
(``care_record.sync.ErrorBody``: error, detail, server_time, command) with its HTTP status.

    HubError                          base: ``status``, ``code``, ``command``
    ├── BadSetting                    an environment variable has a value the hub cannot use
    ├── Refused                       an operator's command cannot be done (CLI exit 1)
    │   ├── UnknownChw                no health worker by that name
    │   └── UnknownDevice             no device with that ID (401 on a request it signed)
    ├── BadRequest               400  the request itself is wrong; nothing was written
    │   ├── MalformedRequest     400  the body is not a sync frame of this protocol
    │   ├── BadPublicKey         400  enrolment with a key that is not a raw Ed25519 key
    │   └── WrongMediaType       415  the body is not application/x-rcs1
    ├── NotAuthenticated         401  who sent this cannot be established
    │   ├── Unsigned             401  a signing header is missing or unreadable
    │   ├── BadSignature         401  the signature does not match the key and the request
    │   └── ClockSkew            401  the request's time is too far from the hub's
    ├── Replayed                 409  this nonce was already used: a repeated request
    ├── DeviceRefused            403  the device is known but may not sync
    │   ├── DeviceRevoked        403  revoked: the tablet must crypto-erase itself (command "erase")
    │   └── DeviceRetired        403  retired: the tablet must stop syncing (command "retired")
    ├── EnrolmentRefused         403  the enrolment code cannot be used
    │   ├── InvalidCode          403  no such code
    │   ├── CodeUsed             403  the code was used already (codes are single use)
    │   └── CodeExpired          403  the code is too old
    ├── Busy                     503  the database stayed locked; try again
    └── CentralError                  talking to central (the FHIR server) went wrong
        ├── CentralNotConfigured      no SYNC_HUB_CENTRAL_URL, or the hub's key file is missing
        ├── CentralUnavailable        unreachable, timed out, 429 or 5xx: try later (``retry_after``)
        │   └── CentralMisbehaved     an answer that does not follow the FHIR contract (wrong URL?)
        ├── CredentialsRefused        central refused the hub's client assertion or its token
        ├── LeaseLost                 another hub process took over talking to central
        └── BundleRejected            a 4xx with an OperationOutcome: nothing of the bundle was
            │                         written (``http_status``, ``diagnostics``)
            └── OutOfRegion           403: a resource is outside the regions of the hub's client

Messages are written for the person reading them (a supervisor, or a CHW through the tablet);
they never contain patient data, so they may be shown, logged and sent back. The framework's
own refusals get codes in the same shape: ``bad_request`` (400, a JSON body that does not fit),
``not_found`` (404), ``method_not_allowed`` (405), ``too_large`` (413); anything unexpected is
``internal`` (500), with the transaction rolled back.

The ``Central*`` errors never reach a tablet: the pusher retries, quarantines or logs them, and
the CLI prints them. Central's own words (an OperationOutcome's diagnostics, an OAuth
``error_description``) name fields and rules, not values; they are kept short all the same.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every error the hub raises."""

    status = 500
    code = "internal"
    command: str | None = None


class BadSetting(HubError):
    code = "bad_setting"


class Refused(HubError):
    status = 400
    code = "refused"


class UnknownChw(Refused):
    status = 404
    code = "unknown_chw"


class UnknownDevice(Refused):
    status = 401
    code = "unknown_device"


class BadRequest(HubError):
    status = 400
    code = "bad_request"


class MalformedRequest(BadRequest):
    code = "malformed_frame"


class BadPublicKey(BadRequest):
    code = "bad_public_key"


class WrongMediaType(BadRequest):
    status = 415
    code = "unsupported_media_type"


class NotAuthenticated(HubError):
    status = 401
    code = "not_authenticated"


class Unsigned(NotAuthenticated):
    code = "unsigned"


class BadSignature(NotAuthenticated):
    code = "bad_signature"


class ClockSkew(NotAuthenticated):
    code = "clock_skew"


class Replayed(HubError):
    status = 409
    code = "replayed"


class DeviceRefused(HubError):
    status = 403
    code = "refused"


class DeviceRevoked(DeviceRefused):
    code = "revoked"
    command = "erase"


class DeviceRetired(DeviceRefused):
    code = "retired"
    command = "retired"


class EnrolmentRefused(HubError):
    status = 403
    code = "enrolment_refused"


class InvalidCode(EnrolmentRefused):
    code = "invalid_code"


class CodeUsed(EnrolmentRefused):
    code = "code_used"


class CodeExpired(EnrolmentRefused):
    code = "code_expired"


class Busy(HubError):
    status = 503
    code = "busy"


class CentralError(HubError):
    status = 502
    code = "central"


class CentralNotConfigured(CentralError):
    code = "central_not_configured"


class CentralUnavailable(CentralError):
    """Central could not take the request now; ``retry_after`` is its Retry-After, if any."""

    code = "central_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CentralMisbehaved(CentralUnavailable):
    code = "central_misbehaved"


class CredentialsRefused(CentralError):
    code = "central_credentials_refused"


class BundleRejected(CentralError):
    """Central refused a bundle as a whole; ``diagnostics`` is its OperationOutcome, shortened."""

    code = "bundle_rejected"

    def __init__(self, message: str, *, http_status: int, diagnostics: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.diagnostics = diagnostics


class OutOfRegion(BundleRejected):
    code = "out_of_region"


class LeaseLost(CentralError):
    """Another hub process took over talking to central (this one stalled past its lease)."""

    code = "lease_lost"
