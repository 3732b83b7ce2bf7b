"""The room_list stream (SPEC §7.4, §7.5.1; §14 items 61–67 and 78), black-box over HTTP.

Where SPEC defines an entry by what Synapse reports (names, member counts, unread
counts, timelines), first deliveries are compared with a v2 initial sync of the same
user (:func:`assert_like_v2`): ``GET /_matrix/client/v3/sync`` with a lazy-loading
filter (so that v2 gives its room summary: member counts and heroes) and the same
timeline limit. v2 gives no room name; the expected name is built from v2's answer by
Synapse's ``calculate_room_name`` rule: ``m.room.name``, else the canonical alias, else
the heroes' display names ("A", "A and B", "A and N others" with N the other joined
and invited members minus one, "Empty Room" when alone).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from harness import MatrixUser
from harness.client import quote
from tests.integration.helpers import V3, Server, after, position_of, timed
from tests.integration.room_oracle import follow_prev_batch, history

JsonDict = dict[str, Any]

#: The fields of a room entry (SPEC §7.4): joined, left and banned rooms, and invites.
ROOM_FIELDS = {
    "room_id",
    "membership",
    "name",
    "joined_count",
    "invited_count",
    "notification_count",
    "highlight_count",
    "state_events",
    "timeline",
    "prev_batch",
    "timestamp",
}
INVITE_FIELDS = {"room_id", "membership", "name", "invite_state", "timestamp"}
ALIAS_RE = re.compile(r"^#.*:.+$")
MEMBER = "m.room.member"


# ------------------------------------------------------------------------- reading


def listing(body: JsonDict) -> JsonDict:
    """The room_list object of a response (asserting it is there and not an error)."""
    assert "room_list" in body, f"no room_list object in {body}"
    obj: JsonDict = body["room_list"]
    assert "errcode" not in obj, f"room_list answered with an error: {obj}"
    assert isinstance(obj.get("rooms"), list), obj
    return obj


def ids(obj: JsonDict) -> list[str]:
    return [entry["room_id"] for entry in obj["rooms"]]


def entry_of(obj: JsonDict, room_id: str) -> JsonDict:
    found = [entry for entry in obj["rooms"] if entry["room_id"] == room_id]
    assert len(found) == 1, f"{room_id} appears {len(found)} times in {ids(obj)}"
    return found[0]


def event_ids(entry: JsonDict) -> list[str]:
    return [event["event_id"] for event in entry.get("timeline", [])]


def check_shape(entry: JsonDict) -> None:
    """The fields SPEC §7.4 lists for the entry's membership, and nothing else."""
    if entry["membership"] == "invite":
        assert set(entry) == INVITE_FIELDS, f"invite entry fields {sorted(entry)}"
        events = entry["invite_state"]["events"]
        last = events[-1]
        assert last["type"] == MEMBER and last["content"]["membership"] == "invite", last
    else:
        assert entry["membership"] in ("join", "leave", "ban"), entry
        assert set(entry) == ROOM_FIELDS, f"{entry['membership']} entry fields {sorted(entry)}"
        for event in entry["timeline"]:
            assert "room_id" not in event and event["event_id"].startswith("$"), event
    assert isinstance(entry["timestamp"], int), entry


def same_position(token: str, other: str) -> bool:
    """Whether two tokens hold the same room_list position (a continuation page
    leaves it unchanged; the rest of the token, such as the version of the session's
    stored state, may move)."""
    return position_of(token, "room_list") == position_of(other, "room_list")


def page(
    v3: V3, params: JsonDict, cursor: str, since: str, *, key: str = "since", **kwargs: Any
) -> JsonDict:
    """A continuation page: the same params with ``p`` (which is never stored)."""
    return v3.ok({"room_list": {**params, "p": {key: cursor}}}, since=since, **kwargs)


def moderate(admin: MatrixUser, room_id: str, action: str, user: MatrixUser) -> str:
    """Kick or ban ``user``; the event id of their new member event."""
    admin._call("POST", f"/rooms/{quote(room_id)}/{action}", {"user_id": user.user_id})
    event = admin._call("GET", f"/rooms/{quote(room_id)}/state/{MEMBER}/{quote(user.user_id)}")
    assert event["membership"] == ("ban" if action == "ban" else "leave"), event
    return member_event_id(admin, room_id, user)


def member_event_id(observer: MatrixUser, room_id: str, user: MatrixUser) -> str:
    """The event id of ``user``'s current member event (seen by ``observer``)."""
    events = observer._call("GET", f"/rooms/{quote(room_id)}/state")
    for event in events:
        if event["type"] == MEMBER and event["state_key"] == user.user_id:
            event_id: str = event["event_id"]
            return event_id
    raise AssertionError(f"no member event of {user.user_id} in {room_id}")


def mention(sender: MatrixUser, room_id: str, target: MatrixUser, body: str = "hey") -> str:
    """A message that highlights ``target`` (intentional mention)."""
    mentions = {"m.mentions": {"user_ids": [target.user_id]}}
    return sender.send_message(room_id, f"{body} {target.user_id}", **mentions)


def room_for(owner: MatrixUser, me: MatrixUser, *, name: str | None = None, **extra: Any) -> str:
    """A room of ``owner`` that ``me`` has joined."""
    room = owner.create_room(invite=[me.user_id], name=name, **extra)
    me.join(room)
    return room


def current_state(user: MatrixUser, room_id: str) -> list[JsonDict]:
    state: list[JsonDict] = user._call("GET", f"/rooms/{quote(room_id)}/state")
    return state


#: Requests that must not wait get this timeout and must answer in well under it:
#: the margin lets a stalled machine (a busy CI runner) through, not a wait.
LONG_TIMEOUT_MS = 30000
AT_ONCE_S = 10


def ok_timed(
    v3: V3, body: JsonDict, since: str, timeout: int = LONG_TIMEOUT_MS
) -> tuple[JsonDict, float]:
    """A request that has data at once: its answer and how long it took."""
    started = time.monotonic()
    answer = v3.ok(body, since=since, timeout=timeout)
    return answer, time.monotonic() - started


def wait_quiet(v3: V3, since: str, timeout: int = 1000) -> None:
    """A long-poll with nothing for the session: the timeout reply, after the wait."""
    body, elapsed = timed(lambda: v3.ok({}, since=since, timeout=timeout))
    assert body == {"next": since}, f"expected the timeout reply, got {body}"
    assert elapsed >= timeout / 1000 * 0.9


# ------------------------------------------------------------------------ v2 oracle


def v2_initial(server: Server, me: MatrixUser, timeline_limit: int) -> JsonDict:
    """A v2 initial sync of ``me`` (on a new device, so that v2's lazy-loading cache
    holds nothing) with room summaries and ``timeline_limit``."""
    nothing = {"not_types": ["*"]}
    flt = {
        "room": {
            "timeline": {"limit": timeline_limit},
            "state": {"lazy_load_members": True},
            "ephemeral": nothing,
            "account_data": nothing,
        },
        "presence": nothing,
        "account_data": nothing,
    }
    return server.login(me).v2_sync(filter=flt)


def _last_state(events: Iterable[JsonDict], type_: str, state_key: str) -> JsonDict | None:
    found = None
    for event in events:
        if event.get("type") == type_ and event.get("state_key") == state_key:
            found = event
    return found


def v2_name(me: MatrixUser, room_id: str, v2_room: JsonDict) -> str:
    """The room name Synapse's calculate_room_name gives for v2's answer."""
    events = [*v2_room["state"]["events"], *v2_room["timeline"]["events"]]
    name = _last_state(events, "m.room.name", "")
    value = name["content"].get("name") if name is not None else None
    if isinstance(value, str) and value:
        return value
    alias = _last_state(events, "m.room.canonical_alias", "")
    if alias is not None:
        value = alias["content"].get("alias")
        if isinstance(value, str) and value and ALIAS_RE.match(value):
            return value
    summary = v2_room["summary"]
    others = summary["m.joined_member_count"] + summary.get("m.invited_member_count", 0) - 1
    heroes = summary.get("m.heroes", [])
    if others <= 0 or not heroes:
        return "Empty Room"
    names = [_display_name(me, room_id, hero, events) for hero in heroes]
    if others == 1:
        return names[0]
    if others == 2:
        return f"{names[0]} and {names[1]}"
    return f"{names[0]} and {others - 1} others"


def _display_name(me: MatrixUser, room_id: str, user_id: str, events: list[JsonDict]) -> str:
    event = _last_state(events, MEMBER, user_id)
    content = (
        event["content"]
        if event is not None
        else me._call("GET", f"/rooms/{quote(room_id)}/state/{MEMBER}/{quote(user_id)}")
    )
    displayname = content.get("displayname")
    return displayname if isinstance(displayname, str) and displayname else user_id


def assert_like_v2(
    server: Server, me: MatrixUser, entries: Sequence[JsonDict], timeline_limit: int
) -> None:
    """Names, member and unread counts, timelines and invite state of first-delivery
    ``entries`` equal what v2 reports for the same rooms now; prev_batch continues the
    timeline through ``/messages`` (SPEC §9.7)."""
    body = v2_initial(server, me, timeline_limit)
    rooms = body.get("rooms", {})
    problems: list[str] = []
    for entry in entries:
        room_id = entry["room_id"]
        if entry["membership"] == "invite":
            v2_invite = rooms.get("invite", {}).get(room_id)
            if v2_invite is None:
                problems.append(f"{room_id}: an invite for us, not in v2's invites")
                continue
            stripped = v2_invite["invite_state"]["events"]
            expected = _last_state(stripped, "m.room.name", "")
            name = expected["content"].get("name") if expected else None
            if entry["name"] != (name or None):
                problems.append(f"{room_id}: invite name {entry['name']!r}, v2 gives {name!r}")
            ours = {(e["type"], e["state_key"]) for e in entry["invite_state"]["events"]}
            theirs = {(e["type"], e["state_key"]) for e in stripped}
            if ours != theirs:
                problems.append(f"{room_id}: invite state {sorted(ours)} vs v2 {sorted(theirs)}")
            continue
        v2_room = rooms.get("join", {}).get(room_id)
        if v2_room is None:
            problems.append(f"{room_id}: joined for us, not in v2's joined rooms")
            continue
        summary = v2_room["summary"]
        unread = v2_room.get("unread_notifications", {})
        expected_fields = {
            "name": v2_name(me, room_id, v2_room),
            "joined_count": summary["m.joined_member_count"],
            "invited_count": summary.get("m.invited_member_count", 0),
            "notification_count": unread.get("notification_count", 0),
            "highlight_count": unread.get("highlight_count", 0),
        }
        for key, value in expected_fields.items():
            if entry.get(key) != value:
                problems.append(f"{room_id}: {key} {entry.get(key)!r}, v2 gives {value!r}")
        v2_timeline = [event["event_id"] for event in v2_room["timeline"]["events"]]
        if event_ids(entry) != v2_timeline:
            problems.append(f"{room_id}: timeline {event_ids(entry)}, v2 gives {v2_timeline}")
        if entry["timeline"]:
            visible = [event["event_id"] for event in history(me, room_id)]
            first = visible.index(entry["timeline"][0]["event_id"])
            expected_before = visible[max(0, first - 1) : first]
            got = follow_prev_batch(me, room_id, entry["prev_batch"], 1)
            if got != expected_before:
                problems.append(
                    f"{room_id}: /messages from prev_batch gives {got}, expected {expected_before}"
                )
    assert not problems, "differences from v2 sync:\n" + "\n".join(problems)


# --------------------------------------------------------------- §14 item 61, §7.4


def test_first_delivery_of_joined_and_invited_rooms(server: Server) -> None:  # item 61
    alice, bob = server.user(displayname="Alice"), server.user(displayname="Bob")
    me = server.user(displayname="Me")
    garden = room_for(alice, me, name="Garden")
    kitchen = room_for(alice, me, name="Kitchen")
    unnamed = room_for(alice, me)  # named after its other member (item 66)
    party = bob.create_room(invite=[me.user_id], name="Party planning")
    message = alice.send_message(garden, "hello")
    topic = alice.send_state(kitchen, "m.room.topic", "", {"topic": "a state event"})

    body = V3(me).ok({"room_list": {}})
    obj = listing(body)
    # by_recency: the room's most recent event, whatever its type; the invite's for
    # invites. The unnamed room's last event is my join, before the invite.
    assert ids(obj) == [kitchen, garden, party, unnamed]
    assert obj["count"] == 4 and "p" not in obj
    assert (obj["limit"], obj["sort"], obj["timeline_limit"]) == (20, ["by_recency"], 1)
    for entry in obj["rooms"]:
        check_shape(entry)
    assert event_ids(entry_of(obj, kitchen)) == [topic]
    assert event_ids(entry_of(obj, garden)) == [message]
    assert entry_of(obj, unnamed)["name"] == "Alice"
    for room in (kitchen, garden, unnamed):
        entry = entry_of(obj, room)
        assert entry["membership"] == "join"
        assert entry["timestamp"] == entry["timeline"][-1]["origin_server_ts"]
        assert entry["state_events"] == []  # none requested
    invite = entry_of(obj, party)
    assert invite["membership"] == "invite" and invite["name"] == "Party planning"
    last = invite["invite_state"]["events"][-1]
    assert (last["state_key"], last["sender"]) == (me.user_id, bob.user_id)
    invite_event = [
        e for e in history(bob, party) if e["type"] == MEMBER and e["state_key"] == me.user_id
    ][-1]
    assert invite["timestamp"] == invite_event["origin_server_ts"]
    assert_like_v2(server, me, obj["rooms"], 1)


def test_five_rooms_in_pages_of_two(server: Server) -> None:  # item 62
    bob, me = server.user(displayname="Bob"), server.user()
    rooms = [room_for(bob, me, name=f"Five {n}") for n in range(5)]
    for room in rooms:
        bob.send_message(room, "latest")
    v3 = V3(me)
    params = {"limit": 2}
    first = v3.ok({"room_list": params})
    pages = [listing(first)]
    since = first["next"]
    while "p" in pages[-1]:
        # Paging goes on with the same since or with the previous page's next.
        started = time.monotonic()
        body = page(v3, params, pages[-1]["p"]["next"], since, timeout=LONG_TIMEOUT_MS)
        elapsed = time.monotonic() - started
        assert elapsed < AT_ONCE_S, "a continuation request never waits"
        assert same_position(body["next"], first["next"]), "a continuation page leaves it"
        pages.append(listing(body))
        since = body["next"]
    assert [len(p["rooms"]) for p in pages] == [2, 2, 1]
    assert [p["count"] for p in pages] == [5, 5, 5]
    assert ["p" in p for p in pages] == [True, True, False]
    seen = [room for p in pages for room in ids(p)]
    assert seen == list(reversed(rooms)), "pages in by_recency order, disjoint, covering"


# ---------------------------------------------------- snapshot pages (SPEC §7.4)


def test_pages_stay_fixed_while_the_rooms_change(server: Server) -> None:
    """Seven rooms in pages of two; between the pages, messages, a topic change, a
    leave, an accepted invite and a new invite. The snapshot's order, membership and
    count stay as they were at the anchor, entries show the rooms as of the anchor,
    and every change arrives in streaming mode afterwards."""
    bob, me = server.user(displayname="Bob"), server.user(displayname="Me")
    # r1 is an invite (not joined); its recency is the invite, older than every message.
    rooms = [
        bob.create_room(invite=[me.user_id], name="Seven 1", topic="old")
        if n == 1
        else room_for(bob, me, name=f"Seven {n}", topic="old")
        for n in range(7)
    ]
    before = {}
    for n in (0, 2, 3, 4, 5, 6):
        before[n] = bob.send_message(rooms[n], f"message {n}")
    r = rooms
    v3 = V3(me)
    params = {"limit": 2, "state_events": [["m.room.topic", ""]], "timeline_limit": 1}
    first = v3.ok({"room_list": params})
    anchor = first["next"]
    page1 = listing(first)
    expected_order = [r[6], r[5], r[4], r[3], r[2], r[0], r[1]]
    assert ids(page1) == expected_order[:2] and page1["count"] == 7

    late_r6 = bob.send_message(r[6], "after the anchor")
    late_r0 = bob.send_message(r[0], "after the anchor")
    me.leave(r[3])
    page2 = listing(page(v3, params, page1["p"]["next"], anchor))
    assert ids(page2) == expected_order[2:4] and page2["count"] == 7
    left = entry_of(page2, r[3])
    assert left["membership"] == "join", "the snapshot's membership, not the current one"
    assert event_ids(left) == [before[3]], "a continuation page shows the room at the anchor"

    new_topic = bob.send_state(r[2], "m.room.topic", "", {"topic": "new"})
    me.join(r[1])
    newcomer = bob.create_room(invite=[me.user_id], name="Seven new")
    body3 = page(v3, params, page2["p"]["next"], anchor, key="next")
    assert same_position(body3["next"], anchor)
    page3 = listing(body3)
    assert ids(page3) == expected_order[4:6] and page3["count"] == 7
    r2 = entry_of(page3, r[2])
    assert event_ids(r2) == [before[2]]
    assert [e["content"]["topic"] for e in r2["state_events"]] == ["old"]
    assert event_ids(entry_of(page3, r[0])) == [before[0]]

    late_r5 = bob.send_message(r[5], "after the anchor")
    page4 = listing(page(v3, params, page3["p"]["next"], anchor))
    assert ids(page4) == expected_order[6:] and page4["count"] == 7 and "p" not in page4
    assert entry_of(page4, r[1])["membership"] == "invite"
    check_shape(entry_of(page4, r[1]))
    every = ids(page1) + ids(page2) + ids(page3) + ids(page4)
    assert sorted(every) == sorted(r) and len(set(every)) == 7 and newcomer not in every

    # Streaming from the anchor (a larger limit: no reset, SPEC §5.4): every change.
    streamed = listing(v3.ok({"room_list": {**params, "limit": 10}}, since=anchor))
    assert "p" not in streamed and streamed["count"] == 7
    assert set(ids(streamed)) == {r[6], r[0], r[3], r[2], r[1], newcomer, r[5]}
    # Newest first: r5's message, the invite, my join, the topic, my leave, r0, r6.
    assert ids(streamed) == [r[5], newcomer, r[1], r[2], r[3], r[0], r[6]]
    assert event_ids(entry_of(streamed, r[6])) == [late_r6]
    assert event_ids(entry_of(streamed, r[0])) == [late_r0]
    assert event_ids(entry_of(streamed, r[5])) == [late_r5]
    gone = entry_of(streamed, r[3])
    assert gone["membership"] == "leave" and gone["timeline"][-1]["state_key"] == me.user_id
    assert gone["timeline"][-1]["content"]["membership"] == "leave"
    r2 = entry_of(streamed, r[2])
    assert event_ids(r2) == [new_topic]
    assert [e["content"]["topic"] for e in r2["state_events"]] == ["new"]
    assert entry_of(streamed, r[1])["membership"] == "join"
    assert entry_of(streamed, newcomer)["membership"] == "invite"
    for entry in streamed["rooms"]:
        check_shape(entry)


def _past_the_end(cursor: str) -> str | None:
    """``cursor`` moved past the end of its snapshot, if the cursor format is known."""
    try:
        from synapse_syncv3.core.room_list import Cursor  # type: ignore[attr-defined]
    except ImportError:
        return None
    decoded = Cursor.decode(cursor)
    if decoded is None:
        return None
    past: str = Cursor(decoded.snapshot_id, 1000).encode()
    return past


def test_bad_cursors_change_nothing(server: Server) -> None:
    bob, me = server.user(), server.user()
    rooms = [room_for(bob, me, name=f"Cursor {n}") for n in range(3)]
    v3 = V3(me)
    params = {"limit": 1}
    first = v3.ok({"room_list": params})
    anchor, cursor = first["next"], listing(first)["p"]["next"]

    def refused(body: JsonDict, since: str | None, what: str) -> None:
        err = v3.error(body, since=since, timeout=5000)
        assert (err.status, err.errcode) == (400, "M_INVALID_PARAM"), f"{what}: {err!r}"

    refused({"room_list": {**params, "p": {"since": "garbage"}}}, anchor, "garbage cursor")
    refused({"room_list": {"limit": 5, "p": {"since": cursor + "x"}}}, anchor, "mangled cursor")
    refused({"room_list": {**params, "p": {"since": cursor}}}, None, "cursor without since")
    refused(
        {"room_list": {**params, "p": {"since": cursor, "next": "other"}}},
        anchor,
        "p.since and p.next differ",
    )
    past = _past_the_end(cursor)
    if past is not None:
        refused({"room_list": {**params, "p": {"since": past}}}, anchor, "past the end")

    # Another anchor: the stream moved on (a message, then a streaming request).
    bob.send_message(rooms[0], "moves the position")
    moved = v3.ok({}, since=anchor)
    assert ids(listing(moved)) == [rooms[0]]
    assert listing(moved)["limit"] == 1, "the refused 'limit: 5' was not stored"
    refused({"room_list": {**params, "p": {"since": cursor}}}, moved["next"], "moved anchor")
    # Another snapshot taken later: its anchor differs from the first one's.
    again = v3.ok({"room_list": {**params, "p": {}}}, since=moved["next"])
    other_cursor = listing(again)["p"]["next"]
    refused({"room_list": {**params, "p": {"since": cursor}}}, again["next"], "older snapshot")
    refused({"room_list": {**params, "p": {"since": other_cursor}}}, anchor, "newer snapshot")

    # Nothing changed: the first snapshot still pages from its anchor.
    second = page(v3, params, cursor, anchor)
    assert same_position(second["next"], anchor)
    assert listing(second)["count"] == 3 and len(ids(listing(second))) == 1
    order = ids(listing(first)) + ids(listing(second))
    third = page(v3, params, listing(second)["p"]["next"], anchor)
    order += ids(listing(third))
    assert sorted(order) == sorted(rooms) and "p" not in listing(third)


# ---------------------------------------------------------- streaming (SPEC §7.4)


def test_a_message_in_streaming_mode(server: Server) -> None:  # item 63
    (bob, me, carol) = (server.user(), server.user(), server.user())
    quiet, busy = room_for(bob, me, name="Quiet"), room_for(bob, me, name="Busy")
    elsewhere = carol.create_room()  # not one of my rooms
    v3 = V3(me)
    first = v3.ok({"room_list": {}})
    assert set(ids(listing(first))) == {quiet, busy}
    # Activity outside my rooms does not end the wait.
    with after(0.3, lambda: carol.send_message(elsewhere, "not mine")):
        wait_quiet(v3, first["next"], 1500)
    sent: list[str] = []
    with after(0.3, lambda: sent.append(bob.send_message(busy, "news"))):
        woke, elapsed = timed(lambda: v3.ok({}, since=first["next"], timeout=LONG_TIMEOUT_MS))
    assert elapsed < AT_ONCE_S
    obj = listing(woke)
    assert ids(obj) == [busy] and obj["count"] == 2 and "p" not in obj
    entry = entry_of(obj, busy)
    check_shape(entry)
    assert entry["membership"] == "join" and event_ids(entry)[-1] == sent[0]
    assert (obj["limit"], obj["sort"], obj["timeline_limit"]) == (20, ["by_recency"], 1)
    wait_quiet(v3, woke["next"], 500)
    # Replaying the older since gives the interval's data again (SPEC §4.5).
    assert ids(listing(v3.ok({}, since=first["next"]))) == [busy]


def test_a_limit_cut_loses_nothing(server: Server) -> None:
    bob, me = server.user(), server.user()
    rooms = [room_for(bob, me, name=f"Ten {n}") for n in range(10)]
    v3 = V3(me)
    first = v3.ok({"room_list": {"limit": 3}})
    assert listing(first)["count"] == 10 and len(ids(listing(first))) == 3
    latest = {room: bob.send_message(room, "changed") for room in rooms}
    since = first["next"]
    seen: list[list[str]] = []  # the rooms of each response
    again: str | None = None
    while True:
        reported = {room for response in seen for room in response}
        later = {room for response in seen[1:] for room in response}
        if reported == set(rooms) and again in later:
            break
        assert len(seen) < 6, f"changes still missing after {len(seen)} responses: {seen}"
        body, elapsed = ok_timed(v3, {}, since)
        assert elapsed < AT_ONCE_S, "the rest of a cut batch is data at once"
        obj = listing(body)
        assert 1 <= len(obj["rooms"]) <= 3 and obj["limit"] == 3 and obj["count"] == 10
        for entry in obj["rooms"]:
            assert event_ids(entry)[-1] == latest[entry["room_id"]], "a fresh entry at now"
        seen.append(ids(obj))
        since = body["next"]
        if again is None:
            # A room already reported changes again while others are still pending.
            again = ids(obj)[0]
            latest[again] = bob.send_message(again, "changed again")
    wait_quiet(v3, since, 1000)


def test_kick_ban_rejected_and_withdrawn_invites(server: Server) -> None:  # item 64
    alice, me = server.user(displayname="Alice"), server.user(displayname="Me")
    room_for(alice, me, name="Stays")
    kicked = room_for(alice, me, name="Kicked")
    banned = room_for(alice, me, name="Banned")
    rejected = alice.create_room(invite=[me.user_id], name="Rejected")
    withdrawn = alice.create_room(invite=[me.user_id], name="Withdrawn")
    v3 = V3(me)
    first = v3.ok({"room_list": {"timeline_limit": 3}})
    assert listing(first)["count"] == 5

    alice.send_message(kicked, "before the kick")
    mention(alice, kicked, me)
    kick = moderate(alice, kicked, "kick", me)
    alice.send_message(kicked, "after the kick")
    body = v3.ok({}, since=first["next"])
    obj = listing(body)
    assert ids(obj) == [kicked] and obj["count"] == 4
    entry = entry_of(obj, kicked)
    check_shape(entry)
    assert entry["membership"] == "leave" and event_ids(entry)[-1] == kick
    assert (entry["notification_count"], entry["highlight_count"]) == (0, 0)
    # Reported once; later messages in the room are not.
    alice.send_message(kicked, "still talking")
    wait_quiet(v3, body["next"], 500)

    ban = moderate(alice, banned, "ban", me)
    me.leave(rejected)
    moderate(alice, withdrawn, "kick", me)
    body = v3.ok({}, since=body["next"])
    obj = listing(body)
    assert set(ids(obj)) == {banned, rejected, withdrawn} and obj["count"] == 1
    for entry in obj["rooms"]:
        check_shape(entry)
    assert entry_of(obj, banned)["membership"] == "ban"
    assert event_ids(entry_of(obj, banned))[-1] == ban
    for room in (rejected, withdrawn):
        entry = entry_of(obj, room)
        assert entry["membership"] == "leave"
        mine = entry["timeline"][-1]
        assert (mine["type"], mine["state_key"]) == (MEMBER, me.user_id)
        assert mine["content"]["membership"] == "leave"
    for room in (banned, rejected, withdrawn):
        alice.send_message(room, "nobody listens")
    wait_quiet(v3, body["next"], 500)

    # A new membership change brings a left room back.
    alice.invite(kicked, me.user_id)
    body = v3.ok({}, since=body["next"])
    assert ids(listing(body)) == [kicked] and listing(body)["count"] == 2
    assert entry_of(listing(body), kicked)["membership"] == "invite"


# ------------------------------------------------------------------- sorts, counts


def test_sorts_with_ties_and_counts_like_v2(server: Server) -> None:  # item 65
    bob, me = server.user(displayname="Bob"), server.user(displayname="Me")
    echo = room_for(bob, me, name="Echo")
    delta_a = room_for(bob, me, name="delta")
    delta_b = room_for(bob, me, name="Delta")
    alpha_a = room_for(bob, me, name="Alpha")
    alpha_b = room_for(bob, me, name="alpha")
    # Unread: echo 2 (one in a thread), delta_a 2, delta_b 2 with a highlight; the
    # alphas none (their last event is my join). Activity order gives recency.
    root = bob.send_message(echo, "root")
    bob.send_event(
        echo,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "in a thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        },
    )
    bob.send_message(delta_b, "one")
    bob.send_message(delta_a, "one")
    mention(bob, delta_b, me)
    bob.send_message(delta_a, "two")  # delta_a is now the most recent room
    recency = [delta_a, delta_b, echo, alpha_b, alpha_a]
    notifications = {echo: 2, delta_a: 2, delta_b: 2, alpha_a: 0, alpha_b: 0}
    highlights = {echo: 0, delta_a: 0, delta_b: 1, alpha_a: 0, alpha_b: 0}
    names = {echo: "echo", delta_a: "delta", delta_b: "delta", alpha_a: "alpha", alpha_b: "alpha"}

    def expected(sort: Sequence[str]) -> list[str]:
        def key(room: str) -> tuple[Any, ...]:
            parts: list[Any] = []
            for entry in sort:
                parts.append(
                    {
                        "by_recency": recency.index(room),
                        "by_name": names[room],
                        "by_notification_count": -notifications[room],
                        "by_highlight_count": -highlights[room],
                    }[entry]
                )
            return (*parts, room)

        return sorted(recency, key=key)

    v3 = V3(me)
    three = ["by_notification_count", "by_name", "by_recency"]
    body = v3.ok({"room_list": {"sort": three, "timeline_limit": 2}})
    obj = listing(body)
    assert obj["sort"] == three
    assert ids(obj) == expected(three)
    # Counts first, then names with ties (lowercased) broken by recency.
    assert ids(obj) == [delta_a, delta_b, echo, alpha_b, alpha_a]
    for entry in obj["rooms"]:
        room = entry["room_id"]
        assert (entry["notification_count"], entry["highlight_count"]) == (
            notifications[room],
            highlights[room],
        ), room
    assert_like_v2(server, me, obj["rooms"], 2)

    # Changing the sort resets the stream: a first delivery at once, in the new order.
    cases = [
        ["by_name"],  # equal names: room id ascending
        ["by_notification_count", "by_recency"],
        ["by_highlight_count", "by_name", "by_recency"],
        ["by_recency"],
    ]
    since = body["next"]
    for sort in cases:
        body, elapsed = ok_timed(v3, {"room_list": {"sort": sort}}, since)
        assert elapsed < AT_ONCE_S, f"a reset ({sort}) is data at once"
        obj = listing(body)
        assert obj["sort"] == sort and obj["count"] == 5
        assert ids(obj) == expected(sort), sort
        since = body["next"]
    # Repeated values are ignored, [] is the default.
    body = v3.ok({"room_list": {"sort": ["by_name", "by_name", "by_recency"]}}, since=since)
    assert listing(body)["sort"] == ["by_name", "by_recency"]
    body = v3.ok({"room_list": {"sort": [], "limit": 5000}}, since=body["next"])
    assert listing(body)["sort"] == ["by_recency"] and listing(body)["limit"] == 1000


def test_read_receipt_lowers_the_count(server: Server) -> None:
    bob, me = server.user(displayname="Bob"), server.user(displayname="Me")
    room = room_for(bob, me, name="Unread")
    other = room_for(bob, me, name="Other")
    for n in range(3):
        last = bob.send_message(room, f"unread {n}")
    v3 = V3(me)
    first = v3.ok({"room_list": {}})
    assert entry_of(listing(first), room)["notification_count"] == 3
    assert entry_of(listing(first), other)["notification_count"] == 0
    # Someone else's receipt changes none of my counts: no data, the wait goes on.
    with after(0.3, lambda: bob.send_receipt(room, last)):
        wait_quiet(v3, first["next"], 1500)
    # My own receipt: the room is reported with the lower count.
    with after(0.3, lambda: me.send_receipt(room, last)):
        body, elapsed = timed(lambda: v3.ok({}, since=first["next"], timeout=LONG_TIMEOUT_MS))
    assert elapsed < AT_ONCE_S
    obj = listing(body)
    assert ids(obj) == [room]
    entry = entry_of(obj, room)
    assert (entry["notification_count"], entry["highlight_count"]) == (0, 0)
    assert event_ids(entry) == [last], "no new event, the same timeline"
    mention(bob, room, me)
    obj = listing(v3.ok({}, since=body["next"]))
    assert ids(obj) == [room]
    assert (entry_of(obj, room)["notification_count"], entry_of(obj, room)["highlight_count"]) == (
        1,
        1,
    )


# -------------------------------------------------------------------------- names


def test_names_by_synapse_rules_and_null_names_last(server: Server) -> None:  # item 66
    me = server.user(displayname="Me")
    bob, carol = server.user(displayname="Bob"), server.user(displayname="Carol")
    dave, erin = server.user(displayname="Dave"), server.user(displayname="Erin")
    nameless = server.user()
    with_bob = room_for(bob, me)
    with_carol_and_dave = room_for(carol, me)
    carol.invite(with_carol_and_dave, dave.user_id)  # invited members count too
    with_three = room_for(carol, me)
    for user in (dave, erin):
        carol.invite(with_three, user.user_id)
        user.join(with_three)
    with_nameless = room_for(nameless, me)
    # A member event without a display name: the user id names the room.
    nameless.send_state(
        with_nameless, MEMBER, nameless.user_id, {"membership": "join", "displayname": ""}
    )
    alone = me.create_room()
    aliased = me.create_room(room_alias_name=f"zz{me.localpart}")
    named = room_for(bob, me, name="apple")
    empty_name = room_for(bob, me, name="")  # an empty name is no name
    unnamed_invites = [bob.create_room(invite=[me.user_id]) for _ in range(2)]
    named_invite = bob.create_room(invite=[me.user_id], name="Banana")
    expected_names: dict[str, str | None] = {
        with_bob: "Bob",
        with_carol_and_dave: "Carol and Dave",
        with_three: "Carol and 2 others",
        with_nameless: nameless.user_id,
        alone: "Empty Room",
        aliased: f"#zz{me.localpart}:{server.hs.server_name}",
        named: "apple",
        empty_name: "Bob",
        named_invite: "Banana",
        unnamed_invites[0]: None,
        unnamed_invites[1]: None,
    }
    body = V3(me).ok({"room_list": {"sort": ["by_name"]}})
    obj = listing(body)
    got = {entry["room_id"]: entry["name"] for entry in obj["rooms"]}
    assert got == expected_names
    order = sorted(
        expected_names,
        key=lambda room: (
            expected_names[room] is None,
            (expected_names[room] or "").lower(),
            room,
        ),
    )
    assert ids(obj) == order
    assert ids(obj)[-2:] == sorted(unnamed_invites), "null names last, by room id"
    assert_like_v2(server, me, obj["rooms"], 1)


# ---------------------------------------------------------- state and timeline limits


def test_state_events_and_the_timeline_cap(server: Server) -> None:  # item 67
    alice, me = server.user(displayname="Alice"), server.user(displayname="Me")
    bob = server.user(displayname="Bob")
    big = room_for(alice, me, name="Big")
    for n in range(20):
        alice.send_message(big, f"message {n}")
    small = room_for(alice, me, name="Small")
    alice.invite(small, bob.user_id)
    alice.send_state(small, "org.example.thing", "k", {"v": 1})
    v3 = V3(me)
    body = v3.ok({"room_list": {"state_events": [[MEMBER, "*"]], "timeline_limit": 50}})
    obj = listing(body)
    assert obj["timeline_limit"] == 20
    for entry in obj["rooms"]:
        assert len(entry["timeline"]) <= 20
        state = current_state(alice, entry["room_id"])
        members = {(e["state_key"], e["event_id"]) for e in state if e["type"] == MEMBER}
        got = {(e["state_key"], e["event_id"]) for e in entry["state_events"]}
        assert {e["type"] for e in entry["state_events"]} == {MEMBER}
        assert got == members, entry["room_id"]
    assert len(entry_of(obj, big)["timeline"]) == 20
    assert_like_v2(server, me, obj["rooms"], 20)

    # Wildcards; a change of state_events resets the stream (data at once).
    filters = [
        [["*", ""]],
        [["*", "*"]],
        [["org.example.thing", "*"], ["m.room.name", ""]],
    ]
    since = body["next"]
    for wanted in filters:
        body, elapsed = ok_timed(v3, {"room_list": {"state_events": wanted}}, since)
        assert elapsed < AT_ONCE_S
        obj = listing(body)
        for entry in obj["rooms"]:
            expected = {
                e["event_id"]
                for e in current_state(alice, entry["room_id"])
                if any(t in ("*", e["type"]) and k in ("*", e["state_key"]) for t, k in wanted)
            }
            assert {e["event_id"] for e in entry["state_events"]} == expected, wanted
        since = body["next"]

    # timeline_limit 0: no events, and prev_batch continues from the end (SPEC §9.7).
    body, elapsed = ok_timed(v3, {"room_list": {"timeline_limit": 0}}, since)
    assert elapsed < AT_ONCE_S
    obj = listing(body)
    assert obj["timeline_limit"] == 0
    for entry in obj["rooms"]:
        assert entry["timeline"] == []
        latest = history(me, entry["room_id"])[-1]["event_id"]
        assert follow_prev_batch(me, entry["room_id"], entry["prev_batch"], 1) == [latest]


# ------------------------------------------------------- the room set of room_data


def test_room_data_follows_the_room_list(server: Server) -> None:  # item 78
    alice, me = server.user(displayname="Alice"), server.user(displayname="Me")
    rooms = [room_for(alice, me, name=f"Set {n}") for n in range(3)]
    v3 = V3(me)
    params = {"limit": 2}
    room_data = {"room_ids": "room_list", "timeline_limit": 3}
    first = v3.ok({"room_list": params, "room_data": room_data})
    listed = ids(listing(first))
    assert len(listed) == 2
    assert "errcode" not in first["room_data"], first["room_data"]
    assert set(first["room_data"]["rooms"]) == set(listed)
    # The next page's room enters the set in the same response: its first delivery.
    second = page(v3, params, listing(first)["p"]["next"], first["next"])
    (third_room,) = ids(listing(second))
    assert set(second["room_data"]["rooms"]) == {third_room}
    delivered = second["room_data"]["rooms"][third_room]
    assert delivered["membership"] == "join"
    assert ("m.room.create", "") in {
        (e["type"], e["state_key"]) for e in delivered["state"]["events"]
    }
    assert sorted([*listed, third_room]) == sorted(rooms)
    # A room that enters the list in streaming mode enters room_data's set too.
    invited = alice.create_room(invite=[me.user_id], name="Set invite")
    third = v3.ok({}, since=second["next"])
    assert ids(listing(third)) == [invited]
    assert third["room_data"]["rooms"][invited]["membership"] == "invite"


# ------------------------------------------------------------------ rooms left out


def test_invites_from_ignored_users_are_left_out(server: Server) -> None:  # SPEC §7.4
    bob, carol = server.user(displayname="Bob"), server.user(displayname="Carol")
    me = server.user(displayname="Me")
    me.set_account_data("m.ignored_user_list", {"ignored_users": {carol.user_id: {}}})
    joined = room_for(bob, me, name="Joined")
    ignored = carol.create_room(invite=[me.user_id], name="From Carol")
    invited = bob.create_room(invite=[me.user_id], name="From Bob")
    v3 = V3(me)
    first = v3.ok({"room_list": {}})
    obj = listing(first)
    assert set(ids(obj)) == {joined, invited} and obj["count"] == 2
    assert ignored not in v2_initial(server, me, 1).get("rooms", {}).get("invite", {})
    with after(0.3, lambda: carol.create_room(invite=[me.user_id], name="Again")):
        wait_quiet(v3, first["next"], 1500)
    bob.invite(joined, carol.user_id)  # an event in a listed room ends the wait
    body = v3.ok({}, since=first["next"], timeout=5000)
    assert ids(listing(body)) == [joined]


def test_invites_the_invite_rules_ignore_are_left_out(own_server: Any) -> None:  # SPEC §7.4
    """Invite permission config (MSC4155, behind Synapse's experimental flag): senders
    it ignores are left out like ignored users, in room_list and room_data, as v2."""
    server: Server = own_server(extra_config={"experimental_features": {"msc4155_enabled": True}})
    bob, carol = server.user(displayname="Bob"), server.user(displayname="Carol")
    me = server.user(displayname="Me")
    me.set_account_data(
        "org.matrix.msc4155.invite_permission_config", {"ignored_users": [carol.user_id]}
    )
    ignored = carol.create_room(invite=[me.user_id], name="From Carol")
    invited = bob.create_room(invite=[me.user_id], name="From Bob")
    v2_invites = v2_initial(server, me, 1).get("rooms", {}).get("invite", {})
    assert set(v2_invites) == {invited}  # the oracle: v2 leaves Carol's invite out
    v3 = V3(me)
    first = v3.ok({"room_list": {}, "room_data": {"room_ids": [ignored, invited]}})
    assert ids(listing(first)) == [invited] and listing(first)["count"] == 1
    assert set(first["room_data"]["rooms"]) == {invited}
    # A new invite from Carol is no change for either stream; Bob's is.
    with after(0.3, lambda: carol.invite(carol.create_room(), me.user_id)):
        wait_quiet(v3, first["next"], 1500)
    again = bob.create_room(invite=[me.user_id], name="Again")
    assert ids(listing(v3.ok({}, since=first["next"], timeout=5000))) == [again]
    # Rules that no longer ignore Carol show her invites on the next first page.
    me.set_account_data("org.matrix.msc4155.invite_permission_config", {})
    other = V3(me)
    assert ignored in ids(listing(other.ok({"room_list": {}})))


def test_events_the_user_may_not_see_are_no_change(server: Server) -> None:  # SPEC §7.4
    bob, carol = server.user(displayname="Bob"), server.user(displayname="Carol")
    me = server.user(displayname="Me")
    me.set_account_data("m.ignored_user_list", {"ignored_users": {carol.user_id: {}}})
    joined = room_for(bob, me, name="Joined")
    bob.invite(joined, carol.user_id)
    carol.join(joined)  # a state event: visible even from an ignored user
    invited = bob.create_room(invite=[me.user_id], name="Invited")  # history: shared
    v3 = V3(me)
    first = v3.ok({"room_list": {}})
    assert ids(listing(first)) == [invited, joined]
    # Carol's message is left out for me (SPEC §9.10), so is a message in a room
    # whose history I may not see yet: neither is a change, the wait goes on.
    with after(0.3, lambda: carol.send_message(joined, "ignored")):
        wait_quiet(v3, first["next"], 1500)
    with after(0.3, lambda: bob.send_message(invited, "not for invitees")):
        wait_quiet(v3, first["next"], 1500)
    last = bob.send_message(joined, "heard")
    obj = listing(v3.ok({}, since=first["next"], timeout=5000))
    assert ids(obj) == [joined] and event_ids(entry_of(obj, joined)) == [last]


def test_rooms_excluded_from_sync_are_left_out(own_server: Any) -> None:  # SPEC §7.4
    server: Server = own_server()
    bob, me = server.user(), server.user()
    hidden = room_for(bob, me, name="Hidden")
    shown = room_for(bob, me, name="Shown")
    # Another user's snapshot, taken before the restart, pages on after it (§10.4).
    pager = server.user()
    pager_rooms = [room_for(bob, pager, name=f"Pager {n}") for n in range(2)]
    pager_v3 = V3(pager)
    before = pager_v3.ok({"room_list": {"limit": 1}})
    server.hs.extra_config["exclude_rooms_from_sync"] = [hidden]
    server.restart()
    after_restart = page(pager_v3, {"limit": 1}, listing(before)["p"]["next"], before["next"])
    assert ids(listing(before)) + ids(listing(after_restart)) == pager_rooms[::-1]
    v3 = V3(me)
    first = v3.ok({"room_list": {}})
    obj = listing(first)
    assert ids(obj) == [shown] and obj["count"] == 1
    with after(0.3, lambda: bob.send_message(hidden, "unseen")):
        wait_quiet(v3, first["next"], 1500)
    bob.send_message(shown, "seen")
    assert ids(listing(v3.ok({}, since=first["next"]))) == [shown]
