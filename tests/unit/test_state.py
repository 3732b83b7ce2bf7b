"""The per-session stream state (core/state.py): typed values, room sets and what one
response changes, with a fake room reader instead of the store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from typing import Any, ClassVar

import attrs
import pytest

from synapse_syncv3.core.state import (
    MAX_EXCLUDED_RANGES,
    ClearedRooms,
    Lineage,
    SessionState,
    decode_values,
    encode_values,
    register_value,
)

STREAM = "room_data"
OTHER = "room_list"


@register_value
@attrs.frozen
class Anchor:
    KEY: ClassVar[str] = "test_state_anchor"

    position: int

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Anchor:
        return cls(int(data["position"]))


@register_value
@attrs.frozen
class Pending:
    KEY: ClassVar[str] = "test_state_pending"

    rooms: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"rooms": list(self.rooms)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pending:
        return cls(tuple(data["rooms"]))


class FakeRooms:
    """Stored room rows ``(stream, room) -> first version``, read as the store does,
    with every call recorded."""

    def __init__(self, rows: dict[tuple[str, str], int] | None = None) -> None:
        self.rows = dict(rows or {})
        self.calls: list[tuple[str, int, int, frozenset[str] | None]] = []

    async def __call__(
        self, stream: str, up_to: int, after: int, room_ids: Collection[str] | None
    ) -> set[str]:
        self.calls.append((stream, up_to, after, None if room_ids is None else frozenset(room_ids)))
        return {
            room
            for (row_stream, room), version in self.rows.items()
            if row_stream == stream
            and after < version <= up_to
            and (room_ids is None or room in room_ids)
        }


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- values --------------------------------------------------------------------------


def test_register_value_refuses_a_taken_key() -> None:
    assert register_value(Anchor) is Anchor  # again: the same class is fine

    @attrs.frozen
    class Impostor:
        KEY: ClassVar[str] = Anchor.KEY

        def to_json(self) -> dict[str, Any]:
            return {}

        @classmethod
        def from_json(cls, data: dict[str, Any]) -> Impostor:
            return cls()

    with pytest.raises(ValueError, match="taken"):
        register_value(Impostor)


def test_set_refuses_an_unregistered_value() -> None:
    @attrs.frozen
    class Unregistered:
        KEY: ClassVar[str] = "test_state_unregistered"

        def to_json(self) -> dict[str, Any]:
            return {}

        @classmethod
        def from_json(cls, data: dict[str, Any]) -> Unregistered:
            return cls()

    with pytest.raises(ValueError, match="not a registered"):
        SessionState().set(Unregistered())


def test_get_set_discard() -> None:
    state = SessionState()
    assert state.get(Anchor) is None
    state.set(Anchor(5))
    state.set(Pending(("!a",)))
    assert state.get(Anchor) == Anchor(5)
    state.set(Anchor(6))
    assert state.get(Anchor) == Anchor(6)
    state.discard(Anchor)
    assert state.get(Anchor) is None
    state.discard(Anchor)  # absent: nothing happens
    assert state.get(Pending) == Pending(("!a",))


def test_changed() -> None:
    base = {Anchor.KEY: Anchor(1)}
    assert not SessionState(2, base).changed
    state = SessionState(2, base)
    state.set(Anchor(1))  # an equal value is no change
    assert not state.changed
    state.discard(Pending)  # discarding what is not there is no change
    assert not state.changed
    state.record_rooms(STREAM, [])  # nor is recording no room
    assert not state.changed
    for change in (
        lambda s: s.set(Anchor(2)),
        lambda s: s.set(Pending()),
        lambda s: s.discard(Anchor),
        lambda s: s.record_rooms(STREAM, ["!a"]),
        lambda s: s.clear_rooms(STREAM),
    ):
        state = SessionState(2, base)
        change(state)
        assert state.changed


def test_fork_drops_this_responses_changes() -> None:
    reader = FakeRooms({(STREAM, "!stored"): 1})
    state = SessionState(2, {Anchor.KEY: Anchor(1)}, reader)
    state.set(Anchor(9))
    state.set(Pending(("!p",)))
    state.record_rooms(STREAM, ["!new"])
    state.clear_rooms(OTHER)
    assert state.changed

    fork = state.fork()
    assert fork.version == 2
    assert not fork.changed
    assert fork.get(Anchor) == Anchor(1)
    assert fork.get(Pending) is None
    assert run(fork.sent_rooms(STREAM)) == {"!stored"}
    # The fork reads rooms through the same reader.
    assert reader.calls == [(STREAM, 2, 0, None)]
    # The original keeps its changes.
    assert state.get(Anchor) == Anchor(9)


# -- room sets -----------------------------------------------------------------------


def test_sent_rooms_include_this_responses_rooms() -> None:
    reader = FakeRooms({(STREAM, "!a"): 1, (STREAM, "!b"): 3, (STREAM, "!later"): 4})
    state = SessionState(3, {}, reader)
    state.record_rooms(STREAM, ["!c"])
    state.record_rooms(STREAM, ["!d", "!c"])
    assert run(state.sent_rooms(STREAM)) == {"!a", "!b", "!c", "!d"}
    assert reader.calls == [(STREAM, 3, 0, None)]
    assert run(state.sent_rooms(OTHER)) == frozenset()


def test_known_rooms_exclude_this_responses_rooms() -> None:
    reader = FakeRooms({(STREAM, "!a"): 1, (STREAM, "!b"): 2})
    state = SessionState(2, {}, reader)
    state.record_rooms(STREAM, ["!c"])
    assert run(state.known_rooms(STREAM, ["!a", "!c", "!x"])) == {"!a"}
    assert reader.calls == [(STREAM, 2, 0, frozenset({"!a", "!c", "!x"}))]
    # Asking about no room asks the reader nothing.
    assert run(state.known_rooms(STREAM, [])) == frozenset()
    assert len(reader.calls) == 1


def test_version_zero_reads_nothing() -> None:
    reader = FakeRooms({(STREAM, "!a"): 1})
    state = SessionState(0, {}, reader)
    state.record_rooms(STREAM, ["!b"])
    assert run(state.sent_rooms(STREAM)) == {"!b"}
    assert run(state.known_rooms(STREAM, ["!a", "!b"])) == frozenset()
    assert reader.calls == []


def test_the_default_reader_knows_no_room() -> None:
    state = SessionState(4)
    assert run(state.sent_rooms(STREAM)) == frozenset()
    assert run(state.known_rooms(STREAM, ["!a"])) == frozenset()


def test_a_cleared_set_is_read_after_the_clear() -> None:
    reader = FakeRooms({(STREAM, "!before"): 2, (STREAM, "!after"): 3, (OTHER, "!x"): 1})
    state = SessionState(3, {ClearedRooms.KEY: ClearedRooms({STREAM: 2})}, reader)
    assert run(state.sent_rooms(STREAM)) == {"!after"}
    assert run(state.known_rooms(STREAM, ["!before", "!after"])) == {"!after"}
    assert run(state.sent_rooms(OTHER)) == {"!x"}
    assert reader.calls == [
        (STREAM, 3, 2, None),
        (STREAM, 3, 2, frozenset({"!before", "!after"})),
        (OTHER, 3, 0, None),
    ]


def test_clear_rooms() -> None:
    reader = FakeRooms({(STREAM, "!a"): 1, (OTHER, "!x"): 1})
    state = SessionState(2, {}, reader)
    state.record_rooms(STREAM, ["!b"])
    state.clear_rooms(STREAM)
    assert run(state.sent_rooms(STREAM)) == frozenset()
    state.record_rooms(STREAM, ["!c"])
    assert run(state.sent_rooms(STREAM)) == {"!c"}
    assert run(state.known_rooms(STREAM, ["!a", "!c"])) == frozenset()
    # Only the cleared stream's stored rooms are skipped.
    assert reader.calls == []
    assert run(state.sent_rooms(OTHER)) == {"!x"}


# -- changes -------------------------------------------------------------------------


def test_changes_without_a_clear() -> None:
    state = SessionState(4, {Anchor.KEY: Anchor(1), Pending.KEY: Pending(("!p",))})
    state.set(Anchor(2))
    state.record_rooms(STREAM, ["!a", "!b"])
    state.record_rooms(OTHER, ["!x"])
    changes = state.changes(5)
    # The values of the new version are complete, not only what changed.
    assert changes.values == {Anchor.KEY: Anchor(2), Pending.KEY: Pending(("!p",))}
    assert changes.rooms == {STREAM: frozenset({"!a", "!b"}), OTHER: frozenset({"!x"})}
    assert changes.cleared == frozenset()


def test_changes_with_a_clear() -> None:
    previous = ClearedRooms({OTHER: 1})
    state = SessionState(6, {ClearedRooms.KEY: previous})
    state.clear_rooms(STREAM)
    state.record_rooms(STREAM, ["!a"])
    changes = state.changes(9)
    # The cleared set starts after the version before the new one.
    assert changes.values[ClearedRooms.KEY] == ClearedRooms({OTHER: 1, STREAM: 8})
    assert changes.rooms == {STREAM: frozenset({"!a"})}
    assert changes.cleared == frozenset({STREAM})
    # The state itself is not changed by asking.
    assert state.get(ClearedRooms) == previous


def test_clearing_again_moves_the_start() -> None:
    state = SessionState(6, {ClearedRooms.KEY: ClearedRooms({STREAM: 2})})
    state.clear_rooms(STREAM)
    assert state.changes(7).values[ClearedRooms.KEY] == ClearedRooms({STREAM: 6})


# -- encoding ------------------------------------------------------------------------


def test_values_round_trip() -> None:
    values = {
        Anchor.KEY: Anchor(12),
        Pending.KEY: Pending(("!a", "!b")),
        ClearedRooms.KEY: ClearedRooms({STREAM: 3, OTHER: 0}),
    }
    text = encode_values(values)
    assert decode_values(text) == values
    # Canonical: the same values always give the same text.
    assert encode_values(dict(reversed(list(values.items())))) == text
    assert encode_values({}) == "{}"
    assert decode_values("{}") == {}


def test_decode_drops_unknown_keys() -> None:
    text = json.dumps(
        {
            Anchor.KEY: {"position": 3},
            "written_by_a_newer_release": {"x": 1},
            Pending.KEY: "not an object",
        }
    )
    assert decode_values(text) == {Anchor.KEY: Anchor(3)}


def test_decode_refuses_a_non_object() -> None:
    with pytest.raises(ValueError):
        decode_values("[1, 2]")


# -- lineage: versions that are not ancestors ----------------------------------------


def test_a_linear_history_records_no_lineage() -> None:
    state = SessionState(3)
    state.record_rooms(STREAM, ["!a"])
    assert Lineage.KEY not in state.changes(4).values


def test_a_branch_excludes_the_versions_in_between() -> None:
    # Version 5 is made from version 2: versions 3 and 4 belong to other branches.
    lineage = SessionState(2).changes(5).values[Lineage.KEY]
    assert lineage == Lineage(((3, 4),))
    assert lineage.included(0, 5) == [(0, 2), (4, 5)]
    # Its child 7 (made from 5) also excludes 6, merged with nothing (5 is between).
    child = Lineage(((3, 4),)).child(5, 7)
    assert child == Lineage(((3, 4), (6, 6)))
    assert child.included(0, 7) == [(0, 2), (4, 5), (6, 7)]
    assert child.included(4, 7) == [(4, 5), (6, 7)]
    assert child.included(6, 7) == [(6, 7)]


def test_adjacent_exclusions_merge_and_the_list_is_bounded() -> None:
    assert Lineage(((3, 4),)).child(4, 7).excluded == ((3, 6),)
    lineage = Lineage()
    parent = 0
    for version in range(2, 60, 3):  # each version skips the two before it
        lineage = lineage.child(parent, version)
        parent = version
    assert len(lineage.excluded) <= MAX_EXCLUDED_RANGES
    # Merging only ever excludes more: every version it left in is an ancestor.
    ancestors = set(range(2, 60, 3))
    for after, up_to in lineage.included(0, parent):
        assert set(range(after + 1, up_to + 1)) <= ancestors


def test_lineage_round_trips() -> None:
    lineage = Lineage(((3, 4), (9, 12)))
    assert decode_values(encode_values({Lineage.KEY: lineage})) == {Lineage.KEY: lineage}
