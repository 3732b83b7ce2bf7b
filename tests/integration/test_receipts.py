"""The receipts stream (SPEC §7.6; §14 item 81)."""

from __future__ import annotations

from typing import Any

from tests.integration.helpers import V3, Server, after, position_of, timed, with_position


def readers(content: dict[str, Any], event_id: str, receipt_type: str) -> list[str]:
    return sorted(content.get(event_id, {}).get(receipt_type, {}))


def test_read_receipt_and_private_receipts(server: Server) -> None:  # item 81
    (alice, bob), room = server.room_with(2)
    first_event = alice.send_message(room, "one")
    second_event = alice.send_message(room, "two")
    v3_alice, v3_bob = V3(alice), V3(bob)
    first = v3_alice.ok({"receipts": {}})
    assert first["receipts"] == {"rooms": {}}
    bob_since = v3_bob.ok({"receipts": {}})["next"]

    bob.send_receipt(room, first_event, "m.read")
    body = v3_alice.ok({}, since=first["next"])
    content = body["receipts"]["rooms"][room]
    assert readers(content, first_event, "m.read") == [bob.user_id]
    assert isinstance(content[first_event]["m.read"][bob.user_id]["ts"], int)

    # Bob's private receipt is never delivered to alice, and does not end her wait.
    with after(0.3, lambda: bob.send_receipt(room, second_event, "m.read.private")):
        quiet, elapsed = timed(lambda: v3_alice.ok({}, since=body["next"], timeout=1500))
    assert quiet == {"next": body["next"]}
    assert elapsed >= 1.4
    again = v3_alice.ok({"receipts": {}})
    assert "m.read.private" not in str(again["receipts"])
    assert readers(again["receipts"]["rooms"][room], first_event, "m.read") == [bob.user_id]

    # Bob sees his own, incrementally and on first delivery.
    own = v3_bob.ok({}, since=bob_since)["receipts"]["rooms"][room]
    assert readers(own, second_event, "m.read.private") == [bob.user_id]
    own_first = v3_bob.ok({"receipts": {}})["receipts"]["rooms"][room]
    assert readers(own_first, second_event, "m.read.private") == [bob.user_id]
    assert readers(own_first, first_event, "m.read") == [bob.user_id]


def test_first_delivery_gives_current_receipts(server: Server) -> None:
    (alice, bob), with_receipts = server.room_with(2)
    without_receipts = alice.create_room()
    old = alice.send_message(with_receipts, "old")
    new = alice.send_message(with_receipts, "new")
    bob.send_receipt(with_receipts, old)
    bob.send_receipt(with_receipts, new)  # replaces the previous one
    alice.send_receipt(with_receipts, new)
    body = V3(alice).ok({"receipts": {}})
    assert set(body["receipts"]["rooms"]) == {with_receipts}
    content = body["receipts"]["rooms"][with_receipts]
    assert readers(content, new, "m.read") == sorted([alice.user_id, bob.user_id])
    assert old not in content
    assert without_receipts not in body["receipts"]["rooms"]


def test_room_ids_limit_the_rooms(server: Server) -> None:
    (alice, bob), tracked = server.room_with(2)
    untracked = alice.create_room(invite=[bob.user_id])
    bob.join(untracked)
    carol = server.user()
    foreign = carol.create_room()
    events = {room: alice.send_message(room) for room in (tracked, untracked)}
    carol_event = carol.send_message(foreign)
    v3 = V3(alice)
    first = v3.ok({"receipts": {"room_ids": [tracked, foreign]}})
    assert first["receipts"] == {"rooms": {}}

    for room, event_id in events.items():
        bob.send_receipt(room, event_id)
    carol.send_receipt(foreign, carol_event)
    body = v3.ok({}, since=first["next"])
    assert list(body["receipts"]["rooms"]) == [tracked]

    # A receipt in an untracked room does not end the wait.
    later = alice.send_message(untracked)
    with after(0.3, lambda: bob.send_receipt(untracked, later)):
        quiet = v3.ok({}, since=body["next"], timeout=1500)
    assert quiet == {"next": body["next"]}

    # By default every joined room is tracked.
    everything = v3.ok({"receipts": {}})
    assert set(everything["receipts"]["rooms"]) == {tracked, untracked}


def test_own_receipt_wakes_a_long_poll(server: Server) -> None:
    alice = server.user()
    room = alice.create_room()
    event_id = alice.send_message(room)
    v3 = V3(alice)
    since = v3.ok({"receipts": {}})["next"]
    with after(0.3, lambda: alice.send_receipt(room, event_id)):
        body, elapsed = timed(lambda: v3.ok({}, since=since, timeout=20000))
    assert readers(body["receipts"]["rooms"][room], event_id, "m.read") == [alice.user_id]
    assert elapsed < 10
    # Nothing new since: the echo of a present key carries the empty map.
    assert v3.ok({"receipts": {}}, since=body["next"])["receipts"] == {"rooms": {}}


def test_other_users_receipts_do_not_wake(server: Server) -> None:
    alice = server.user()
    alice.create_room()
    (bob, carol), room = server.room_with(2)
    event_id = bob.send_message(room)
    v3 = V3(alice)
    since = v3.ok({"receipts": {}})["next"]
    with after(0.3, lambda: carol.send_receipt(room, event_id)):
        body, elapsed = timed(lambda: v3.ok({}, since=since, timeout=1500))
    assert body == {"next": since}
    assert elapsed >= 1.4


def test_positions_garbage_and_ahead(server: Server) -> None:
    alice = server.user()
    room = alice.create_room()
    v3 = V3(alice)
    since = v3.ok({"receipts": {}})["next"]
    assert position_of(since, "receipts").isdigit()
    for garbage in ("x", "-1", "01", "m5", "m5~1.3", "1,2"):
        response = v3.error({}, since=with_position(since, "receipts", garbage))
        assert response.status == 400
        assert response.errcode == "M_INVALID_PARAM", garbage

    ahead = with_position(since, "receipts", "99999999")
    body, elapsed = timed(lambda: v3.ok({}, since=ahead, timeout=300))
    assert body == {"next": ahead}
    assert elapsed < 5
    # A writer id that was never issued is not an error either.
    unknown_writer = with_position(since, "receipts", "m1~987654.99999999")
    body = v3.ok({}, since=unknown_writer, timeout=0)
    assert position_of(body["next"], "receipts").isdigit()

    alice.send_receipt(room, alice.send_message(room))
    assert room in v3.ok({}, since=since)["receipts"]["rooms"]
