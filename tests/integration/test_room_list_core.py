"""room_list (SPEC §7.4): the core paths — first page, continuation pages, streaming
changes, leaves — on both databases. The full SPEC checklist and the comparisons with
v2 sync are in test_room_list.py."""

from __future__ import annotations

from tests.integration.helpers import V3, MatrixUser, Server, with_position


def ids(result: dict) -> list[str]:
    return [room["room_id"] for room in result["room_list"]["rooms"]]


def v2_counts(user: MatrixUser) -> dict[str, int]:
    """Notification count per joined room, as Synapse's v2 sync reports it."""
    joined = user.v2_sync()["rooms"]["join"]
    return {
        room_id: room.get("unread_notifications", {}).get("notification_count", 0)
        for room_id, room in joined.items()
    }


def first_all(user: MatrixUser) -> dict:
    """The user's whole room list by recency (a fresh session)."""
    return V3(user).ok({"room_list": {"sort": ["by_recency"]}})


def by_counts_then_recency(counts: dict[str, int], by_recency: list[str]) -> list[str]:
    return sorted(by_recency, key=lambda room: -counts[room])


def test_first_page_pages_and_streaming(server: Server) -> None:
    alice, bob = server.user("Alice"), server.user("Bob")
    rooms = []
    for n in range(5):
        room = bob.create_room(name=f"Room {n}")
        alice.join(room) if False else None
        bob.invite(room, alice.user_id)
        alice.join(room)
        rooms.append(room)
    invite = bob.create_room(name="Invite")
    bob.invite(invite, alice.user_id)
    for room in rooms[:3]:
        bob.send_message(room, "hello")
    v3 = V3(alice)
    first = v3.ok({"room_list": {"limit": 2, "timeline_limit": 1}})
    listing = first["room_list"]
    assert listing["count"] == 6
    assert listing["limit"] == 2 and listing["sort"] == ["by_recency"]
    assert ids(first) == [rooms[2], rooms[1]]
    assert listing["rooms"][0]["timeline"][-1]["content"]["body"] == "hello"
    seen = ids(first)
    cursor = listing["p"]["next"]
    since = first["next"]
    bob.send_message(rooms[4], "between pages")
    while cursor:
        page = v3.ok({"room_list": {"limit": 2, "p": {"next": cursor}}}, since=since)
        assert page["room_list"]["count"] == 6
        seen += ids(page)
        for entry in page["room_list"]["rooms"]:
            if entry["room_id"] == invite:
                assert entry["membership"] == "invite" and entry["name"] == "Invite"
                assert set(entry) == {"room_id", "membership", "name", "invite_state", "timestamp"}
        cursor = page["room_list"].get("p", {}).get("next")
        since = page["next"]
    assert sorted(seen) == sorted([*rooms, invite]) and len(seen) == 6
    streaming = v3.ok({}, since=since)
    assert ids(streaming) == [rooms[4]]
    assert streaming["room_list"]["rooms"][0]["timeline"][-1]["content"]["body"] == "between pages"
    # Nothing new: a timeout reply.
    assert v3.ok({}, since=streaming["next"], timeout=300) == {"next": streaming["next"]}
    # A kick: reported once as leave, then never again.
    bob._call("POST", f"/rooms/{rooms[0]}/kick", {"user_id": alice.user_id})
    kicked = v3.ok({}, since=streaming["next"])
    entry = kicked["room_list"]["rooms"][0]
    assert entry["room_id"] == rooms[0] and entry["membership"] == "leave"
    assert entry["timeline"][-1]["type"] == "m.room.member"
    assert kicked["room_list"]["count"] == 5
    bob.send_message(rooms[0], "after the kick")
    assert v3.ok({}, since=kicked["next"], timeout=300) == {"next": kicked["next"]}


def test_cursor_errors(server: Server) -> None:
    alice = server.user()
    for _ in range(3):
        alice.create_room()
    v3 = V3(alice)
    first = v3.ok({"room_list": {"limit": 1}})
    cursor = first["room_list"]["p"]["next"]
    for bad in ("garbage", cursor[:-1] + "9", "l1.AAAAAAAA.1"):
        error = v3.error({"room_list": {"limit": 1, "p": {"next": bad}}}, since=first["next"])
        assert error.status == 400 and error.errcode == "M_INVALID_PARAM", bad
    second = v3.ok({"room_list": {"limit": 1, "p": {"next": cursor}}}, since=first["next"])
    assert len(ids(second)) == 1


def test_token_of_a_release_that_did_not_serve_room_list(server: Server) -> None:
    alice = server.user()
    room = alice.create_room()
    v3 = V3(alice)
    first = v3.ok({"room_list": {}})
    # Such releases put "0" as the room_list position: the list is delivered afresh.
    old = with_position(first["next"], "room_list", "0")
    again = v3.ok({}, since=old)
    assert ids(again) == [room] and again["room_list"]["count"] == 1


def test_first_pages_follow_changes_between_them(server: Server) -> None:
    """A first page reuses the order an earlier one sorted, with the rooms that
    changed since put back in place: every first page must equal a fresh sort."""
    alice, bob = server.user("Alice"), server.user("Bob")
    rooms = []
    for n in range(6):
        room = bob.create_room(name=f"R{n}", invite=[alice.user_id])
        alice.join(room)
        rooms.append(room)
    for sort in (["by_recency"], ["by_notification_count", "by_recency"], ["by_name"]):
        V3(alice).ok({"room_list": {"sort": sort, "limit": 3}})
    bob.send_message(rooms[0], "news")
    bob._call("PUT", f"/rooms/{rooms[1]}/state/m.room.name/", {"name": "A first"})
    first = V3(alice).ok({"room_list": {"limit": 3}})
    assert ids(first) == [rooms[1], rooms[0], rooms[5]]
    by_count = V3(alice).ok({"room_list": {"sort": ["by_notification_count", "by_recency"]}})
    # The counts are the per-room ones v2 sync reports on the same server. Synapse's
    # own answer is the oracle: its summary rotation runs in the background and, where
    # it has run, also counts the invite that preceded the join (1 or 2 for rooms[0]).
    counts = v2_counts(alice)
    assert counts[rooms[0]] >= 1
    assert ids(by_count) == by_counts_then_recency(counts, ids(first_all(alice)))
    assert by_count["room_list"]["rooms"][0]["notification_count"] == counts[rooms[0]]
    by_name = V3(alice).ok({"room_list": {"sort": ["by_name"]}})
    assert ids(by_name)[0] == rooms[1]
    # The user's own receipt lowers the count: the order follows.
    event_id = first["room_list"]["rooms"][1]["timeline"][-1]["event_id"]
    alice.send_receipt(rooms[0], event_id)
    after = V3(alice).ok({"room_list": {"sort": ["by_notification_count", "by_recency"]}})
    assert after["room_list"]["rooms"][ids(after).index(rooms[0])]["notification_count"] == 0
    counts = v2_counts(alice)
    assert counts[rooms[0]] == 0
    expected = by_counts_then_recency(counts, ids(first_all(alice)))
    assert ids(after) == expected
    # A membership change sorts afresh.
    alice.leave(rooms[2])
    assert rooms[2] not in ids(V3(alice).ok({"room_list": {}}))
