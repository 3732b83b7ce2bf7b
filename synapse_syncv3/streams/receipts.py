"""The ``receipts`` stream (SPEC §7.6): receipt changes in tracked joined rooms.

The position is Synapse's receipt stream position in Synapse's own wire form: ``12``,
or ``m12~1.14~2.13`` when some writers (by instance id) are ahead of position 12.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core import fields
from synapse_syncv3.streams.base import (
    JsonDict,
    LoadedPosition,
    ParsedStreamParams,
    StreamContext,
    StreamDefaults,
    StreamRequest,
    StreamResult,
)

_NUMBER = r"(?:0|[1-9][0-9]{0,17})"
_RECEIPT_POSITION_RE = re.compile(rf"^(?:{_NUMBER}|m{_NUMBER}(?:~{_NUMBER}\.{_NUMBER})+)$")


def parse_receipt_position(raw: str) -> tuple[int, list[tuple[int, int]]] | None:
    """``(stream, [(writer instance id, position), ...])`` of a position string, or
    None if it is not one Synapse could have issued (every writer listed once, ahead
    of ``stream``)."""
    if not _RECEIPT_POSITION_RE.fullmatch(raw):
        return None
    if not raw.startswith("m"):
        return int(raw), []
    first, *rest = raw[1:].split("~")
    stream = int(first)
    writers = []
    for part in rest:
        instance_id, position = part.split(".")
        writers.append((int(instance_id), int(position)))
    ids = [instance_id for instance_id, _ in writers]
    if len(set(ids)) != len(ids) or any(position <= stream for _, position in writers):
        return None
    return stream, writers


class ReceiptsStream(StreamDefaults):
    name: ClassVar[str] = "receipts"
    code: ClassVar[str] = "c"

    def parse_params(self, obj: JsonDict) -> ParsedStreamParams:
        if "room_ids" not in obj:
            return ParsedStreamParams({})
        return ParsedStreamParams(
            {"room_ids": fields.room_ids_list(obj["room_ids"], "receipts.room_ids")}
        )

    def resets(self, old: JsonDict, new: JsonDict) -> bool:
        return bool(old.get("room_ids") != new.get("room_ids"))

    def negotiate(self, params: JsonDict, limits: MaxLimits) -> JsonDict:
        return {}

    def valid_position(self, raw: str) -> bool:
        return parse_receipt_position(raw) is not None

    async def load_position(self, ctx: StreamContext, raw: str) -> LoadedPosition:
        parsed = parse_receipt_position(raw)
        assert parsed is not None  # the token codec checked it with valid_position
        bounded = await ctx.synapse.bound_receipt_position(*parsed)
        return LoadedPosition(value=ctx.synapse.receipt_key(bounded), wait_for=bounded)

    def moved(self, ctx: StreamContext, before: Any, after: Any) -> bool:
        synapse = ctx.synapse
        return bool(synapse.receipts_ahead(synapse.receipt_key(after), synapse.receipt_key(before)))

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        params, position = request.params, request.position
        synapse = ctx.synapse
        now_key = synapse.receipt_key(ctx.now)
        rooms: dict[str, JsonDict] = {}
        if position is None or synapse.receipts_ahead(now_key, position):
            joined = await synapse.joined_rooms(ctx.user_id)
            if "room_ids" in params:
                tracked = [room_id for room_id in params["room_ids"] if room_id in joined]
            else:
                tracked = sorted(joined)
            # First delivery: the current receipts of every tracked room; rooms
            # without any are omitted (SPEC §7.6).
            rooms = await synapse.receipts_in_rooms(
                ctx.user_id, tracked, from_key=position, to_key=now_key
            )
        next_key = now_key if position is None else synapse.later_receipt_key(position, now_key)
        return StreamResult(
            payload={"rooms": rooms},
            has_data=position is None or bool(rooms),
            position=await synapse.receipt_position_string(next_key),
        )
