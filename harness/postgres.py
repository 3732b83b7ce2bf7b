"""Throwaway PostgreSQL databases for tests, on an existing server.

The server is named by the environment variable ``SYNCV3_TEST_POSTGRES`` (a libpq URL); each
test session creates its own uniquely named database with the C collation Synapse insists on,
and drops it afterwards. ``psycopg2`` is imported lazily so that SQLite-only runs do not need it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import secrets
import threading
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "DEFAULT_POSTGRES_DSN",
    "PostgresDatabase",
    "postgres_dsn",
    "postgres_unavailable_reason",
    "redact_dsn",
]

DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_ENV_VAR = "SYNCV3_TEST_POSTGRES"
_CONNECT_TIMEOUT = 3


def postgres_dsn() -> str:
    """The server to create test databases on: ``$SYNCV3_TEST_POSTGRES`` or the default."""
    return os.environ.get(_ENV_VAR) or DEFAULT_POSTGRES_DSN


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (for messages)."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))


def postgres_unavailable_reason() -> str | None:
    """None when a server answers at :func:`postgres_dsn`, else a one-line reason to skip.

    The probe (connect with a 3 s timeout, ``SELECT 1``) runs once per process and DSN.
    """
    return _probe(postgres_dsn())


@functools.cache
def _probe(dsn: str) -> str | None:
    hint = f"; set {_ENV_VAR} to a server URL"
    try:
        import psycopg2
    except ImportError as e:
        return f"PostgreSQL leg skipped: psycopg2 is not importable ({e}); install psycopg2-binary"
    try:
        conn = psycopg2.connect(dsn, connect_timeout=_CONNECT_TIMEOUT)
    except Exception as e:
        return (
            f"PostgreSQL leg skipped: cannot connect to {redact_dsn(dsn)} "
            f"({_describe_error(e)}){hint}"
        )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    except Exception as e:
        return (
            f"PostgreSQL leg skipped: {redact_dsn(dsn)} accepted a connection but "
            f"SELECT 1 failed ({_describe_error(e)}){hint}"
        )
    finally:
        conn.close()
    return None


def _describe_error(e: BaseException) -> str:
    text = str(e).strip()
    lowered = text.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "timeout expired" in lowered or "timed out" in lowered:
        return "connection timed out"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first or type(e).__name__


def _with_dbname(dsn: str, dbname: str) -> str:
    from psycopg2.extensions import make_dsn

    return str(make_dsn(dsn, dbname=dbname))


def _connect(dsn: str, *, autocommit: bool) -> Any:
    import psycopg2

    conn = psycopg2.connect(dsn, connect_timeout=_CONNECT_TIMEOUT)
    conn.autocommit = autocommit
    return conn


_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

# Databases not dropped yet; dropped at interpreter exit as a safety net.
_live: set[PostgresDatabase] = set()
_live_lock = threading.Lock()


@atexit.register
def _drop_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live)
    for db in leftovers:
        with contextlib.suppress(Exception):
            db.drop()


class PostgresDatabase:
    """A database of its own on the test server, with ``LC_COLLATE``/``LC_CTYPE`` ``C``.

    Use :meth:`create`; :meth:`drop` (or leaving the ``with`` block) removes it again.
    """

    def __init__(self, name: str, server_dsn: str) -> None:
        self.name = name
        self.server_dsn = server_dsn
        parts = urlsplit(server_dsn)
        self.host: str | None = unquote(parts.hostname) if parts.hostname else None
        self.port: int = parts.port or 5432
        self.user: str | None = unquote(parts.username) if parts.username else None
        self.password: str | None = unquote(parts.password) if parts.password else None
        self.dropped = False

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.name!r} on {redact_dsn(self.server_dsn)})"

    @classmethod
    def create(cls, prefix: str = "syncv3_test", dsn: str | None = None) -> PostgresDatabase:
        """Create ``<prefix>_<random hex>`` on the server at ``dsn`` (default
        :func:`postgres_dsn`)."""
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"database prefix must match {_PREFIX_RE.pattern}: {prefix!r}")
        from psycopg2 import sql

        server_dsn = dsn or postgres_dsn()
        name = f"{prefix}_{secrets.token_hex(6)}"
        conn = _connect(server_dsn, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE DATABASE {} ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' "
                        "TEMPLATE template0"
                    ).format(sql.Identifier(name))
                )
        finally:
            conn.close()
        db = cls(name, server_dsn)
        with _live_lock:
            _live.add(db)
        return db

    @property
    def dsn(self) -> str:
        """A libpq connection string for this database."""
        return _with_dbname(self.server_dsn, self.name)

    def synapse_database_config(self) -> dict[str, Any]:
        """The ``database:`` block of ``homeserver.yaml`` pointing at this database."""
        args: dict[str, Any] = {"database": self.name, "port": self.port}
        if self.user is not None:
            args["user"] = self.user
        if self.host is not None:
            args["host"] = self.host
        if self.password is not None:
            args["password"] = self.password
        args["cp_min"] = 1
        args["cp_max"] = 5
        return {"name": "psycopg2", "args": args}

    def connect(self, *, autocommit: bool = True) -> Any:
        """A new psycopg2 connection to this database (the caller closes it)."""
        if self.dropped:
            raise RuntimeError(f"{self!r} has been dropped")
        return _connect(self.dsn, autocommit=autocommit)

    def drop(self) -> None:
        """Terminate other sessions on the database, then drop it. Idempotent."""
        if self.dropped:
            return
        from psycopg2 import sql

        conn = _connect(self.server_dsn, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.name,),
                )
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.name)))
        finally:
            conn.close()
        self.dropped = True
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> PostgresDatabase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.drop()
