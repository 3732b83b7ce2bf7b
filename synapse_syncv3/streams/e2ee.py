"""The ``e2ee`` stream (SPEC §7.9): device-list changes, one-time-key counts and
unused fallback key types of the requesting device.

Only a device-list change is data; the counts ride along. The handler shows this
stream's object whenever another stream object with data appears (the extra presence
rule), so every result carries the full payload.

The position is ``<room>_<device lists>``: the device-list stream position, and the
room stream position that ``device_lists.left`` and newly shared users are computed
from (membership changes, as v2 sync does). Each half is in Synapse's own string form.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from synapse_syncv3.streams.base import (
    JsonDict,
    LoadedPosition,
    NoFieldsMixin,
    StreamContext,
    StreamRequest,
    StreamResult,
)

# Synapse's multi-writer token forms: ``N`` (or ``sN`` for the room stream), and
# ``mN~<instance id>.<position>~…`` when some writer is ahead of N.
_NUMBER = r"(0|[1-9][0-9]{0,17})"
_WRITERS = rf"(~{_NUMBER}\.{_NUMBER})+"
_ROOM = rf"(s{_NUMBER}|m{_NUMBER}{_WRITERS})"
_DEVICE_LISTS = rf"({_NUMBER}|m{_NUMBER}{_WRITERS})"
E2EE_POSITION_RE = re.compile(rf"^{_ROOM}_{_DEVICE_LISTS}$")


class E2EEStream(NoFieldsMixin):
    name: ClassVar[str] = "e2ee"
    code: ClassVar[str] = "e"

    def valid_position(self, raw: str) -> bool:
        return bool(E2EE_POSITION_RE.fullmatch(raw))

    async def load_position(self, ctx: StreamContext, raw: str) -> LoadedPosition:
        bounded = await ctx.synapse.load_e2ee_position(raw)
        return LoadedPosition(value=bounded, wait_for=bounded)

    def moved(self, ctx: StreamContext, before: Any, after: Any) -> bool:
        return bool(ctx.synapse.e2ee_position_behind(before, after))

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        position = request.position
        payload: JsonDict = {}
        has_data = position is None
        next_position = ctx.now
        if position is not None:
            if ctx.synapse.e2ee_position_behind(position, ctx.now):
                changed, left = await ctx.synapse.device_list_changes(ctx.user_id, position)
                if changed or left:
                    payload["device_lists"] = {"changed": changed, "left": left}
                    has_data = True
            else:
                # Nothing moved (a wake for presence, typing, ...): keep the position.
                next_position = position
        payload["device_one_time_keys_count"] = await ctx.synapse.one_time_key_counts(
            ctx.user_id, ctx.device_id
        )
        payload["device_unused_fallback_key_types"] = await ctx.synapse.unused_fallback_key_types(
            ctx.user_id, ctx.device_id
        )
        return StreamResult(
            payload=payload,
            has_data=has_data,
            position=await ctx.synapse.e2ee_position_string(next_position),
        )
