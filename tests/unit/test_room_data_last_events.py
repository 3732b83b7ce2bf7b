"""The last-event memory of room_data (streams/room_data.py ``LastEvents``): what it
answers is only ever what it was told, for the positions it was told about."""

from __future__ import annotations

from synapse_syncv3.streams.room_data import LastEvents


def test_answers_only_inside_the_learnt_range() -> None:
    last = LastEvents()
    last.learn("!a", "$e", 10, 20)
    assert last.get("!a", 9) is None
    assert last.get("!a", 10) == "$e"
    assert last.get("!a", 20) == "$e"
    assert last.get("!a", 21) is None
    assert last.get("!b", 15) is None


def test_quiet_extends_only_an_entry_that_holds_at_its_start() -> None:
    last = LastEvents()
    last.learn("!a", "$e", 10, 20)
    last.quiet("!a", 25, 40)  # a gap between 20 and 25: unknown
    assert last.get("!a", 30) is None
    last.quiet("!a", 15, 40)
    assert last.get("!a", 40) == "$e"
    last.quiet("!a", 40, 30)  # never shrinks
    assert last.get("!a", 40) == "$e"
    last.quiet("!b", 0, 100)  # nothing known, nothing learnt
    assert last.get("!b", 50) is None


def test_a_newer_event_replaces_the_entry() -> None:
    last = LastEvents()
    last.learn("!a", "$e", 10, 20)
    last.learn("!a", "$f", 30, 35)
    assert last.get("!a", 15) is None
    assert last.get("!a", 32) == "$f"
    last.learn("!a", "$g", 50, 40)  # an empty range teaches nothing
    assert last.get("!a", 32) == "$f"


def test_least_recently_used_rooms_are_forgotten() -> None:
    last = LastEvents(size=2)
    last.learn("!a", "$a", 1, 1)
    last.learn("!b", "$b", 1, 1)
    assert last.get("!a", 1) == "$a"  # !a is now the most recently used
    last.learn("!c", "$c", 1, 1)
    assert last.get("!b", 1) is None
    assert last.get("!a", 1) == "$a"
    assert last.get("!c", 1) == "$c"
