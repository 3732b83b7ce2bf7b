"""Property-based tests of the pure parsers against hostile input (hypothesis).

Whatever a client sends, the query parser, the body parser, every stream's
``parse_params``, the since-token codec and the member-list cursors either accept it
or refuse it with a typed error: a :class:`SyncV3Error` with a 4xx status and an
errcode (the codec: :class:`MalformedTokenError`; cursors: None). Nothing else may
escape, because anything else is a 500 (SPEC §3.6: bad input never produces a 5xx).
What is accepted for storage must be storable: JSON-serialisable, valid UTF-8, no
NUL, and no string longer than 255 bytes.

Kept fast for the default suite (a few seconds in all); the long run against a real
server is bench/fuzz.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synapse_syncv3.core.fields import MAX_CURSOR_LENGTH, MAX_STORED_STRING_BYTES
from synapse_syncv3.core.members import Cursor
from synapse_syncv3.core.params import canonical_json
from synapse_syncv3.core.request import PRESENCE_STATES, parse_body, parse_query, query_args
from synapse_syncv3.core.tokens import MalformedTokenError, SinceToken
from synapse_syncv3.errors import SyncV3Error
from synapse_syncv3.streams import build_streams, token_codec

#: The stream parsers by name (the registry builds a stream set per module instance).
STREAMS = build_streams().by_name
CODEC = token_codec()
MAX_TIMEOUT = 30_000
ERRCODES = {"M_BAD_JSON", "M_NOT_JSON", "M_INVALID_PARAM"}


def fast(examples: int) -> Any:
    """Few examples and no deadline: the whole file runs in a few seconds."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,  # no .hypothesis/ directory in the working tree
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# --- Strategies ------------------------------------------------------------------

#: Characters that broke or could break something: NUL and other controls, lone
#: surrogates (from JSON's \ud800 escapes), and multi-byte characters.
NASTY = ["\x00", "\n", "\x7f", "\x85", "\ud800", "\udfff", "é", "\U0001f600"]
#: Separators of our formats and ordinary text.
BENIGN = ["!", ":", "%", "&", "=", ".", "~", "_", "[", "]", "a", "Z", "0", "m.room.name", "hs"]
SPECIAL = NASTY + BENIGN

#: Half of it NASTY: plain random text rarely holds what breaks things.
special_text = st.lists(st.one_of(st.sampled_from(NASTY), st.sampled_from(BENIGN)), max_size=8).map(
    "".join
)
#: Around the 255-byte caps, in 1-, 2- and 4-byte characters (and NUL).
long_text = st.builds(
    lambda c, n: c * n,
    st.sampled_from(["a", "é", "\U0001f600", "\x00"]),
    st.sampled_from([63, 64, 127, 128, 255, 256, 300]),
)
short_text = st.text("abc.!:_", max_size=4)
#: Always holds a NASTY character, or is long.
nasty_text = st.one_of(
    st.builds(lambda a, n, b: a + n + b, short_text, st.sampled_from(NASTY), short_text),
    long_text,
)
hostile_text = st.one_of(
    nasty_text,
    special_text,
    st.text(max_size=12),
    st.text(st.characters(exclude_categories=()), max_size=12),  # surrogates included
)

SERVERS = ["hs", "example.org:8448", "[::1]", "[::1]:80", "bad host", "", "a:b:c", "hs\n"]
room_ids = st.one_of(
    st.builds(lambda local, server: f"!{local}:{server}", nasty_text, st.sampled_from(SERVERS)),
    st.builds(lambda local, server: f"!{local}:{server}", short_text, st.sampled_from(SERVERS)),
    st.builds(lambda s: "!" + s, st.text("ABCxyz019-_\n", min_size=42, max_size=44)),
    hostile_text,
)

huge_ints = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**63, 10**100, 10**400, -(10**400)]),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    huge_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=12,
)

#: Anything at all, small: the "wrong shape" alternative of every field.
small_json = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(hostile_text, children, max_size=2)
    ),
    max_leaves=4,
)

state_event_entries = st.one_of(
    st.tuples(nasty_text, st.sampled_from(["", "*", "@u:hs"])).map(list),
    st.tuples(st.sampled_from(["m.room.name", "*"]), nasty_text).map(list),
    st.lists(hostile_text, min_size=2, max_size=2),
    st.lists(st.one_of(hostile_text, st.sampled_from(["*", "", "m.room.name"])), max_size=3),
    small_json,
)
page_objects = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "since": st.one_of(hostile_text, nasty_text, json_scalars),
            "next": st.one_of(hostile_text, nasty_text, json_scalars),
        },
    ),
    small_json,
)

#: Every field any stream knows, with values of the right shape, nearly right, and
#: anything at all.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "room_id": st.one_of(room_ids, room_ids, json_scalars),
    "room_ids": st.one_of(
        st.lists(room_ids, max_size=5),
        st.just("room_list"),
        st.integers(99, 102).map(lambda n: [f"!r{i}:hs" for i in range(n)]),
        small_json,
    ),
    "limit": st.one_of(huge_ints, json_scalars),
    "timeline_limit": st.one_of(huge_ints, json_scalars),
    "sort": st.one_of(
        st.sampled_from(["by_pl", "by_name", "by_recency", "by_age"]),
        st.lists(st.sampled_from(["by_recency", "by_name", "by_notification_count", "x"])),
        small_json,
    ),
    "state_events": st.one_of(
        st.lists(state_event_entries, max_size=5),
        st.integers(99, 102).map(lambda n: [["t", ""]] * n),
        small_json,
    ),
    "lazy_load_members": st.one_of(st.booleans(), json_scalars),
    "full_state": st.one_of(st.booleans(), json_scalars),
    "p": page_objects,
}

stream_objects = st.fixed_dictionaries(
    {}, optional={**FIELD_VALUES, "unknown": small_json, "\ud800": small_json}
)

stream_keys = st.sampled_from([*STREAMS, "room_member"])

#: The fields each stream reads (the others are drawn less often).
FIELDS_OF = {
    "typing": ["room_id", "room_ids"],
    "to_device": ["limit"],
    "room_members": ["room_id", "limit", "sort", "p"],
    "room_list": ["sort", "limit", "state_events", "timeline_limit", "p"],
    "room_data": ["room_ids", "timeline_limit", "state_events", "lazy_load_members", "full_state"],
    "receipts": ["room_ids"],
}

#: A valid object per stream, so that hostile values get past the required fields.
VALID_BASES: dict[str, list[dict[str, Any]]] = {
    "typing": [{"room_id": "!r:hs"}, {"room_ids": ["!r:hs"]}],
    "room_members": [{"room_id": "!r:hs"}],
    "room_data": [{"room_ids": ["!r:hs"]}, {"room_ids": "room_list"}],
}


@st.composite
def stream_object_for(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """A valid object of stream ``name`` with one to three fields replaced by hostile
    values (or, sometimes, any object at all)."""
    if draw(st.integers(0, 9)) == 0:
        return dict(draw(stream_objects))
    obj = dict(draw(st.sampled_from(VALID_BASES.get(name, [{}]))))
    own = st.sampled_from(FIELDS_OF.get(name) or sorted(FIELD_VALUES))
    any_field = st.sampled_from(sorted(FIELD_VALUES))
    for field in draw(st.lists(st.one_of(own, own, any_field), min_size=1, max_size=3)):
        obj[field] = draw(FIELD_VALUES[field])
    return obj


# --- Checks -----------------------------------------------------------------------


def check_refusal(error: SyncV3Error) -> None:
    assert 400 <= error.code < 500, error
    assert error.errcode in ERRCODES, error
    assert isinstance(error.msg, str) and error.msg, error
    error.msg.encode("utf-8")  # goes into the JSON error body


def check_storable(value: object) -> None:
    """JSON-serialisable, UTF-8-encodable, no NUL, every string ≤ 255 bytes."""
    text = canonical_json(value)
    json.dumps(value, allow_nan=False)
    text.encode("utf-8")
    for string in strings_in(value):
        assert "\x00" not in string, value
        assert len(string.encode("utf-8")) <= MAX_STORED_STRING_BYTES, value


def strings_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return []


def check_per_request(per_request: dict[str, Any]) -> None:
    json.dumps(per_request, allow_nan=False)
    page = per_request.get("p")
    if page is not None and "cursor" in page:
        cursor = page["cursor"]
        assert isinstance(cursor, str) and cursor.isascii(), page
        assert len(cursor) <= MAX_CURSOR_LENGTH


# --- The query string -------------------------------------------------------------

query_names = st.one_of(
    st.sampled_from([b"since", b"timeout", b"set_presence", b"access_token", b"x", b""]),
    st.binary(max_size=8),
)
query_values = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"0", b"5", b"5\n", b"-1", b"99999999999999999999", b"online", b"V3_"]),
    st.builds(
        lambda raw: b"".join(b"%%%02X" % byte for byte in raw), st.binary(max_size=8)
    ),  # percent-encoded garbage
    st.text(max_size=10).map(lambda t: t.encode("utf-8")),
)


def percent_garbage(data: bytes) -> bytes:
    return data.replace(b"%", b"%25").replace(b"&", b"%26")


@st.composite
def query_strings(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(st.tuples(query_names, query_values), max_size=6))
    parts = [
        percent_garbage(name) + (b"=" + value if draw(st.booleans()) else b"")
        for name, value in fields
    ]
    tail = draw(st.one_of(st.just(b""), st.binary(max_size=10)))
    return b"/_matrix/client/v3/sync?" + b"&".join(parts) + tail


@fast(120)
@given(st.one_of(query_strings(), st.binary(max_size=60)))
def test_query_never_raises_other_errors(uri: bytes) -> None:
    args = query_args(uri)
    assert set(args) <= {b"since", b"timeout", b"set_presence", b"access_token"}
    try:
        query = parse_query(args, CODEC, MAX_TIMEOUT)
    except SyncV3Error as e:
        check_refusal(e)
        assert e.errcode == "M_INVALID_PARAM"
        return
    assert 0 <= query.timeout_ms <= MAX_TIMEOUT
    assert query.set_presence in PRESENCE_STATES
    if b"timeout" in args:  # the first value wins
        first = args[b"timeout"][0]
        assert first.isdigit() and query.timeout_ms == min(int(first), MAX_TIMEOUT)


@fast(40)
@given(
    st.sampled_from([b"since", b"timeout", b"set_presence"]),
    st.binary(min_size=1, max_size=6).filter(lambda b: not _is_utf8(b)),
)
def test_non_utf8_values_name_their_parameter(name: bytes, value: bytes) -> None:
    uri = b"/sync?x=%FF&" + name + b"=" + b"".join(b"%%%02X" % byte for byte in value)
    try:
        parse_query(query_args(uri), CODEC, MAX_TIMEOUT)
    except SyncV3Error as e:
        assert e.errcode == "M_INVALID_PARAM" and e.msg.startswith(name.decode())
    else:
        raise AssertionError("accepted")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- The body ---------------------------------------------------------------------


def parse_or_refuse(raw: bytes) -> None:
    try:
        body = parse_body(raw, STREAMS)
    except SyncV3Error as e:
        check_refusal(e)
        return
    for stored in body.streams.values():
        check_storable(stored)
    for per_request in body.per_request.values():
        check_per_request(per_request)


@fast(100)
@given(st.binary(max_size=80))
def test_body_arbitrary_bytes(raw: bytes) -> None:
    parse_or_refuse(raw)


@fast(100)
@given(json_values, st.booleans())
def test_body_arbitrary_json(value: Any, ascii_only: bool) -> None:
    # ensure_ascii=False keeps lone surrogates raw: "surrogatepass" makes them
    # invalid UTF-8 bytes; otherwise they arrive as \ud800 escapes.
    text = json.dumps(value, ensure_ascii=ascii_only)
    parse_or_refuse(text.encode("utf-8", "surrogatepass"))


@fast(60)
@given(st.data())
def test_body_every_stream_with_random_objects(data: st.DataObject) -> None:
    keys = data.draw(st.lists(stream_keys, unique=True, max_size=3))
    body = {
        key: data.draw(stream_object_for("room_members" if key == "room_member" else key))
        if data.draw(st.integers(0, 9))
        else data.draw(small_json)
        for key in keys
    }
    parse_or_refuse(json.dumps(body).encode())


@fast(80)
@given(
    st.sampled_from(
        [
            "1e400",
            "-1e400",
            "1E-400",
            "-0",
            "9" * 5000,
            "-" + "9" * 5000,
            "NaN",
            "Infinity",
            "-Infinity",
            '"\\ud800"',
            '"\\u0000"',
            '"\\udfff\\ud800"',
        ]
    ),
    stream_keys,
    st.sampled_from(list(FIELD_VALUES)),
    st.integers(0, 3),
)
def test_body_huge_numbers_constants_surrogates(
    literal: str, stream: str, field: str, where: int
) -> None:
    """The literal as a field value, a list entry, a key's value at top level, or a
    key (for strings)."""
    value = {0: literal, 1: f"[{literal}, {literal}]", 2: f'{{"x": {literal}}}'}.get(where)
    if value is None:
        key = literal if literal.startswith('"') else '"k"'
        body = f'{{"{stream}": {{{key}: 1, "{field}": [{literal}]}}, {key}: {literal}}}'
    else:
        body = f'{{"{stream}": {{"{field}": {value}}}, "other": {literal}}}'
    parse_or_refuse(body.encode())


@fast(15)
@given(st.integers(1, 200_000), st.sampled_from(["[", '{"a":', '{"typing":{"room_ids":[']))
def test_body_deep_nesting(depth: int, opener: str) -> None:
    closer = {"[": "]", '{"a":': "}", '{"typing":{"room_ids":[': "]"}[opener]
    parse_or_refuse((opener * depth + "1" + closer * depth).encode())


# --- Every stream's parse_params ----------------------------------------------------


def parse_params_or_refuse(name: str, obj: dict[str, Any]) -> None:
    try:
        result = STREAMS[name].parse_params(obj)
    except SyncV3Error as e:
        check_refusal(e)
        return
    check_storable(result.stored)
    check_per_request(result.per_request)


@pytest.mark.parametrize("name", sorted(FIELDS_OF))
@fast(50)
@given(data=st.data())
def test_parse_params_refuses_or_stores_storable(name: str, data: st.DataObject) -> None:
    parse_params_or_refuse(name, data.draw(stream_object_for(name)))


@fast(40)
@given(data=st.data())
def test_parse_params_of_the_other_streams(data: st.DataObject) -> None:
    others = sorted(set(STREAMS) - set(FIELDS_OF))
    name = data.draw(st.sampled_from(others))
    parse_params_or_refuse(name, data.draw(stream_object_for(name)))


# --- The since token and member-list cursors -----------------------------------------

session_ids = st.text("ABCabc019_-", min_size=15, max_size=17)
positions = st.one_of(
    st.sampled_from(["0", "5", "18446744073709551616", "m1~1.2", "1,2", "3_4", "01", "-1"]),
    st.text("0123456789m~._,-/:+aZ", min_size=0, max_size=12),
)


@st.composite
def mutated(draw: st.DrawFn, valid: str) -> str:
    """``valid`` with characters flipped, dropped, inserted or appended."""
    text = list(valid)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "drop", "insert", "append"]))
        index = draw(st.integers(0, max(0, len(text) - 1)))
        char = draw(st.one_of(st.sampled_from(SPECIAL), st.characters()))
        if op == "flip" and text:
            text[index] = char
        elif op == "drop" and text:
            del text[index]
        elif op == "insert":
            text.insert(index, char)
        else:
            text.append(char)
    return "".join(text)


@st.composite
def token_texts(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.sampled_from(sorted(STREAMS)), unique=True, max_size=4))
    token_positions = {name: draw(positions) for name in names}
    session_id = draw(session_ids)
    version = draw(st.integers(-1, 2**64))
    try:
        valid = CODEC.encode(SinceToken(session_id, version, token_positions))
    except ValueError:  # not encodable: send what a client might have built by hand
        valid = f"V3_{session_id}.{version}.{token_positions}"
    return str(draw(st.one_of(st.just(valid), mutated(valid))))


@fast(120)
@given(st.one_of(token_texts(), hostile_text, st.text(max_size=600)))
def test_token_codec_decode(text: str) -> None:
    try:
        token = CODEC.decode(text)
    except MalformedTokenError:
        return
    assert CODEC.encode(token) == text  # canonical (SPEC §4.4 properties 4 and 5)
    assert text.isascii() and len(text) < 2048


@st.composite
def cursor_texts(draw: st.DrawFn) -> str:
    valid = Cursor.for_page(
        draw(room_ids.filter(lambda r: _is_encodable(r))),
        draw(st.sampled_from(["by_pl", "by_name"])),
        draw(st.integers(0, 2**60)),
        draw(st.integers(1, 10**9 - 1)),
    ).encode()
    return str(draw(st.one_of(st.just(valid), mutated(valid))))


def _is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@fast(100)
@given(st.one_of(cursor_texts(), hostile_text, st.text(max_size=300)))
def test_member_cursor_decode(text: str) -> None:
    cursor = Cursor.decode(text)
    if cursor is not None:
        assert cursor.encode() == text
