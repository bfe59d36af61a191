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
    └── Busy                     503  the database stayed locked; try again

Messages are written for the person reading them (a supervisor, or a CHW through the tablet);
they never contain patient data, so they may be shown, logged and sent back. The framework's
own refusals get codes in the same shape: ``bad_request`` (400, a JSON body that does not fit),
``not_found`` (404), ``method_not_allowed`` (405), ``too_large`` (413); anything unexpected is
``internal`` (500), with the transaction rolled back.
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
