"""Every SQL statement the module runs against Synapse's own tables.

Synapse area: its main database schema (``room_memberships``, ``events``,
``rejections``, ``devices``), read only. The area files of this package call these
functions instead of writing SQL; the module's own tables (``syncv3_*``) are
``store.py``'s business.

Versions: the columns read here are unchanged over the supported range (1.152.0 to the
newest release). ``make_in_list_sql_clause`` and ``batch_iter`` are unchanged over the
range too.
"""

from __future__ import annotations

from typing import Any

from synapse.storage.database import make_in_list_sql_clause
from synapse.storage.engines import PostgresEngine
from synapse.util.iterutils import batch_iter

__all__ = [
    "DEVICE_EXISTS_SQL",
    "ever_joined",
    "member_event_ids_between",
    "membership_rows",
]

#: SQL condition, over ``syncv3_sessions AS s``, that the session's device still
#: exists in Synapse's ``devices`` table (read only; used by the session sweep).
DEVICE_EXISTS_SQL = (
    "EXISTS (SELECT 1 FROM devices AS d WHERE d.user_id = s.user_id AND d.device_id = s.device_id)"
)

#: Row of :func:`membership_rows`: (event_id, user_id, membership, display_name).
MembershipRow = tuple[str, str, str, str | None]


async def ever_joined(store: Any, user_id: str, room_id: str) -> bool:
    """Whether the user has ever been joined to the room (any ``join`` row)."""

    def txn(cursor: Any) -> bool:
        cursor.execute(
            "SELECT 1 FROM room_memberships WHERE room_id = ? AND user_id = ?"
            " AND membership = 'join' LIMIT 1",
            (room_id, user_id),
        )
        return cursor.fetchone() is not None

    return bool(await store.db_pool.runInteraction("syncv3_ever_joined", txn))


async def membership_rows(store: Any, member_event_ids: list[str]) -> list[MembershipRow]:
    """``room_memberships`` rows (event_id, user_id, membership, display_name) of the
    given member events, in no particular order."""
    engine = store.database_engine
    # One statement on PostgreSQL (``= ANY``); batches within SQLite's limit of
    # bound variables.
    batch = max(1, len(member_event_ids)) if isinstance(engine, PostgresEngine) else 500

    def txn(cursor: Any) -> list[MembershipRow]:
        rows: list[MembershipRow] = []
        for chunk in batch_iter(member_event_ids, batch):
            clause, args = make_in_list_sql_clause(engine, "event_id", chunk)
            cursor.execute(
                "SELECT event_id, user_id, membership, display_name FROM room_memberships"
                " WHERE " + clause,
                args,
            )
            rows.extend(cursor.fetchall())
        return rows

    return list(await store.db_pool.runInteraction("syncv3_member_state", txn))


async def member_event_ids_between(
    store: Any, room_id: str, after: int, up_to: int, limit: int
) -> list[tuple[str, int]]:
    """(event id, stream position) of the room's ``m.room.member`` events with
    after < position <= up_to, oldest first, at most ``limit`` (outliers and rejected
    events left out)."""

    def txn(cursor: Any) -> list[tuple[str, int]]:
        cursor.execute(
            "SELECT e.event_id, e.stream_ordering FROM events AS e"
            " LEFT JOIN rejections AS r ON r.event_id = e.event_id"
            " WHERE e.room_id = ? AND e.type = 'm.room.member' AND NOT e.outlier"
            " AND r.event_id IS NULL AND e.stream_ordering > ? AND e.stream_ordering <= ?"
            " ORDER BY e.stream_ordering ASC LIMIT ?",
            (room_id, after, up_to, limit),
        )
        return [(event_id, int(position)) for event_id, position in cursor.fetchall()]

    return list(await store.db_pool.runInteraction("syncv3_member_events", txn))
