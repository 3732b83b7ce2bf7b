"""The presence stream and set_presence (SPEC §3.2, §7.8; §14 item 83)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness import MatrixUser
from harness.client import quote
from tests.integration.helpers import (
    V3,
    Server,
    after,
    position_of,
    shared_room,
    timed,
    with_position,
)


def set_status(user: MatrixUser, presence: str, status_msg: str | None = None) -> None:
    body: dict[str, Any] = {"presence": presence}
    if status_msg is not None:
        body["status_msg"] = status_msg
    user._call("PUT", f"/presence/{quote(user.user_id)}/status", body)


def get_status(asker: MatrixUser, user: MatrixUser) -> dict[str, Any]:
    status: dict[str, Any] = asker._call("GET", f"/presence/{quote(user.user_id)}/status")
    return status


def presence_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{sender: content}`` of the presence events of a response (checking their shape)."""
    found = {}
    for event in body["presence"]["events"]:
        assert set(event) == {"type", "sender", "content"}
        assert event["type"] == "m.presence"
        found[event["sender"]] = event["content"]
    return found


def test_first_delivery_and_changes(server: Server) -> None:  # item 83
    (alice, bob), _ = server.room_with(2)
    set_status(bob, "online", "at work")
    v3 = V3(alice)
    first = v3.ok({"presence": {}})
    seen = presence_of(first)
    assert seen[bob.user_id]["presence"] == "online"
    assert seen[bob.user_id]["status_msg"] == "at work"
    assert "user_id" not in seen[bob.user_id]
    # Syncing makes alice online too, and her own presence is part of the stream.
    assert seen[alice.user_id]["presence"] == "online"
    assert position_of(first["next"], "presence").isdigit()

    with after(0.3, lambda: set_status(bob, "unavailable")):
        changed = v3.ok({}, since=first["next"], timeout=5000)
    assert presence_of(changed)[bob.user_id]["presence"] == "unavailable"
    assert set(changed) == {"presence", "next"}

    # Nothing changed since: the echo is empty and the stream has no data.
    echo = v3.ok({"presence": {}}, since=changed["next"])
    assert echo["presence"] == {"events": []}


def test_user_syncing_online_produces_an_event(server: Server) -> None:  # item 83
    (alice, bob), _ = server.room_with(2)
    v3 = V3(alice)
    first = v3.ok({"presence": {}})
    # bob never synced: offline users are left out of a first delivery.
    assert bob.user_id not in presence_of(first)

    with after(0.3, lambda: V3(bob).ok({}, set_presence="online")):
        body, elapsed = timed(lambda: v3.ok({}, since=first["next"], timeout=20000))
    assert elapsed < 10
    content = presence_of(body)[bob.user_id]
    assert content["presence"] == "online"
    assert content["currently_active"] is True


def test_set_presence_unavailable(server: Server) -> None:  # item 83
    alice, bob = server.user(), server.user()
    shared_room(alice, bob)
    # Honoured whether or not the presence stream is requested (SPEC §3.2).
    V3(alice).ok({"to_device": {}}, set_presence="unavailable")
    assert get_status(alice, alice)["presence"] == "unavailable"
    assert get_status(bob, alice)["presence"] == "unavailable"

    body = V3(bob).ok({"presence": {}})
    assert presence_of(body)[alice.user_id]["presence"] == "unavailable"


def test_set_presence_offline_does_not_mark_online(server: Server) -> None:
    alice = server.user()
    V3(alice).ok({"presence": {}}, set_presence="offline")
    assert get_status(alice, alice)["presence"] == "offline"


def test_presence_of_users_not_sharing_a_room(server: Server) -> None:
    (alice, bob), _ = server.room_with(2)
    carol, dave = server.user(), server.user()
    shared_room(carol, dave)  # carol shares a room, but not with alice
    set_status(carol, "online")
    v3 = V3(alice)
    first = v3.ok({"presence": {}})
    assert carol.user_id not in presence_of(first)

    # carol's changes wake nobody who shares no room with her; the wait goes on.
    with after(0.3, lambda: set_status(carol, "unavailable")):
        body, elapsed = timed(lambda: v3.ok({}, since=first["next"], timeout=1500))
    assert body == {"next": first["next"]}
    assert elapsed >= 1.4

    # Presence changes do not end a wait when the presence stream is not requested.
    other = V3(alice)
    since = other.ok({"to_device": {}})["next"]
    with after(0.3, lambda: set_status(bob, "unavailable")):
        body, elapsed = timed(lambda: other.ok({}, since=since, timeout=1500))
    assert body == {"next": since}
    assert elapsed >= 1.4


def test_positions_from_the_future_and_incremental(server: Server) -> None:
    (alice, bob), _ = server.room_with(2)
    v3 = V3(alice)
    first = v3.ok({"presence": {}})
    # A position ahead of anything issued is clamped: no error, no data.
    ahead = with_position(first["next"], "presence", "999999999")
    body = v3.ok({}, since=ahead)
    assert "presence" not in body
    assert position_of(body["next"], "presence").isdigit()

    # Malformed positions are malformed tokens (SPEC §4.4 6), never a 500.
    for bad in ("-1", "01", "1.5", "s1"):
        response = v3.error({}, since=with_position(first["next"], "presence", bad))
        assert response.errcode == "M_INVALID_PARAM"

    set_status(bob, "unavailable", "lunch")
    later = v3.ok({}, since=body["next"])
    assert presence_of(later)[bob.user_id]["status_msg"] == "lunch"


def test_presence_disabled(server_with: Callable[..., Server]) -> None:
    server = server_with({}, presence=False)
    (alice, bob), _ = server.room_with(2)
    V3(bob).ok({})
    v3 = V3(alice)
    first = v3.ok({"presence": {}})
    assert first["presence"] == {"events": []}

    def bob_is_active() -> None:
        V3(bob).ok({}, set_presence="online")
        set_status(bob, "unavailable")

    with after(0.3, bob_is_active):
        body, elapsed = timed(lambda: v3.ok({}, since=first["next"], timeout=1500))
    assert body == {"next": first["next"]}
    assert elapsed >= 1.4
