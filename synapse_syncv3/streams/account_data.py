"""The ``account_data`` stream (SPEC §7.7): the user's global and per-room account
data, with ``m.push_rules`` and ``m.tag`` as v2 sync gives them.

The position covers two Synapse streams: ``<account data>,<push rules>``, e.g. ``22,5``.
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

_NUMBER = r"(?:0|[1-9][0-9]{0,17})"
_ACCOUNT_DATA_POSITION_RE = re.compile(rf"^{_NUMBER},{_NUMBER}$")

PUSH_RULES = "m.push_rules"


def parse_account_data_position(raw: str) -> tuple[int, int] | None:
    """``(account data position, push rules position)``, or None if malformed."""
    if not _ACCOUNT_DATA_POSITION_RE.fullmatch(raw):
        return None
    account_data, push_rules = raw.split(",")
    return int(account_data), int(push_rules)


def account_data_events(by_type: dict[str, Any]) -> list[JsonDict]:
    return [{"type": data_type, "content": content} for data_type, content in by_type.items()]


class AccountDataStream(NoFieldsMixin):
    name: ClassVar[str] = "account_data"
    code: ClassVar[str] = "a"

    def valid_position(self, raw: str) -> bool:
        return parse_account_data_position(raw) is not None

    async def load_position(self, ctx: StreamContext, raw: str) -> LoadedPosition:
        parsed = parse_account_data_position(raw)
        assert parsed is not None  # the token codec checked it with valid_position
        bounded = await ctx.synapse.bound_account_data_position(*parsed)
        return LoadedPosition(value=ctx.synapse.account_data_keys(bounded), wait_for=bounded)

    def moved(self, ctx: StreamContext, before: Any, after: Any) -> bool:
        return ctx.synapse.account_data_keys(before) != ctx.synapse.account_data_keys(after)

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        position = request.position
        synapse = ctx.synapse
        now_data, now_rules = synapse.account_data_keys(ctx.now)
        global_data: dict[str, Any] = {}
        rooms: dict[str, dict[str, Any]] = {}
        if position is None:
            # First delivery: everything, whatever the user's membership in the rooms.
            global_data = await synapse.global_account_data(ctx.user_id, since=None)
            global_data[PUSH_RULES] = await synapse.push_rules_content(ctx.user_id)
            rooms = await synapse.room_account_data(ctx.user_id, since=None)
            next_data, next_rules = now_data, now_rules
        else:
            since_data, since_rules = position
            # Synapse's "changed since" lookups have no upper bound: a change after
            # `now` may come along now and again next time (at-least-once).
            if since_data < now_data:
                global_data = await synapse.global_account_data(ctx.user_id, since=since_data)
                rooms = await synapse.room_account_data(ctx.user_id, since=since_data)
            if since_rules < now_rules and await synapse.push_rules_changed(
                ctx.user_id, since_rules
            ):
                global_data[PUSH_RULES] = await synapse.push_rules_content(ctx.user_id)
            next_data, next_rules = max(since_data, now_data), max(since_rules, now_rules)

        payload = {
            "global": account_data_events(global_data),
            "rooms": {
                room_id: account_data_events(by_type)
                for room_id, by_type in rooms.items()
                if by_type
            },
        }
        return StreamResult(
            payload=payload,
            has_data=position is None or bool(payload["global"] or payload["rooms"]),
            position=f"{next_data},{next_rules}",
        )
