"""The session store's statements over the per-session stream state (SPEC §10.1,
core/state.py): ``syncv3_stream_state`` (the values of each state version),
``syncv3_sent_rooms`` (the rooms each version sent, per stream) and
``syncv3_room_list_snapshots``. A mixin of :class:`~synapse_syncv3.store.SessionStore`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from synapse_syncv3.core.state import (
    SessionState,
    Snapshot,
    decode_values,
    encode_values,
    rooms_prunable_up_to,
)
from synapse_syncv3.schema import RunInteraction

#: Stream state versions kept per session; a since token naming an older one gets
#: M_UNKNOWN_SYNC_SESSION, like a params version no longer retained.
STATE_VERSIONS_KEPT = 20

#: room_list snapshots kept per session (SPEC §10.3: at least the 2 most recent).
SNAPSHOTS_KEPT = 4


class StreamStateStatements:
    """Stream state versions, the rooms they sent and room_list snapshots: written
    together by :meth:`persist_state`, one transaction per response."""

    _run: RunInteraction

    async def read_sent_rooms(
        self,
        session_id: str,
        stream: str,
        up_to_version: int,
        after_version: int,
        room_ids: Collection[str] | None,
    ) -> set[str]:
        """Rooms of ``stream`` first sent at a state version in (after, up_to],
        restricted to ``room_ids`` when given."""

        def txn_func(txn: Any) -> set[str]:
            sql = (
                "SELECT DISTINCT room_id FROM syncv3_sent_rooms"
                " WHERE session_id = ? AND stream = ?"
                " AND version > ? AND version <= ?"
            )
            args: list[Any] = [session_id, stream, after_version, up_to_version]
            if room_ids is None:
                txn.execute(sql, args)
                return {row[0] for row in txn.fetchall()}
            found: set[str] = set()
            wanted = list(room_ids)
            for start in range(0, len(wanted), 100):
                chunk = wanted[start : start + 100]
                txn.execute(
                    sql + f" AND room_id IN ({', '.join('?' for _ in chunk)})", [*args, *chunk]
                )
                found.update(row[0] for row in txn.fetchall())
            return found

        return await self._run("syncv3_read_sent_rooms", txn_func)  # type: ignore[no-any-return]

    async def read_snapshot(self, session_id: str, snapshot_id: str) -> Snapshot | None:
        """A room_list snapshot of the session, or None if it is not retained."""

        def txn_func(txn: Any) -> Snapshot | None:
            txn.execute(
                "SELECT anchor, rooms FROM syncv3_room_list_snapshots"
                " WHERE session_id = ? AND snapshot_id = ?",
                (session_id, snapshot_id),
            )
            row = txn.fetchone()
            if row is None:
                return None
            order, invites = Snapshot.decode_rooms(str(row[1]))
            return Snapshot(snapshot_id, str(row[0]), order, invites)

        return await self._run("syncv3_read_snapshot", txn_func)  # type: ignore[no-any-return]

    async def persist_state(self, session_id: str, state: SessionState) -> int | None:
        """Write the changes of ``state`` as the session's next state version, in one
        transaction; returns that version, or None if the session is gone."""

        def txn_func(txn: Any) -> int | None:
            txn.execute(
                "UPDATE syncv3_sessions SET delivery_counter = delivery_counter + 1"
                " WHERE session_id = ? RETURNING delivery_counter",
                (session_id,),
            )
            row = txn.fetchone()
            if row is None:
                return None
            version = int(row[0])
            changes = state.changes(version)
            txn.execute(
                "INSERT INTO syncv3_stream_state (session_id, version, state) VALUES (?, ?, ?)",
                (session_id, version, encode_values(changes.values)),
            )
            for stream, rooms in sorted(changes.rooms.items()):
                self._record_sent_rooms_txn(
                    txn, session_id, stream, version, rooms, changes.known_ranges.get(stream, ())
                )
            txn.execute(
                "DELETE FROM syncv3_stream_state WHERE session_id = ? AND version <= ?",
                (session_id, version - STATE_VERSIONS_KEPT),
            )
            if changes.cleared:
                self._prune_sent_rooms_txn(txn, session_id, changes.cleared)
            if changes.snapshots:
                txn.execute_batch(
                    "INSERT INTO syncv3_room_list_snapshots"
                    " (session_id, snapshot_id, version, anchor, rooms) VALUES (?, ?, ?, ?, ?)",
                    [
                        (session_id, s.snapshot_id, version, s.anchor, s.encode_rooms())
                        for s in changes.snapshots
                    ],
                )
                txn.execute(
                    "DELETE FROM syncv3_room_list_snapshots WHERE session_id = ? AND version <="
                    " (SELECT MIN(version) FROM (SELECT version FROM syncv3_room_list_snapshots"
                    " WHERE session_id = ? ORDER BY version DESC LIMIT ?) AS kept) - 1",
                    (session_id, session_id, SNAPSHOTS_KEPT),
                )
            return version

        return await self._run("syncv3_persist_state", txn_func)  # type: ignore[no-any-return]

    @staticmethod
    def _prune_sent_rooms_txn(txn: Any, session_id: str, streams: Collection[str]) -> None:
        """After a response that cleared ``streams`` (a reset starts their room sets
        again): delete their rooms recorded before every kept version's last clear.
        Rows written between clears would otherwise stay with the session for good."""
        txn.execute("SELECT state FROM syncv3_stream_state WHERE session_id = ?", (session_id,))
        try:
            kept = [decode_values(str(row[0])) for row in txn.fetchall()]
        except (ValueError, KeyError, TypeError):  # unreadable: prune nothing
            return
        for stream in sorted(streams):
            floor = rooms_prunable_up_to(kept, stream)
            if floor > 0:
                txn.execute(
                    "DELETE FROM syncv3_sent_rooms"
                    " WHERE session_id = ? AND stream = ? AND version <= ?",
                    (session_id, stream, floor),
                )

    @staticmethod
    def _record_sent_rooms_txn(
        txn: Any,
        session_id: str,
        stream: str,
        version: int,
        rooms: Collection[str],
        known_ranges: Sequence[tuple[int, int]],
    ) -> None:
        """Record ``rooms`` as sent at ``version``, except those already recorded in
        ``known_ranges`` (known to every version of this line: one row per room, not
        one per answer that shows it)."""
        if not known_ranges:
            txn.execute_batch(
                "INSERT INTO syncv3_sent_rooms (session_id, stream, room_id, version)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(session_id, stream, room, version) for room in sorted(rooms)],
            )
            return
        within = " OR ".join("(k.version > ? AND k.version <= ?)" for _ in known_ranges)
        bounds = [bound for pair in known_ranges for bound in pair]
        txn.execute_batch(
            "INSERT INTO syncv3_sent_rooms (session_id, stream, room_id, version)"
            " SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM syncv3_sent_rooms AS k"
            " WHERE k.session_id = ? AND k.stream = ? AND k.room_id = ?"
            f" AND ({within})) ON CONFLICT DO NOTHING",
            [
                (session_id, stream, room, version, session_id, stream, room, *bounds)
                for room in sorted(rooms)
            ],
        )
