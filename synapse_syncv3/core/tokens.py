"""The since token (SPEC §4.4).

Wire form::

    V3_<session id>.<params version>.<base64url("t=18;d=55")>[.<state version>]

* The session id is 16 characters of ``[A-Za-z0-9_-]`` (96 random bits).
* The params version is a positive decimal integer without leading zeros.
* The third part is the unpadded base64url encoding of ``code=value`` pairs joined by
  ``;``, one per requested stream, in the fixed stream order. Each stream owns the
  syntax of its value; the codec only checks the shared alphabet.
* The optional last part names the version of the session's per-stream state
  (:mod:`synapse_syncv3.core.state`) the token was issued with: a positive decimal
  integer, absent when the session has no stored state (version 0). Tokens issued
  before stream state existed therefore keep their form and stay valid.

Every character is in ``A-Z a-z 0-9 - . _``, so the token goes into a query string
unescaped. Decoding is strict: a token decodes only if encoding the result gives back
the same string, which makes the encoding canonical (property 4 and 5 of §4.4).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable, Mapping

import attrs

PREFIX = "V3_"

_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16}$")
_VERSION_RE = re.compile(r"^[1-9][0-9]{0,17}$")
_B64_RE = re.compile(r"^[A-Za-z0-9_-]*$")
# What a position value may contain: Synapse's own token alphabet plus a few
# separators a stream may use to combine several values.
POSITION_VALUE_RE = re.compile(r"^[A-Za-z0-9._~/,:+-]{1,400}$")


class MalformedTokenError(ValueError):
    """The string is not a well-formed since token (400 M_INVALID_PARAM)."""


def new_session_id() -> str:
    """A fresh, unguessable session id (96 random bits)."""
    return secrets.token_urlsafe(12)


def _copy_positions(positions: Mapping[str, str]) -> dict[str, str]:
    return dict(positions)


@attrs.frozen
class SinceToken:
    session_id: str
    version: int
    #: stream name -> the stream's position, as the stream encoded it.
    positions: Mapping[str, str] = attrs.field(factory=dict, converter=_copy_positions)
    #: Version of the session's stream state this token was issued with (0: none).
    state: int = 0

    def with_positions(self, positions: Mapping[str, str]) -> SinceToken:
        return attrs.evolve(self, positions=positions)


class TokenCodec:
    """Encodes and decodes since tokens for a fixed set of streams.

    ``stream_codes`` maps each stream name to its one-letter code, in the order in
    which positions appear in the token; ``position_validators`` optionally maps a
    stream name to a check of its position syntax.
    """

    def __init__(
        self,
        stream_codes: Mapping[str, str],
        position_validators: Mapping[str, Callable[[str], bool]] | None = None,
    ) -> None:
        self._codes = dict(stream_codes)
        self._validators = dict(position_validators or {})
        self._order = list(self._codes)
        self._names = {code: name for name, code in self._codes.items()}
        if len(self._names) != len(self._codes):
            raise ValueError("stream codes must be unique")

    def encode(self, token: SinceToken) -> str:
        if not _SESSION_ID_RE.fullmatch(token.session_id):
            raise ValueError(f"bad session id {token.session_id!r}")
        if token.version < 1:
            raise ValueError("params versions start at 1")
        if token.state < 0:
            raise ValueError("state versions are not negative")
        parts = []
        for name in self._order:
            value = token.positions.get(name)
            if value is None:
                continue
            if not POSITION_VALUE_RE.fullmatch(value):
                raise ValueError(f"bad position {value!r} for stream {name}")
            parts.append(f"{self._codes[name]}={value}")
        unknown = set(token.positions) - set(self._codes)
        if unknown:
            raise ValueError(f"unknown streams {sorted(unknown)}")
        payload = base64.urlsafe_b64encode(";".join(parts).encode("ascii")).decode("ascii")
        text = f"{PREFIX}{token.session_id}.{token.version}.{payload.rstrip('=')}"
        return f"{text}.{token.state}" if token.state else text

    def decode(self, value: str) -> SinceToken:
        token = self._decode(value)
        # Canonical form only: anything that does not survive a round trip is malformed.
        if self.encode(token) != value:
            raise MalformedTokenError("not a canonical token")
        return token

    def _decode(self, value: str) -> SinceToken:
        if not value.startswith(PREFIX):
            raise MalformedTokenError("does not start with V3_")
        fields = value[len(PREFIX) :].split(".")
        if len(fields) not in (3, 4):
            raise MalformedTokenError("wrong number of fields")
        session_id, version, payload = fields[:3]
        state = fields[3] if len(fields) == 4 else None
        if state is not None and not _VERSION_RE.fullmatch(state):
            raise MalformedTokenError("bad state version")
        if not _SESSION_ID_RE.fullmatch(session_id):
            raise MalformedTokenError("bad session id")
        if not _VERSION_RE.fullmatch(version):
            raise MalformedTokenError("bad params version")
        if not _B64_RE.fullmatch(payload) or len(payload) % 4 == 1:
            raise MalformedTokenError("bad positions")
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise MalformedTokenError("bad positions") from None

        positions: dict[str, str] = {}
        if raw:
            for item in raw.split(";"):
                code, sep, position = item.partition("=")
                name = self._names.get(code)
                if not sep or name is None or name in positions:
                    raise MalformedTokenError("bad positions")
                if not POSITION_VALUE_RE.fullmatch(position):
                    raise MalformedTokenError("bad position value")
                validator = self._validators.get(name)
                if validator is not None and not validator(position):
                    raise MalformedTokenError(f"bad {name} position")
                positions[name] = position
        return SinceToken(session_id, int(version), positions, int(state or 0))
