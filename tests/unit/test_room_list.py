"""The pure room-list core (SPEC §7.4): sort order, names, positions, cursors, pages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_syncv3.core.room_list import (
    Cursor,
    NameParts,
    PendingRooms,
    SortedRooms,
    SortedRoomsCache,
    SortKeys,
    cut,
    invite_name,
    join_position,
    merge_keys,
    page_of,
    resort,
    room_name,
    sort_rooms,
    split_position,
)
from synapse_syncv3.core.state import Snapshot


def test_recency_newest_first_then_room_id() -> None:
    keys = SortKeys(recency={"!a": 5, "!b": 9, "!c": 5})
    assert sort_rooms(["!c", "!a", "!b"], ["by_recency"], keys) == ["!b", "!a", "!c"]


def test_three_key_sort_with_ties() -> None:
    keys = SortKeys(
        recency={"!a": 1, "!b": 2, "!c": 3, "!d": 4},
        names={"!a": "Same", "!b": "same", "!c": "Other", "!d": None},
        notifications={"!a": 2, "!b": 2, "!c": 2},
    )
    sort = ["by_notification_count", "by_name", "by_recency"]
    # Equal counts -> names ("other" < "same"), equal lowercased names -> recency;
    # !d has no unread and no name.
    assert sort_rooms(["!a", "!b", "!c", "!d"], sort, keys) == ["!c", "!b", "!a", "!d"]


def test_by_name_null_last_and_case_insensitive() -> None:
    keys = SortKeys(names={"!a": None, "!b": "beta", "!c": "Alpha", "!d": ""})
    assert sort_rooms(["!a", "!b", "!c", "!d"], ["by_name"], keys) == ["!d", "!c", "!b", "!a"]


def test_highlights_then_room_id() -> None:
    keys = SortKeys(highlights={"!b": 1})
    assert sort_rooms(["!c", "!a", "!b"], ["by_highlight_count"], keys) == ["!b", "!a", "!c"]


def test_unknown_sort_is_a_bug() -> None:
    with pytest.raises(ValueError):
        sort_rooms(["!a"], ["by_size"], SortKeys())


@given(st.lists(st.text(min_size=1, max_size=5), unique=True), st.randoms())
def test_sort_is_a_total_order(rooms: list[str], rnd: object) -> None:
    keys = SortKeys(recency={r: len(r) for r in rooms}, names={r: r[:1] for r in rooms})
    shuffled = list(rooms)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    sort = ["by_name", "by_recency"]
    assert sort_rooms(shuffled, sort, keys) == sort_rooms(rooms, sort, keys)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (NameParts(name="Design"), "Design"),
        (NameParts(name="", alias="#a:b"), "#a:b"),
        (NameParts(name=5, alias="not-an-alias", heroes=("Bob",), others=1), "Bob"),
        (NameParts(heroes=("Bob", "Carol"), others=2), "Bob and Carol"),
        (NameParts(heroes=("Bob", "Carol", "Dan"), others=7), "Bob and 6 others"),
        (NameParts(), "Empty Room"),
        (NameParts(heroes=(), others=3), "Empty Room"),
    ],
)
def test_room_name(parts: NameParts, expected: str) -> None:
    assert room_name(parts) == expected


def test_invite_name() -> None:
    member = {"type": "m.room.member", "state_key": "@me:x", "content": {}}
    named = {"type": "m.room.name", "state_key": "", "content": {"name": "Party"}}
    assert invite_name([named, member]) == "Party"
    assert invite_name([member]) is None
    assert invite_name([{**named, "content": {"name": ""}}]) is None
    assert invite_name([{**named, "content": "x"}, "junk"]) is None


def test_positions() -> None:
    assert split_position(join_position(12, "m3~1.4")) == (12, "m3~1.4")
    for bad in ("12", "12_", "a_1", "012_1", "1_2_3", "1_ m2"):
        assert split_position(bad) is None


def test_cursor_round_trip_and_garbage() -> None:
    cursor = Cursor("abcdEF-_", 40)
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in (
        "",
        "l1.abc.1",
        "l1.abcdEFGH.0",
        "l1.abcdEFGH.01",
        "m1.abcdEFGH.1",
        "l1.abcdEFG!.1",
    ):
        assert Cursor.decode(bad) is None


def test_pages_cover_the_snapshot() -> None:
    rooms = tuple(f"!{n}" for n in range(7))
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = page_of(rooms, offset, 2)
        seen.extend(page.rooms)
        offset = page.next_offset
    assert tuple(seen) == rooms
    assert page_of((), 0, 5).rooms == () and page_of((), 0, 5).next_offset is None
    with pytest.raises(IndexError):
        page_of(rooms, 7, 2)


def test_snapshot_rooms_encoding() -> None:
    snapshot = Snapshot("id", "1_1", ("!a:x", "!b:x", "!c:x"), {"!b:x": "$e"})
    order, invites = Snapshot.decode_rooms(snapshot.encode_rooms())
    assert order == snapshot.order and invites == {"!b:x": "$e"}
    assert [snapshot.membership(r) for r in order] == ["join", "invite", "join"]
    assert Snapshot.decode_rooms(Snapshot("id", "1_1", ()).encode_rooms()) == ((), {})
    # The first stored form (rows written before the current one) still reads.
    assert Snapshot.decode_rooms("j!a:x\ni!b:x\t$e\nj!c:x") == (order, invites)


def test_cut_and_pending() -> None:
    reported, rest = cut(["!a", "!b", "!c"], 2)
    assert reported == ["!a", "!b"] and rest == ("!c",)
    assert PendingRooms.from_json(PendingRooms(rest).to_json()) == PendingRooms(("!c",))
    assert PendingRooms.from_json({"rooms": ["!x", 3]}) == PendingRooms(("!x",))


@given(
    st.dictionaries(st.sampled_from([f"!{n}" for n in range(30)]), st.integers(0, 9), min_size=1),
    st.dictionaries(st.sampled_from([f"!{n}" for n in range(30)]), st.integers(0, 9)),
    st.sampled_from([["by_recency"], ["by_notification_count", "by_recency"], ["by_name"]]),
)
def test_resort_equals_a_fresh_sort(
    before: dict[str, int], updates: dict[str, int], sort: list[str]
) -> None:
    """Putting the changed rooms back in place gives the order a fresh sort gives."""
    rooms = list(before)
    updates = {r: v for r, v in updates.items() if r in before}

    def keys_of(values: dict[str, int]) -> SortKeys:
        return SortKeys(
            recency=values,
            names={r: f"n{v}" for r, v in values.items()},
            notifications={r: v % 3 for r, v in values.items()},
        )

    old = keys_of(before)
    order = sort_rooms(rooms, sort, old)
    new = keys_of({**before, **updates})
    merged = merge_keys(old, new, updates)
    assert merged == new
    assert resort(order, updates, sort, merged) == sort_rooms(rooms, sort, new)


def test_sorted_rooms_cache_is_bounded_by_rooms_held() -> None:
    cache = SortedRoomsCache(max_rooms=5)

    def entry(n: int) -> SortedRooms:
        return SortedRooms(None, 1, None, tuple(f"!{i}" for i in range(n)), SortKeys())

    cache.put("@a", ["by_recency"], entry(3))
    cache.put("@b", ["by_recency"], entry(3))
    assert cache.get("@a", ["by_recency"]) is None  # dropped: 6 rooms > 5
    assert cache.get("@b", ["by_recency"]) is not None
    cache.put("@b", ["by_recency"], entry(9))  # a single entry may exceed the bound
    assert cache.get("@b", ["by_recency"]) is not None
