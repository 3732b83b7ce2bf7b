"""The one small protocol every stream implements (see docs/architecture.md).

A stream is a file in this package that defines:

* how its request object is validated and what of it is stored (``parse_params``),
* which param changes reset it (``resets``), which give single rooms a first delivery
  (``fresh_rooms``), and what it echoes (``negotiate``),
* whether a request must be answered at once for it (``answer_at_once``: ``p``,
  ``full_state``),
* the syntax of its position in the since token (``valid_position``) and how a
  position is bound to what this server has issued (``load_position``),
* the checks that can still fail the request once the session is known (``check``),
  run before anything of the request is written,
* whether Synapse moved anything it reports between two tokens (``moved``, cheap and
  without I/O: a notifier wake that moved nothing of a stream does not recompute it),
* how it computes its data for the interval (position, now] (``compute``).

Streams never import Synapse: they reach it through ``ctx.synapse`` (the compat
layer), so that their pure parts are unit-testable and a Synapse release breaks only
:mod:`synapse_syncv3.compat`. Stream instances belong to one module instance (built by
:func:`synapse_syncv3.streams.build_streams`), so their caches are never shared
between homeservers of one process.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs

from synapse_syncv3.config import MaxLimits, SyncV3Config
from synapse_syncv3.core.state import SessionState

if TYPE_CHECKING:
    from synapse_syncv3.compat import SynapseCompat

JsonDict = dict[str, Any]

INT_POSITION_RE = re.compile(r"^(0|[1-9][0-9]{0,17})$")


#: One empty frozenset for every "no rooms" (an empty frozenset is not a singleton:
#: each would hold 216 bytes for as long as a long-poll waits).
NO_ROOMS: frozenset[str] = frozenset()


@attrs.frozen
class ParsedStreamParams:
    """A validated stream object from a request body."""

    #: What is stored in the session's params (no per-request or unknown fields).
    stored: JsonDict
    #: Per-request fields that apply to this request only (``p``, ``full_state``).
    per_request: JsonDict = attrs.field(factory=dict)


@attrs.frozen
class LoadedPosition:
    """A position from a since token, bound to what this server has issued."""

    value: Any
    #: A Synapse ``StreamToken`` this worker must have caught up with before the
    #: position can be used (SPEC §13.3), or None.
    wait_for: Any = None


@attrs.frozen
class StreamResult:
    #: The stream's fields besides the negotiated ones, or None when there is nothing
    #: to say. Only used when the object appears in the response (SPEC §1.4).
    payload: JsonDict | None = None
    #: Whether the stream has data in the interval (ends a long-poll, SPEC §6).
    has_data: bool = False
    #: The stream's position for ``next``.
    position: str | None = None
    #: ``{"errcode", "error"}`` when the stream reports an error instead of data.
    error: JsonDict | None = None


@attrs.frozen
class StreamRequest:
    """What one request asks of one stream."""

    #: The stored params in force (after merging the body).
    params: JsonDict
    #: Per-request fields of this request (``p``, ``full_state``).
    per_request: JsonDict = attrs.field(factory=dict)
    #: The loaded position of ``since``, or None for a first delivery.
    position: Any = None
    #: Rooms that get a first delivery because of this request's param change
    #: (``fresh_rooms``), when the stream as a whole does not.
    fresh_rooms: frozenset[str] = NO_ROOMS


@attrs.define
class StreamContext:
    """What a stream may know about the request it computes for."""

    user_id: str
    device_id: str
    requester: Any
    synapse: SynapseCompat
    config: SyncV3Config
    #: The session's stream state as of ``since``, with this response's changes.
    state: SessionState = attrs.field(factory=SessionState)
    #: Synapse ``StreamToken`` of "now" (SPEC §1.2), sampled once per computation.
    now: Any = None
    #: Results of the streams already computed for this response, by name.
    results: dict[str, StreamResult] = attrs.field(factory=dict)


class Stream(Protocol):
    name: ClassVar[str]
    #: One-letter code of the stream's position in the since token.
    code: ClassVar[str]

    def parse_params(self, obj: JsonDict) -> ParsedStreamParams:
        """Validate a stream object of the body (SPEC §3.4); raise SyncV3Error."""
        ...

    def resets(self, old: JsonDict, new: JsonDict) -> bool:
        """Whether changing the stored params from ``old`` to ``new`` resets the
        stream (SPEC §5.4)."""
        ...

    def fresh_rooms(self, old: JsonDict, new: JsonDict) -> frozenset[str]:
        """Rooms that get a first delivery when the stored params change from ``old``
        to ``new`` without resetting the whole stream (``room_data.room_ids``)."""
        ...

    def answer_at_once(self, per_request: JsonDict) -> bool:
        """Whether the per-request fields make the request answer without waiting
        (SPEC §6.1: ``p``, ``full_state``)."""
        ...

    def negotiate(self, params: JsonDict, limits: MaxLimits) -> JsonDict:
        """The effective values echoed in every object of the stream (SPEC §5.5)."""
        ...

    def valid_position(self, raw: str) -> bool:
        """Whether ``raw`` is a well-formed position of this stream (pure)."""
        ...

    async def load_position(self, ctx: StreamContext, raw: str) -> LoadedPosition:
        """Bind a well-formed position to what this server has issued (SPEC §4.4 7)."""
        ...

    async def check(self, ctx: StreamContext, request: StreamRequest) -> None:
        """Raise SyncV3Error if the request is invalid for this stream in a way only
        known with the session (a page cursor of another anchor). Nothing of the
        request has been written yet."""
        ...

    def moved(self, ctx: StreamContext, before: Any, after: Any) -> bool:
        """Whether anything this stream reports may have changed between the Synapse
        ``StreamToken``s ``before`` and ``after`` (no I/O; False means recomputing
        would give the same result)."""
        ...

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        """Compute the stream for (request.position, ctx.now]; the position is None
        for a first delivery."""
        ...


class StreamDefaults:
    """Protocol members most streams answer the same way."""

    def fresh_rooms(self, old: JsonDict, new: JsonDict) -> frozenset[str]:
        return NO_ROOMS

    def answer_at_once(self, per_request: JsonDict) -> bool:
        return "p" in per_request

    async def check(self, ctx: StreamContext, request: StreamRequest) -> None:
        return None


class RoomPositionMixin:
    """For streams whose position is the room event stream position (an integer):
    ``room_members`` and ``room_data``."""

    def valid_position(self, raw: str) -> bool:
        return bool(INT_POSITION_RE.fullmatch(raw))

    async def load_position(self, ctx: StreamContext, raw: str) -> LoadedPosition:
        bounded = await ctx.synapse.bound_room_position(int(raw))
        return LoadedPosition(value=ctx.synapse.room_key(bounded), wait_for=bounded)

    def moved(self, ctx: StreamContext, before: Any, after: Any) -> bool:
        return bool(ctx.synapse.room_key(before) != ctx.synapse.room_key(after))


class NoFieldsMixin(StreamDefaults):
    """For streams whose request object has no fields (SPEC §7.7–7.9)."""

    def parse_params(self, obj: JsonDict) -> ParsedStreamParams:
        return ParsedStreamParams(stored={})

    def resets(self, old: JsonDict, new: JsonDict) -> bool:
        return False

    def negotiate(self, params: JsonDict, limits: MaxLimits) -> JsonDict:
        return {}
