"""Rooms as ``room_data`` serves them: the user's memberships and their changes,
timelines through Synapse's visibility filter, state at stream positions from
Synapse's state storage, stripped invite/knock state, ``prev_batch`` tokens.

Synapse area: the room stores (``get_rooms_for_local_user_where_membership_is``,
``get_membership_changes_for_user``, ``paginate_room_events_by_stream_ordering``,
``get_rooms_that_changed``, ``check_if_events_in_current_state``, ``ignored_users``,
``get_invite_config_for_user``, ``get_last_event_id_in_room_before_stream_ordering``),
``StateStorageController.get_state_ids_at`` and ``get_state_after_event``,
``synapse.visibility``, the relations
handler (bundled aggregations) and ``synapse.events.utils.strip_event``.

Versions: every call here is unchanged from 1.152.0 to 1.163 (SYNAPSE-ROOMS.md §A2,
§A7, §B5); ``filter_and_transform_events_for_client`` returns ``FilteredEvent``s and
``get_bundled_aggregations`` takes them over the whole supported range.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import attrs
from synapse.api.constants import Direction, Membership
from synapse.events.utils import FilteredEvent, strip_event
from synapse.storage.invite_rule import AllowAllInviteRulesConfig, InviteRule
from synapse.types import RoomStreamToken, StreamKeyType, StreamToken

from synapse_syncv3.compat.base import JsonDict
from synapse_syncv3.compat.timeline import TimelineMixin
from synapse_syncv3.core.rooms import MembershipChange, StateKey

__all__ = ["CurrentMembership", "IgnoredInviters", "RoomTimeline", "RoomsMixin"]

#: Pages of raw events fetched to fill one timeline before giving up and calling it
#: limited (v2 sync tries 5 times too): bounds the work for rooms where the user may
#: see almost nothing.
MAX_TIMELINE_PAGES = 5

#: Keys of a stripped state event (SPEC §1.5).
_STRIPPED_KEYS = ("type", "state_key", "sender", "content")


@attrs.frozen
class CurrentMembership:
    membership: str
    event_id: str
    sender: str
    #: Room stream position of the membership event.
    position: int


@attrs.frozen
class IgnoredInviters:
    """Whose invites the user does not see (SPEC §7.4, §9.1), as v2 sync decides: the
    users of the ``m.ignored_user_list`` and, where the server enables an invite
    permission config with ignore rules (MSC4155, experimental), the senders it
    ignores."""

    users: frozenset[str]
    #: Synapse's ``InviteRulesConfig`` for the user; None when it allows every invite.
    rules: Any = attrs.field(default=None, eq=False)

    def ignores(self, sender: str) -> bool:
        if sender in self.users:
            return True
        return self.rules is not None and self.rules.get_invite_rule(sender) == InviteRule.IGNORE


@attrs.frozen
class RoomTimeline:
    """The visible events of a room's timeline, oldest first."""

    #: ``FilteredEvent``s, to serialize with :meth:`RoomsMixin.serialized_timeline`.
    events: Sequence[Any]
    event_ids: Sequence[str]
    senders: frozenset[str]
    #: Whether visible events of the interval precede the timeline (SPEC §9.6).
    limited: bool
    #: The stream position just before the first event (the end of the interval for
    #: an empty timeline): where the state of the entry is taken and ``prev_batch``
    #: points.
    start: int
    #: The ``prev_events`` of the first timeline event (empty for an empty timeline):
    #: whether it follows directly on the last event before the interval.
    first_prev_ids: tuple[str, ...] = ()
    #: The newest event with position <= upper, visible or not (rejected events and
    #: outliers are not events of the room's stream), as (event id, position): the
    #: room's last event at every position from its own to ``upper``. None when the
    #: interval holds none or it is not known.
    newest: tuple[str, int] | None = None
    #: Whether the interval holds no event at all, visible or not.
    interval_empty: bool = False


class RoomsMixin(TimelineMixin):
    """The room reads of ``room_data`` (SPEC §7.5, §9)."""

    #: ``now`` and its token string after the room part (see room_token_string).
    _token_rest: tuple[StreamToken, str] | None = None

    async def user_memberships(
        self, user_id: str, room_ids: Collection[str] | None = None
    ) -> dict[str, CurrentMembership]:
        """The user's current membership of every room that has one (forgotten rooms
        have none), with the membership event; only of ``room_ids`` if given (the list
        Synapse caches holds every room of the user: a long-poll woken for one room
        does not build an entry for each of thousands)."""
        rooms = await self._store.get_rooms_for_local_user_where_membership_is(
            user_id, Membership.LIST
        )
        wanted = None if room_ids is None else frozenset(room_ids)
        return {
            room.room_id: CurrentMembership(
                room.membership, room.event_id, room.sender, int(room.event_pos.stream)
            )
            for room in rooms
            if wanted is None or room.room_id in wanted
        }

    async def membership_changes(
        self, user_id: str, after: int, up_to: int
    ) -> dict[str, list[MembershipChange]]:
        """The user's membership events with after < position <= up_to, per room,
        oldest first (an in-memory check first: nothing changed costs no query)."""
        events = await self._store.get_membership_changes_for_user(
            user_id, RoomStreamToken(stream=after), RoomStreamToken(stream=up_to)
        )
        changes: dict[str, list[MembershipChange]] = {}
        for event in events:
            previous = event.unsigned.get("prev_content", {}).get("membership")
            changes.setdefault(event.room_id, []).append(
                MembershipChange(
                    membership=event.membership,
                    position=int(event.internal_metadata.stream_ordering),
                    previous=previous if isinstance(previous, str) else None,
                )
            )
        return changes

    def rooms_changed_since(self, room_ids: Collection[str], position: int) -> set[str]:
        """The rooms that may have events after ``position`` (Synapse's in-memory
        stream change cache: may over-report, never under-reports)."""
        if not room_ids:
            return set()
        return set(self._store.get_rooms_that_changed(room_ids, RoomStreamToken(stream=position)))

    async def ignored_inviters(self, user_id: str) -> IgnoredInviters:
        """The user's ignored users and invite rules (both cached by Synapse)."""
        users = frozenset(await self._store.ignored_users(user_id))
        rules = await self._store.get_invite_config_for_user(user_id)
        if isinstance(rules, AllowAllInviteRulesConfig):
            rules = None
        return IgnoredInviters(users, rules)

    async def room_timeline(
        self, requester: Any, room_id: str, *, upper: int, lower: int | None, limit: int
    ) -> RoomTimeline:
        """The last ``limit`` events with lower < position <= upper (from the creation
        of the room when ``lower`` is None) that the user may see, as v2 sync filters
        them: history visibility at each event, ignored users, erasure, soft failure;
        state events still in the room's current state are always kept."""
        user_id = requester.user.to_string()
        from_key = RoomStreamToken(stream=upper)
        to_key = RoomStreamToken(stream=lower) if lower is not None else None
        page = max(2 * limit, 10)
        visible: list[Any] = []
        exhausted = False
        newest: tuple[str, int] | None = None
        interval_empty = False
        for page_number in range(MAX_TIMELINE_PAGES):
            if len(visible) > limit:
                break
            events, from_key, more = await self._store.paginate_room_events_by_stream_ordering(
                room_id=room_id,
                from_key=from_key,
                to_key=to_key,
                direction=Direction.BACKWARDS,
                limit=page,
            )
            events.reverse()
            if page_number == 0:
                # The first page is the newest: its last event is the room's last event
                # at upper (get_events drops rejected events, the query outliers).
                if events:
                    last = events[-1]
                    newest = (last.event_id, int(last.internal_metadata.stream_ordering))
                elif not more:
                    interval_empty = True
            state_ids = {event.event_id for event in events if event.is_state()}
            current = (
                await self._store.check_if_events_in_current_state(state_ids)
                if state_ids
                else frozenset()
            )
            filtered = await self._visible_to(user_id, events, always_include_ids=current)
            visible = [*filtered, *visible]
            if not more:
                exhausted = True
                break
        # Limited when visible events precede the timeline, or when the interval was
        # not examined to its start (SPEC §9.6 allows that).
        limited = len(visible) > limit or not exhausted
        timeline = visible[-limit:] if limit else []
        start = upper
        if timeline:
            start = int(timeline[0].event.internal_metadata.stream_ordering) - 1
        return RoomTimeline(
            events=timeline,
            event_ids=[item.event.event_id for item in timeline],
            senders=frozenset(item.event.sender for item in timeline),
            limited=limited,
            start=start,
            first_prev_ids=tuple(timeline[0].event.prev_event_ids()) if timeline else (),
            newest=newest,
            interval_empty=interval_empty,
        )

    async def serialized_timeline(
        self, requester: Any, timeline: RoomTimeline, bundle: bool
    ) -> list[JsonDict]:
        """Timeline events as v2 sync serializes them, with bundled aggregations when
        ``bundle`` (v2 sync bundles them for limited and newly joined rooms)."""
        aggregations = None
        if bundle and timeline.events:
            aggregations = await self._bundled_aggregations(
                list(timeline.events), requester.user.to_string()
            )
        return await self._serialize(requester, list(timeline.events), aggregations)

    async def serialized_state(self, requester: Any, event_ids: list[str]) -> list[JsonDict]:
        """State events in client format with ``unsigned.prev_content`` (SPEC §1.5), in
        the order of ``event_ids``."""
        if not event_ids:
            return []
        events = await self._store.get_events(event_ids, get_prev_content=True)
        present = [FilteredEvent.state(events[e]) for e in event_ids if e in events]
        return await self._serialize(requester, present)

    async def state_ids_at(self, room_id: str, position: int) -> dict[StateKey, str]:
        """The room's state after the last event at or before ``position``, from
        Synapse's state storage (state groups, so state resolution included)."""
        token = self._at_room_position(position)
        state = await self._hs.get_storage_controllers().state.get_state_ids_at(
            room_id, token, await_full_state=False
        )
        return {(str(t), str(k)): str(e) for (t, k), e in state.items()}

    async def last_event_before(self, room_id: str, position: int) -> str | None:
        """The id of the room's last event at or before ``position`` (None: none), the
        event whose state :meth:`state_ids_at` returns (one query)."""
        event_id = await self._store.get_last_event_id_in_room_before_stream_ordering(
            room_id, end_token=RoomStreamToken(stream=position)
        )
        return str(event_id) if event_id else None

    async def state_ids_after(self, event_id: str | None) -> dict[StateKey, str]:
        """The room's state after ``event_id`` (empty for None), as :meth:`state_ids_at`
        reads it at a position whose last event is ``event_id``."""
        if event_id is None:
            return {}
        state = await self._hs.get_storage_controllers().state.get_state_after_event(
            event_id, await_full_state=False
        )
        return {(str(t), str(k)): str(e) for (t, k), e in state.items()}

    async def stripped_state(self, event_id: str, kind: str) -> list[JsonDict]:
        """``invite_state`` / ``knock_state`` events of an invite or knock: the
        stripped state the inviting server gave, then the membership event itself,
        stripped (SPEC §1.5, §7.4)."""
        event = await self._store.get_event(event_id, allow_none=True)
        if event is None:
            return []
        raw = event.unsigned.get(f"{kind}_room_state") or []
        events = [
            {key: item[key] for key in _STRIPPED_KEYS if key in item}
            for item in raw
            if isinstance(item, dict)
        ]
        events.append(strip_event(event))
        return events

    async def room_token_string(self, now: StreamToken, position: int) -> str:
        """A ``StreamToken`` string of ``now`` with the room position ``position``, as
        v2 sync's ``prev_batch`` (``GET /rooms/{id}/messages?dir=b`` continues from it).

        A plain room position is ``s<position>``, the first of the token's parts: the
        other parts are those of ``now``, rendered once per ``now`` (a response asks
        for one per room)."""
        cached = self._token_rest
        if cached is None or cached[0] != now:
            whole = str(await now.to_string(self._store))
            cached = (now, whole.split("_", 1)[1])
            self._token_rest = cached
        return f"s{position}_{cached[1]}"

    def _at_room_position(self, position: int, now: StreamToken | None = None) -> StreamToken:
        base = now if now is not None else self.current_token()
        return base.copy_and_replace(StreamKeyType.ROOM, RoomStreamToken(stream=position))
