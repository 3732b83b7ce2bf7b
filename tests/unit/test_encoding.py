"""core/encoding.py: telling a small response from a large one, cheaply."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from synapse_syncv3.core.encoding import INLINE_JSON_CHARS, json_within


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_a_timeout_reply_is_small() -> None:
    assert json_within({"next": "V3_" + "a" * 200}, INLINE_JSON_CHARS)


def test_limits_are_inclusive_and_strings_count_their_quotes() -> None:
    assert json_within("abc", 5)
    assert not json_within("abc", 4)
    assert json_within([], 2)
    assert not json_within([], 1)


def test_a_large_string_or_many_entries_are_large() -> None:
    assert not json_within({"to_device": {"events": [{"content": {"k": "x" * 20_000}}]}}, 16_384)
    assert not json_within({"rooms": {f"!r{n}:hs": {} for n in range(5_000)}}, 16_384)
    assert not json_within([[[[[0] * 1_000]]]], 1_000)


class _Counting(dict[str, Any]):
    """A mapping that counts how many of its entries are read."""

    reads = 0

    def items(self) -> Any:
        for key, value in super().items():
            type(self).reads += 1
            yield key, value


def test_a_huge_value_is_told_without_reading_it_all() -> None:
    huge = _Counting({f"key{n}": {"n": n} for n in range(10)})
    assert not json_within([huge] * 100_000, 1_000)  # the list alone is over
    assert _Counting.reads == 0
    many = [_Counting({f"key{n}": "v" * 10 for n in range(10)}) for _ in range(1_000)]
    assert not json_within(many, 2_000)
    assert _Counting.reads < 2_000 // 10  # stopped long before the 10,000 entries


def test_other_mappings_and_scalars() -> None:
    from types import MappingProxyType

    assert json_within(MappingProxyType({"a": 1}), 100)
    assert json_within({"n": 2**53 - 1, "f": -1.2345678901234567e-308, "b": None}, 200)
    assert not json_within([1.5] * 100, 100)


printable = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + " -_.:!@$"), max_size=40
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | printable,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(printable, children, max_size=6)
    ),
    max_leaves=40,
)


@given(json_values, st.integers(min_value=0, max_value=2_000))
def test_never_below_the_encoded_length(value: object, limit: int) -> None:
    """For strings of plain ASCII the count is an upper bound: a value told small
    encodes to at most the limit."""
    if json_within(value, limit):
        assert len(compact(value)) <= limit


@given(json_values)
def test_strings_and_containers_are_counted_exactly(value: object) -> None:
    """Without numbers and booleans (counted at their longest), the count overshoots
    the encoded length by one per non-empty container at most."""

    def strip(v: object) -> object:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if isinstance(x, (str, dict, list))}
        if isinstance(v, list):
            return [strip(x) for x in v if isinstance(x, (str, dict, list))]
        return v

    value = strip(value)
    if not isinstance(value, (str, dict, list)):
        return
    encoded = len(compact(value))
    containers = compact(value).count("[") + compact(value).count("{")
    assert json_within(value, encoded + containers)
