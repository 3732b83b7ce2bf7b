"""Rooms as ``room_list`` lists them (SPEC §7.4): the user's joined and invited rooms,
their sort inputs in bulk, and the pieces of an entry (names, member and unread
counts, requested state, latest events) for the few rooms of a response.

Synapse area: the room member store (``get_rooms_for_local_user_where_membership_is``,
``get_room_summary``), the events stream change cache and
``bulk_get_last_event_pos_in_room_before_stream_ordering``, event push actions
(``get_unread_event_push_actions_by_room_for_user``,
``get_unread_counts_by_room_for_user``), ``rooms_to_exclude_from_sync``,
``KNOWN_ROOM_VERSIONS``; the SQL on ``events``, ``current_state_events``,
``event_push_actions`` and ``receipts_linearized`` is in ``synapse_sql.py``.
Timelines go through :meth:`RoomsMixin.room_timeline`'s rules (one implementation of
visibility for room_data and room_list).

Versions: every call here is unchanged from 1.152.0 to 1.163 (SYNAPSE-ROOMS.md §A2,
§A4, §A5, §A7); ``RoomNotifCounts`` has ``main_timeline`` and ``threads`` over the
whole range.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import attrs
from synapse.api.constants import Membership
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.events.utils import FilteredEvent

from synapse_syncv3.compat import synapse_sql
from synapse_syncv3.compat.base import JsonDict
from synapse_syncv3.compat.rooms import IgnoredInviters, RoomsMixin, RoomTimeline
from synapse_syncv3.core.room_list import NameParts

__all__ = ["ListedRoom", "Listing", "RoomListMixin"]

#: Raw events read per room for a room_list timeline before the visibility filter;
#: a room where fewer than ``timeline_limit`` of them are visible is read again with
#: :meth:`RoomsMixin.room_timeline`.
_EXTRA_EVENTS = 0

#: Users whose listed rooms are kept in memory (least recently used dropped).
_LISTED_USERS_CACHED = 10_000

#: Events of the interval looked at per room to tell whether a room changed in a way
#: the user may see.
_VISIBILITY_PROBE = 5


class ListedRoom(NamedTuple):
    """A room of the user's list: its membership now and the membership event."""

    room_id: str
    membership: str
    sender: str
    event_id: str
    #: Room stream position of the membership event.
    position: int


@attrs.frozen(eq=False)
class Listing:
    """The user's room list at one time (shared by the requests of the user: read
    only)."""

    #: room id -> the room, joined or invited.
    rooms: Mapping[str, ListedRoom]
    joined: frozenset[str]
    #: room id -> invite event id, for the invited rooms.
    invites: Mapping[str, str]
    #: Invites hidden by invite rules -> this listing without them, kept so that the
    #: same list is the same object (room_list re-sorts incrementally only then).
    narrowed: dict[frozenset[str], Listing] = attrs.field(factory=dict, init=False)


def _listing(listed: Mapping[str, ListedRoom]) -> Listing:
    return Listing(
        listed,
        frozenset(r for r, room in listed.items() if room.membership == "join"),
        {r: room.event_id for r, room in listed.items() if room.membership == "invite"},
    )


def _without_ignored_invites(listing: Listing, ignored: IgnoredInviters) -> Listing:
    """``listing`` without the invites the user's invite rules ignore (the cached
    listing already leaves out ignored users; rules are rare and invites few)."""
    if ignored.rules is None:
        return listing
    hidden = frozenset(r for r in listing.invites if ignored.ignores(listing.rooms[r].sender))
    if not hidden:
        return listing
    narrowed = listing.narrowed.get(hidden)
    if narrowed is None:
        listing.narrowed.clear()  # the rules changed: the earlier narrowing is stale
        narrowed = _listing({r: room for r, room in listing.rooms.items() if r not in hidden})
        listing.narrowed[hidden] = narrowed
    return narrowed


class RoomListMixin(RoomsMixin):
    """The reads of the ``room_list`` stream (SPEC §7.4)."""

    def __init__(self, api: Any) -> None:
        super().__init__(api)
        #: user id -> (membership change mark, ignored users, listing): reused until
        #: the user's membership changes (Synapse's membership stream change cache
        #: moves) or the ignored users change.
        self._listings: OrderedDict[str, tuple[Any, frozenset[str], Listing]] = OrderedDict()

    def _membership_mark(self, user_id: str) -> Any:
        cache = self._store._membership_stream_cache
        position = cache.get_max_pos_of_last_change(user_id)
        if position is None:
            # No change since the cache's horizon: the horizon itself is the mark (it
            # moves when old entries are evicted, which only costs a recomputation).
            return ("horizon", cache.get_earliest_known_position())
        return position

    async def listed_rooms(self, user_id: str) -> Listing:
        """The user's room list (SPEC §7.4): joined and invited rooms, without invites
        from ignored users (or senders the user's invite rules ignore), rooms Synapse
        excludes from sync and rooms of unknown room versions (as v2 sync). Kept per
        user until the user's membership or ignored users change, so that neither a
        long-poll's wakes nor first pages rebuild a 5,000-room list."""
        mark = self._membership_mark(user_id)
        ignored = await self.ignored_inviters(user_id)
        cached = self._listings.get(user_id)
        if cached is not None and cached[0] == mark and cached[1] == ignored.users:
            self._listings.move_to_end(user_id)
            return _without_ignored_invites(cached[2], ignored)
        rooms = await self._store.get_rooms_for_local_user_where_membership_is(
            user_id,
            (Membership.JOIN, Membership.INVITE),
            excluded_rooms=self._hs.config.server.rooms_to_exclude_from_sync,
        )
        listed = {
            r.room_id: ListedRoom(r.room_id, r.membership, r.sender, r.event_id, r.event_pos.stream)
            for r in rooms
            if r.room_version_id in KNOWN_ROOM_VERSIONS
            and (r.membership == Membership.JOIN or r.sender not in ignored.users)
        }
        listing = _listing(listed)
        # The mark was taken before the read: a change during the read moves the
        # cache, so the next call reads again.
        self._listings[user_id] = (mark, ignored.users, listing)
        self._listings.move_to_end(user_id)
        while len(self._listings) > _LISTED_USERS_CACHED:
            self._listings.popitem(last=False)
        return _without_ignored_invites(listing, ignored)

    def joined_rooms_with_events_after(self, listing: Listing, position: int) -> set[str]:
        """Joined rooms of the listing that may have events after ``position``, from
        Synapse's stream change cache: when few events happened since, it looks only
        at those (never at every room); may over-report, never under-reports."""
        cache = self._store._events_stream_cache
        return set(cache.get_entities_changed(listing.joined, position))

    async def latest_positions(self, room_ids: Collection[str]) -> dict[str, int]:
        """Room stream position of each room's most recent event (any type), from
        Synapse's in-memory stream change cache where it knows the room, else in
        bulk from the database (as native sliding sync sorts)."""
        cache = self._store._events_stream_cache
        found: dict[str, int] = {}
        missing = []
        for room_id in room_ids:
            position = cache.get_max_pos_of_last_change(room_id)
            if position is None:
                missing.append(room_id)
            else:
                found[room_id] = position
        if missing:
            token = self._store.get_room_max_token()
            found.update(
                await self._store.bulk_get_last_event_pos_in_room_before_stream_ordering(
                    missing, token
                )
            )
        return found

    # -- unread counts ----------------------------------------------------------------

    def _push_enabled(self) -> bool:
        return bool(self._hs.config.push.enable_push)

    async def unread_counts(
        self, user_id: str, room_ids: Iterable[str]
    ) -> dict[str, tuple[int, int]]:
        """``(notification_count, highlight_count)`` per room as v2 sync reports them
        without thread-notification filtering (main timeline plus every thread)."""
        counts: dict[str, tuple[int, int]] = {}
        for room_id in room_ids:
            if not self._push_enabled():
                counts[room_id] = (0, 0)
                continue
            notifs = await self._store.get_unread_event_push_actions_by_room_for_user(
                room_id, user_id
            )
            notify = notifs.main_timeline.notify_count
            highlight = notifs.main_timeline.highlight_count
            for thread in notifs.threads.values():
                notify += thread.notify_count
                highlight += thread.highlight_count
            counts[room_id] = (int(notify), int(highlight))
        return counts

    async def notification_counts(self, user_id: str, joined: Collection[str]) -> dict[str, int]:
        """Notification counts of the joined rooms that have any: the rooms that may
        have one from Synapse's summary (three queries), their counts from Synapse's
        cached per-room counts (as v2 sync reports them)."""
        if not self._push_enabled() or not joined:
            return {}
        # Synapse's bulk summary only tells which rooms may have a count: it also
        # counts what precedes the user's join (an invite's own notification) where
        # the user has no receipt, so the counts are Synapse's exact per-room ones.
        summary = await self._store.get_unread_counts_by_room_for_user(user_id)
        candidates = [room for room, n in summary.items() if n and room in joined]
        counts = await self.unread_counts(user_id, candidates)
        return {room: n for room, (n, _) in counts.items() if n}

    async def highlight_counts(self, user_id: str, joined: Collection[str]) -> dict[str, int]:
        """Highlight counts of the joined rooms that have any: the rooms that may have
        unread highlights come from one query, their exact counts from Synapse's
        cached per-room counts."""
        if not self._push_enabled() or not joined:
            return {}
        candidates = await synapse_sql.highlight_candidate_rooms(self._store, user_id)
        wanted = [room for room in candidates if room in joined]
        counts = await self.unread_counts(user_id, wanted)
        return {room: highlight for room, (_, highlight) in counts.items() if highlight}

    async def own_receipt_rooms(self, user_id: str, after: Any, up_to: Any) -> set[str]:
        """Rooms where the user's own read receipt moved in (after, up_to] (receipt
        keys; with several receipt writers the lower bound is the slowest writer,
        which may report a room again, never miss one)."""
        if up_to.is_before_or_eq(after):
            return set()
        return await synapse_sql.own_receipt_rooms(
            self._store, user_id, int(after.stream), int(up_to.get_max_stream_pos())
        )

    # -- names and counts ----------------------------------------------------------------

    async def name_parts(self, user_id: str, room_ids: Collection[str]) -> dict[str, NameParts]:
        """What the names of joined rooms are made of (SPEC §7.4): ``m.room.name`` and
        ``m.room.canonical_alias`` of the current state in bulk, and for rooms with
        neither, the heroes of Synapse's room summary (cached per room) with their
        display names."""
        named = await synapse_sql.names_and_aliases(self._store, list(room_ids))
        parts: dict[str, NameParts] = {}
        unnamed = []
        for room_id in room_ids:
            name, alias = named.get(room_id, (None, None))
            part = NameParts(name=name, alias=alias)
            parts[room_id] = part
            if not (isinstance(name, str) and name) and not (isinstance(alias, str) and alias):
                unnamed.append(room_id)
        for room_id in unnamed:
            parts[room_id] = await self._hero_parts(user_id, room_id, parts[room_id])
        return parts

    async def _hero_parts(self, user_id: str, room_id: str, part: NameParts) -> NameParts:
        summary = await self._store.get_room_summary(room_id)
        heroes: list[str] = []
        others = -1  # the user is joined: everybody else joined or invited
        for membership in (Membership.JOIN, Membership.INVITE):
            details = summary.get(membership)
            if details is None:
                continue
            others += details.count
            heroes.extend(event_id for uid, event_id in details.members if uid != user_id)
        events = await self._store.get_events(heroes)
        ordered = sorted(
            (events[e] for e in heroes if e in events), key=lambda e: e.origin_server_ts
        )
        names = []
        for event in ordered[:5]:
            display = event.content.get("displayname")
            names.append(display if isinstance(display, str) and display else event.state_key)
        if others > 0 and not heroes:
            others = 0
        return NameParts(part.name, part.alias, tuple(names), others)

    async def member_counts(self, room_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        """``(joined_count, invited_count)`` per room (Synapse's room summary, as v2
        sync's ``m.joined_member_count`` / ``m.invited_member_count``)."""
        counts = {}
        for room_id in room_ids:
            summary = await self._store.get_room_summary(room_id)
            joined = summary.get(Membership.JOIN)
            invited = summary.get(Membership.INVITE)
            counts[room_id] = (joined.count if joined else 0, invited.count if invited else 0)
        return counts

    # -- state and timelines ---------------------------------------------------------------

    async def current_state_ids(
        self, room_ids: Collection[str], patterns: Sequence[Sequence[str]]
    ) -> dict[str, dict[tuple[str, str], str]]:
        """The current state of each room selected by ``patterns`` (SPEC §7.4
        wildcards), in one query."""
        if not room_ids or not patterns:
            return {room_id: {} for room_id in room_ids}
        return await synapse_sql.current_state_ids(self._store, list(room_ids), patterns)

    async def latest_timelines(
        self, requester: Any, uppers: Mapping[str, int], limit: int
    ) -> dict[str, RoomTimeline]:
        """The last ``limit`` visible events at or before ``uppers[room]`` of each
        room: raw events for all rooms in one query and one pass of Synapse's
        visibility filter; a room where too few of them are visible is read again by
        :meth:`room_timeline` (the same rules as ``room_data``)."""
        if limit <= 0:
            return {
                room_id: RoomTimeline((), (), frozenset(), False, upper)
                for room_id, upper in uppers.items()
            }
        fetch = limit + _EXTRA_EVENTS
        rows = await synapse_sql.latest_events(self._store, dict(uppers), fetch)
        by_room: dict[str, list[str]] = {}
        for room_id, event_id in rows:
            by_room.setdefault(room_id, []).append(event_id)
        all_ids = [event_id for ids in by_room.values() for event_id in reversed(ids)]
        events = await self._store.get_events_as_list(all_ids, get_prev_content=True)
        state_ids = {event.event_id for event in events if event.is_state()}
        current = (
            await self._store.check_if_events_in_current_state(state_ids)
            if state_ids
            else frozenset()
        )
        filtered = await self._visible_to(
            requester.user.to_string(), events, always_include_ids=current
        )
        visible: dict[str, list[Any]] = {}
        for item in filtered:
            visible.setdefault(item.event.room_id, []).append(item)
        timelines: dict[str, RoomTimeline] = {}
        for room_id, upper in uppers.items():
            seen = visible.get(room_id, [])
            if len(seen) < limit and len(by_room.get(room_id, ())) >= fetch:
                timelines[room_id] = await self.room_timeline(
                    requester, room_id, upper=upper, lower=None, limit=limit
                )
                continue
            timeline = seen[-limit:]
            start = upper
            if timeline:
                start = int(timeline[0].event.internal_metadata.stream_ordering) - 1
            timelines[room_id] = RoomTimeline(
                events=timeline,
                event_ids=[item.event.event_id for item in timeline],
                senders=frozenset(item.event.sender for item in timeline),
                limited=len(seen) > limit,
                start=start,
            )
        return timelines

    async def serialized_timelines(
        self, requester: Any, timelines: Mapping[str, RoomTimeline]
    ) -> dict[str, list[JsonDict]]:
        """The timelines of several rooms serialized as v2 sync serializes them, with
        bundled aggregations, in one pass of the relations handler and serializer."""
        items = [item for timeline in timelines.values() for item in timeline.events]
        aggregations = None
        if items:
            aggregations = await self._bundled_aggregations(items, requester.user.to_string())
        serialized = await self._serialize(requester, items, aggregations) if items else []
        result: dict[str, list[JsonDict]] = {}
        offset = 0
        for room_id, timeline in timelines.items():
            result[room_id] = serialized[offset : offset + len(timeline.events)]
            offset += len(timeline.events)
        return result

    async def serialized_states(
        self, requester: Any, ids_by_room: Mapping[str, list[str]]
    ) -> dict[str, list[JsonDict]]:
        """State events of several rooms in client format (SPEC §1.5), in the order of
        each room's ids, in one fetch and one pass of the serializer."""
        wanted = [event_id for ids in ids_by_room.values() for event_id in ids]
        events = await self._store.get_events(wanted, get_prev_content=True) if wanted else {}
        present = {
            room_id: [FilteredEvent.state(events[e]) for e in ids if e in events]
            for room_id, ids in ids_by_room.items()
        }
        flat = [item for items in present.values() for item in items]
        serialized = await self._serialize(requester, flat) if flat else []
        result: dict[str, list[JsonDict]] = {}
        offset = 0
        for room_id, items in present.items():
            result[room_id] = serialized[offset : offset + len(items)]
            offset += len(items)
        return result

    async def rooms_with_visible_events(
        self, requester: Any, room_ids: Collection[str], after: int, up_to: int
    ) -> set[str]:
        """Those of ``room_ids`` with an event in (after, up_to] that the user may see
        (Synapse's visibility filter: history visibility, ignored users, soft
        failure, dummy events) or a state event; rooms where the newest few events
        are all hidden count as changed only if older ones of the interval remain
        unread (never a change missed, at the price of one query)."""
        if not room_ids:
            return set()
        fetch = _VISIBILITY_PROBE
        rows = await synapse_sql.latest_events(
            self._store, dict.fromkeys(room_ids, up_to), fetch, after=after
        )
        counted: dict[str, int] = {}
        for room_id, _ in rows:
            counted[room_id] = counted.get(room_id, 0) + 1
        events = await self._store.get_events_as_list([event_id for _, event_id in rows])
        found = {room_id for room_id, count in counted.items() if count >= fetch}
        found.update(event.room_id for event in events if event.is_state())
        rest = [event for event in events if event.room_id not in found]
        if rest:
            filtered = await self._visible_to(requester.user.to_string(), rest)
            found.update(item.event.room_id for item in filtered)
        return found

    async def event_timestamps(self, positions: Mapping[str, int]) -> dict[str, int]:
        """``origin_server_ts`` of the event at each room's position."""
        if not positions:
            return {}
        found = await synapse_sql.events_at_positions(self._store, list(positions.values()))
        events = await self._store.get_events(list(found.values()))
        stamps = {}
        for room_id, position in positions.items():
            event = events.get(found.get(position, ""))
            if event is not None:
                stamps[room_id] = int(event.origin_server_ts)
        return stamps

    async def invite_events(self, event_ids: Collection[str]) -> dict[str, Any]:
        """Membership events by id (invites: their stripped state and timestamp)."""
        return dict(await self._store.get_events(list(event_ids)))
