"""The ``receipts`` stream (SPEC §7.6): request syntax. Not served yet (docs/api.md)."""

from __future__ import annotations

from typing import ClassVar

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core import fields
from synapse_syncv3.streams.base import JsonDict, NotYetServedMixin, ParsedStreamParams


class ReceiptsStream(NotYetServedMixin):
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
