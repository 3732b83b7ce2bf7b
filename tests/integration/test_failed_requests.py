"""A request that fails changes nothing (SPEC §3.1, §3.6, §8).

A 400 found at any stage (parsing, or a stream's own check once the session is known)
and a 500 raised while the streams compute must leave the session's params version,
its to_device confirmation, the device inbox and the positions of ``since`` exactly as
they were. The 500s are injected: the server runs with ``SYNCV3_FAULT_INJECTION=1``,
and the header ``X-Syncv3-Inject-Fault: <stream>`` makes that stream's first
computation raise.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness import MatrixUser
from tests.integration.helpers import V3, V3_PATH, Server

#: The fault server: fault injection on, at most two sessions per device.
FAULT_ENV = {"SYNCV3_FAULT_INJECTION": "1"}
FAULT_CONFIG = {"max_sessions_per_device": 2}

STREAMS = (
    "typing",
    "to_device",
    "room_members",
    "room_list",
    "room_data",
    "receipts",
    "account_data",
    "presence",
    "e2ee",
)


@pytest.fixture
def server(server_with: Any) -> Server:
    server: Server = server_with(FAULT_CONFIG, env=FAULT_ENV)
    # What the injected faults make Synapse log (an ERROR line and a traceback); the
    # tests check the status of every request they send.
    for expected in (
        "Failed handle request via 'SyncV3ClientServlet'",
        "InjectedFault",
        "fault injected",
        "Traceback (most recent call last)",
    ):
        if expected not in server.expected_log_problems:
            server.expected_log_problems.append(expected)
    return server


def stored_params(stream: str, room_id: str) -> dict[str, Any]:
    """Valid params of ``stream`` for a first request."""
    return {
        "typing": {"room_id": room_id},
        "to_device": {"limit": 2},
        "room_members": {"room_id": room_id},
        "room_list": {"limit": 5},
        "room_data": {"room_ids": [room_id]},
        "receipts": {"room_ids": [room_id]},
    }.get(stream, {})


def changed_params(stream: str, room_id: str) -> dict[str, Any]:
    """Valid params of ``stream`` that differ from :func:`stored_params` (a failed
    request must not store them)."""
    return {
        "typing": {"room_ids": [room_id]},
        "to_device": {"limit": 3},
        "room_members": {"room_id": room_id, "limit": 7},
        "room_list": {"limit": 6},
        "room_data": {"room_ids": [room_id], "timeline_limit": 3},
        "receipts": {},
    }.get(stream, {})


def invalid_params(stream: str, room_id: str) -> object:
    """A value of ``stream`` that gets a 400."""
    return {
        "typing": {"room_id": "abc"},
        "to_device": {"limit": -1},
        # Valid syntax; refused by the stream's own check once the session is known.
        "room_members": {"room_id": room_id, "p": {"since": "garbage"}},
        "room_list": {"sort": ["by_age"]},
        "room_data": {"room_ids": "x"},
        "receipts": {"room_ids": [5]},
    }.get(stream, 5)


def session_row(server: Server, token: str) -> tuple[Any, ...]:
    session_id = token[3:].split(".")[0]
    rows = server.query(
        "SELECT params_version, wants_to_device, to_device_confirmed, delivery_counter"
        f" FROM syncv3_sessions WHERE session_id = '{session_id}'"
    )
    assert len(rows) == 1
    return rows[0]


def inbox(server: Server, user: MatrixUser) -> int:
    rows = server.query(
        f"SELECT COUNT(*) FROM device_inbox WHERE user_id = '{user.user_id}'"
        f" AND device_id = '{user.device_id}'"
    )
    return int(rows[0][0])


def sessions_of(server: Server, user: MatrixUser) -> int:
    rows = server.query(
        f"SELECT COUNT(*) FROM syncv3_sessions WHERE user_id = '{user.user_id}'"
        f" AND device_id = '{user.device_id}'"
    )
    return int(rows[0][0])


def send(sender: MatrixUser, to: MatrixUser, count: int) -> None:
    for n in range(count):
        sender.send_to_device("m.test", {to.user_id: {to.device_id: {"n": n}}})


def contents(body: dict[str, Any]) -> list[Any]:
    return [event["content"]["n"] for event in body["to_device"]["events"]]


def post_with_fault(
    user: MatrixUser, body: dict[str, Any], fault: str, since: str | None = None
) -> Any:
    query = {} if since is None else {"since": since}
    response = user.client.request(
        "POST", V3_PATH, json_body=body, query=query, headers={"X-Syncv3-Inject-Fault": fault}
    )
    assert response.status == 500, response
    assert response.json()["errcode"] == "M_UNKNOWN"
    return response


@pytest.mark.parametrize("stream", STREAMS)
def test_a_failed_request_changes_nothing(server: Server, stream: str) -> None:
    (alice, bob), room = server.room_with(2)
    send(bob, alice, 5)
    v3 = V3(alice)
    body = {"to_device": {"limit": 2}, stream: stored_params(stream, room)}
    first = v3.ok(body)
    token = first["next"]
    assert contents(first) == [0, 1]
    before = (session_row(server, token), inbox(server, alice))

    # An injected 500 while the streams compute, in a request that would store new
    # params, confirm messages 0-1 and delete them.
    changed = {"to_device": {"limit": 3}, stream: changed_params(stream, room)}
    if stream == "to_device":
        changed = {"to_device": {"limit": 3}}
    post_with_fault(alice, changed, stream, since=token)
    assert (session_row(server, token), inbox(server, alice)) == before

    # A 400 for the stream, in the same kind of request.
    invalid = {"to_device": {"limit": 3}, stream: invalid_params(stream, room)}
    if stream == "to_device":
        invalid = {"to_device": invalid_params(stream, room)}
    v3.error(invalid, since=token)
    assert (session_row(server, token), inbox(server, alice)) == before

    # The token still names the old params and positions.
    again = v3.ok({}, since=token)
    assert again["to_device"]["limit"] == 2
    assert contents(again) == [2, 3]
    assert again["next"] != token


def test_two_sessions_lose_nothing_when_a_request_fails(server: Server) -> None:
    """The case of the issue: S1 received and confirmed five messages, S2 none. S2's
    request that stops to_device fails (injected fault, or a NUL room ID that the
    database would refuse): S2, retrying with its old since, still gets all five."""
    (alice, bob), room = server.room_with(2)
    s1, s2 = V3(alice), V3(alice)
    t1 = s1.ok({"to_device": {}})["next"]
    t2 = s2.ok({"to_device": {}})["next"]
    send(bob, alice, 5)
    got = s1.ok({}, since=t1)
    assert contents(got) == [0, 1, 2, 3, 4]
    s1.ok({}, since=got["next"])  # S1 confirms all five; S2 holds them
    assert inbox(server, alice) == 5

    stop = {"to_device": None, "room_members": {"room_id": room}}
    post_with_fault(alice, stop, "room_members", since=t2)
    assert inbox(server, alice) == 5
    nul = s2.error({"to_device": None, "room_members": {"room_id": "!\u0000:localhost"}}, since=t2)
    assert nul.errcode == "M_INVALID_PARAM"
    assert inbox(server, alice) == 5

    assert contents(s2.ok({}, since=t2)) == [0, 1, 2, 3, 4]


def test_a_failed_first_request_leaves_no_session(server: Server) -> None:
    """A new session whose first computation fails is not created, and it evicts no
    other session of the device (max_sessions_per_device is 2 here)."""
    (alice,), room = server.room_with(1)
    v3 = V3(alice)
    a, b = v3.ok({})["next"], v3.ok({})["next"]
    assert sessions_of(server, alice) == 2
    post_with_fault(alice, {"typing": {"room_id": room}, "to_device": {}}, "typing")
    assert sessions_of(server, alice) == 2
    v3.ok({}, since=a)
    v3.ok({}, since=b)


def test_a_failed_restart_of_to_device_is_undone(server: Server) -> None:
    """A session that (re)starts to_device is counted as having confirmed nothing
    before it computes, so that no deletion passes what it is handed; if the request
    fails, the session is as it was: not counting, and not holding back deletion."""
    (alice, bob), _ = server.room_with(2)
    s1, s2 = V3(alice), V3(alice)
    t1 = s1.ok({"to_device": {}})["next"]
    t2 = s2.ok({"typing": {"room_ids": []}})["next"]
    send(bob, alice, 3)
    before = session_row(server, t2)
    post_with_fault(alice, {"to_device": {}}, "to_device", since=t2)
    assert session_row(server, t2) == before
    # S1 alone counts: confirming deletes everything.
    got = s1.ok({}, since=t1)
    s1.ok({}, since=got["next"])
    assert inbox(server, alice) == 0
