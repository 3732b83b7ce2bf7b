"""The ``room_members`` stream (SPEC §7.3): request syntax and negotiation.

Snapshot paging and member deltas are not served yet (see docs/api.md); the params
are validated and stored exactly as the SPEC says so that clients and later versions
of the module agree on them.
"""

from __future__ import annotations

from typing import ClassVar

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core import fields
from synapse_syncv3.errors import bad_json
from synapse_syncv3.streams.base import JsonDict, NotYetServedMixin, ParsedStreamParams

DEFAULT_LIMIT = 50
SORTS = ("by_pl", "by_name")


class RoomMembersStream(NotYetServedMixin):
    name: ClassVar[str] = "room_members"
    code: ClassVar[str] = "m"

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
