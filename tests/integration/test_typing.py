"""The typing stream (SPEC §7.1; §14 items 44–45)."""

from __future__ import annotations

from tests.integration.helpers import V3, Server, after, retype, shared_room


def test_multi_room_typing(server: Server) -> None:  # item 44
    alice, bob = server.user(), server.user()
    r1, r2 = shared_room(alice, bob), shared_room(alice, bob)
    v3 = V3(alice)
    first = v3.ok({"typing": {"room_ids": [r1, r2]}})
    assert first["typing"] == {"rooms": {r1: {"user_ids": []}, r2: {"user_ids": []}}}

    with after(0.3, lambda: retype(bob, r1)):
        started = v3.ok({}, since=first["next"], timeout=5000)
    assert started["typing"] == {"rooms": {r1: {"user_ids": [bob.user_id]}}}

    with after(0.3, lambda: bob.set_typing(r1, False)):
        stopped = v3.ok({}, since=started["next"], timeout=5000)
    assert stopped["typing"] == {"rooms": {r1: {"user_ids": []}}}


def test_single_room_typing_and_own_typing(server: Server) -> None:
    (alice, bob), room = server.room_with(2)
    v3 = V3(alice)
    first = v3.ok({"typing": {"room_id": room}})
    assert first["typing"] == {"user_ids": []}
    retype(bob, room)
    retype(alice, room)
    body = v3.ok({}, since=first["next"])
    assert sorted(body["typing"]["user_ids"]) == sorted([alice.user_id, bob.user_id])
    # No change since: no typing object, and user_ids is absent in an echo.
    echo = v3.ok({"typing": {"room_id": room}}, since=body["next"])
    assert echo["typing"] == {}


def test_rooms_not_joined_are_never_reported(server: Server) -> None:  # item 45
    alice, bob, carol = server.user(), server.user(), server.user()
    joined = alice.create_room(invite=[bob.user_id])
    bob.join(joined)
    foreign = bob.create_room(invite=[carol.user_id])
    carol.join(foreign)
    invited = bob.create_room(invite=[alice.user_id])  # invited, not joined
    retype(carol, foreign)
    retype(bob, invited)
    v3 = V3(alice)
    first = v3.ok({"typing": {"room_ids": [joined, foreign, invited]}})
    assert first["typing"] == {"rooms": {joined: {"user_ids": []}}}
    with after(0.3, lambda: (retype(carol, foreign), retype(bob, invited))):
        body = v3.ok({}, since=first["next"], timeout=1500)
    assert body == {"next": first["next"]}

    single = v3.ok({"typing": {"room_id": foreign}})
    assert single["typing"] == {}


def test_typing_after_the_user_joins(server: Server) -> None:
    alice, bob = server.user(), server.user()
    room = bob.create_room(invite=[alice.user_id])
    v3 = V3(alice)
    since = v3.ok({"typing": {"room_id": room}})["next"]
    alice.join(room)
    with after(0.3, lambda: retype(bob, room)):
        body = v3.ok({}, since=since, timeout=5000)
    assert body["typing"] == {"user_ids": [bob.user_id]}
