"""room_list snapshots in the store (SPEC §7.4, §10.3), on SQLite and PostgreSQL."""

from __future__ import annotations

from synapse_syncv3.core.state import Snapshot
from synapse_syncv3.store_state import SNAPSHOTS_KEPT
from tests.store.conftest import Backend
from tests.store.helpers import create, state_at

ROOMS = ("!a:x", "!b:x", "!c:x")


async def test_snapshot_round_trip_with_its_response(backend: Backend) -> None:
    await create(backend, "s1")
    state = await state_at(backend, "s1", 0)
    snapshot = Snapshot("abcdEFGH", "12_m3~1.4", ROOMS, {"!b:x": "$invite"})
    state.add_snapshot(snapshot)
    assert state.changed
    version = await backend.store.persist_state("s1", state)
    assert version == 1
    later = await state_at(backend, "s1", 1)
    assert await later.snapshot("abcdEFGH") == snapshot
    assert await later.snapshot("zzzzzzzz") is None
    # Another session never sees it.
    await create(backend, "s2")
    assert await backend.store.read_snapshot("s2", "abcdEFGH") is None


async def test_a_response_not_persisted_stores_no_snapshot(backend: Backend) -> None:
    await create(backend, "s1")
    state = await state_at(backend, "s1", 0)
    state.add_snapshot(Snapshot("abcdEFGH", "1_1", ROOMS))
    # The handler forks the state for each computation of a long-poll: a snapshot of
    # a computation that was not sent is gone with it.
    assert not state.fork().changed
    assert await backend.store.read_snapshot("s1", "abcdEFGH") is None


async def test_latest_snapshots_are_kept(backend: Backend) -> None:
    await create(backend, "s1")
    ids = [f"snap{n:04d}" for n in range(SNAPSHOTS_KEPT + 3)]
    version = 0
    for snapshot_id in ids:
        state = await state_at(backend, "s1", version)
        state.add_snapshot(Snapshot(snapshot_id, f"{version}_0", ROOMS))
        version = await backend.store.persist_state("s1", state)
    kept = [i for i in ids if await backend.store.read_snapshot("s1", i) is not None]
    assert kept == ids[-SNAPSHOTS_KEPT:]
    assert backend.db.count("syncv3_room_list_snapshots", "s1") == SNAPSHOTS_KEPT
