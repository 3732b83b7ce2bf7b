"""How large a response is, told cheaply: small ones are encoded on the reactor
thread, large ones in a thread (Synapse's way for every response).

Synapse encodes every JSON response in its thread pool so that a large one does not
block the reactor. For a small one (a long-poll's timeout reply is ``{"next": ...}``)
the hand-over costs more than the encoding: a thread wake-up, a callback from the
thread and a wake-up of the reactor, about as much again as the module's own work on
a long-poll issued again after its timeout.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Responses estimated at most this many characters of JSON are encoded inline
#: (the C encoder does ~16 KiB in a few tens of microseconds).
INLINE_JSON_CHARS = 16 * 1024

#: What a number, a boolean or null counts: the longest ``repr`` of a float, and
#: more than any integer a Matrix event may carry (canonical JSON: 2**53 - 1).
_SCALAR_CHARS = 24


def json_within(value: object, limit: int) -> bool:
    """Whether ``value`` encodes as compact JSON to about ``limit`` characters or
    fewer.

    The count is exact for strings of printable ASCII without quotes or backslashes
    (their length and two quotes), counts every key with its quotes, colon and comma,
    every container its brackets and commas, and every other scalar as
    ``_SCALAR_CHARS``: so it is never below the encoded length when the strings are
    of that kind. Other strings (escapes, ``\\uXXXX``) encode longer than counted;
    the count measures the encoder's work, not bytes on the wire. The walk stops as
    soon as the count passes ``limit``, so telling costs at most about ``limit``
    steps whatever the size of ``value``.
    """
    left = limit
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            left -= len(item) + 2
        elif isinstance(item, Mapping):
            left -= 2 + len(item)
            if left < 0:
                return False
            for key, entry in item.items():
                left -= len(key) + 3 if isinstance(key, str) else _SCALAR_CHARS + 3
                stack.append(entry)
        elif isinstance(item, (list, tuple)):
            left -= 2 + len(item)
            if left < 0:
                return False
            stack.extend(item)
        else:
            left -= _SCALAR_CHARS
        if left < 0:
            return False
    return True
