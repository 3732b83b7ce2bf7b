"""Stream positions: reading them from ``StreamToken``s, and binding the positions of a
since token (client input) to what this homeserver has issued.

Synapse area: ``synapse.types`` (``StreamToken``, ``StreamKeyType``,
``RoomStreamToken``, ``MultiWriterStreamToken``), the stream id generators of the main
store, its stream change caches, and the ``instance_map`` of writer ids.

Versions:

* ``EventSources.bound_future_token`` and ``MultiWriterStreamToken.parse`` log an ERROR
  for a future position or an unknown writer id over the whole range; since-token
  positions are client input, so :func:`_bounded` and :func:`_bounded_multi_writer`
  bound quietly and :meth:`PositionsMixin._writers` resolves writer ids quietly.
* The device-list token is a ``MultiWriterStreamToken`` since 1.135 (so over the whole
  supported range, 1.152.0 to the newest release); the stream id generator getters
  and ``get_max_allocated_token`` are unchanged over the range.
* ``StreamKeyType`` gained members in 1.155 and 1.160; only the ones that exist since
  before 1.152 are named here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from attrs import evolve
from immutabledict import immutabledict
from synapse.api.errors import StoreError
from synapse.storage.engines import PostgresEngine
from synapse.types import MultiWriterStreamToken, RoomStreamToken, StreamKeyType, StreamToken

from synapse_syncv3.compat.base import SynapseBase

__all__ = ["PositionsMixin"]


class PositionsMixin(SynapseBase):
    """Positions of the served streams in Synapse's tokens."""

    # -- reading positions ---------------------------------------------------------

    @staticmethod
    def typing_key(token: StreamToken) -> int:
        return int(token.typing_key)

    @staticmethod
    def to_device_key(token: StreamToken) -> int:
        return int(token.to_device_key)

    def current_to_device_key(self) -> int:
        """This worker's to-device position: what ``current_token().to_device_key``
        is, without building the whole token (~0.2 ms, a dozen streams)."""
        return int(self._store.get_to_device_stream_token())

    def current_typing_key(self) -> int:
        return int(self._event_sources.sources.typing.get_current_key())

    def room_key(self, token: StreamToken) -> int:
        """The room event stream position of a token (its minimum over event writers,
        so that with several event persisters nothing is skipped)."""
        return int(token.room_key.stream)

    def room_changed_since(self, room_id: str, position: int) -> bool:
        """False only if the room certainly has no event after ``position`` (Synapse's
        in-memory stream change cache; cheap enough for every notifier wake)."""
        changed = self._store.get_rooms_that_changed([room_id], RoomStreamToken(stream=position))
        return room_id in changed

    @staticmethod
    def receipt_key(token: StreamToken) -> Any:
        """The receipt position (a ``MultiWriterStreamToken``) of a StreamToken."""
        return token.receipt_key

    @staticmethod
    def receipts_ahead(key: Any, since: Any) -> bool:
        """Whether receipt position ``key`` is past ``since`` for some writer."""
        return not key.is_before_or_eq(since)

    @staticmethod
    def later_receipt_key(a: Any, b: Any) -> Any:
        """The receipt position at or after both ``a`` and ``b``."""
        return a.copy_and_advance(b)

    async def receipt_position_string(self, key: Any) -> str:
        """Synapse's own wire form of a receipt position: ``12`` or ``m12~1.14~2.13``."""
        return str(await key.to_string(self._store))

    @staticmethod
    def account_data_keys(token: StreamToken) -> tuple[int, int]:
        """(account data position, push rules position) of a StreamToken."""
        return int(token.account_data_key), int(token.push_rules_key)

    @staticmethod
    def presence_key(token: StreamToken) -> int:
        return int(token.presence_key)

    async def e2ee_position_string(self, token: StreamToken) -> str:
        """The room and device-list positions of ``token`` as ``<room>_<device lists>``,
        each in Synapse's own string form (``s12`` / ``m12~1.14`` and ``7`` /
        ``m7~1.9``). The room position is needed because ``device_lists.left`` and
        newly shared users come from membership changes."""
        room = await token.room_key.to_string(self._store)
        devices = await token.device_list_key.to_string(self._store)
        return f"{room}_{devices}"

    @staticmethod
    def e2ee_position_behind(position: StreamToken, now: StreamToken) -> bool:
        """Whether the room or device-list stream moved in (position, now]."""
        return not (
            now.room_key.is_before_or_eq(position.room_key)
            and now.device_list_key.is_before_or_eq(position.device_list_key)
        )

    # -- binding since-token positions -----------------------------------------------

    async def bound_to_device_position(self, position: int) -> StreamToken:
        """The current token with the to-device position replaced by ``position``,
        clamped to what this homeserver has allocated.

        Like ``EventSources.bound_future_token``, but quiet: a position from a since
        token is client input, and Synapse logs an ERROR when it bounds one.
        """
        token = self.current_token()
        id_gen = self._store.get_to_device_id_generator()
        position = await _bounded(position, int(token.to_device_key), id_gen)
        return token.copy_and_replace(StreamKeyType.TO_DEVICE, position)

    async def bound_to_device_key(self, position: int) -> tuple[int, StreamToken | None]:
        """``position`` bounded as :meth:`bound_to_device_position` does, and the token
        to wait for replication with: None when this worker has reached ``position``
        (the usual case, which then samples no token)."""
        if position <= self.current_to_device_key():
            return position, None
        token = await self.bound_to_device_position(position)
        return self.to_device_key(token), token

    async def bound_room_position(self, position: int) -> StreamToken:
        """The current token with the room position replaced by ``position``, clamped
        (quietly) to what the homeserver has allocated."""
        token = self.current_token()
        id_gen = self._store.get_events_stream_id_generator()
        position = await _bounded(position, int(token.room_key.stream), id_gen)
        return token.copy_and_replace(StreamKeyType.ROOM, RoomStreamToken(stream=position))

    async def bound_receipt_position(
        self, stream: int, writers: Iterable[tuple[int, int]]
    ) -> StreamToken:
        """The current token with the receipt position replaced by the one given in
        Synapse's wire form (``stream``, and ``(instance id, position)`` of writers
        ahead of it, all positions > ``stream``), clamped to what this homeserver has
        allocated.

        ``MultiWriterStreamToken.parse`` and ``EventSources.bound_future_token`` log an
        ERROR for bad or future positions; a position from a since token is client
        input, so this resolves and bounds it quietly. A writer id this homeserver
        does not know is dropped: the position falls back to ``stream`` for it, which
        only means delivering again (never losing) that writer's receipts.
        """
        key = MultiWriterStreamToken(stream=stream, instance_map=await self._writers(writers))
        token = self.current_token()
        id_gen = self._store.get_receipts_stream_id_gen()
        key = await _bounded_multi_writer(key, token.receipt_key, id_gen)
        return token.copy_and_replace(StreamKeyType.RECEIPT, key)

    async def bound_room_list_position(
        self, room: int, receipt_stream: int, writers: Iterable[tuple[int, int]]
    ) -> StreamToken:
        """The current token with the room and receipt positions of a room_list
        position (``<room>_<receipt>``), each bound quietly like the two above."""
        room_token = await self.bound_room_position(room)
        receipt_token = await self.bound_receipt_position(receipt_stream, writers)
        return room_token.copy_and_replace(StreamKeyType.RECEIPT, receipt_token.receipt_key)

    async def bound_account_data_position(self, account_data: int, push_rules: int) -> StreamToken:
        """The current token with the account-data and push-rules positions replaced,
        each clamped to what this homeserver has allocated (quietly, like
        ``bound_to_device_position``)."""
        token = self.current_token()
        account_data = await _bounded(
            account_data,
            int(token.account_data_key),
            self._store.get_account_data_id_generator(),
        )
        push_rules = await _bounded(
            push_rules, int(token.push_rules_key), self._store.get_push_rules_stream_id_gen()
        )
        token = token.copy_and_replace(StreamKeyType.ACCOUNT_DATA, account_data)
        return token.copy_and_replace(StreamKeyType.PUSH_RULES, push_rules)

    async def bound_presence_position(self, position: int) -> StreamToken:
        """The current token with the presence position replaced by ``position``,
        clamped to what this homeserver has allocated (quietly, as
        :meth:`bound_to_device_position`)."""
        token = self.current_token()
        id_gen = self._store.get_presence_stream_id_gen()
        position = await _bounded(position, int(token.presence_key), id_gen)
        return token.copy_and_replace(StreamKeyType.PRESENCE, position)

    async def load_e2ee_position(self, raw: str) -> StreamToken:
        """The current token with the room and device-list positions of ``raw`` (a
        string of :meth:`e2ee_position_string` whose syntax the caller checked),
        each clamped to what this homeserver has allocated.

        Parsed here rather than with Synapse's ``parse``, which logs an ERROR for an
        unknown writer instance id: such an entry (client input) is dropped, which
        only moves the position back (at-least-once delivery).
        """
        room_raw, devices_raw = raw.split("_", 1)
        now = self.current_token()
        room = await self._multi_writer_token(now.room_key, room_raw[1:])
        devices = await self._multi_writer_token(
            now.device_list_key, devices_raw[1:] if devices_raw[0] == "m" else devices_raw
        )
        room = await _bounded_multi_writer(
            room, now.room_key, self._store.get_events_stream_id_generator()
        )
        devices = await _bounded_multi_writer(
            devices, now.device_list_key, self._store.get_device_stream_id_generator()
        )
        return now.copy_and_replace(StreamKeyType.ROOM, room).copy_and_replace(
            StreamKeyType.DEVICE_LIST, devices
        )

    # -- writer ids of multi-writer positions ----------------------------------------

    async def _multi_writer_token(self, template: Any, raw: str) -> Any:
        """A multi-writer token of ``template``'s class from ``N`` or ``N~id.pos~…``
        (Synapse's string form without its prefix); entries of unknown instance ids
        and entries not ahead of ``N`` are dropped.

        Only PostgreSQL deployments have several writers per stream (and the
        ``instance_map`` table): on SQLite every entry is unknown.
        """
        stream_raw, *entries = raw.split("~")
        stream = int(stream_raw)
        writers = [(int(i), int(pos)) for i, pos in (entry.split(".") for entry in entries)]
        ahead = [(instance_id, pos) for instance_id, pos in writers if pos > stream]
        return evolve(template, stream=stream, instance_map=await self._writers(ahead))

    async def _writers(self, writers: Iterable[tuple[int, int]]) -> Any:
        """The ``instance_map`` of a multi-writer token from ``(instance id, position)``
        pairs of a since token, resolved quietly (Synapse's ``parse`` logs an ERROR for
        an unknown id): unknown ids are dropped, so the position falls back to the
        token's minimum for that writer, which only means delivering again (never
        losing). Only PostgreSQL deployments have several writers per stream (and the
        ``instance_map`` table): on SQLite every entry is dropped."""
        instance_map: dict[str, int] = {}
        if isinstance(self._store.database_engine, PostgresEngine):
            for instance_id, position in writers:
                try:
                    name = await self._store.get_name_from_instance_id(instance_id)
                except StoreError:
                    continue
                instance_map[str(name)] = position
        return immutabledict(instance_map)


async def _bounded(position: int, current: int, id_gen: Any) -> int:
    """A stream position from a since token, bounded quietly (Synapse's
    ``bound_future_token`` logs an ERROR, and this is client input): kept if this
    worker has reached it; if ahead, kept up to what the stream has allocated (this
    worker lags: the caller waits for replication), clamped beyond (never issued)."""
    if position <= current:
        return position
    return min(position, int(await id_gen.get_max_allocated_token()))


async def _bounded_multi_writer(key: Any, current: Any, id_gen: Any) -> Any:
    """:func:`_bounded` for a multi-writer token (receipts, device lists, rooms)."""
    if key.is_before_or_eq(current):
        return key
    return key.bound_stream_token(int(await id_gen.get_max_allocated_token()))
