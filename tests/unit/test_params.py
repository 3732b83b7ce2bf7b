"""Sticky params: merge, change detection, resets and negotiation (SPEC §5),
without Synapse."""

import pytest

from synapse_syncv3.config import MaxLimits
from synapse_syncv3.core.params import Params, merge, reset_streams, started_streams
from synapse_syncv3.core.request import parse_body
from synapse_syncv3.streams import build_streams

BY_NAME = build_streams().by_name
RESETS = {name: stream.resets for name, stream in BY_NAME.items()}
STORED = Params({"typing": {"room_id": "!a:example.org"}, "to_device": {"limit": 50}})


def merged(body: bytes, stored: Params = STORED) -> Params:
    return merge(stored, parse_body(body, BY_NAME).streams)


# The table of SPEC §5.7.
def test_empty_body_changes_nothing() -> None:
    assert merged(b"{}").same_as(STORED)
    # The stored params themselves: an idle long-poll holds one Params, not two.
    assert merged(b"{}") is STORED


def test_same_values_change_nothing() -> None:
    assert merged(b'{"to_device": {"limit": 50}}').same_as(STORED)


def test_empty_object_replaces_with_defaults_without_reset() -> None:
    new = merged(b'{"to_device": {}}')
    assert not new.same_as(STORED)
    assert new.get("to_device") == {}
    assert BY_NAME["to_device"].negotiate({}, MaxLimits()) == {"limit": 100}
    assert reset_streams(STORED, new, RESETS) == set()


def test_changing_the_typing_room_resets_typing() -> None:
    new = merged(b'{"typing": {"room_id": "!b:example.org"}}')
    assert new.get("typing") == {"room_id": "!b:example.org"}
    assert reset_streams(STORED, new, RESETS) == {"typing"}


def test_switching_typing_forms_resets() -> None:
    new = merged(b'{"typing": {"room_ids": ["!a:example.org"]}}')
    assert reset_streams(STORED, new, RESETS) == {"typing"}


def test_null_removes_a_stream() -> None:
    new = merged(b'{"typing": null}')
    assert "typing" not in new
    assert new.names() == {"to_device"}


def test_adding_a_stream_starts_it() -> None:
    new = merged(b'{"presence": {}}')
    assert started_streams(STORED, new) == {"presence"}


def test_per_request_fields_are_not_stored() -> None:
    body = parse_body(b'{"room_list": {"limit": 10, "p": {}}}', BY_NAME)
    assert merge(STORED, body.streams).get("room_list") == {"limit": 10}
    assert body.per_request == {"room_list": {"p": {}}}
    assert body.is_page_request

    body = parse_body(b'{"room_data": {"room_ids": ["!a:x"], "full_state": true}}', BY_NAME)
    assert body.streams["room_data"] == {"room_ids": ["!a:x"]}
    assert body.per_request == {"room_data": {"full_state": True}}
    assert not body.is_page_request


def test_unknown_keys_are_ignored() -> None:
    assert merged(b'{"foo": 1}').same_as(STORED)
    assert merged(b'{"to_device": {"limit": 50, "bar": 2}}').same_as(STORED)
    # p outside room_members and room_list is an unknown field
    assert merged(b'{"to_device": {"limit": 50, "p": {}}}').same_as(STORED)


def test_lists_are_replaced_not_merged() -> None:
    stored = Params({"typing": {"room_ids": ["!a:x", "!b:x"]}})
    new = merged(b'{"typing": {"room_ids": ["!c:x"]}}', stored)
    assert new.get("typing") == {"room_ids": ["!c:x"]}


def test_values_are_stored_as_sent_not_clamped() -> None:
    new = merged(b'{"to_device": {"limit": 5000}}')
    assert new.get("to_device") == {"limit": 5000}
    assert BY_NAME["to_device"].negotiate(new.get("to_device") or {}, MaxLimits()) == {
        "limit": 1000
    }


def test_room_member_spelling_is_a_change_of_spelling_only() -> None:
    stored = Params({"room_members": {"room_id": "!a:x"}})
    new = merged(b'{"room_member": {"room_id": "!a:x"}}', stored)
    assert not new.same_as(stored)
    assert new.key_for("room_members") == "room_member"
    assert new.names() == {"room_members"}
    assert reset_streams(stored, new, RESETS) == set()
    back = merged(b'{"room_members": {"room_id": "!b:x"}}', new)
    assert back.key_for("room_members") == "room_members"
    assert reset_streams(new, back, RESETS) == {"room_members"}


def test_canonical_json_is_stable() -> None:
    a = Params({"to_device": {"limit": 1}, "typing": {"room_id": "!a:x"}})
    b = Params({"typing": {"room_id": "!a:x"}, "to_device": {"limit": 1}})
    assert a.to_json() == b.to_json()
    assert Params.from_json(a.to_json()).same_as(a)


@pytest.mark.parametrize(
    ("stream", "old", "new", "resets"),
    [
        ("to_device", {"limit": 1}, {"limit": 2}, False),
        (
            "room_members",
            {"room_id": "!a:x"},
            {"room_id": "!a:x", "limit": 5, "sort": "by_name"},
            False,
        ),
        ("room_members", {"room_id": "!a:x"}, {"room_id": "!b:x"}, True),
        ("room_list", {}, {"limit": 5}, False),
        ("room_list", {}, {"sort": ["by_name"]}, True),
        ("room_list", {}, {"sort": ["by_recency"]}, False),
        ("room_list", {}, {"state_events": [["m.room.name", ""]]}, True),
        ("room_list", {}, {"timeline_limit": 5}, True),
        ("room_data", {"room_ids": ["!a:x"]}, {"room_ids": ["!a:x"], "timeline_limit": 3}, False),
        (
            "room_data",
            {"room_ids": ["!a:x"]},
            {"room_ids": ["!a:x"], "lazy_load_members": True},
            True,
        ),
        ("room_data", {"room_ids": ["!a:x"]}, {"room_ids": ["!a:x"], "state_events": []}, True),
        ("receipts", {}, {"room_ids": ["!a:x"]}, True),
        ("account_data", {}, {}, False),
    ],
)
def test_reset_rules_of_spec_5_4(stream: str, old: dict, new: dict, resets: bool) -> None:
    assert BY_NAME[stream].resets(old, new) is resets


@pytest.mark.parametrize(
    ("stream", "params", "limits", "echo"),
    [
        ("to_device", {}, MaxLimits(), {"limit": 100}),
        ("to_device", {"limit": 0}, MaxLimits(), {"limit": 100}),
        ("to_device", {"limit": 5000}, MaxLimits(), {"limit": 1000}),
        ("to_device", {"limit": 7}, MaxLimits(), {"limit": 7}),
        ("to_device", {}, MaxLimits(to_device=10), {"limit": 10}),  # default lowered
        ("room_members", {"room_id": "!a:x"}, MaxLimits(), {"limit": 50, "sort": "by_pl"}),
        (
            "room_members",
            {"room_id": "!a:x", "limit": 5000, "sort": "by_name"},
            MaxLimits(),
            {"limit": 1000, "sort": "by_name"},
        ),
        ("room_list", {}, MaxLimits(), {"limit": 20, "sort": ["by_recency"], "timeline_limit": 1}),
        (
            "room_list",
            {"sort": [], "timeline_limit": 50},
            MaxLimits(),
            {"limit": 20, "sort": ["by_recency"], "timeline_limit": 20},
        ),
        (
            "room_list",
            {"timeline_limit": 0},
            MaxLimits(),
            {"limit": 20, "sort": ["by_recency"], "timeline_limit": 0},
        ),
        ("room_data", {"room_ids": []}, MaxLimits(), {"timeline_limit": 20}),
        ("room_data", {"room_ids": [], "timeline_limit": 0}, MaxLimits(), {"timeline_limit": 0}),
        (
            "room_data",
            {"room_ids": [], "timeline_limit": 500},
            MaxLimits(),
            {"timeline_limit": 100},
        ),
        ("typing", {"room_id": "!a:x"}, MaxLimits(), {}),
    ],
)
def test_negotiation(stream: str, params: dict, limits: MaxLimits, echo: dict) -> None:
    assert BY_NAME[stream].negotiate(params, limits) == echo
