"""Devices: their existence, their to-device inbox, device-list changes and end-to-end
encryption key counts.

Synapse area: the device inbox store (``DeviceInboxWorkerStore``), the device store
and ``DeviceHandler``, and the end-to-end keys store. The SQL condition on Synapse's
``devices`` table used by the session sweep (``DEVICE_EXISTS_SQL``) is in
``synapse_sql.py``, and so is the statement that reads a device's inbox.

To-device messages are read through a ``BatchingQueue`` (``synapse.util.batching_queue``,
Synapse's own, with which its keyring batches key fetches): the long-polls one notification wakes
(a ``sendToDevice`` to 100 devices wakes 100) each ask for their device's messages in
the same reactor turn, and the queue reads them all in one transaction, one statement
per device, instead of one transaction each (a transaction is most of what a wake costs
beyond Synapse's HTTP stack). Each statement is Synapse's own
(``DeviceInboxWorkerStore.get_messages_for_device``), and so is the check of the
inbox's stream-change cache before it (no change since the position: nothing to read).

Versions: ``BatchingQueue(name=, hs=, clock=, process_batch_callback=)`` and its
``add_to_queue``, the inbox's stream-change cache
(``_device_inbox_stream_cache.has_entity_changed``), the device-inbox store method
``delete_messages_for_device``, ``get_device``,
``DeviceHandler.get_user_ids_changed(user_id, from_token)``,
``count_e2e_one_time_keys`` and ``get_e2e_unused_fallback_key_types`` are unchanged over
the supported range (1.152.0 to the newest release).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from synapse.types import StreamToken
from synapse.util.batching_queue import BatchingQueue

from synapse_syncv3.compat.base import SynapseBase
from synapse_syncv3.compat.synapse_sql import device_messages_txn

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

__all__ = ["DevicesMixin"]


@attrs.define
class _InboxRead:
    """One device's read in a batch: what is asked, and the answer once read."""

    user_id: str
    device_id: str
    from_key: int
    to_key: int
    limit: int
    result: tuple[list[dict[str, Any]], int] | None = None


class DevicesMixin(SynapseBase):
    """To-device messages (SPEC §7.2) and e2ee data (§7.9)."""

    def __init__(self, api: ModuleApi) -> None:
        super().__init__(api)
        self._inbox_reads: BatchingQueue[_InboxRead, None] = BatchingQueue(
            name="syncv3_to_device_reads",
            hs=self._hs,
            clock=self._clock,
            process_batch_callback=self._read_inboxes,
        )

    async def device_exists(self, user_id: str, device_id: str) -> bool:
        return await self._store.get_device(user_id, device_id) is not None

    # -- to-device -----------------------------------------------------------------

    async def to_device_messages(
        self, user_id: str, device_id: str, from_key: int, to_key: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Messages with from_key < id <= to_key, oldest first, at most ``limit``, and
        the position to continue from (the last id returned if the limit cut)."""
        if not self._store._device_inbox_stream_cache.has_entity_changed(user_id, from_key):
            return [], to_key  # no message for the user since from_key
        read = _InboxRead(user_id, device_id, from_key, to_key, limit)
        await self._inbox_reads.add_to_queue(read)
        assert read.result is not None
        return read.result

    async def _read_inboxes(self, reads: list[_InboxRead]) -> None:
        """The reads asked for in one reactor turn, in one transaction."""

        def txn(cursor: Any) -> None:
            for read in reads:
                read.result = device_messages_txn(
                    cursor, read.user_id, read.device_id, read.from_key, read.to_key, read.limit
                )

        await self._store.db_pool.runInteraction("syncv3_read_to_device", txn)

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
