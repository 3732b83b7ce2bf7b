"""Room data rules without Synapse (SPEC §7.5, §9): which rooms a response reports and
how, the state_events filter, and the state section of an entry."""

from __future__ import annotations

from typing import Any

import pytest

from synapse_syncv3.core.rooms import (
    ALL_STATE,
    MembershipChange,
    RoomPlan,
    plan_room,
    state_matches,
    state_section,
)

ME = "@me:hs"


def plan(**kwargs: Any) -> RoomPlan | None:
    args: dict[str, Any] = {
        "membership": "join",
        "membership_position": 5,
        "changes": (),
        "position": 10,
        "now": 20,
        "first": False,
        "full_state": False,
        "room_changed": False,
    }
    args.update(kwargs)
    return plan_room(**args)


def change(membership: str, position: int, previous: str | None) -> MembershipChange:
    return MembershipChange(membership, position, previous)


@pytest.mark.parametrize(
    ("patterns", "key", "selected"),
    [
        (ALL_STATE, ("m.room.topic", ""), True),
        ([["m.room.member", "*"]], ("m.room.member", "@a:hs"), True),
        ([["m.room.member", "*"]], ("m.room.topic", ""), False),
        ([["*", ""]], ("m.room.topic", ""), True),
        ([["*", ""]], ("m.room.member", "@a:hs"), False),
        ([["m.room.name", ""]], ("m.room.name", ""), True),
        ([["m.room.name", ""]], ("m.room.name", "x"), False),
        ([], ("m.room.name", ""), False),
    ],
)
def test_state_events_wildcards(patterns: Any, key: tuple[str, str], selected: bool) -> None:
    assert state_matches(patterns, key) is selected


def test_quiet_joined_room_reports_nothing() -> None:
    assert plan() is None
    assert plan(room_changed=True) == RoomPlan("join", False, 20, 10)
    assert plan(full_state=True) == RoomPlan("join", False, 20, 10)


def test_first_delivery_of_a_joined_room_starts_at_creation() -> None:
    assert plan(first=True) == RoomPlan("join", True, 20, None)
    assert plan(first=True, position=None) == RoomPlan("join", True, 20, None)


def test_newly_joined_is_decided_on_transitions() -> None:
    # invite -> join in the interval: newly joined.
    assert plan(changes=[change("join", 15, "invite")]).first  # type: ignore[union-attr]
    # leave and join again inside the interval, joined before: newly joined too.
    rejoin = [change("leave", 12, "join"), change("join", 15, "leave")]
    assert plan(changes=rejoin).first  # type: ignore[union-attr]
    # A duplicate join (profile change) is not (SPEC §9.3).
    assert plan(changes=[change("join", 15, "join")]) == RoomPlan("join", False, 20, 10)


def test_leave_ends_the_timeline_then_the_room_goes_quiet() -> None:
    left = plan(membership="leave", membership_position=15, changes=[change("leave", 15, "join")])
    assert left == RoomPlan("leave", False, 15, 10)
    banned = plan(membership="ban", membership_position=15, changes=[change("ban", 15, "join")])
    assert banned == RoomPlan("ban", False, 15, 10)
    # Later requests: nothing, whatever happens in the room.
    assert plan(membership="leave", membership_position=15, position=15, room_changed=True) is None


def test_join_and_leave_inside_the_interval_is_a_first_delivery() -> None:
    changes = [change("join", 12, "invite"), change("leave", 15, "join")]
    assert plan(membership="leave", membership_position=15, changes=changes) == RoomPlan(
        "leave", True, 15, None
    )


def test_invites_knocks_and_no_membership() -> None:
    assert plan(membership="invite", first=True) == RoomPlan("invite", True)
    assert plan(membership="invite", changes=[change("invite", 15, None)]) == RoomPlan(
        "invite", False
    )
    assert plan(membership="invite") is None
    assert plan(membership="knock", first=True) == RoomPlan("knock", True)
    # No membership: the error entry on the first delivery only.
    assert plan(membership=None, first=True) == RoomPlan("forbidden", True)
    assert plan(membership=None, room_changed=True) is None


def test_first_delivery_state_is_the_state_before_the_timeline() -> None:
    start = {("m.room.create", ""): "$c", ("m.room.topic", ""): "$t1"}
    # The timeline starts with the topic change $t2: its previous value is state
    # (SPEC §9.2), $t2 itself is in the timeline only.
    state = state_section(
        start=start,
        previous={},
        timeline_ids=["$t2"],
        patterns=ALL_STATE,
        lazy_members=None,
    )
    assert state == start


def test_incremental_state_is_what_changed_before_the_timeline() -> None:
    previous = {("m.room.create", ""): "$c", ("m.room.topic", ""): "$t1"}
    start = {("m.room.create", ""): "$c", ("m.room.topic", ""): "$t2"}
    state = state_section(
        start=start,
        previous=previous,
        timeline_ids=["$m"],
        patterns=ALL_STATE,
        lazy_members=None,
    )
    assert state == {("m.room.topic", ""): "$t2"}
    # Covered by the timeline: nothing.
    assert not state_section(
        start=previous,
        previous=previous,
        timeline_ids=["$t2"],
        patterns=ALL_STATE,
        lazy_members=None,
    )


def test_a_change_the_timeline_does_not_show_stays_out_of_state() -> None:
    # A state change inside the window that the user may not see: the state is the
    # state before the first timeline event (SPEC §9.2), not the end of the interval.
    previous = {("m.room.topic", ""): "$t1"}
    state = state_section(
        start=previous,
        previous=previous,
        timeline_ids=["$m"],
        patterns=ALL_STATE,
        lazy_members=None,
    )
    assert state == {}


def test_state_events_filter_and_lazy_members() -> None:
    start = {
        ("m.room.create", ""): "$c",
        ("m.room.name", ""): "$n",
        ("m.room.member", ME): "$me",
        ("m.room.member", "@bob:hs"): "$bob",
        ("m.room.member", "@carol:hs"): "$carol",
    }
    state = state_section(
        start=start,
        previous=start,
        timeline_ids=["$m"],
        patterns=[["m.room.name", ""]],
        lazy_members={ME, "@bob:hs"},
    )
    # Lazy-loaded members come as of the start even when sent before (SPEC §9.9);
    # the name was sent before, and carol wrote nothing.
    assert state == {("m.room.member", ME): "$me", ("m.room.member", "@bob:hs"): "$bob"}
