"""The room list's invites hidden by invite rules (compat/room_list.py): the narrowed
listing stays one object while the rules hide the same invites, so room_list's
incremental re-sort (which checks the listing's identity) keeps working."""

from __future__ import annotations

from synapse.storage.invite_rule import InviteRule

from synapse_syncv3.compat.room_list import ListedRoom, _listing, _without_ignored_invites
from synapse_syncv3.compat.rooms import IgnoredInviters


class Rules:
    def __init__(self, *ignored: str) -> None:
        self.ignored = set(ignored)

    def get_invite_rule(self, sender: str) -> InviteRule:
        return InviteRule.IGNORE if sender in self.ignored else InviteRule.ALLOW


LISTING = _listing(
    {
        "!joined": ListedRoom("!joined", "join", "@me:hs", "$j", 1),
        "!carol": ListedRoom("!carol", "invite", "@carol:hs", "$c", 2),
        "!bob": ListedRoom("!bob", "invite", "@bob:hs", "$b", 3),
    }
)


def test_rules_that_hide_nothing_leave_the_listing_itself() -> None:
    assert _without_ignored_invites(LISTING, IgnoredInviters(frozenset())) is LISTING
    allowed = IgnoredInviters(frozenset(), Rules("@dave:hs"))
    assert _without_ignored_invites(LISTING, allowed) is LISTING


def test_the_same_hidden_invites_give_the_same_listing() -> None:
    first = _without_ignored_invites(LISTING, IgnoredInviters(frozenset(), Rules("@carol:hs")))
    assert set(first.rooms) == {"!joined", "!bob"} and set(first.invites) == {"!bob"}
    assert first.joined == frozenset({"!joined"})
    again = _without_ignored_invites(LISTING, IgnoredInviters(frozenset(), Rules("@carol:hs")))
    assert again is first
    both = _without_ignored_invites(
        LISTING, IgnoredInviters(frozenset(), Rules("@carol:hs", "@bob:hs"))
    )
    assert set(both.rooms) == {"!joined"} and both is not first
