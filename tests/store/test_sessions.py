"""Sessions, params versions and to_device confirmations in the store (SPEC §4, §5.6,
§8), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter

from synapse_syncv3.store import PARAMS_VERSIONS_KEPT, CreatedSession, ToDeviceMark
from tests.store.conftest import Backend
from tests.store.helpers import (
    DEVICE,
    OTHER_DEVICE,
    OTHER_USER,
    PARAMS_1,
    T0,
    TTL,
    USER,
    create,
    load,
    params,
    record,
)

# -- create_session / load_session ---------------------------------------------------


async def test_create_then_load(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    loaded = await load(backend, "s1")
    assert loaded is not None
    assert (loaded.params_json, loaded.wants_to_device, loaded.state_json) == (PARAMS_1, True, None)
    await create(backend, "s2")
    loaded = await load(backend, "s2")
    assert loaded is not None and not loaded.wants_to_device


async def test_load_checks_the_owner(backend: Backend) -> None:
    await create(backend, "s1")
    assert await load(backend, "s1", user_id=OTHER_USER) is None
    assert await load(backend, "s1", device_id=OTHER_DEVICE) is None
    assert await load(backend, "nope") is None
    assert await load(backend, "s1") is not None


async def test_load_of_an_unknown_params_version(backend: Backend) -> None:
    await create(backend, "s1")
    assert await load(backend, "s1", version=2) is None


async def test_expiry(backend: Backend) -> None:
    await create(backend, "s1")
    # Idle exactly the TTL: still live; one millisecond more: expired, though not swept.
    assert await load(backend, "s1", now_ms=T0 + TTL) is not None
    assert await load(backend, "s1", now_ms=T0 + 2 * TTL + 1) is None
    # A failed load does not bring the session back.
    assert await load(backend, "s1", now_ms=T0 + 2 * TTL + 1) is None
    assert backend.db.count("syncv3_sessions") == 1


async def test_load_marks_the_session_used(backend: Backend) -> None:
    await create(backend, "s1")
    assert await load(backend, "s1", now_ms=T0 + TTL) is not None
    # Live until TTL after the load, not after the creation.
    assert await load(backend, "s1", now_ms=T0 + 2 * TTL) is not None
    # A load with an older clock does not move the last use backwards.
    assert await load(backend, "s1", now_ms=T0) is not None
    assert await backend.store.count_live_sessions(T0 + 3 * TTL, TTL) == 1


async def test_touch_only_moves_forward(backend: Backend) -> None:
    await create(backend, "s1")
    await backend.store.touch("s1", T0 + TTL)
    await backend.store.touch("s1", T0)
    assert await backend.store.count_live_sessions(T0 + 2 * TTL, TTL) == 1
    assert await backend.store.count_live_sessions(T0 + 2 * TTL + 1, TTL) == 0


async def test_load_reports_the_stored_confirmation(backend: Backend) -> None:
    """What lets a request that confirms nothing new skip its write."""
    await create(backend, "s1", wants_to_device=True)
    loaded = await load(backend, "s1")
    assert loaded is not None and loaded.to_device_confirmed is None
    await record(backend, "s1", confirm_to_device=5)
    loaded = await load(backend, "s1")
    assert loaded is not None and loaded.to_device_confirmed == 5


async def test_touch_many(backend: Backend) -> None:
    """Several sessions marked used in one transaction; a mark never moves a last use
    backwards, and an unknown session is no error."""
    await create(backend, "s1")
    await create(backend, "s2")
    await backend.store.touch("s2", T0 + 2 * TTL)
    await backend.store.touch_many({"s1": T0 + TTL, "s2": T0, "gone": T0 + TTL})
    # s1 lives until TTL after the mark; s2 keeps its later last use.
    assert await backend.store.count_live_sessions(T0 + 2 * TTL, TTL) == 2
    assert await backend.store.count_live_sessions(T0 + 2 * TTL + 1, TTL) == 1
    assert await backend.store.count_live_sessions(T0 + 3 * TTL + 1, TTL) == 0


async def test_params_versions_retention(backend: Backend) -> None:
    await create(backend, "s1")
    latest = 1
    for n in range(2, 27):
        recorded = await record(backend, "s1", new_params_json=params(n))
        assert recorded.new_version == n
        latest = n
    assert backend.db.count("syncv3_params", "s1") == PARAMS_VERSIONS_KEPT
    oldest_kept = latest - PARAMS_VERSIONS_KEPT + 1
    for version in (oldest_kept, latest):
        loaded = await load(backend, "s1", version=version)
        assert loaded is not None and loaded.params_json == params(version)
    assert await load(backend, "s1", version=oldest_kept - 1) is None
    assert await load(backend, "s1", version=1) is None


async def test_load_of_a_missing_state_version(backend: Backend) -> None:
    await create(backend, "s1")
    assert await load(backend, "s1", state_version=1) is None


async def test_counting_live_sessions(backend: Backend) -> None:
    await create(backend, "old", now_ms=T0 - 2 * TTL)
    await create(backend, "s1")
    await create(backend, "s2", user_id=OTHER_USER)
    assert await backend.store.count_live_sessions(T0, TTL) == 2
    assert await backend.store.count_live_sessions(T0 + TTL + 1, TTL) == 0


# -- make_room -------------------------------------------------------------------------


async def make_room(
    backend: Backend, session_id: str, now_ms: int, max_sessions: int
) -> CreatedSession:
    return await backend.store.make_room(
        session_id=session_id,
        user_id=USER,
        device_id=DEVICE,
        now_ms=now_ms,
        ttl_ms=TTL,
        max_sessions=max_sessions,
    )


def session_ids(backend: Backend) -> set[str]:
    return {row[0] for row in backend.db.query("SELECT session_id FROM syncv3_sessions")}


async def test_make_room_evicts_the_least_recently_used(backend: Backend) -> None:
    await create(backend, "a", now_ms=T0 + 1)
    await create(backend, "b", now_ms=T0 + 2)
    await create(backend, "c", now_ms=T0 + 3)
    assert await load(backend, "a", now_ms=T0 + 4) is not None  # a used last
    await create(backend, "new", now_ms=T0 + 5)
    created = await make_room(backend, "new", T0 + 5, max_sessions=3)
    assert created == CreatedSession(evicted=["b"], expired=[])
    assert session_ids(backend) == {"a", "c", "new"}
    assert backend.db.count("syncv3_params", "b") == 0


async def test_make_room_breaks_ties_by_creation(backend: Backend) -> None:
    await create(backend, "younger", now_ms=T0 + 2)
    await create(backend, "older", now_ms=T0 + 1)
    assert await load(backend, "older", now_ms=T0 + 2) is not None  # same last use now
    await create(backend, "new", now_ms=T0 + 5)
    created = await make_room(backend, "new", T0 + 5, max_sessions=2)
    assert created.evicted == ["older"]
    created = await make_room(backend, "new", T0 + 5, max_sessions=1)
    assert created.evicted == ["younger"]
    assert session_ids(backend) == {"new"}


async def test_make_room_never_evicts_the_new_session(backend: Backend) -> None:
    # The new session is the least recently used of the device, and the only one kept.
    await create(backend, "new", now_ms=T0)
    await create(backend, "a", now_ms=T0 + 10)
    await create(backend, "b", now_ms=T0 + 20)
    created = await make_room(backend, "new", T0 + 30, max_sessions=1)
    assert sorted(created.evicted) == ["a", "b"]
    assert session_ids(backend) == {"new"}


async def test_make_room_within_the_limit_evicts_nothing(backend: Backend) -> None:
    await create(backend, "a")
    await create(backend, "new")
    assert await make_room(backend, "new", T0, max_sessions=2) == CreatedSession([], [])
    assert session_ids(backend) == {"a", "new"}


async def test_make_room_deletes_expired_sessions(backend: Backend) -> None:
    await create(backend, "expired", now_ms=T0 - TTL - 1)
    await create(backend, "live", now_ms=T0 - TTL)
    await create(backend, "new")
    created = await make_room(backend, "new", T0, max_sessions=2)
    # The expired session is deleted and does not count towards the limit.
    assert created == CreatedSession(evicted=[], expired=["expired"])
    assert session_ids(backend) == {"live", "new"}
    assert backend.db.count("syncv3_params", "expired") == 0


async def test_make_room_leaves_other_devices_alone(backend: Backend) -> None:
    await create(backend, "laptop", device_id=OTHER_DEVICE, now_ms=T0 - 2 * TTL)
    await create(backend, "bob", user_id=OTHER_USER, now_ms=T0 - 2 * TTL)
    await create(backend, "a", now_ms=T0 - 1)
    await create(backend, "new")
    created = await make_room(backend, "new", T0, max_sessions=1)
    assert created == CreatedSession(evicted=["a"], expired=[])
    assert session_ids(backend) == {"laptop", "bob", "new"}


# -- record_request ---------------------------------------------------------------------


async def test_record_new_params_version(backend: Backend) -> None:
    await create(backend, "s1")
    recorded = await record(backend, "s1", new_params_json=params(2), wants_to_device=False)
    assert recorded.new_version == 2 and recorded.session_exists
    for version, expected in ((1, PARAMS_1), (2, params(2))):
        loaded = await load(backend, "s1", version=version)
        assert loaded is not None and loaded.params_json == expected
    recorded = await record(backend, "s1", wants_to_device=False)
    assert recorded.new_version is None
    assert await load(backend, "s1", version=3) is None


async def test_record_remembers_whether_to_device_is_requested(backend: Backend) -> None:
    await create(backend, "s1")
    await record(backend, "s1", wants_to_device=True)
    loaded = await load(backend, "s1")
    assert loaded is not None and loaded.wants_to_device
    await record(backend, "s1", wants_to_device=False)
    loaded = await load(backend, "s1")
    assert loaded is not None and not loaded.wants_to_device


async def test_confirmation_only_moves_forward(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    assert (await record(backend, "s1")).confirmations == [None]
    assert (await record(backend, "s1", confirm_to_device=5)).confirmations == [5]
    assert (await record(backend, "s1", confirm_to_device=3)).confirmations == [5]
    assert (await record(backend, "s1")).confirmations == [5]
    assert (await record(backend, "s1", confirm_to_device=9)).confirmations == [9]


async def test_stopping_to_device_clears_the_confirmation(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    await create(backend, "s2", wants_to_device=True)
    await record(backend, "s1", confirm_to_device=5)
    await record(backend, "s2", confirm_to_device=7)
    # s1 stops: it no longer counts, and s2's confirmation is all that is left.
    recorded = await record(backend, "s1", wants_to_device=False, confirm_to_device=6)
    assert recorded.confirmations == [7]
    # s1 starts again: it has confirmed nothing (the old 5 is gone).
    recorded = await record(backend, "s1", to_device_restarted=True, confirm_to_device=8)
    assert Counter(recorded.confirmations) == Counter([None, 7])


async def test_restarting_to_device_clears_the_confirmation(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    await record(backend, "s1", confirm_to_device=5)
    recorded = await record(backend, "s1", to_device_restarted=True, confirm_to_device=6)
    assert recorded.confirmations == [None]
    assert (await record(backend, "s1", confirm_to_device=2)).confirmations == [2]


async def test_confirmations_of_counting_sessions_only(backend: Backend) -> None:
    await create(backend, "me", wants_to_device=True)
    await create(backend, "peer", wants_to_device=True)
    await create(backend, "fresh", wants_to_device=True)  # confirmed nothing yet
    await create(backend, "no_to_device", wants_to_device=False)
    await create(backend, "expired", wants_to_device=True, now_ms=T0 - 2 * TTL)
    await create(backend, "laptop", wants_to_device=True, device_id=OTHER_DEVICE)
    await create(backend, "bob", wants_to_device=True, user_id=OTHER_USER)
    for session_id, position in (("peer", 8), ("laptop", 1), ("bob", 2)):
        await record(
            backend,
            session_id,
            confirm_to_device=position,
            device_id=OTHER_DEVICE if session_id == "laptop" else DEVICE,
            user_id=OTHER_USER if session_id == "bob" else USER,
        )
    # "expired" confirmed something before expiring; it no longer counts anyway.
    await record(backend, "expired", confirm_to_device=1, now_ms=T0 - 2 * TTL)

    recorded = await record(backend, "me", confirm_to_device=5)
    assert Counter(recorded.confirmations) == Counter([5, 8, None])
    assert Counter(await backend.store.to_device_confirmations(USER, DEVICE, T0, TTL)) == Counter(
        [5, 8, None]
    )
    assert await backend.store.to_device_confirmations(USER, OTHER_DEVICE, T0, TTL) == [1]


async def test_record_without_confirmations(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    recorded = await record(backend, "s1", confirm_to_device=4, want_confirmations=False)
    assert recorded.confirmations is None
    assert await backend.store.to_device_confirmations(USER, DEVICE, T0, TTL) == [4]


async def test_record_for_a_deleted_session(backend: Backend) -> None:
    await create(backend, "s1")
    await backend.store.delete_session("s1")
    for new_params in (None, params(2)):
        recorded = await record(backend, "s1", new_params_json=new_params)
        assert not recorded.session_exists
        assert (recorded.new_version, recorded.confirmations) == (None, None)
    assert backend.db.count("syncv3_params", "s1") == 0


# -- start_to_device / restore_to_device --------------------------------------------------


async def test_start_and_restore_to_device(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=True)
    await record(backend, "s1", confirm_to_device=4)
    started = await backend.store.start_to_device("s1", USER, DEVICE)
    assert started is not None
    mark, _ = started
    assert mark == ToDeviceMark(wants_to_device=True, confirmed=4)
    assert await backend.store.to_device_confirmations(USER, DEVICE, T0, TTL) == [None]
    await backend.store.restore_to_device("s1", mark)
    assert await backend.store.to_device_confirmations(USER, DEVICE, T0, TTL) == [4]


async def test_start_to_device_of_a_session_without_it(backend: Backend) -> None:
    await create(backend, "s1", wants_to_device=False)
    started = await backend.store.start_to_device("s1", USER, DEVICE)
    assert started == (ToDeviceMark(wants_to_device=False, confirmed=None), None)
    mark = started[0]
    # From now on it holds back deletion...
    assert await backend.store.to_device_confirmations(USER, DEVICE, T0, TTL) == [None]
    loaded = await load(backend, "s1")
    assert loaded is not None and loaded.wants_to_device
    # ...until the failed request is undone.
    await backend.store.restore_to_device("s1", mark)
    assert await backend.store.to_device_confirmations(USER, DEVICE, T0, TTL) == []
    loaded = await load(backend, "s1")
    assert loaded is not None and not loaded.wants_to_device


async def test_start_to_device_of_a_deleted_session(backend: Backend) -> None:
    assert await backend.store.start_to_device("nope", USER, DEVICE) is None
