"""SessionManager.mark_used: sessions marked used as responses leave share a write
(SPEC §4.3), without Synapse (fakes of the store and of the background runner)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from synapse_syncv3.config import SyncV3Config
from synapse_syncv3.sessions import TOUCH_BATCH, SessionManager


class FakeStore:
    def __init__(self) -> None:
        self.batches: list[dict[str, int]] = []
        self.release = asyncio.Event()
        self.fail = False

    async def touch_many(self, used: Mapping[str, int]) -> None:
        self.batches.append(dict(used))
        await self.release.wait()
        if self.fail:
            raise RuntimeError("database down")


class FakeSynapse:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def make_linearizer(self, name: str) -> object:
        return object()

    def in_background(self, desc: str, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self.tasks.append(asyncio.ensure_future(func(*args)))


def manager(clock: list[int]) -> tuple[SessionManager, FakeStore, FakeSynapse]:
    store, synapse = FakeStore(), FakeSynapse()
    sessions = SessionManager(
        SyncV3Config(),
        store,  # type: ignore[arg-type]
        synapse,  # type: ignore[arg-type]
        lambda: clock[0],
    )
    return sessions, store, synapse


async def settle(synapse: FakeSynapse) -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_marks_made_during_a_write_share_the_next_write() -> None:
    async def run() -> None:
        clock = [1000]
        sessions, store, synapse = manager(clock)
        sessions.mark_used("s1")
        await settle(synapse)
        assert store.batches == [{"s1": 1000}]
        clock[0] = 2000
        sessions.mark_used("s2")
        sessions.mark_used("s3")
        clock[0] = 3000
        sessions.mark_used("s2")  # the latest time wins
        await settle(synapse)
        assert len(synapse.tasks) == 1  # no second writer while one runs
        store.release.set()
        await asyncio.gather(*synapse.tasks)
        assert store.batches == [{"s1": 1000}, {"s2": 3000, "s3": 2000}]
        # Done: the next mark starts a new write.
        sessions.mark_used("s4")
        await asyncio.gather(*synapse.tasks)
        assert len(synapse.tasks) == 2
        assert store.batches[-1] == {"s4": 3000}

    asyncio.run(run())


def test_large_bursts_are_written_in_bounded_batches() -> None:
    async def run() -> None:
        sessions, store, synapse = manager([5])
        store.release.set()
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
        store.release.set()
        sessions.mark_used("s1")
        results = await asyncio.gather(*synapse.tasks, return_exceptions=True)
        assert isinstance(results[0], RuntimeError)  # Synapse logs it
        store.fail = False
        sessions.mark_used("s2")
        await asyncio.gather(*synapse.tasks[1:])
        assert store.batches == [{"s1": 7}, {"s2": 7}]

    asyncio.run(run())
