"""Synapse's own v2 sync as the oracle for the ``room_data`` stream (SPEC §7.5, §9).

For one syncing user, :class:`Probe` asks both protocols the same question at the same
moment: Synapse's ``GET /_matrix/client/v3/sync`` with a filter that selects the same
rooms, timeline limit and state (``include_leave`` on, so that a first delivery of a
room the user left is compared with v2's archived entry), and ``room_data`` through
``POST /_matrix/client/v3/sync``. Since tokens of both are taken at the same moments
(checkpoints), so an incremental answer can be compared for the same interval, and an
older since can be replayed on both.

The comparison (:func:`compare_room`) takes v2's answer as the expected one, after the
two deliberate differences of SPEC (§9.2, §9.3; SYNAPSE-ROOMS.md §B3 "Differences from
SPEC") have been applied to it:

1. ``state`` is the state *before* the first timeline event, v2's the state *after*
   it. When the timeline starts with a state event E for key K, our ``state`` also
   holds K's previous value (E's ``unsigned.replaces_state``) if it is new to the
   client: always on a first delivery, and on an incremental answer when K's value at
   the previous position differs from it.
2. ``limited`` is true only when older history exists; v2 sets it for every newly
   joined room, even when the timeline starts at ``m.room.create``.

v2 behaviours that SPEC does not share are normalised too, each where it is handled
(expected_state, _compare_events, check_continuation, _compare_full_state_only):
v2's state repeats the first timeline event when a later one changes its key; a state
change hidden inside the window (history visibility) is either its value or the value
at the start in v2 (set iteration order), both accepted; v2's ``state`` events have no
``prev_content``; v2's prev_batch may lie inside the timeline (accepted only as v2's
own self-check); a ``full_state`` answer also reports invited and left rooms.

With lazy-loading, member state is compared as "ours ⊇ v2's and ours ⊆ senders+user"
(SPEC §9.9 allows sending a member event again; v2's own member events of non-senders,
its room summary's heroes and the member changes of a gappy sync, are left out of the
expected state). Everything else must be equal: the
membership, the timeline event ids in order, ``limited``, the state event ids as a set,
the events' content and redaction, the stripped state of invites. Every compared
timeline's ``prev_batch`` is checked through ``GET /rooms/{id}/messages`` (SPEC §9.7).

The ground truth for a room (its whole history, the state at a checkpoint) is read by an
*observer*: a user who is joined from the room's creation on and never leaves, so
``/messages`` shows them every event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import MatrixUser
from harness.client import quote
from tests.integration.helpers import V3, Server

StateKey = tuple[str, str]
Event = dict[str, Any]

MEMBER = "m.room.member"
#: How many events back the prev_batch continuation is checked.
CONTINUATION_EVENTS = 3


class RoomDataNotServed(AssertionError):
    """The server answered ``room_data`` with a stream-level error (not implemented)."""


# --------------------------------------------------------------------------- entries


@dataclass
class Entry:
    """One room's answer, from either protocol, in one shape.

    ``membership`` is ``join``, ``leave``, ``ban``, ``invite``, ``knock``, or ``error``
    (a room_data error entry such as ``M_FORBIDDEN``).
    """

    membership: str
    timeline: list[Event] = field(default_factory=list)
    limited: bool | None = None
    prev_batch: str | None = None
    state: list[Event] = field(default_factory=list)
    stripped: list[Event] = field(default_factory=list)
    raw: Any = None
    #: v2 only: other sections the room appeared in as well (v2 reports a room that was
    #: left and is now invited to in both ``leave`` and ``invite``).
    also: list[str] = field(default_factory=list)

    @property
    def timeline_ids(self) -> list[str]:
        return [event["event_id"] for event in self.timeline]

    @property
    def state_ids(self) -> set[str]:
        return {event["event_id"] for event in self.state}

    def state_map(self) -> dict[StateKey, str]:
        return {(e["type"], e["state_key"]): e["event_id"] for e in self.state}

    def events_by_id(self) -> dict[str, Event]:
        return {event["event_id"]: event for event in [*self.state, *self.timeline]}


def _my_membership_in(events: Iterable[Event], me: str) -> str | None:
    found = None
    for event in events:
        if event.get("type") == MEMBER and event.get("state_key") == me:
            found = event.get("content", {}).get("membership")
    return found


def v2_entries(body: Mapping[str, Any], me: str) -> dict[str, Entry]:
    """v2's ``rooms.join/invite/knock/leave`` as entries; a room in several sections is
    taken from the first of join, invite, knock, leave (its current membership)."""
    rooms = body.get("rooms", {})
    out: dict[str, Entry] = {}
    for section in ("join", "invite", "knock", "leave"):
        for room_id, obj in rooms.get(section, {}).items():
            if room_id in out:
                out[room_id].also.append(section)
                continue
            if section in ("invite", "knock"):
                stripped = obj[f"{section}_state"]["events"]
                out[room_id] = Entry(section, stripped=stripped, raw=obj)
                continue
            timeline = obj.get("timeline", {})
            entry = Entry(
                "join",
                timeline=timeline.get("events", []),
                limited=timeline.get("limited", False),
                prev_batch=timeline.get("prev_batch"),
                state=obj.get("state", {}).get("events", []),
                raw=obj,
            )
            if section == "leave":
                # v2's leave section holds kicks, leaves and bans alike; the user's own
                # last member event (the timeline ends with it) says which.
                mine = _my_membership_in([*entry.state, *entry.timeline], me)
                entry.membership = "ban" if mine == "ban" else "leave"
            out[room_id] = entry
    return out


def v3_entries(body: Mapping[str, Any]) -> dict[str, Entry]:
    """room_data's rooms as entries. Raises :class:`RoomDataNotServed` when the stream
    object is an error (the stream is not implemented by the server under test)."""
    obj = body.get("room_data")
    if obj is None:
        return {}
    if "errcode" in obj:
        raise RoomDataNotServed(f"room_data not served yet: {json.dumps(obj)}")
    out: dict[str, Entry] = {}
    for room_id, room in obj["rooms"].items():
        if "errcode" in room:
            out[room_id] = Entry("error", raw=room)
        elif room.get("membership") in ("invite", "knock"):
            key = f"{room['membership']}_state"
            out[room_id] = Entry(room["membership"], stripped=room[key]["events"], raw=room)
        else:
            timeline = room["timeline"]
            out[room_id] = Entry(
                room["membership"],
                timeline=timeline["events"],
                limited=timeline["limited"],
                prev_batch=timeline.get("prev_batch"),
                state=room["state"]["events"],
                raw=room,
            )
    return out


# ---------------------------------------------------------------------------- params


def _matches(pattern: str, value: str) -> bool:
    return pattern == "*" or pattern == value


@dataclass(frozen=True)
class Params:
    """The room_data parameters of a comparison, and their v2 filter."""

    timeline_limit: int = 20
    #: ``None``: all state (the default of both protocols).
    state_events: tuple[tuple[str, str], ...] | None = None
    lazy_load_members: bool = False

    def room_data(self, rooms: Sequence[str], *, full_state: bool = False) -> dict[str, Any]:
        obj: dict[str, Any] = {"room_ids": list(rooms), "timeline_limit": self.timeline_limit}
        if self.state_events is not None:
            obj["state_events"] = [list(pair) for pair in self.state_events]
        if self.lazy_load_members:
            obj["lazy_load_members"] = True
        if full_state:
            obj["full_state"] = True
        return obj

    def v2_filter(self) -> dict[str, Any]:
        """The v2 filter asking what room_data asks.

        It names no ``rooms``: Synapse's filter matches ``rooms`` against the event's
        ``room_id`` key, which the ``m.room.create`` event of an MSC4291 room (room
        version 12, the default of the newest Synapse) does not have, so v2 would leave the
        create event out of timelines and state. The syncing users of these tests are
        new and in no other rooms that matter; the answer is read for the probed rooms
        only.
        """
        state: dict[str, Any] = {}
        if self.lazy_load_members:
            state["lazy_load_members"] = True
        if self.state_events is not None and all(key == "*" for _, key in self.state_events):
            # v2 filters select types only; a state_events list with state keys is
            # applied to v2's answer instead (wants_state), which is what v2's own
            # filter_room_state does after computing the state.
            state["types"] = [type_ for type_, _ in self.state_events]
        nothing = {"not_types": ["*"]}
        return {
            "room": {
                "timeline": {"limit": self.timeline_limit},
                "state": state,
                "include_leave": True,
                "ephemeral": nothing,
                "account_data": nothing,
            },
            "presence": nothing,
            "account_data": nothing,
        }

    def wants_state(self, type_: str, state_key: str) -> bool:
        if self.state_events is None:
            return True
        return any(_matches(t, type_) and _matches(k, state_key) for t, k in self.state_events)


# ------------------------------------------------------------------------- the room


def messages(
    user: MatrixUser,
    room_id: str,
    *,
    from_token: str | None = None,
    limit: int = 500,
    dir: str = "b",
) -> dict[str, Any]:
    query: dict[str, object] = {"dir": dir, "limit": limit}
    if from_token is not None:
        query["from"] = from_token
    result: dict[str, Any] = user._call("GET", f"/rooms/{quote(room_id)}/messages", query=query)
    return result


def history(user: MatrixUser, room_id: str, *, pages: int = 100) -> list[Event]:
    """Every event ``user`` may see through ``/messages``, oldest first (at most
    ``pages`` pages of 500; Synapse gives an ``end`` token even when the room's start
    was reached, so a page holding ``m.room.create`` is taken as the last)."""
    events: list[Event] = []
    token: str | None = None
    for _ in range(pages):
        page = messages(user, room_id, from_token=token)
        chunk = page.get("chunk", [])
        events.extend(chunk)
        token = page.get("end")
        if token is None or not chunk or any(e["type"] == "m.room.create" for e in chunk):
            break
    events.reverse()
    return events


VISIBILITIES = ("world_readable", "shared", "invited", "joined")
MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")


def _visibility(event: Event | None) -> str:
    value = event["content"].get("history_visibility") if event else None
    return value if value in VISIBILITIES else "shared"


def _priority(membership: str | None) -> int:
    return MEMBERSHIPS.index(membership if membership in MEMBERSHIPS else "leave")


@dataclass
class Snapshot:
    """A room at a checkpoint, as its observer sees it."""

    state: dict[StateKey, str]
    membership: dict[str, str]
    last_event: str | None


@dataclass
class RoomFacts:
    """What the comparison needs to know about a room at the moment of the answers."""

    room_id: str
    me: str
    #: Every event (the observer's view), oldest first.
    events: list[Event]
    #: Ids of the events the syncing user may see through /messages, oldest first;
    #: None when /messages refuses the user.
    visible_or_none: list[str] | None
    #: The user's ignored users (read only when /messages refuses the user).
    ignored: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.position = {event["event_id"]: i for i, event in enumerate(self.events)}

    @property
    def visible(self) -> list[str]:
        """The events the user may see: /messages' answer, or for a user /messages
        refuses (banned), Synapse's visibility rules applied to the history."""
        if self.visible_or_none is not None:
            return self.visible_or_none
        return self.visible_by_rules()

    def visible_by_rules(self) -> list[str]:
        """synapse/visibility.py (not peeking, as sync and /messages call it) over the
        history: the user's membership and the history visibility in the state after
        each event; the user's own membership events by their most joined side; a
        history_visibility event by the laxer of its old and new value; non-state
        events of ignored users left out."""
        state: dict[StateKey, Event] = {}
        out = []
        for event in self.events:
            key = (event["type"], event["state_key"]) if "state_key" in event else None
            before = state.get(key) if key else None
            if key:
                state[key] = event
            if key is None and event.get("sender") in self.ignored:
                continue
            visibility = _visibility(state.get(("m.room.history_visibility", "")))
            if event["type"] == "m.room.history_visibility":
                visibility = min(visibility, _visibility(before), key=VISIBILITIES.index)
            mine = state.get((MEMBER, self.me))
            membership = mine["content"].get("membership") if mine else None
            if key == (MEMBER, self.me):
                was = before["content"].get("membership", "leave") if before else "leave"
                if membership == "leave" and was in ("join", "invite"):
                    out.append(event["event_id"])
                    continue
                if _priority(was) < _priority(membership):
                    membership = was
            if (
                membership == "join"
                or visibility in ("world_readable", "shared")
                or (visibility == "invited" and membership == "invite")
            ):
                out.append(event["event_id"])
        return out

    def after(self, event_id: str | None) -> list[Event]:
        """The events after ``event_id`` (all of them for None)."""
        if event_id is None:
            return list(self.events)
        return self.events[self.position[event_id] + 1 :]

    def my_memberships_after(self, event_id: str | None) -> list[str]:
        return [
            e["content"].get("membership", "")
            for e in self.after(event_id)
            if e["type"] == MEMBER and e.get("state_key") == self.me
        ]

    def visible_before(self, event_id: str | None) -> list[str]:
        """Visible events before ``event_id`` (before the end for None), oldest first."""
        if event_id is None:
            return list(self.visible)
        limit = self.position.get(event_id)
        if limit is None:
            return []
        return [e for e in self.visible if self.position.get(e, -1) < limit]

    def state_before(self, event_id: str | None) -> dict[StateKey, str]:
        """The state before ``event_id`` (at the end for None), replayed from the
        history: the rooms of these tests are local and their DAG linear, so replaying
        in order is what state resolution gives."""
        state: dict[StateKey, str] = {}
        for event in self.events:
            if event["event_id"] == event_id:
                break
            if "state_key" in event:
                state[(event["type"], event["state_key"])] = event["event_id"]
        return state

    def snapshot(self) -> Snapshot:
        """The room now, for a checkpoint."""
        by_id = {event["event_id"]: event for event in self.events}
        state = self.state_before(None)
        membership = {
            key: by_id[event_id]["content"].get("membership", "")
            for (type_, key), event_id in state.items()
            if type_ == MEMBER
        }
        return Snapshot(state, membership, self.events[-1]["event_id"] if self.events else None)


def facts(observer: MatrixUser, me: MatrixUser, room_id: str) -> RoomFacts:
    everything = history(observer, room_id)
    # A room of fewer events than a page is read by the first page, whatever
    # /messages then leaves out for the user.
    pages = 1 if len(everything) < 500 else 100
    try:
        visible: list[str] | None = [e["event_id"] for e in history(me, room_id, pages=pages)]
    except AssertionError:
        # Not allowed to read the room: never joined, invited only, or banned (Synapse
        # lets departed users paginate up to their leave, but not banned ones).
        visible = None
    ignored: frozenset[str] = frozenset()
    if visible is None:
        path = f"/_matrix/client/v3/user/{quote(me.user_id)}/account_data/m.ignored_user_list"
        response = me.client.get(path)
        if response.status == 200:
            ignored = frozenset(response.json().get("ignored_users", {}))
    return RoomFacts(room_id, me.user_id, everything, visible, ignored)


def newly_joined(since: Snapshot, later: Sequence[str], me: str) -> bool:
    """SPEC §9.3: a real join in the interval (one whose previous membership was not
    ``join``), and the user is joined at the end or was not joined at the previous
    position. A join-leave-join-leave of a user who was joined at the previous
    position is an incremental leave."""
    before = since.membership.get(me)
    previous, real_join = before, False
    for membership in later:
        if membership == "join" and previous != "join":
            real_join = True
        previous = membership
    return real_join and (previous == "join" or before != "join")


# ----------------------------------------------------------------------- comparison


def _short(event_id: str) -> str:
    return event_id[:9]


def describe_event(event: Event) -> str:
    text = f"{_short(event['event_id'])} {event['type']}"
    if "state_key" in event:
        key = event["state_key"]
        text += f"[{key.split(':')[0] if key.startswith('@') else key}]"
    content = event.get("content", {})
    if event["type"] == MEMBER:
        text += f"={content.get('membership')}"
    elif "body" in content:
        text += f"={content['body']}"
    elif event["type"] == "m.room.history_visibility":
        text += f"={content.get('history_visibility')}"
    if not content and event["type"] != "m.room.create":
        text += " (redacted)" if "redacted_because" in event.get("unsigned", {}) else " {}"
    sender = event.get("sender", "")
    return f"{text} by {sender.split(':')[0]}"


def describe_entry(entry: Entry | None) -> str:
    if entry is None:
        return "    (no entry)"
    if entry.membership == "error":
        return f"    error {json.dumps(entry.raw)}"
    if entry.membership in ("invite", "knock"):
        items = ", ".join(sorted(_stripped_key(e) for e in entry.stripped))
        return f"    {entry.membership} stripped=[{items}]"
    lines = [
        f"    membership={entry.membership} limited={entry.limited} "
        f"prev_batch={entry.prev_batch}" + (f" also={entry.also}" if entry.also else "")
    ]
    lines.append("    timeline:")
    lines += [f"      {describe_event(e)}" for e in entry.timeline]
    lines.append("    state:")
    lines += [
        f"      {describe_event(e)}"
        for e in sorted(entry.state, key=lambda e: (e["type"], e["state_key"]))
    ]
    return "\n".join(lines)


def _stripped_key(event: Event) -> str:
    return json.dumps(
        [event.get("type"), event.get("state_key"), event.get("sender"), event.get("content")],
        sort_keys=True,
    )


@dataclass
class Context:
    """What one answer covers: a first delivery or the interval after ``since``."""

    me: str
    params: Params
    #: None: a first delivery of the stream (the interval starts at room creation).
    since: Snapshot | None
    facts: RoomFacts
    #: This request carries ``full_state`` (SPEC §9.5: full state at the timeline start).
    full_state: bool = False
    #: With ``full_state``: the room's entry in a v2 *initial* sync at the same moment.
    initial: Entry | None = None


def _redacted_because(event: Event) -> str | None:
    because = event.get("unsigned", {}).get("redacted_because")
    return because.get("event_id") if isinstance(because, dict) else None


def _compare_events(ours: Entry, v2: Entry, facts: RoomFacts) -> list[str]:
    """Content, prev_content and redaction of the events both answers carry.

    v2 loads its ``state`` events without ``unsigned.prev_content`` (only its timeline
    events have it); SPEC §1.5 wants every room event serialized as a v2 *timeline*
    event, so the prev_content of our state events is compared with the observer's
    ``/messages`` view of the same event instead.
    """
    diffs = []
    theirs = {**{e["event_id"]: e for e in v2.state}, **{e["event_id"]: e for e in v2.timeline}}
    timeline = set(v2.timeline_ids)
    observed = {event["event_id"]: event for event in facts.events}
    for event_id, event in ours.events_by_id().items():
        other = theirs.get(event_id)
        if other is None:
            continue
        reference = other if event_id in timeline else observed.get(event_id, other)
        if event.get("content") != other.get("content"):
            diffs.append(
                f"content of {_short(event_id)}: ours {event.get('content')}, v2 "
                f"{other.get('content')}"
            )
        if _redacted_because(event) != _redacted_because(other):
            diffs.append(
                f"redacted_because of {_short(event_id)}: ours "
                f"{_redacted_because(event)}, v2 {_redacted_because(other)}"
            )
        ours_prev = event.get("unsigned", {}).get("prev_content")
        v2_prev = reference.get("unsigned", {}).get("prev_content")
        if ours_prev != v2_prev:
            diffs.append(
                f"prev_content of {_short(event_id)}: ours {ours_prev}, "
                + ("v2" if reference is other else "/messages")
                + f" {v2_prev}"
            )
        if ("room_id" in event) != ("room_id" in other):
            # SPEC §1.5: serialized as v2 serializes (which leaves room_id out, except
            # on the m.room.create event of a room version 12 room in newer Synapse).
            diffs.append(
                f"room_id on {_short(event_id)}: ours {event.get('room_id')}, v2 "
                f"{other.get('room_id')}"
            )
    return diffs


def expected_limited(v2: Entry, ctx: Context) -> bool:
    """v2's ``limited``, except for newly joined rooms of an incremental answer."""
    limited = bool(v2.limited)
    if ctx.since is None or not v2.limited:
        return limited
    later = ctx.facts.my_memberships_after(ctx.since.last_event)
    if newly_joined(ctx.since, later, ctx.me):
        # SPEC difference 2 (§9.3, §9.6): v2 sets limited for every newly joined room
        # (_load_filtered_recents: `limited or newly_joined_room`); ours is true only
        # when the user may see older events than the first timeline event.
        first = v2.timeline_ids[0] if v2.timeline else None
        return bool(ctx.facts.visible_before(first)) if first else limited
    return limited


def expected_state(v2: Entry, ctx: Context) -> tuple[set[str], list[set[str | None]]]:
    """v2's state event ids, turned into the state SPEC §9.2 wants: the state before
    the first timeline event (the part new to the client on an incremental answer).

    Returns the ids that must be there, and groups of which exactly one must be there
    (None: or none of them) for keys whose value v2 itself does not fix (see below).
    """
    params = ctx.params
    allowed = _allowed_members(v2, ctx)

    def wanted(key: StateKey) -> bool:
        if not params.wants_state(*key):
            return False
        # SPEC §9.9: member state only of timeline senders and the user. v2 also sends
        # the members of its room summary's heroes (compute_summary, for rooms without
        # a name), and every member change of a gappy incremental sync (where it turns
        # lazy-loading off); room_data has neither.
        return not (params.lazy_load_members and key[0] == MEMBER and key[1] not in allowed)

    def new_to_client(key: StateKey, value: str) -> bool:
        if ctx.since is None or ctx.full_state:
            return True
        later = ctx.facts.my_memberships_after(ctx.since.last_event)
        return newly_joined(ctx.since, later, ctx.me) or ctx.since.state.get(key) != value

    state = {e["event_id"] for e in v2.state if wanted((e["type"], e["state_key"]))}
    either: list[set[str | None]] = []
    if not v2.timeline:
        return state, either
    first = v2.timeline[0]
    facts = ctx.facts
    start = facts.state_before(first["event_id"])
    if v2.membership == "join":
        end = facts.state_before(None)  # the end of the interval is now
    else:  # the user's leave, the last timeline event
        end = facts.state_before(v2.timeline[-1]["event_id"])
        last = v2.timeline[-1]
        if "state_key" in last:
            end[(last["type"], last["state_key"])] = last["event_id"]
    window = facts.position.get(first["event_id"], len(facts.events))
    undecided: set[StateKey] = set()
    for key, value in end.items():
        if value in v2.timeline_ids or facts.position.get(value, -1) <= window:
            continue
        if not wanted(key) or start.get(key) == value:
            continue
        # A state change inside the window that the timeline does not show (hidden by
        # history visibility). v2 computes (state at the end | state after the first
        # event) - what the client had - the timeline's last event per key, and builds
        # a dict from that set: when the key's value at the start differs too, v2
        # sends either value, whichever the set iterates last. SPEC §9.2 says "the
        # state before the first timeline event" (its note on v2 does not foresee this
        # case); either is accepted, each if new to the client, and reported as such.
        state.discard(value)
        options: set[str | None] = {value if new_to_client(key, value) else None}
        before = start.get(key)
        if before is not None:
            state.discard(before)
            options.add(before if new_to_client(key, before) else None)
        else:
            options.add(None)
        either.append(options)
        undecided.add(key)
    if "state_key" not in first:
        return state, either
    # Also part of difference 1: v2's state (after E) holds E itself when a later
    # timeline event changed K again (v2 only leaves out the *last* timeline event of
    # each key); SPEC §9.2 never repeats a timeline event in state.
    state.discard(first["event_id"])
    key = (first["type"], first["state_key"])
    previous = first.get("unsigned", {}).get("replaces_state")
    # SPEC difference 1 (§9.2): our state is the state *before* the first timeline
    # event, v2's the state after it (its own comment: "strictly speaking, this returns
    # the state after the first event in the timeline"). So ours also holds K's previous
    # value when it is new to the client: always on a first delivery, and on an
    # incremental answer when K changed between the previous position and the start of
    # the timeline.
    if previous and wanted(key) and key not in undecided and new_to_client(key, previous):
        state.add(previous)  # (a key changed again, hidden, is one of the groups above)
    return state, either


def _allowed_members(entry: Entry, ctx: Context) -> set[str]:
    return {event["sender"] for event in entry.timeline} | {ctx.me}


def _pick(ours: set[str], expected: set[str], either: list[set[str | None]]) -> set[str]:
    """``expected`` plus, of each ``either`` group, the one ours holds (or, if ours
    holds none and the group allows none, nothing; else the group's first id)."""
    result = set(expected)
    for options in either:
        held = ours & {option for option in options if option is not None}
        if len(held) == 1:
            result |= held
        elif not held and None in options:
            continue
        else:
            result.add(sorted(o for o in options if o is not None)[0])
    return result


def _compare_state(ours: Entry, v2: Entry, ctx: Context) -> list[str]:
    required, either = expected_state(v2, ctx)
    ours_ids = ours.state_ids
    expected = _pick(ours_ids, required, either)
    if not ctx.params.lazy_load_members:
        if ours_ids == expected:
            return []
        return [
            "state differs: ours only "
            + _names(ours_ids - expected, ours, ctx)
            + "; v2 (with SPEC's differences) only "
            + _names(expected - ours_ids, v2, ctx)
        ]
    # Lazy-loading (SPEC §9.9): non-member state must be equal; member state must hold
    # v2's members of timeline senders and the user (expected_state), may hold such a
    # member event again where v2 leaves it out because it was sent before, and must
    # hold nobody else's.
    diffs = []
    by_id = {e["event_id"]: e for e in ctx.facts.events}
    allowed = _allowed_members(ours, ctx)

    def is_member(event_id: str, entry: Entry) -> bool:
        event = entry.events_by_id().get(event_id) or by_id.get(event_id)
        return bool(event) and event["type"] == MEMBER

    ours_other = {i for i in ours_ids if not is_member(i, ours)}
    exp_other = {i for i in expected if not is_member(i, v2)}
    if ours_other != exp_other:
        diffs.append(
            "non-member state differs (lazy-loading): ours only "
            + _names(ours_other - exp_other, ours)
            + "; v2 (with SPEC's differences) only "
            + _names(exp_other - ours_other, v2, ctx)
        )
    # Compared by user, not by event: v2 may hold a *later* member event than the one
    # at the timeline start (its heroes come from the current state, for example a
    # display name changed after a left room's leave). Our values are checked against
    # the history below.
    known = {**by_id, **v2.events_by_id()}
    exp_users = {known[i]["state_key"]: i for i in expected - exp_other if i in known}
    ours_users = {e["state_key"] for e in ours.state if e["type"] == MEMBER}
    missing = {i for user, i in exp_users.items() if user not in ours_users}
    if missing:
        diffs.append("lazy-loaded members missing from ours: " + _names(missing, v2, ctx))
    first = ours.timeline_ids[0] if ours.timeline else None
    start = ctx.facts.state_before(first) if first else None
    for event in ours.state:
        if event["type"] != MEMBER:
            continue
        if event["state_key"] not in allowed:
            diffs.append(f"lazy-loaded member of a non-sender: {describe_event(event)}")
        elif start is not None and start.get((MEMBER, event["state_key"])) != event["event_id"]:
            diffs.append(
                f"lazy-loaded member is not the value at the timeline start: "
                f"{describe_event(event)}"
            )
    return diffs


def _names(ids: Iterable[str], entry: Entry, ctx: Context | None = None) -> str:
    known = entry.events_by_id()
    if ctx is not None:
        known = {e["event_id"]: e for e in ctx.facts.events} | known
    items = [describe_event(known[i]) if i in known else i for i in sorted(ids)]
    return "{" + ", ".join(items) + "}"


def compare_room(ours: Entry | None, v2: Entry | None, ctx: Context) -> list[str]:
    """The differences between our entry and v2's for one room (empty: equal)."""
    if v2 is None and ours is None:
        return []
    if v2 is None:
        assert ours is not None
        if ours.membership == "error":
            # SPEC §7.5: a room the user has no membership in gets M_FORBIDDEN on its
            # first delivery; v2 simply leaves it out.
            if ctx.since is not None:
                return ["error entry on an incremental answer: " + json.dumps(ours.raw)]
            if _has_membership(ctx):
                return ["M_FORBIDDEN for a room the user has a membership in"]
            return []
        if ctx.full_state and ctx.initial is not None:
            return _compare_full_state_only(ours, ctx.initial, ctx)
        return ["ours reports the room, v2 does not"]
    if ours is None:
        return ["v2 reports the room, ours does not"]
    if ours.membership != v2.membership:
        return [f"membership: ours {ours.membership}, v2 {v2.membership}"]
    if v2.membership in ("invite", "knock"):
        ours_items = sorted(_stripped_key(e) for e in ours.stripped)
        v2_items = sorted(_stripped_key(e) for e in v2.stripped)
        if ours_items != v2_items:
            return [f"{v2.membership} state differs: ours {ours_items}, v2 {v2_items}"]
        return []
    diffs = []
    if ours.timeline_ids != v2.timeline_ids:
        diffs.append(
            "timeline differs: ours "
            + str([_short(i) for i in ours.timeline_ids])
            + ", v2 "
            + str([_short(i) for i in v2.timeline_ids])
        )
    limited = expected_limited(v2, ctx)
    if ours.limited is not limited:
        diffs.append(f"limited: ours {ours.limited}, expected {limited} (v2 {v2.limited})")
    diffs += _compare_state(ours, v2, ctx)
    diffs += _compare_events(ours, v2, ctx.facts)
    return diffs


def _compare_full_state_only(ours: Entry, initial: Entry, ctx: Context) -> list[str]:
    """A room that only our ``full_state`` answer reports.

    SPEC §9.5: with ``full_state`` every room of the set the user may see is reported;
    v2's incremental ``full_state`` sync reports joined rooms (and rooms whose
    membership changed) only, not a room the user was invited to or left before the
    interval. Its entry in a v2 initial sync is the reference for the membership and
    invite state; the state is the full state at the start of our timeline (after the
    user's leave when the timeline is empty), read from the history.
    """
    if ours.membership != initial.membership:
        return [f"full_state membership: ours {ours.membership}, v2 initial {initial.membership}"]
    if ours.membership in ("invite", "knock"):
        ours_items = sorted(_stripped_key(e) for e in ours.stripped)
        v2_items = sorted(_stripped_key(e) for e in initial.stripped)
        if ours_items != v2_items:
            return [f"full_state {ours.membership} state: ours {ours_items}, v2 {v2_items}"]
        return []
    facts, params = ctx.facts, ctx.params
    if ours.timeline:
        state = facts.state_before(ours.timeline_ids[0])
    else:
        leave = initial.timeline[-1] if initial.timeline else None
        if leave is None or leave.get("state_key") != ctx.me:
            return ["full_state leave entry: cannot tell where the user left"]
        state = facts.state_before(leave["event_id"])
        state[(MEMBER, ctx.me)] = leave["event_id"]
    allowed = _allowed_members(ours, ctx)
    expected = {
        event_id
        for key, event_id in state.items()
        if params.wants_state(*key)
        and event_id not in ours.timeline_ids
        and not (params.lazy_load_members and key[0] == MEMBER and key[1] not in allowed)
    }
    if ours.state_ids != expected:
        return [
            "full_state state: ours only "
            + _names(ours.state_ids - expected, ours, ctx)
            + "; the history only "
            + _names(expected - ours.state_ids, ours, ctx)
        ]
    return []


def _has_membership(ctx: Context) -> bool:
    return any(e["type"] == MEMBER and e.get("state_key") == ctx.me for e in ctx.facts.events)


# ---------------------------------------------------------------- prev_batch check


def follow_prev_batch(user: MatrixUser, room_id: str, token: str, count: int) -> list[str]:
    """Up to ``count`` event ids from ``/messages?dir=b&from=<token>``, newest first,
    following ``end`` when a page comes back short (``/messages`` filters after
    fetching). Raises AssertionError on an error answer."""
    got: list[str] = []
    next_token: str | None = token
    for _ in range(20):
        if next_token is None or len(got) >= count:
            break
        response = user.client.get(
            f"/_matrix/client/v3/rooms/{quote(room_id)}/messages",
            query={"dir": "b", "from": next_token, "limit": count - len(got)},
        )
        page = response.expect(200, f"/messages from prev_batch {token}")
        got += [event["event_id"] for event in page.get("chunk", [])]
        next_token = page.get("end")
    return got[:count]


def check_continuation(
    user: MatrixUser,
    observer: MatrixUser,
    entry: Entry,
    facts: RoomFacts,
    *,
    count: int = CONTINUATION_EVENTS,
    end_quirk: bool = False,
) -> tuple[list[str], bool]:
    """SPEC §9.7: ``/messages?dir=b&from=<prev_batch>`` returns, newest first, the
    visible events just before the first timeline event (before the end when the
    timeline is empty): no gap, no overlap.

    Returns the problems, and whether the answer showed v2's quirk (accepted only with
    ``end_quirk``): a prev_batch inside or at the end of the timeline, so that
    ``/messages`` repeats timeline events. v2 gives that whenever it loaded the
    timeline by pagination and did not cut it (a room's whole history on an initial
    sync, a newly joined or left room whose timeline fits): ``_load_filtered_recents``
    then keeps ``upto_token`` (the end of a left room's timeline, the previous position
    for a newly joined room) as prev_batch. Not to be mirrored (SPEC §9.7).

    When ``/messages`` refuses the user (Synapse refuses banned users), the observer
    reads from prev_batch instead and its view of the history is the reference: that
    still checks where prev_batch points.
    """
    if entry.membership not in ("join", "leave", "ban"):
        return [], False
    if not entry.prev_batch:
        return ["timeline has no prev_batch"], False
    first = entry.timeline_ids[0] if entry.timeline else None
    if first is not None and first not in facts.position:
        return [f"first timeline event {_short(first)} is not in the room's history"], False
    if first is None and entry.membership != "join":
        return [], False  # an empty leave timeline: where it ends is not known here
    if facts.visible_or_none is None:
        reader, visible_ids = observer, [event["event_id"] for event in facts.events]
    else:
        reader, visible_ids = user, facts.visible_or_none
    position = facts.position
    limit = position[first] if first is not None else len(facts.events)
    before = [i for i in visible_ids if position.get(i, -1) < limit]
    expected = list(reversed(before))[:count]
    try:
        got = follow_prev_batch(reader, facts.room_id, entry.prev_batch, count)
    except AssertionError as e:
        return [str(e)], False
    if got == expected:
        return [], False
    if end_quirk and entry.timeline and got and got[0] in visible_ids:
        # Where v2's upto_token lies inside or after the timeline: /messages then gives
        # the visible events up to that point, repeating (part of) the timeline.
        upto = visible_ids.index(got[0])
        if position.get(got[0], -1) >= limit and got == visible_ids[upto::-1][:count]:
            return [], True
    overlap = sorted(set(got) & set(entry.timeline_ids))
    return [
        f"/messages from prev_batch gives {[_short(i) for i in got]}, expected the visible "
        f"events before the timeline {[_short(i) for i in expected]}"
        + (f" (repeats timeline events {[_short(i) for i in overlap]})" if overlap else "")
    ], False


# --------------------------------------------------------------------------- probing


@dataclass
class Checkpoint:
    """A moment at which both protocols took a since token, and the rooms then."""

    label: str
    v2_token: str
    v3_token: str
    snapshots: dict[str, Snapshot]


@dataclass
class Answer:
    """Both protocols' answers to one question, and how they compare."""

    label: str
    since: Checkpoint | None
    params: Params
    v2_request: dict[str, Any]
    v2_body: dict[str, Any]
    v2: dict[str, Entry]
    v3_request: dict[str, Any]
    v3_body: dict[str, Any] | None
    ours: dict[str, Entry] | None
    facts: dict[str, RoomFacts]
    #: Room id -> differences (rooms without differences are left out).
    differences: dict[str, list[str]] = field(default_factory=dict)
    #: Failures of v2's own prev_batch continuation (a problem of the oracle).
    oracle_problems: list[str] = field(default_factory=list)
    #: v2 timelines whose prev_batch is the end of the timeline (see check_continuation).
    v2_end_prev_batch: int = 0
    compared: int = 0

    def report(self, rooms: Iterable[str] | None = None) -> str:
        """The request and both answers, per room with differences (or ``rooms``)."""
        lines = [
            f"{self.label}: since checkpoint "
            + (self.since.label if self.since else "(none: first delivery)"),
            f"  sync v3 request: POST /sync?since={self.v3_request.get('since')} "
            f"{json.dumps(self.v3_request.get('body'))}",
            f"  v2 request: GET /sync?since={self.v2_request.get('since')} "
            f"full_state={self.v2_request.get('full_state', False)} filter="
            f"{json.dumps(self.v2_request.get('filter'))}",
        ]
        if rooms is None:
            rooms = sorted(
                set(self.differences) | {p.split(" ")[1].rstrip(":") for p in self.oracle_problems}
            )
        for room_id in rooms:
            lines.append(f"  room {room_id}:")
            for diff in self.differences.get(room_id, []):
                lines.append(f"   DIFFERENCE {diff}")
            lines.append("   ours:")
            lines.append(describe_entry((self.ours or {}).get(room_id)))
            lines.append("   v2:")
            lines.append(describe_entry(self.v2.get(room_id)))
        for problem in self.oracle_problems:
            lines.append(f"  ORACLE {problem}")
        return "\n".join(lines)

    def assert_same(self) -> None:
        assert not self.differences and not self.oracle_problems, self.report()

    def entry(self, room_id: str) -> Entry:
        """Our entry for ``room_id`` (asserting there is one)."""
        assert self.ours is not None and room_id in self.ours, self.report([room_id])
        return self.ours[room_id]


class Probe:
    """Asks Synapse's v2 sync and room_data the same questions for one user.

    Two devices of the user: ``me`` (whose device runs the chained sync v3 session and
    the chained v2 syncs whose tokens are replayed) and ``fresh`` (new sync v3 sessions
    and v2 initial syncs, so that v2's lazy-loading cache of the chain is not reset).
    Both protocols share a device on purpose: the module must keep its lazy-loading
    bookkeeping apart from v2's (SYNAPSE-ROOMS.md §B3, pitfall 1).

    ``tolerate_not_served``: when room_data answers with a stream error, record it in
    ``not_served`` and go on with v2 alone (its prev_batch checks) instead of raising
    :class:`RoomDataNotServed`. ``cache_facts``: read the rooms' histories once until
    :meth:`moved` is called, instead of for every question. ``check_v2``: check v2's
    own prev_batch continuation too (always done while room_data is not served).
    """

    def __init__(
        self,
        server: Server,
        me: MatrixUser,
        observer: MatrixUser,
        rooms: Sequence[str],
        params: Params | None = None,
        *,
        tolerate_not_served: bool = False,
        cache_facts: bool = False,
        check_v2: bool = True,
    ) -> None:
        self.me = me
        self.fresh = server.login(me)
        self.observer = observer
        self.rooms = list(rooms)
        self.params = params or Params()
        self.checkpoints: list[Checkpoint] = []
        self.answers: list[Answer] = []
        self.tolerate_not_served = tolerate_not_served
        self.not_served: str | None = None
        self.cache_facts = cache_facts
        self.check_v2 = check_v2
        self._facts: dict[str, RoomFacts] | None = None

    def moved(self) -> None:
        """Something happened in the rooms (needed with ``cache_facts`` only)."""
        self._facts = None

    def facts(self) -> dict[str, RoomFacts]:
        """The rooms now (cached until :meth:`moved` with ``cache_facts``)."""
        if self._facts is None or not self.cache_facts:
            self._facts = {room: facts(self.observer, self.me, room) for room in self.rooms}
        return self._facts

    # The questions -------------------------------------------------------------

    def start(self, label: str = "start") -> Answer:
        """A first delivery on the chained session; its tokens are the first checkpoint."""
        return self._ask(label, self.me, since=None, record=True)

    def first_delivery(self, label: str = "first delivery") -> Answer:
        """A first delivery now, on a new session of the other device."""
        return self._ask(label, self.fresh, since=None, record=False)

    def step(self, label: str | None = None, *, full_state: bool = False) -> Answer:
        """The chain's next incremental answer; its tokens become a checkpoint."""
        assert self.checkpoints, "start() first"
        label = label or f"step {len(self.checkpoints)}"
        return self._ask(
            label, self.me, since=self.checkpoints[-1], record=True, full_state=full_state
        )

    def replay(self, since: Checkpoint, label: str | None = None) -> Answer:
        """The incremental answer for (since, now] again, on both protocols."""
        return self._ask(label or f"replay of {since.label}", self.me, since=since, record=False)

    # Doing it --------------------------------------------------------------------

    def _ask(
        self,
        label: str,
        user: MatrixUser,
        *,
        since: Checkpoint | None,
        record: bool,
        full_state: bool = False,
    ) -> Answer:
        v2_filter = self.params.v2_filter()
        v2_request: dict[str, Any] = {"since": since.v2_token if since else None}
        v2_request["filter"] = v2_filter
        if full_state:
            v2_request["full_state"] = True
        v2_body = user.v2_sync(**v2_request)
        initial: dict[str, Entry] = {}
        if full_state:
            body = self.fresh.v2_sync(filter=v2_filter)
            initial = v2_entries(body, self.me.user_id)
        if since is None:
            v3_body_sent: dict[str, Any] = {"room_data": self.params.room_data(self.rooms)}
        elif full_state:
            v3_body_sent = {"room_data": self.params.room_data(self.rooms, full_state=True)}
        else:
            v3_body_sent = {}
        v3_since = since.v3_token if since else None
        v3_body = V3(user).ok(v3_body_sent, since=v3_since, timeout=0)
        room_facts = self.facts()
        answer = Answer(
            label=label,
            since=since,
            params=self.params,
            v2_request=v2_request,
            v2_body=v2_body,
            v2=v2_entries(v2_body, self.me.user_id),
            v3_request={"since": v3_since, "body": v3_body_sent},
            v3_body=v3_body,
            ours=None,
            facts=room_facts,
        )
        if record:
            snapshots = {room: room_facts[room].snapshot() for room in self.rooms}
            self.checkpoints.append(
                Checkpoint(label, v2_body["next_batch"], v3_body["next"], snapshots)
            )
        self.answers.append(answer)
        try:
            ours = v3_entries(v3_body) if self.not_served is None else None
        except RoomDataNotServed as e:
            if not self.tolerate_not_served:
                raise
            self.not_served, ours = str(e), None
        if self.check_v2 or ours is None:
            for room_id, entry in answer.v2.items():
                if room_id in room_facts:
                    problems, quirk = check_continuation(
                        user, self.observer, entry, room_facts[room_id], end_quirk=True
                    )
                    answer.oracle_problems += [f"v2 {room_id}: {p}" for p in problems]
                    answer.v2_end_prev_batch += quirk
        if ours is None:
            return answer  # v2 only (see tolerate_not_served)
        answer.ours = ours
        self._compare(answer, since, user, full_state, initial)
        return answer

    def _compare(
        self,
        answer: Answer,
        since: Checkpoint | None,
        user: MatrixUser,
        full_state: bool,
        initial: dict[str, Entry],
    ) -> None:
        assert answer.ours is not None
        for room_id in self.rooms:
            ctx = Context(
                self.me.user_id,
                self.params,
                since.snapshots[room_id] if since else None,
                answer.facts[room_id],
                full_state=full_state,
                initial=initial.get(room_id),
            )
            ours = answer.ours.get(room_id)
            diffs = compare_room(ours, answer.v2.get(room_id), ctx)
            if ours is not None:
                diffs += check_continuation(user, self.observer, ours, answer.facts[room_id])[0]
            answer.compared += 1
            if diffs:
                answer.differences[room_id] = diffs
        extra = set(answer.ours) - set(self.rooms)
        if extra:
            answer.differences["(other rooms)"] = [f"ours reports rooms not asked for: {extra}"]
