"""Sticky params (SPEC §5): merging, change detection and stream resets.

Params are stored per session as canonical JSON, keyed by the stream key *as the
client spelled it* (``room_member`` or ``room_members``), because the response key
follows the spelling last used to set the stream's params (§5.3).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

JsonDict = dict[str, Any]

#: Alternative spellings of stream keys -> the canonical stream name.
ALIASES = {"room_member": "room_members"}


def canonical_name(key: str) -> str:
    return ALIASES.get(key, key)


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@attrs.frozen
class Params:
    """The merged params of one params version: spelled stream key -> stored params."""

    by_key: Mapping[str, JsonDict] = attrs.field(factory=dict)

    @classmethod
    def empty(cls) -> Params:
        return cls({})

    @classmethod
    def from_json(cls, text: str) -> Params:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("stored params are not an object")
        return cls(value)

    def to_json(self) -> str:
        return canonical_json(self.by_key)

    def names(self) -> set[str]:
        """Canonical names of the requested streams."""
        return {canonical_name(key) for key in self.by_key}

    def get(self, name: str) -> JsonDict | None:
        """The stored params of a stream by canonical name, whatever its spelling."""
        for key, value in self.by_key.items():
            if canonical_name(key) == name:
                return value
        return None

    def key_for(self, name: str) -> str:
        """The key the client used for a stream (the response key, §5.3)."""
        for key in self.by_key:
            if canonical_name(key) == name:
                return key
        return name

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def same_as(self, other: Params) -> bool:
        return self.to_json() == other.to_json()


def merge(stored: Params, body: Mapping[str, JsonDict | None]) -> Params:
    """Merge a validated body into stored params (§5.1).

    ``body`` maps the stream keys present in the request (as spelled) to their
    validated stored form, or to None for ``null``. Absent keys keep their params,
    ``null`` removes the stream, an object replaces the stream's params entirely.
    An empty body returns ``stored`` itself (an idle long-poll holds one Params).
    """
    if not body:
        return stored
    merged = dict(stored.by_key)
    for key, value in body.items():
        name = canonical_name(key)
        for existing in [k for k in merged if canonical_name(k) == name]:
            del merged[existing]
        if value is not None:
            merged[key] = value
    return Params(merged)


def reset_streams(
    old: Params, new: Params, resets: Mapping[str, Callable[[JsonDict, JsonDict], bool]]
) -> set[str]:
    """Streams requested in both ``old`` and ``new`` whose param change resets them
    (§5.4). ``resets`` maps stream name -> the stream's reset rule."""
    result = set()
    for name in new.names() & old.names():
        before, after = old.get(name), new.get(name)
        assert before is not None and after is not None
        rule = resets.get(name)
        if rule is not None and rule(before, after):
            result.add(name)
    return result


def started_streams(old: Params, new: Params) -> set[str]:
    """Streams requested in ``new`` but not in ``old``: they get a first delivery."""
    return new.names() - old.names()


def ordered(names: Iterable[str], order: Iterable[str]) -> list[str]:
    wanted = set(names)
    return [name for name in order if name in wanted]
