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
* The module's own wait (:meth:`NotifierMixin.listen`) reaches two internals, both
  unchanged from 1.152.0 to the newest release: ``Notifier.user_to_user_stream`` (the
  per-user ``_NotifierUserStream`` the notifier wakes) and the stream's
  ``new_listener(token)`` (a Deferred in its ``listeners`` set, fired with the new
  token at the user's next activity, at once if the stream's token is not ``token``;
  its canceller removes it from the set). A user's stream is created through
  ``wait_for_events`` with a zero timeout, never by constructing it here.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from synapse.logging.context import SENTINEL_CONTEXT, PreserveLoggingContext, set_current_context
from synapse.types import StreamToken
from twisted.internet import defer

from synapse_syncv3.compat.base import SynapseBase
from synapse_syncv3.core.deadlines import Deadlines

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

__all__ = ["Listening", "NotifierMixin"]

#: Waits end at most this much before their deadline (one timer for all of them).
DEADLINE_TICK_MS = 20


def monotonic_ms() -> int:
    """The clock of wait deadlines: monotonic, so that a step of the wall clock (NTP,
    a virtual machine resumed from a snapshot) neither ends a wait early nor holds it
    past its timeout. Twisted's timers run on the wall clock: one that fires early
    finds nothing due and is set again (:class:`Deadlines` reads this clock)."""
    return int(time.monotonic() * 1000)


class Listening:
    """One wait of a long-poll for the user's next activity (:meth:`NotifierMixin.listen`).

    Used as ``with listening: token = await listening``: the wait ends with the
    notifier's token at the user's activity, or with None at the deadline; the
    ``with`` block leaves the request's logging context while waiting (the notifier
    fires in none) and forgets the deadline however the wait ends (a cancelled
    request cancels the listener's Deferred, which leaves the user's stream).

    Awaiting it yields the listener's Deferred to Twisted's coroutine driver, which
    sends its result back in: no generator per waiting request, as awaiting the
    Deferred itself would make (``Deferred.__await__``).
    """

    __slots__ = ("_context", "_deadlines", "_stream", "_tick", "_yielded", "deferred")

    def __init__(
        self,
        deferred: defer.Deferred[Any],
        stream: Any,
        deadlines: Deadlines[Listening] | None,
        deadline_ms: int,
    ) -> None:
        #: Fires with the notifier's token (StreamToken) or None at the deadline.
        self.deferred: defer.Deferred[StreamToken | None] = deferred
        self._stream = stream
        self._deadlines = deadlines
        self._tick = deadlines.add(self, deadline_ms) if deadlines is not None else 0
        self._context: Any = None
        self._yielded = False

    def __await__(self) -> Generator[Any, Any, StreamToken | None]:
        if self.deferred.called:
            return self.deferred.__await__()
        return self  # type: ignore[return-value]

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        """The driver's first step gets the Deferred to wait on; the next sends its
        result (a failure, such as a cancellation, is thrown at the ``await``)."""
        if not self._yielded:
            self._yielded = True
            return self.deferred
        raise StopIteration(value)

    def __enter__(self) -> Listening:
        self._context = set_current_context(SENTINEL_CONTEXT)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        set_current_context(self._context)
        self._context = None
        if self._deadlines is not None:
            self._deadlines.discard(self, self._tick)
            self._deadlines = None
        self._stream = None

    def time_out(self) -> None:
        """The deadline passed: leave the user's stream and fire with None."""
        deferred = self.deferred
        if deferred.called:
            return
        if self._stream is not None:
            self._stream.listeners.discard(deferred)
        with PreserveLoggingContext():
            deferred.callback(None)


def _time_out(listening: Listening) -> None:
    listening.time_out()


async def _nothing(before: StreamToken, after: StreamToken) -> None:
    return None


class NotifierMixin(SynapseBase):
    """Waiting for replication and for a user's activity."""

    def __init__(self, api: ModuleApi) -> None:
        super().__init__(api)
        self._notifier = self._hs.get_notifier()
        reactor: Any = self._hs.get_reactor()
        self._deadlines: Deadlines[Listening] = Deadlines(
            now_ms=monotonic_ms,
            call_later=reactor.callLater,
            on_due=_time_out,
            tick_ms=DEADLINE_TICK_MS,
        )

    def wait_clock_ms(self) -> int:
        """The clock of wait deadlines (:func:`monotonic_ms`), in milliseconds."""
        return monotonic_ms()

    def listen(self, user_id: str, token: StreamToken, deadline_ms: int) -> Listening | None:
        """Wait for activity of ``user_id`` after ``token`` until ``deadline_ms`` (on
        :meth:`wait_clock_ms`): the module's own wait for long-polls. Per waiting
        request it holds one Deferred in the notifier's stream of the user and one
        entry among the deadlines (Synapse's ``wait_for_events`` adds a coroutine, a
        timer and a chain of Deferreds: ~6 KiB per waiting request). None if the user
        has no stream in the notifier yet: :meth:`open_user_stream`, then listen
        again."""
        stream = self._notifier.user_to_user_stream.get(user_id)
        if stream is None:
            return None
        if deadline_ms <= monotonic_ms():
            return Listening(defer.succeed(None), None, None, deadline_ms)
        deferred = stream.new_listener(token)
        if deferred.called:  # activity since `token`: no wait
            return Listening(deferred, None, None, deadline_ms)
        return Listening(deferred, stream, self._deadlines, deadline_ms)

    async def open_user_stream(self, user_id: str, token: StreamToken) -> None:
        """Have the notifier keep a stream for ``user_id`` (registered under the user
        and the user's rooms), as its own waits do."""
        await self._notifier.wait_for_events(user_id, 0, _nothing, from_token=token)
        stream = self._notifier.user_to_user_stream.get(user_id)
        current = self.current_token()
        if stream is not None and stream.current_token == current:
            # The equal token the long-polls share, not a ~1 KiB copy per user.
            stream.current_token = current

    async def wait_for_stream_token(self, token: StreamToken) -> bool:
        """Wait (up to Synapse's limit, 10 s) until this worker has caught up with
        ``token``; False if it did not (SPEC §13.3).

        A token not after the last one :meth:`current_token` sampled (a since
        position bound against that sample) is reached already: positions only grow,
        so no new sample (~0.2 ms) is taken for it."""
        last = self._last_token
        if last is not None and token.is_before_or_eq(last):
            return True
        return bool(await self._notifier.wait_for_stream_token(token))
