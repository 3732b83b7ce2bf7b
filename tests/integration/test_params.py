"""Sticky parameters and negotiation (SPEC §5; §14 items 30–36)."""

from __future__ import annotations

from tests.integration.helpers import V3, Server, after, retype, shared_room


def test_params_stick(server: Server) -> None:  # item 30
    (alice, bob), room = server.room_with(2)
    v3 = V3(alice)
    since = v3.ok({"typing": {"room_id": room}})["next"]
    retype(bob, room)
    body = v3.ok({}, since=since)
    assert body["typing"]["user_ids"] == [bob.user_id]


def test_limits_are_negotiated(server: Server) -> None:  # item 31
    v3 = V3(server.user())
    assert v3.ok({"to_device": {"limit": 5000}})["to_device"]["limit"] == 1000
    assert v3.ok({"to_device": {"limit": 0}})["to_device"]["limit"] == 100
    assert v3.ok({"to_device": {}})["to_device"]["limit"] == 100


def test_configured_maximum_lowers_the_default(server_with: object) -> None:
    server = server_with({"max_limits": {"to_device": 10}})  # type: ignore[operator]
    v3 = V3(server.user())
    assert v3.ok({"to_device": {}})["to_device"]["limit"] == 10
    assert v3.ok({"to_device": {"limit": 3}})["to_device"]["limit"] == 3


def test_replacing_the_typing_room_resets(server: Server) -> None:  # item 32
    alice, bob = server.user(), server.user()
    r1, r2 = shared_room(alice, bob), shared_room(alice, bob)
    retype(bob, r2)
    v3 = V3(alice)
    since = v3.ok({"typing": {"room_id": r1}})["next"]
    body = v3.ok({"typing": {"room_id": r2}}, since=since, timeout=10000)
    assert body["typing"] == {"user_ids": [bob.user_id]}  # at once: a reset is data
    since = body["next"]
    with after(0.3, lambda: retype(bob, r1)):
        assert v3.ok({}, since=since, timeout=1000) == {"next": since}


def test_null_stops_a_stream(server: Server) -> None:  # item 33
    (alice, bob), room = server.room_with(2)
    v3 = V3(alice)
    since = v3.ok({"typing": {"room_id": room}, "to_device": {}})["next"]
    stopped = v3.ok({"typing": None}, since=since, timeout=1000)
    assert list(stopped) == ["next"]
    since = stopped["next"]
    with after(0.3, lambda: retype(bob, room)):
        body = v3.ok({}, since=since, timeout=1000)
    assert body == {"next": since}


def test_resending_stored_params_changes_nothing(server: Server) -> None:  # item 34
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    params = {"typing": {"room_ids": [room]}, "to_device": {"limit": 20}}
    since = v3.ok(params)["next"]
    assert v3.ok(params, since=since, timeout=1000) == {"next": since}


def test_changing_only_a_limit_is_a_new_version(server: Server) -> None:  # item 35
    user = server.user()
    v3 = V3(user)
    since = v3.ok({"to_device": {"limit": 10}})["next"]
    body = v3.ok({"to_device": {"limit": 3}}, since=since, timeout=1000)
    assert list(body) == ["next"]
    assert body["next"] != since
    with after(0.3, lambda: user.send_to_device("m.x", {user.user_id: {user.device_id: {}}})):
        body = v3.ok({}, since=body["next"], timeout=5000)
    assert body["to_device"]["limit"] == 3
    assert len(body["to_device"]["events"]) == 1


def test_full_state_applies_once(server: Server) -> None:  # item 36
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    since = v3.ok({"room_data": {"room_ids": [room]}})["next"]
    body = v3.ok({"room_data": {"room_ids": [room], "full_state": True}}, since=since)
    assert body["next"] == since  # full_state is never stored
    assert v3.ok({}, since=since, timeout=1000) == {"next": since}


def test_timeout_zero_echoes_streams_in_the_body(server: Server) -> None:
    """SPEC §6.1 case 4: a timeout-0 reply holds the echoes of streams in the body."""
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    since = v3.ok({"typing": {"room_ids": [room]}, "to_device": {"limit": 9}})["next"]
    body = v3.ok({"to_device": {"limit": 9}}, since=since)
    assert body == {"to_device": {"limit": 9, "events": []}, "next": since}
    body = v3.ok({"typing": {"room_ids": [room]}}, since=since)
    assert body == {"typing": {"rooms": {}}, "next": since}


def test_room_member_spelling_follows_the_client(server: Server) -> None:
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    first = v3.ok({"room_member": {"room_id": room}})
    assert "room_member" in first and "room_members" not in first
    body = v3.ok({"room_members": {"room_id": room}}, since=first["next"])
    assert "room_members" in body and "room_member" not in body
    assert body["next"] != first["next"]  # the spelling is stored: a new version
