"""Per-session stream state (SPEC §7.4, §7.5, §10.1): what belongs to one response of
a session rather than to its params or to Synapse. Pure: the rows behind it are read
and written by :class:`synapse_syncv3.store.SessionStore`.

A session's state is versioned. A since token names the state version it was issued
with (0: nothing stored yet). For one request the handler builds a
:class:`SessionState` for the version of ``since``; streams read it, change it, and
hand values to the streams computed after them (``room_list`` gives ``room_data`` its
room set). Only when a response with data is sent do the changes become a new
version, written in one transaction and named by the response's ``next``; a timeout
reply, an error or a cancelled wait writes nothing. Replaying an older ``since``
therefore sees the state as it was for that token.

The state has two parts:

* **values**: small typed objects, at most one per class (for instance a stream's
  stored snapshot reference or its pending changes). Every version holds a complete
  copy of them, so a version reads exactly what its lineage wrote.
* **room sets**: per stream, the rooms sent to the session (SPEC §7.5.1, §7.5.2). They
  can be large, so they are rows that record the first version at which each room was
  sent since the stream's set was last cleared.

Versions form a tree, not a line: replaying an older ``since`` after a response was
lost starts a branch. Each version therefore also records the versions that are *not*
its ancestors (:class:`Lineage`: every version allocated between a version's parent
and itself, and those its parent excluded), so that :meth:`SessionState.known_rooms`
— "has the client received this room's first delivery?" — counts only rows of the
token's own lineage: a room sent only by a lost response is never taken as received.
:meth:`SessionState.sent_rooms` (the ``"room_list"`` set) reads every row up to the
version: a room sent on an abandoned branch may be in the set once more than strictly
needed, which only means serving it, never missing it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, TypeVar

import attrs

JsonDict = dict[str, Any]


class StateValue(Protocol):
    """A typed value kept in the session state; one per class, named by ``KEY``."""

    KEY: ClassVar[str]

    def to_json(self) -> JsonDict: ...

    @classmethod
    def from_json(cls, data: JsonDict) -> Any: ...


V = TypeVar("V", bound=StateValue)

#: Classes of the values a state may hold, by ``KEY`` (see :func:`register_value`).
_VALUE_TYPES: dict[str, type[Any]] = {}


def register_value(cls: type[V]) -> type[V]:
    """Class decorator: make a :class:`StateValue` class loadable from stored state."""
    existing = _VALUE_TYPES.get(cls.KEY)
    if existing is not None and existing is not cls:
        raise ValueError(f"state value key {cls.KEY!r} is taken by {existing.__name__}")
    _VALUE_TYPES[cls.KEY] = cls
    return cls


@attrs.frozen
class ClearedRooms:
    """Per stream, the state version after which its room set starts again (the set
    was cleared by a reset of the stream in the response that made that version)."""

    KEY: ClassVar[str] = "cleared_rooms"

    after: Mapping[str, int] = attrs.field(factory=dict)

    def to_json(self) -> JsonDict:
        return dict(self.after)

    @classmethod
    def from_json(cls, data: JsonDict) -> ClearedRooms:
        return cls({str(k): int(v) for k, v in data.items()})


register_value(ClearedRooms)


def rooms_prunable_up_to(kept: Iterable[Mapping[str, StateValue]], stream: str) -> int:
    """The version up to which no kept state version (``kept``: their values) reads
    the rooms recorded for ``stream``: each reads only after its stream's last clear,
    and the versions made later descend from kept ones, whose clears they inherit or
    move on. 0: none can go."""
    floor: int | None = None
    for values in kept:
        cleared = values.get(ClearedRooms.KEY)
        after = cleared.after.get(stream, 0) if isinstance(cleared, ClearedRooms) else 0
        floor = after if floor is None else min(floor, after)
    return floor or 0


#: Most excluded version ranges a :class:`Lineage` keeps; beyond, the two closest
#: ranges are merged (which excludes some ancestors too: their rooms then count as
#: not received, and get a first delivery again, which is always allowed).
MAX_EXCLUDED_RANGES = 8


@attrs.frozen
class Lineage:
    """The state versions below this one that are not its ancestors, as inclusive
    ``(first, last)`` ranges in ascending order."""

    KEY: ClassVar[str] = "lineage"

    excluded: tuple[tuple[int, int], ...] = ()

    def to_json(self) -> JsonDict:
        return {"excluded": [list(r) for r in self.excluded]}

    @classmethod
    def from_json(cls, data: JsonDict) -> Lineage:
        return cls(tuple((int(a), int(b)) for a, b in data.get("excluded", [])))

    def child(self, parent: int, version: int) -> Lineage:
        """The lineage of ``version``, made from its ``parent`` (this lineage's
        version): every version in between belongs to other branches."""
        ranges = list(self.excluded)
        if version - 1 >= parent + 1:
            ranges.append((parent + 1, version - 1))
        merged: list[tuple[int, int]] = []
        for first, last in sorted(ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        while len(merged) > MAX_EXCLUDED_RANGES:
            gaps = [merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)]
            i = gaps.index(min(gaps))
            merged[i : i + 2] = [(merged[i][0], merged[i + 1][1])]
        return Lineage(tuple(merged))

    def included(self, after: int, up_to: int) -> list[tuple[int, int]]:
        """The ranges ``(after', up_to']`` of (after, up_to] that are in the lineage."""
        ranges = []
        start = after
        for first, last in self.excluded:
            if last <= start or first > up_to:
                continue
            if first - 1 > start:
                ranges.append((start, first - 1))
            start = max(start, last)
        if up_to > start:
            ranges.append((start, up_to))
        return ranges


register_value(Lineage)


@attrs.frozen
class Snapshot:
    """A stored ``room_list`` snapshot (SPEC §7.4): the listed rooms in order at the
    anchor (the stream position of the first page), and the invite event of each
    invited room (the others were joined)."""

    snapshot_id: str
    anchor: str
    #: Room ids in list order.
    order: tuple[str, ...]
    #: room id -> invite event id, for the invited rooms.
    invites: Mapping[str, str] = attrs.field(factory=dict)
    #: The stored form, when already built (snapshots of one sorted list share it).
    encoded: str | None = attrs.field(default=None, eq=False, repr=False)

    def membership(self, room_id: str) -> str:
        return "invite" if room_id in self.invites else "join"

    def encode_rooms(self) -> str:
        """The room ids one per line, then a form feed and ``<room id>\t<event id>``
        per invite (room ids hold neither character): joined and split in C, so a
        5,000-room snapshot costs well under a millisecond either way."""
        if self.encoded is not None:
            return self.encoded
        invites = "\n".join(f"{room}\t{event}" for room, event in self.invites.items())
        return "\n".join(self.order) + "\f" + invites

    @staticmethod
    def decode_rooms(text: str) -> tuple[tuple[str, ...], dict[str, str]]:
        order, separator, invite_lines = text.partition("\f")
        if not separator:
            return _decode_marked_rooms(text)
        invites = {}
        for line in invite_lines.split("\n"):
            room, _, event = line.partition("\t")
            if room:
                invites[room] = event
        return tuple(order.split("\n")) if order else (), invites


def _decode_marked_rooms(text: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """The first stored form (``j<room id>`` / ``i<room id>\t<event id>`` lines)."""
    order: list[str] = []
    invites: dict[str, str] = {}
    for line in text.split("\n"):
        if not line:
            continue
        room_id, _, event_id = line[1:].partition("\t")
        order.append(room_id)
        if line[0] == "i":
            invites[room_id] = event_id
    return tuple(order), invites


def encode_values(values: Mapping[str, StateValue]) -> str:
    return json.dumps(
        {key: value.to_json() for key, value in values.items()},
        sort_keys=True,
        separators=(",", ":"),
    )


def decode_values(text: str) -> dict[str, StateValue]:
    """Stored values; keys of classes this release does not know are dropped."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("stored stream state is not an object")
    return {
        key: _VALUE_TYPES[key].from_json(data)
        for key, data in raw.items()
        if key in _VALUE_TYPES and isinstance(data, dict)
    }


@attrs.frozen
class StateChanges:
    """What one response changes: written as one new state version."""

    #: The complete values of the new version.
    values: Mapping[str, StateValue]
    #: stream -> rooms sent in this response.
    rooms: Mapping[str, frozenset[str]]
    #: Streams whose room set starts again with this version.
    cleared: frozenset[str]
    #: ``room_list`` snapshots taken by this response.
    snapshots: tuple[Snapshot, ...] = ()
    #: stream -> the version ranges ``(after, up_to]`` whose recorded rooms the
    #: presented token already knew: a room recorded there is known to every later
    #: version of this one's line too, so it is not recorded again (a room_list session
    #: streaming a busy room would otherwise add a row per answer).
    known_ranges: Mapping[str, tuple[tuple[int, int], ...]] = attrs.field(factory=dict)


#: ``read_rooms(stream, up_to_version, after_version, room_ids or None)``: the rooms of
#: a stream recorded in (after_version, up_to_version], restricted to ``room_ids``
#: when given.
RoomReader = Callable[[str, int, int, Collection[str] | None], Awaitable[set[str]]]


#: ``read_snapshot(snapshot_id)``: a stored snapshot of the session, or None.
SnapshotReader = Callable[[str], Awaitable["Snapshot | None"]]


async def _no_snapshot(snapshot_id: str) -> Snapshot | None:
    return None


async def _no_rooms(
    stream: str, up_to: int, after: int, room_ids: Collection[str] | None
) -> set[str]:
    return set()


#: A cache of :meth:`SessionState.known_rooms` answers for one state version of one
#: session: (stream, room ids) -> the known ones. Only ``get`` and item assignment are
#: used, so a scoped view of a process-wide cache fits.
KnownRoomsCache = MutableMapping[tuple[str, frozenset[str]], frozenset[str]]


#: The values of a state without any (shared, never changed).
_NO_VALUES: Mapping[str, StateValue] = MappingProxyType({})


class SessionState:
    """The stream state of a session as of one since token, plus this response's
    changes (not written until :meth:`changes` is persisted)."""

    # Slots, shared read-only defaults and a copy of the values only on the first
    # change: thousands of idle long-polls each hold one (issue 10 item 4).
    __slots__ = (
        "_base",
        "_cleared",
        "_known",
        "_read_rooms",
        "_read_snapshot",
        "_sent",
        "_snapshots",
        "_snapshots_read",
        "_values",
        "version",
    )

    def __init__(
        self,
        version: int = 0,
        values: Mapping[str, StateValue] | None = None,
        read_rooms: RoomReader = _no_rooms,
        known_cache: KnownRoomsCache | None = None,
        read_snapshot: SnapshotReader = _no_snapshot,
    ) -> None:
        #: The state version of ``since`` (0: none).
        self.version = version
        #: The values as of ``since``: never changed (forks share it).
        self._base: Mapping[str, StateValue] = dict(values) if values else _NO_VALUES
        #: This response's values: ``_base`` itself until the first change.
        self._values: Mapping[str, StateValue] = self._base
        self._read_rooms = read_rooms
        self._read_snapshot = read_snapshot
        self._snapshots: tuple[Snapshot, ...] = ()
        #: Snapshots read for this request (a page request checks, then computes).
        self._snapshots_read: dict[str, Snapshot | None] = {}
        self._sent: dict[str, set[str]] | None = None
        self._cleared: frozenset[str] = frozenset()
        #: known_rooms answers of this version: what a version has received never
        #: changes, so the computations of one request, and later requests naming the
        #: same version, reuse them.
        self._known: KnownRoomsCache = known_cache if known_cache is not None else {}

    def fork(self) -> SessionState:
        """The same state as of ``since``, without this response's changes (each
        computation of a long-poll starts from the state of ``since``)."""
        forked = SessionState(
            self.version, None, self._read_rooms, self._known, self._read_snapshot
        )
        forked._base = forked._values = self._base
        forked._snapshots_read = self._snapshots_read
        return forked

    def _writable_values(self) -> dict[str, StateValue]:
        if self._values is self._base:
            self._values = dict(self._base)
        assert isinstance(self._values, dict)
        return self._values

    # -- values --------------------------------------------------------------------

    def get(self, cls: type[V]) -> V | None:
        value = self._values.get(cls.KEY)
        return value if isinstance(value, cls) else None

    def set(self, value: StateValue) -> None:
        if type(value).KEY not in _VALUE_TYPES:
            raise ValueError(f"{type(value).__name__} is not a registered state value")
        self._writable_values()[type(value).KEY] = value

    def discard(self, cls: type[StateValue]) -> None:
        if cls.KEY in self._values:
            self._writable_values().pop(cls.KEY)

    # -- room sets -----------------------------------------------------------------

    def _cleared_after(self, stream: str) -> int:
        cleared = self._base.get(ClearedRooms.KEY)
        if isinstance(cleared, ClearedRooms):
            return cleared.after.get(stream, 0)
        return 0

    async def sent_rooms(self, stream: str) -> frozenset[str]:
        """Every room of the stream's set: sent up to this token (since the set was
        last cleared), plus those sent so far in this response."""
        stored: set[str] = set()
        if self.version and stream not in self._cleared:
            stored = await self._read_rooms(stream, self.version, self._cleared_after(stream), None)
        return frozenset(stored | (self._sent or {}).get(stream, set()))

    async def known_rooms(self, stream: str, room_ids: Collection[str]) -> frozenset[str]:
        """Those of ``room_ids`` that the client had received when it presented this
        token (SPEC §7.5.2): sent by a version of this token's lineage. Rooms sent in
        this response do not count."""
        if not self.version or not room_ids or stream in self._cleared:
            return frozenset()
        key = (stream, frozenset(room_ids))
        cached = self._known.get(key)
        if cached is not None:
            return cached
        found: set[str] = set()
        for after, up_to in self._known_ranges(stream):
            found |= await self._read_rooms(stream, up_to, after, room_ids)
        self._known[key] = frozenset(found)
        return self._known[key]

    def _known_ranges(self, stream: str) -> list[tuple[int, int]]:
        """The version ranges ``(after, up_to]`` whose rooms of ``stream`` this token
        had received: its lineage since the stream's last clear."""
        if not self.version or stream in self._cleared:
            return []
        lineage = self._base.get(Lineage.KEY)
        if not isinstance(lineage, Lineage):
            lineage = Lineage()
        return lineage.included(self._cleared_after(stream), self.version)

    def record_rooms(self, stream: str, room_ids: Collection[str]) -> None:
        """Rooms sent by this response for ``stream``."""
        if room_ids:
            if self._sent is None:
                self._sent = {}
            self._sent.setdefault(stream, set()).update(room_ids)

    def clear_rooms(self, stream: str) -> None:
        """The stream was reset: its set starts again with this response."""
        self._cleared = self._cleared | {stream}
        if self._sent is not None:
            self._sent.pop(stream, None)

    # -- snapshots -----------------------------------------------------------------

    async def snapshot(self, snapshot_id: str) -> Snapshot | None:
        """A snapshot this session stored (SPEC §10.3 retains the latest ones)."""
        for taken in self._snapshots:
            if taken.snapshot_id == snapshot_id:
                return taken
        if snapshot_id not in self._snapshots_read:
            self._snapshots_read[snapshot_id] = await self._read_snapshot(snapshot_id)
        return self._snapshots_read[snapshot_id]

    def add_snapshot(self, snapshot: Snapshot) -> None:
        """A snapshot taken by this response, stored with it."""
        self._snapshots = (*self._snapshots, snapshot)

    # -- changes -------------------------------------------------------------------

    @property
    def changed(self) -> bool:
        return bool(self._cleared or self._sent or self._snapshots or self._values != self._base)

    def changes(self, new_version: int) -> StateChanges:
        """The changes as a new version ``new_version``: cleared sets start after the
        previous version."""
        values = dict(self._values)
        lineage = self._base.get(Lineage.KEY)
        if not isinstance(lineage, Lineage):
            lineage = Lineage()
        child = lineage.child(self.version, new_version)
        if child.excluded:  # a linear history needs no record
            values[Lineage.KEY] = child
        else:
            values.pop(Lineage.KEY, None)
        if self._cleared:
            previous = self.get(ClearedRooms)
            after = dict(previous.after) if previous is not None else {}
            for stream in self._cleared:
                after[stream] = new_version - 1
            values[ClearedRooms.KEY] = ClearedRooms(after)
        sent = self._sent or {}
        known_ranges = {
            stream: tuple(ranges) for stream in sent if (ranges := self._known_ranges(stream))
        }
        return StateChanges(
            values=values,
            rooms={stream: frozenset(rooms) for stream, rooms in sent.items()},
            cleared=self._cleared,
            snapshots=self._snapshots,
            known_ranges=known_ranges,
        )
