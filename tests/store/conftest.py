"""A :class:`SessionStore` on a real database, for every store test on both engines.

Each test gets a store whose ``run_interaction`` runs the transaction function in a
real transaction, the way Synapse does: on SQLite (a temporary file, through the
standard library) and on PostgreSQL (psycopg2, REPEATABLE READ, ``?`` rewritten to
``%s``). The transaction object is our own small adapter with the few methods the
store uses (``execute``, ``execute_batch``, ``fetchone``, ``fetchall``).

PostgreSQL: one database of our own is created on the server named by
``SYNCV3_TEST_POSTGRES`` for the whole pytest session, and every test works in a
schema of its own inside it. When the server is unreachable the PostgreSQL leg is
skipped with the reason; with ``SYNCV3_REQUIRE_POSTGRES=1`` it fails instead (the
rule of tests/integration/conftest.py).

Test functions here may be ``async def``: :func:`pytest_pyfunc_call` runs them with
``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.postgres import PostgresDatabase, postgres_unavailable_reason
from synapse_syncv3.store import SessionStore

ENGINES = ("sqlite", "postgres")

#: Stands in for Synapse's ``devices`` table in the sweep's "device still exists"
#: condition (the store takes that SQL from its caller).
DEVICES_TABLE = "test_devices"
DEVICE_EXISTS_SQL = (
    f"EXISTS (SELECT 1 FROM {DEVICES_TABLE} AS d"
    " WHERE d.user_id = s.user_id AND d.device_id = s.device_id)"
)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests of this directory to completion with asyncio."""
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(function(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


class Txn:
    """The part of Synapse's ``LoggingTransaction`` the store uses."""

    def __init__(self, cursor: Any, engine: str) -> None:
        self._cursor = cursor
        self._engine = engine

    def _sql(self, sql: str) -> str:
        # Synapse's PostgreSQL engine rewrites the portable placeholder the same way.
        return sql.replace("?", "%s") if self._engine == "postgres" else sql

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        self._cursor.execute(self._sql(sql), tuple(args))

    def execute_batch(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        rows = [tuple(row) for row in args]
        if self._engine == "postgres":
            from psycopg2.extras import execute_batch

            execute_batch(self._cursor, self._sql(sql), rows)
        else:
            self._cursor.executemany(sql, rows)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())


class Database:
    """One connection of one engine; runs functions in transactions."""

    def __init__(self, engine: str, conn: Any) -> None:
        self.engine = engine
        self._conn = conn

    async def run_interaction(self, desc: str, func: Callable[..., Any], *args: Any) -> Any:
        """Like ``ModuleApi.run_db_interaction``: ``func(txn, *args)`` in one
        transaction, committed if it returns, rolled back if it raises."""
        return self.transaction(func, *args)

    def transaction(self, func: Callable[..., Any], *args: Any) -> Any:
        cursor = self._conn.cursor()
        try:
            if self.engine == "sqlite":
                cursor.execute("BEGIN")  # the connection is in autocommit mode
            result = func(Txn(cursor, self.engine), *args)
        except BaseException:
            self._conn.rollback()
            raise
        else:
            self._conn.commit()
        finally:
            cursor.close()
        return result

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement, run in a transaction of its own (for checks)."""

        def func(txn: Txn) -> list[tuple[Any, ...]]:
            txn.execute(sql, args)
            return [tuple(row) for row in txn.fetchall()]

        return self.transaction(func)  # type: ignore[no-any-return]

    def statement(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Run one statement that returns nothing, in a transaction of its own."""
        self.transaction(lambda txn: txn.execute(sql, args))

    def tables(self) -> set[str]:
        if self.engine == "sqlite":
            rows = self.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = self.query(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        return {row[0] for row in rows}

    def count(self, table: str, session_id: str | None = None) -> int:
        if session_id is None:
            return int(self.query(f"SELECT COUNT(*) FROM {table}")[0][0])
        sql = f"SELECT COUNT(*) FROM {table} WHERE session_id = ?"
        return int(self.query(sql, (session_id,))[0][0])

    def add_device(self, user_id: str, device_id: str) -> None:
        self.statement(
            f"INSERT INTO {DEVICES_TABLE} (user_id, device_id) VALUES (?, ?)", (user_id, device_id)
        )

    def remove_device(self, user_id: str, device_id: str) -> None:
        self.statement(
            f"DELETE FROM {DEVICES_TABLE} WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )


class Backend:
    """What a store test gets: the store and the database behind it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine
        self.store = SessionStore(
            db.run_interaction, DEVICE_EXISTS_SQL, postgres=db.engine == "postgres"
        )


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    """A database of our own on the test server, for the whole pytest session."""
    reason = postgres_unavailable_reason()
    if reason is not None:
        if os.environ.get("SYNCV3_REQUIRE_POSTGRES"):
            pytest.fail(f"{reason} (SYNCV3_REQUIRE_POSTGRES is set)")
        pytest.skip(reason)
    database = PostgresDatabase.create(prefix="syncv3_store_test")
    try:
        yield database
    finally:
        database.drop()


@contextlib.contextmanager
def _sqlite(tmp_path: Path) -> Iterator[Database]:
    conn = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    try:
        yield Database("sqlite", conn)
    finally:
        conn.close()


@contextlib.contextmanager
def _postgres(database: PostgresDatabase) -> Iterator[Database]:
    from psycopg2.extensions import ISOLATION_LEVEL_REPEATABLE_READ

    schema = f"test_{secrets.token_hex(6)}"
    conn = database.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
            cur.execute(f"SET search_path TO {schema}")
        # Synapse runs its PostgreSQL transactions at REPEATABLE READ.
        conn.set_session(isolation_level=ISOLATION_LEVEL_REPEATABLE_READ, autocommit=False)
        yield Database("postgres", conn)
    finally:
        conn.rollback()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@pytest.fixture(params=ENGINES)
def empty_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A store on an empty database of the engine (no table but the test devices)."""
    if request.param == "postgres":
        opened = _postgres(request.getfixturevalue("postgres_database"))
    else:
        opened = _sqlite(tmp_path)
    with opened as db:
        db.statement(
            f"CREATE TABLE {DEVICES_TABLE} (user_id TEXT NOT NULL, device_id TEXT NOT NULL)"
        )
        yield Backend(db)


@pytest.fixture
def backend(empty_backend: Backend) -> Backend:
    """A store whose tables ``prepare()`` created."""
    asyncio.run(empty_backend.store.prepare())
    return empty_backend
