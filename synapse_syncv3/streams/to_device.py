"""The ``to_device`` stream (SPEC §7.2): to-device messages of the requesting device.

Deletion of confirmed messages (SPEC §8) is not done here but by the handler, before
any stream is computed, because it depends on every session of the device.
"""

from __future__ import annotations

from typing import Any, ClassVar

from synapse_syncv3 import metrics
from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core import fields
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

DEFAULT_LIMIT = 100


#: The payload of a computation without messages, shared by every idle long-poll (never
#: mutated: a response copies a payload into its stream object).
_NO_EVENTS: JsonDict = {"events": []}


class ToDeviceStream(StreamDefaults):
    name: ClassVar[str] = "to_device"
    code: ClassVar[str] = "d"

    def parse_params(self, obj: JsonDict) -> ParsedStreamParams:
        limit = fields.limit_field(obj, "to_device", "limit")
        return ParsedStreamParams({} if limit is None else {"limit": limit})

    def resets(self, old: JsonDict, new: JsonDict) -> bool:
        return False

    def negotiate(self, params: JsonDict, limits: MaxLimits) -> JsonDict:
        return {
            "limit": fields.effective_limit(params.get("limit"), DEFAULT_LIMIT, limits.to_device)
        }

    def valid_position(self, raw: str) -> bool:
        return bool(INT_POSITION_RE.fullmatch(raw))

    async def load_position(self, ctx: StreamContext, raw: str) -> LoadedPosition:
        value, wait_for = await ctx.synapse.bound_to_device_key(int(raw))
        return LoadedPosition(value=value, wait_for=wait_for)

    def moved(self, ctx: StreamContext, before: Any, after: Any) -> bool:
        return ctx.synapse.to_device_key(before) != ctx.synapse.to_device_key(after)

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        params, position = request.params, request.position
        now_key = ctx.synapse.to_device_key(ctx.now)
        if position is not None and position >= now_key:
            return StreamResult(payload=_NO_EVENTS, position=str(position))
        limit = self.negotiate(params, ctx.config.max_limits)["limit"]
        # First delivery starts at the oldest message not deleted yet (SPEC §8.2 rule 3).
        messages, last = await ctx.synapse.to_device_messages(
            ctx.user_id, ctx.device_id, from_key=position or 0, to_key=now_key, limit=limit
        )
        metrics.TO_DEVICE_DELIVERED.inc(len(messages))
        return StreamResult(
            payload={"events": messages},
            has_data=bool(messages) or position is None,
            position=str(last),
        )
