"""Deleting sessions removes their rows from every table (SPEC §4.3, §10.1, §10.3), on
SQLite and PostgreSQL."""

from __future__ import annotations

from synapse_syncv3.core.state import SessionState, Snapshot
from synapse_syncv3.schema import DEVICE_TABLES, SESSION_TABLES
from synapse_syncv3.store import SweepResult
from tests.store.conftest import Backend
from tests.store.helpers import (
    DEVICE,
    OTHER_DEVICE,
    OTHER_USER,
    T0,
    TTL,
    USER,
    Marker,
    create,
    params,
    record,
)


async def populate(
    backend: Backend,
    session_id: str,
    *,
    now_ms: int = T0,
    user_id: str = USER,
    device_id: str = DEVICE,
    wants_to_device: bool = False,
) -> None:
    """A session with rows in every table: two params versions and a state version
    with values and sent rooms."""
    await create(
        backend,
        session_id,
        now_ms=now_ms,
        user_id=user_id,
        device_id=device_id,
        wants_to_device=wants_to_device,
    )
    await record(
        backend,
        session_id,
        new_params_json=params(2),
        wants_to_device=wants_to_device,
        now_ms=now_ms,
        user_id=user_id,
        device_id=device_id,
    )
    state = SessionState()
    state.set(Marker(1))
    state.record_rooms("room_data", ["!a", "!b"])
    state.add_snapshot(Snapshot("snap0001", "5_1", ("!a",)))
    assert await backend.store.persist_state(session_id, state) == 1
    for table in SESSION_TABLES:
        assert backend.db.count(table, session_id) > 0, (table, session_id)


def assert_gone(backend: Backend, *session_ids: str) -> None:
    for session_id in session_ids:
        for table in SESSION_TABLES:
            assert backend.db.count(table, session_id) == 0, (table, session_id)


def assert_kept(backend: Backend, *session_ids: str) -> None:
    for session_id in session_ids:
        for table in SESSION_TABLES:
            assert backend.db.count(table, session_id) > 0, (table, session_id)


def test_session_tables_are_every_table_with_session_rows(backend: Backend) -> None:
    tables = {table for table in backend.db.tables() if table.startswith("syncv3_")}
    assert tables - {"syncv3_schema_version", *DEVICE_TABLES} == set(SESSION_TABLES)
    assert SESSION_TABLES[-1] == "syncv3_sessions"


async def test_delete_session(backend: Backend) -> None:
    await populate(backend, "s1")
    await populate(backend, "s2")
    await backend.store.delete_session("s1")
    assert_gone(backend, "s1")
    assert_kept(backend, "s2")
    await backend.store.delete_session("s1")  # again: nothing to do


async def test_delete_device_sessions(backend: Backend) -> None:
    await populate(backend, "s1")
    await populate(backend, "s2")
    await populate(backend, "laptop", device_id=OTHER_DEVICE)
    await populate(backend, "bob", user_id=OTHER_USER)
    removed = await backend.store.delete_device_sessions(USER, DEVICE)
    assert sorted(removed) == ["s1", "s2"]
    assert_gone(backend, "s1", "s2")
    assert_kept(backend, "laptop", "bob")
    assert await backend.store.delete_device_sessions(USER, DEVICE) == []


async def test_sweep(backend: Backend) -> None:
    old = T0 - 2 * TTL
    for device in (DEVICE, OTHER_DEVICE, "LIVE"):
        backend.db.add_device(USER, device)
    await populate(backend, "expired_to_device", now_ms=old, wants_to_device=True)
    await populate(backend, "expired", now_ms=old, device_id=OTHER_DEVICE)
    await populate(backend, "live", device_id="LIVE", wants_to_device=True)
    await populate(backend, "device_gone", device_id="GONE")
    await populate(backend, "expired_device_gone", device_id="GONE TOO", now_ms=old)

    result = await backend.store.sweep(T0, TTL)
    assert result == SweepResult(
        expired=2,
        device_deleted=2,
        to_device_devices={(USER, DEVICE)},
    )
    assert_gone(backend, "expired_to_device", "expired", "device_gone", "expired_device_gone")
    assert_kept(backend, "live")
    assert await backend.store.sweep(T0, TTL) == SweepResult(0, 0, set())


async def test_sweep_after_a_device_is_deleted(backend: Backend) -> None:
    backend.db.add_device(USER, DEVICE)
    await populate(backend, "s1")
    assert (await backend.store.sweep(T0, TTL)).device_deleted == 0
    backend.db.remove_device(USER, DEVICE)
    assert (await backend.store.sweep(T0, TTL)).device_deleted == 1
    assert_gone(backend, "s1")


async def test_sweep_in_batches(backend: Backend) -> None:
    backend.db.add_device(USER, DEVICE)
    for n in range(3):
        await populate(backend, f"s{n}", now_ms=T0 - 2 * TTL + n)
    deleted = []
    for _ in range(3):
        result = await backend.store.sweep(T0, TTL, batch=2)
        deleted.append(result.expired)
    assert deleted == [2, 1, 0]
    assert_gone(backend, "s0", "s1", "s2")
    assert await backend.store.count_live_sessions(T0, TTL) == 0
