"""Long-polling on Synapse's notifier (SPEC §6; §14 items 37–43)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from harness import MatrixUser
from tests.integration.helpers import (
    V3,
    V3_PATH,
    Server,
    after,
    retype,
    shared_room,
    timed,
    until,
)


def test_new_session_never_waits(server: Server) -> None:  # item 37
    v3 = V3(server.user())
    body, elapsed = timed(lambda: v3.ok({"to_device": {}}, timeout=30000))
    assert elapsed < 10
    assert "to_device" in body


def test_timeout_reply(server: Server) -> None:  # item 38
    v3 = V3(server.user())
    since = v3.ok({"to_device": {}})["next"]
    body, elapsed = timed(lambda: v3.ok({}, since=since, timeout=1500))
    assert 1.4 <= elapsed < 5, elapsed
    assert body == {"next": since}


def test_timeout_is_clamped(server_with: Callable[..., Server]) -> None:  # item 39
    server = server_with({"session_ttl": "2s", "max_timeout_ms": 1000})
    v3 = V3(server.user())
    since = v3.ok({"to_device": {}})["next"]
    body, elapsed = timed(lambda: v3.ok({}, since=since, timeout=60000))
    assert elapsed < 5
    assert body == {"next": since}


def test_typing_wakes_the_long_poll(server: Server) -> None:  # item 40
    (alice, bob), room = server.room_with(2)
    v3 = V3(alice)
    since = v3.ok({"typing": {"room_id": room}})["next"]
    typed_at: list[float] = []

    def type_now() -> None:
        typed_at.append(time.monotonic())
        retype(bob, room)

    with after(0.5, type_now):
        body = v3.ok({}, since=since, timeout=10000)
        answered_at = time.monotonic()
    assert body["typing"]["user_ids"] == [bob.user_id]
    assert answered_at - typed_at[0] < 1


def test_unrequested_stream_does_not_wake(server: Server) -> None:  # item 41
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    since = v3.ok({"typing": {"room_id": room}})["next"]
    message = {user.user_id: {user.device_id: {"x": 1}}}
    with after(0.3, lambda: user.send_to_device("m.test", message)):
        body, elapsed = timed(lambda: v3.ok({}, since=since, timeout=1500))
    assert body == {"next": since}
    assert elapsed >= 1.4


def test_other_activity_does_not_wake(server: Server) -> None:
    """Messages in the user's room, presence changes of a room-mate and typing in an
    untracked room give the requested streams no data: the wait goes on."""
    alice, bob = server.user(), server.user()
    tracked, other = shared_room(alice, bob), shared_room(alice, bob)
    v3 = V3(alice)
    since = v3.ok({"typing": {"room_id": tracked}, "to_device": {}})["next"]

    def activity() -> None:
        bob.send_message(other, "hello")
        bob.client.put(f"/_matrix/client/v3/presence/{bob.user_id}/status", {"presence": "online"})
        retype(bob, other)

    with after(0.3, activity):
        body, elapsed = timed(lambda: v3.ok({}, since=since, timeout=1500))
    assert body == {"next": since}
    assert elapsed >= 1.4


def test_page_request_never_waits(server: Server) -> None:  # item 42
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    since = v3.ok({"room_members": {"room_id": room}})["next"]
    body, elapsed = timed(
        lambda: v3.ok({"room_members": {"room_id": room, "p": {}}}, since=since, timeout=30000)
    )
    assert elapsed < 10
    assert "room_members" in body


def test_default_timeout_is_zero(server: Server) -> None:  # item 43
    v3 = V3(server.user())
    since = v3.ok({"to_device": {}})["next"]
    body, elapsed = timed(lambda: v3.ok({}, since=since))
    assert elapsed < 5
    assert body == {"next": since}


def test_disconnect_cancels_the_wait(server: Server) -> None:
    """A client that goes away cancels its wait: the process stops waiting for it."""
    user = server.user()
    v3 = V3(user)
    since = v3.ok({"to_device": {}})["next"]
    cancelled_before = server.metric(
        "synapse_syncv3_wait_duration_seconds_count", outcome="cancelled"
    )

    url = urlsplit(server.base_url)
    body = b"{}"
    request = (
        f"POST {V3_PATH}?since={since}&timeout=20000 HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\nAuthorization: Bearer {user.access_token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(request)
        until(
            lambda: server.metric("synapse_syncv3_waiting_requests") >= 1,
            "the request never started waiting",
            limit=5,
        )
    # The socket is closed: the wait must end long before its 20 s timeout.
    until(
        lambda: server.metric("synapse_syncv3_waiting_requests") <= 0,
        "the wait was not cancelled",
        limit=5,
    )
    cancelled = server.metric("synapse_syncv3_wait_duration_seconds_count", outcome="cancelled")
    assert cancelled == cancelled_before + 1
    # The session is intact.
    assert v3.ok({}, since=since)["next"] == since


def _open_long_poll(server: Server, user: MatrixUser, since: str, timeout_ms: int) -> socket.socket:
    """A long-poll on a raw socket (the test closes it to go away)."""
    url = urlsplit(server.base_url)
    body = b"{}"
    request = (
        f"POST {V3_PATH}?since={since}&timeout={timeout_ms} HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\nAuthorization: Bearer {user.access_token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    sock = socket.create_connection((url.hostname, url.port))
    sock.sendall(request)
    return sock


def test_waits_leave_no_listener_behind(server: Server) -> None:
    """The module's own wait holds one listener in Synapse's notifier per waiting
    request: a wait that is woken, times out or is cancelled by the client takes it
    away, and the others of the same user keep waiting and are woken."""
    user = server.user()
    woken, gone, timing_out = V3(user), V3(user), V3(user)
    since = {v3: v3.ok({"to_device": {}})["next"] for v3 in (woken, gone, timing_out)}

    def listeners() -> float:
        return server.metric("synapse_notifier_listeners", missing=0)

    def waiting() -> float:
        return server.metric("synapse_syncv3_waiting_requests")

    until(lambda: waiting() == 0, "other requests still waiting")
    baseline = listeners()
    with ThreadPoolExecutor(2) as pool:
        answer = pool.submit(lambda: woken.ok({}, since=since[woken], timeout=20000))
        timed_out = pool.submit(
            lambda: timed(lambda: timing_out.ok({}, since=since[timing_out], timeout=1500))
        )
        sock = _open_long_poll(server, user, since[gone], 20000)
        until(lambda: waiting() == 3, "the three long-polls never waited together")
        assert listeners() == baseline + 3
        sock.close()
        until(lambda: waiting() == 2, "the closed long-poll kept waiting")
        assert listeners() == baseline + 2
        body, elapsed = timed_out.result(timeout=10)
        assert body == {"next": since[timing_out]} and 1.4 <= elapsed < 5, elapsed
        until(lambda: waiting() == 1, "the timed-out long-poll kept waiting")
        assert listeners() == baseline + 1
        user.send_to_device("m.test", {user.user_id: {user.device_id: {"n": 1}}})
        events = answer.result(timeout=10)["to_device"]["events"]
        assert [event["content"] for event in events] == [{"n": 1}]
    until(lambda: listeners() == baseline, "a listener was left in the notifier")
