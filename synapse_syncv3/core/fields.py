"""Validation of stream fields (SPEC §3.4), shared by the stream definitions.

Every helper takes the stream name and the field name so that errors read
``"to_device.limit: must be an integer"``. Wrong JSON types are 400 ``M_BAD_JSON``;
values of the right type that are out of range are 400 ``M_INVALID_PARAM``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from synapse_syncv3.errors import bad_json, invalid_param

JsonDict = dict[str, Any]

#: Fixed bounds that are not configurable (SPEC §11.2).
MAX_ROOM_IDS = 100
MAX_STATE_EVENTS = 100
MAX_ROOM_ID_BYTES = 255
#: Event types and state keys, as in the Matrix specification's size limits.
MAX_STATE_EVENT_FIELD_BYTES = 255
#: Longest string the client can make the server store (every stored string is a
#: room ID, an event type, a state key or an enum value).
MAX_STORED_STRING_BYTES = 255
#: Page cursors (``p.since`` / ``p.next``) are never stored, but are decoded: the
#: module's own are well below this.
MAX_CURSOR_LENGTH = 256

# Room IDs: SPEC §3.4 makes only two demands (a leading "!" and at most 255 bytes, the
# cap Synapse applies to room IDs), and a client may well name a room this server has
# never seen. Beyond them, only what could not be stored or sent to the database is
# refused: lone surrogates, NUL and the other control characters.
# C0 controls (NUL included), DEL and C1 controls.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def utf8_length(value: str) -> int | None:
    """The length of ``value`` in UTF-8, or None if it holds a lone surrogate (which
    JSON's ``\\ud800`` escapes can produce) and so cannot be encoded at all."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def string_problem(value: str, max_bytes: int) -> str | None:
    """Why ``value`` cannot be stored (or sent to the database), or None: it must be
    encodable as UTF-8, hold no NUL (PostgreSQL refuses it in text) and be at most
    ``max_bytes`` bytes long."""
    length = utf8_length(value)
    if length is None:
        return "holds a lone surrogate (not valid Unicode)"
    if "\x00" in value:
        return "holds a NUL character"
    if length > max_bytes:
        return f"is longer than {max_bytes} bytes"
    return None


def storable_problem(value: object) -> str | None:
    """Why a validated stream object cannot be stored, or None. Checks every string
    (keys included) with :func:`string_problem`; numbers, booleans and null are fine."""
    if isinstance(value, str):
        return string_problem(value, MAX_STORED_STRING_BYTES)
    if isinstance(value, dict):
        for key, item in value.items():
            problem = storable_problem(key) or storable_problem(item)
            if problem is not None:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = storable_problem(item)
            if problem is not None:
                return problem
    return None


def is_room_id(value: str) -> bool:
    """Whether ``value`` is a room ID this module accepts: a leading ``!``, at most 255
    bytes of valid UTF-8, no control characters (see above)."""
    length = utf8_length(value)
    if length is None or length > MAX_ROOM_ID_BYTES or _CONTROL_RE.search(value):
        return False
    return value.startswith("!")


def is_int(value: object) -> bool:
    # JSON booleans decode to bool, a subclass of int; 10.0 decodes to float.
    return isinstance(value, int) and not isinstance(value, bool)


def limit_field(obj: JsonDict, stream: str, field: str) -> int | None:
    """An optional non-negative integer limit (``limit``, ``timeline_limit``)."""
    if field not in obj:
        return None
    value = obj[field]
    if not is_int(value):
        raise bad_json(f"{stream}.{field}: must be an integer")
    if value < 0:
        raise invalid_param(f"{stream}.{field}: must not be negative")
    return int(value)


def bool_field(obj: JsonDict, stream: str, field: str) -> bool | None:
    if field not in obj:
        return None
    value = obj[field]
    if not isinstance(value, bool):
        raise bad_json(f"{stream}.{field}: must be a boolean")
    return value


def enum_field(obj: JsonDict, stream: str, field: str, allowed: Collection[str]) -> str | None:
    if field not in obj:
        return None
    value = obj[field]
    if not isinstance(value, str):
        raise bad_json(f"{stream}.{field}: must be a string")
    if value not in allowed:
        raise invalid_param(f"{stream}.{field}: must be one of {', '.join(sorted(allowed))}")
    return value


def check_room_id(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise bad_json(f"{where}: must be a string")
    if not is_room_id(value):
        raise invalid_param(
            f"{where}: not a valid room ID (it must start with '!' and be at most "
            f"{MAX_ROOM_ID_BYTES} bytes of text without control characters)"
        )
    return value


def room_id_field(obj: JsonDict, stream: str, field: str) -> str | None:
    if field not in obj:
        return None
    return check_room_id(obj[field], f"{stream}.{field}")


def room_ids_list(value: object, where: str) -> list[str]:
    """A list of room IDs: at most 100, duplicates dropped keeping the first one."""
    if not isinstance(value, list):
        raise bad_json(f"{where}: must be a list of room IDs")
    if len(value) > MAX_ROOM_IDS:
        raise invalid_param(f"{where}: at most {MAX_ROOM_IDS} room IDs")
    seen: dict[str, None] = {}
    for index, item in enumerate(value):
        seen.setdefault(check_room_id(item, f"{where}[{index}]"), None)
    return list(seen)


def state_events_field(obj: JsonDict, stream: str, field: str) -> list[list[str]] | None:
    """``[[type, state_key], ...]``, at most 100 entries, non-empty types."""
    if field not in obj:
        return None
    value = obj[field]
    where = f"{stream}.{field}"
    if not isinstance(value, list):
        raise bad_json(f"{where}: must be a list of [type, state_key] pairs")
    if len(value) > MAX_STATE_EVENTS:
        raise invalid_param(f"{where}: at most {MAX_STATE_EVENTS} entries")
    pairs = []
    for index, entry in enumerate(value):
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not all(isinstance(part, str) for part in entry)
            or not entry[0]
        ):
            raise bad_json(f"{where}[{index}]: must be a list of two strings with a non-empty type")
        for part, name in zip(entry, ("type", "state key"), strict=True):
            problem = string_problem(part, MAX_STATE_EVENT_FIELD_BYTES)
            if problem is not None:
                raise invalid_param(f"{where}[{index}]: the {name} {problem}")
        pairs.append([entry[0], entry[1]])
    return pairs


def page_field(obj: JsonDict, stream: str) -> JsonDict | None:
    """The per-request page cursor ``p`` (SPEC §3.4): ``{}``, ``{"since": c}`` or
    ``{"next": c}``. Returns ``{}`` or ``{"cursor": c}``; the cursor itself is checked
    by the stream once the session is known."""
    if "p" not in obj:
        return None
    value = obj["p"]
    if not isinstance(value, dict):
        raise bad_json(f"{stream}.p: must be an object")
    cursors = []
    for key in ("since", "next"):
        if key in value:
            cursor = value[key]
            if not isinstance(cursor, str):
                raise bad_json(f"{stream}.p.{key}: must be a string")
            # Cursors are opaque ASCII tokens of this module: anything else is
            # malformed (SPEC §3.4) before any stream tries to decode it.
            if len(cursor) > MAX_CURSOR_LENGTH or not (cursor.isascii() and cursor.isprintable()):
                raise invalid_param(f"{stream}.p.{key}: not a page cursor")
            cursors.append(cursor)
    if len(cursors) == 2 and cursors[0] != cursors[1]:
        raise invalid_param(f"{stream}.p: 'since' and 'next' differ")
    return {"cursor": cursors[0]} if cursors else {}


def effective_limit(requested: int | None, default: int, maximum: int) -> int:
    """Negotiation of an integer limit (SPEC §3.4, §5.5, §11.2): absent or 0 gives the
    default (itself lowered to the maximum), larger values are clamped."""
    default = min(default, maximum)
    if not requested:
        return default
    return min(requested, maximum)


def effective_timeline_limit(requested: int | None, default: int, maximum: int) -> int:
    """Like :func:`effective_limit`, but 0 is a real value: no timeline events."""
    if requested is None:
        return min(default, maximum)
    return min(requested, maximum)
