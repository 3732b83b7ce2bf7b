"""The root of :class:`~synapse_syncv3.compat.SynapseCompat`: the collaborators every
area reaches through Synapse's ``HomeServer`` locator, the current token, the clock,
linearizers, and Synapse's Twisted helpers for deferreds and logging contexts.

Synapse area: ``HomeServer`` (``api._hs``), ``EventSources.get_current_token``,
``synapse.util.async_helpers`` (``Linearizer``, ``ObservableDeferred``),
``synapse.logging.context``, ``synapse.types.UserID``, the database engine
(``synapse.storage.engines.PostgresEngine``).

Versions: the ``hs.get_*`` accessors used here, ``Linearizer(name, clock)``,
``ObservableDeferred``, ``make_deferred_yieldable`` and ``run_in_background`` are
unchanged over the supported range (1.152.0 to the newest release).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from synapse.logging.context import make_deferred_yieldable, run_in_background
from synapse.metrics.background_process_metrics import run_as_background_process
from synapse.storage.engines import PostgresEngine
from synapse.types import StreamToken, UserID
from synapse.util.async_helpers import Linearizer, ObservableDeferred

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

__all__ = [
    "JsonDict",
    "ObservableDeferred",
    "SynapseBase",
    "T",
    "make_deferred_yieldable",
    "run_in_background",
    "user_id_of",
]

JsonDict = dict[str, Any]

T = TypeVar("T")


class SynapseBase:
    """What every area needs: the homeserver, its main store, event sources, clock.

    Area mixins that need more collaborators add them in their own ``__init__``
    (cooperatively, through ``super().__init__(api)``).
    """

    def __init__(self, api: ModuleApi) -> None:
        self._module_api = api
        hs = api._hs  # this package is the one place where internals are reached
        self._hs = hs
        # Typed as Any: mypy cannot see through Synapse's cache descriptors.
        self._store: Any = hs.get_datastores().main
        self._event_sources = hs.get_event_sources()
        self._clock = hs.get_clock()
        #: The last token current_token() returned: an equal sample returns it again.
        self._last_token: StreamToken | None = None

    @property
    def clock(self) -> Any:
        return self._clock

    @property
    def database_is_postgres(self) -> bool:
        """Whether the main database is PostgreSQL (else SQLite, one process)."""
        return isinstance(self._store.database_engine, PostgresEngine)

    def make_linearizer(self, name: str) -> Linearizer:
        return Linearizer(name=name, clock=self._clock)

    def current_token(self) -> StreamToken:
        """Synapse's current token. Samples equal to the previous one return that same
        object: thousands of idle long-polls, which each keep the token they computed
        at, then share one (a StreamToken with its multi-writer maps is ~1 KiB)."""
        token = self._event_sources.get_current_token()
        last = self._last_token
        if last is not None and token == last:
            return last
        self._last_token = token
        return token

    def wake_token(self, before: StreamToken, woken: StreamToken) -> StreamToken:
        """The token a long-poll woken by the notifier computes at: the notifier's own
        token of the wake (sampled once per notification and shared by every listener
        it wakes, as v2 sync uses it) when it is not behind ``before`` in any stream,
        else the current token."""
        if before.is_before_or_eq(woken):
            return woken
        return self.current_token()

    async def sleep(self, seconds: float) -> None:
        """Sleep without blocking the reactor (``ModuleApi.sleep``, public since
        Synapse 1.49)."""
        await self._module_api.sleep(seconds)

    def in_background(self, desc: str, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start ``func(*args)`` as a Synapse background process (a logging context and
        metrics of its own; Synapse logs what it raises) and return at once."""
        run_as_background_process(desc, self._hs.hostname, func, *args)  # type: ignore[arg-type]


def user_id_of(user_id: str) -> UserID:
    """Synapse's ``UserID`` of a user id string."""
    return UserID.from_string(user_id)
