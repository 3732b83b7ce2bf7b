"""Member-list snapshots (SPEC §7.3): sort order, pages and page cursors. Pure.

A snapshot is the list of members (join, invite, knock) of one room at one room
stream position, the *anchor*. It is sorted once, then sliced into pages; a cursor
names the room, the sort and the anchor it belongs to and the offset of the next
page, so a cursor can never be used with another snapshot.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import attrs

#: Memberships that make a user part of the member list.
LISTED_MEMBERSHIPS = frozenset({"join", "invite", "knock"})
SORTS = ("by_pl", "by_name")

_CURSOR_PREFIX = "m1."
_CURSOR_BODY_RE = re.compile(r"([A-Za-z0-9_-]{8}):(p|n):(0|[1-9][0-9]{0,17}):([1-9][0-9]{0,8})")
_CURSOR_MAX_LENGTH = 100
_SORT_CODES = {"by_pl": "p", "by_name": "n"}
_SORT_NAMES = {code: name for name, code in _SORT_CODES.items()}


@attrs.frozen
class Member:
    user_id: str
    event_id: str
    membership: str
    display_name: str | None
    power: int


def sort_name(user_id: str, display_name: str | None) -> str:
    """The display name if it is a non-empty string, else the user id without its
    ``@``; lowercased (Python's ``str.lower`` is Unicode default lowercasing)."""
    if isinstance(display_name, str) and display_name:
        return display_name.lower()
    return user_id[1:].lower() if user_id.startswith("@") else user_id.lower()


def sort_members(members: Iterable[Member], sort: str) -> list[Member]:
    """Listed members in snapshot order: ``by_pl`` is power level descending, then
    sort name, then user id; ``by_name`` is sort name, then user id. Strings compare
    by code point."""
    listed = [m for m in members if m.membership in LISTED_MEMBERSHIPS]
    if sort == "by_pl":
        return sorted(
            listed, key=lambda m: (-m.power, sort_name(m.user_id, m.display_name), m.user_id)
        )
    if sort == "by_name":
        return sorted(listed, key=lambda m: (sort_name(m.user_id, m.display_name), m.user_id))
    raise ValueError(f"unknown sort {sort!r}")


@attrs.frozen
class Cursor:
    """Where the next page of a snapshot starts."""

    room_digest: str
    sort: str
    anchor: int
    offset: int

    @classmethod
    def for_page(cls, room_id: str, sort: str, anchor: int, offset: int) -> Cursor:
        return cls(room_digest(room_id), sort, anchor, offset)

    def encode(self) -> str:
        body = f"{self.room_digest}:{_SORT_CODES[self.sort]}:{self.anchor}:{self.offset}"
        return _CURSOR_PREFIX + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, raw: str) -> Cursor | None:
        """The cursor, or None if ``raw`` is not one this module issued."""
        # Bounded and ASCII before anything decodes it (base64 of a str encodes it
        # to ASCII first, and a client may send any text here).
        if len(raw) > _CURSOR_MAX_LENGTH or not raw.isascii() or not raw.startswith(_CURSOR_PREFIX):
            return None
        data = raw[len(_CURSOR_PREFIX) :]
        try:
            body = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("ascii")
        except (binascii.Error, ValueError):
            return None
        match = _CURSOR_BODY_RE.fullmatch(body)
        if match is None:
            return None
        cursor = cls(match[1], _SORT_NAMES[match[2]], int(match[3]), int(match[4]))
        return cursor if cursor.encode() == raw else None

    def matches(self, room_id: str, sort: str, anchor: int) -> bool:
        return (self.room_digest, self.sort, self.anchor) == (room_digest(room_id), sort, anchor)


def room_digest(room_id: str) -> str:
    """A short, fixed-length stand-in for the room id inside a cursor."""
    digest = hashlib.sha256(room_id.encode()).digest()[:6]
    return base64.urlsafe_b64encode(digest).decode()


@attrs.frozen
class Page:
    members: Sequence[Member]
    #: Offset of the next page, or None when this page is the last.
    next_offset: int | None


def page_of(snapshot: Sequence[Member], offset: int, limit: int) -> Page:
    """The members ``[offset, offset + limit)``; ``offset`` must be inside the
    snapshot (0 is always allowed: an empty snapshot has one empty page)."""
    if offset < 0 or (offset > 0 and offset >= len(snapshot)):
        raise IndexError(offset)
    end = offset + limit
    return Page(snapshot[offset:end], end if end < len(snapshot) else None)


class SnapshotCache:
    """Sorted snapshots by (room, state position, sort), least recently used out,
    bounded by the total number of members held. Snapshots never change, so the
    pages after the first cost no state lookup. Every event of a room is a new state
    position, so most snapshots of a busy room hold the same members as the one
    before: an equal snapshot of the same room and sort is shared, held once."""

    #: ~300 bytes a member: at most ~15 MiB per process (200,000 held ~60 MiB, which a
    #: soak on workers filled at ~1 MiB a minute: every event in a room makes a new
    #: state position, so busy rooms added a snapshot per first page).
    MAX_MEMBERS = 50_000

    def __init__(self, max_members: int = MAX_MEMBERS) -> None:
        self._max_members = max_members
        #: Members of the distinct snapshots held.
        self._held = 0
        self._entries: OrderedDict[tuple[str, int, str], list[Member]] = OrderedDict()
        #: id of a held snapshot -> the number of keys sharing it.
        self._sharers: dict[int, int] = {}
        #: (room, sort) -> the snapshot put last, which an equal new one shares.
        self._latest: dict[tuple[str, str], list[Member]] = {}

    def get(self, key: tuple[str, int, str]) -> list[Member] | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: tuple[str, int, str], members: list[Member]) -> list[Member]:
        """Hold ``members`` under ``key``; returns the snapshot held: an equal one of
        the same room and sort already held, or ``members``. A snapshot larger than
        the bound is not held."""
        if len(members) > self._max_members:
            return members
        room_sort = (key[0], key[2])
        latest = self._latest.get(room_sort)
        if latest is not None and latest == members:
            members = latest
        if key in self._entries:
            self._release(key, self._entries.pop(key))
        self._entries[key] = members
        count = self._sharers.get(id(members), 0)
        self._sharers[id(members)] = count + 1
        if count == 0:
            self._held += len(members)
        self._latest[room_sort] = members
        while self._held > self._max_members:
            self._release(*self._entries.popitem(last=False))
        return members

    def _release(self, key: tuple[str, int, str], members: list[Member]) -> None:
        count = self._sharers.pop(id(members)) - 1
        if count:
            self._sharers[id(members)] = count
            return
        self._held -= len(members)
        if self._latest.get((key[0], key[2])) is members:
            del self._latest[(key[0], key[2])]

    @property
    def held(self) -> int:
        """Members of the distinct snapshots held."""
        return self._held

    def __len__(self) -> int:
        return len(self._entries)
