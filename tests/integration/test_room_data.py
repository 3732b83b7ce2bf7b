"""The room_data stream by SPEC §7.5 alone (the comparisons with Synapse's v2 sync are
in test_room_data_v2.py and test_room_data_random.py)."""

from __future__ import annotations

from tests.integration.helpers import V3, Server, after


def bodies(entry: dict) -> list[object]:
    return [event["content"].get("body") for event in entry["timeline"]["events"]]


def test_first_delivery_then_increments(server: Server) -> None:  # items 68, 70
    (alice, bob), room = server.room_with(2)
    alice.send_message(room, "one")
    v3 = V3(alice)
    first = v3.ok({"room_data": {"room_ids": [room]}})
    entry = first["room_data"]["rooms"][room]
    assert entry["membership"] == "join"
    assert entry["timeline"]["limited"] is False
    assert entry["timeline"]["events"][0]["type"] == "m.room.create"
    assert entry["state"]["events"] == []
    for n in range(3):
        bob.send_message(room, f"m{n}")
    second = v3.ok({}, since=first["next"])
    entry = second["room_data"]["rooms"][room]
    assert bodies(entry) == ["m0", "m1", "m2"]
    assert entry["timeline"]["limited"] is False
    assert entry["state"]["events"] == []
    assert v3.ok({}, since=second["next"], timeout=500) == {"next": second["next"]}


def test_limited_first_delivery_has_state_before_the_timeline(server: Server) -> None:  # 69
    (alice, _), room = server.room_with(2)
    alice.send_message(room, "one")
    v3 = V3(alice)
    first = v3.ok({"room_data": {"room_ids": [room], "timeline_limit": 2}})
    entry = first["room_data"]["rooms"][room]
    assert entry["timeline"]["limited"] is True
    assert "m.room.create" in {event["type"] for event in entry["state"]["events"]}


def test_gap_invite_forbidden_leave(server: Server) -> None:  # items 71, 74
    (bob, alice), room = server.room_with(2)
    v3 = V3(alice)
    other, invited = bob.create_room(), bob.create_room()
    first = v3.ok({"room_data": {"room_ids": [room, other, invited], "timeline_limit": 5}})
    rooms = first["room_data"]["rooms"]
    # No membership: the error entry, on the first delivery only.
    assert rooms[other] == {"errcode": "M_FORBIDDEN", "error": rooms[other]["error"]}
    assert set(rooms) == {room, other, invited}

    bob.send_state(room, "m.room.topic", "", {"topic": "new"})
    for n in range(25):
        bob.send_message(room, f"m{n}")
    bob.invite(invited, alice.user_id)
    second = v3.ok({}, since=first["next"])
    rooms = second["room_data"]["rooms"]
    assert set(rooms) == {room, invited}
    assert rooms[room]["timeline"]["limited"] is True
    assert [event["type"] for event in rooms[room]["state"]["events"]] == ["m.room.topic"]
    assert rooms[invited]["membership"] == "invite"
    invite = rooms[invited]["invite_state"]["events"][-1]
    assert invite == {
        "type": "m.room.member",
        "state_key": alice.user_id,
        "sender": bob.user_id,
        "content": invite["content"],
    }
    third = v3.ok({}, since=second["next"])
    assert "room_data" not in third

    bob.send_message(room, "before")
    alice.leave(room)
    bob.send_message(room, "after")
    fourth = v3.ok({}, since=third["next"])
    entry = fourth["room_data"]["rooms"][room]
    assert entry["membership"] == "leave"
    assert entry["timeline"]["events"][-1]["type"] == "m.room.member"
    assert "after" not in bodies(entry)
    bob.send_message(room, "later")
    assert "room_data" not in v3.ok({}, since=fourth["next"], timeout=500)


def test_first_delivery_is_owed_until_received(server: Server) -> None:  # item 80
    (alice, _), room = server.room_with(2)
    v3 = V3(alice)
    first = v3.ok({"typing": {"room_ids": []}})
    body = {"room_data": {"room_ids": [room], "timeline_limit": 1}}
    second = v3.ok(body, since=first["next"])
    assert second["room_data"]["rooms"][room]["state"]["events"]
    # The same request again (same since): the full first delivery again.
    again = v3.ok(body, since=first["next"])
    ids = [event["event_id"] for event in second["room_data"]["rooms"][room]["state"]["events"]]
    assert [
        event["event_id"] for event in again["room_data"]["rooms"][room]["state"]["events"]
    ] == ids
    # Presenting the newer since: received; nothing new to say.
    assert "room_data" not in v3.ok({}, since=second["next"], timeout=300)


def test_a_message_in_a_served_room_ends_the_wait(server: Server) -> None:
    (alice, bob), room = server.room_with(2)
    elsewhere = bob.create_room()
    bob.invite(elsewhere, alice.user_id)
    alice.join(elsewhere)
    v3 = V3(alice)
    since = v3.ok({"room_data": {"room_ids": [room]}})["next"]
    # Activity in a room that is not served does not answer the request.
    with after(0.3, lambda: bob.send_message(elsewhere, "not here")):
        assert v3.ok({}, since=since, timeout=1500) == {"next": since}
    with after(0.3, lambda: bob.send_message(room, "here")):
        body = v3.ok({}, since=since, timeout=5000)
    assert bodies(body["room_data"]["rooms"][room]) == ["here"]
