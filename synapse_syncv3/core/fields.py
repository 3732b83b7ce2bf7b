"""Validation of stream fields (SPEC §3.4), shared by the stream definitions.

Every helper takes the stream name and the field name so that errors read
``"to_device.limit: must be an integer"``. Wrong JSON types are 400 ``M_BAD_JSON``;
values of the right type that are out of range are 400 ``M_INVALID_PARAM``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from synapse_syncv3.errors import bad_json, invalid_param

JsonDict = dict[str, Any]

#: Fixed bounds that are not configurable (SPEC §11.2).
MAX_ROOM_IDS = 100
MAX_STATE_EVENTS = 100
MAX_ROOM_ID_BYTES = 255


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
    if not value.startswith("!") or len(value.encode("utf-8")) > MAX_ROOM_ID_BYTES:
        raise invalid_param(f"{where}: not a valid room ID")
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
            if not isinstance(value[key], str):
                raise bad_json(f"{stream}.p.{key}: must be a string")
            cursors.append(value[key])
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
