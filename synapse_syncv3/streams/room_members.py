"""The ``room_members`` stream (SPEC §7.3): the member list of one room, as sorted
pages of a snapshot pinned at the stream's position, then as member events.

* Snapshot mode (first delivery, reset, or ``p`` in the request): a first page takes
  the snapshot at ``now`` (the *anchor*, which becomes the position); a continuation
  page reads the snapshot at the anchor named by its cursor, which must be the
  position in ``since``, and leaves the position where it is.
* Streaming mode: the room's ``m.room.member`` events after the position, through
  Synapse's visibility filter, at most ``limit``.
* Visibility: joined users see the room as it is; users who left (or were kicked or
  banned) after being joined see it as of their leave; anybody sees a
  ``world_readable`` room; everybody else gets an ``M_FORBIDDEN`` stream error.
"""

from __future__ import annotations

from typing import ClassVar

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core import fields
from synapse_syncv3.core.members import (
    SORTS,
    Cursor,
    Member,
    SnapshotCache,
    page_of,
    sort_members,
)
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

DEFAULT_LIMIT = 50

FORBIDDEN_ERROR = {
    "errcode": FORBIDDEN,
    "error": "You may not see the member list of this room",
}


class RoomMembersStream(RoomPositionMixin, StreamDefaults):
    name: ClassVar[str] = "room_members"
    code: ClassVar[str] = "m"

    def __init__(self) -> None:
        self._snapshots = SnapshotCache()

    def parse_params(self, obj: JsonDict) -> ParsedStreamParams:
        if "room_id" not in obj:
            raise bad_json("room_members.room_id: required")
        stored: JsonDict = {"room_id": fields.room_id_field(obj, "room_members", "room_id")}
        limit = fields.limit_field(obj, "room_members", "limit")
        if limit is not None:
            stored["limit"] = limit
        sort = fields.enum_field(obj, "room_members", "sort", SORTS)
        if sort is not None:
            stored["sort"] = sort
        page = fields.page_field(obj, "room_members")
        return ParsedStreamParams(stored, {} if page is None else {"p": page})

    def resets(self, old: JsonDict, new: JsonDict) -> bool:
        return bool(old.get("room_id") != new.get("room_id"))

    def negotiate(self, params: JsonDict, limits: MaxLimits) -> JsonDict:
        return {
            "limit": fields.effective_limit(
                params.get("limit"), DEFAULT_LIMIT, limits.room_members
            ),
            "sort": params.get("sort", "by_pl"),
        }

    @staticmethod
    def _cursor(params: JsonDict, request: StreamRequest) -> Cursor | None:
        """The continuation cursor of the request, checked against the room, the sort
        and the anchor (the position in ``since``); None for other requests."""
        page = request.per_request.get("p")
        if page is None or "cursor" not in page:
            return None
        cursor = Cursor.decode(page["cursor"])
        if cursor is None:
            raise invalid_param("room_members.p: not a member-list cursor")
        sort = params.get("sort", "by_pl")
        if request.position is None or not cursor.matches(
            params["room_id"], sort, request.position
        ):
            raise invalid_param(
                "room_members.p: the cursor belongs to another room, sort or position"
            )
        return cursor

    async def check(self, ctx: StreamContext, request: StreamRequest) -> None:
        self._cursor(request.params, request)

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        params, position = request.params, request.position
        negotiated = self.negotiate(params, ctx.config.max_limits)
        limit, sort = negotiated["limit"], negotiated["sort"]
        room_id: str = params["room_id"]
        now = ctx.synapse.room_key(ctx.now)

        cursor = self._cursor(params, request)
        if cursor is not None:
            # Continuation page: the position stays the anchor; never waits.
            return await self._snapshot_page(ctx, room_id, sort, limit, position, cursor.offset)
        if position is None or "p" in request.per_request:
            return await self._snapshot_page(ctx, room_id, sort, limit, now, 0)
        return await self._stream(ctx, room_id, limit, position, now)

    async def _snapshot_page(
        self, ctx: StreamContext, room_id: str, sort: str, limit: int, anchor: int, offset: int
    ) -> StreamResult:
        view = await ctx.synapse.membership_view(ctx.user_id, room_id)
        if view.membership == "join" or view.world_readable:
            state_at = anchor
        elif view.left_at is not None:
            state_at = min(anchor, view.left_at)
        else:
            return StreamResult(position=str(anchor), error=FORBIDDEN_ERROR)

        snapshot = await self._snapshot(ctx, room_id, state_at, sort)
        try:
            page = page_of(snapshot, offset, limit)
        except IndexError:
            raise invalid_param(
                "room_members.p: the cursor is past the end of the snapshot"
            ) from None
        events = await ctx.synapse.serialized_state_events(
            ctx.requester, [member.event_id for member in page.members]
        )
        payload: JsonDict = {"count": len(snapshot), "events": events}
        if page.next_offset is not None:
            payload["p"] = {
                "next": Cursor.for_page(room_id, sort, anchor, page.next_offset).encode()
            }
        return StreamResult(payload=payload, has_data=True, position=str(anchor))

    async def _snapshot(
        self, ctx: StreamContext, room_id: str, state_at: int, sort: str
    ) -> list[Member]:
        key = (room_id, state_at, sort)
        cached = self._snapshots.get(key)
        if cached is not None:
            return cached
        snapshot = sort_members(await ctx.synapse.member_state_at(room_id, state_at), sort)
        return self._snapshots.put(key, snapshot)

    async def _stream(
        self, ctx: StreamContext, room_id: str, limit: int, position: int, now: int
    ) -> StreamResult:
        # The visibility check comes first: the error object is owed whenever the
        # stream key is in the body, data or not (SPEC §7.3).
        view = await ctx.synapse.membership_view(ctx.user_id, room_id)
        up_to = now
        if view.membership != "join" and not view.world_readable:
            if view.left_at is None:
                return StreamResult(position=str(max(position, now)), error=FORBIDDEN_ERROR)
            up_to = min(now, view.left_at)  # the leave itself is included
        if position >= up_to or not ctx.synapse.room_changed_since(room_id, position):
            return StreamResult(payload={"events": []}, position=str(max(position, now)))
        found = await ctx.synapse.member_event_ids_between(room_id, position, up_to, limit)
        cut = len(found) == limit
        events = await ctx.synapse.visible_serialized_events(
            ctx.requester,
            [event_id for event_id, _ in found],
            is_peeking=view.membership != "join",
        )
        next_position = found[-1][1] if cut else now
        return StreamResult(
            payload={"events": events},
            has_data=bool(events) or cut,
            position=str(next_position),
        )
