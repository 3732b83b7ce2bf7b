"""Module configuration (SPEC §11), parsed and validated without Synapse.

``SyncV3Module.parse_config`` turns :class:`ConfigValueError` into Synapse's
``ConfigError`` so that Synapse reports the full key path at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

_DURATION_UNITS_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60 * 1000,
    "h": 60 * 60 * 1000,
    "d": 24 * 60 * 60 * 1000,
    "w": 7 * 24 * 60 * 60 * 1000,
    "y": 365 * 24 * 60 * 60 * 1000,
}
_DURATION_RE = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)?")


class ConfigValueError(Exception):
    """An invalid configuration value; ``path`` names the key inside ``config``."""

    def __init__(self, path: tuple[str, ...], msg: str) -> None:
        super().__init__(f"{'.'.join(path)}: {msg}")
        self.path = path
        self.msg = msg


@attrs.frozen
class MaxLimits:
    """Upper bounds of the negotiated limits (SPEC §5.5, §11.2)."""

    to_device: int = 1000
    room_members: int = 1000
    room_list: int = 1000
    room_list_timeline: int = 20
    room_data_timeline: int = 100


@attrs.frozen
class SyncV3Config:
    serve_client_path: bool = True
    session_ttl_ms: int = 7 * _DURATION_UNITS_MS["d"]
    max_sessions_per_device: int = 10
    max_timeout_ms: int = 300_000
    max_limits: MaxLimits = attrs.field(factory=MaxLimits)

    @property
    def sweep_interval_ms(self) -> int:
        """How often expired sessions are swept (SPEC §4.3: at least hourly, more often
        for short TTLs) and the active-sessions gauge is refreshed (§12: at least every
        5 minutes)."""
        return max(1000, min(5 * 60 * 1000, self.session_ttl_ms // 2))


# key -> (minimum, maximum) for the integer limits in ``max_limits``.
_MAX_LIMIT_BOUNDS = {
    "to_device": (1, 100_000),
    "room_members": (1, 100_000),
    "room_list": (1, 100_000),
    "room_list_timeline": (1, 1000),
    "room_data_timeline": (1, 1000),
}
_TOP_LEVEL_KEYS = (
    "serve_client_path",
    "session_ttl",
    "max_sessions_per_device",
    "max_timeout_ms",
    "max_limits",
)


def parse_duration_ms(value: object) -> int:
    """Parse integer milliseconds or a string such as ``"7d"``, ``"90s"``, ``"250ms"``.

    Raises ValueError for anything else (booleans are not integers).
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match:
            number, unit = match.groups()
            return int(number) * _DURATION_UNITS_MS[unit or "ms"]
    raise ValueError(f"cannot parse {value!r} as a duration")


def _int_in_range(path: tuple[str, ...], value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigValueError(path, f"must be an integer between {low} and {high}")
    return value


def parse_config(raw: Mapping[str, Any] | None) -> SyncV3Config:
    """Validate the ``config`` mapping of the module (SPEC §11.2, §11.3)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigValueError((), "must be a mapping")
    for key in raw:
        if key not in _TOP_LEVEL_KEYS:
            raise ConfigValueError(
                (str(key),), f"unknown key; valid keys are {', '.join(_TOP_LEVEL_KEYS)}"
            )

    serve_client_path = raw.get("serve_client_path", True)
    if not isinstance(serve_client_path, bool):
        raise ConfigValueError(("serve_client_path",), "must be true or false")

    max_sessions = _int_in_range(
        ("max_sessions_per_device",), raw.get("max_sessions_per_device", 10), 1, 1000
    )
    max_timeout = _int_in_range(
        ("max_timeout_ms",), raw.get("max_timeout_ms", 300_000), 0, 3_600_000
    )

    ttl_raw = raw.get("session_ttl", "7d")
    try:
        ttl = parse_duration_ms(ttl_raw)
    except ValueError:
        raise ConfigValueError(
            ("session_ttl",),
            "must be integer milliseconds or a duration such as '7d' (units ms, s, m, h, d, w, y)",
        ) from None
    if ttl <= 0 or ttl <= max_timeout:
        raise ConfigValueError(
            ("session_ttl",),
            f"must be greater than 0 and greater than max_timeout_ms ({max_timeout} ms)",
        )

    limits_raw = raw.get("max_limits", {})
    if limits_raw is None:
        limits_raw = {}
    if not isinstance(limits_raw, Mapping):
        raise ConfigValueError(("max_limits",), "must be a mapping")
    for key in limits_raw:
        if key not in _MAX_LIMIT_BOUNDS:
            raise ConfigValueError(
                ("max_limits", str(key)),
                f"unknown key; valid keys are {', '.join(_MAX_LIMIT_BOUNDS)}",
            )
    defaults = MaxLimits()
    limits = {
        key: _int_in_range(
            ("max_limits", key), limits_raw.get(key, getattr(defaults, key)), low, high
        )
        for key, (low, high) in _MAX_LIMIT_BOUNDS.items()
    }

    return SyncV3Config(
        serve_client_path=serve_client_path,
        session_ttl_ms=ttl,
        max_sessions_per_device=max_sessions,
        max_timeout_ms=max_timeout,
        max_limits=MaxLimits(**limits),
    )
