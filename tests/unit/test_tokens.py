"""The since-token codec (SPEC §4.4), without Synapse."""

import base64
import re

import pytest

from synapse_syncv3.core.tokens import MalformedTokenError, SinceToken, TokenCodec, new_session_id
from synapse_syncv3.streams import token_codec

SID = "abcdefghijklmnop"
ALPHABET = re.compile(r"^[A-Za-z0-9._~-]+$")


@pytest.fixture
def codec() -> TokenCodec:
    return token_codec()


def test_round_trip(codec: TokenCodec) -> None:
    token = SinceToken(SID, 3, {"typing": "18", "to_device": "55"})
    text = codec.encode(token)
    assert text.startswith("V3_")
    assert ALPHABET.match(text)
    assert codec.decode(text) == token
    assert codec.encode(codec.decode(text)) == text


def test_canonical_whatever_the_insertion_order(codec: TokenCodec) -> None:
    a = codec.encode(SinceToken(SID, 1, {"typing": "1", "to_device": "2"}))
    b = codec.encode(SinceToken(SID, 1, {"to_device": "2", "typing": "1"}))
    assert a == b


def test_no_positions(codec: TokenCodec) -> None:
    text = codec.encode(SinceToken(SID, 1, {}))
    assert text == f"V3_{SID}.1."
    assert codec.decode(text).positions == {}


def test_session_ids_are_unique_and_well_formed(codec: TokenCodec) -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    for sid in ids:
        assert ALPHABET.match(codec.encode(SinceToken(sid, 1, {})))


def _payload(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "s72594_4483_1934",  # a v2 token
        "V3_",
        f"V3_{SID}",
        f"V3_{SID}.1",
        f"V3_{SID}.1..",
        f"V3_{SID}.0.",  # versions start at 1
        f"V3_{SID}.01.",  # leading zero: not canonical
        f"V3_{SID}.-1.",
        "V3_short.1.",
        f"V3_{SID}x.1.",
        f"V3_{SID}.1.!!!",
        f"V3_{SID}.1.{_payload('z=1')}",  # unknown stream code
        f"V3_{SID}.1.{_payload('t=1;t=2')}",  # duplicate
        f"V3_{SID}.1.{_payload('d=1;t=2')}",  # wrong order: not canonical
        f"V3_{SID}.1.{_payload('t=abc')}",  # typing positions are integers
        f"V3_{SID}.1.{_payload('t=01')}",
        f"V3_{SID}.1.{_payload('t=')}",
        f"V3_{SID}.1.{_payload('t')}",
        f"V3_{SID}.1.{_payload('t=1;')}",
        f"v3_{SID}.1.",
        f"V3_{SID}.99999999999999999999.",
        f"V3_{SID}.1.A",  # impossible base64 length
        f"V3_{SID}.1.dD0xOQ=",  # padding is not canonical
        f"V3_{SID}.1.dD0xOR",  # non-zero trailing bits: not canonical
    ],
)
def test_malformed(codec: TokenCodec, value: str) -> None:
    with pytest.raises(MalformedTokenError):
        codec.decode(value)


def test_room_list_position_is_room_and_receipt(codec: TokenCodec) -> None:
    for position in ("0_0", "1042_12", "1042_m12~1.14~2.13"):
        text = codec.encode(SinceToken(SID, 2, {"room_list": position, "typing": "4"}))
        assert codec.decode(text).positions == {"typing": "4", "room_list": position}
    # "0": a token of a release that did not serve room_list (a first delivery).
    assert codec.decode(codec.encode(SinceToken(SID, 2, {"room_list": "0"}))).positions
    for bad in ("00", "1_", "_1", "01_1", "1_m1~1.1", "1_2_3"):
        with pytest.raises(MalformedTokenError):
            codec.decode(codec.encode(SinceToken(SID, 2, {"room_list": bad})))


def test_encode_rejects_bad_values(codec: TokenCodec) -> None:
    with pytest.raises(ValueError):
        codec.encode(SinceToken(SID, 1, {"typing": "a;b"}))
    with pytest.raises(ValueError):
        codec.encode(SinceToken(SID, 1, {"nope": "1"}))
    with pytest.raises(ValueError):
        codec.encode(SinceToken("bad", 1, {}))
