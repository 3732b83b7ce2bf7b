"""Ephemeral data: typing notifications, read receipts and presence, as v2 sync gives
them.

Synapse area: the event sources ``typing``, ``receipt`` and ``presence``
(``get_new_events``), the receipts store, ``format_user_presence_state`` and the
``presence`` server config.

Versions:

* ``TypingNotificationEventSource.get_new_events`` takes ``to_key`` since 1.114, and
  the receipt and presence sources' ``get_new_events`` are unchanged over the
  supported range (1.152.0 to the newest release).
* ``format_user_presence_state(state, now, include_user_id=...)`` and the config
  fields ``presence_enabled`` and ``presence_include_offline_users_on_sync`` are
  unchanged over the range.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from synapse.handlers.presence import format_user_presence_state

from synapse_syncv3.compat.base import SynapseBase, user_id_of

__all__ = ["EphemeralMixin"]


class EphemeralMixin(SynapseBase):
    """Typing (SPEC §7.1), receipts (§7.6) and presence (§7.8)."""

    async def typing_in_rooms(
        self, user_id: str, room_ids: Collection[str], from_key: int, to_key: int | None
    ) -> dict[str, list[str]]:
        """Current typing users of the rooms whose typing set changed in
        (from_key, to_key]; rooms that did not change are absent."""
        if not room_ids:
            return {}
        source = self._event_sources.sources.typing
        events, _ = await source.get_new_events(
            user=user_id_of(user_id),
            from_key=from_key,
            to_key=to_key,
            limit=len(room_ids),
            room_ids=room_ids,
            is_guest=False,
        )
        return {event["room_id"]: list(event["content"]["user_ids"]) for event in events}

    async def receipts_in_rooms(
        self, user_id: str, room_ids: Collection[str], from_key: Any | None, to_key: Any
    ) -> dict[str, dict[str, Any]]:
        """``{room_id: content of m.receipt}`` of the rooms with receipts in
        (from_key, to_key] (all current receipts when ``from_key`` is None), with other
        users' private read receipts removed, as v2 sync gives them."""
        if not room_ids:
            return {}
        source = self._event_sources.sources.receipt
        if from_key is None:
            events = await self._store.get_linearized_receipts_for_rooms(room_ids, to_key=to_key)
            events = source.filter_out_private_receipts(events, user_id)
        else:
            events, _ = await source.get_new_events(
                user=user_id_of(user_id),
                from_key=from_key,
                to_key=to_key,
                limit=len(room_ids),
                room_ids=room_ids,
                is_guest=False,
            )
        rooms: dict[str, dict[str, Any]] = {}
        for event in events:
            content = rooms.setdefault(event["room_id"], {})
            for event_id, by_type in event["content"].items():
                for receipt_type, by_user in by_type.items():
                    # Copies: the events come from Synapse's caches.
                    content.setdefault(event_id, {}).setdefault(receipt_type, {}).update(by_user)
        return rooms

    def presence_enabled(self) -> bool:
        """Whether Synapse has presence enabled (``presence.enabled``, also "untracked")."""
        return bool(self._hs.config.server.presence_enabled)

    async def presence_events(
        self, user_id: str, is_guest: bool, from_key: int | None
    ) -> tuple[list[dict[str, Any]], int]:
        """``m.presence`` events of the users the user may see (those sharing a room,
        the user, and whoever a presence router adds) whose presence changed after
        ``from_key`` (None: everyone's current presence), formatted as v2 sync does,
        and the presence position they go up to.

        Offline users are left out when ``from_key`` is None unless Synapse is
        configured to include them on initial sync (the rule of v2 sync).
        """
        include_offline = (
            from_key is not None or self._hs.config.server.presence_include_offline_users_on_sync
        )
        states, key = await self._event_sources.sources.presence.get_new_events(
            user=user_id_of(user_id),
            from_key=from_key,
            is_guest=is_guest,
            include_offline=bool(include_offline),
        )
        now_ms = self._clock.time_msec()
        events = [
            {
                "type": "m.presence",
                "sender": state.user_id,
                "content": format_user_presence_state(state, now_ms, include_user_id=False),
            }
            for state in states
        ]
        return events, int(key)
