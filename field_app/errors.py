"""Errors the tablet app raises. Every message is written for the CHW holding the tablet.

    FieldAppError
    ├── StoreError
    │   ├── StoreMissing       no store in this folder yet (run init)
    │   ├── StoreExists        init on a folder that already has a store
    │   ├── StoreCorrupt       the database or key file is damaged
    │   └── StoreErased        the tablet was wiped; its data cannot be recovered
    ├── AccessError
    │   ├── WrongPin           the PIN did not open the store (attempts left in the message)
    │   ├── TooSoon            back-off after wrong PINs: wait before trying again
    │   ├── LockedOut          too many wrong PINs; another user or a supervisor must reset
    │   ├── UnknownUser        no such user on this tablet
    │   └── Locked             the session is locked (idle, or locked by hand)
    ├── SyncError
    │   ├── NotEnrolled        this tablet has not been enrolled with a hub yet
    │   ├── HubUnreachable     no answer after every retry; the work stays safe here
    │   └── SyncRefused        the hub (or peer) refused, and said why
    ├── FormError
    │   ├── ContentError       a form or rule file is malformed (names the file and the place)
    │   ├── UnknownForm        no form by that name in the content folder
    │   ├── BadAnswer          an answer names an unknown or disabled question, or has the
    │   │                      wrong shape for it (a bug in the screen or the answers file)
    │   └── FormIncomplete     required answers are missing or answers are invalid
    ├── BadInput              a value typed at the CLI is not acceptable
    └── UnknownPatient        no patient with that ID on this tablet

Messages never contain patient data: they may be shown on screen, logged, or sent in a report.
"""

from __future__ import annotations


class FieldAppError(Exception):
    """Base of every error the tablet app raises."""


class StoreError(FieldAppError):
    pass


class StoreMissing(StoreError):
    pass


class StoreExists(StoreError):
    pass


class StoreCorrupt(StoreError):
    pass


class StoreErased(StoreError):
    pass


class AccessError(FieldAppError):
    pass


class WrongPin(AccessError):
    pass


class TooSoon(AccessError):
    def __init__(self, message: str, wait_seconds: int) -> None:
        super().__init__(message)
        self.wait_seconds = wait_seconds


class LockedOut(AccessError):
    pass


class UnknownUser(AccessError):
    pass


class Locked(AccessError):
    pass


class BadInput(FieldAppError):
    pass


class UnknownPatient(FieldAppError):
    pass


class SyncError(FieldAppError):
    pass


class NotEnrolled(SyncError):
    pass


class HubUnreachable(SyncError):
    pass


class SyncRefused(SyncError):
    """``code`` is the hub's error code; ``command`` what it asks of the tablet ("erase")."""

    def __init__(
        self, message: str, code: str = "", *, command: str | None = None, server_time: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.command = command
        self.server_time = server_time


class FormError(FieldAppError):
    pass


class ContentError(FormError):
    pass


class UnknownForm(FormError):
    pass


class BadAnswer(FormError):
    pass


class FormIncomplete(FormError):
    """``problems`` maps each question's linkId to what is wrong with it (never its value)."""

    def __init__(self, message: str, problems: dict[str, str]) -> None:
        super().__init__(message)
        self.problems = problems
