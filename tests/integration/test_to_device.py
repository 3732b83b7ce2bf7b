"""The to_device stream and its delivery guarantee across sessions (SPEC §7.2, §8;
§14 items 46–51, 85, 86)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness import MatrixUser
from tests.integration.helpers import V3, Server, after, until


def send(sender: MatrixUser, to: MatrixUser, **content: Any) -> None:
    sender.send_to_device("m.test", {to.user_id: {to.device_id: content}})


def contents(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [event["content"] for event in body.get("to_device", {}).get("events", [])]


def inbox(server: Server, user: MatrixUser) -> int:
    """Messages left in Synapse's own device inbox for the device."""
    rows = server.query(
        f"SELECT COUNT(*) FROM device_inbox WHERE user_id = '{user.user_id}'"
        f" AND device_id = '{user.device_id}'"
    )
    return int(rows[0][0])


def test_message_sent_before_the_session(server: Server) -> None:  # item 46
    alice, bob = server.user(), server.user()
    alice.send_to_device(
        "m.room_key_request",
        {bob.user_id: {bob.device_id: {"action": "request", "request_id": "R1"}}},
    )
    body = V3(bob).ok({"to_device": {}})
    assert body["to_device"]["limit"] == 100
    assert body["to_device"]["events"] == [
        {
            "sender": alice.user_id,
            "type": "m.room_key_request",
            "content": {"action": "request", "request_id": "R1"},
        }
    ]


def test_limit_pages_in_order(server: Server) -> None:  # item 47
    alice, bob = server.user(), server.user()
    messages = {bob.user_id: {bob.device_id: {}}}
    for n in range(300):
        messages[bob.user_id][bob.device_id] = {"n": n}
        alice.send_to_device("m.test", messages)
    v3 = V3(bob)
    first = v3.ok({"to_device": {"limit": 20}})
    assert contents(first) == [{"n": n} for n in range(20)]
    second = v3.ok({}, since=first["next"], timeout=10000)
    assert contents(second) == [{"n": n} for n in range(20, 40)]
    # Paging on until the end delivers every message exactly once, in order.
    seen = contents(first) + contents(second)
    since = second["next"]
    while True:
        body = v3.ok({}, since=since)
        if "to_device" not in body:
            break
        seen += contents(body)
        since = body["next"]
    assert seen == [{"n": n} for n in range(300)]


def test_replaying_a_since_redelivers(server: Server) -> None:  # item 48
    alice, bob = server.user(), server.user()
    v3 = V3(bob)
    since = v3.ok({"to_device": {}})["next"]
    send(alice, bob, hello=1)
    for _ in range(3):
        assert contents(v3.ok({}, since=since)) == [{"hello": 1}]


def test_newer_since_confirms_single_session(server: Server) -> None:  # item 49
    alice, bob = server.user(), server.user()
    v3 = V3(bob)
    since = v3.ok({"to_device": {}})["next"]
    send(alice, bob, hello=1)
    newer = v3.ok({}, since=since)["next"]
    v3.ok({}, since=newer)  # confirms the message: it is deleted
    assert "to_device" not in v3.ok({}, since=since)
    assert inbox(server, bob) == 0


def test_session_without_to_device_never_deletes(server: Server) -> None:  # item 50
    alice, bob = server.user(), server.user()
    room = bob.create_room()
    quiet = V3(bob)
    since = quiet.ok({"typing": {"room_id": room}})["next"]
    send(alice, bob, keep="me")
    for _ in range(3):
        since = quiet.ok({}, since=since)["next"]
    assert contents(V3(bob).ok({"to_device": {}})) == [{"keep": "me"}]


def test_worked_example_of_spec_8_3(server: Server) -> None:  # item 85
    alice, bob = server.user(), server.user()
    v3 = V3(bob)
    send(alice, bob, m=1)  # step 0
    send(alice, bob, m=2)
    s1 = v3.ok({"to_device": {}})  # step 1
    assert contents(s1) == [{"m": 1}, {"m": 2}]
    t1a = s1["next"]
    s2 = v3.ok({"to_device": {}})  # step 2
    assert contents(s2) == [{"m": 1}, {"m": 2}]
    t2a = s2["next"]

    # step 3-4: S1 confirms T1a and waits; m3 arrives and wakes it
    with after(0.5, lambda: send(alice, bob, m=3)):
        step4 = v3.ok({}, since=t1a, timeout=5000)
    assert contents(step4) == [{"m": 3}]
    assert inbox(server, bob) == 3  # S2 has confirmed nothing
    t1b = step4["next"]

    step5 = v3.ok({}, since=t2a)  # step 5: min is now 102, m1 and m2 go
    assert contents(step5) == [{"m": 3}]
    assert inbox(server, bob) == 1
    t2b = step5["next"]

    assert v3.ok({}, since=t1b, timeout=500) == {"next": t1b}  # step 6: S1 waits
    assert inbox(server, bob) == 1

    step7 = v3.ok({}, since=t1a)  # step 7: replay; m1 and m2 are gone
    assert contents(step7) == [{"m": 3}]
    assert inbox(server, bob) == 1

    assert v3.ok({}, since=t2b, timeout=500) == {"next": t2b}  # step 8
    assert inbox(server, bob) == 0


def test_new_session_gets_every_undeleted_message(server: Server) -> None:
    alice, bob = server.user(), server.user()
    v3 = V3(bob)
    send(alice, bob, m=1)
    s1 = v3.ok({"to_device": {}})["next"]
    s2 = v3.ok({"to_device": {}})["next"]
    send(alice, bob, m=2)
    v3.ok({}, since=v3.ok({}, since=s1)["next"])  # S1 confirms both
    # A third session, created before S2 confirms, still gets both and blocks.
    s3 = v3.ok({"to_device": {}})
    assert contents(s3) == [{"m": 1}, {"m": 2}]
    v3.ok({}, since=v3.ok({}, since=s2)["next"])  # S2 confirms both
    assert inbox(server, bob) == 2
    v3.ok({}, since=s3["next"])  # S3 confirms: now they go
    assert inbox(server, bob) == 0


def test_stopping_to_device_unblocks_deletion(server: Server) -> None:
    alice, bob = server.user(), server.user()
    v3 = V3(bob)
    send(alice, bob, m=1)
    s1 = v3.ok({"to_device": {}})["next"]
    s2 = v3.ok({"to_device": {}})["next"]
    v3.ok({}, since=s1)
    assert inbox(server, bob) == 1
    v3.ok({"to_device": None}, since=s2)  # S2 stops counting
    assert inbox(server, bob) == 0


def test_restarting_to_device_starts_from_the_oldest_message(server: Server) -> None:
    alice, bob = server.user(), server.user()
    v3 = V3(bob)
    send(alice, bob, m=1)
    s1 = v3.ok({"to_device": {}})
    s2 = v3.ok({"to_device": {}})["next"]
    stopped = v3.ok({"to_device": None}, since=s1["next"])["next"]
    again = v3.ok({"to_device": {}}, since=stopped)
    assert contents(again) == [{"m": 1}]
    v3.ok({}, since=s2)  # S2 confirms; S1 restarted and confirmed nothing
    assert inbox(server, bob) == 1
    v3.ok({}, since=again["next"])
    assert inbox(server, bob) == 0


def test_other_devices_are_independent(server: Server) -> None:
    alice, bob = server.user(), server.user()
    phone = server.login(bob, device_id="PHONE")
    send(alice, bob, device="first")
    send(alice, phone, device="phone")
    first = V3(bob)
    since = first.ok({"to_device": {}})["next"]
    first.ok({}, since=since)
    assert inbox(server, bob) == 0
    assert contents(V3(phone).ok({"to_device": {}})) == [{"device": "phone"}]


def test_expired_session_stops_blocking(server_with: Callable[..., Server]) -> None:  # item 86
    server = server_with({"session_ttl": "2s", "max_timeout_ms": 1000})
    alice, bob = server.user(), server.user()
    v3 = V3(bob)
    send(alice, bob, m=1)
    s1 = v3.ok({"to_device": {}})
    v3.ok({"to_device": {}})  # S2: never confirms, then idles
    old = s1["next"]
    since = v3.ok({}, since=old)["next"]  # S1 confirms
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # S1 keeps polling while S2 idles 3 s
        since = v3.ok({}, since=since, timeout=500)["next"]
    assert "to_device" not in v3.ok({}, since=old)
    assert inbox(server, bob) == 0


def test_restart_between_delivery_and_confirmation(own_server: Callable[..., Server]) -> None:
    server = own_server()  # items 51 and the SIGKILL case of the issue
    alice, bob = server.user(), server.user()
    v3 = V3(bob)
    since = v3.ok({"to_device": {}})["next"]
    send(alice, bob, m=1)
    assert contents(v3.ok({}, since=since)) == [{"m": 1}]
    server.restart()
    assert contents(v3.ok({}, since=since)) == [{"m": 1}]
    send(alice, bob, m=2)
    delivered = v3.ok({}, since=since)
    assert contents(delivered) == [{"m": 1}, {"m": 2}]
    server.restart(kill=True)  # SIGKILL: nothing gets to shut down cleanly
    assert contents(v3.ok({}, since=since)) == [{"m": 1}, {"m": 2}]
    confirmed = v3.ok({}, since=delivered["next"])
    assert "to_device" not in confirmed
    assert inbox(server, bob) == 0


def test_one_send_wakes_many_long_polls_with_one_inbox_read(server: Server) -> None:
    """A sendToDevice to several devices wakes their long-polls together; the module
    reads their inboxes in one transaction (a batch), and each gets exactly what
    Synapse's own v2 sync gives the device."""
    sender = server.user()
    users = [server.user() for _ in range(6)]
    clients = [V3(user) for user in users]
    since = [client.ok({"to_device": {}})["next"] for client in clients]

    def waiting() -> float:
        return server.metric("synapse_syncv3_waiting_requests")

    def reads() -> float:
        # Named with "_total" by the newer prometheus_client releases.
        return sum(
            server.metric(name, 0, desc="syncv3_read_to_device")
            for name in (
                "synapse_storage_transaction_time_count",
                "synapse_storage_transaction_time_count_total",
            )
        )

    until(lambda: waiting() == 0, "other requests still waiting")
    with ThreadPoolExecutor(len(users)) as pool:
        answers = [
            pool.submit(client.ok, {}, since=token, timeout=20000)
            for client, token in zip(clients, since, strict=True)
        ]
        until(lambda: waiting() == len(users), "the long-polls never waited together")
        before = reads()
        sender.send_to_device(
            "m.test", {user.user_id: {user.device_id: {"for": user.user_id}} for user in users}
        )
        bodies = [answer.result(timeout=15) for answer in answers]
    for user, body in zip(users, bodies, strict=True):
        assert contents(body) == [{"for": user.user_id}]
        assert body["to_device"]["events"] == user.v2_sync()["to_device"]["events"]
    # One transaction for the six wakes (without the batch: six).
    assert reads() - before == 1
