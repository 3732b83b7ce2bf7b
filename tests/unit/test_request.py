"""Query-string and body validation (SPEC §3.2–3.4), without Synapse."""

import json

import pytest

from synapse_syncv3.core.request import parse_body, parse_query, query_args
from synapse_syncv3.core.tokens import SinceToken
from synapse_syncv3.errors import SyncV3Error
from synapse_syncv3.streams import build_streams, token_codec
from synapse_syncv3.streams.base import ParsedStreamParams

#: The stream parsers by name (the registry builds a stream set per module instance).
BY_NAME = build_streams().by_name
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


# --- Hostile input: the query string --------------------------------------------


def test_query_args_decode_nothing_to_text() -> None:
    """Percent-encoded non-ASCII and raw bytes neither raise nor leak other params."""
    assert query_args(b"/sync?since=%E2%98%83") == {b"since": ["☃".encode()]}
    assert query_args(b"/sync?timeout=%FF&x=%C3%A9") == {b"timeout": [b"\xff"]}
    assert query_args(b"/sync?\xff\xfe=\x80&timeout=5") == {b"timeout": [b"5"]}
    assert query_args(b"/sync?timeout=1&timeout=2&since") == {
        b"timeout": [b"1", b"2"],
        b"since": [b""],
    }
    assert query_args(b"/sync?set_presence=a+b%2Bc#frag") == {b"set_presence": [b"a b+c"]}
    assert query_args(b"/sync?%74imeout=3&access_token") == {
        b"timeout": [b"3"],
        b"access_token": [b""],
    }
    assert query_args(b"/sync") == query_args(b"/sync?") == query_args(b"/sync?&&") == {}


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        (b"/sync?since=%E2%98%83", "since"),  # valid UTF-8, not a token
        (b"/sync?since=%FF", "since"),
        (b"/sync?timeout=%FF", "timeout"),
        (b"/sync?timeout=%ED%A0%80", "timeout"),  # an encoded surrogate is not UTF-8
        (b"/sync?set_presence=%C3", "set_presence"),
        (b"/sync?timeout=5%0A", "timeout"),  # "5\n": re.match(r"^...$") let it pass
        (b"/sync?timeout=%EF%BC%95", "timeout"),  # a fullwidth digit
        (b"/sync?since=\xe2\x98\x83", "since"),  # raw bytes in the request line
    ],
)
def test_hostile_query_names_the_parameter(uri: bytes, name: str) -> None:
    with pytest.raises(SyncV3Error) as info:
        parse_query(query_args(uri), CODEC, 1000)
    assert (info.value.code, info.value.errcode) == (400, "M_INVALID_PARAM")
    assert info.value.msg.startswith(name)


def test_unrelated_undecodable_params_are_ignored() -> None:
    q = parse_query(query_args(b"/sync?x=%C3%A9&y=%FF&\xff=1&timeout=7"), CODEC, 1000)
    assert (q.since, q.timeout_ms, q.set_presence) == (None, 7, "online")


# --- Hostile input: the body ------------------------------------------------------

DOMAINLESS = "!" + "A" * 20 + "-_" + "z09" * 7  # 43 characters of URL-safe base64


@pytest.mark.parametrize(
    "room_id",
    [
        R,
        "!r:hs",
        "!:hs",
        "!r:hs:8448",
        "!r:[::1]:8448",
        "!x&since=bad&timeout=abc:localhost",
        "!élan:example.org",
        DOMAINLESS,
        "!" + "a" * 244 + ":localhost",  # 255 bytes
        # SPEC §3.4 asks only for the "!" and the 255 bytes: a client may name a room
        # of any form (this server may never have seen it).
        "!abc",
        "!",
        "!a:",
        "!a:b:c",
        "!a:exa mple.org",
        "!a:hs:99999999",
        "!a:[::1",
        f"{DOMAINLESS}=",
    ],
)
def test_valid_room_ids(room_id: str) -> None:
    body = parse_body(json.dumps({"typing": {"room_id": room_id}}).encode(), BY_NAME)
    assert body.streams == {"typing": {"room_id": room_id}}


@pytest.mark.parametrize(
    "raw_room_id",
    [
        '"!\\ud800:hs"',  # a lone surrogate: .encode() raised, a 500
        '"!a\\udfff"',
        '"!a\\u0000:hs"',  # NUL: PostgreSQL refuses it, a 500
        '"!a\\n:hs"',
        '"!a:hs\\n"',
        '"!a\\u0085:hs"',
        '"!' + "é" * 126 + ':hs"',  # 256 bytes, 130 characters
    ],
)
def test_invalid_room_ids(raw_room_id: str) -> None:
    for body in (
        f'{{"typing": {{"room_id": {raw_room_id}}}}}',
        f'{{"receipts": {{"room_ids": ["{R}", {raw_room_id}]}}}}',
        f'{{"room_data": {{"room_ids": [{raw_room_id}]}}}}',
        f'{{"room_members": {{"room_id": {raw_room_id}}}}}',
    ):
        code, errcode, msg = error_of(body.encode())
        assert (code, errcode) == (400, "M_INVALID_PARAM"), body
        assert "room_id" in msg


@pytest.mark.parametrize("stream", ["room_list", "room_data"])
@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (f'["{"t" * 256}", ""]', "type is longer than 255 bytes"),
        (f'["t", "{"é" * 128}"]', "state key is longer than 255 bytes"),
        ('["m.room.\\ud800", ""]', "type holds a lone surrogate"),
        ('["t", "\\udc00x"]', "state key holds a lone surrogate"),
        ('["t\\u0000", ""]', "type holds a NUL"),
        ('["t", "\\u0000"]', "state key holds a NUL"),
    ],
)
def test_state_events_strings_are_capped(stream: str, entry: str, problem: str) -> None:
    extra = ', "room_ids": []' if stream == "room_data" else ""
    body = f'{{"{stream}": {{"state_events": [["a", "b"], {entry}]{extra}}}}}'
    code, errcode, msg = error_of(body.encode())
    assert (code, errcode) == (400, "M_INVALID_PARAM")
    assert msg.startswith(f"{stream}.state_events[1]: the {problem}")


def test_state_events_at_the_caps_are_stored() -> None:
    pairs = [["t" * 255, "é" * 127 + "x"], ["*", "*"]]
    body = parse_body(json.dumps({"room_list": {"state_events": pairs}}).encode(), BY_NAME)
    assert body.streams == {"room_list": {"state_events": pairs}}


@pytest.mark.parametrize(
    "cursor",
    ['"\\u2603"', '"m1.\\ud800"', '"c\\u0000"', '"a\\nb"', '"' + "c" * 257 + '"'],
)
@pytest.mark.parametrize("stream", ["room_members", "room_list"])
@pytest.mark.parametrize("key", ["since", "next"])
def test_page_cursors_are_bounded_ascii(cursor: str, stream: str, key: str) -> None:
    extra = f', "room_id": "{R}"' if stream == "room_members" else ""
    body = f'{{"{stream}": {{"p": {{"{key}": {cursor}}}{extra}}}}}'
    code, errcode, msg = error_of(body.encode())
    assert (code, errcode) == (400, "M_INVALID_PARAM")
    assert msg.startswith(f"{stream}.p.{key}")


def test_huge_numbers_are_valid_json() -> None:
    """More than 4300 digits made Python's JSON decoder raise (a 400 M_NOT_JSON for a
    valid body); they are read as ±10**100 and clamped like any large limit."""
    digits = "9" * 5000
    raw = f'{{"to_device": {{"limit": {digits}}}, "x": [-{digits}, 1e400, -1e400]}}'
    body = parse_body(raw.encode(), BY_NAME)
    assert body.streams == {"to_device": {"limit": 10**100}}
    code, errcode, msg = error_of(f'{{"to_device": {{"limit": -{digits}}}}}'.encode())
    assert (code, errcode, msg) == (400, "M_INVALID_PARAM", "to_device.limit: must not be negative")
    code, errcode, _ = error_of(b'{"to_device": {"limit": 1e400}}')
    assert (code, errcode) == (400, "M_BAD_JSON")
    for digits, limit in (("9" * 100, int("9" * 100)), ("2" + "0" * 100, 10**100)):
        raw = f'{{"to_device": {{"limit": {digits}}}}}'
        assert parse_body(raw.encode(), BY_NAME).streams == {"to_device": {"limit": limit}}


def test_no_stream_can_store_what_the_database_refuses() -> None:
    """The net under every stream's own checks (a stream that forgets one)."""

    class Careless:
        def parse_params(self, obj: dict[str, object]) -> ParsedStreamParams:
            return ParsedStreamParams(stored=dict(obj))

    for raw in (b'{"typing": {"x": "\\ud800"}}', b'{"typing": {"x": ["\\u0000"]}}'):
        with pytest.raises(SyncV3Error) as info:
            parse_body(raw, {"typing": Careless()})
        assert info.value.errcode == "M_INVALID_PARAM"
        assert info.value.msg.startswith("typing: a string holds")
    with pytest.raises(SyncV3Error):
        parse_body(json.dumps({"typing": {"x": "y" * 256}}).encode(), {"typing": Careless()})
    ok = parse_body(
        json.dumps({"typing": {"x": "y" * 255, "n": 1}}).encode(), {"typing": Careless()}
    )
    assert ok.streams == {"typing": {"x": "y" * 255, "n": 1}}
