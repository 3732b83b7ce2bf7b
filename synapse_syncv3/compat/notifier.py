"""Waiting on Synapse's notifier: for replication to catch up with a since token, and
for activity of a user (long-polling).

Synapse area: ``synapse.notifier.Notifier``.

Versions:

* ``Notifier.wait_for_stream_token`` bounds future tokens itself up to 1.15x and
  expects bounded tokens later; the handler always bounds first (through the
  ``bound_*`` methods of ``positions.py``), which is harmless on older releases.
* ``Notifier.wait_for_events(user_id, timeout, callback, from_token=...)`` with an async
  ``callback(before, after)`` is unchanged over the supported range (1.152.0 to the
  newest release).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from synapse.types import StreamToken

from synapse_syncv3.compat.base import SynapseBase, T

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

__all__ = ["NotifierMixin"]


class NotifierMixin(SynapseBase):
    """Waiting for replication and for a user's activity."""

    def __init__(self, api: ModuleApi) -> None:
        super().__init__(api)
        self._notifier = self._hs.get_notifier()

    async def wait_for_stream_token(self, token: StreamToken) -> bool:
        """Wait (up to Synapse's limit, 10 s) until this worker has caught up with
        ``token``; False if it did not (SPEC §13.3)."""
        return bool(await self._notifier.wait_for_stream_token(token))

    def wait_for_events(
        self,
        user_id: str,
        timeout_ms: int,
        callback: Callable[[StreamToken, StreamToken], Awaitable[T | None]],
        from_token: StreamToken,
    ) -> Awaitable[T | None]:
        """Wait on Synapse's notifier until ``callback`` returns a truthy value or the
        timeout expires. The notifier wakes a user for activity of any stream, and the
        tokens it passes (``callback(before, after)``) may be ahead of each other in any
        field, so the callback ignores them and recomputes from a fresh current token.

        Returns the notifier's own awaitable, with ``callback`` itself as its callback
        (no coroutine or closure of this method stays alive while thousands of requests
        wait)."""
        return self._notifier.wait_for_events(  # type: ignore[no-any-return]
            user_id, timeout_ms, callback, from_token=from_token
        )
