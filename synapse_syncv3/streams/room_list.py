"""The ``room_list`` stream (SPEC §7.4): request syntax and negotiation.

The sorted snapshot and room deltas are not served yet (see docs/api.md).
"""

from __future__ import annotations

from typing import ClassVar

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core import fields
from synapse_syncv3.errors import bad_json, invalid_param
from synapse_syncv3.streams.base import JsonDict, NotYetServedMixin, ParsedStreamParams

DEFAULT_LIMIT = 20
DEFAULT_TIMELINE_LIMIT = 1
DEFAULT_SORT = ["by_recency"]
SORTS = ("by_recency", "by_name", "by_notification_count", "by_highlight_count")
MAX_SORT_ENTRIES = 4


def parse_sort(obj: JsonDict) -> list[str] | None:
    if "sort" not in obj:
        return None
    value = obj["sort"]
    if not isinstance(value, list):
        raise bad_json("room_list.sort: must be a list of strings")
    if len(value) > MAX_SORT_ENTRIES:
        raise invalid_param(f"room_list.sort: at most {MAX_SORT_ENTRIES} entries")
    result: list[str] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            raise bad_json(f"room_list.sort[{index}]: must be a string")
        if entry not in SORTS:
            raise invalid_param(f"room_list.sort[{index}]: must be one of {', '.join(SORTS)}")
        if entry not in result:  # repeated values are ignored
            result.append(entry)
    return result


class RoomListStream(NotYetServedMixin):
    name: ClassVar[str] = "room_list"
    code: ClassVar[str] = "l"

    def parse_params(self, obj: JsonDict) -> ParsedStreamParams:
        stored: JsonDict = {}
        sort = parse_sort(obj)
        if sort is not None:
            stored["sort"] = sort
        limit = fields.limit_field(obj, "room_list", "limit")
        if limit is not None:
            stored["limit"] = limit
        state_events = fields.state_events_field(obj, "room_list", "state_events")
        if state_events is not None:
            stored["state_events"] = state_events
        timeline_limit = fields.limit_field(obj, "room_list", "timeline_limit")
        if timeline_limit is not None:
            stored["timeline_limit"] = timeline_limit
        page = fields.page_field(obj, "room_list")
        return ParsedStreamParams(stored, {} if page is None else {"p": page})

    @staticmethod
    def _reset_key(params: JsonDict) -> tuple[object, ...]:
        return (
            params.get("sort") or DEFAULT_SORT,
            params.get("state_events", []),
            params.get("timeline_limit", DEFAULT_TIMELINE_LIMIT),
        )

    def resets(self, old: JsonDict, new: JsonDict) -> bool:
        return self._reset_key(old) != self._reset_key(new)

    def negotiate(self, params: JsonDict, limits: MaxLimits) -> JsonDict:
        return {
            "limit": fields.effective_limit(params.get("limit"), DEFAULT_LIMIT, limits.room_list),
            "sort": params.get("sort") or list(DEFAULT_SORT),
            "timeline_limit": fields.effective_timeline_limit(
                params.get("timeline_limit"), DEFAULT_TIMELINE_LIMIT, limits.room_list_timeline
            ),
        }
