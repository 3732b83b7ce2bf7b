"""Member-list snapshots: sort order, pages and cursors (SPEC §7.3), without Synapse."""

from __future__ import annotations

import pytest

from synapse_syncv3.core.members import (
    Cursor,
    Member,
    SnapshotCache,
    page_of,
    sort_members,
    sort_name,
)


def member(
    user_id: str, name: str | None = None, power: int = 0, membership: str = "join"
) -> Member:
    return Member(user_id, f"$ev-{user_id}", membership, name, power)


def ids(members: list[Member]) -> list[str]:
    return [m.user_id for m in members]


def test_sort_name_rules() -> None:
    assert sort_name("@bob:hs", None) == "bob:hs"
    assert sort_name("@bob:hs", "") == "bob:hs"
    assert sort_name("@bob:hs", "ZAlice") == "zalice"
    assert sort_name("@x:hs", "ÉCOLE") == "école"  # Unicode lowercasing


def test_by_name_matches_the_2021_case() -> None:  # item 57, without Synapse
    alice = member("@alice:hs", "ZAlice")
    bob = member("@bob:hs")
    charlie = member("@charlie:hs", "YCharlie")
    assert ids(sort_members([alice, bob, charlie], "by_name")) == [
        "@bob:hs",
        "@charlie:hs",
        "@alice:hs",
    ]


def test_by_pl_then_name_then_user_id() -> None:
    creator = member("@zed:hs", power=2**53)
    mod = member("@mod:hs", "B", power=50)
    a = member("@a:hs", "same", power=0)
    b = member("@b:hs", "same", power=0)
    admin = member("@admin:hs", "Admin", power=100)
    assert ids(sort_members([a, b, mod, admin, creator], "by_pl")) == [
        "@zed:hs",
        "@admin:hs",
        "@mod:hs",
        "@a:hs",
        "@b:hs",
    ]


def test_only_join_invite_knock_are_listed() -> None:
    people = [
        member("@j:hs"),
        member("@i:hs", membership="invite"),
        member("@k:hs", membership="knock"),
        member("@l:hs", membership="leave"),
        member("@b:hs", membership="ban"),
    ]
    assert ids(sort_members(people, "by_name")) == ["@i:hs", "@j:hs", "@k:hs"]


def test_unknown_sort() -> None:
    with pytest.raises(ValueError):
        sort_members([], "by_age")


def test_pages_are_disjoint_and_cover_the_snapshot() -> None:  # item 53, without Synapse
    snapshot = sort_members([member(f"@u{i}:hs") for i in range(5)], "by_name")
    seen: list[str] = []
    offset: int | None = 0
    sizes = []
    while offset is not None:
        page = page_of(snapshot, offset, 2)
        sizes.append(len(page.members))
        seen += ids(list(page.members))
        offset = page.next_offset
    assert sizes == [2, 2, 1] and seen == ids(snapshot)


def test_empty_snapshot_has_one_empty_page() -> None:
    page = page_of([], 0, 10)
    assert list(page.members) == [] and page.next_offset is None


@pytest.mark.parametrize("offset", [-1, 5, 6])
def test_offset_outside_the_snapshot(offset: int) -> None:
    snapshot = [member(f"@u{i}:hs") for i in range(5)]
    with pytest.raises(IndexError):
        page_of(snapshot, offset, 2)


def test_cursor_round_trip_and_binding() -> None:
    cursor = Cursor.for_page("!room:hs", "by_name", 1042, 2)
    raw = cursor.encode()
    assert raw.startswith("m1.")
    decoded = Cursor.decode(raw)
    assert decoded == cursor
    assert decoded.matches("!room:hs", "by_name", 1042)
    assert not decoded.matches("!other:hs", "by_name", 1042)
    assert not decoded.matches("!room:hs", "by_pl", 1042)
    assert not decoded.matches("!room:hs", "by_name", 1043)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "garbage",
        "m1.",
        "m1.!!!!",
        "m1." + "A" * 200,
        "c2.YT0xMDQyO289Mg",
        # Well-formed base64 of bodies that are not cursors.
        "m1.YWJjZGVmZ2g6cDoxOjA",  # offset 0 is never issued
        "m1.YWJjZGVmZ2g6eDoxOjE",  # unknown sort code
        "m1.YWJjZGVmZ2g6cDowMToy",  # leading zero: not canonical
    ],
)
def test_cursor_garbage_is_refused(raw: str) -> None:
    assert Cursor.decode(raw) is None


def test_cursor_padding_variants_are_not_accepted() -> None:
    raw = Cursor.for_page("!room:hs", "by_pl", 7, 3).encode()
    assert Cursor.decode(raw + "=") is None


def test_snapshot_cache_is_bounded_by_members() -> None:
    cache = SnapshotCache(max_members=5)
    three = [member(f"@u{i}:hs") for i in range(3)]
    cache.put(("!a", 1, "by_pl"), list(three))
    cache.put(("!b", 1, "by_pl"), list(three))  # 6 > 5: the least recently used goes
    assert cache.get(("!a", 1, "by_pl")) is None
    assert cache.get(("!b", 1, "by_pl")) == three
    cache.put(("!huge", 1, "by_pl"), [member(f"@h{i}:hs") for i in range(6)])  # never held
    assert cache.get(("!huge", 1, "by_pl")) is None and len(cache) == 1


def test_equal_snapshots_of_a_room_are_held_once() -> None:
    """A room's member state rarely changes between two events: a first page after a
    message must not hold the same members again (the soak's ~1 MiB a minute)."""
    cache = SnapshotCache(max_members=10)
    members = [member(f"@u{i}:hs") for i in range(4)]
    first = cache.put(("!a", 1, "by_pl"), members)
    second = cache.put(("!a", 2, "by_pl"), list(members))  # equal, another list
    assert second is first and cache.get(("!a", 2, "by_pl")) is first
    assert cache.held == 4 and len(cache) == 2
    # Another sort or other members: held apart. Over the bound the least recently
    # used keys go; a shared snapshot is let go with its last key only.
    cache.put(("!a", 2, "by_name"), list(members))
    assert cache.held == 8
    changed = cache.put(("!a", 3, "by_pl"), [*members[:3], member("@new:hs")])
    assert changed is not first
    assert cache.get(("!a", 1, "by_pl")) is None  # evicted: 12 > 10, still 12 held ...
    assert cache.get(("!a", 2, "by_pl")) is None  # ... and its sharer: 8
    assert cache.held == 8 and len(cache) == 2
    for n in range(20):  # churn: the count of distinct members stays exact
        cache.put((f"!c{n % 4}", n, "by_pl"), [member(f"@c{n % 3}:hs")] * (n % 5 + 1))
        distinct = {id(found): found for found in cache._entries.values()}
        assert cache.held == sum(len(found) for found in distinct.values()) <= 10
