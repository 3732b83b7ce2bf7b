"""The ``room_list`` stream (SPEC §7.4): the user's joined and invited rooms as a
sorted, paginated snapshot, then the rooms that changed.

The position is ``<room>_<receipt>``: the room event stream position and Synapse's
receipt stream position (the user's own read receipts change unread counts).

* Snapshot mode (first delivery, reset, or ``p`` in the request): a first page sorts
  every listed room by one bulk read per sort key (:mod:`synapse_syncv3.core.room_list`
  orders them) and builds entries for the page's rooms only; when more pages remain
  the order is stored with the response (a :class:`~synapse_syncv3.core.state.Snapshot`
  of the session's stream state) and the cursor names it. A continuation page reads
  the stored order, which must belong to the anchor in ``since``, and leaves the
  position where it is.
* Streaming mode: the rooms with a new event, a membership change of the user or a
  new read receipt of the user in (position, now], plus the rooms a previous limit cut
  left over; at most ``limit`` of them, in list order, the rest kept as
  :class:`~synapse_syncv3.core.room_list.PendingRooms`.

Every room sent goes into the session's ``room_list`` room set, which ``room_data``
serves for ``room_ids: "room_list"`` (SPEC §7.5.1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar

import attrs

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core import fields
from synapse_syncv3.core.room_list import (
    DEFAULT_SORT,
    SORTS,
    Cursor,
    PendingRooms,
    Position,
    SortedRooms,
    SortedRoomsCache,
    SortKeys,
    cut,
    invite_name,
    join_position,
    merge_keys,
    new_snapshot_id,
    page_of,
    resort,
    room_name,
    sort_rooms,
    split_position,
)
from synapse_syncv3.core.rooms import state_matches
from synapse_syncv3.core.state import Snapshot
from synapse_syncv3.errors import bad_json, invalid_param
from synapse_syncv3.streams.base import (
    JsonDict,
    LoadedPosition,
    ParsedStreamParams,
    StreamContext,
    StreamDefaults,
    StreamRequest,
    StreamResult,
)
from synapse_syncv3.streams.receipts import parse_receipt_position

DEFAULT_LIMIT = 20
DEFAULT_TIMELINE_LIMIT = 1
MAX_SORT_ENTRIES = 4

#: Changed rooms put back into a sorted list one by one; more (and more than an
#: eighth of the list) are sorted afresh.
_RESORT_MAX = 64

#: The position releases that did not serve room_list put in their tokens.
_UNSERVED_POSITION = "0"

#: Names kept per (user, room), valid while the room has no newer event.
NAME_CACHE_SIZE = 100_000


def parse_sort(obj: JsonDict) -> list[str] | None:
    if "sort" not in obj:
        return None
    value = obj["sort"]
    if not isinstance(value, list):
        raise bad_json("room_list.sort: must be a list of strings")
    if len(value) > MAX_SORT_ENTRIES:
        raise invalid_param(f"room_list.sort: at most {MAX_SORT_ENTRIES} entries")
    result: list[str] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            raise bad_json(f"room_list.sort[{index}]: must be a string")
        if entry not in SORTS:
            raise invalid_param(f"room_list.sort[{index}]: must be one of {', '.join(SORTS)}")
        if entry not in result:  # repeated values are ignored
            result.append(entry)
    return result


@attrs.frozen
class _Item:
    """A room to build an entry for."""

    room_id: str
    membership: str
    #: The membership event (invites: the invite; leave/ban: the leave).
    event_id: str | None = None
    #: Leave/ban: the room stream position of the leave.
    left_at: int | None = None
    #: Room stream position of the membership event, when known.
    position: int = 0


class _NameCache:
    """Room names per (user, room) with the room position they were computed at: a
    room's name changes only with an event in the room."""

    def __init__(self, size: int = NAME_CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], tuple[int, str]] = OrderedDict()

    def get(self, user_id: str, room_id: str, position: int) -> str | None:
        entry = self._entries.get((user_id, room_id))
        if entry is None or entry[0] != position:
            return None
        self._entries.move_to_end((user_id, room_id))
        return entry[1]

    def put(self, user_id: str, room_id: str, position: int, name: str) -> None:
        self._entries[(user_id, room_id)] = (position, name)
        self._entries.move_to_end((user_id, room_id))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class RoomListStream(StreamDefaults):
    name: ClassVar[str] = "room_list"
    code: ClassVar[str] = "l"

    def __init__(self) -> None:
        self._names = _NameCache()
        self._sorted_rooms = SortedRoomsCache()

    # -- request ---------------------------------------------------------------------

    def parse_params(self, obj: JsonDict) -> ParsedStreamParams:
        stored: JsonDict = {}
        sort = parse_sort(obj)
        if sort is not None:
            stored["sort"] = sort
        limit = fields.limit_field(obj, "room_list", "limit")
        if limit is not None:
            stored["limit"] = limit
        state_events = fields.state_events_field(obj, "room_list", "state_events")
        if state_events is not None:
            stored["state_events"] = state_events
        timeline_limit = fields.limit_field(obj, "room_list", "timeline_limit")
        if timeline_limit is not None:
            stored["timeline_limit"] = timeline_limit
        page = fields.page_field(obj, "room_list")
        return ParsedStreamParams(stored, {} if page is None else {"p": page})

    @staticmethod
    def _reset_key(params: JsonDict) -> tuple[object, ...]:
        return (
            params.get("sort") or list(DEFAULT_SORT),
            params.get("state_events", []),
            params.get("timeline_limit", DEFAULT_TIMELINE_LIMIT),
        )

    def resets(self, old: JsonDict, new: JsonDict) -> bool:
        return self._reset_key(old) != self._reset_key(new)

    def negotiate(self, params: JsonDict, limits: MaxLimits) -> JsonDict:
        return {
            "limit": fields.effective_limit(params.get("limit"), DEFAULT_LIMIT, limits.room_list),
            "sort": params.get("sort") or list(DEFAULT_SORT),
            "timeline_limit": fields.effective_timeline_limit(
                params.get("timeline_limit"), DEFAULT_TIMELINE_LIMIT, limits.room_list_timeline
            ),
        }

    # -- position --------------------------------------------------------------------

    def valid_position(self, raw: str) -> bool:
        if raw == _UNSERVED_POSITION:
            return True
        split = split_position(raw)
        return split is not None and parse_receipt_position(split[1]) is not None

    async def load_position(self, ctx: StreamContext, raw: str) -> LoadedPosition:
        if raw == _UNSERVED_POSITION:
            # Issued by a release that validated room_list without serving it: the
            # stream has never been delivered, so this is its first delivery.
            return LoadedPosition(value=None)
        split = split_position(raw)
        assert split is not None  # the token codec checked it with valid_position
        parsed = parse_receipt_position(split[1])
        assert parsed is not None
        token = await ctx.synapse.bound_room_list_position(split[0], *parsed)
        value = Position(ctx.synapse.room_key(token), ctx.synapse.receipt_key(token), raw)
        return LoadedPosition(value=value, wait_for=token)

    def moved(self, ctx: StreamContext, before: Any, after: Any) -> bool:
        synapse = ctx.synapse
        return bool(
            synapse.room_key(before) != synapse.room_key(after)
            or synapse.receipts_ahead(synapse.receipt_key(after), synapse.receipt_key(before))
        )

    async def _position_now(self, ctx: StreamContext) -> str:
        synapse = ctx.synapse
        receipt = await synapse.receipt_position_string(synapse.receipt_key(ctx.now))
        return join_position(synapse.room_key(ctx.now), receipt)

    # -- cursors -----------------------------------------------------------------------

    async def _snapshot_page(
        self, ctx: StreamContext, request: StreamRequest
    ) -> tuple[Snapshot, int] | None:
        """The stored snapshot and offset a continuation cursor names, checked
        against the anchor (SPEC §7.4); None for requests without a cursor."""
        page = request.per_request.get("p")
        if page is None or "cursor" not in page:
            return None
        cursor = Cursor.decode(page["cursor"])
        if cursor is None:
            raise invalid_param("room_list.p: not a room-list cursor")
        position = request.position
        if position is None:
            raise invalid_param("room_list.p: a cursor needs the since token of its first page")
        snapshot = await ctx.state.snapshot(cursor.snapshot_id)
        if snapshot is None:
            raise invalid_param("room_list.p: the cursor's snapshot is no longer retained")
        if snapshot.anchor != position.raw:
            raise invalid_param("room_list.p: the cursor belongs to another position")
        if cursor.offset >= len(snapshot.order):
            raise invalid_param("room_list.p: the cursor is past the end of the snapshot")
        return snapshot, cursor.offset

    async def check(self, ctx: StreamContext, request: StreamRequest) -> None:
        await self._snapshot_page(ctx, request)

    # -- compute -------------------------------------------------------------------------

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        continuation = await self._snapshot_page(ctx, request)
        if continuation is not None:
            return await self._continuation(ctx, request, *continuation)
        if request.position is None or "p" in request.per_request:
            return await self._first_page(ctx, request)
        return await self._streaming(ctx, request)

    async def _first_page(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        negotiated = self.negotiate(request.params, ctx.config.max_limits)
        limit, sort = negotiated["limit"], negotiated["sort"]
        if request.position is None:
            ctx.state.clear_rooms(self.name)  # the stream starts again
        ctx.state.discard(PendingRooms)  # the snapshot holds every change before now
        listing = await ctx.synapse.listed_rooms(ctx.user_id)
        listed = listing.rooms
        sorted_rooms = await self._sorted(ctx, listing, sort)
        anchor = await self._position_now(ctx)
        order = sorted_rooms.order
        page = page_of(order, 0, limit)
        payload: JsonDict = {"count": len(order)}
        if page.next_offset is not None:
            snapshot = Snapshot(
                new_snapshot_id(),
                anchor,
                order,
                listing.invites,
                encoded=sorted_rooms.encoded(listing.invites),
            )
            ctx.state.add_snapshot(snapshot)
            payload["p"] = {"next": Cursor(snapshot.snapshot_id, page.next_offset).encode()}
        items = [
            _Item(r, listed[r].membership, listed[r].event_id, None, listed[r].position)
            for r in page.rooms
        ]
        keys = sorted_rooms.keys
        payload["rooms"] = await self._entries(ctx, request.params, items, None, keys)
        ctx.state.record_rooms(self.name, page.rooms)
        return StreamResult(payload=_ordered_payload(payload), has_data=True, position=anchor)

    async def _sorted(self, ctx: StreamContext, listing: Any, sort: Sequence[str]) -> SortedRooms:
        """The listed rooms sorted at ``now``: the user's list sorted by an earlier
        first page, with the rooms that changed since put back in place, or sorted
        afresh from bulk reads (a membership change, a long time, many changes)."""
        synapse = ctx.synapse
        now_room = synapse.room_key(ctx.now)
        now_receipt = synapse.receipt_key(ctx.now)
        previous = self._sorted_rooms.get(ctx.user_id, sort)
        if previous is not None and previous.listing is listing:
            changed = synapse.joined_rooms_with_events_after(listing, previous.room)
            counts = "by_notification_count" in sort or "by_highlight_count" in sort
            if counts and synapse.receipts_ahead(now_receipt, previous.receipt):
                own = await synapse.own_receipt_rooms(ctx.user_id, previous.receipt, now_receipt)
                changed.update(r for r in own if r in listing.joined)
            if not changed:
                return previous
            if len(changed) <= max(_RESORT_MAX, len(listing.rooms) // 8):
                fresh = await self._sort_keys(
                    ctx, {r: listing.rooms[r] for r in changed}, sort, bulk=False
                )
                keys = merge_keys(previous.keys, fresh, changed)
                order = resort(previous.order, changed, sort, keys)
                entry = SortedRooms(listing, now_room, now_receipt, tuple(order), keys)
                self._sorted_rooms.put(ctx.user_id, sort, entry)
                return entry
        keys = await self._sort_keys(ctx, listing.rooms, sort, bulk=True)
        order = sort_rooms(listing.rooms, sort, keys)
        entry = SortedRooms(listing, now_room, now_receipt, tuple(order), keys)
        self._sorted_rooms.put(ctx.user_id, sort, entry)
        return entry

    async def _continuation(
        self, ctx: StreamContext, request: StreamRequest, snapshot: Snapshot, offset: int
    ) -> StreamResult:
        negotiated = self.negotiate(request.params, ctx.config.max_limits)
        page = page_of(snapshot.order, offset, negotiated["limit"])
        payload: JsonDict = {"count": len(snapshot.order)}
        if page.next_offset is not None:
            payload["p"] = {"next": Cursor(snapshot.snapshot_id, page.next_offset).encode()}
        items = [_Item(r, snapshot.membership(r), snapshot.invites.get(r)) for r in page.rooms]
        anchor = request.position.room
        payload["rooms"] = await self._entries(ctx, request.params, items, anchor, None)
        ctx.state.record_rooms(self.name, page.rooms)
        return StreamResult(
            payload=_ordered_payload(payload), has_data=True, position=request.position.raw
        )

    async def _streaming(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        synapse = ctx.synapse
        negotiated = self.negotiate(request.params, ctx.config.max_limits)
        limit, sort = negotiated["limit"], negotiated["sort"]
        position: Position = request.position
        now_room = synapse.room_key(ctx.now)
        now_receipt = synapse.receipt_key(ctx.now)
        listing = await synapse.listed_rooms(ctx.user_id)
        listed = listing.rooms
        pending = ctx.state.get(PendingRooms)
        changed: set[str] = set(pending.rooms) if pending is not None else set()
        memberships: Mapping[str, Any] = {}
        if position.room < now_room:
            memberships = await synapse.membership_changes(ctx.user_id, position.room, now_room)
            changed.update(memberships)
        if synapse.receipts_ahead(now_receipt, position.receipt):
            own = await synapse.own_receipt_rooms(ctx.user_id, position.receipt, now_receipt)
            changed.update(r for r in own if r in listed and listed[r].membership == "join")
        if position.room < now_room:
            # New events count in joined rooms only (an invite's entry is the
            # invite's), and only if the user may see one of them. In-memory checks
            # first: with nothing new no query is made.
            candidates = synapse.joined_rooms_with_events_after(listing, position.room)
            if candidates:
                latest = await synapse.latest_positions(candidates)
                moved = [
                    r for r in candidates if latest.get(r, 0) > position.room and r not in changed
                ]
                changed.update(
                    await synapse.rooms_with_visible_events(
                        ctx.requester, moved, position.room, now_room
                    )
                )
        next_position = await self._position_now(ctx)
        if not changed:
            return StreamResult(
                payload=_ordered_payload({"count": len(listed), "rooms": []}),
                position=next_position,
            )

        items: dict[str, _Item] = {}
        unlisted = [room_id for room_id in changed if room_id not in listed]
        current = await synapse.user_memberships(ctx.user_id) if unlisted else {}
        for room_id in changed:
            room = listed.get(room_id)
            if room is not None:
                items[room_id] = _Item(room_id, room.membership, room.event_id, None, room.position)
                continue
            now = current.get(room_id)
            # A room the user left is reported once, for the change that made it leave
            # (SPEC §7.4); knocks and forgotten rooms are not in the list.
            if now is not None and now.membership in ("leave", "ban"):
                items[room_id] = _Item(
                    room_id, now.membership, now.event_id, now.position, now.position
                )
        keys = await self._sort_keys(ctx, items, sort, bulk=False)
        ordered = sort_rooms(items, sort, keys)
        reported, rest = cut(ordered, limit)
        if rest:
            ctx.state.set(PendingRooms(rest))
        else:
            ctx.state.discard(PendingRooms)
        entries = await self._entries(ctx, request.params, [items[r] for r in reported], None, keys)
        ctx.state.record_rooms(self.name, reported)
        return StreamResult(
            payload=_ordered_payload({"count": len(listed), "rooms": entries}),
            has_data=bool(entries),
            position=next_position,
        )

    # -- sort keys -----------------------------------------------------------------------

    async def _sort_keys(
        self, ctx: StreamContext, rooms: Mapping[str, Any], sort: Sequence[str], bulk: bool
    ) -> SortKeys:
        """What ``sort`` needs of ``rooms`` (listed rooms or entry items): bulk reads
        over all of them for a first page, per-room reads for the few rooms of a
        streaming response."""
        synapse = ctx.synapse
        joined = [r for r, room in rooms.items() if room.membership == "join"]
        recency: dict[str, int] = {}
        if "by_recency" in sort or "by_name" in sort:
            recency = await self._recency(ctx, rooms, joined)
        names: dict[str, str | None] = {}
        if "by_name" in sort:
            names = await self._names_of(ctx, rooms, recency)
        notifications: dict[str, int] = {}
        highlights: dict[str, int] = {}
        if "by_notification_count" in sort or "by_highlight_count" in sort:
            if bulk:
                joined_set = frozenset(joined)
                if "by_notification_count" in sort:
                    notifications = await synapse.notification_counts(ctx.user_id, joined_set)
                if "by_highlight_count" in sort:
                    highlights = await synapse.highlight_counts(ctx.user_id, joined_set)
            else:
                counts = await synapse.unread_counts(ctx.user_id, joined)
                notifications = {r: n for r, (n, _) in counts.items()}
                highlights = {r: h for r, (_, h) in counts.items()}
        return SortKeys(recency, names, notifications, highlights)

    async def _recency(
        self, ctx: StreamContext, rooms: Mapping[str, Any], joined: Collection[str]
    ) -> dict[str, int]:
        """Position of each room's most recent event; the membership event for
        invites, for leaves, and for joined rooms this server knows nothing newer of."""
        latest = await ctx.synapse.latest_positions(joined) if joined else {}
        recency = {}
        for room_id, room in rooms.items():
            own = getattr(room, "left_at", None) or room.position
            if room.membership == "join":
                recency[room_id] = latest.get(room_id, own)
            else:
                recency[room_id] = own
        return recency

    async def _names_of(
        self, ctx: StreamContext, rooms: Mapping[str, Any], recency: Mapping[str, int]
    ) -> dict[str, str | None]:
        """Names (SPEC §7.4): joined, left and banned rooms by Synapse's rule (cached
        per room until its next event), invites from their invite state."""
        user_id = ctx.user_id
        names: dict[str, str | None] = {}
        missing = []
        for room_id, room in rooms.items():
            if room.membership == "invite":
                if room.event_id is None:
                    names[room_id] = None
                    continue
                stripped = await ctx.synapse.stripped_state(room.event_id, "invite")
                names[room_id] = invite_name(stripped)
                continue
            cached = self._names.get(user_id, room_id, recency.get(room_id, -1))
            if cached is None:
                missing.append(room_id)
            else:
                names[room_id] = cached
        if missing:
            parts = await ctx.synapse.name_parts(user_id, missing)
            for room_id in missing:
                name = room_name(parts[room_id])
                names[room_id] = name
                if room_id in recency:
                    self._names.put(user_id, room_id, recency[room_id], name)
        return names

    # -- entries ---------------------------------------------------------------------------

    async def _entries(
        self,
        ctx: StreamContext,
        params: JsonDict,
        items: Sequence[_Item],
        anchor: int | None,
        keys: SortKeys | None,
    ) -> list[JsonDict]:
        """Room entries (SPEC §7.4) of ``items``, in their order: at ``now``, or at
        the anchor of a continuation page (timeline and state; name and counts are
        current)."""
        if not items:
            return []
        synapse = ctx.synapse
        timeline_limit = self.negotiate(params, ctx.config.max_limits)["timeline_limit"]
        patterns = params.get("state_events") or []
        now = synapse.room_key(ctx.now)
        upper_of = anchor if anchor is not None else now
        by_id = {item.room_id: item for item in items}
        roomy = [i for i in items if i.membership != "invite"]
        joined = [i.room_id for i in roomy if i.membership == "join"]

        recency = dict(keys.recency) if keys is not None else {}
        lacking = [i.room_id for i in roomy if i.room_id not in recency]
        if lacking:
            recency.update(await self._recency(ctx, {r: by_id[r] for r in lacking}, joined))
        uppers = {i.room_id: i.left_at if i.left_at is not None else upper_of for i in roomy}
        timelines = await synapse.latest_timelines(ctx.requester, uppers, timeline_limit)
        serialized_timelines = await synapse.serialized_timelines(ctx.requester, timelines)
        state_ids = await self._state_ids(ctx, roomy, uppers, recency, patterns)
        serialized_state = await synapse.serialized_states(ctx.requester, state_ids)
        names = dict(keys.names) if keys is not None else {}
        unnamed = {r: by_id[r] for r in by_id if r not in names}
        if unnamed:
            names.update(await self._names_of(ctx, unnamed, recency))
        member_counts = await synapse.member_counts(i.room_id for i in roomy)
        unread = await synapse.unread_counts(ctx.user_id, joined)
        stamps = await self._timestamps(ctx, roomy, timelines, recency, upper_of)

        entries = []
        for item in items:
            room_id = item.room_id
            if item.membership == "invite":
                entries.append(await self._invite_entry(ctx, item, names.get(room_id)))
                continue
            joined_count, invited_count = member_counts.get(room_id, (0, 0))
            notifications, highlights = unread.get(room_id, (0, 0))
            entry: JsonDict = {
                "room_id": room_id,
                "membership": item.membership,
                "name": names.get(room_id),
                "joined_count": joined_count,
                "invited_count": invited_count,
                "notification_count": notifications,
                "highlight_count": highlights,
                "state_events": serialized_state.get(room_id, []),
                "timeline": serialized_timelines.get(room_id, []),
                "prev_batch": await synapse.room_token_string(ctx.now, timelines[room_id].start),
            }
            if room_id in stamps:
                entry["timestamp"] = stamps[room_id]
            entries.append(entry)
        return entries

    async def _state_ids(
        self,
        ctx: StreamContext,
        roomy: Sequence[_Item],
        uppers: Mapping[str, int],
        recency: Mapping[str, int],
        patterns: Sequence[Sequence[str]],
    ) -> dict[str, list[str]]:
        """The requested state of each room at its entry's position: the current
        state (one query) where nothing happened in the room since, else the state
        at the position from Synapse's state storage."""
        if not patterns:
            return {}
        synapse = ctx.synapse
        current_rooms = [i.room_id for i in roomy if recency.get(i.room_id, 0) <= uppers[i.room_id]]
        found: dict[str, dict[Any, str]] = await synapse.current_state_ids(current_rooms, patterns)
        for item in roomy:
            if item.room_id in found:
                continue
            full = await synapse.state_ids_at(item.room_id, uppers[item.room_id])
            found[item.room_id] = {k: e for k, e in full.items() if state_matches(patterns, k)}
        return {room_id: [state[k] for k in sorted(state)] for room_id, state in found.items()}

    async def _timestamps(
        self,
        ctx: StreamContext,
        roomy: Sequence[_Item],
        timelines: Mapping[str, Any],
        recency: Mapping[str, int],
        upper_of: int,
    ) -> dict[str, int]:
        """``origin_server_ts`` of each room's most recent event at its entry's
        position (the leave for rooms left): the timeline's last event when it is
        that event, else read by position."""
        stamps: dict[str, int] = {}
        wanted: dict[str, int] = {}
        for item in roomy:
            target = item.left_at if item.left_at is not None else recency.get(item.room_id, 0)
            events = timelines[item.room_id].events
            last = events[-1].event if events else None
            if item.left_at is None and target > upper_of:
                # A continuation page of a room with events after the anchor: the
                # newest event of the entry is the timeline's last.
                if last is not None:
                    stamps[item.room_id] = int(last.origin_server_ts)
                continue
            if last is not None and int(last.internal_metadata.stream_ordering) >= target:
                stamps[item.room_id] = int(last.origin_server_ts)
            elif target > 0:
                wanted[item.room_id] = target
        if wanted:
            stamps.update(await ctx.synapse.event_timestamps(wanted))
        return stamps

    async def _invite_entry(self, ctx: StreamContext, item: _Item, name: str | None) -> JsonDict:
        stripped: list[JsonDict] = []
        stamp = None
        if item.event_id:
            stripped = await ctx.synapse.stripped_state(item.event_id, "invite")
            events = await ctx.synapse.invite_events([item.event_id])
            event = events.get(item.event_id)
            if event is not None:
                stamp = int(event.origin_server_ts)
        entry: JsonDict = {
            "room_id": item.room_id,
            "membership": "invite",
            "name": name if name is not None else invite_name(stripped),
            "invite_state": {"events": stripped},
        }
        if stamp is not None:
            entry["timestamp"] = stamp
        return entry


def _ordered_payload(payload: JsonDict) -> JsonDict:
    """``count``, ``rooms``, then ``p`` (key order is cosmetic, kept stable)."""
    return {key: payload[key] for key in ("count", "rooms", "p") if key in payload}
