"""Position syntax and params of the presence and e2ee streams (SPEC §4.4, §7.8, §7.9)."""

from __future__ import annotations

import pytest

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core.tokens import POSITION_VALUE_RE
from synapse_syncv3.streams.e2ee import E2EEStream
from synapse_syncv3.streams.presence import PresenceStream


@pytest.mark.parametrize("raw", ["0", "7", "123456789012345678"])
def test_presence_positions(raw: str) -> None:
    assert PresenceStream().valid_position(raw)


@pytest.mark.parametrize("raw", ["", "-1", "01", "1.5", "s1", "1234567890123456789", "1_2"])
def test_bad_presence_positions(raw: str) -> None:
    assert not PresenceStream().valid_position(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "s0_0",
        "s12_7",
        "m12~1.14_7",
        "m12~1.14~3.20_m7~2.9",
        "s12_m7~2.9~4.10",
    ],
)
def test_e2ee_positions(raw: str) -> None:
    assert E2EEStream().valid_position(raw)
    assert POSITION_VALUE_RE.match(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "5",
        "s5",
        "s5_",
        "_5",
        "t1-5_3",
        "s01_3",
        "s5_03",
        "m5_3",
        "s5_m3",
        "s5_m3~1",
        "s5_m3~1.",
        "s5_3_4",
        "s5_3~1.4",
        "S5_3",
        "s5_-3",
        "s1234567890123456789_1",
    ],
)
def test_bad_e2ee_positions(raw: str) -> None:
    assert not E2EEStream().valid_position(raw)


@pytest.mark.parametrize("stream", [PresenceStream(), E2EEStream()])
def test_no_fields(stream: PresenceStream | E2EEStream) -> None:
    parsed = stream.parse_params({"unknown": 1})
    assert parsed.stored == {}
    assert not stream.resets({}, {})
    assert stream.negotiate({}, MaxLimits()) == {}
