"""core/deadlines.py: waits end on one timer, never late, at most one tick early."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from synapse_syncv3.core.deadlines import Deadlines


class Fixture:
    def __init__(self, tick_ms: int = 50) -> None:
        self.clock = Clock()
        self.due: list[tuple[str, int]] = []
        self.deadlines: Deadlines[str] = Deadlines(
            now_ms=lambda: round(self.clock.seconds() * 1000),
            call_later=self.clock.callLater,
            on_due=lambda item: self.due.append((item, self.now_ms())),
            tick_ms=tick_ms,
        )

    def now_ms(self) -> int:
        return round(self.clock.seconds() * 1000)

    def advance_ms(self, ms: int) -> None:
        # Exact milliseconds (a sum of float steps drifts below the timer's time).
        self.clock.rightNow = (self.now_ms() + ms) / 1000
        self.clock.advance(0)


def test_due_at_the_tick_before_the_deadline_never_after() -> None:
    f = Fixture(tick_ms=50)
    f.deadlines.add("a", 120)
    f.advance_ms(99)
    assert f.due == []
    f.advance_ms(1)  # 100: the tick of 120
    assert f.due == [("a", 100)]
    assert len(f.deadlines) == 0


def test_a_deadline_on_a_tick_is_due_exactly_then() -> None:
    f = Fixture(tick_ms=20)
    f.deadlines.add("a", 1000)
    f.advance_ms(999)
    assert f.due == []
    f.advance_ms(1)
    assert f.due == [("a", 1000)]


def test_one_timer_for_many_items() -> None:
    f = Fixture()
    for n in range(1000):
        f.deadlines.add(f"x{n}", 1000 + n * 30)
    assert len(f.clock.getDelayedCalls()) == 1
    f.advance_ms(31_000)
    assert sorted(item for item, _ in f.due) == sorted(f"x{n}" for n in range(1000))
    assert f.clock.getDelayedCalls() == []


def test_an_earlier_deadline_moves_the_timer() -> None:
    f = Fixture()
    f.deadlines.add("late", 10_000)
    f.deadlines.add("early", 100)
    assert len(f.clock.getDelayedCalls()) == 1
    f.advance_ms(100)
    assert f.due == [("early", 100)]
    f.advance_ms(9_900)
    assert f.due == [("early", 100), ("late", 10_000)]


def test_discarded_items_are_not_due() -> None:
    f = Fixture()
    tick = f.deadlines.add("woken", 500)
    f.deadlines.add("waiting", 500)
    f.deadlines.discard("woken", tick)
    f.deadlines.discard("never added", tick)
    f.deadlines.discard("woken", tick + 7)
    f.advance_ms(500)
    assert f.due == [("waiting", 500)]


def test_a_failing_item_does_not_hold_back_the_others(caplog) -> None:  # type: ignore[no-untyped-def]
    f = Fixture()
    seen: list[str] = []

    def on_due(item: str) -> None:
        if item == "bad":
            raise ValueError(item)
        seen.append(item)

    deadlines: Deadlines[str] = Deadlines(
        now_ms=f.now_ms, call_later=f.clock.callLater, on_due=on_due
    )
    for item in ("bad", "good1", "good2"):
        deadlines.add(item, 100)
    deadlines.add("later", 200)
    f.advance_ms(200)
    assert sorted(seen) == ["good1", "good2", "later"]
    assert "Failed to end a wait" in caplog.text


def test_items_added_while_firing_and_in_the_past() -> None:
    f = Fixture()
    deadlines = f.deadlines

    def on_due(item: str) -> None:
        f.due.append((item, f.now_ms()))
        if item == "first":
            deadlines.add("past", f.now_ms() - 1000)  # already due: the next tick
            deadlines.add("next", f.now_ms() + 100)

    deadlines._on_due = on_due
    deadlines.add("first", 100)
    f.advance_ms(100)
    f.advance_ms(0)
    assert f.due == [("first", 100), ("past", 100)]
    f.advance_ms(100)
    assert f.due[-1] == ("next", 200)


def test_stop_cancels_the_timer_and_add_restarts_it() -> None:
    f = Fixture()
    f.deadlines.add("a", 100)
    f.deadlines.stop()
    assert f.clock.getDelayedCalls() == []
    f.deadlines.add("b", 100)
    f.advance_ms(100)
    assert sorted(item for item, _ in f.due) == ["a", "b"]


@settings(max_examples=200, deadline=None)
@given(
    tick=st.integers(min_value=1, max_value=200),
    ops=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5_000), st.booleans(), st.integers(0, 300)),
        max_size=60,
    ),
)
def test_every_item_ends_once_within_a_tick_of_its_deadline(tick: int, ops: list) -> None:
    """Random adds (some discarded) between random clock steps: every kept item is due
    exactly once, by the first clock step that reaches its deadline rounded down to the
    tick (so never after its deadline when the clock steps by 1 ms), and never more
    than a tick before its deadline; discarded ones never."""
    f = Fixture(tick_ms=tick)
    deadlines: dict[str, int] = {}
    added_at: dict[str, int] = {}
    discarded = set()
    step_ends = [0]
    for n, (offset, discard, step) in enumerate(ops):
        item = f"i{n}"
        added_at[item] = f.now_ms()
        deadline = f.now_ms() + offset
        t = f.deadlines.add(item, deadline)
        deadlines[item] = deadline
        if discard:
            f.deadlines.discard(item, t)
            discarded.add(item)
        f.advance_ms(step)
        step_ends.append(f.now_ms())
    for _ in range(6_000 // tick + 2):
        f.advance_ms(tick)
        step_ends.append(f.now_ms())
    ended = [item for item, _ in f.due]
    assert len(ended) == len(set(ended))
    assert set(ended) == set(deadlines) - discarded
    for item, at in f.due:
        rounded = deadlines[item] // tick * tick
        # Due at the first clock step that reaches the rounded deadline, or right
        # after the add if that is already past (a timer's float time may fall a hair
        # past the millisecond: then one step on).
        bound = max(rounded, added_at[item] + 1)
        assert rounded <= at <= min(end for end in step_ends if end >= bound + 1)
        assert deadlines[item] - tick < at


def test_a_timer_that_fires_early_ends_nothing_before_the_deadline() -> None:
    """The deadlines run on a monotonic clock and the timer on the wall clock (Twisted's
    reactor): when the wall clock steps forward (NTP, a virtual machine resumed from a
    snapshot) the timer fires early, finds nothing due and is set again."""
    wall = Clock()
    monotonic = [0]
    due: list[tuple[str, int]] = []
    deadlines: Deadlines[str] = Deadlines(
        now_ms=lambda: monotonic[0],
        call_later=wall.callLater,
        on_due=lambda item: due.append((item, monotonic[0])),
        tick_ms=20,
    )
    deadlines.add("wait", 1500)
    monotonic[0] = 300
    wall.advance(0.3)
    wall.advance(1.0)  # a step of the wall clock: the timer fires, 1.2 s early
    assert due == []
    assert len(deadlines) == 1 and len(wall.getDelayedCalls()) == 1
    monotonic[0] = 1499
    wall.advance(1.199)
    assert due == []
    monotonic[0] = 1500
    wall.advance(0.001)
    assert due == [("wait", 1500)]
    assert wall.getDelayedCalls() == []
