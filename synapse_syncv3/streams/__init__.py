"""The stream registry: every stream of SPEC §7, in the order they are computed.

Adding a stream means writing its file and adding one line here.
"""

from __future__ import annotations

from collections.abc import Mapping

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
STREAMS: tuple[Stream, ...] = (
    TypingStream(),
    ToDeviceStream(),
    RoomMembersStream(),
    RoomListStream(),
    RoomDataStream(),
    ReceiptsStream(),
    AccountDataStream(),
    PresenceStream(),
    E2EEStream(),
)

BY_NAME: Mapping[str, Stream] = {stream.name: stream for stream in STREAMS}
ORDER: tuple[str, ...] = tuple(stream.name for stream in STREAMS)


def token_codec() -> TokenCodec:
    return TokenCodec(
        {stream.name: stream.code for stream in STREAMS},
        {stream.name: stream.valid_position for stream in STREAMS},
    )
