"""The room_members stream (SPEC §7.3; §14 items 52–60)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from harness import MatrixUser
from tests.integration.helpers import V3, Server, after, shared_room, timed, until, with_position


def members(obj: dict[str, Any]) -> list[str]:
    return [event["state_key"] for event in obj["events"]]


def memberships(obj: dict[str, Any]) -> list[tuple[str, str]]:
    return [(event["state_key"], event["content"]["membership"]) for event in obj["events"]]


def by_name_order(*users: MatrixUser, names: dict[str, str] | None = None) -> list[str]:
    names = names or {}
    return [
        u.user_id
        for u in sorted(
            users, key=lambda u: (names.get(u.user_id, u.user_id[1:]).lower(), u.user_id)
        )
    ]


def rename(user: MatrixUser, name: str, *rooms: str) -> None:
    """Change the display name and wait until Synapse (which updates the member
    events in a background task) has sent the new member event into ``rooms``."""
    user.set_displayname(name)
    for room in rooms:
        path = f"/rooms/{quote(room)}/state/m.room.member/{quote(user.user_id)}"
        until(
            lambda path=path: user._call("GET", path).get("displayname") == name,
            f"{user.user_id} not renamed in {room}",
        )


def kick(admin: MatrixUser, room_id: str, user: MatrixUser, action: str = "kick") -> None:
    admin._call("POST", f"/rooms/{quote(room_id)}/{action}", {"user_id": user.user_id})


def test_default_request_creator_first(server: Server) -> None:  # item 52
    (alice, bob), room = server.room_with(2)
    body = V3(bob).ok({"room_members": {"room_id": room}})
    obj = body["room_members"]
    assert members(obj) == [alice.user_id, bob.user_id]
    assert obj["limit"] == 50 and obj["sort"] == "by_pl" and obj["count"] == 2
    assert "p" not in obj
    first = obj["events"][0]
    assert first["type"] == "m.room.member" and first["content"]["membership"] == "join"
    assert "room_id" not in first and first["event_id"].startswith("$")


def test_by_pl_uses_power_levels_at_the_anchor(server: Server) -> None:
    (alice, bob, carol), room = server.room_with(3)
    path = f"/rooms/{quote(room)}/state/m.room.power_levels/"
    levels = alice._call("GET", path)
    levels["users"][carol.user_id] = 50  # the creator keeps 100 (or unlimited power)
    alice._call("PUT", path, levels)
    obj = V3(bob).ok({"room_members": {"room_id": room}})["room_members"]
    assert members(obj) == [alice.user_id, carol.user_id, bob.user_id]


def test_by_name_pages_of_two(server: Server) -> None:  # item 53
    users, room = server.room_with(5)
    v3 = V3(users[1])
    expected = by_name_order(*users)
    params = {"room_id": room, "limit": 2, "sort": "by_name"}
    first = v3.ok({"room_members": params})
    page1 = first["room_members"]
    assert members(page1) == expected[:2] and page1["count"] == 5
    cursor = page1["p"]["next"]
    second = v3.ok(
        {"room_members": {"room_id": room, "limit": 2, "sort": "by_name", "p": {"since": cursor}}},
        since=first["next"],
    )
    page2 = second["room_members"]
    assert members(page2) == expected[2:4] and page2["count"] == 5
    # Continuation pages leave the position alone: either token continues paging.
    assert second["next"] == first["next"]
    third = v3.ok(
        {"room_members": {**params, "p": {"next": page2["p"]["next"]}}},
        since=second["next"],
    )
    page3 = third["room_members"]
    assert members(page3) == expected[4:] and page3["count"] == 5
    assert "p" not in page3


def test_room_member_alias_is_answered_under_the_key_sent(server: Server) -> None:
    (alice, bob), room = server.room_with(2)
    body = V3(alice).ok({"room_member": {"room_id": room, "limit": 5000}})
    assert "room_members" not in body
    assert body["room_member"]["limit"] == 1000  # clamped to max_limits.room_members
    assert members(body["room_member"]) == [alice.user_id, bob.user_id]


def test_snapshot_is_pinned_and_late_joiner_streams(server: Server) -> None:  # item 54
    users, room = server.room_with(4)
    alice = users[0]
    v3 = V3(alice)
    first = v3.ok({"room_members": {"room_id": room, "limit": 2, "sort": "by_name"}})
    late = server.user()
    alice.invite(room, late.user_id)
    late.join(room)
    seen = members(first["room_members"])
    cursor = first["room_members"]["p"]["next"]
    since = first["next"]
    while cursor is not None:
        body = {"room_id": room, "limit": 2, "sort": "by_name", "p": {"since": cursor}}
        page = v3.ok({"room_members": body}, since=since)
        assert page["next"] == since
        seen += members(page["room_members"])
        assert page["room_members"]["count"] == 4
        cursor = page["room_members"].get("p", {}).get("next")
    assert sorted(seen) == sorted(u.user_id for u in users)
    assert late.user_id not in seen
    # Moving on from the anchor: the invite and the join arrive as deltas.
    delta = v3.ok({}, since=since)
    assert memberships(delta["room_members"]) == [
        (late.user_id, "invite"),
        (late.user_id, "join"),
    ]
    assert "count" not in delta["room_members"] and "p" not in delta["room_members"]
    # A new snapshot with p: {} includes them, anchored at now.
    fresh = v3.ok({"room_members": {"room_id": room, "limit": 10, "p": {}}}, since=delta["next"])
    assert late.user_id in members(fresh["room_members"])
    assert fresh["room_members"]["count"] == 5


def test_streaming_profile_change_and_leave_in_order(server: Server) -> None:  # item 55
    (alice, bob, carol), room = server.room_with(3)
    v3 = V3(alice)
    first = v3.ok({"room_members": {"room_id": room}})
    with after(0.3, lambda: bob.set_displayname("Bobby")):
        changed = v3.ok({}, since=first["next"], timeout=5000)
    assert memberships(changed["room_members"]) == [(bob.user_id, "join")]
    event = changed["room_members"]["events"][0]
    assert event["content"]["displayname"] == "Bobby"
    assert event["unsigned"]["prev_content"]["membership"] == "join"
    carol.leave(room)
    rename(bob, "Robert", room)
    later = v3.ok({}, since=changed["next"])
    assert memberships(later["room_members"]) == [(carol.user_id, "leave"), (bob.user_id, "join")]


def test_streaming_limit_continues_after_last_event(server: Server) -> None:  # item 56
    (alice,), room = server.room_with(1)
    v3 = V3(alice)
    first = v3.ok({"room_members": {"room_id": room, "limit": 2}})
    joiners = [server.user() for _ in range(3)]
    for user in joiners:
        alice.invite(room, user.user_id)
    body = v3.ok({}, since=first["next"])
    assert memberships(body["room_members"]) == [
        (joiners[0].user_id, "invite"),
        (joiners[1].user_id, "invite"),
    ]
    rest, elapsed = timed(lambda: v3.ok({}, since=body["next"], timeout=30000))
    assert memberships(rest["room_members"]) == [(joiners[2].user_id, "invite")]
    assert elapsed < 10  # the remainder of a cut batch is data: no wait


def test_display_names_order_by_name(server: Server) -> None:  # item 57
    alice, bob, charlie = server.user(), server.user(), server.user()
    alice.set_displayname("ZAlice")  # before joining: no member event to wait for
    charlie.set_displayname("YCharlie")
    room = shared_room(alice, bob, charlie)
    obj = V3(bob).ok({"room_members": {"room_id": room, "sort": "by_name"}})["room_members"]
    assert members(obj) == [bob.user_id, charlie.user_id, alice.user_id]
    # A display name change changes the order of a new snapshot.
    rename(charlie, "AAA Charlie", room)
    obj = V3(bob).ok({"room_members": {"room_id": room, "sort": "by_name"}})["room_members"]
    assert members(obj) == [charlie.user_id, bob.user_id, alice.user_id]


def test_room_never_joined_is_forbidden_and_leaks_nothing(server: Server) -> None:  # item 58
    (alice, _bob), room = server.room_with(2)
    alice.send_state(room, "m.room.history_visibility", "", {"history_visibility": "shared"})
    eve = server.user()
    v3 = V3(eve)
    body = v3.ok({"room_members": {"room_id": room}, "to_device": {}})
    assert set(body["room_members"]) == {"errcode", "error"}
    assert body["room_members"]["errcode"] == "M_FORBIDDEN"
    assert body["to_device"] == {"limit": 100, "events": []}
    # A room that does not exist looks the same.
    other = v3.ok({"room_members": {"room_id": "!nope:localhost"}})
    assert other["room_members"]["errcode"] == "M_FORBIDDEN"
    # Not data: the error does not end a wait, and is omitted when not echoed.
    quiet, elapsed = timed(lambda: v3.ok({}, since=body["next"], timeout=1000))
    assert quiet == {"next": body["next"]} and elapsed >= 0.9
    echo = v3.ok({"room_members": {"room_id": room}}, since=body["next"])
    assert echo["room_members"]["errcode"] == "M_FORBIDDEN"
    # Once eve joins, streaming mode reports what she may see from then on.
    alice.invite(room, eve.user_id)
    eve.join(room)
    joined = v3.ok({}, since=body["next"])
    assert (eve.user_id, "join") in memberships(joined["room_members"])


def test_invited_user_is_forbidden(server: Server) -> None:
    (alice,), room = server.room_with(1)
    bob = server.user()
    alice.invite(room, bob.user_id)
    body = V3(bob).ok({"room_members": {"room_id": room}})
    assert body["room_members"]["errcode"] == "M_FORBIDDEN"


def test_world_readable_room_never_joined(server: Server) -> None:  # item 59
    (alice, bob), room = server.room_with(2)
    alice.send_state(
        room, "m.room.history_visibility", "", {"history_visibility": "world_readable"}
    )
    obj = V3(server.user()).ok({"room_members": {"room_id": room}})["room_members"]
    assert members(obj) == [alice.user_id, bob.user_id]


@pytest.mark.parametrize("action", ["leave", "kick", "ban"])
def test_left_room_shows_state_as_of_leave(server: Server, action: str) -> None:
    (alice, bob, carol), room = server.room_with(3)
    v3 = V3(bob)
    first = v3.ok({"room_members": {"room_id": room}})
    if action == "leave":
        bob.leave(room)
    else:
        kick(alice, room, bob, action)
    dave = server.user()
    alice.invite(room, dave.user_id)
    # Streaming stops at the leave, which is included.
    delta = v3.ok({}, since=first["next"])
    expected = "ban" if action == "ban" else "leave"
    assert memberships(delta["room_members"]) == [(bob.user_id, expected)]
    assert v3.ok({}, since=delta["next"], timeout=0) == {"next": delta["next"]}
    # A new snapshot is the state as of the leave: no dave, and not bob himself.
    snap = V3(bob).ok({"room_members": {"room_id": room}})["room_members"]
    assert members(snap) == [alice.user_id, carol.user_id]


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "", "m1.", "m1.AAAA", "m1." + "A" * 99, "c2.YT0xMDQyO289Mg"],
)
def test_garbage_cursor(server: Server, cursor: str) -> None:  # item 60
    (alice, _bob), room = server.room_with(2)
    v3 = V3(alice)
    first = v3.ok({"room_members": {"room_id": room}})
    err = v3.error({"room_members": {"room_id": room, "p": {"since": cursor}}}, since=first["next"])
    assert err.status == 400 and err.errcode == "M_INVALID_PARAM"


def test_cursor_of_another_room_sort_or_position(server: Server) -> None:  # item 60
    users, room = server.room_with(3)
    alice = users[0]
    other = shared_room(alice, users[1], users[2])
    v3 = V3(alice)
    first = v3.ok({"room_members": {"room_id": room, "limit": 1}})
    cursor = first["room_members"]["p"]["next"]

    def refused(body: dict[str, Any], since: str) -> None:
        err = v3.error(body, since=since)
        assert err.status == 400 and err.errcode == "M_INVALID_PARAM", err

    refused({"room_members": {"room_id": other, "p": {"since": cursor}}}, first["next"])
    refused(
        {"room_members": {"room_id": room, "sort": "by_name", "p": {"since": cursor}}},
        first["next"],
    )
    # After the position moved on, the old anchor's cursor is refused.
    rename(users[1], "moved", room)
    moved = v3.ok({}, since=first["next"])
    assert moved["next"] != first["next"]
    refused({"room_members": {"room_id": room, "p": {"since": cursor}}}, moved["next"])
    # A cursor without a position (new session) is refused too.
    err = V3(alice).error({"room_members": {"room_id": room, "p": {"since": cursor}}})
    assert err.status == 400 and err.errcode == "M_INVALID_PARAM"
    # The right one still works.
    body = {"room_id": room, "limit": 1, "p": {"since": cursor}}
    ok = v3.ok({"room_members": body}, since=first["next"])
    assert len(ok["room_members"]["events"]) == 1


def test_cursor_past_the_end(server: Server) -> None:
    from synapse_syncv3.core.members import Cursor

    (alice, _bob), room = server.room_with(2)
    v3 = V3(alice)
    first = v3.ok({"room_members": {"room_id": room, "limit": 1}})
    anchor = _anchor(first["room_members"]["p"]["next"])
    past = Cursor.for_page(room, "by_pl", anchor, 2).encode()
    err = v3.error({"room_members": {"room_id": room, "p": {"since": past}}}, since=first["next"])
    assert err.status == 400 and err.errcode == "M_INVALID_PARAM"


def _anchor(cursor: str) -> int:
    from synapse_syncv3.core.members import Cursor

    decoded = Cursor.decode(cursor)
    assert decoded is not None
    return decoded.anchor


def test_unknown_sort_and_missing_room(server: Server) -> None:
    (alice,), room = server.room_with(1)
    v3 = V3(alice)
    err = v3.error({"room_members": {"room_id": room, "sort": "by_age"}})
    assert err.status == 400 and err.errcode == "M_INVALID_PARAM"
    err = v3.error({"room_members": {"limit": 3}})
    assert err.status == 400 and err.errcode == "M_BAD_JSON"


def test_page_requests_never_wait(server: Server) -> None:
    (alice, bob), room = server.room_with(2)
    v3 = V3(alice)
    first = v3.ok({"room_members": {"room_id": room}})
    body, elapsed = timed(
        lambda: v3.ok(
            {"room_members": {"room_id": room, "p": {}}}, since=first["next"], timeout=30000
        )
    )
    assert elapsed < 10 and members(body["room_members"]) == [alice.user_id, bob.user_id]


def test_unrelated_room_does_not_wake(server: Server) -> None:
    (alice, bob), room = server.room_with(2)
    elsewhere = shared_room(alice, bob)
    v3 = V3(alice)
    first = v3.ok({"room_members": {"room_id": room}})
    with after(0.2, lambda: bob.set_displayname("only elsewhere")):
        # The displayname change touches both rooms: the tracked one wakes.
        woke = v3.ok({}, since=first["next"], timeout=5000)
    assert memberships(woke["room_members"]) == [(bob.user_id, "join")]
    with after(0.2, lambda: alice.send_state(elsewhere, "m.room.topic", "", {"topic": "t"})):
        quiet, elapsed = timed(lambda: v3.ok({}, since=woke["next"], timeout=1500))
    assert quiet == {"next": woke["next"]} and elapsed >= 1.4


def test_positions_ahead_are_clamped_and_garbage_refused(server: Server) -> None:
    (alice, bob), room = server.room_with(2)
    v3 = V3(alice)
    first = v3.ok({"room_members": {"room_id": room}})
    ahead = v3.ok({}, since=with_position(first["next"], "room_members", "999999999"))
    assert "room_members" not in ahead
    rename(bob, "after the clamp", room)
    later = v3.ok({}, since=ahead["next"])
    assert memberships(later["room_members"]) == [(bob.user_id, "join")]
    for garbage in ("s12", "-1", "01", "1.5"):
        err = v3.error({}, since=with_position(first["next"], "room_members", garbage))
        assert err.status == 400 and err.errcode == "M_INVALID_PARAM", garbage
