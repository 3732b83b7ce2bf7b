"""Account data, room tags and push rules, as v2 sync gives them.

Synapse area: the account data and tags stores, the push rules store and
``PushRulesHandler``.

Versions: ``get_(updated_)global_account_data_for_user``,
``get_(updated_)room_account_data_for_user``, ``get_tags_for_user``,
``get_updated_tags``, ``have_push_rules_changed_for_user`` and
``PushRulesHandler.push_rules_for_user(UserID)`` are unchanged over the supported range
(1.152.0 to the newest release).
"""

from __future__ import annotations

from typing import Any

from synapse_syncv3.compat.base import SynapseBase, user_id_of

__all__ = ["AccountDataMixin"]


class AccountDataMixin(SynapseBase):
    """Global and room account data, tags and push rules (SPEC §7.7)."""

    async def global_account_data(self, user_id: str, since: int | None) -> dict[str, Any]:
        """``{type: content}`` of the user's global account data (changed after
        ``since``, or all when None), without ``m.push_rules``. Deleted entries have
        content ``{}``, as in v2 sync."""
        if since is None:
            return dict(await self._store.get_global_account_data_for_user(user_id))
        return dict(await self._store.get_updated_global_account_data_for_user(user_id, since))

    async def room_account_data(self, user_id: str, since: int | None) -> dict[str, dict[str, Any]]:
        """``{room_id: {type: content}}`` of the user's room account data (changed
        after ``since``, or all when None), with the room tags as ``m.tag`` as v2 sync
        gives them (``{"tags": {}}`` for a room whose last tag was removed)."""
        if since is None:
            data = await self._store.get_room_account_data_for_user(user_id)
            tags = await self._store.get_tags_for_user(user_id)
        else:
            data = await self._store.get_updated_room_account_data_for_user(user_id, since)
            tags = await self._store.get_updated_tags(user_id, since)
        rooms = {room_id: dict(by_type) for room_id, by_type in data.items()}
        for room_id, room_tags in tags.items():
            rooms.setdefault(room_id, {})["m.tag"] = {"tags": dict(room_tags)}
        return rooms

    async def push_rules_changed(self, user_id: str, since: int) -> bool:
        return bool(await self._store.have_push_rules_changed_for_user(user_id, since))

    async def push_rules_content(self, user_id: str) -> dict[str, Any]:
        """The content of the global ``m.push_rules`` account data, as v2 sync
        builds it."""
        handler = self._hs.get_push_rules_handler()
        return dict(await handler.push_rules_for_user(user_id_of(user_id)))
