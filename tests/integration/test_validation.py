"""Request validation over HTTP (SPEC §2, §3; §14 items 10–20).

The table holds malformed requests of every kind (bodies, field types, tokens,
timeouts, headers): each gets a 4xx with the right errcode, never a 5xx, and none of
them changes the session.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from harness.client import Response
from tests.integration.helpers import UNKNOWN_SESSION_BODY, V3, V3_PATH, Server

R = "!room:localhost"
MANY_ROOMS = [f"!r{i}:localhost" for i in range(101)]

# (id, query, body, errcode, text the error mentions)
BODY_CASES: list[tuple[str, dict[str, str], Any, str, str]] = [
    ("empty body", {}, b"", "M_NOT_JSON", ""),
    ("not json", {}, b"hello", "M_NOT_JSON", ""),
    ("truncated json", {}, b'{"typing":', "M_NOT_JSON", ""),
    ("NaN", {}, b'{"to_device": {"limit": NaN}}', "M_NOT_JSON", ""),
    ("not utf-8", {}, b'{"a": "\xff"}', "M_NOT_JSON", ""),
    ("array body", {}, [], "M_BAD_JSON", ""),
    ("string body", {}, "sync", "M_BAD_JSON", ""),
    ("number body", {}, 7, "M_BAD_JSON", ""),
    ("null body", {}, None, "M_BAD_JSON", ""),
    ("typing number", {}, {"typing": 5}, "M_BAD_JSON", "typing"),
    ("typing list", {}, {"typing": []}, "M_BAD_JSON", "typing"),
    ("typing empty", {}, {"typing": {}}, "M_BAD_JSON", "typing"),
    ("typing both", {}, {"typing": {"room_id": R, "room_ids": [R]}}, "M_BAD_JSON", "typing"),
    ("typing bad room", {}, {"typing": {"room_id": "abc"}}, "M_INVALID_PARAM", "typing.room_id"),
    ("typing long room", {}, {"typing": {"room_id": "!" + "x" * 300}}, "M_INVALID_PARAM", "typing"),
    ("typing room int", {}, {"typing": {"room_id": 1}}, "M_BAD_JSON", "typing.room_id"),
    ("typing rooms str", {}, {"typing": {"room_ids": R}}, "M_BAD_JSON", "typing.room_ids"),
    ("typing 101 rooms", {}, {"typing": {"room_ids": MANY_ROOMS}}, "M_INVALID_PARAM", "typing"),
    ("limit string", {}, {"to_device": {"limit": "10"}}, "M_BAD_JSON", "to_device.limit"),
    ("limit float", {}, {"to_device": {"limit": 10.5}}, "M_BAD_JSON", "to_device.limit"),
    ("limit 10.0", {}, {"to_device": {"limit": 10.0}}, "M_BAD_JSON", "to_device.limit"),
    ("limit bool", {}, {"to_device": {"limit": False}}, "M_BAD_JSON", "to_device.limit"),
    ("limit negative", {}, {"to_device": {"limit": -1}}, "M_INVALID_PARAM", "to_device.limit"),
    ("to_device string", {}, {"to_device": "all"}, "M_BAD_JSON", "to_device"),
    ("members no room", {}, {"room_members": {"sort": "by_pl"}}, "M_BAD_JSON", "room_id"),
    (
        "members bad sort",
        {},
        {"room_members": {"room_id": R, "sort": "by_age"}},
        "M_INVALID_PARAM",
        "sort",
    ),
    (
        "both spellings",
        {},
        {"room_member": {"room_id": R}, "room_members": {"room_id": R}},
        "M_BAD_JSON",
        "",
    ),
    ("p not object", {}, {"room_members": {"room_id": R, "p": "next"}}, "M_BAD_JSON", "p"),
    ("p cursor int", {}, {"room_list": {"p": {"next": 3}}}, "M_BAD_JSON", "p.next"),
    ("p differ", {}, {"room_list": {"p": {"next": "a", "since": "b"}}}, "M_INVALID_PARAM", "p"),
    ("list sort str", {}, {"room_list": {"sort": "by_name"}}, "M_BAD_JSON", "room_list.sort"),
    ("list sort unknown", {}, {"room_list": {"sort": ["by_size"]}}, "M_INVALID_PARAM", "sort"),
    (
        "state_events pair",
        {},
        {"room_list": {"state_events": [["m.room.name"]]}},
        "M_BAD_JSON",
        "state_events",
    ),
    (
        "state_events 101",
        {},
        {"room_list": {"state_events": [["t", ""]] * 101}},
        "M_INVALID_PARAM",
        "state_events",
    ),
    (
        "timeline negative",
        {},
        {"room_list": {"timeline_limit": -2}},
        "M_INVALID_PARAM",
        "timeline_limit",
    ),
    ("data no rooms", {}, {"room_data": {"timeline_limit": 1}}, "M_BAD_JSON", "room_ids"),
    ("data 101 rooms", {}, {"room_data": {"room_ids": MANY_ROOMS}}, "M_INVALID_PARAM", "room_ids"),
    ("data rooms word", {}, {"room_data": {"room_ids": "all"}}, "M_INVALID_PARAM", "room_ids"),
    (
        "data lazy str",
        {},
        {"room_data": {"room_ids": [R], "lazy_load_members": "y"}},
        "M_BAD_JSON",
        "lazy",
    ),
    ("receipts bad room", {}, {"receipts": {"room_ids": ["x"]}}, "M_INVALID_PARAM", "receipts"),
    ("presence list", {}, {"presence": []}, "M_BAD_JSON", "presence"),
    ("e2ee true", {}, {"e2ee": True}, "M_BAD_JSON", "e2ee"),
    ("timeout abc", {"timeout": "abc"}, {}, "M_INVALID_PARAM", "timeout"),
    ("timeout negative", {"timeout": "-5"}, {}, "M_INVALID_PARAM", "timeout"),
    ("timeout float", {"timeout": "1.5"}, {}, "M_INVALID_PARAM", "timeout"),
    ("timeout empty", {"timeout": ""}, {}, "M_INVALID_PARAM", "timeout"),
    ("set_presence busy", {"set_presence": "busy"}, {}, "M_INVALID_PARAM", "set_presence"),
    ("since garbage", {"since": "garbage"}, {}, "M_INVALID_PARAM", "since"),
    ("since empty", {"since": ""}, {}, "M_INVALID_PARAM", "since"),
    ("since v2", {"since": "s72594_4483_1934"}, {}, "M_INVALID_PARAM", "since"),
    ("since bad sid", {"since": "V3_x.1."}, {}, "M_INVALID_PARAM", "since"),
    ("since bad pos", {"since": "V3_abcdefghijklmnop.1.dD14"}, {}, "M_INVALID_PARAM", "since"),
    ("since unknown", {"since": "V3_abcdefghijklmnop.1."}, {}, "M_UNKNOWN_SYNC_SESSION", ""),
    ("query before body", {"timeout": "x"}, b"not json", "M_INVALID_PARAM", "timeout"),
    # Hostile strings: each of these reached .encode() or the database, a 500.
    (
        "room id surrogate",
        {},
        b'{"typing": {"room_id": "!\\ud800:localhost"}}',
        "M_INVALID_PARAM",
        "typing.room_id",
    ),
    (
        "room id NUL",
        {},
        b'{"room_members": {"room_id": "!a\\u0000:localhost"}}',
        "M_INVALID_PARAM",
        "room_members.room_id",
    ),
    (
        "room ids surrogate",
        {},
        b'{"receipts": {"room_ids": ["!a:localhost", "!\\udfff:localhost"]}}',
        "M_INVALID_PARAM",
        "receipts.room_ids[1]",
    ),
    (
        "state type 256 bytes",
        {},
        {"room_list": {"state_events": [["t" * 256, ""]]}},
        "M_INVALID_PARAM",
        "room_list.state_events[0]",
    ),
    (
        "state key NUL",
        {},
        b'{"room_data": {"room_ids": [], "state_events": [["t", "\\u0000"]]}}',
        "M_INVALID_PARAM",
        "room_data.state_events[0]",
    ),
    (
        "state key surrogate",
        {},
        b'{"room_list": {"state_events": [["m.room.name", ""], ["t", "\\ud800"]]}}',
        "M_INVALID_PARAM",
        "room_list.state_events[1]",
    ),
    (
        "cursor not ascii",
        {},
        {"room_members": {"room_id": R, "p": {"since": "\u2603"}}},
        "M_INVALID_PARAM",
        "room_members.p.since",
    ),
    (
        "cursor too long",
        {},
        {"room_list": {"p": {"next": "c" * 5000}}},
        "M_INVALID_PARAM",
        "room_list.p.next",
    ),
]

# (id, raw query string, errcode, text the error starts with): percent-encoded bytes
# that are not UTF-8, or not what they look like; each of these was a 500 (Python
# before 3.13 raised in parse_qs) or passed as valid ("5\n").
RAW_QUERY_CASES: list[tuple[str, str, str]] = [
    ("since snowman", "since=%E2%98%83", "since"),
    ("since not utf-8", "since=%FF", "since"),
    ("timeout not utf-8", "timeout=%FF", "timeout"),
    ("timeout newline", "timeout=5%0A", "timeout"),
    ("timeout fullwidth digit", "timeout=%EF%BC%95", "timeout"),
    ("set_presence not utf-8", "set_presence=%C3", "set_presence"),
    ("since newline", "since=%0A", "since"),
]


def _raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.mark.parametrize(
    ("query", "body", "errcode", "mentions"),
    [case[1:] for case in BODY_CASES],
    ids=[case[0] for case in BODY_CASES],
)
def test_malformed_request(
    server: Server, query: dict[str, str], body: Any, errcode: str, mentions: str
) -> None:
    user = server.user()
    response = user.client.request("POST", V3_PATH, raw_body=_raw(body), query=query)
    assert response.status == 400, response.body
    assert response.errcode == errcode, response.body
    assert mentions in response.json()["error"]


@pytest.mark.parametrize(
    ("raw_query", "mentions"),
    [case[1:] for case in RAW_QUERY_CASES],
    ids=[case[0] for case in RAW_QUERY_CASES],
)
def test_hostile_query_string(server: Server, raw_query: str, mentions: str) -> None:
    user = server.user()
    response = user.client.request("POST", V3_PATH, raw_body=b"{}", raw_query=raw_query)
    assert response.status == 400, response.body
    assert response.errcode == "M_INVALID_PARAM", response.body
    assert response.json()["error"].startswith(mentions)


def test_other_query_parameters_are_ignored_whatever_they_hold(server: Server) -> None:
    user = server.user()
    raw_query = "x=%C3%A9&y=%FF&%FF=1&timeout=0&timeout=%FF&since_=%ED%A0%80"
    response = user.client.request("POST", V3_PATH, raw_body=b"{}", raw_query=raw_query)
    assert response.status == 200, response.body
    assert set(response.json()) == {"next"}


def test_huge_numbers_and_new_room_ids_are_valid(server: Server) -> None:
    """A 5,000-digit limit is valid JSON (read as 10**100, then clamped); a room ID of a
    newer room version has no server part (43 characters of base64)."""
    v3 = V3(server.user())
    body = b'{"to_device": {"limit": ' + b"9" * 5000 + b"}}"
    assert v3.ok(body)["to_device"] == {"limit": 1000, "events": []}
    domainless = "!" + "A" * 43
    assert v3.ok({"typing": {"room_id": domainless}})["typing"] == {}
    # Any "!" room ID of at most 255 bytes is valid (SPEC §3.4), known here or not.
    assert v3.ok({"typing": {"room_id": "!abc"}})["typing"] == {}


def _raw_request(server: Server, headers: list[tuple[str, bytes]], body: bytes = b"{}") -> Response:
    """A request with exactly these headers (http.client lets us repeat them)."""
    url = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        conn.putrequest("POST", V3_PATH)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        reply = conn.getresponse()
        return Response(status=reply.status, body=reply.read(), headers={}, elapsed=0.0)
    finally:
        conn.close()


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", b"Basic dXNlcjpwdw==")],
        [("Authorization", b"Bearer")],
        [("Authorization", b"Bearer ")],
        [("Authorization", b"bearer TOKEN")],
        [("Authorization", b"Bearer a b")],
        [("Authorization", b"Bearer \xff\xfe")],
        [("Authorization", b"TOKEN")],
        [("Authorization", b"Bearer x"), ("Authorization", b"Bearer y")],
    ],
    ids=[
        "basic",
        "no token",
        "empty token",
        "lowercase",
        "two words",
        "non-ascii",
        "bare",
        "twice",
    ],
)
def test_malformed_authorization_header(server: Server, headers: list[tuple[str, bytes]]) -> None:
    response = _raw_request(server, headers)
    assert response.status == 401, response.body
    assert response.errcode == "M_MISSING_TOKEN"


def test_duplicate_room_ids_are_not_an_error(server: Server) -> None:
    user = server.user()
    room = user.create_room()
    body = V3(user).ok({"typing": {"room_ids": [room, room]}})
    assert body["typing"] == {"rooms": {room: {"user_ids": []}}}


def test_unknown_keys_are_neither_stored_nor_a_change(server: Server) -> None:  # item 15
    v3 = V3(server.user())
    since = v3.ok({"to_device": {}})["next"]
    body = v3.ok({"foo": 1}, since=since, timeout=1000)
    assert body == {"next": since}


def test_error_changes_nothing_and_the_session_goes_on(server: Server) -> None:  # item 20
    user = server.user()
    v3 = V3(user)
    since = v3.ok({"to_device": {"limit": 5}})["next"]
    for bad in ({"to_device": {"limit": -1}}, {"typing": {}}, [1]):
        assert v3.error(bad, since=since).status == 400
    assert v3.error({}, since=since, timeout="soon").errcode == "M_INVALID_PARAM"
    user.send_to_device("m.test", {user.user_id: {user.device_id: {"n": 1}}})
    body = v3.ok({}, since=since)
    assert body["to_device"]["limit"] == 5  # the stored params still apply
    assert [e["content"] for e in body["to_device"]["events"]] == [{"n": 1}]


def test_other_users_token_is_an_unknown_session(server: Server) -> None:  # item 22
    alice, bob = server.user(), server.user()
    since = V3(alice).ok({})["next"]
    response = V3(bob).error({}, since=since)
    assert response.status == 400
    assert response.json() == UNKNOWN_SESSION_BODY


def test_form_encoded_content_type_is_not_parsed(server: Server) -> None:
    """curl -d sends application/x-www-form-urlencoded; the body stays JSON and
    cannot pose as query parameters (SPEC §3.3: Content-Type is not checked)."""
    user = server.user()
    room = user.create_room()
    v3 = V3(user)
    since = v3.ok({"to_device": {}})["next"]
    body = json.dumps({"typing": {"room_ids": [room, "!x&since=bad&timeout=abc:localhost"]}})
    response = user.client.request(
        "POST",
        V3_PATH,
        raw_body=body.encode(),
        query={"since": since},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 200, response.body
    assert response.json()["typing"] == {"rooms": {room: {"user_ids": []}}}
