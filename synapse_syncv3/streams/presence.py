"""The ``presence`` stream (SPEC §7.8): m.presence events of the users who share a
room with the user, and of the user, as Synapse's v2 sync selects them.

``set_presence`` (SPEC §3.2) is not this stream's business: the handler honours it on
every request, whether or not the stream is requested.
"""

from __future__ import annotations

from typing import Any, ClassVar

from synapse_syncv3.streams.base import (
    INT_POSITION_RE,
    LoadedPosition,
    NoFieldsMixin,
    StreamContext,
    StreamRequest,
    StreamResult,
)


class PresenceStream(NoFieldsMixin):
    name: ClassVar[str] = "presence"
    code: ClassVar[str] = "p"

    def valid_position(self, raw: str) -> bool:
        return bool(INT_POSITION_RE.fullmatch(raw))

    async def load_position(self, ctx: StreamContext, raw: str) -> LoadedPosition:
        bounded = await ctx.synapse.bound_presence_position(int(raw))
        return LoadedPosition(value=ctx.synapse.presence_key(bounded), wait_for=bounded)

    def moved(self, ctx: StreamContext, before: Any, after: Any) -> bool:
        return ctx.synapse.presence_key(before) != ctx.synapse.presence_key(after)

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        position = request.position
        now_key = ctx.synapse.presence_key(ctx.now)
        first = position is None
        if not ctx.synapse.presence_enabled():
            # Never data, not even the "everyone is offline" updates Synapse writes
            # when presence gets disabled (SPEC §7.8).
            return StreamResult(payload={"events": []}, position=str(max(now_key, position or 0)))
        if not first and position >= now_key:
            # The notifier wakes the user for the presence of anyone sharing a room,
            # and every wake recomputes every stream: this path must stay cheap.
            return StreamResult(payload={"events": []}, position=str(position))
        _, _, is_guest = ctx.synapse.requester_identity(ctx.requester)
        # The source gives the *current* state of every user who changed after the
        # position, and the presence position that covers them (at least now_key).
        events, key = await ctx.synapse.presence_events(ctx.user_id, is_guest, position)
        return StreamResult(
            payload={"events": events},
            has_data=first or bool(events),
            position=str(max(key, now_key, position or 0)),
        )
