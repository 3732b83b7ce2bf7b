"""The room list (SPEC §7.4): positions, sort order, room names, snapshot pages and
their cursors, and the changes left over by a limit cut. Pure.

A *snapshot* is the ordered list of the user's rooms (joined and invited) at one
position, the *anchor*: the first page takes it and the session stores it (as a
:class:`Snapshot` written with the response's stream state), so that continuation
pages are slices of exactly that order. A cursor names the snapshot and the offset of
the next page; the snapshot names its anchor, which must be the position of ``since``.

In streaming mode the rooms that changed are reported, at most ``limit`` per
response; the rest are kept as :class:`PendingRooms` in the session's stream state and
reported (with fresh entries) by the next responses.
"""

from __future__ import annotations

import bisect
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import attrs

from synapse_syncv3.core.state import Snapshot, register_value

JsonDict = dict[str, Any]
T = TypeVar("T")

SORTS = ("by_recency", "by_name", "by_notification_count", "by_highlight_count")
DEFAULT_SORT = ("by_recency",)

#: Memberships that put a room in the list.
LISTED = frozenset({"join", "invite"})

# -- positions --------------------------------------------------------------------

_NUMBER = r"(?:0|[1-9][0-9]{0,17})"
_RECEIPT = rf"(?:{_NUMBER}|m{_NUMBER}(?:~{_NUMBER}\.{_NUMBER})+)"
_POSITION_RE = re.compile(rf"({_NUMBER})_({_RECEIPT})")


def split_position(raw: str) -> tuple[int, str] | None:
    """``(room stream position, receipt position string)`` of a room_list position
    ``<room>_<receipt>`` (the receipt part in Synapse's wire form, ``12`` or
    ``m12~1.14``), or None if it is malformed."""
    match = _POSITION_RE.fullmatch(raw)
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


def join_position(room: int, receipt: str) -> str:
    return f"{room}_{receipt}"


@attrs.frozen
class Position:
    """A room_list position bound to what this server has issued."""

    room: int
    #: Synapse's receipt stream key (opaque here).
    receipt: Any
    #: The position as the since token carries it (snapshot anchors compare by it).
    raw: str


# -- names --------------------------------------------------------------------------

ALIAS_RE = re.compile(r"^#.*:.+$")
ALL_ALONE = "Empty Room"


@attrs.frozen
class NameParts:
    """What a joined room's name is made of (Synapse's ``calculate_room_name``)."""

    #: ``content.name`` of ``m.room.name`` (any JSON value).
    name: Any = None
    #: ``content.alias`` of ``m.room.canonical_alias`` (any JSON value).
    alias: Any = None
    #: Display names (or user ids) of the other joined/invited members named first,
    #: oldest membership first (the room summary's heroes).
    heroes: tuple[str, ...] = ()
    #: Number of joined and invited members other than the user.
    others: int = 0


def room_name(parts: NameParts) -> str:
    """A joined room's name by Synapse's rule (``push/presentable_names.py``): the
    name, else the canonical alias, else the other members: "A", "A and B",
    "A and N others", "Empty Room" when nobody else is there."""
    if isinstance(parts.name, str) and parts.name:
        return parts.name
    if isinstance(parts.alias, str) and parts.alias and ALIAS_RE.match(parts.alias):
        return parts.alias
    heroes = parts.heroes
    if parts.others <= 0 or not heroes:
        return ALL_ALONE
    if parts.others == 1:
        return heroes[0]
    if parts.others == 2 and len(heroes) >= 2:
        return f"{heroes[0]} and {heroes[1]}"
    return f"{heroes[0]} and {parts.others - 1} others"


def invite_name(stripped: Iterable[Any]) -> str | None:
    """An invite's name: ``m.room.name`` of the invite state, else None (SPEC §7.4)."""
    for event in stripped:
        if not isinstance(event, dict):
            continue
        if event.get("type") == "m.room.name" and event.get("state_key") == "":
            content = event.get("content")
            name = content.get("name") if isinstance(content, dict) else None
            return name if isinstance(name, str) and name else None
    return None


# -- sort ---------------------------------------------------------------------------


@attrs.frozen
class SortKeys:
    """Sort inputs of the listed rooms (only those the requested sort needs)."""

    #: Room stream position of each room's most recent event (the invite for invites).
    recency: Mapping[str, int] = attrs.field(factory=dict)
    #: Names (None: no name, sorted last).
    names: Mapping[str, str | None] = attrs.field(factory=dict)
    notifications: Mapping[str, int] = attrs.field(factory=dict)
    highlights: Mapping[str, int] = attrs.field(factory=dict)


def sort_rooms(room_ids: Iterable[str], sort: Sequence[str], keys: SortKeys) -> list[str]:
    """Rooms in list order (SPEC §7.4): the sort keys in turn, then room id
    ascending. Missing inputs count as the lowest rank (position 0, no name, 0)."""
    if list(sort) == ["by_recency"]:
        recency = keys.recency
        return sorted(room_ids, key=lambda r: (-recency.get(r, 0), r))
    return sorted(room_ids, key=sort_key(sort, keys))


# -- snapshots and cursors ------------------------------------------------------------

_CURSOR_RE = re.compile(r"l1\.([A-Za-z0-9_-]{8})\.([1-9][0-9]{0,8})")


def new_snapshot_id() -> str:
    return secrets.token_urlsafe(6)


@attrs.frozen
class Cursor:
    snapshot_id: str
    offset: int

    def encode(self) -> str:
        return f"l1.{self.snapshot_id}.{self.offset}"

    @staticmethod
    def decode(raw: str) -> Cursor | None:
        match = _CURSOR_RE.fullmatch(raw)
        if match is None:
            return None
        return Cursor(match.group(1), int(match.group(2)))


@attrs.frozen
class Page:
    rooms: tuple[str, ...]
    #: Offset of the next page, or None for the last one.
    next_offset: int | None


def page_of(rooms: Sequence[str], offset: int, limit: int) -> Page:
    """The page at ``offset``; IndexError past the end (offset 0 of an empty list is
    the one empty page)."""
    if offset < 0 or (offset >= len(rooms) and offset != 0):
        raise IndexError(offset)
    end = offset + limit
    return Page(tuple(rooms[offset:end]), end if end < len(rooms) else None)


# -- pending changes ----------------------------------------------------------------


@register_value
@attrs.frozen
class PendingRooms:
    """Rooms whose change a streaming response could not report (limit cut), to be
    reported by the next responses (SPEC §7.4: no change may be lost)."""

    KEY: ClassVar[str] = "room_list_pending"

    rooms: tuple[str, ...] = ()

    def to_json(self) -> JsonDict:
        return {"rooms": list(self.rooms)}

    @classmethod
    def from_json(cls, data: JsonDict) -> PendingRooms:
        rooms = data.get("rooms", [])
        return cls(tuple(r for r in rooms if isinstance(r, str)))


def cut(ordered: Sequence[str], limit: int) -> tuple[list[str], tuple[str, ...]]:
    """The rooms a streaming response reports, and those left for later."""
    return list(ordered[:limit]), tuple(ordered[limit:])


# -- sorted lists kept between first pages --------------------------------------------


def sort_key(sort: Sequence[str], keys: SortKeys) -> Callable[[str], tuple[Any, ...]]:
    """The key function of :func:`sort_rooms`."""

    def key(room_id: str) -> tuple[Any, ...]:
        parts: list[Any] = []
        for entry in sort:
            if entry == "by_recency":
                parts.append(-keys.recency.get(room_id, 0))
            elif entry == "by_name":
                name = keys.names.get(room_id)
                parts.append((1, "") if name is None else (0, name.lower()))
            elif entry == "by_notification_count":
                parts.append(-keys.notifications.get(room_id, 0))
            elif entry == "by_highlight_count":
                parts.append(-keys.highlights.get(room_id, 0))
            else:
                raise ValueError(f"unknown sort {entry!r}")
        parts.append(room_id)
        return tuple(parts)

    return key


def merge_keys(old: SortKeys, new: SortKeys, rooms: Iterable[str]) -> SortKeys:
    """``old`` with the keys of ``rooms`` taken from ``new`` (missing there: removed)."""
    rooms = list(rooms)

    def merged(old_map: Mapping[str, T], new_map: Mapping[str, T]) -> dict[str, T]:
        result = dict(old_map)
        for room_id in rooms:
            if room_id in new_map:
                result[room_id] = new_map[room_id]
            else:
                result.pop(room_id, None)
        return result

    return SortKeys(
        merged(old.recency, new.recency),
        merged(old.names, new.names),
        merged(old.notifications, new.notifications),
        merged(old.highlights, new.highlights),
    )


def resort(
    order: Sequence[str], changed: Collection[str], sort: Sequence[str], keys: SortKeys
) -> list[str]:
    """``order`` (sorted by ``sort`` under older keys) sorted under ``keys``, where
    only the keys of ``changed`` rooms differ: the changed rooms are taken out and
    put back in place (work in C for the untouched rooms, ``log n`` key calls per
    changed room)."""
    key = sort_key(sort, keys)
    moved = set(changed)
    kept = [room_id for room_id in order if room_id not in moved] if moved else list(order)
    for room_id in sorted(moved, key=key):
        bisect.insort(kept, room_id, key=key)
    return kept


@attrs.frozen(eq=False)
class SortedRooms:
    """A user's room list sorted by one sort, valid at ``room`` / ``receipt``
    positions for the membership it was built from (``listing``)."""

    listing: Any
    room: int
    receipt: Any
    order: tuple[str, ...]
    keys: SortKeys
    #: The stored snapshot form of ``order``, built once on demand (a list used as a
    #: write-once cell).
    _encoded: list[str] = attrs.field(factory=list)

    def encoded(self, invites: Mapping[str, str]) -> str:
        if not self._encoded:
            self._encoded.append(Snapshot("", "", self.order, invites).encode_rooms())
        return self._encoded[0]


class SortedRoomsCache:
    """Sorted lists per (user, sort), least recently used dropped beyond a total
    number of rooms held."""

    def __init__(self, max_rooms: int = 2_000_000) -> None:
        self._max_rooms = max_rooms
        self._held = 0
        self._entries: OrderedDict[tuple[str, tuple[str, ...]], SortedRooms] = OrderedDict()

    def get(self, user_id: str, sort: Sequence[str]) -> SortedRooms | None:
        key = (user_id, tuple(sort))
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, user_id: str, sort: Sequence[str], entry: SortedRooms) -> None:
        key = (user_id, tuple(sort))
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._held -= len(previous.order)
        self._entries[key] = entry
        self._held += len(entry.order)
        while self._held > self._max_rooms and len(self._entries) > 1:
            _, dropped = self._entries.popitem(last=False)
            self._held -= len(dropped.order)
