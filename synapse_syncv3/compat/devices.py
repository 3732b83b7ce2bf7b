"""Devices: their existence, their to-device inbox, device-list changes and end-to-end
encryption key counts.

Synapse area: the device inbox store (``DeviceInboxWorkerStore``), the device store
and ``DeviceHandler``, and the end-to-end keys store. The SQL condition on Synapse's
``devices`` table used by the session sweep (``DEVICE_EXISTS_SQL``) is in
``synapse_sql.py``.

Versions: the device-inbox store methods (``get_messages_for_device``,
``delete_messages_for_device``), ``get_device``,
``DeviceHandler.get_user_ids_changed(user_id, from_token)``,
``count_e2e_one_time_keys`` and ``get_e2e_unused_fallback_key_types`` are unchanged over
the supported range (1.152.0 to the newest release).
"""

from __future__ import annotations

from typing import Any

from synapse.types import StreamToken

from synapse_syncv3.compat.base import SynapseBase

__all__ = ["DevicesMixin"]


class DevicesMixin(SynapseBase):
    """To-device messages (SPEC §7.2) and e2ee data (§7.9)."""

    async def device_exists(self, user_id: str, device_id: str) -> bool:
        return await self._store.get_device(user_id, device_id) is not None

    # -- to-device -----------------------------------------------------------------

    async def to_device_messages(
        self, user_id: str, device_id: str, from_key: int, to_key: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Messages with from_key < id <= to_key, oldest first, at most ``limit``, and
        the position to continue from (the last id returned if the limit cut)."""
        messages, last = await self._store.get_messages_for_device(
            user_id, device_id, from_key, to_key, limit
        )
        return list(messages), int(last)

    async def delete_to_device_messages(self, user_id: str, device_id: str, up_to: int) -> int:
        """Delete messages with id <= up_to through Synapse's own routine."""
        return int(await self._store.delete_messages_for_device(user_id, device_id, up_to))

    # -- e2ee ----------------------------------------------------------------------

    async def device_list_changes(
        self, user_id: str, from_token: StreamToken
    ) -> tuple[list[str], list[str]]:
        """``(changed, left)`` since ``from_token`` up to the current token, exactly
        as v2 sync computes ``device_lists``."""
        updates = await self._hs.get_device_handler().get_user_ids_changed(user_id, from_token)
        return sorted(updates.changed), sorted(updates.left)

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """One-time-key counts of the device; ``signed_curve25519`` always present."""
        counts = dict(await self._store.count_e2e_one_time_keys(user_id, device_id))
        counts.setdefault("signed_curve25519", 0)
        return counts

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        return list(await self._store.get_e2e_unused_fallback_key_types(user_id, device_id))
