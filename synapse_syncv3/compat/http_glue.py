"""HTTP glue: the Synapse version, the injected client servlet and its path, and what
a request does besides computing streams (requester identity, disconnection, the
"user is syncing" presence mark and server notices).

Synapse area: ``synapse.rest`` (``SERVLET_GROUPS``, ``client_patterns``),
``synapse.http`` (``RestServlet``, ``SynapseRequest``, ``respond_with_json_bytes``),
``synapse.util.json`` (``json_encoder``), ``synapse.api`` (errors,
``Ratelimiter``), ``Requester``, ``PresenceHandler.user_syncing`` and
``ServerNoticesSender``.

Versions (the branch each line serves):

* ``Requester`` is an attrs class up to 1.154 and a Rust class from 1.155; both have
  ``user``, ``device_id`` and ``is_guest``, which is all we read.
* ``synapse.rest.SERVLET_GROUPS`` exists since 1.114 (so over the whole supported
  range); it is looked up when the module starts, and without it the client path is
  not injected and a warning is logged (SPEC §1.3).
* ``Ratelimiter(store, clock, cfg)``, ``PresenceHandler.user_syncing``,
  ``ServerNoticesSender.on_user_syncing``, ``respond_with_json_bytes(request, code,
  json_bytes, send_cors)`` and ``synapse.util.json.json_encoder`` (the encoder of
  ``respond_with_json`` for resources that are not canonical-JSON ones, as the client
  API resource and ``DirectServeJsonResource`` are by default) are unchanged over the
  supported range (1.152.0 to the newest release).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import synapse
import synapse.rest
from synapse.api.errors import SynapseError
from synapse.api.ratelimiting import Ratelimiter
from synapse.http.server import respond_with_json_bytes
from synapse.http.servlet import RestServlet
from synapse.rest.client._base import client_patterns
from synapse.util.cancellation import cancellable
from synapse.util.json import json_encoder

from synapse_syncv3.compat.base import SynapseBase

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

__all__ = [
    "HttpGlueMixin",
    "RestServlet",
    "SynapseError",
    "cancellable",
    "client_sync_patterns",
    "inject_client_servlet",
    "synapse_version",
]


def synapse_version() -> tuple[int, int, int]:
    """The running Synapse release as a tuple, e.g. (1, 163, 2)."""
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
    groups = getattr(synapse.rest, "SERVLET_GROUPS", None)
    if not isinstance(groups, dict) or "client" not in groups:
        return "synapse.rest.SERVLET_GROUPS['client'] does not exist on this Synapse"
    current = tuple(groups["client"])
    if _register_module_client_servlets not in current:
        groups["client"] = (*current, _register_module_client_servlets)
    _CLIENT_SERVLETS[api._hs] = register
    return None


class HttpGlueMixin(SynapseBase):
    """Requests and requesters, and the side effects of a sync request."""

    def __init__(self, api: ModuleApi) -> None:
        super().__init__(api)
        hs = self._hs
        self._presence_handler = hs.get_presence_handler()
        self._server_notices_sender = hs.get_server_notices_sender()
        self._presence_limiter = Ratelimiter(
            store=self._store,
            clock=self._clock,
            cfg=hs.config.ratelimiting.rc_presence_per_user,
        )

    @staticmethod
    def requester_identity(requester: Any) -> tuple[str, str | None, bool]:
        """(user_id, device_id, is_guest) of a Requester (attrs ≤1.154, Rust ≥1.155)."""
        return requester.user.to_string(), requester.device_id, bool(requester.is_guest)

    @staticmethod
    def is_disconnected(request: Any) -> bool:
        """Whether the client of a SynapseRequest has gone away (False for None)."""
        return bool(getattr(request, "_disconnected", False))

    @staticmethod
    def respond_json_inline(request: Any, body: Any) -> None:
        """Send ``200`` with ``body``, encoded here on the reactor thread rather than
        in Synapse's thread pool: the same encoder and headers (Content-Type,
        Cache-Control, CORS) as Synapse's own ``respond_with_json`` for the client
        API, for responses small enough that the thread would cost more than the
        encoding (:mod:`synapse_syncv3.core.encoding`)."""
        respond_with_json_bytes(
            request, 200, json_encoder.encode(body).encode("utf-8"), send_cors=True
        )

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
