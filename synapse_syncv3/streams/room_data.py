"""The ``room_data`` stream (SPEC §7.5, §9): request syntax and negotiation.

Timelines and state are not served yet (see docs/api.md).
"""

from __future__ import annotations

from typing import ClassVar

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core import fields
from synapse_syncv3.errors import bad_json, invalid_param
from synapse_syncv3.streams.base import JsonDict, NotYetServedMixin, ParsedStreamParams

DEFAULT_TIMELINE_LIMIT = 20
ROOM_LIST_SET = "room_list"


class RoomDataStream(NotYetServedMixin):
    name: ClassVar[str] = "room_data"
    code: ClassVar[str] = "r"

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
