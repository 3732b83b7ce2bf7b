"""Every SQL statement the module runs against Synapse's own tables.

Synapse area: its main database schema (``room_memberships``, ``events``,
``rejections``, ``devices``, ``device_inbox``), read only. The area files of this
package call these functions instead of writing SQL; the module's own tables
(``syncv3_*``) are ``store.py``'s business.

Versions: the columns read here are unchanged over the supported range (1.152.0 to the
newest release). ``make_in_list_sql_clause`` and ``batch_iter`` are unchanged over the
range too; so is ``db_to_json`` (``synapse.storage._base``).
"""

from __future__ import annotations

import json
from typing import Any

from synapse.storage._base import db_to_json
from synapse.storage.database import make_in_list_sql_clause
from synapse.storage.engines import PostgresEngine
from synapse.util.iterutils import batch_iter

__all__ = [
    "DEVICE_EXISTS_SQL",
    "INBOX_HAS_MESSAGES_SQL",
    "device_messages_txn",
    "ever_joined",
    "member_event_ids_between",
    "membership_rows",
]

#: SQL condition, over ``syncv3_sessions AS s``, that the session's device still
#: exists in Synapse's ``devices`` table (read only; used by the session sweep).
DEVICE_EXISTS_SQL = (
    "EXISTS (SELECT 1 FROM devices AS d WHERE d.user_id = s.user_id AND d.device_id = s.device_id)"
)

#: A row when the device's to-device inbox (``device_inbox``) holds a message at or
#: below a position; arguments: user id, device id, position (read only; used when the
#: store decides a to-device deletion, SPEC §8).
INBOX_HAS_MESSAGES_SQL = (
    "SELECT 1 FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ? LIMIT 1"
)


def device_messages_txn(
    txn: Any, user_id: str, device_id: str, from_key: int, to_key: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """In a transaction: the device's to-device messages with from_key < id <= to_key,
    oldest first, at most ``limit``, and the position to continue from (the last id
    returned if the limit cut, else ``to_key``): the statement and the answer of
    Synapse's own ``DeviceInboxWorkerStore.get_messages_for_device`` (unchanged over
    the supported range), for reading many devices in one transaction."""
    txn.execute(
        "SELECT stream_id, message_json FROM device_inbox"
        " WHERE user_id = ? AND device_id = ? AND ? < stream_id AND stream_id <= ?"
        " ORDER BY stream_id ASC LIMIT ?",
        (user_id, device_id, from_key, to_key, limit),
    )
    rows = txn.fetchall()
    messages = [db_to_json(row[1]) for row in rows]
    if rows and len(rows) == limit:
        return messages, int(rows[-1][0])
    return messages, to_key


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


# -- room_list ----------------------------------------------------------------------


def _in_list_batches(engine: Any, items: list[Any]) -> int:
    """Items per ``IN`` clause: all at once on PostgreSQL (``= ANY``), within
    SQLite's limit of bound variables otherwise."""
    return max(1, len(items)) if isinstance(engine, PostgresEngine) else 500


async def latest_events(
    store: Any, uppers: dict[str, int], per_room: int, after: int | None = None
) -> list[tuple[str, str]]:
    """(room id, event id) of the last ``per_room`` events at or before
    ``uppers[room]`` (and after ``after``, when given) of each room, newest first per
    room, in one statement (one sub-select per room on the ``(room_id,
    stream_ordering)`` index; outliers and rejected events left out)."""
    lower = "" if after is None else f" AND e.stream_ordering > {int(after)}"
    rooms = sorted(uppers)
    if not rooms:
        return []

    def txn(cursor: Any) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for chunk in batch_iter(rooms, 100):
            parts: list[str] = []
            args: list[Any] = []
            for room_id in chunk:
                parts.append(
                    "SELECT * FROM (SELECT e.room_id, e.event_id, e.stream_ordering"
                    " FROM events AS e LEFT JOIN rejections AS r ON r.event_id = e.event_id"
                    " WHERE e.room_id = ? AND NOT e.outlier AND r.event_id IS NULL"
                    f" AND e.stream_ordering <= ?{lower} ORDER BY e.stream_ordering DESC LIMIT ?)"
                    f" AS t{len(parts)}"
                )
                args.extend((room_id, uppers[room_id], per_room))
            cursor.execute(" UNION ALL ".join(parts), args)
            rows = sorted(cursor.fetchall(), key=lambda row: (row[0], -int(row[2])))
            found.extend((room_id, event_id) for room_id, event_id, _ in rows)
        return found

    return list(await store.db_pool.runInteraction("syncv3_latest_events", txn))


async def events_at_positions(store: Any, positions: list[int]) -> dict[int, str]:
    """Event id of the event at each stream position (the unique
    ``events.stream_ordering``)."""
    engine = store.database_engine
    wanted = sorted(set(positions))

    def txn(cursor: Any) -> dict[int, str]:
        found: dict[int, str] = {}
        for chunk in batch_iter(wanted, _in_list_batches(engine, wanted)):
            clause, args = make_in_list_sql_clause(engine, "stream_ordering", chunk)
            cursor.execute("SELECT stream_ordering, event_id FROM events WHERE " + clause, args)
            found.update((int(position), event_id) for position, event_id in cursor.fetchall())
        return found

    return dict(await store.db_pool.runInteraction("syncv3_events_at_positions", txn))


async def current_state_ids(
    store: Any, room_ids: list[str], patterns: Any
) -> dict[str, dict[tuple[str, str], str]]:
    """Current state event ids of the rooms selected by ``state_events`` patterns
    (``*`` wildcards), per room."""
    engine = store.database_engine
    conditions: list[str] = []
    pattern_args: list[Any] = []
    for event_type, state_key in patterns:
        if event_type == "*" and state_key == "*":
            conditions = ["1 = 1"]
            pattern_args = []
            break
        if event_type == "*":
            conditions.append("state_key = ?")
            pattern_args.append(state_key)
        elif state_key == "*":
            conditions.append("type = ?")
            pattern_args.append(event_type)
        else:
            conditions.append("(type = ? AND state_key = ?)")
            pattern_args.extend((event_type, state_key))
    where = " OR ".join(conditions)

    def txn(cursor: Any) -> dict[str, dict[tuple[str, str], str]]:
        found: dict[str, dict[tuple[str, str], str]] = {room_id: {} for room_id in room_ids}
        for chunk in batch_iter(room_ids, 100):
            clause, args = make_in_list_sql_clause(engine, "room_id", chunk)
            cursor.execute(
                "SELECT room_id, type, state_key, event_id FROM current_state_events"
                f" WHERE {clause} AND ({where})",
                [*args, *pattern_args],
            )
            for room_id, event_type, state_key, event_id in cursor.fetchall():
                found[room_id][(event_type, state_key)] = event_id
        return found

    return dict(await store.db_pool.runInteraction("syncv3_current_state", txn))


async def names_and_aliases(store: Any, room_ids: list[str]) -> dict[str, tuple[Any, Any]]:
    """``(content.name of m.room.name, content.alias of m.room.canonical_alias)`` of
    the current state of each room that has either (values as sent: any JSON)."""
    engine = store.database_engine
    if not room_ids:
        return {}

    def txn(cursor: Any) -> dict[str, tuple[Any, Any]]:
        found: dict[str, tuple[Any, Any]] = {}
        for chunk in batch_iter(room_ids, _in_list_batches(engine, room_ids)):
            clause, args = make_in_list_sql_clause(engine, "c.room_id", chunk)
            cursor.execute(
                "SELECT c.room_id, c.type, j.json FROM current_state_events AS c"
                " JOIN event_json AS j ON j.event_id = c.event_id"
                f" WHERE {clause} AND c.state_key = ''"
                " AND c.type IN ('m.room.name', 'm.room.canonical_alias')",
                args,
            )
            for room_id, event_type, raw in cursor.fetchall():
                try:
                    content = json.loads(raw).get("content")
                except (ValueError, AttributeError):
                    continue
                if not isinstance(content, dict):
                    continue
                name, alias = found.get(room_id, (None, None))
                if event_type == "m.room.name":
                    name = content.get("name")
                else:
                    alias = content.get("alias")
                found[room_id] = (name, alias)
        return found

    return dict(await store.db_pool.runInteraction("syncv3_room_names", txn))


async def highlight_candidate_rooms(store: Any, user_id: str) -> set[str]:
    """Rooms where the user may have unread highlights: a highlighting push action
    after the user's unthreaded read receipt (a superset: threaded receipts and the
    larger of the two receipt types can only lower the count, which the caller takes
    from Synapse's exact per-room count)."""

    def txn(cursor: Any) -> set[str]:
        cursor.execute(
            "SELECT DISTINCT a.room_id FROM event_push_actions AS a"
            " WHERE a.user_id = ? AND a.highlight = 1 AND a.stream_ordering > COALESCE("
            "   (SELECT MIN(r.event_stream_ordering) FROM receipts_linearized AS r"
            "    WHERE r.user_id = a.user_id AND r.room_id = a.room_id"
            "    AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id IS NULL),"
            "   0)",
            (user_id,),
        )
        return {row[0] for row in cursor.fetchall()}

    return set(await store.db_pool.runInteraction("syncv3_highlight_rooms", txn))


async def own_receipt_rooms(store: Any, user_id: str, after: int, up_to: int) -> set[str]:
    """Rooms where the user sent a read receipt with after < stream id <= up_to."""

    def txn(cursor: Any) -> set[str]:
        cursor.execute(
            "SELECT DISTINCT room_id FROM receipts_linearized WHERE user_id = ?"
            " AND receipt_type IN ('m.read', 'm.read.private')"
            " AND stream_id > ? AND stream_id <= ?",
            (user_id, after, up_to),
        )
        return {row[0] for row in cursor.fetchall()}

    return set(await store.db_pool.runInteraction("syncv3_own_receipts", txn))
