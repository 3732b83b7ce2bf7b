"""Deadlines of waiting long-polls, on one timer.

Thousands of idle long-polls each wait until their ``timeout``. One timer per request
(a ``DelayedCall`` with its closures, what Synapse's notifier sets up for every wait)
costs memory and reactor work per request; here the deadlines are grouped in ticks of
``tick_ms`` and one timer runs for the earliest tick that holds any. A deadline is
rounded down to its tick: a wait ends at most one tick (20 ms by default) before its
deadline, never after it because of the grouping (SPEC §6.2: the server waits "for
up to" ``timeout``).

Pure: the clock and the timer are passed in (``now_ms`` and ``call_later``, which
returns a handle with ``reset(seconds)`` and ``cancel()`` like Twisted's
``DelayedCall``); ``tests/unit/test_deadlines.py`` drives it with Twisted's
``task.Clock``.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

logger = logging.getLogger(__name__)

__all__ = ["Deadlines"]

K = TypeVar("K", bound=Hashable)


class _Timer(Protocol):
    def reset(self, seconds: float) -> None: ...

    def cancel(self) -> None: ...


class Deadlines(Generic[K]):
    """Items due at a deadline; ``on_due(item)`` is called once the deadline's tick has
    passed, unless the item was discarded before."""

    __slots__ = (
        "_buckets",
        "_call_later",
        "_now_ms",
        "_on_due",
        "_tick_ms",
        "_ticks",
        "_timer",
        "_timer_tick",
    )

    def __init__(
        self,
        now_ms: Callable[[], int],
        call_later: Callable[[float, Callable[[], None]], Any],
        on_due: Callable[[K], None],
        tick_ms: int = 20,
    ) -> None:
        if tick_ms <= 0:
            raise ValueError("tick_ms must be positive")
        self._now_ms = now_ms
        self._call_later = call_later
        self._on_due = on_due
        self._tick_ms = tick_ms
        #: tick -> items due at it (a tick is a deadline rounded down to tick_ms).
        self._buckets: dict[int, set[K]] = {}
        #: Heap of the ticks in _buckets.
        self._ticks: list[int] = []
        self._timer: _Timer | None = None
        self._timer_tick: int | None = None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def add(self, item: K, deadline_ms: int) -> int:
        """Register ``item`` for ``deadline_ms``; returns its tick (for :meth:`discard`)."""
        tick = deadline_ms // self._tick_ms  # rounded down: never late
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            heapq.heappush(self._ticks, tick)
        bucket.add(item)
        if self._timer_tick is None or tick < self._timer_tick:
            self._schedule(tick)
        return tick

    def discard(self, item: K, tick: int) -> None:
        """Forget ``item`` (woken or cancelled before its deadline). Its tick stays
        scheduled, emptied, until it passes: cheaper than re-arming the timer."""
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.discard(item)

    def _schedule(self, tick: int) -> None:
        delay = max(0.0, (tick * self._tick_ms - self._now_ms()) / 1000.0)
        self._timer_tick = tick
        if self._timer is None:
            self._timer = self._call_later(delay, self._fire)
        else:
            self._timer.reset(delay)

    def _fire(self) -> None:
        self._timer = None
        self._timer_tick = None
        now_tick = self._now_ms() // self._tick_ms
        due: list[K] = []
        while self._ticks and self._ticks[0] <= now_tick:
            due.extend(self._buckets.pop(heapq.heappop(self._ticks), ()))
        if self._ticks:
            self._schedule(self._ticks[0])
        for item in due:
            try:
                self._on_due(item)
            except Exception:  # one item's failure must not leave the others waiting
                logger.exception("Failed to end a wait at its deadline")

    def stop(self) -> None:
        """Cancel the timer (items are kept; :meth:`add` starts it again)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_tick = None
