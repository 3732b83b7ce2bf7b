"""SessionManager on the long-poll path, without Synapse (fakes of the store and of
Synapse): sessions marked used as responses leave share a delayed write that a later
load makes unnecessary (SPEC §4.3), and a request that changes nothing writes nothing
(SPEC §3.5, §8)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest

from synapse_syncv3.config import SyncV3Config
from synapse_syncv3.core.params import Params
from synapse_syncv3.core.tokens import SinceToken
from synapse_syncv3.sessions import TOUCH_BATCH, SessionManager
from synapse_syncv3.store import LoadedSession, RecordedRequest

USER, DEVICE = "@u:test", "DEV"
TO_DEVICE = Params({"to_device": {}})


class FakeStore:
    def __init__(self) -> None:
        self.batches: list[dict[str, int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False
        self.loaded = LoadedSession(params_json="{}", wants_to_device=True)
        self.loads: list[int] = []
        self.records: list[dict[str, Any]] = []

    async def touch_many(self, used: Mapping[str, int]) -> None:
        self.batches.append(dict(used))
        await self.release.wait()
        if self.fail:
            raise RuntimeError("database down")

    async def load_session(self, **kwargs: Any) -> LoadedSession:
        self.loads.append(kwargs["now_ms"])
        return self.loaded

    async def record_request(self, **kwargs: Any) -> RecordedRequest:
        self.records.append(kwargs)
        return RecordedRequest(None, [])


class FakeSynapse:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []
        self.slept: list[float] = []
        self.wake = asyncio.Event()
        self.wake.set()
        self.position = 100

    def make_linearizer(self, name: str) -> Any:
        class Lock:
            @contextlib.asynccontextmanager
            async def queue(self, key: object) -> AsyncIterator[None]:
                yield

        return Lock()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await self.wake.wait()

    def in_background(self, desc: str, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self.tasks.append(asyncio.ensure_future(func(*args)))

    def current_token(self) -> int:
        return self.position

    def to_device_key(self, token: int) -> int:
        return token

    def current_to_device_key(self) -> int:
        return self.position


def manager(clock: list[int]) -> tuple[SessionManager, FakeStore, FakeSynapse]:
    store, synapse = FakeStore(), FakeSynapse()
    sessions = SessionManager(
        SyncV3Config(),
        store,  # type: ignore[arg-type]
        synapse,  # type: ignore[arg-type]
        lambda: clock[0],
    )
    return sessions, store, synapse


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- mark_used ---------------------------------------------------------------------


def test_marks_wait_then_share_a_write() -> None:
    async def run() -> None:
        clock = [1000]
        sessions, store, synapse = manager(clock)
        synapse.wake.clear()
        sessions.mark_used("s1")
        clock[0] = 2000
        sessions.mark_used("s2")
        sessions.mark_used("s3")
        clock[0] = 3000
        sessions.mark_used("s2")  # the latest time wins
        await settle()
        assert store.batches == [] and len(synapse.tasks) == 1 and synapse.slept == [1.0]
        synapse.wake.set()
        await asyncio.gather(*synapse.tasks)
        assert store.batches == [{"s1": 1000, "s2": 3000, "s3": 2000}]
        # Done: the next mark starts a new write.
        sessions.mark_used("s4")
        await asyncio.gather(*synapse.tasks)
        assert len(synapse.tasks) == 2 and store.batches[-1] == {"s4": 3000}

    asyncio.run(run())


def test_marks_made_during_a_write_go_into_the_next_one() -> None:
    async def run() -> None:
        sessions, store, synapse = manager([5])
        store.release.clear()
        sessions.mark_used("s1")
        await settle()
        assert store.batches == [{"s1": 5}]
        sessions.mark_used("s2")
        await settle()
        assert len(synapse.tasks) == 1  # no second writer while one runs
        store.release.set()
        await asyncio.gather(*synapse.tasks)
        assert store.batches == [{"s1": 5}, {"s2": 5}]

    asyncio.run(run())


def test_a_load_makes_a_waiting_mark_unnecessary() -> None:
    async def run() -> None:
        clock = [1000]
        sessions, store, synapse = manager(clock)
        synapse.wake.clear()
        sessions.mark_used("s1")
        sessions.mark_used("s2")
        clock[0] = 1500  # the next long-poll of s1 starts: its load marks it used
        await sessions.load(SinceToken("s1", 1), USER, DEVICE)
        clock[0] = 900  # a load that started before s2's mark does not replace it
        await sessions.load(SinceToken("s2", 1), USER, DEVICE)
        synapse.wake.set()
        await asyncio.gather(*synapse.tasks)
        assert store.loads == [1500, 900]
        assert store.batches == [{"s2": 1000}]

    asyncio.run(run())


def test_large_bursts_are_written_in_bounded_batches() -> None:
    async def run() -> None:
        sessions, store, synapse = manager([5])
        for n in range(TOUCH_BATCH * 2 + 3):
            sessions.mark_used(f"s{n}")
        await asyncio.gather(*synapse.tasks)
        sizes = [len(batch) for batch in store.batches]
        assert max(sizes) <= TOUCH_BATCH
        assert sum(sizes) == TOUCH_BATCH * 2 + 3
        assert len(synapse.tasks) == 1

    asyncio.run(run())


def test_a_failed_write_does_not_stop_later_marks() -> None:
    async def run() -> None:
        sessions, store, synapse = manager([7])
        store.fail = True
        sessions.mark_used("s1")
        results = await asyncio.gather(*synapse.tasks, return_exceptions=True)
        assert isinstance(results[0], RuntimeError)  # Synapse logs it
        store.fail = False
        sessions.mark_used("s2")
        await asyncio.gather(*synapse.tasks[1:])
        assert store.batches == [{"s1": 7}, {"s2": 7}]

    asyncio.run(run())


# -- record: a request that changes nothing writes nothing ----------------------------


def since(position: str | None) -> SinceToken:
    return SinceToken("s1", 3, {} if position is None else {"to_device": position})


@pytest.mark.parametrize(
    ("stored", "sent", "writes"),
    [
        (40, "40", False),  # a long-poll issued again after its timeout reply
        (40, "30", False),  # an older token: confirmations never move back
        (40, "41", True),  # confirms more
        (None, "40", True),  # first confirmation
        (None, None, False),  # nothing to confirm, nothing confirmed
        (40, "500", True),  # beyond what this server issued: confirms 100 at most...
        (100, "500", False),  # ...which is stored already
    ],
)
def test_record_writes_only_changes(stored: int | None, sent: str | None, writes: bool) -> None:
    async def run() -> None:
        sessions, store, _ = manager([5])
        loaded = LoadedSession(
            params_json=TO_DEVICE.to_json(), wants_to_device=True, to_device_confirmed=stored
        )
        ref = await sessions.record(since(sent), loaded, USER, DEVICE, TO_DEVICE, TO_DEVICE)
        assert (ref.session_id, ref.version, ref.state) == ("s1", 3, 0)
        assert bool(store.records) == writes
        if writes:
            assert store.records[0]["confirm_to_device"] == min(int(sent or 0), 100)

    asyncio.run(run())


def test_record_writes_changed_params_and_restarts() -> None:
    async def run() -> None:
        sessions, store, _ = manager([5])
        loaded = LoadedSession(
            params_json=TO_DEVICE.to_json(), wants_to_device=True, to_device_confirmed=40
        )
        more = Params({"to_device": {"limit": 5}})
        await sessions.record(since("40"), loaded, USER, DEVICE, TO_DEVICE, more)
        assert store.records[-1]["new_params_json"] is not None
        # to_device (re)started by this request: it counts as having confirmed nothing.
        await sessions.record(since(None), loaded, USER, DEVICE, Params({}), TO_DEVICE)
        assert store.records[-1]["to_device_restarted"]
        # Stored as not requesting to_device (another request stopped it): written.
        stopped = LoadedSession(params_json="{}", wants_to_device=False, to_device_confirmed=40)
        await sessions.record(since("40"), stopped, USER, DEVICE, TO_DEVICE, TO_DEVICE)
        assert len(store.records) == 3

    asyncio.run(run())
