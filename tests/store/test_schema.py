"""Creating and upgrading the tables (SPEC §10.2), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from synapse_syncv3.core.state import SessionState
from synapse_syncv3.errors import StorageTooNewError
from synapse_syncv3.schema import (
    _CREATE_VERSION_TABLE,
    DEVICE_TABLES,
    SCHEMA_STEPS,
    SCHEMA_VERSION,
    SESSION_TABLES,
)
from tests.store.conftest import DEVICES_TABLE, Backend, Txn
from tests.store.helpers import DEVICE, PARAMS_1, T0, USER, Marker, create, load

VERSION_TABLE = "syncv3_schema_version"


ALL_TABLES = {DEVICES_TABLE, VERSION_TABLE, *SESSION_TABLES, *DEVICE_TABLES}


def stored_versions(backend: Backend) -> list[int]:
    return [row[0] for row in backend.db.query(f"SELECT version FROM {VERSION_TABLE}")]


async def test_prepare_creates_every_table(empty_backend: Backend) -> None:
    assert await empty_backend.store.prepare() == SCHEMA_VERSION
    assert empty_backend.db.tables() == {
        DEVICES_TABLE,
        VERSION_TABLE,
        *SESSION_TABLES,
        *DEVICE_TABLES,
    }
    assert stored_versions(empty_backend) == [SCHEMA_VERSION]


async def test_prepare_is_idempotent(empty_backend: Backend) -> None:
    store = empty_backend.store
    await store.prepare()
    await create(empty_backend, "s1")
    assert await store.prepare() == SCHEMA_VERSION
    assert stored_versions(empty_backend) == [SCHEMA_VERSION]
    assert empty_backend.db.tables() == {
        DEVICES_TABLE,
        VERSION_TABLE,
        *SESSION_TABLES,
        *DEVICE_TABLES,
    }
    loaded = await load(empty_backend, "s1")
    assert loaded is not None and loaded.params_json == PARAMS_1


async def test_upgrade_from_schema_1_keeps_sessions(empty_backend: Backend) -> None:
    db = empty_backend.db

    def schema_1(txn: Txn) -> None:
        for statement in SCHEMA_STEPS[0]:
            txn.execute(statement)
        txn.execute(_CREATE_VERSION_TABLE)
        txn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (1)")

    db.transaction(schema_1)
    # A session written by the schema-1 release (its rows, as that release wrote them).
    db.statement(
        "INSERT INTO syncv3_sessions (session_id, user_id, device_id, created_ts,"
        " last_used_ts, params_version, wants_to_device) VALUES (?, ?, ?, ?, ?, 1, 1)",
        ("old", USER, DEVICE, T0, T0),
    )
    db.statement("INSERT INTO syncv3_params VALUES (?, 1, ?)", ("old", PARAMS_1))
    assert "syncv3_stream_state" not in db.tables()

    assert await empty_backend.store.prepare() == SCHEMA_VERSION
    assert stored_versions(empty_backend) == [SCHEMA_VERSION]
    assert db.tables() == ALL_TABLES
    loaded = await load(empty_backend, "old")
    assert loaded is not None
    assert (loaded.params_json, loaded.wants_to_device, loaded.state_json) == (PARAMS_1, True, None)
    # The old session gets stream state versions from 1 on.
    state = SessionState()
    state.set(Marker(1))
    assert await empty_backend.store.persist_state("old", state) == 1


async def test_newer_schema_changes_nothing(empty_backend: Backend) -> None:
    db = empty_backend.db
    db.statement(_CREATE_VERSION_TABLE)
    db.statement(f"INSERT INTO {VERSION_TABLE} (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageTooNewError):
        await empty_backend.store.prepare()
    assert db.tables() == {DEVICES_TABLE, VERSION_TABLE}
    assert stored_versions(empty_backend) == [SCHEMA_VERSION + 1]


async def test_newer_schema_keeps_existing_rows(backend: Backend) -> None:
    db = backend.db
    await create(backend, "s1")
    db.statement(f"UPDATE {VERSION_TABLE} SET version = ?", (SCHEMA_VERSION + 5,))
    tables = db.tables()
    with pytest.raises(StorageTooNewError):
        await backend.store.prepare()
    assert db.tables() == tables
    assert stored_versions(backend) == [SCHEMA_VERSION + 5]
    assert db.count("syncv3_sessions") == 1
    assert db.count("syncv3_params") == 1
