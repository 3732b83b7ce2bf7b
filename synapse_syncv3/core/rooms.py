"""Room data rules that need no Synapse (SPEC §7.5, §9): which rooms a response
reports and how, the ``state_events`` filter, and which state entries a room entry
carries. Pure functions over plain values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import attrs

#: A state key: (event type, state key).
StateKey = tuple[str, str]
#: A state map: state key -> event id.
StateIds = Mapping[StateKey, str]

MEMBER = "m.room.member"
WILDCARD = "*"
ALL_STATE: tuple[tuple[str, str], ...] = ((WILDCARD, WILDCARD),)


def state_matches(patterns: Iterable[Sequence[str]], key: StateKey) -> bool:
    """Whether a ``state_events`` filter (SPEC §7.4: ``*`` as state key is every key
    of the type, ``*`` as type every type with that key) selects ``key``."""
    event_type, state_key = key
    for pattern_type, pattern_key in patterns:
        if pattern_type in (WILDCARD, event_type) and pattern_key in (WILDCARD, state_key):
            return True
    return False


@attrs.frozen
class MembershipChange:
    """One membership event of the user in a room, in the interval."""

    membership: str
    #: Room stream position of the event.
    position: int
    #: The user's membership before the event (None: none).
    previous: str | None


@attrs.frozen
class RoomPlan:
    """What a response says about one room (SPEC §9.1, §9.3, §9.4)."""

    #: ``join``, ``leave``, ``ban``, ``invite``, ``knock`` or ``forbidden``.
    kind: str
    #: A first delivery: full state, the timeline from the creation of the room.
    first: bool
    #: The timeline ends here (inclusive): now, or the user's leave.
    upper: int = 0
    #: The timeline starts after this position; None: from the creation of the room.
    lower: int | None = None


def plan_room(
    *,
    membership: str | None,
    membership_position: int | None,
    changes: Sequence[MembershipChange],
    position: int | None,
    now: int,
    first: bool,
    full_state: bool,
    room_changed: bool,
) -> RoomPlan | None:
    """What to report for one room of the set, or None for nothing.

    ``membership`` is the user's current membership (None: none, or forgotten) and
    ``membership_position`` the position of that membership event; ``changes`` the
    user's membership events in the room in (position, now]; ``first`` whether the
    room is owed a first delivery (stream reset, room added, never received);
    ``room_changed`` whether the room may have events after the position.
    """
    if membership is None:
        return RoomPlan("forbidden", True) if first else None
    if membership in ("invite", "knock"):
        return RoomPlan(membership, first) if first or changes or full_state else None

    leave_at = membership_position if membership in ("leave", "ban") else None
    if position is not None and changes:
        before = changes[0].previous
        rejoined = any(change.membership != "join" for change in changes)
        if membership == "join" and (before != "join" or rejoined):
            first = True  # newly joined (SPEC §9.3): decided on transitions, not events
        elif (
            leave_at is not None
            and before != "join"
            and any(change.membership == "join" for change in changes)
        ):
            first = True  # joined and left again inside the interval
    if membership == "join":
        if first:
            return RoomPlan("join", True, now, None)
        if room_changed or changes or full_state:
            return RoomPlan("join", False, now, position)
        return None
    # leave or ban: the timeline ends with the leave, then the room goes quiet.
    assert leave_at is not None
    if first:
        return RoomPlan(membership, True, leave_at, None)
    if position is not None and leave_at > position:
        return RoomPlan(membership, False, leave_at, position)
    if full_state:
        return RoomPlan(membership, False, leave_at, leave_at)
    return None


def state_section(
    *,
    start: StateIds,
    previous: StateIds,
    timeline_ids: Collection[str],
    patterns: Iterable[Sequence[str]],
    lazy_members: Collection[str] | None,
) -> dict[StateKey, str]:
    """The ``state`` of a room entry (SPEC §9.2, §9.9).

    ``start`` is the state before the first timeline event (at the end of the interval
    for an empty timeline), ``previous`` what the client has (empty for a first
    delivery or ``full_state``), ``timeline_ids`` the ids of the events in the
    timeline. Entries are those of ``start`` the client does not have, never an event
    of the timeline. With lazy-loading (``lazy_members`` = timeline senders and the
    user), member events are those of these users as of the start, even when sent
    before.
    """
    patterns = [tuple(p) for p in patterns]
    known = set(previous.values())
    timeline = set(timeline_ids)
    result: dict[StateKey, str] = {}
    for key, event_id in start.items():
        if event_id in timeline:
            continue
        if key[0] == MEMBER and lazy_members is not None:
            if key[1] in lazy_members:
                result[key] = event_id  # always, as of the start (SPEC §9.9)
            continue
        if event_id in known or not state_matches(patterns, key):
            continue
        result[key] = event_id
    return result
