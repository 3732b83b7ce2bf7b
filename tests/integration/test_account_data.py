"""The account_data stream (SPEC §7.7; §14 item 82)."""

from __future__ import annotations

from typing import Any

from harness import MatrixUser
from harness.client import quote
from tests.integration.helpers import V3, Server, after, position_of, timed, with_position


def by_type(events: list[dict[str, Any]]) -> dict[str, Any]:
    types = [event["type"] for event in events]
    assert len(types) == len(set(types)), types
    return {event["type"]: event["content"] for event in events}


def tag_path(user: MatrixUser, room_id: str, tag: str) -> str:
    return f"/user/{quote(user.user_id)}/rooms/{quote(room_id)}/tags/{quote(tag)}"


def test_first_delivery_then_only_changed_types(server: Server) -> None:  # item 82
    alice = server.user()
    alice.set_account_data("org.example.first", {"n": 1})
    v3 = V3(alice)
    first = v3.ok({"account_data": {}})
    assert set(first["account_data"]) == {"global", "rooms"}
    global_data = by_type(first["account_data"]["global"])
    assert global_data["org.example.first"] == {"n": 1}
    assert "override" in global_data["m.push_rules"]["global"]
    assert first["account_data"]["rooms"] == {}

    alice.set_account_data("org.example.second", {"n": 2})
    body = v3.ok({}, since=first["next"])
    assert body["account_data"] == {
        "global": [{"type": "org.example.second", "content": {"n": 2}}],
        "rooms": {},
    }
    # Nothing changed since: no object, or the empty echo of a present key.
    assert "account_data" not in v3.ok({}, since=body["next"])
    assert v3.ok({"account_data": {}}, since=body["next"])["account_data"] == {
        "global": [],
        "rooms": {},
    }


def test_room_account_data_and_tags(server: Server) -> None:
    alice = server.user()
    room, left = alice.create_room(), alice.create_room()
    alice.set_account_data("org.example.room", {"x": 1}, room_id=room)
    alice.set_account_data("org.example.room", {"x": 2}, room_id=left)
    alice._call("PUT", tag_path(alice, room, "m.favourite"), {"order": 0.5})
    alice.leave(left)
    v3 = V3(alice)
    first = v3.ok({"account_data": {}})
    rooms = first["account_data"]["rooms"]
    assert by_type(rooms[room]) == {
        "org.example.room": {"x": 1},
        "m.tag": {"tags": {"m.favourite": {"order": 0.5}}},
    }
    # Whatever the membership.
    assert by_type(rooms[left]) == {"org.example.room": {"x": 2}}

    alice._call("PUT", tag_path(alice, room, "u.work"), {})
    body = v3.ok({}, since=first["next"])
    assert body["account_data"] == {
        "global": [],
        "rooms": {
            room: [
                {
                    "type": "m.tag",
                    "content": {"tags": {"m.favourite": {"order": 0.5}, "u.work": {}}},
                }
            ]
        },
    }

    # Removing every tag is delivered as v2 sync delivers it.
    alice._call("DELETE", tag_path(alice, room, "m.favourite"))
    alice._call("DELETE", tag_path(alice, room, "u.work"))
    removed = v3.ok({}, since=body["next"])
    assert removed["account_data"]["rooms"] == {room: [{"type": "m.tag", "content": {"tags": {}}}]}


def test_push_rules_changes(server: Server) -> None:
    alice = server.user()
    v3 = V3(alice)
    since = v3.ok({"account_data": {}})["next"]
    rule = {"pattern": "cake", "actions": ["notify"]}
    alice._call("PUT", "/pushrules/global/content/cake", rule)
    body = v3.ok({}, since=since)
    global_data = by_type(body["account_data"]["global"])
    assert list(global_data) == ["m.push_rules"]
    assert "cake" in [r["rule_id"] for r in global_data["m.push_rules"]["global"]["content"]]


def test_other_users_account_data_is_private(server: Server) -> None:
    alice, bob = server.user(), server.user()
    bob.set_account_data("org.example.secret", {"bob": True})
    v3 = V3(alice)
    first = v3.ok({"account_data": {}})
    assert "org.example.secret" not in by_type(first["account_data"]["global"])
    with after(0.3, lambda: bob.set_account_data("org.example.secret", {"bob": 2})):
        body, elapsed = timed(lambda: v3.ok({}, since=first["next"], timeout=1500))
    assert body == {"next": first["next"]}
    assert elapsed >= 1.4


def test_own_change_wakes_a_long_poll(server: Server) -> None:
    alice, bob = server.user(), server.user()
    v3 = V3(alice)
    since = v3.ok({"account_data": {}})["next"]
    ignore: dict[str, Any] = {"ignored_users": {bob.user_id: {}}}
    with after(0.3, lambda: alice.set_account_data("m.ignored_user_list", ignore)):
        body, elapsed = timed(lambda: v3.ok({}, since=since, timeout=20000))
    assert body["account_data"]["global"] == [{"type": "m.ignored_user_list", "content": ignore}]
    assert elapsed < 10

    room = alice.create_room()
    with after(0.3, lambda: alice.set_account_data("org.example.r", {}, room_id=room)):
        body = v3.ok({}, since=body["next"], timeout=5000)
    assert body["account_data"]["rooms"] == {room: [{"type": "org.example.r", "content": {}}]}


def test_positions_garbage_and_ahead(server: Server) -> None:
    alice = server.user()
    v3 = V3(alice)
    since = v3.ok({"account_data": {}})["next"]
    assert position_of(since, "account_data").count(",") == 1
    for garbage in ("x", "1", "1,", ",1", "01,1", "1,2,3", "m1~2.3"):
        response = v3.error({}, since=with_position(since, "account_data", garbage))
        assert response.errcode == "M_INVALID_PARAM", garbage

    ahead = with_position(since, "account_data", "99999999,99999999")
    body, elapsed = timed(lambda: v3.ok({}, since=ahead, timeout=300))
    assert body == {"next": ahead}
    assert elapsed < 5
    alice.set_account_data("org.example.after", {"n": 1})
    assert v3.ok({}, since=since)["account_data"]["global"] == [
        {"type": "org.example.after", "content": {"n": 1}}
    ]
