"""Errors of the sync v3 API, independent of Synapse.

The servlet turns a :class:`SyncV3Error` into Synapse's ``SynapseError`` so that the
answer is the usual Matrix error JSON (SPEC §3.6).
"""

from __future__ import annotations

BAD_JSON = "M_BAD_JSON"
NOT_JSON = "M_NOT_JSON"
INVALID_PARAM = "M_INVALID_PARAM"
MISSING_TOKEN = "M_MISSING_TOKEN"
FORBIDDEN = "M_FORBIDDEN"
GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
UNKNOWN_SYNC_SESSION = "M_UNKNOWN_SYNC_SESSION"
UNRECOGNIZED = "M_UNRECOGNIZED"
UNKNOWN = "M_UNKNOWN"

#: The one body used for every unknown-session cause (SPEC §3.6), so that a token of
#: another user's session reveals nothing.
UNKNOWN_SESSION_MESSAGE = "Session unknown or expired"


class SyncV3Error(Exception):
    """A request the server refuses, with its HTTP status and Matrix errcode."""

    def __init__(self, code: int, errcode: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.errcode = errcode
        self.msg = msg

    def __repr__(self) -> str:
        return f"SyncV3Error({self.code}, {self.errcode!r}, {self.msg!r})"


def bad_json(msg: str) -> SyncV3Error:
    return SyncV3Error(400, BAD_JSON, msg)


def invalid_param(msg: str) -> SyncV3Error:
    return SyncV3Error(400, INVALID_PARAM, msg)


def unknown_session() -> SyncV3Error:
    return SyncV3Error(400, UNKNOWN_SYNC_SESSION, UNKNOWN_SESSION_MESSAGE)


class StorageTooNewError(Exception):
    """The module's tables were written by a newer version of the module (SPEC §10.2)."""
