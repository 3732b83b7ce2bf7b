"""The per-device guard of to_device deletion (SPEC §8 across processes): decided
deletions are recorded as pending until carried out, a session added afterwards gets
them back, and on PostgreSQL the guard's lock makes a decision see what the previous
holder committed."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from harness import PostgresDatabase
from synapse_syncv3.store import SessionStore
from synapse_syncv3.store_to_device import DEVICE_LOCK_CLASS, _device_lock_key
from tests.store.conftest import DEVICE_EXISTS_SQL, Backend
from tests.store.helpers import DEVICE, OTHER_DEVICE, T0, TTL, USER, create, load, record

#: Stands in for Synapse's device inbox: (user_id, device_id, stream_id).
INBOX_TABLE = "test_inbox"
INBOX_SQL = (
    f"SELECT 1 FROM {INBOX_TABLE} WHERE user_id = ? AND device_id = ? AND stream_id <= ? LIMIT 1"
)


async def test_a_decided_deletion_is_pending_until_done(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    await record(backend, "s1", confirm_to_device=5)
    recorded = await record(backend, "s1", confirm_to_device=7)
    assert recorded.delete_up_to == 7
    # A session created now gets the pending deletion back, to carry out first.
    assert await create_returning(backend, "s2", wants_to_device=True) == 7
    await backend.store.deletion_done(USER, DEVICE, 7)
    assert await create_returning(backend, "s3", wants_to_device=True) is None


async def test_pending_deletions_go_with_the_device(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    assert (await record(backend, "s1", confirm_to_device=7)).delete_up_to == 7
    assert backend.db.query("SELECT up_to FROM syncv3_to_device_deletions") == [(7,)]
    assert await backend.store.delete_device_sessions(USER, DEVICE) == ["s1"]
    assert backend.db.query("SELECT up_to FROM syncv3_to_device_deletions") == []


async def test_nothing_is_decided_while_a_session_has_confirmed_nothing(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    await create(backend, "s2", wants_to_device=True)
    assert (await record(backend, "s1", confirm_to_device=5)).delete_up_to is None
    assert await backend.store.decide_deletion(USER, DEVICE, T0, TTL) is None
    assert await create_returning(backend, "s3", wants_to_device=True) is None


async def test_the_newest_pending_deletion_is_handed_back(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    assert (await record(backend, "s1", confirm_to_device=4)).delete_up_to == 4
    assert (await record(backend, "s1", confirm_to_device=9)).delete_up_to == 9
    started = await backend.store.start_to_device("s1", USER, DEVICE)
    assert started is not None and started[1] == 9
    # Done up to 4 leaves the deletion up to 9 pending.
    await backend.store.deletion_done(USER, DEVICE, 4)
    assert await create_returning(backend, "s2", wants_to_device=True) == 9


async def test_sessions_without_to_device_get_no_pending_deletion(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    await record(backend, "s1", confirm_to_device=3)
    assert await create_returning(backend, "quiet", wants_to_device=False) is None


async def test_pending_deletions_are_per_device(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    await record(backend, "s1", confirm_to_device=3)
    other = await create_returning(backend, "other", wants_to_device=True, device=OTHER_DEVICE)
    assert other is None


async def test_decide_deletion_records_it(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    await record(backend, "s1", confirm_to_device=6, want_confirmations=False)
    assert await backend.store.decide_deletion(USER, DEVICE, T0, TTL) == 6
    assert await create_returning(backend, "s2", wants_to_device=True) == 6


async def test_pending_deletions_are_no_sessions(backend: Backend) -> None:
    backend.db.add_device(USER, DEVICE)
    await create(backend, "s1", wants_to_device=True)
    await record(backend, "s1", confirm_to_device=6)
    assert await backend.store.count_live_sessions(T0, TTL) == 1
    result = await backend.store.sweep(T0 + 2 * TTL, TTL)
    assert result.expired == 1
    assert await backend.store.count_live_sessions(T0, TTL) == 0
    assert await load(backend, "s1") is None


@pytest.fixture
def inbox_backend(backend: Backend) -> Backend:
    """``backend`` whose store reads a test inbox before deciding a deletion."""
    backend.db.statement(
        f"CREATE TABLE {INBOX_TABLE} (user_id TEXT NOT NULL, device_id TEXT NOT NULL,"
        " stream_id BIGINT NOT NULL)"
    )
    backend.store = SessionStore(
        backend.db.run_interaction,
        DEVICE_EXISTS_SQL,
        inbox_has_messages_sql=INBOX_SQL,
        postgres=backend.engine == "postgres",
    )
    return backend


async def test_an_empty_inbox_needs_no_deletion(inbox_backend: Backend) -> None:
    backend = inbox_backend
    await create(backend, "s1", wants_to_device=True)
    assert (await record(backend, "s1", confirm_to_device=5)).delete_up_to is None
    backend.db.statement(f"INSERT INTO {INBOX_TABLE} VALUES (?, ?, 7)", (USER, DEVICE))
    assert (await record(backend, "s1", confirm_to_device=6)).delete_up_to is None
    assert (await record(backend, "s1", confirm_to_device=7)).delete_up_to == 7
    assert await create_returning(backend, "s2", wants_to_device=True) == 7


def test_the_lock_key_is_stable() -> None:
    key = _device_lock_key(USER, DEVICE)
    assert key == _device_lock_key(USER, DEVICE) != _device_lock_key(USER, OTHER_DEVICE)
    assert -(2**31) <= key < 2**31 and 0 < DEVICE_LOCK_CLASS < 2**31


@pytest.mark.parametrize("empty_backend", ["postgres"], indirect=True)
def test_a_decision_waits_for_the_lock_and_sees_its_holder(
    backend: Backend, postgres_database: PostgresDatabase
) -> None:
    """A creator on another connection holds the device's lock and inserts a session
    that has confirmed nothing; a decision blocked on the lock must see that session
    once the lock is released (READ COMMITTED after the wait), and delete nothing."""
    asyncio.run(create(backend, "s1", wants_to_device=True))
    asyncio.run(record(backend, "s1", confirm_to_device=5))
    schema = backend.db.query("SELECT current_schema()")[0][0]
    holder = postgres_database.connect(autocommit=False)
    try:
        with holder.cursor() as cur:
            cur.execute(f"SET search_path TO {schema}")
            cur.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                (DEVICE_LOCK_CLASS, _device_lock_key(USER, DEVICE)),
            )
            cur.execute(
                "INSERT INTO syncv3_sessions (session_id, user_id, device_id, created_ts,"
                " last_used_ts, params_version, wants_to_device, to_device_confirmed)"
                " VALUES ('new', %s, %s, %s, %s, 1, 1, NULL)",
                (USER, DEVICE, T0, T0),
            )
        outcome: list[object] = []

        def decide() -> None:
            try:
                outcome.append(asyncio.run(record(backend, "s1", confirm_to_device=8)))
            except BaseException as e:
                outcome.append(e)

        thread = threading.Thread(target=decide, daemon=True)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive(), f"the decision did not wait for the lock: {outcome}"
        holder.commit()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        holder.close()
    (recorded,) = outcome
    assert not isinstance(recorded, BaseException), recorded
    assert recorded.delete_up_to is None  # type: ignore[attr-defined]
    assert sorted(recorded.confirmations, key=str) == [8, None]  # type: ignore[attr-defined]


async def create_returning(
    backend: Backend, session_id: str, *, wants_to_device: bool, device: str = DEVICE
) -> int | None:
    return await backend.store.create_session(
        session_id=session_id,
        user_id=USER,
        device_id=device,
        params_json="{}",
        wants_to_device=wants_to_device,
        now_ms=T0,
    )
