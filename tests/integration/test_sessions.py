"""Sessions and the since token (SPEC §4; §14 items 21–29)."""

from __future__ import annotations

import time
from collections.abc import Callable

from synapse_syncv3.core.tokens import SinceToken
from synapse_syncv3.streams import token_codec
from tests.integration.helpers import UNKNOWN_SESSION_BODY, V3, Server, timed


def test_each_request_without_since_creates_a_session(server: Server) -> None:  # item 21
    v3 = V3(server.user())
    first = v3.ok({"to_device": {}})["next"]
    second = v3.ok({"to_device": {}})["next"]
    assert first != second
    assert first.split(".")[0] != second.split(".")[0]  # different session ids
    assert v3.ok({}, since=first)["next"].startswith(first.split(".")[0])
    assert v3.ok({}, since=second)["next"].startswith(second.split(".")[0])


def test_another_device_of_the_same_user_cannot_use_a_session(server: Server) -> None:  # item 23
    device_a = server.user()
    device_b = server.login(device_a, device_id="DEVICEB")
    since = V3(device_a).ok({})["next"]
    response = V3(device_b).error({}, since=since)
    assert response.json() == UNKNOWN_SESSION_BODY
    assert V3(device_a).ok({}, since=since)["next"] == since


def test_least_recently_used_session_is_evicted(
    server_with: Callable[..., Server],
) -> None:  # item 24
    server = server_with({"max_sessions_per_device": 2})
    v3 = V3(server.user())
    s1 = v3.ok({})["next"]
    s2 = v3.ok({})["next"]
    v3.ok({}, since=s1)  # S1 is now more recently used than S2
    s3 = v3.ok({})["next"]
    assert v3.error({}, since=s2).json() == UNKNOWN_SESSION_BODY
    assert v3.ok({}, since=s1)["next"] == s1
    assert v3.ok({}, since=s3)["next"] == s3
    # Other devices are not affected by this device's limit.
    other = V3(server.login(v3.user, device_id="OTHER"))
    o1 = other.ok({})["next"]
    assert v3.ok({}, since=s3)["next"] == s3
    assert other.ok({}, since=o1)["next"] == o1


def test_idle_sessions_expire(server_with: Callable[..., Server]) -> None:  # item 25
    server = server_with({"session_ttl": "2s", "max_timeout_ms": 1000})
    v3 = V3(server.user())
    idle = v3.ok({})["next"]
    busy = v3.ok({})["next"]
    for _ in range(5):
        time.sleep(1)
        assert v3.ok({}, since=busy)["next"] == busy
    assert v3.error({}, since=idle).json() == UNKNOWN_SESSION_BODY
    assert v3.ok({})["next"].startswith("V3_")


def test_a_long_poll_keeps_its_session_alive(server_with: Callable[..., Server]) -> None:
    server = server_with({"session_ttl": "2s", "max_timeout_ms": 1000})
    v3 = V3(server.user())
    since = v3.ok({"to_device": {}})["next"]
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        # Each long-poll is 1 s; the session is used at its start and at its end.
        assert v3.ok({}, since=since, timeout=1000) == {"next": since}
    assert v3.ok({}, since=since)["next"] == since


def test_logout_deletes_the_sessions_of_the_device(server: Server) -> None:  # item 26
    first = server.user()
    device = server.login(first, device_id="PHONE")
    keep = V3(first).ok({})["next"]
    since = V3(device).ok({})["next"]
    device.logout()
    again = server.login(first, device_id="PHONE")
    assert V3(again).error({}, since=since).json() == UNKNOWN_SESSION_BODY
    assert V3(first).ok({}, since=keep)["next"] == keep


def test_deleting_a_device_deletes_its_sessions(server: Server) -> None:
    first = server.user()
    device = server.login(first, device_id="TABLET")
    since = V3(device).ok({"to_device": {}})["next"]
    first.delete_device("TABLET")
    again = server.login(first, device_id="TABLET")
    assert V3(again).error({}, since=since).json() == UNKNOWN_SESSION_BODY
    rows = server.query(
        f"SELECT COUNT(*) FROM syncv3_sessions WHERE user_id = '{first.user_id}'"
        " AND device_id = 'TABLET'"
    )
    assert rows[0][0] == 0


def test_tokens_survive_a_restart(own_server: Callable[..., Server]) -> None:  # item 27
    server = own_server()
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    first = v3.ok({"typing": {"room_id": room}, "to_device": {"limit": 7}})
    assert first["typing"] == {"user_ids": []}
    since = first["next"]
    server.restart()
    # Params and positions are intact: nothing new, so a timeout reply with the same
    # token; then a message arrives with the stored limit.
    assert v3.ok({}, since=since, timeout=500) == {"next": since}
    user.send_to_device("m.test", {user.user_id: {user.device_id: {"after": "restart"}}})
    body = v3.ok({}, since=since)
    assert body["to_device"]["limit"] == 7
    assert [e["content"] for e in body["to_device"]["events"]] == [{"after": "restart"}]
    assert "typing" not in body


def test_timeout_reply_token_is_byte_identical(server: Server) -> None:  # items 28, 29
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    since = v3.ok({"typing": {"room_ids": [room]}, "to_device": {}})["next"]
    body = v3.ok({}, since=since, timeout=1000)
    assert body == {"next": since}
    # Every token seen by V3 is checked against the alphabet of SPEC §4.4.


def test_old_params_versions_stay_usable(server: Server) -> None:
    """Replaying an older since of the same session works (at-least-once delivery),
    as long as its params version is among the 20 kept (SPEC §5.6)."""
    v3 = V3(server.user())
    tokens = [v3.ok({"to_device": {"limit": 1}})["next"]]
    for limit in range(2, 25):
        tokens.append(v3.ok({"to_device": {"limit": limit}}, since=tokens[-1])["next"])
    versions = [int(token.split(".")[1]) for token in tokens]
    assert versions == list(range(1, 25))
    for token in tokens[-20:]:
        assert v3.post({}, since=token).status == 200
    for token in tokens[:4]:
        assert v3.error({}, since=token).json() == UNKNOWN_SESSION_BODY


def test_positions_ahead_of_the_server_are_not_an_error(server: Server) -> None:
    """SPEC §4.4 property 7: positions ahead of anything issued are clamped, and a
    timeout reply still hands the token back unchanged (§6.3)."""
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    codec = token_codec()
    real = v3.ok({"typing": {"room_id": room}, "to_device": {}})["next"]
    decoded = codec.decode(real)
    forged = codec.encode(
        SinceToken(
            decoded.session_id, decoded.version, {"typing": "999999999", "to_device": "99999999"}
        )
    )
    body, elapsed = timed(lambda: v3.ok({}, since=forged, timeout=500))
    assert body == {"next": forged}
    assert elapsed < 5
    user.send_to_device("m.test", {user.user_id: {user.device_id: {"n": 1}}})
    events = v3.ok({}, since=real)["to_device"]["events"]
    assert [event["content"] for event in events] == [{"n": 1}]


def test_only_requested_streams_have_positions(server: Server) -> None:
    """SPEC §4.4 property 3 and §4.5: a stream that is not requested has no position
    and never advances; requested later, it starts with a first delivery."""
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    codec = token_codec()
    first = v3.ok({"typing": {"room_id": room}})
    assert set(codec.decode(first["next"]).positions) == {"typing"}
    user.send_to_device("m.test", {user.user_id: {user.device_id: {"n": 1}}})
    later = v3.ok({}, since=first["next"])
    assert set(codec.decode(later["next"]).positions) == {"typing"}
    with_to_device = v3.ok({"to_device": {}}, since=later["next"])
    assert [e["content"] for e in with_to_device["to_device"]["events"]] == [{"n": 1}]
    assert set(codec.decode(with_to_device["next"]).positions) == {"typing", "to_device"}
    stopped = v3.ok({"typing": None}, since=with_to_device["next"])
    assert set(codec.decode(stopped["next"]).positions) == {"to_device"}
