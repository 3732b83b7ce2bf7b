"""The stream registry: every stream of SPEC §7, in the order they are computed.

Adding a stream means writing its file and adding one line to :data:`STREAM_TYPES`.
Each module instance builds its own streams (:func:`build_streams`), so caches that
streams keep belong to one homeserver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from synapse_syncv3.core.tokens import TokenCodec
from synapse_syncv3.streams.account_data import AccountDataStream
from synapse_syncv3.streams.base import Stream
from synapse_syncv3.streams.e2ee import E2EEStream
from synapse_syncv3.streams.presence import PresenceStream
from synapse_syncv3.streams.receipts import ReceiptsStream
from synapse_syncv3.streams.room_data import RoomDataStream
from synapse_syncv3.streams.room_list import RoomListStream
from synapse_syncv3.streams.room_members import RoomMembersStream
from synapse_syncv3.streams.to_device import ToDeviceStream
from synapse_syncv3.streams.typing import TypingStream

#: Computation order of SPEC §3.5 step 5 (room_data after room_list).
STREAM_TYPES: tuple[type[Stream], ...] = (
    TypingStream,
    ToDeviceStream,
    RoomMembersStream,
    RoomListStream,
    RoomDataStream,
    ReceiptsStream,
    AccountDataStream,
    PresenceStream,
    E2EEStream,
)

#: Stream names in computation order.
ORDER: tuple[str, ...] = tuple(stream.name for stream in STREAM_TYPES)


class StreamSet:
    """The streams of one module instance."""

    def __init__(self, streams: Iterable[Stream]) -> None:
        self.streams: tuple[Stream, ...] = tuple(streams)
        self.by_name: Mapping[str, Stream] = {stream.name: stream for stream in self.streams}
        self.order: tuple[str, ...] = tuple(stream.name for stream in self.streams)

    def __getitem__(self, name: str) -> Stream:
        return self.by_name[name]

    def ordered(self, names: Iterable[str]) -> list[str]:
        """``names`` in computation order."""
        wanted = set(names)
        return [name for name in self.order if name in wanted]


def build_streams() -> StreamSet:
    return StreamSet(stream_type() for stream_type in STREAM_TYPES)


def token_codec(streams: StreamSet | None = None) -> TokenCodec:
    """The since-token codec of ``streams`` (by default a fresh set: the codes and
    the position syntax are the same for every module instance)."""
    streams = streams or build_streams()
    return TokenCodec(
        {stream.name: stream.code for stream in streams.streams},
        {stream.name: stream.valid_position for stream in streams.streams},
    )
