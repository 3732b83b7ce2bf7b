"""Stream state versions and sent-room sets in the store (SPEC §7.5.2, §10.1), on
SQLite and PostgreSQL."""

from __future__ import annotations

from synapse_syncv3.core.state import ClearedRooms, SessionState, decode_values
from synapse_syncv3.store_state import STATE_VERSIONS_KEPT
from tests.store.conftest import Backend
from tests.store.helpers import Marker, create, load, state_at

STREAM = "room_data"
OTHER_STREAM = "room_list"


async def persist(
    backend: Backend,
    session_id: str,
    base: int,
    *,
    marker: int | None = None,
    rooms: dict[str, list[str]] | None = None,
    clear: tuple[str, ...] = (),
) -> int:
    """Persist a response computed from state version ``base``; its new version."""
    state = await state_at(backend, session_id, base)
    for stream in clear:
        state.clear_rooms(stream)
    for stream, room_ids in (rooms or {}).items():
        state.record_rooms(stream, room_ids)
    if marker is not None:
        state.set(Marker(marker))
    version = await backend.store.persist_state(session_id, state)
    assert version is not None
    return version


async def sent(backend: Backend, session_id: str, version: int, stream: str = STREAM) -> set[str]:
    return set(await (await state_at(backend, session_id, version)).sent_rooms(stream))


async def known(
    backend: Backend, session_id: str, version: int, room_ids: list[str], stream: str = STREAM
) -> set[str]:
    state = await state_at(backend, session_id, version)
    return set(await state.known_rooms(stream, room_ids))


async def test_versions_count_up_and_values_round_trip(backend: Backend) -> None:
    await create(backend, "s1")
    assert await persist(backend, "s1", 0, marker=1) == 1
    assert await persist(backend, "s1", 1, marker=2) == 2
    assert await persist(backend, "s1", 2, marker=3) == 3
    for version in (1, 2, 3):
        loaded = await load(backend, "s1", state_version=version)
        assert loaded is not None and loaded.state_json is not None
        assert decode_values(loaded.state_json) == {Marker.KEY: Marker(version)}
        assert (await state_at(backend, "s1", version)).get(Marker) == Marker(version)


async def test_versions_are_per_session(backend: Backend) -> None:
    await create(backend, "s1")
    await create(backend, "s2")
    assert await persist(backend, "s1", 0, marker=1) == 1
    assert await persist(backend, "s1", 1, marker=1) == 2
    assert await persist(backend, "s2", 0, marker=5) == 1
    assert (await state_at(backend, "s2", 1)).get(Marker) == Marker(5)
    assert await load(backend, "s2", state_version=2) is None


async def test_replayed_version_branches(backend: Backend) -> None:
    # A since token replayed after a lost response: the next response is a sibling
    # version of the lost one, and both stay readable.
    await create(backend, "s1")
    await persist(backend, "s1", 0, marker=1)
    assert await persist(backend, "s1", 1, marker=2) == 2
    assert await persist(backend, "s1", 1, marker=3) == 3
    assert (await state_at(backend, "s1", 2)).get(Marker) == Marker(2)
    assert (await state_at(backend, "s1", 3)).get(Marker) == Marker(3)


async def test_a_version_sees_the_rooms_recorded_at_or_before_it(backend: Backend) -> None:
    await create(backend, "s1")
    await persist(backend, "s1", 0, rooms={STREAM: ["!a", "!b"], OTHER_STREAM: ["!x"]})
    await persist(backend, "s1", 1, rooms={STREAM: ["!c"]})
    assert await sent(backend, "s1", 1) == {"!a", "!b"}
    assert await sent(backend, "s1", 2) == {"!a", "!b", "!c"}
    assert await sent(backend, "s1", 2, OTHER_STREAM) == {"!x"}
    assert await known(backend, "s1", 1, ["!a", "!c", "!z"]) == {"!a"}
    assert await known(backend, "s1", 2, ["!a", "!c", "!z"]) == {"!a", "!c"}
    assert await known(backend, "s1", 2, ["!x"]) == set()


async def test_a_room_counts_from_the_first_version_that_sent_it(backend: Backend) -> None:
    await create(backend, "s1")
    await persist(backend, "s1", 0, rooms={STREAM: ["!a"]})
    await persist(backend, "s1", 1, rooms={STREAM: ["!a", "!b"]})
    assert await sent(backend, "s1", 1) == {"!a"}
    assert await sent(backend, "s1", 2) == {"!a", "!b"}
    assert await known(backend, "s1", 1, ["!a", "!b"]) == {"!a"}
    assert await known(backend, "s1", 2, ["!a", "!b"]) == {"!a", "!b"}
    # Version 2 knew !a through version 1 already: one row per room on a line.
    assert backend.db.count("syncv3_sent_rooms", "s1") == 2


async def test_a_room_shown_by_every_answer_is_recorded_once(backend: Backend) -> None:
    # A room_list session streaming a busy room shows it in every answer: the rows
    # must not grow with the answers (the soak found one row per answer).
    await create(backend, "s1")
    version = await persist(backend, "s1", 0, rooms={STREAM: ["!busy", "!a"]})
    for n in range(60):
        version = await persist(backend, "s1", version, rooms={STREAM: ["!busy", f"!r{n % 3}"]})
    assert backend.db.count("syncv3_sent_rooms", "s1") == 5  # !busy, !a, !r0, !r1, !r2
    assert await known(backend, "s1", version, ["!busy", "!a", "!r2", "!z"]) == {
        "!busy",
        "!a",
        "!r2",
    }
    assert await sent(backend, "s1", version) == {"!busy", "!a", "!r0", "!r1", "!r2"}


async def test_a_room_sent_again_on_a_sibling_branch_is_recorded_again(
    backend: Backend,
) -> None:
    # Version 2 (from 1) sent !a and was lost; the replay of version 1 (version 3)
    # sends !a again: version 1's line did not know it, so version 3 records it.
    await create(backend, "s1")
    assert await persist(backend, "s1", 0, marker=1) == 1
    assert await persist(backend, "s1", 1, rooms={STREAM: ["!a"]}) == 2
    assert await persist(backend, "s1", 1, rooms={STREAM: ["!a"]}) == 3
    assert backend.db.count("syncv3_sent_rooms", "s1") == 2
    # Version 4 (from 3) shows !a again: known through version 3, no row.
    assert await persist(backend, "s1", 3, rooms={STREAM: ["!a"]}) == 4
    assert backend.db.count("syncv3_sent_rooms", "s1") == 2
    # A version on a line that excludes version 3 (from 2) knows !a through 2.
    assert await persist(backend, "s1", 2, rooms={STREAM: ["!a"]}) == 5
    assert backend.db.count("syncv3_sent_rooms", "s1") == 2
    for version in (2, 3, 4, 5):
        assert await known(backend, "s1", version, ["!a"]) == {"!a"}
    assert await known(backend, "s1", 1, ["!a"]) == set()


async def test_a_room_shown_after_a_clear_in_the_same_answer_is_recorded(
    backend: Backend,
) -> None:
    await create(backend, "s1")
    await persist(backend, "s1", 0, rooms={STREAM: ["!a"]})
    await persist(backend, "s1", 1, clear=(STREAM,), rooms={STREAM: ["!a"]})
    assert backend.db.count("syncv3_sent_rooms", "s1") == 2
    assert await known(backend, "s1", 2, ["!a"]) == {"!a"}


async def test_a_sibling_branch_does_not_move_a_room_out_of_a_lineage(backend: Backend) -> None:
    # Version 1 sent !a. A replay of version 0 that resets the stream (version 2)
    # sends !a again. Version 1's lineage still has received !a.
    await create(backend, "s1")
    await persist(backend, "s1", 0, rooms={STREAM: ["!a"]})
    await persist(backend, "s1", 0, clear=(STREAM,), rooms={STREAM: ["!a"]})
    assert await known(backend, "s1", 1, ["!a"]) == {"!a"}
    assert await known(backend, "s1", 2, ["!a"]) == {"!a"}


async def test_known_rooms_of_many_rooms(backend: Backend) -> None:
    # More rooms than one IN list of the store holds.
    rooms = [f"!r{i:03}" for i in range(250)]
    await create(backend, "s1")
    await persist(backend, "s1", 0, rooms={STREAM: rooms[:210]})
    asked = [*rooms, "!unknown"]
    assert await known(backend, "s1", 1, asked) == set(rooms[:210])
    assert await sent(backend, "s1", 1) == set(rooms[:210])


async def test_clear_rooms_starts_the_set_again(backend: Backend) -> None:
    await create(backend, "s1")
    await persist(backend, "s1", 0, rooms={STREAM: ["!a"], OTHER_STREAM: ["!x"]})
    await persist(backend, "s1", 1, rooms={STREAM: ["!b"]})
    assert await persist(backend, "s1", 2, clear=(STREAM,), rooms={STREAM: ["!c"]}) == 3
    assert await sent(backend, "s1", 3) == {"!c"}
    assert await known(backend, "s1", 3, ["!a", "!b", "!c"]) == {"!c"}
    # Other streams keep their set; the versions before the clear keep theirs.
    assert await sent(backend, "s1", 3, OTHER_STREAM) == {"!x"}
    assert await sent(backend, "s1", 2) == {"!a", "!b"}
    assert (await state_at(backend, "s1", 3)).get(ClearedRooms) == ClearedRooms({STREAM: 2})
    # A later version of the cleared lineage still sees only what came after the clear.
    await persist(backend, "s1", 3, rooms={STREAM: ["!d"]})
    assert await sent(backend, "s1", 4) == {"!c", "!d"}


async def test_a_room_sent_again_after_a_clear_counts_from_the_new_version(
    backend: Backend,
) -> None:
    await create(backend, "s1")
    await persist(backend, "s1", 0, rooms={STREAM: ["!a", "!b"]})
    await persist(backend, "s1", 1, clear=(STREAM,), rooms={STREAM: ["!a"]})
    assert await sent(backend, "s1", 2) == {"!a"}
    assert await known(backend, "s1", 2, ["!a", "!b"]) == {"!a"}
    await persist(backend, "s1", 2, rooms={STREAM: ["!e"]})
    assert await sent(backend, "s1", 3) == {"!a", "!e"}


async def test_a_clear_without_rooms(backend: Backend) -> None:
    await create(backend, "s1")
    await persist(backend, "s1", 0, rooms={STREAM: ["!a"]})
    await persist(backend, "s1", 1, clear=(STREAM,))
    assert await sent(backend, "s1", 2) == set()
    assert await known(backend, "s1", 2, ["!a"]) == set()


async def test_a_room_sent_only_by_a_lost_response_is_not_known(backend: Backend) -> None:
    # The client holds version 1. The response that made version 2 sent !lost and was
    # lost; the client replays version 1 and gets version 3, which did not send !lost.
    # Presenting version 3, the client has received !kept and !new, never !lost, so a
    # later first delivery of !lost is still owed (SPEC §7.5.2).
    await create(backend, "s1")
    assert await persist(backend, "s1", 0, rooms={STREAM: ["!kept"]}) == 1
    assert await persist(backend, "s1", 1, rooms={STREAM: ["!lost"]}) == 2
    assert await persist(backend, "s1", 1, rooms={STREAM: ["!new"]}) == 3
    assert await known(backend, "s1", 3, ["!kept", "!lost", "!new"]) == {"!kept", "!new"}


async def test_state_versions_retention(backend: Backend) -> None:
    await create(backend, "s1")
    latest = 0
    for n in range(1, 26):
        latest = await persist(backend, "s1", latest, marker=n)
    assert latest == 25
    assert backend.db.count("syncv3_stream_state", "s1") == STATE_VERSIONS_KEPT
    oldest_kept = latest - STATE_VERSIONS_KEPT + 1
    assert (await state_at(backend, "s1", oldest_kept)).get(Marker) == Marker(oldest_kept)
    assert await load(backend, "s1", state_version=oldest_kept - 1) is None
    assert await load(backend, "s1", state_version=1) is None


async def test_persist_state_of_a_deleted_session(backend: Backend) -> None:
    await create(backend, "s1")
    await backend.store.delete_session("s1")
    state = SessionState()
    state.set(Marker(1))
    state.record_rooms(STREAM, ["!a"])
    assert await backend.store.persist_state("s1", state) is None
    assert backend.db.count("syncv3_stream_state") == 0
    assert backend.db.count("syncv3_sent_rooms") == 0


async def test_rooms_before_every_kept_versions_clear_are_pruned(backend: Backend) -> None:
    # A reset (clear) starts the set again; the rows before it stay while a kept state
    # version still reads them, and go with a later clear once none does.
    await create(backend, "s1")
    version = await persist(backend, "s1", 0, rooms={STREAM: ["!a", "!b"], OTHER_STREAM: ["!x"]})
    version = await persist(backend, "s1", version, clear=(STREAM,), rooms={STREAM: ["!c"]})
    cleared_at = version
    # Version 1 is still kept: its rows stay.
    assert backend.db.count("syncv3_sent_rooms", "s1") == 4
    for n in range(STATE_VERSIONS_KEPT):
        version = await persist(backend, "s1", version, marker=n)
    assert await known(backend, "s1", version, ["!a", "!c"]) == {"!c"}
    version = await persist(backend, "s1", version, clear=(STREAM,), rooms={STREAM: ["!d"]})
    # Every kept version now reads STREAM only after the first clear: !a and !b go; the
    # other stream's rows and the rows after the first clear stay.
    rows = backend.db.query(
        "SELECT stream, room_id, version FROM syncv3_sent_rooms WHERE session_id = ?"
        " ORDER BY stream, room_id",
        ("s1",),
    )
    assert [(r[0], r[1], int(r[2])) for r in rows] == sorted(
        [(STREAM, "!c", cleared_at), (STREAM, "!d", version), (OTHER_STREAM, "!x", 1)]
    )
    assert await sent(backend, "s1", version) == {"!d"}
    assert await known(backend, "s1", version - 1, ["!a", "!c"]) == {"!c"}
    assert await sent(backend, "s1", version, OTHER_STREAM) == {"!x"}
