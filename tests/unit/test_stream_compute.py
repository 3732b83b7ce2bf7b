"""The compute side of every served stream (SPEC §7.1–7.3, §7.6–7.9), each against a
small fake of the part of ``SynapseCompat`` it uses.

Tokens are :class:`Token`, one integer per Synapse stream; each fake reads its own
field and records the calls the stream makes, so that a test can check that the
cheap path (nothing moved) asks Synapse nothing expensive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import attrs
import pytest

from synapse_syncv3.config import MaxLimits, SyncV3Config
from synapse_syncv3.core.members import Cursor, Member
from synapse_syncv3.errors import FORBIDDEN, INVALID_PARAM, SyncV3Error
from synapse_syncv3.streams import build_streams
from synapse_syncv3.streams.base import LoadedPosition, Stream, StreamContext, StreamRequest

USER = "@alice:test"
DEVICE = "ALICEPHONE"
REQUESTER = "the requester"
STREAMS = build_streams()


@attrs.frozen
class Token:
    """A fake Synapse ``StreamToken``."""

    typing: int = 0
    to_device: int = 0
    room: int = 0
    receipts: int = 0
    account_data: int = 0
    push_rules: int = 0
    presence: int = 0
    device_lists: int = 0


class Fake:
    """Records every call of the methods that ask Synapse for data."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [call[1:] for call in self.calls if call[0] == name]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def context(synapse: Any, now: Token, config: SyncV3Config | None = None) -> StreamContext:
    return StreamContext(
        user_id=USER,
        device_id=DEVICE,
        requester=REQUESTER,
        synapse=synapse,
        config=config or SyncV3Config(),
        now=now,
    )


def request(stream: Stream, obj: dict[str, Any], position: Any = None) -> StreamRequest:
    """What the handler asks ``stream`` for a body object ``obj``."""
    parsed = stream.parse_params(obj)
    return StreamRequest(params=parsed.stored, per_request=parsed.per_request, position=position)


# -- typing (SPEC §7.1) ----------------------------------------------------------------


class FakeTyping(Fake):
    def __init__(self, joined: Collection[str], typing: dict[str, list[str]], current: int) -> None:
        super().__init__()
        self.joined = frozenset(joined)
        self.typing = typing
        self.current = current
        #: Rooms whose typing set changed after a typing key, by key.
        self.changed_at: dict[str, int] = {}

    @staticmethod
    def typing_key(token: Token) -> int:
        return token.typing

    def current_typing_key(self) -> int:
        return self.current

    async def joined_rooms(self, user_id: str) -> frozenset[str]:
        self.calls.append(("joined_rooms", user_id))
        return self.joined

    async def typing_in_rooms(
        self, user_id: str, room_ids: Collection[str], from_key: int, to_key: int | None
    ) -> dict[str, list[str]]:
        self.calls.append(("typing_in_rooms", list(room_ids), from_key, to_key))
        return {
            room_id: self.typing.get(room_id, [])
            for room_id in room_ids
            if self.changed_at.get(room_id, 0) > from_key
            and (to_key is None or self.changed_at[room_id] <= to_key)
        }


TYPING = STREAMS["typing"]


def test_typing_load_position_clamps_to_the_current_key() -> None:
    fake = FakeTyping([], {}, current=10)
    ctx = context(fake, Token(typing=10))
    assert run(TYPING.load_position(ctx, "5")) == LoadedPosition(5)
    # Ahead of Synapse (it restarted and typing is in memory): clamped.
    assert run(TYPING.load_position(ctx, "50")) == LoadedPosition(10)


def test_typing_moved() -> None:
    fake = FakeTyping([], {}, current=0)
    ctx = context(fake, Token())
    assert TYPING.moved(ctx, Token(typing=3, room=1), Token(typing=4, room=1))
    assert not TYPING.moved(ctx, Token(typing=3, room=1), Token(typing=3, room=9))


def test_typing_first_delivery_single_room() -> None:
    fake = FakeTyping({"!a:test", "!b:test"}, {"!a:test": ["@bob:test"]}, current=7)
    fake.changed_at = {"!a:test": 3}
    result = run(
        TYPING.compute(context(fake, Token(typing=7)), request(TYPING, {"room_id": "!a:test"}))
    )
    assert (result.payload, result.has_data, result.position) == (
        {"user_ids": ["@bob:test"]},
        True,
        "7",
    )
    # The current set, whatever changed when.
    assert fake.called("typing_in_rooms") == [(["!a:test"], 0, None)]


def test_typing_first_delivery_single_room_nobody_typing() -> None:
    fake = FakeTyping({"!a:test"}, {}, current=7)
    result = run(
        TYPING.compute(context(fake, Token(typing=7)), request(TYPING, {"room_id": "!a:test"}))
    )
    assert (result.payload, result.has_data) == ({"user_ids": []}, True)


def test_typing_first_delivery_of_a_room_not_joined() -> None:
    fake = FakeTyping({"!b:test"}, {"!a:test": ["@bob:test"]}, current=7)
    result = run(
        TYPING.compute(context(fake, Token(typing=7)), request(TYPING, {"room_id": "!a:test"}))
    )
    assert (result.payload, result.has_data, result.position) == ({}, True, "7")


def test_typing_first_delivery_multi_room() -> None:
    fake = FakeTyping({"!a:test", "!b:test"}, {"!a:test": ["@bob:test"]}, current=7)
    fake.changed_at = {"!a:test": 3}
    req = request(TYPING, {"room_ids": ["!a:test", "!b:test", "!not_joined:test"]})
    result = run(TYPING.compute(context(fake, Token(typing=7)), req))
    assert result.payload == {
        "rooms": {"!a:test": {"user_ids": ["@bob:test"]}, "!b:test": {"user_ids": []}},
    }
    assert result.has_data and result.position == "7"


def test_typing_incremental_change() -> None:
    fake = FakeTyping({"!a:test", "!b:test"}, {"!a:test": [], "!b:test": ["@bob:test"]}, current=9)
    fake.changed_at = {"!a:test": 2, "!b:test": 8}
    ctx = context(fake, Token(typing=9))
    result = run(
        TYPING.compute(ctx, request(TYPING, {"room_ids": ["!a:test", "!b:test"]}, position=5))
    )
    assert result.payload == {"rooms": {"!b:test": {"user_ids": ["@bob:test"]}}}
    assert (result.has_data, result.position) == (True, "9")
    assert fake.called("typing_in_rooms") == [(["!a:test", "!b:test"], 5, 9)]
    # The single-room form of a room whose set changed back to what it was.
    fake.changed_at = {"!a:test": 8}
    result = run(TYPING.compute(ctx, request(TYPING, {"room_id": "!a:test"}, position=5)))
    assert (result.payload, result.has_data) == ({"user_ids": []}, True)


def test_typing_incremental_without_change_in_tracked_rooms() -> None:
    fake = FakeTyping({"!a:test", "!other:test"}, {"!other:test": ["@bob:test"]}, current=9)
    fake.changed_at = {"!other:test": 8}
    ctx = context(fake, Token(typing=9))
    result = run(TYPING.compute(ctx, request(TYPING, {"room_id": "!a:test"}, position=5)))
    assert (result.payload, result.has_data, result.position) == ({}, False, "9")
    result = run(TYPING.compute(ctx, request(TYPING, {"room_ids": ["!a:test"]}, position=5)))
    assert (result.payload, result.has_data, result.position) == ({"rooms": {}}, False, "9")


@pytest.mark.parametrize("position", [9, 12])
def test_typing_nothing_moved_asks_nothing(position: int) -> None:
    fake = FakeTyping({"!a:test"}, {"!a:test": ["@bob:test"]}, current=9)
    ctx = context(fake, Token(typing=9))
    for obj in ({"room_id": "!a:test"}, {"room_ids": ["!a:test"]}):
        result = run(TYPING.compute(ctx, request(TYPING, obj, position=position)))
        assert not result.has_data
        assert result.position == str(position)
    assert result.payload == {"rooms": {}}
    assert fake.calls == []


# -- to_device (SPEC §7.2) --------------------------------------------------------------


class FakeToDevice(Fake):
    def __init__(self, inbox: dict[int, str], current: int, allocated: int | None = None) -> None:
        super().__init__()
        self.inbox = inbox  # stream id -> message type
        self.current = current
        self.allocated = current if allocated is None else allocated

    @staticmethod
    def to_device_key(token: Token) -> int:
        return token.to_device

    async def bound_to_device_key(self, position: int) -> tuple[int, Token | None]:
        self.calls.append(("bound_to_device_key", position))
        if position <= self.current:
            return position, None
        bounded = min(position, self.allocated)
        return bounded, Token(to_device=bounded, room=99)

    async def to_device_messages(
        self, user_id: str, device_id: str, from_key: int, to_key: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        self.calls.append(("to_device_messages", user_id, device_id, from_key, to_key, limit))
        ids = sorted(i for i in self.inbox if from_key < i <= to_key)[:limit]
        messages = [{"sender": "@bob:test", "type": self.inbox[i], "content": {}} for i in ids]
        return messages, ids[-1] if len(ids) == limit else to_key


TO_DEVICE = STREAMS["to_device"]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def test_to_device_load_position() -> None:
    fake = FakeToDevice({}, current=20, allocated=25)
    ctx = context(fake, Token(to_device=20))
    loaded = run(TO_DEVICE.load_position(ctx, "30"))
    # Ahead of this worker: bound to what the server allocated, and wait for it.
    assert loaded == LoadedPosition(25, wait_for=Token(to_device=25, room=99))
    assert fake.called("bound_to_device_key") == [(30,)]
    # Reached (the usual case): kept, and nothing to wait for.
    assert run(TO_DEVICE.load_position(ctx, "20")) == LoadedPosition(20, wait_for=None)
    assert run(TO_DEVICE.load_position(ctx, "3")) == LoadedPosition(3, wait_for=None)
    assert TO_DEVICE.moved(ctx, Token(to_device=1), Token(to_device=2))
    assert not TO_DEVICE.moved(ctx, Token(to_device=1), Token(to_device=1, typing=5))


def test_to_device_first_delivery_starts_at_zero() -> None:
    fake = FakeToDevice({3: "m.one", 5: "m.two"}, current=6)
    result = run(TO_DEVICE.compute(context(fake, Token(to_device=6)), request(TO_DEVICE, {})))
    assert types(result.payload["events"]) == ["m.one", "m.two"]
    assert (result.has_data, result.position) == (True, "6")
    assert fake.called("to_device_messages") == [(USER, DEVICE, 0, 6, 100)]


def test_to_device_first_delivery_of_an_empty_inbox_is_data() -> None:
    fake = FakeToDevice({}, current=6)
    result = run(TO_DEVICE.compute(context(fake, Token(to_device=6)), request(TO_DEVICE, {})))
    assert (result.payload, result.has_data, result.position) == ({"events": []}, True, "6")


def test_to_device_limit_cut() -> None:
    fake = FakeToDevice({2: "m.a", 4: "m.b", 7: "m.c", 8: "m.d"}, current=10)
    ctx = context(fake, Token(to_device=10))
    result = run(TO_DEVICE.compute(ctx, request(TO_DEVICE, {"limit": 2}, position=1)))
    assert types(result.payload["events"]) == ["m.a", "m.b"]
    # The position is the last message returned, so the next request continues there.
    assert (result.has_data, result.position) == (True, "4")
    result = run(TO_DEVICE.compute(ctx, request(TO_DEVICE, {"limit": 2}, position=4)))
    assert types(result.payload["events"]) == ["m.c", "m.d"]
    assert result.position == "8"
    result = run(TO_DEVICE.compute(ctx, request(TO_DEVICE, {"limit": 2}, position=8)))
    assert (result.payload, result.has_data, result.position) == ({"events": []}, False, "10")


def test_to_device_limit_is_negotiated() -> None:
    fake = FakeToDevice({}, current=10)
    config = SyncV3Config(max_limits=MaxLimits(to_device=50))
    ctx = context(fake, Token(to_device=10), config)
    run(TO_DEVICE.compute(ctx, request(TO_DEVICE, {"limit": 5000}, position=1)))
    assert fake.called("to_device_messages")[-1][-1] == 50


@pytest.mark.parametrize("position", [10, 11])
def test_to_device_nothing_moved_asks_nothing(position: int) -> None:
    fake = FakeToDevice({3: "m.one"}, current=10)
    ctx = context(fake, Token(to_device=10))
    result = run(TO_DEVICE.compute(ctx, request(TO_DEVICE, {}, position=position)))
    assert (result.payload, result.has_data, result.position) == (
        {"events": []},
        False,
        str(position),
    )
    assert fake.calls == []


# -- room_members (SPEC §7.3) -----------------------------------------------------------

ROOM = "!room:test"


@attrs.frozen
class View:
    membership: str | None
    left_at: int | None = None
    world_readable: bool = False


def member(name: str, power: int = 0, membership: str = "join") -> Member:
    return Member(f"@{name}:test", f"${name}", membership, name.capitalize(), power)


class FakeMembers(Fake):
    def __init__(self, members: list[Member], view: View, current: int) -> None:
        super().__init__()
        self.members = members
        self.view = view
        self.current = current
        #: Member events of the room: (event id, room stream position).
        self.events: list[tuple[str, int]] = []

    @staticmethod
    def room_key(token: Token) -> int:
        return token.room

    async def bound_room_position(self, position: int) -> Token:
        return Token(room=min(position, self.current))

    async def membership_view(self, user_id: str, room_id: str) -> View:
        self.calls.append(("membership_view", room_id))
        return self.view

    async def member_state_at(self, room_id: str, position: int) -> list[Member]:
        self.calls.append(("member_state_at", room_id, position))
        return list(self.members)

    async def serialized_state_events(
        self, requester: Any, event_ids: list[str]
    ) -> list[dict[str, Any]]:
        self.calls.append(("serialized_state_events", list(event_ids)))
        return [{"event_id": event_id} for event_id in event_ids]

    def room_changed_since(self, room_id: str, position: int) -> bool:
        return any(at > position for _, at in self.events)

    async def member_event_ids_between(
        self, room_id: str, from_key: int, to_key: int, limit: int
    ) -> list[tuple[str, int]]:
        self.calls.append(("member_event_ids_between", room_id, from_key, to_key, limit))
        return [(e, at) for e, at in self.events if from_key < at <= to_key][:limit]

    async def visible_serialized_events(
        self, requester: Any, event_ids: list[str], is_peeking: bool
    ) -> list[dict[str, Any]]:
        self.calls.append(("visible_serialized_events", list(event_ids), is_peeking))
        return [{"event_id": event_id} for event_id in event_ids]


def event_ids(payload: dict[str, Any] | None) -> list[str]:
    assert payload is not None
    return [event["event_id"] for event in payload["events"]]


FIVE = [member("erin"), member("alice", 100), member("dave"), member("bob", 50), member("carol")]


def members_stream() -> Any:
    # A stream of its own per test: it caches snapshots.
    return build_streams()["room_members"]


def test_room_members_load_position_and_moved() -> None:
    stream = members_stream()
    fake = FakeMembers([], View("join"), current=40)
    ctx = context(fake, Token(room=40))
    assert run(stream.load_position(ctx, "55")) == LoadedPosition(40, wait_for=Token(room=40))
    assert stream.moved(ctx, Token(room=1), Token(room=2))
    assert not stream.moved(ctx, Token(room=1), Token(room=1, typing=3))


def test_room_members_pages_of_a_snapshot() -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View("join"), current=40)
    ctx = context(fake, Token(room=40))
    obj = {"room_id": ROOM, "limit": 2}
    first = run(stream.compute(ctx, request(stream, obj)))
    assert event_ids(first.payload) == ["$alice", "$bob"]  # by_pl
    assert first.payload is not None and first.payload["count"] == 5
    assert (first.has_data, first.position) == (True, "40")
    assert fake.called("member_state_at") == [(ROOM, 40)]

    # Continuation pages: at the anchor, whatever "now" has become; position unchanged.
    later = context(fake, Token(room=45))
    cursor = first.payload["p"]["next"]
    page = request(stream, {**obj, "p": {"since": cursor}}, position=40)
    run(stream.check(later, page))
    second = run(stream.compute(later, page))
    assert event_ids(second.payload) == ["$carol", "$dave"]
    assert (second.has_data, second.position) == (True, "40")
    assert second.payload is not None
    page = request(stream, {**obj, "p": {"next": second.payload["p"]["next"]}}, position=40)
    third = run(stream.compute(later, page))
    assert event_ids(third.payload) == ["$erin"]
    assert third.payload is not None and "p" not in third.payload
    # The snapshot was taken once.
    assert fake.called("member_state_at") == [(ROOM, 40)]


def test_room_members_by_name() -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View("join"), current=40)
    result = run(
        stream.compute(
            context(fake, Token(room=40)), request(stream, {"room_id": ROOM, "sort": "by_name"})
        )
    )
    assert event_ids(result.payload) == ["$alice", "$bob", "$carol", "$dave", "$erin"]
    assert result.payload is not None and "p" not in result.payload


def test_room_members_new_snapshot_on_request() -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View("join"), current=50)
    ctx = context(fake, Token(room=50))
    result = run(stream.compute(ctx, request(stream, {"room_id": ROOM, "p": {}}, position=40)))
    assert (result.has_data, result.position) == (True, "50")
    assert fake.called("member_state_at") == [(ROOM, 50)]


def cursor_for(room_id: str = ROOM, sort: str = "by_pl", anchor: int = 40, offset: int = 2) -> str:
    return Cursor.for_page(room_id, sort, anchor, offset).encode()


@pytest.mark.parametrize(
    ("cursor", "position", "sort"),
    [
        pytest.param("garbage", 40, "by_pl", id="garbage"),
        pytest.param(cursor_for()[:-1] + "A", 40, "by_pl", id="tampered"),
        pytest.param(cursor_for(room_id="!other:test"), 40, "by_pl", id="another room"),
        pytest.param(cursor_for(anchor=39), 40, "by_pl", id="another anchor"),
        pytest.param(cursor_for(), 40, "by_name", id="another sort"),
        pytest.param(cursor_for(), None, "by_pl", id="no position"),
    ],
)
def test_room_members_refuses_foreign_cursors(cursor: str, position: int | None, sort: str) -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View("join"), current=40)
    ctx = context(fake, Token(room=40))
    req = request(stream, {"room_id": ROOM, "sort": sort, "p": {"since": cursor}}, position)
    for phase in (stream.check(ctx, req), stream.compute(ctx, req)):
        with pytest.raises(SyncV3Error) as info:
            run(phase)
        assert (info.value.code, info.value.errcode) == (400, INVALID_PARAM)
    assert fake.calls == []


def test_room_members_cursor_past_the_end() -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View("join"), current=40)
    ctx = context(fake, Token(room=40))
    req = request(stream, {"room_id": ROOM, "p": {"since": cursor_for(offset=5)}}, position=40)
    run(stream.check(ctx, req))  # only the snapshot knows its end
    with pytest.raises(SyncV3Error) as info:
        run(stream.compute(ctx, req))
    assert (info.value.code, info.value.errcode) == (400, INVALID_PARAM)
    assert fake.called("serialized_state_events") == []


def test_room_members_forbidden() -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View("invite"), current=40)
    fake.events = [("$join", 45)]
    ctx = context(fake, Token(room=40))
    first = run(stream.compute(ctx, request(stream, {"room_id": ROOM})))
    assert first.error is not None and first.error["errcode"] == FORBIDDEN
    assert set(first.error) == {"errcode", "error"}
    # Not data, but the position is now, so later requests are in streaming mode.
    assert (first.has_data, first.payload, first.position) == (False, None, "40")
    streaming = run(
        stream.compute(
            context(fake, Token(room=50)), request(stream, {"room_id": ROOM}, position=40)
        )
    )
    assert streaming.error == first.error
    assert (streaming.has_data, streaming.position) == (False, "50")
    assert fake.called("member_state_at") == []
    assert fake.called("member_event_ids_between") == []


def test_room_members_of_a_room_the_user_left() -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View("leave", left_at=30), current=40)
    fake.events = [("$leave", 30), ("$after", 35)]
    result = run(stream.compute(context(fake, Token(room=40)), request(stream, {"room_id": ROOM})))
    assert result.has_data and result.position == "40"
    assert fake.called("member_state_at") == [(ROOM, 30)]  # as of the leave
    result = run(
        stream.compute(
            context(fake, Token(room=40)), request(stream, {"room_id": ROOM}, position=20)
        )
    )
    # Streaming stops at the leave, which is included; peeking from then on.
    assert event_ids(result.payload) == ["$leave"]
    assert fake.called("member_event_ids_between") == [(ROOM, 20, 30, 50)]
    assert fake.called("visible_serialized_events") == [(["$leave"], True)]


def test_room_members_of_a_world_readable_room() -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View(None, world_readable=True), current=40)
    result = run(stream.compute(context(fake, Token(room=40)), request(stream, {"room_id": ROOM})))
    assert result.error is None and result.has_data
    assert fake.called("member_state_at") == [(ROOM, 40)]


def test_room_members_streaming() -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View("join"), current=50)
    fake.events = [("$m1", 41), ("$m2", 44), ("$m3", 47)]
    ctx = context(fake, Token(room=50))
    result = run(stream.compute(ctx, request(stream, {"room_id": ROOM}, position=40)))
    assert event_ids(result.payload) == ["$m1", "$m2", "$m3"]
    assert (result.has_data, result.position) == (True, "50")
    assert fake.called("visible_serialized_events") == [(["$m1", "$m2", "$m3"], False)]


def test_room_members_streaming_limit_cut() -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View("join"), current=50)
    fake.events = [("$m1", 41), ("$m2", 44), ("$m3", 47)]
    ctx = context(fake, Token(room=50))
    obj = {"room_id": ROOM, "limit": 2}
    result = run(stream.compute(ctx, request(stream, obj, position=40)))
    assert event_ids(result.payload) == ["$m1", "$m2"]
    assert (result.has_data, result.position) == (True, "44")
    result = run(stream.compute(ctx, request(stream, obj, position=44)))
    assert event_ids(result.payload) == ["$m3"]
    assert result.position == "50"


def test_room_members_streaming_without_events() -> None:
    stream = members_stream()
    fake = FakeMembers(FIVE, View("join"), current=50)
    ctx = context(fake, Token(room=50))
    # The room has no event after the position: Synapse's change cache says so.
    result = run(stream.compute(ctx, request(stream, {"room_id": ROOM}, position=40)))
    assert (result.payload, result.has_data, result.position) == ({"events": []}, False, "50")
    # Nothing moved at all.
    fake.events = [("$m1", 41)]
    result = run(stream.compute(ctx, request(stream, {"room_id": ROOM}, position=50)))
    assert (result.payload, result.has_data, result.position) == ({"events": []}, False, "50")
    assert fake.called("member_event_ids_between") == []
    assert fake.called("visible_serialized_events") == []
    assert fake.called("member_state_at") == []


# -- receipts (SPEC §7.6) ---------------------------------------------------------------


class FakeReceipts(Fake):
    def __init__(self, joined: Collection[str], receipts: dict[str, int]) -> None:
        super().__init__()
        self.joined = frozenset(joined)
        #: Room -> receipt stream position of its latest receipt.
        self.receipts = receipts

    @staticmethod
    def receipt_key(token: Token) -> int:
        return token.receipts

    @staticmethod
    def receipts_ahead(key: int, since: int) -> bool:
        return key > since

    @staticmethod
    def later_receipt_key(a: int, b: int) -> int:
        return max(a, b)

    async def receipt_position_string(self, key: int) -> str:
        return f"r{key}"

    async def bound_receipt_position(self, stream: int, writers: list[tuple[int, int]]) -> Token:
        self.calls.append(("bound_receipt_position", stream, writers))
        return Token(receipts=stream)

    async def joined_rooms(self, user_id: str) -> frozenset[str]:
        self.calls.append(("joined_rooms", user_id))
        return self.joined

    async def receipts_in_rooms(
        self, user_id: str, room_ids: Collection[str], from_key: int | None, to_key: int
    ) -> dict[str, dict[str, Any]]:
        self.calls.append(("receipts_in_rooms", list(room_ids), from_key, to_key))
        return {
            room_id: {f"$event{at}": {"m.read": {"@bob:test": {"ts": at}}}}
            for room_id, at in self.receipts.items()
            if room_id in room_ids and (from_key or 0) < at <= to_key
        }


RECEIPTS = STREAMS["receipts"]


def test_receipts_load_position_and_moved() -> None:
    fake = FakeReceipts([], {})
    ctx = context(fake, Token(receipts=20))
    assert run(RECEIPTS.load_position(ctx, "m12~1.14")) == LoadedPosition(
        12, wait_for=Token(receipts=12)
    )
    assert fake.called("bound_receipt_position") == [(12, [(1, 14)])]
    assert RECEIPTS.moved(ctx, Token(receipts=1), Token(receipts=2))
    assert not RECEIPTS.moved(ctx, Token(receipts=2), Token(receipts=2, room=5))


def test_receipts_first_delivery() -> None:
    fake = FakeReceipts(
        {"!b:test", "!a:test", "!quiet:test"}, {"!a:test": 3, "!b:test": 5, "!left:test": 4}
    )
    result = run(RECEIPTS.compute(context(fake, Token(receipts=6)), request(RECEIPTS, {})))
    assert result.payload is not None and set(result.payload["rooms"]) == {"!a:test", "!b:test"}
    assert (result.has_data, result.position) == (True, "r6")
    # Every joined room, in a stable order; all current receipts.
    assert fake.called("receipts_in_rooms") == [(["!a:test", "!b:test", "!quiet:test"], None, 6)]


def test_receipts_first_delivery_without_receipts_is_data() -> None:
    fake = FakeReceipts({"!a:test"}, {})
    result = run(RECEIPTS.compute(context(fake, Token(receipts=6)), request(RECEIPTS, {})))
    assert (result.payload, result.has_data) == ({"rooms": {}}, True)


def test_receipts_of_tracked_joined_rooms() -> None:
    fake = FakeReceipts({"!a:test", "!b:test"}, {"!a:test": 3, "!b:test": 8, "!c:test": 8})
    ctx = context(fake, Token(receipts=9))
    req = request(RECEIPTS, {"room_ids": ["!b:test", "!c:test"]}, position=5)
    result = run(RECEIPTS.compute(ctx, req))
    assert result.payload is not None and list(result.payload["rooms"]) == ["!b:test"]
    assert (result.has_data, result.position) == (True, "r9")
    assert fake.called("receipts_in_rooms") == [(["!b:test"], 5, 9)]


def test_receipts_incremental_without_change() -> None:
    fake = FakeReceipts({"!a:test"}, {"!other:test": 8})
    result = run(
        RECEIPTS.compute(context(fake, Token(receipts=9)), request(RECEIPTS, {}, position=5))
    )
    assert (result.payload, result.has_data, result.position) == ({"rooms": {}}, False, "r9")


@pytest.mark.parametrize(("position", "expected"), [(9, "r9"), (12, "r12")])
def test_receipts_nothing_moved_asks_nothing(position: int, expected: str) -> None:
    fake = FakeReceipts({"!a:test"}, {"!a:test": 8})
    result = run(
        RECEIPTS.compute(context(fake, Token(receipts=9)), request(RECEIPTS, {}, position))
    )
    assert (result.payload, result.has_data, result.position) == ({"rooms": {}}, False, expected)
    assert fake.calls == []


# -- account_data (SPEC §7.7) -----------------------------------------------------------


class FakeAccountData(Fake):
    def __init__(self) -> None:
        super().__init__()
        self.global_data: dict[str, Any] = {"m.direct": {"@bob:test": ["!dm:test"]}}
        self.room_data: dict[str, dict[str, Any]] = {
            "!a:test": {"m.tag": {"tags": {}}},
            "!empty:test": {},
        }
        self.rules_changed = True

    @staticmethod
    def account_data_keys(token: Token) -> tuple[int, int]:
        return token.account_data, token.push_rules

    async def bound_account_data_position(self, account_data: int, push_rules: int) -> Token:
        self.calls.append(("bound_account_data_position", account_data, push_rules))
        return Token(account_data=account_data, push_rules=push_rules)

    async def global_account_data(self, user_id: str, since: int | None) -> dict[str, Any]:
        self.calls.append(("global_account_data", since))
        return dict(self.global_data)

    async def room_account_data(self, user_id: str, since: int | None) -> dict[str, dict[str, Any]]:
        self.calls.append(("room_account_data", since))
        return dict(self.room_data)

    async def push_rules_changed(self, user_id: str, since: int) -> bool:
        self.calls.append(("push_rules_changed", since))
        return self.rules_changed

    async def push_rules_content(self, user_id: str) -> dict[str, Any]:
        self.calls.append(("push_rules_content",))
        return {"global": {}}


ACCOUNT_DATA = STREAMS["account_data"]


def global_types(payload: dict[str, Any] | None) -> list[str]:
    assert payload is not None
    return [event["type"] for event in payload["global"]]


def test_account_data_load_position_and_moved() -> None:
    fake = FakeAccountData()
    ctx = context(fake, Token())
    loaded = run(ACCOUNT_DATA.load_position(ctx, "22,5"))
    assert loaded == LoadedPosition((22, 5), wait_for=Token(account_data=22, push_rules=5))
    assert ACCOUNT_DATA.moved(ctx, Token(push_rules=1), Token(push_rules=2))
    assert ACCOUNT_DATA.moved(ctx, Token(account_data=1), Token(account_data=2))
    assert not ACCOUNT_DATA.moved(ctx, Token(account_data=1), Token(account_data=1, room=4))


def test_account_data_first_delivery() -> None:
    fake = FakeAccountData()
    ctx = context(fake, Token(account_data=22, push_rules=5))
    result = run(ACCOUNT_DATA.compute(ctx, request(ACCOUNT_DATA, {})))
    assert result.payload == {
        "global": [
            {"type": "m.direct", "content": {"@bob:test": ["!dm:test"]}},
            {"type": "m.push_rules", "content": {"global": {}}},
        ],
        "rooms": {"!a:test": [{"type": "m.tag", "content": {"tags": {}}}]},
    }
    assert (result.has_data, result.position) == (True, "22,5")
    assert fake.called("global_account_data") == [(None,)]
    assert fake.called("room_account_data") == [(None,)]


def test_account_data_changed() -> None:
    fake = FakeAccountData()
    ctx = context(fake, Token(account_data=25, push_rules=5))
    result = run(ACCOUNT_DATA.compute(ctx, request(ACCOUNT_DATA, {}, position=(22, 5))))
    assert global_types(result.payload) == ["m.direct"]
    assert (result.has_data, result.position) == (True, "25,5")
    assert fake.called("global_account_data") == [(22,)]
    assert fake.called("push_rules_changed") == []


def test_account_data_push_rules_changed() -> None:
    fake = FakeAccountData()
    ctx = context(fake, Token(account_data=22, push_rules=7))
    result = run(ACCOUNT_DATA.compute(ctx, request(ACCOUNT_DATA, {}, position=(22, 5))))
    assert global_types(result.payload) == ["m.push_rules"]
    assert result.payload is not None and result.payload["rooms"] == {}
    assert (result.has_data, result.position) == (True, "22,7")
    assert fake.called("global_account_data") == []


def test_account_data_push_rules_of_others_moved() -> None:
    fake = FakeAccountData()
    fake.rules_changed = False
    ctx = context(fake, Token(account_data=22, push_rules=7))
    result = run(ACCOUNT_DATA.compute(ctx, request(ACCOUNT_DATA, {}, position=(22, 5))))
    assert (result.payload, result.has_data, result.position) == (
        {"global": [], "rooms": {}},
        False,
        "22,7",
    )
    assert fake.called("push_rules_content") == []


@pytest.mark.parametrize(("position", "expected"), [((22, 5), "22,5"), ((30, 9), "30,9")])
def test_account_data_nothing_moved_asks_nothing(position: tuple[int, int], expected: str) -> None:
    fake = FakeAccountData()
    ctx = context(fake, Token(account_data=22, push_rules=5))
    result = run(ACCOUNT_DATA.compute(ctx, request(ACCOUNT_DATA, {}, position=position)))
    assert (result.payload, result.has_data, result.position) == (
        {"global": [], "rooms": {}},
        False,
        expected,
    )
    assert fake.calls == []


# -- presence (SPEC §7.8) ---------------------------------------------------------------


class FakePresence(Fake):
    def __init__(self, enabled: bool = True, events: int = 1, key: int = 0) -> None:
        super().__init__()
        self.enabled = enabled
        self.events = events
        self.key = key

    @staticmethod
    def presence_key(token: Token) -> int:
        return token.presence

    async def bound_presence_position(self, position: int) -> Token:
        return Token(presence=min(position, 30))

    def presence_enabled(self) -> bool:
        return self.enabled

    @staticmethod
    def requester_identity(requester: Any) -> tuple[str, str | None, bool]:
        assert requester == REQUESTER
        return USER, DEVICE, False

    async def presence_events(
        self, user_id: str, is_guest: bool, from_key: int | None
    ) -> tuple[list[dict[str, Any]], int]:
        self.calls.append(("presence_events", user_id, is_guest, from_key))
        events = [{"type": "m.presence", "sender": f"@u{i}:test"} for i in range(self.events)]
        return events, self.key


PRESENCE = STREAMS["presence"]


def test_presence_load_position_and_moved() -> None:
    fake = FakePresence()
    ctx = context(fake, Token(presence=30))
    assert run(PRESENCE.load_position(ctx, "99")) == LoadedPosition(30, wait_for=Token(presence=30))
    assert PRESENCE.moved(ctx, Token(presence=1), Token(presence=2))
    assert not PRESENCE.moved(ctx, Token(presence=1), Token(presence=1, typing=2))


def test_presence_first_delivery() -> None:
    fake = FakePresence(events=0, key=8)
    result = run(PRESENCE.compute(context(fake, Token(presence=10)), request(PRESENCE, {})))
    assert (result.payload, result.has_data, result.position) == ({"events": []}, True, "10")
    assert fake.called("presence_events") == [(USER, False, None)]


def test_presence_incremental() -> None:
    fake = FakePresence(events=2, key=12)
    ctx = context(fake, Token(presence=10))
    result = run(PRESENCE.compute(ctx, request(PRESENCE, {}, position=5)))
    assert result.payload is not None and len(result.payload["events"]) == 2
    # The source may cover more than now: the position follows it.
    assert (result.has_data, result.position) == (True, "12")
    fake.events = 0
    result = run(PRESENCE.compute(ctx, request(PRESENCE, {}, position=5)))
    assert (result.has_data, result.position) == (False, "12")


@pytest.mark.parametrize("position", [10, 11])
def test_presence_nothing_moved_asks_nothing(position: int) -> None:
    fake = FakePresence()
    ctx = context(fake, Token(presence=10))
    result = run(PRESENCE.compute(ctx, request(PRESENCE, {}, position=position)))
    assert (result.payload, result.has_data, result.position) == (
        {"events": []},
        False,
        str(position),
    )
    assert fake.calls == []


@pytest.mark.parametrize(("position", "expected"), [(None, "10"), (4, "10"), (12, "12")])
def test_presence_disabled_is_never_data(position: int | None, expected: str) -> None:
    fake = FakePresence(enabled=False)
    ctx = context(fake, Token(presence=10))
    result = run(PRESENCE.compute(ctx, request(PRESENCE, {}, position=position)))
    assert (result.payload, result.has_data, result.position) == ({"events": []}, False, expected)
    assert fake.calls == []


# -- e2ee (SPEC §7.9) -------------------------------------------------------------------


class FakeE2EE(Fake):
    def __init__(self, changed: list[str], left: list[str]) -> None:
        super().__init__()
        self.changed = changed
        self.left = left

    async def load_e2ee_position(self, raw: str) -> Token:
        room, devices = raw.split("_")
        return Token(room=int(room[1:]), device_lists=int(devices))

    @staticmethod
    def e2ee_position_behind(position: Token, now: Token) -> bool:
        return position.room < now.room or position.device_lists < now.device_lists

    async def e2ee_position_string(self, token: Token) -> str:
        return f"s{token.room}_{token.device_lists}"

    async def device_list_changes(
        self, user_id: str, from_token: Token
    ) -> tuple[list[str], list[str]]:
        self.calls.append(("device_list_changes", from_token))
        return self.changed, self.left

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        return {"signed_curve25519": 3}

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        return ["signed_curve25519"]


E2EE = STREAMS["e2ee"]
COUNTS = {
    "device_one_time_keys_count": {"signed_curve25519": 3},
    "device_unused_fallback_key_types": ["signed_curve25519"],
}


def test_e2ee_load_position_and_moved() -> None:
    fake = FakeE2EE([], [])
    ctx = context(fake, Token())
    token = Token(room=12, device_lists=7)
    assert run(E2EE.load_position(ctx, "s12_7")) == LoadedPosition(token, wait_for=token)
    assert E2EE.moved(ctx, token, attrs.evolve(token, device_lists=8))
    assert E2EE.moved(ctx, token, attrs.evolve(token, room=13))
    assert not E2EE.moved(ctx, token, attrs.evolve(token, typing=5))


def test_e2ee_first_delivery() -> None:
    fake = FakeE2EE(["@bob:test"], [])
    now = Token(room=12, device_lists=7)
    result = run(E2EE.compute(context(fake, now), request(E2EE, {})))
    assert (result.payload, result.has_data, result.position) == (COUNTS, True, "s12_7")
    assert fake.calls == []


def test_e2ee_device_list_changes() -> None:
    fake = FakeE2EE(["@bob:test"], ["@carol:test"])
    since, now = Token(room=10, device_lists=5), Token(room=12, device_lists=7)
    result = run(E2EE.compute(context(fake, now), request(E2EE, {}, position=since)))
    assert result.payload == {
        "device_lists": {"changed": ["@bob:test"], "left": ["@carol:test"]},
        **COUNTS,
    }
    assert (result.has_data, result.position) == (True, "s12_7")
    assert fake.called("device_list_changes") == [(since,)]


def test_e2ee_moved_without_changes() -> None:
    fake = FakeE2EE([], [])
    since, now = Token(room=10, device_lists=5), Token(room=12, device_lists=5)
    result = run(E2EE.compute(context(fake, now), request(E2EE, {}, position=since)))
    # Counts alone are never data; the position moves on.
    assert (result.payload, result.has_data, result.position) == (COUNTS, False, "s12_5")


def test_e2ee_nothing_moved_keeps_the_position() -> None:
    fake = FakeE2EE(["@bob:test"], [])
    since = Token(room=12, device_lists=7)
    now = Token(room=12, device_lists=7, typing=4, presence=9)
    result = run(E2EE.compute(context(fake, now), request(E2EE, {}, position=since)))
    assert (result.payload, result.has_data, result.position) == (COUNTS, False, "s12_7")
    assert fake.called("device_list_changes") == []
