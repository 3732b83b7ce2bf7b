"""compat/notifier.py's Listening: the module's own wait, driven by Twisted's coroutine
driver as in Synapse, against a stand-in for the notifier's per-user stream (the real
one is exercised by tests/integration/test_longpoll.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from synapse.logging.context import SENTINEL_CONTEXT, LoggingContext, current_context
from synapse.types import StreamKeyType, StreamToken
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock

from synapse_syncv3.compat.base import SynapseBase
from synapse_syncv3.compat.notifier import Listening, NotifierMixin, _time_out
from synapse_syncv3.core.deadlines import Deadlines


class UserStream:
    """What Listening uses of Synapse's ``_NotifierUserStream``: ``listeners`` and a
    ``new_listener`` whose canceller leaves the set."""

    def __init__(self) -> None:
        self.listeners: set[Deferred[Any]] = set()

    def new_listener(self) -> Deferred[Any]:
        deferred: Deferred[Any] = Deferred(canceller=lambda d: self.listeners.discard(d))
        self.listeners.add(deferred)
        return deferred

    def notify(self, token: Any) -> None:
        listeners, self.listeners = self.listeners, set()
        for deferred in listeners:
            deferred.callback(token)


class Setup:
    def __init__(self) -> None:
        self.clock = Clock()
        self.deadlines: Deadlines[Listening] = Deadlines(
            now_ms=lambda: int(self.clock.seconds() * 1000),
            call_later=self.clock.callLater,
            on_due=_time_out,
        )
        self.stream = UserStream()
        self.contexts: list[Any] = []

    def wait(self, deadline_ms: int = 1000) -> Deferred[Any]:
        listening = Listening(self.stream.new_listener(), self.stream, self.deadlines, deadline_ms)

        async def request() -> Any:
            with LoggingContext(name="request", server_name="test"):
                with listening:
                    self.contexts.append(current_context())
                    woken = await listening
                self.contexts.append(current_context().name)  # type: ignore[union-attr]
                return woken

        return Deferred.fromCoroutine(request())


def test_woken_with_the_notifiers_token() -> None:
    setup = Setup()
    result = setup.wait()
    assert not result.called
    assert setup.contexts == [SENTINEL_CONTEXT]  # no request context while waiting
    setup.stream.notify("token-7")
    assert result.result == "token-7"
    assert setup.contexts[-1] == "request"  # back in the request's context
    assert len(setup.deadlines) == 0 and setup.stream.listeners == set()


def test_the_deadline_ends_the_wait_with_none_and_leaves_the_stream() -> None:
    setup = Setup()
    result = setup.wait(deadline_ms=1000)
    setup.clock.advance(0.999)
    assert not result.called
    setup.clock.advance(0.05)
    assert result.called and result.result is None
    assert setup.stream.listeners == set()
    setup.stream.notify("late")  # nothing left to fire twice


def test_a_cancelled_request_leaves_the_stream_and_the_deadlines() -> None:
    setup = Setup()
    result = setup.wait()
    result.cancel()
    failures: list[Any] = []
    result.addErrback(failures.append)
    assert failures and failures[0].check(CancelledError)
    assert setup.stream.listeners == set()
    assert len(setup.deadlines) == 0
    setup.clock.advance(5)  # the emptied tick passes quietly


def test_an_already_fired_listener_needs_no_wait() -> None:
    fired: Deferred[Any] = Deferred()
    fired.callback("now")
    listening = Listening(fired, None, None, 0)

    async def request() -> Any:
        with listening:
            return await listening

    assert Deferred.fromCoroutine(request()).result == "now"


def test_many_waits_share_one_timer() -> None:
    setup = Setup()
    results = [setup.wait(deadline_ms=1000 + n) for n in range(500)]
    assert len(setup.clock.getDelayedCalls()) == 1
    setup.stream.notify("t")
    assert {r.result for r in results} == {"t"}
    setup.clock.advance(3)
    assert setup.clock.getDelayedCalls() == []


def test_a_failure_of_the_listener_is_raised_at_the_await() -> None:
    setup = Setup()
    result = setup.wait()
    [listener] = setup.stream.listeners
    setup.stream.listeners.clear()
    listener.errback(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        result.result.raiseException()
    result.addErrback(lambda _: None)


def test_a_wake_computes_at_the_notifiers_token_unless_it_is_behind() -> None:
    base: Any = SynapseBase.__new__(SynapseBase)
    current = StreamToken.START.copy_and_advance(StreamKeyType.TO_DEVICE, 9)
    base._event_sources = SimpleNamespace(get_current_token=lambda: current)
    base._last_token = None
    before = StreamToken.START.copy_and_advance(StreamKeyType.TO_DEVICE, 5)
    ahead = before.copy_and_advance(StreamKeyType.TYPING, 3)
    assert base.wake_token(before, ahead) is ahead  # no sampling of the current token
    assert base.wake_token(before, before) is before
    # A stream token older than what the request computed at (in to_device): the
    # current token instead, never a position that goes back.
    behind = StreamToken.START.copy_and_advance(StreamKeyType.TYPING, 3)
    assert base.wake_token(before, behind) == current


def test_a_since_token_bound_against_the_last_sample_waits_for_nothing() -> None:
    """A since position bound against Synapse's current token (the usual case) is
    reached: no second sample by Synapse's wait_for_stream_token (~0.2 ms each)."""
    mixin: Any = NotifierMixin.__new__(NotifierMixin)
    current = StreamToken.START.copy_and_advance(StreamKeyType.TO_DEVICE, 9)
    mixin._event_sources = SimpleNamespace(get_current_token=lambda: current)
    mixin._last_token = None
    asked: list[Any] = []

    async def wait_for_stream_token(token: Any) -> bool:
        asked.append(token)
        return False

    mixin._notifier = SimpleNamespace(wait_for_stream_token=wait_for_stream_token)
    bound = StreamToken.START.copy_and_advance(StreamKeyType.TO_DEVICE, 7)

    def wait(token: Any) -> Any:
        return ensureDeferred(mixin.wait_for_stream_token(token)).result

    assert wait(bound) is False and asked == [bound]  # nothing sampled yet: Synapse's
    mixin.current_token()
    assert wait(bound) is True and asked == [bound]
    assert wait(current) is True and asked == [bound]
    ahead = current.copy_and_advance(StreamKeyType.TO_DEVICE, 10)
    assert wait(ahead) is False and asked == [bound, ahead]  # a lagging worker waits


class TokenedUserStream(UserStream):
    """``new_listener(token)`` as Synapse's: at once if the stream moved past ``token``."""

    current_token: Any = "t0"

    def new_listener(self, token: Any = None) -> Deferred[Any]:  # type: ignore[override]
        if token != self.current_token:
            return succeed(self.current_token)
        return super().new_listener()


def test_a_step_of_the_wall_clock_neither_ends_a_wait_early_nor_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deadlines run on the monotonic clock; Synapse's clock and Twisted's timers on the
    wall clock. A wall clock that steps forward 1.2 s during a 1.5 s wait (NTP, a
    virtual machine resumed from a snapshot) fires the timer early: the wait goes on
    to its deadline on the monotonic clock."""
    wall = Clock()
    wall.advance(1_700_000_000)
    monotonic = [50_000]
    from synapse_syncv3.compat import notifier

    monkeypatch.setattr(notifier, "monotonic_ms", lambda: monotonic[0])
    stream = TokenedUserStream()
    hs = SimpleNamespace(
        get_datastores=lambda: SimpleNamespace(main=None),
        get_event_sources=lambda: None,
        get_clock=lambda: SimpleNamespace(time_msec=lambda: int(wall.seconds() * 1000)),
        get_notifier=lambda: SimpleNamespace(user_to_user_stream={"@me:test": stream}),
        get_reactor=lambda: wall,
    )
    mixin = NotifierMixin(SimpleNamespace(_hs=hs))  # type: ignore[arg-type]
    deadline = mixin.wait_clock_ms() + 1500
    listening = mixin.listen("@me:test", "t0", deadline)
    assert listening is not None

    async def wait() -> Any:
        with listening:
            return await listening

    result = Deferred.fromCoroutine(wait())
    monotonic[0] += 300
    wall.advance(0.3)
    wall.advance(1.2)  # the wall clock steps: Twisted's timer is due
    assert not result.called, "a step of the wall clock ended the wait"
    monotonic[0] += 1199
    wall.advance(1.199)
    assert not result.called
    monotonic[0] += 1
    wall.advance(0.005)
    assert result.called and result.result is None
    assert stream.listeners == set()
