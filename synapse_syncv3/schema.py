"""The tables of synapse-syncv3 and their upgrades (SPEC §10.2).

Tables live in Synapse's main database and all start with ``syncv3_``; the same
statements run on SQLite and PostgreSQL. ``syncv3_schema_version`` holds the version
in use; :func:`prepare_schema` brings the tables to :data:`SCHEMA_VERSION` step by
step, and leaves a newer version alone (StorageTooNewError). The statements over the
tables are the session store's (store.py, store_state.py, store_to_device.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from synapse_syncv3.errors import StorageTooNewError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ``run(desc, func, *args)`` runs ``func(txn, *args)`` in a transaction
#: (``ModuleApi.run_db_interaction``).
RunInteraction = Callable[..., Awaitable[Any]]

#: Schema version written by this release of the module.
SCHEMA_VERSION = 4

#: Each upgrade step brings the schema from version N-1 to N (index 0 is version 1).
#: Steps must be idempotent: several workers may run them at once.
SCHEMA_STEPS: Sequence[Sequence[str]] = (
    (
        """
        CREATE TABLE IF NOT EXISTS syncv3_sessions (
            session_id TEXT NOT NULL PRIMARY KEY,
            user_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            created_ts BIGINT NOT NULL,
            last_used_ts BIGINT NOT NULL,
            params_version BIGINT NOT NULL,
            wants_to_device SMALLINT NOT NULL,
            to_device_confirmed BIGINT,
            delivery_counter BIGINT NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX IF NOT EXISTS syncv3_sessions_device ON syncv3_sessions (user_id, device_id)",
        "CREATE INDEX IF NOT EXISTS syncv3_sessions_last_used ON syncv3_sessions (last_used_ts)",
        """
        CREATE TABLE IF NOT EXISTS syncv3_params (
            session_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            params TEXT NOT NULL,
            PRIMARY KEY (session_id, version)
        )
        """,
    ),
    (
        # Per-session stream state (core/state.py): the typed values of each state
        # version, and the rooms sent per stream with the versions that sent them (a
        # row per version: versions form a tree, and each lineage reads its own rows).
        # syncv3_sessions.delivery_counter is the latest state version allocated.
        """
        CREATE TABLE IF NOT EXISTS syncv3_stream_state (
            session_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            state TEXT NOT NULL,
            PRIMARY KEY (session_id, version)
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS syncv3_sent_rooms (
            session_id TEXT NOT NULL,
            stream TEXT NOT NULL,
            room_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            PRIMARY KEY (session_id, stream, room_id, version)
        )
        """,
    ),
    (
        # room_list snapshots (SPEC §7.4, §10.3): the order and membership of the
        # listed rooms at the anchor, one row per snapshot (Snapshot.encode_rooms),
        # written with the state version of the response that took it.
        """
        CREATE TABLE IF NOT EXISTS syncv3_room_list_snapshots (
            session_id TEXT NOT NULL,
            snapshot_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            anchor TEXT NOT NULL,
            rooms TEXT NOT NULL,
            PRIMARY KEY (session_id, snapshot_id)
        )
        """,
    ),
    (
        # Deletions of a device's to-device messages decided under the per-device
        # guard and not yet carried out by Synapse (see SessionStore).
        """
        CREATE TABLE IF NOT EXISTS syncv3_to_device_deletions (
            user_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            up_to BIGINT NOT NULL,
            PRIMARY KEY (user_id, device_id, up_to)
        )
        """,
    ),
)

#: Tables holding rows of a session, keyed by ``session_id``; all are cleared when a
#: session is deleted (SPEC §10.1). The sessions table itself comes last.
SESSION_TABLES = (
    "syncv3_params",
    "syncv3_stream_state",
    "syncv3_sent_rooms",
    "syncv3_room_list_snapshots",
    "syncv3_sessions",
)

#: Tables keyed by device rather than by session (deleted with the device).
DEVICE_TABLES = ("syncv3_to_device_deletions",)

_CREATE_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS syncv3_schema_version (
        lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE,
        version INTEGER NOT NULL,
        CHECK (lock = 'X')
    )
"""


async def prepare_schema(run: RunInteraction) -> int:
    """Create or upgrade the tables through ``run(desc, func, *args)`` (a transaction
    runner); returns the schema version in use.

    Raises StorageTooNewError (and changes nothing) if the stored version is newer
    than this release knows.
    """
    current = await _with_ddl_retry(run, _read_version_txn)
    if current > SCHEMA_VERSION:
        raise StorageTooNewError(
            f"syncv3 tables are at schema version {current}; this release of "
            f"synapse-syncv3 supports up to {SCHEMA_VERSION}"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        await _with_ddl_retry(run, _upgrade_txn, version)
        logger.info("syncv3 tables upgraded to schema version %d", version)
    return SCHEMA_VERSION


async def _with_ddl_retry(run: RunInteraction, func: Callable[..., T], *args: Any) -> T:
    # Several workers may create the tables at once; on PostgreSQL concurrent
    # CREATE ... IF NOT EXISTS can still fail with a unique violation in the
    # catalog. The statements are idempotent, so retrying is enough.
    for attempt in range(5):
        try:
            return await run("syncv3_schema", func, *args)  # type: ignore[no-any-return]
        except StorageTooNewError:
            raise
        except Exception as e:
            if attempt == 4 or ("already exists" not in str(e) and "duplicate" not in str(e)):
                raise
            logger.info("Concurrent schema creation, retrying: %s", e)
    raise AssertionError("unreachable")


def _read_version_txn(txn: Any) -> int:
    txn.execute(_CREATE_VERSION_TABLE)
    txn.execute("SELECT version FROM syncv3_schema_version")
    row = txn.fetchone()
    return int(row[0]) if row else 0


def _upgrade_txn(txn: Any, version: int) -> None:
    txn.execute("SELECT version FROM syncv3_schema_version")
    row = txn.fetchone()
    if row and int(row[0]) >= version:
        return  # another worker got there first
    for statement in SCHEMA_STEPS[version - 1]:
        txn.execute(statement)
    txn.execute(
        "INSERT INTO syncv3_schema_version (lock, version) VALUES ('X', ?)"
        " ON CONFLICT (lock) DO UPDATE SET version = EXCLUDED.version",
        (version,),
    )
