"""Query-string and body validation (SPEC §3.2–3.4), without Synapse."""

import json

import pytest

from synapse_syncv3.core.request import parse_body, parse_query
from synapse_syncv3.core.tokens import SinceToken
from synapse_syncv3.errors import SyncV3Error
from synapse_syncv3.streams import BY_NAME, token_codec

CODEC = token_codec()
TOKEN = CODEC.encode(SinceToken("abcdefghijklmnop", 2, {"typing": "3"}))
R = "!room:example.org"


def error_of(body: object) -> tuple[int, str, str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(SyncV3Error) as info:
        parse_body(raw, BY_NAME)
    return info.value.code, info.value.errcode, info.value.msg


def query(**args: str | list[str]) -> dict[bytes, list[bytes]]:
    return {
        k.encode(): [x.encode() for x in (v if isinstance(v, list) else [v])]
        for k, v in args.items()
    }


def test_query_defaults() -> None:
    q = parse_query({}, CODEC, 300_000)
    assert (q.since, q.timeout_ms, q.set_presence) == (None, 0, "online")


def test_timeout_is_clamped_and_first_value_wins() -> None:
    assert parse_query(query(timeout="60000"), CODEC, 1000).timeout_ms == 1000
    assert parse_query(query(timeout="9" * 40), CODEC, 1000).timeout_ms == 1000
    assert parse_query(query(timeout=["5", "abc"]), CODEC, 1000).timeout_ms == 5
    assert parse_query(query(timeout="0"), CODEC, 1000).timeout_ms == 0


@pytest.mark.parametrize(
    "args",
    [
        {"timeout": "abc"},
        {"timeout": "-5"},
        {"timeout": "1.5"},
        {"timeout": ""},
        {"timeout": "+5"},
        {"timeout": " 5"},
        {"set_presence": "busy"},
        {"set_presence": ""},
        {"since": ""},
        {"since": "garbage"},
        {"since": "s72594_4483_1934"},
    ],
)
def test_bad_query(args: dict[str, str]) -> None:
    with pytest.raises(SyncV3Error) as info:
        parse_query(query(**args), CODEC, 1000)
    assert (info.value.code, info.value.errcode) == (400, "M_INVALID_PARAM")


def test_non_utf8_query_is_invalid_param() -> None:
    with pytest.raises(SyncV3Error) as info:
        parse_query({b"since": [b"\xff"]}, CODEC, 1000)
    assert info.value.errcode == "M_INVALID_PARAM"


def test_query_order_timeout_first() -> None:
    with pytest.raises(SyncV3Error) as info:
        parse_query(query(timeout="x", set_presence="busy", since="bad"), CODEC, 1000)
    assert "timeout" in info.value.msg


def test_valid_since() -> None:
    assert parse_query(query(since=TOKEN), CODEC, 1000).since == CODEC.decode(TOKEN)


@pytest.mark.parametrize(
    ("body", "errcode", "mentions"),
    [
        (b"", "M_NOT_JSON", ""),
        (b"   ", "M_NOT_JSON", ""),
        (b"hello", "M_NOT_JSON", ""),
        (b"{", "M_NOT_JSON", ""),
        (b'{"typing": NaN}', "M_NOT_JSON", ""),
        (b"\xff\xfe", "M_NOT_JSON", ""),
        ([], "M_BAD_JSON", ""),
        ("x", "M_BAD_JSON", ""),
        (5, "M_BAD_JSON", ""),
        (None, "M_BAD_JSON", ""),
        ({"typing": 5}, "M_BAD_JSON", "typing"),
        ({"typing": []}, "M_BAD_JSON", "typing"),
        ({"typing": "x"}, "M_BAD_JSON", "typing"),
        ({"typing": {}}, "M_BAD_JSON", "typing"),
        ({"typing": {"room_id": R, "room_ids": [R]}}, "M_BAD_JSON", "typing"),
        ({"typing": {"room_id": "abc"}}, "M_INVALID_PARAM", "typing.room_id"),
        ({"typing": {"room_id": 5}}, "M_BAD_JSON", "typing.room_id"),
        ({"typing": {"room_id": "!" + "a" * 255}}, "M_INVALID_PARAM", "typing.room_id"),
        ({"typing": {"room_ids": R}}, "M_BAD_JSON", "typing.room_ids"),
        ({"typing": {"room_ids": [R, 5]}}, "M_BAD_JSON", "typing.room_ids"),
        (
            {"typing": {"room_ids": [f"!r{i}:x" for i in range(101)]}},
            "M_INVALID_PARAM",
            "typing.room_ids",
        ),
        ({"to_device": {"limit": "10"}}, "M_BAD_JSON", "to_device.limit"),
        ({"to_device": {"limit": 10.5}}, "M_BAD_JSON", "to_device.limit"),
        ({"to_device": {"limit": 10.0}}, "M_BAD_JSON", "to_device.limit"),
        ({"to_device": {"limit": True}}, "M_BAD_JSON", "to_device.limit"),
        ({"to_device": {"limit": None}}, "M_BAD_JSON", "to_device.limit"),
        ({"to_device": {"limit": -1}}, "M_INVALID_PARAM", "to_device.limit"),
        ({"room_members": {"sort": "by_pl"}}, "M_BAD_JSON", "room_members.room_id"),
        (
            {"room_members": {"room_id": R, "sort": "by_age"}},
            "M_INVALID_PARAM",
            "room_members.sort",
        ),
        ({"room_members": {"room_id": R, "sort": 1}}, "M_BAD_JSON", "room_members.sort"),
        (
            {"room_members": {"room_id": R}, "room_member": {"room_id": R}},
            "M_BAD_JSON",
            "room_member",
        ),
        ({"room_members": {"room_id": R, "p": []}}, "M_BAD_JSON", "room_members.p"),
        ({"room_members": {"room_id": R, "p": {"since": 5}}}, "M_BAD_JSON", "room_members.p.since"),
        (
            {"room_members": {"room_id": R, "p": {"next": None}}},
            "M_BAD_JSON",
            "room_members.p.next",
        ),
        (
            {"room_members": {"room_id": R, "p": {"since": "a", "next": "b"}}},
            "M_INVALID_PARAM",
            "room_members.p",
        ),
        ({"room_member": {"room_id": R, "limit": -3}}, "M_INVALID_PARAM", "room_members.limit"),
        ({"room_list": {"sort": "by_name"}}, "M_BAD_JSON", "room_list.sort"),
        ({"room_list": {"sort": ["by_size"]}}, "M_INVALID_PARAM", "room_list.sort"),
        ({"room_list": {"sort": [1]}}, "M_BAD_JSON", "room_list.sort"),
        ({"room_list": {"sort": ["by_name"] * 5}}, "M_INVALID_PARAM", "room_list.sort"),
        ({"room_list": {"timeline_limit": -1}}, "M_INVALID_PARAM", "room_list.timeline_limit"),
        (
            {"room_list": {"state_events": [["m.room.name"]]}},
            "M_BAD_JSON",
            "room_list.state_events",
        ),
        ({"room_list": {"state_events": [["", ""]]}}, "M_BAD_JSON", "room_list.state_events"),
        ({"room_list": {"state_events": [["a", 1]]}}, "M_BAD_JSON", "room_list.state_events"),
        ({"room_list": {"state_events": "all"}}, "M_BAD_JSON", "room_list.state_events"),
        (
            {"room_list": {"state_events": [["t", ""]] * 101}},
            "M_INVALID_PARAM",
            "room_list.state_events",
        ),
        (
            {"room_list": {"p": {"next": "a", "since": "a"}, "limit": "x"}},
            "M_BAD_JSON",
            "room_list.limit",
        ),
        ({"room_data": {}}, "M_BAD_JSON", "room_data.room_ids"),
        ({"room_data": {"room_ids": "rooms"}}, "M_INVALID_PARAM", "room_data.room_ids"),
        ({"room_data": {"room_ids": 5}}, "M_BAD_JSON", "room_data.room_ids"),
        (
            {"room_data": {"room_ids": [f"!r{i}:x" for i in range(101)]}},
            "M_INVALID_PARAM",
            "room_data.room_ids",
        ),
        (
            {"room_data": {"room_ids": [R], "lazy_load_members": "yes"}},
            "M_BAD_JSON",
            "room_data.lazy_load_members",
        ),
        ({"room_data": {"room_ids": [R], "full_state": 1}}, "M_BAD_JSON", "room_data.full_state"),
        (
            {"room_data": {"room_ids": [R], "timeline_limit": 1.5}},
            "M_BAD_JSON",
            "room_data.timeline_limit",
        ),
        ({"receipts": {"room_ids": ["bad"]}}, "M_INVALID_PARAM", "receipts.room_ids"),
        ({"account_data": 0}, "M_BAD_JSON", "account_data"),
        ({"presence": True}, "M_BAD_JSON", "presence"),
        ({"e2ee": "on"}, "M_BAD_JSON", "e2ee"),
    ],
)
def test_bad_body(body: object, errcode: str, mentions: str) -> None:
    code, got, msg = error_of(body)
    assert (code, got) == (400, errcode)
    assert mentions in msg


def test_deeply_nested_body_is_a_client_error() -> None:
    code, errcode, _ = error_of(b"[" * 100_000 + b"]" * 100_000)
    assert code == 400 and errcode in ("M_BAD_JSON", "M_NOT_JSON")


def test_valid_body() -> None:
    body = parse_body(
        json.dumps(
            {
                "typing": {"room_ids": [R, R, "!b:x"]},
                "to_device": {"limit": 0},
                "room_member": {"room_id": R, "p": {"since": "c", "next": "c"}},
                "room_list": {"sort": ["by_name", "by_name"], "timeline_limit": 0},
                "room_data": {"room_ids": "room_list", "full_state": False},
                "receipts": None,
                "account_data": {"x": 1},
                "other": [1, 2],
            }
        ).encode(),
        BY_NAME,
    )
    assert body.streams == {
        "typing": {"room_ids": [R, "!b:x"]},
        "to_device": {"limit": 0},
        "room_member": {"room_id": R},
        "room_list": {"sort": ["by_name"], "timeline_limit": 0},
        "room_data": {"room_ids": "room_list"},
        "receipts": None,
        "account_data": {},
    }
    assert body.per_request == {"room_members": {"p": {"cursor": "c"}}}
    assert body.non_null_streams() == {
        "typing",
        "to_device",
        "room_members",
        "room_list",
        "room_data",
        "account_data",
    }
