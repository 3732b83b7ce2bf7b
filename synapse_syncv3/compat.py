"""Every touch of Synapse internals, in one file.

Everything else in synapse_syncv3 uses either the public ``ModuleApi`` or this module,
so a Synapse release that moves an internal breaks this file only. Supported range:
matrix-synapse 1.152.0 to the newest release (tested: 1.152.0, 1.157.1, 1.163.2).

Version notes (the branch each line serves):

* ``Requester`` is an attrs class up to 1.154 and a Rust class from 1.155; both have
  ``user``, ``device_id`` and ``is_guest``, which is all we read.
* ``Notifier.wait_for_stream_token`` bounds future tokens itself up to 1.15x and
  expects bounded tokens later; we always bound first (harmless on older releases).
* ``synapse.rest.SERVLET_GROUPS`` exists since 1.114; without it the client path is
  not injected and a warning is logged (SPEC §1.3).
* ``Linearizer(name, clock)``, ``Ratelimiter(store, clock, cfg)``,
  ``PresenceHandler.user_syncing``, ``TypingNotificationEventSource.get_new_events``
  (``to_key`` since 1.114) and the device-inbox store methods are unchanged over the
  range.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from synapse.api.errors import SynapseError
from synapse.api.ratelimiting import Ratelimiter
from synapse.http.servlet import RestServlet
from synapse.logging.context import make_deferred_yieldable, run_in_background
from synapse.rest.client._base import client_patterns
from synapse.types import StreamKeyType, StreamToken
from synapse.util.async_helpers import Linearizer, ObservableDeferred
from synapse.util.cancellation import cancellable

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "ObservableDeferred",
    "RestServlet",
    "SynapseCompat",
    "SynapseError",
    "cancellable",
    "client_sync_patterns",
    "make_deferred_yieldable",
    "run_in_background",
    "synapse_version",
]

#: SQL condition, over ``syncv3_sessions AS s``, that the session's device still
#: exists in Synapse's ``devices`` table (read only; used by the session sweep).
DEVICE_EXISTS_SQL = (
    "EXISTS (SELECT 1 FROM devices AS d WHERE d.user_id = s.user_id AND d.device_id = s.device_id)"
)


def synapse_version() -> tuple[int, int, int]:
    """The running Synapse release as a tuple, e.g. (1, 163, 2)."""
    import synapse

    numbers = [int(part) for part in re.findall(r"\d+", synapse.__version__)[:3]]
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


def client_sync_patterns() -> Iterable[re.Pattern[str]]:
    """The very same path regex as Synapse's ``SyncRestServlet``.

    ``JsonResource`` files a POST servlet registered with an identical compiled
    pattern next to Synapse's GET in one route entry; any other regex that matches
    the same paths would never be reached (SYNAPSE-NOTES §2.3).
    """
    return client_patterns("/sync$")


# Per homeserver: what registers the module's servlets on Synapse's client resource.
# Synapse calls the registration functions of SERVLET_GROUPS with its HomeServer; one
# process may host several homeservers (Synapse's own test harness does).
_CLIENT_SERVLETS: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = (
    weakref.WeakKeyDictionary()
)


def _register_module_client_servlets(hs: Any, http_server: Any) -> None:
    register = _CLIENT_SERVLETS.get(hs)
    if register is not None:
        register(http_server)


def inject_client_servlet(api: ModuleApi, register: Callable[[Any], None]) -> str | None:
    """Have ``register(http_server)`` called when Synapse builds its client API
    resource (on the main process and on generic workers).

    Must run before Synapse starts listening, i.e. from the module's ``__init__``.
    Returns None on success, or the reason it is impossible on this Synapse.
    """
    try:
        import synapse.rest as rest
    except ImportError as e:  # pragma: no cover - Synapse always has it
        return f"cannot import synapse.rest ({e})"
    groups = getattr(rest, "SERVLET_GROUPS", None)
    if not isinstance(groups, dict) or "client" not in groups:
        return "synapse.rest.SERVLET_GROUPS['client'] does not exist on this Synapse"
    current = tuple(groups["client"])
    if _register_module_client_servlets not in current:
        groups["client"] = (*current, _register_module_client_servlets)
    _CLIENT_SERVLETS[api._hs] = register
    return None


class SynapseCompat:
    """Synapse's internals, as the module needs them."""

    def __init__(self, api: ModuleApi) -> None:
        hs = api._hs  # this class is the one place where internals are reached
        self._hs = hs
        # Typed as Any: mypy cannot see through Synapse's cache descriptors.
        self._store: Any = hs.get_datastores().main
        self._event_sources = hs.get_event_sources()
        self._notifier = hs.get_notifier()
        self._clock = hs.get_clock()
        self._presence_handler = hs.get_presence_handler()
        self._server_notices_sender = hs.get_server_notices_sender()
        self._presence_limiter = Ratelimiter(
            store=self._store,
            clock=self._clock,
            cfg=hs.config.ratelimiting.rc_presence_per_user,
        )

    @property
    def clock(self) -> Any:
        return self._clock

    def make_linearizer(self, name: str) -> Linearizer:
        return Linearizer(name=name, clock=self._clock)

    # -- requests and requesters ---------------------------------------------------

    @staticmethod
    def requester_identity(requester: Any) -> tuple[str, str | None, bool]:
        """(user_id, device_id, is_guest) of a Requester (attrs ≤1.154, Rust ≥1.155)."""
        return requester.user.to_string(), requester.device_id, bool(requester.is_guest)

    @staticmethod
    def is_disconnected(request: Any) -> bool:
        """Whether the client of a SynapseRequest has gone away."""
        return bool(getattr(request, "_disconnected", False))

    async def presence_context(
        self, requester: Any, set_presence: str
    ) -> AbstractContextManager[None]:
        """Mark the user as syncing, exactly as Synapse's v2 ``SyncRestServlet`` does
        (including its per-user presence rate limit)."""
        user_id, device_id, _ = self.requester_identity(requester)
        allowed, _ = await self._presence_limiter.can_do_action(requester)
        affect_presence = allowed and set_presence != "offline"
        return await self._presence_handler.user_syncing(
            user_id,
            device_id,
            affect_presence=affect_presence,
            presence_state=set_presence,
        )

    async def on_user_syncing(self, user_id: str) -> None:
        """Let Synapse send outstanding server notices, as v2 sync does."""
        await self._server_notices_sender.on_user_syncing(user_id)

    # -- positions and waiting -----------------------------------------------------

    def current_token(self) -> StreamToken:
        return self._event_sources.get_current_token()

    @staticmethod
    def typing_key(token: StreamToken) -> int:
        return int(token.typing_key)

    @staticmethod
    def to_device_key(token: StreamToken) -> int:
        return int(token.to_device_key)

    def current_typing_key(self) -> int:
        return int(self._event_sources.sources.typing.get_current_key())

    async def bound_to_device_position(self, position: int) -> StreamToken:
        """The current token with the to-device position replaced by ``position``,
        clamped to what this homeserver has allocated.

        Like ``EventSources.bound_future_token``, but quiet: a position from a since
        token is client input, and Synapse logs an ERROR when it bounds one.
        """
        token = self.current_token()
        if position > int(token.to_device_key):
            # Ahead of this worker: replication lag (the caller waits for it), or a
            # position never issued (clamped).
            id_gen = self._store.get_to_device_id_generator()
            position = min(position, int(await id_gen.get_max_allocated_token()))
        return token.copy_and_replace(StreamKeyType.TO_DEVICE, position)

    async def wait_for_stream_token(self, token: StreamToken) -> bool:
        """Wait (up to Synapse's limit, 10 s) until this worker has caught up with
        ``token``; False if it did not (SPEC §13.3)."""
        return bool(await self._notifier.wait_for_stream_token(token))

    async def wait_for_events(
        self,
        user_id: str,
        timeout_ms: int,
        callback: Callable[[], Awaitable[T | None]],
        from_token: StreamToken,
    ) -> T | None:
        """Wait on Synapse's notifier until ``callback`` returns a truthy value or the
        timeout expires. The notifier wakes a user for activity of any stream, and the
        tokens it passes may be ahead of each other in any field, so the callback
        ignores them and recomputes from a fresh current token."""

        async def on_wake(_before: StreamToken, _after: StreamToken) -> T | None:
            return await callback()

        return await self._notifier.wait_for_events(
            user_id, timeout_ms, on_wake, from_token=from_token
        )

    # -- rooms and typing ----------------------------------------------------------

    async def joined_rooms(self, user_id: str) -> frozenset[str]:
        return frozenset(await self._store.get_rooms_for_user(user_id))

    async def typing_in_rooms(
        self, user_id: str, room_ids: Collection[str], from_key: int, to_key: int | None
    ) -> dict[str, list[str]]:
        """Current typing users of the rooms whose typing set changed in
        (from_key, to_key]; rooms that did not change are absent."""
        if not room_ids:
            return {}
        source = self._event_sources.sources.typing
        events, _ = await source.get_new_events(
            user=_user_id(user_id),
            from_key=from_key,
            to_key=to_key,
            limit=len(room_ids),
            room_ids=room_ids,
            is_guest=False,
        )
        return {event["room_id"]: list(event["content"]["user_ids"]) for event in events}

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

    async def device_exists(self, user_id: str, device_id: str) -> bool:
        return await self._store.get_device(user_id, device_id) is not None

    # -- room members (SPEC §7.3) ----------------------------------------------------

    # -- receipts and account data (SPEC §7.6, §7.7) -----------------------------------

    # -- presence and e2ee (SPEC §7.8, §7.9) -------------------------------------------


def _user_id(user_id: str) -> Any:
    from synapse.types import UserID

    return UserID.from_string(user_id)
