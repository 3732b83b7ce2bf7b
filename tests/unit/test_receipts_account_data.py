"""Position syntax of the receipts and account_data streams (SPEC §4.4), without Synapse."""

import pytest

from synapse_syncv3.core.tokens import MalformedTokenError, SinceToken
from synapse_syncv3.streams import token_codec
from synapse_syncv3.streams.account_data import AccountDataStream, parse_account_data_position
from synapse_syncv3.streams.receipts import ReceiptsStream, parse_receipt_position

SID = "abcdefghijklmnop"


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("0", (0, [])),
        ("12", (12, [])),
        ("m12~1.14", (12, [(1, 14)])),
        ("m12~1.14~2.13", (12, [(1, 14), (2, 13)])),
    ],
)
def test_receipt_positions(raw: str, parsed: tuple[int, list[tuple[int, int]]]) -> None:
    assert parse_receipt_position(raw) == parsed
    assert ReceiptsStream().valid_position(raw)


@pytest.mark.parametrize(
    "raw",
    ["", "x", "-1", "01", "1.5", "m12", "m12~", "m12~1.12", "m12~1.13~1.14", "m12~1", "s12", "1,2"],
)
def test_bad_receipt_positions(raw: str) -> None:
    assert parse_receipt_position(raw) is None
    assert not ReceiptsStream().valid_position(raw)


def test_account_data_positions() -> None:
    assert parse_account_data_position("22,5") == (22, 5)
    assert parse_account_data_position("0,0") == (0, 0)
    for raw in ("", "22", "22,", ",5", "022,5", "22,5,1", "a,b", "22;5", "-1,5"):
        assert parse_account_data_position(raw) is None, raw
        assert not AccountDataStream().valid_position(raw)


def test_positions_in_the_since_token() -> None:
    codec = token_codec()
    token = SinceToken(SID, 2, {"receipts": "m12~1.14", "account_data": "22,5"})
    text = codec.encode(token)
    assert codec.decode(text) == token
    for positions in ({"receipts": "m12~1.11"}, {"account_data": "22"}):
        with pytest.raises(MalformedTokenError):
            codec.decode(codec.encode(SinceToken(SID, 2, positions)))
