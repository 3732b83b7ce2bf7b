"""The ``room_data`` stream (SPEC §7.5, §9): timelines and state of chosen rooms.

The position is the room event stream position (like ``room_members``). Which rooms
the client has received a first delivery of is per-session stream state (the
``room_data`` room set of :mod:`synapse_syncv3.core.state`), so that a first delivery
counts only once the client presents a later ``since`` (SPEC §7.5.2).

Per room (SPEC §9): what to say comes from :func:`synapse_syncv3.core.rooms.plan_room`
(membership now and its transitions in the interval); the timeline is the last
``timeline_limit`` visible events up to now or up to the user's leave; ``state`` is
built by :func:`synapse_syncv3.core.rooms.state_section` from the state before the
first timeline event and the state the client has, both read from Synapse's state
storage. An incremental timeline that is not limited and whose first event follows
directly on the last event before the interval (its only ``prev_event``) needs neither:
the state before it is the state the client has, so ``state`` is empty (lazy-loaded
members aside). That is the common case of a long-poll woken by a message, and costs
one query instead of the two state lookups.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core import fields
from synapse_syncv3.core.rooms import ALL_STATE, RoomPlan, plan_room, state_section
from synapse_syncv3.errors import FORBIDDEN, bad_json, invalid_param
from synapse_syncv3.streams.base import (
    JsonDict,
    ParsedStreamParams,
    RoomPositionMixin,
    StreamContext,
    StreamDefaults,
    StreamRequest,
    StreamResult,
)

if TYPE_CHECKING:
    from synapse_syncv3.compat.rooms import RoomTimeline

DEFAULT_TIMELINE_LIMIT = 20
ROOM_LIST_SET = "room_list"

FORBIDDEN_ERROR = {"errcode": FORBIDDEN, "error": "You have no membership in this room"}

#: Rooms whose last event :class:`LastEvents` remembers (least recently used go first).
LAST_EVENTS_SIZE = 10_000


class LastEvents:
    """The last event of a room at stream positions, learnt from what ``room_data``
    reads anyway, so that a long-poll woken by a message in a room finds the event its
    timeline must follow on without a query (see ``_timeline_entry``).

    An entry ``(event id, low, high)`` says: at every position p with low <= p <= high,
    the room's last event at or before p is that event. Positions up to Synapse's
    current token are final (every event at or below it is persisted), so an entry
    stays true; it grows only with the knowledge that the room had no event in the
    added range. One instance per process: a worker that learnt nothing asks the
    database.
    """

    def __init__(self, size: int = LAST_EVENTS_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[str, int, int]] = OrderedDict()

    def get(self, room_id: str, position: int) -> str | None:
        entry = self._entries.get(room_id)
        if entry is None or not entry[1] <= position <= entry[2]:
            return None
        self._entries.move_to_end(room_id)
        return entry[0]

    def learn(self, room_id: str, event_id: str, low: int, high: int) -> None:
        """``event_id`` is the room's last event at every position in [low, high]."""
        if low > high:
            return
        self._entries[room_id] = (event_id, low, high)
        self._entries.move_to_end(room_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def quiet(self, room_id: str, after: int, up_to: int) -> None:
        """The room had no event in (after, up_to]: an entry that holds at ``after``
        holds up to ``up_to``."""
        entry = self._entries.get(room_id)
        if entry is not None and entry[1] <= after <= entry[2] < up_to:
            self._entries[room_id] = (entry[0], entry[1], up_to)


class RoomDataStream(RoomPositionMixin, StreamDefaults):
    name: ClassVar[str] = "room_data"
    code: ClassVar[str] = "r"

    def __init__(self) -> None:
        self._last_events = LastEvents()

    def parse_params(self, obj: JsonDict) -> ParsedStreamParams:
        if "room_ids" not in obj:
            raise bad_json("room_data.room_ids: required")
        room_ids = obj["room_ids"]
        stored: JsonDict = {}
        if isinstance(room_ids, str):
            if room_ids != ROOM_LIST_SET:
                raise invalid_param('room_data.room_ids: the only string allowed is "room_list"')
            stored["room_ids"] = ROOM_LIST_SET
        else:
            stored["room_ids"] = fields.room_ids_list(room_ids, "room_data.room_ids")
        timeline_limit = fields.limit_field(obj, "room_data", "timeline_limit")
        if timeline_limit is not None:
            stored["timeline_limit"] = timeline_limit
        state_events = fields.state_events_field(obj, "room_data", "state_events")
        if state_events is not None:
            stored["state_events"] = state_events
        lazy = fields.bool_field(obj, "room_data", "lazy_load_members")
        if lazy is not None:
            stored["lazy_load_members"] = lazy
        full_state = fields.bool_field(obj, "room_data", "full_state")
        return ParsedStreamParams(stored, {"full_state": True} if full_state else {})

    def resets(self, old: JsonDict, new: JsonDict) -> bool:
        # Changes of state_events or lazy_load_members reset every room; a change of
        # room_ids only gives the added rooms a first delivery (§5.4, §7.5.2).
        return (old.get("state_events"), bool(old.get("lazy_load_members"))) != (
            new.get("state_events"),
            bool(new.get("lazy_load_members")),
        )

    def fresh_rooms(self, old: JsonDict, new: JsonDict) -> frozenset[str]:
        # Rooms added to an explicit list get their first delivery (SPEC §5.4,
        # §7.5.2); switching to or from the "room_list" set is the room_list
        # stream's business (its rooms enter the set as they are sent).
        before, after = old.get("room_ids"), new.get("room_ids")
        if not isinstance(after, list):
            return frozenset()
        return frozenset(after) - frozenset(before if isinstance(before, list) else ())

    def answer_at_once(self, per_request: JsonDict) -> bool:
        return bool(per_request.get("full_state"))

    def negotiate(self, params: JsonDict, limits: MaxLimits) -> JsonDict:
        return {
            "timeline_limit": fields.effective_timeline_limit(
                params.get("timeline_limit"), DEFAULT_TIMELINE_LIMIT, limits.room_data_timeline
            )
        }

    async def _room_set(self, ctx: StreamContext, params: JsonDict) -> list[str]:
        room_ids = params["room_ids"]
        if room_ids == ROOM_LIST_SET:
            # Every room room_list has sent to this session (SPEC §7.5.1), this
            # response included (room_list is computed first).
            return sorted(await ctx.state.sent_rooms(ROOM_LIST_SET))
        return list(room_ids)

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        synapse = ctx.synapse
        params, position = request.params, request.position
        now = synapse.room_key(ctx.now)
        full_state = bool(request.per_request.get("full_state"))
        rooms = await self._room_set(ctx, params)
        if position is None:
            ctx.state.clear_rooms(self.name)  # the stream starts again: every room is new
        known = await ctx.state.known_rooms(self.name, rooms)
        owed = {r for r in rooms if r not in known or r in request.fresh_rooms}
        changes = {}
        changed: set[str] = set()
        if position is not None and position < now:
            # Both in-memory checks first: with nothing new no query is made.
            changed = synapse.rooms_changed_since(rooms, position)
            changes = await synapse.membership_changes(ctx.user_id, position, now)
            for room_id in rooms:
                if room_id not in changed:
                    self._last_events.quiet(room_id, position, now)
        candidates = [r for r in rooms if r in owed or r in changes or r in changed or full_state]
        if not candidates:
            return StreamResult(payload={"rooms": {}}, position=str(max(position or 0, now)))

        memberships = await synapse.user_memberships(ctx.user_id, candidates)
        ignored = await synapse.ignored_inviters(ctx.user_id)
        entries: dict[str, JsonDict] = {}
        delivered: list[str] = []
        for room_id in candidates:
            current = memberships.get(room_id)
            plan = plan_room(
                membership=current.membership if current else None,
                membership_position=current.position if current else None,
                changes=changes.get(room_id, ()),
                position=position,
                now=now,
                first=room_id in owed,
                full_state=full_state,
                room_changed=room_id in changed,
            )
            if plan is None:
                continue
            if plan.kind in ("invite", "knock"):
                assert current is not None
                if plan.kind == "invite" and ignored.ignores(current.sender):
                    continue  # invites from ignored users are never reported (SPEC §9.1)
                stripped = await synapse.stripped_state(current.event_id, plan.kind)
                entries[room_id] = {
                    "membership": plan.kind,
                    f"{plan.kind}_state": {"events": stripped},
                }
            elif plan.kind == "forbidden":
                entries[room_id] = dict(FORBIDDEN_ERROR)
            else:
                entry = await self._timeline_entry(ctx, params, room_id, plan, full_state)
                if entry is None:
                    continue
                entries[room_id] = entry
            if plan.first:
                delivered.append(room_id)
        ctx.state.record_rooms(self.name, delivered)
        # Error entries are not data (SPEC §7.5), but rooms this request added are: a
        # change of room_ids resets them (SPEC §5.4, §6.1), whatever their entry.
        has_data = any(
            "errcode" not in entry or room_id in request.fresh_rooms
            for room_id, entry in entries.items()
        )
        return StreamResult(
            payload={"rooms": entries},
            has_data=has_data,
            position=str(max(position or 0, now)),
        )

    async def _timeline_entry(
        self,
        ctx: StreamContext,
        params: JsonDict,
        room_id: str,
        plan: RoomPlan,
        full_state: bool,
    ) -> JsonDict | None:
        """The entry of a joined, left or banned room (SPEC §9.2–9.8)."""
        synapse = ctx.synapse
        limit = self.negotiate(params, ctx.config.max_limits)["timeline_limit"]
        timeline = await synapse.room_timeline(
            ctx.requester, room_id, upper=plan.upper, lower=plan.lower, limit=limit
        )
        # What is known of the last event before the interval, then what the timeline
        # teaches (which replaces it: one entry per room).
        last = None if plan.lower is None else self._last_events.get(room_id, plan.lower)
        if timeline.newest is not None:
            self._last_events.learn(room_id, *timeline.newest, plan.upper)
        elif timeline.interval_empty and plan.lower is not None:
            self._last_events.quiet(room_id, plan.lower, plan.upper)
        lazy = None
        if params.get("lazy_load_members"):
            lazy = {*timeline.senders, ctx.user_id}
        incremental = not plan.first and not full_state and plan.lower is not None
        if incremental and timeline.event_ids and not timeline.limited:
            assert plan.lower is not None
            if last is None:
                last = await synapse.last_event_before(room_id, plan.lower)
            if last is not None and timeline.first_prev_ids == (last,):
                # The first timeline event follows directly on the last event the
                # client has seen, so the state before it is the state the client
                # has (SPEC §9.2: nothing differs, the changes are in the timeline;
                # v2 sync's linear-timeline rule). Only lazy-loaded members are sent
                # again, as of the start.
                if lazy is None:
                    return await self._entry(ctx, room_id, plan, timeline, {})
                start = await synapse.state_ids_at(room_id, timeline.start)
                return await self._entry(
                    ctx,
                    room_id,
                    plan,
                    timeline,
                    state_section(
                        start=start,
                        previous=start,
                        timeline_ids=timeline.event_ids,
                        patterns=params.get("state_events") or ALL_STATE,
                        lazy_members=lazy,
                    ),
                )
        start = await synapse.state_ids_at(room_id, timeline.start)
        previous: dict[Any, str] = {}
        if incremental:
            assert plan.lower is not None
            if last is None:
                last = await synapse.last_event_before(room_id, plan.lower)
            previous = await synapse.state_ids_after(last)
        state = state_section(
            start=start,
            previous=previous,
            timeline_ids=timeline.event_ids,
            patterns=params.get("state_events") or ALL_STATE,
            lazy_members=lazy,
        )
        if incremental and not timeline.event_ids and not state:
            return None
        return await self._entry(ctx, room_id, plan, timeline, state)

    async def _entry(
        self,
        ctx: StreamContext,
        room_id: str,
        plan: RoomPlan,
        timeline: RoomTimeline,
        state: dict[Any, str],
    ) -> JsonDict:
        synapse = ctx.synapse
        return {
            "membership": plan.kind,
            "timeline": {
                "events": await synapse.serialized_timeline(
                    ctx.requester, timeline, bundle=timeline.limited or plan.first
                ),
                "limited": timeline.limited,
                "prev_batch": await synapse.room_token_string(ctx.now, timeline.start),
            },
            "state": {"events": await synapse.serialized_state(ctx.requester, _ordered(state))},
        }


def _ordered(state: dict[Any, str]) -> list[str]:
    """Event ids of a state section in a stable order (by type, then state key)."""
    return [state[key] for key in sorted(state)]
