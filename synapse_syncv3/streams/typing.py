"""The ``typing`` stream (SPEC §7.1): current typing users in tracked joined rooms."""

from __future__ import annotations

from typing import Any, ClassVar

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core import fields
from synapse_syncv3.errors import bad_json
from synapse_syncv3.streams.base import (
    INT_POSITION_RE,
    JsonDict,
    LoadedPosition,
    ParsedStreamParams,
    StreamContext,
    StreamDefaults,
    StreamRequest,
    StreamResult,
)


def tracked_rooms(params: JsonDict) -> list[str]:
    if "room_id" in params:
        return [params["room_id"]]
    return list(params.get("room_ids", []))


class TypingStream(StreamDefaults):
    name: ClassVar[str] = "typing"
    code: ClassVar[str] = "t"

    def parse_params(self, obj: JsonDict) -> ParsedStreamParams:
        if ("room_id" in obj) == ("room_ids" in obj):
            raise bad_json("typing: exactly one of room_id and room_ids is required")
        if "room_id" in obj:
            return ParsedStreamParams({"room_id": fields.room_id_field(obj, "typing", "room_id")})
        return ParsedStreamParams(
            {"room_ids": fields.room_ids_list(obj["room_ids"], "typing.room_ids")}
        )

    def resets(self, old: JsonDict, new: JsonDict) -> bool:
        # The only fields are the tracked rooms, and any change of them resets,
        # including switching between the single- and multi-room forms.
        return old != new

    def negotiate(self, params: JsonDict, limits: MaxLimits) -> JsonDict:
        return {}

    def valid_position(self, raw: str) -> bool:
        return bool(INT_POSITION_RE.fullmatch(raw))

    async def load_position(self, ctx: StreamContext, raw: str) -> LoadedPosition:
        # Typing is an in-memory stream that restarts from 0 with Synapse: a position
        # ahead of the current one is clamped (SPEC §4.4 property 7).
        return LoadedPosition(value=min(int(raw), ctx.synapse.current_typing_key()))

    def moved(self, ctx: StreamContext, before: Any, after: Any) -> bool:
        return ctx.synapse.typing_key(before) != ctx.synapse.typing_key(after)

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        params, position = request.params, request.position
        now_key = ctx.synapse.typing_key(ctx.now)
        single = "room_id" in params
        changed: dict[str, list[str]] = {}
        rooms: list[str] = []
        has_data = position is None
        if position is None or position < now_key:
            joined = await ctx.synapse.joined_rooms(ctx.user_id)
            rooms = [room_id for room_id in tracked_rooms(params) if room_id in joined]
        if position is None:
            # First delivery: every tracked joined room with its current set.
            current = await ctx.synapse.typing_in_rooms(ctx.user_id, rooms, from_key=0, to_key=None)
            changed = {room_id: current.get(room_id, []) for room_id in rooms}
        elif position < now_key:
            changed = await ctx.synapse.typing_in_rooms(
                ctx.user_id, rooms, from_key=position, to_key=now_key
            )
            has_data = bool(changed)

        if single:
            payload: JsonDict = {}
            if rooms and rooms[0] in changed:
                payload["user_ids"] = changed[rooms[0]]
        else:
            payload = {
                "rooms": {room_id: {"user_ids": users} for room_id, users in changed.items()}
            }
        return StreamResult(
            payload=payload, has_data=has_data, position=str(max(now_key, position or 0))
        )
