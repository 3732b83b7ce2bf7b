"""Parsing of the query string and body of a sync v3 request (SPEC §3.2–3.4).

Pure functions over bytes and plain values. The order of checks is the one of SPEC
§3.1: query parameters (``timeout``, ``set_presence``, ``since``), then the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

import attrs

from synapse_syncv3.core.fields import storable_problem
from synapse_syncv3.core.params import ALIASES, canonical_name
from synapse_syncv3.core.tokens import MalformedTokenError, SinceToken, TokenCodec
from synapse_syncv3.errors import NOT_JSON, SyncV3Error, bad_json, invalid_param

JsonDict = dict[str, Any]

PRESENCE_STATES = ("online", "unavailable", "offline")
_DIGITS_RE = re.compile(r"[0-9]+")

#: The only query parameters sync v3 reads (SPEC §2, §3.2); all others are ignored,
#: whatever bytes they hold.
QUERY_PARAMETERS = frozenset({b"since", b"timeout", b"set_presence", b"access_token"})


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


def query_args(uri: bytes) -> dict[bytes, list[bytes]]:
    """The parameters of :data:`QUERY_PARAMETERS` in the query string of ``uri`` (the
    raw request target), values percent-decoded to bytes, in order. Never raises.

    ``urlsplit``/``parse_qs`` are not used: on bytes they decode the URI as ASCII, so
    a raw non-ASCII byte raises, and before Python 3.13 ``parse_qs`` also re-encodes
    every percent-decoded value as ASCII, so ``?x=%C3%A9`` raised too. Here nothing
    is decoded to text; whether ``since``, ``timeout`` and ``set_presence`` are UTF-8
    is :func:`parse_query`'s business (400 naming the parameter). Like ``parse_qs``
    with ``keep_blank_values``, fields are split on ``&``, ``+`` is a space, and a
    field without ``=`` has the empty value.
    """
    query = uri.partition(b"?")[2].partition(b"#")[0]
    args: dict[bytes, list[bytes]] = {}
    for field in query.split(b"&"):
        if not field:
            continue
        raw_name, _, raw_value = field.partition(b"=")
        name = unquote_to_bytes(raw_name.replace(b"+", b" "))
        if name in QUERY_PARAMETERS:
            args.setdefault(name, []).append(unquote_to_bytes(raw_value.replace(b"+", b" ")))
    return args


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
        if not _DIGITS_RE.fullmatch(timeout_raw):
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


#: Integers with more digits than this are read as ±10**100. No field takes such a
#: value (limits are clamped far below it), and converting thousands of digits costs
#: quadratic time (Python refuses more than 4300 by default, with a ValueError).
MAX_INT_DIGITS = 100
_HUGE_INT = 10**MAX_INT_DIGITS


def _parse_int(text: str) -> int:
    negative = text.startswith("-")
    if len(text) - negative <= MAX_INT_DIGITS:
        return int(text)
    return -_HUGE_INT if negative else _HUGE_INT


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_int)


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
            # Every stream checks its own fields; this is the net under them, so that
            # no stream can make the server store text the database refuses.
            problem = storable_problem(result.stored)
            if problem is not None:
                raise invalid_param(f"{name}: a string {problem}")
            parsed[key] = result.stored
            if result.per_request:
                per_request[name] = result.per_request
        else:
            raise bad_json(f"{key}: must be an object or null")
    return RequestBody(streams=parsed, per_request=per_request)
