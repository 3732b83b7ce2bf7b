"""The to_device confirmation rules of SPEC §8.2, as pure functions."""

from __future__ import annotations

from collections.abc import Iterable


def advance_confirmation(current: int | None, sent: int) -> int:
    """A session's confirmation only moves forward (§8.2 rule 1)."""
    return sent if current is None else max(current, sent)


def deletable_up_to(confirmations: Iterable[int | None]) -> int | None:
    """The inbox position up to which every counting session has confirmed.

    ``confirmations`` holds one entry per live session of the device that requests
    to_device: its confirmed position, or None if it has confirmed nothing yet.
    Returns None when nothing may be deleted: no such session, or one of them has
    confirmed nothing (§8.2 rule 2).
    """
    lowest: int | None = None
    seen = False
    for confirmed in confirmations:
        if confirmed is None:
            return None
        seen = True
        lowest = confirmed if lowest is None else min(lowest, confirmed)
    return lowest if seen else None
