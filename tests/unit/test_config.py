"""Configuration parsing (SPEC §11), without Synapse."""

import pytest

from synapse_syncv3.config import (
    ConfigValueError,
    MaxLimits,
    SyncV3Config,
    parse_config,
    parse_duration_ms,
)


def test_defaults() -> None:
    assert parse_config(None) == parse_config({}) == SyncV3Config()
    config = parse_config({})
    assert config.session_ttl_ms == 7 * 24 * 3600 * 1000
    assert config.max_limits == MaxLimits(1000, 1000, 1000, 20, 100)


def test_full_example_of_spec_11_1() -> None:
    config = parse_config(
        {
            "serve_client_path": False,
            "session_ttl": "7d",
            "max_sessions_per_device": 10,
            "max_timeout_ms": 300000,
            "max_limits": {
                "to_device": 1000,
                "room_members": 1000,
                "room_list": 1000,
                "room_list_timeline": 20,
                "room_data_timeline": 100,
            },
        }
    )
    assert not config.serve_client_path


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (5, 5),
        ("250ms", 250),
        ("2s", 2000),
        ("3m", 180000),
        ("1h", 3600000),
        ("1d", 86400000),
        ("1w", 604800000),
        ("1y", 31536000000),
        ("1500", 1500),
    ],
)
def test_durations(value: object, ms: int) -> None:
    assert parse_duration_ms(value) == ms


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"max_sessions_per_device": 0}, ("max_sessions_per_device",)),
        ({"max_sessions_per_device": 1001}, ("max_sessions_per_device",)),
        ({"max_sessions_per_device": True}, ("max_sessions_per_device",)),
        ({"max_sessions_per_device": "10"}, ("max_sessions_per_device",)),
        ({"session_ttl": "soon"}, ("session_ttl",)),
        ({"session_ttl": "5x"}, ("session_ttl",)),
        ({"session_ttl": True}, ("session_ttl",)),
        ({"session_ttl": 0}, ("session_ttl",)),
        ({"session_ttl": "1s"}, ("session_ttl",)),  # not greater than max_timeout_ms
        ({"session_ttl": "2s", "max_timeout_ms": 2000}, ("session_ttl",)),
        ({"max_timeout_ms": -1}, ("max_timeout_ms",)),
        ({"max_timeout_ms": 3600001}, ("max_timeout_ms",)),
        ({"max_timeout_ms": 1.5}, ("max_timeout_ms",)),
        ({"serve_client_path": "yes"}, ("serve_client_path",)),
        ({"max_limits": []}, ("max_limits",)),
        ({"max_limits": {"to_device": 0}}, ("max_limits", "to_device")),
        ({"max_limits": {"room_list_timeline": 1001}}, ("max_limits", "room_list_timeline")),
        ({"max_limits": {"typing": 5}}, ("max_limits", "typing")),
        ({"unknown_key": 1}, ("unknown_key",)),
    ],
)
def test_invalid(raw: dict, path: tuple[str, ...]) -> None:
    with pytest.raises(ConfigValueError) as info:
        parse_config(raw)
    assert info.value.path == path
    assert path[-1] in str(info.value)


def test_error_message_of_spec_11_3() -> None:
    with pytest.raises(ConfigValueError) as info:
        parse_config({"max_sessions_per_device": 0})
    assert info.value.msg == "must be an integer between 1 and 1000"


def test_zero_timeout_disables_waiting_and_short_ttl() -> None:
    config = parse_config({"max_timeout_ms": 0, "session_ttl": "1s"})
    assert config.max_timeout_ms == 0
    assert config.sweep_interval_ms == 1000
    assert parse_config({}).sweep_interval_ms == 300_000
