"""Parsing of the query string and body of a sync v3 request (SPEC §3.2–3.4).

Pure functions over bytes and plain values. The order of checks is the one of SPEC
§3.1: query parameters (``timeout``, ``set_presence``, ``since``), then the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from synapse_syncv3.core.params import ALIASES, canonical_name
from synapse_syncv3.core.tokens import MalformedTokenError, SinceToken, TokenCodec
from synapse_syncv3.errors import NOT_JSON, SyncV3Error, bad_json, invalid_param

JsonDict = dict[str, Any]

PRESENCE_STATES = ("online", "unavailable", "offline")
_DIGITS_RE = re.compile(r"^[0-9]+$")


class ParamsParser(Protocol):
    def parse_params(self, obj: JsonDict) -> Any: ...


@attrs.frozen
class QueryParams:
    since: SinceToken | None
    #: Milliseconds, already clamped to ``max_timeout_ms``.
    timeout_ms: int
    set_presence: str


@attrs.frozen
class RequestBody:
    #: Stream keys present in the body, as spelled, -> validated stored params, or
    #: None for ``null``.
    streams: Mapping[str, JsonDict | None]
    #: Canonical stream name -> per-request fields (``p``, ``full_state``).
    per_request: Mapping[str, JsonDict]

    @property
    def is_page_request(self) -> bool:
        """Some stream object carries ``p`` (SPEC §6.1 case 2)."""
        return any("p" in fields for fields in self.per_request.values())

    def non_null_streams(self) -> set[str]:
        """Canonical names of streams present with an object (negotiation echo)."""
        return {canonical_name(key) for key, value in self.streams.items() if value is not None}


def _first(args: Mapping[bytes, Sequence[bytes]], name: bytes) -> str | None:
    values = args.get(name)
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_param(f"{name.decode()}: not valid UTF-8") from None


def parse_query(
    args: Mapping[bytes, Sequence[bytes]], codec: TokenCodec, max_timeout_ms: int
) -> QueryParams:
    timeout_raw = _first(args, b"timeout")
    timeout = 0
    if timeout_raw is not None:
        if not _DIGITS_RE.match(timeout_raw):
            raise invalid_param("timeout: must be a non-negative integer of milliseconds")
        # Very long digit strings are clamped without converting them.
        timeout = max_timeout_ms if len(timeout_raw) > 12 else int(timeout_raw)
    timeout = min(timeout, max_timeout_ms)

    set_presence = _first(args, b"set_presence")
    if set_presence is None:
        set_presence = "online"
    elif set_presence not in PRESENCE_STATES:
        raise invalid_param(f"set_presence: must be one of {', '.join(PRESENCE_STATES)}")

    since_raw = _first(args, b"since")
    since = None
    if since_raw is not None:
        try:
            since = codec.decode(since_raw)
        except MalformedTokenError:
            raise invalid_param("since: not a sync v3 token") from None
    return QueryParams(since=since, timeout_ms=timeout, set_presence=set_presence)


def _reject_constant(value: str) -> None:
    raise ValueError(f"{value} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_body(raw: bytes, streams: Mapping[str, ParamsParser]) -> RequestBody:
    """Validate the body; ``streams`` maps canonical stream names to their parsers."""
    if not raw.strip():
        raise SyncV3Error(400, NOT_JSON, "The body must be a JSON object; it is empty")
    try:
        value = _DECODER.decode(raw.decode("utf-8"))
    except RecursionError:
        raise bad_json("The body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise SyncV3Error(400, NOT_JSON, "The body is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad_json("The body must be a JSON object")

    for alias, name in ALIASES.items():
        if alias in value and name in value:
            raise bad_json(f"{name} and {alias} are the same stream; send only one of them")

    parsed: dict[str, JsonDict | None] = {}
    per_request: dict[str, JsonDict] = {}
    for key, obj in value.items():
        name = canonical_name(key)
        parser = streams.get(name)
        if parser is None:
            continue  # not a stream key: ignored, never stored (SPEC §3.3)
        if obj is None:
            parsed[key] = None
        elif isinstance(obj, dict):
            result = parser.parse_params(obj)
            parsed[key] = result.stored
            if result.per_request:
                per_request[name] = result.per_request
        else:
            raise bad_json(f"{key}: must be an object or null")
    return RequestBody(streams=parsed, per_request=per_request)
