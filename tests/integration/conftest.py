"""Fixtures that run the integration tests against real Synapse processes.

Every test in this directory runs twice: on SQLite and on PostgreSQL. Servers are
shared per (database, module configuration) for the whole pytest session and isolated
by unique users; tests that restart or kill a server get one of their own.

PostgreSQL: the server named by ``SYNCV3_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) is used to create and drop
databases of our own. When it is unreachable, the PostgreSQL leg is skipped with the
reason; with ``SYNCV3_REQUIRE_POSTGRES=1`` (as in CI) it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import Homeserver, PostgresDatabase, postgres_unavailable_reason
from tests.integration.helpers import Server

DATABASES = ("sqlite", "postgres")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", params=DATABASES)
def db(request: pytest.FixtureRequest) -> str:
    engine: str = request.param
    if engine == "postgres":
        reason = postgres_unavailable_reason()
        if reason is not None:
            if os.environ.get("SYNCV3_REQUIRE_POSTGRES"):
                pytest.fail(f"{reason} (SYNCV3_REQUIRE_POSTGRES is set)")
            pytest.skip(reason)
    return engine


class ServerPool:
    """Starts servers lazily, one per (engine, config), and stops them at the end."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._servers: dict[str, Server] = {}
        self._owned: list[tuple[Homeserver, PostgresDatabase | None]] = []

    def new(
        self,
        engine: str,
        module_config: dict[str, Any] | None = None,
        *,
        extra_config: dict[str, Any] | None = None,
        presence: bool = True,
        start: bool = True,
        env: dict[str, str] | None = None,
    ) -> Server:
        """A server of its own (the caller may restart or kill it)."""
        workdir = Path(tempfile.mkdtemp(prefix=f"hs-{engine}-", dir=self._root))
        database = PostgresDatabase.create() if engine == "postgres" else None
        hs = Homeserver(
            workdir,
            database=engine,  # type: ignore[arg-type]
            postgres=database,
            module_config={} if module_config is None else module_config,
            extra_config=extra_config,
            presence=presence,
            name="hs",
            env=env,
        )
        self._owned.append((hs, database))
        if start:
            hs.start()
        return Server(hs, engine, database)

    def shared(
        self, engine: str, module_config: dict[str, Any] | None = None, **kwargs: Any
    ) -> Server:
        key = json.dumps([engine, module_config or {}, kwargs], sort_keys=True)
        if key not in self._servers:
            self._servers[key] = self.new(engine, module_config, **kwargs)
        return self._servers[key]

    def release(self, server: Server) -> None:
        try:
            server.hs.stop()
            _assert_clean_log(server)
        finally:
            if server.postgres is not None:
                server.postgres.drop()

    def close(self) -> None:
        for hs, database in reversed(self._owned):
            try:
                hs.stop()
            finally:
                if database is not None:
                    database.drop()
        for server in self._servers.values():
            _assert_clean_log(server)


def _assert_clean_log(server: Server) -> None:
    problems = server.log_problems()
    assert not problems, f"{server.hs.log_path} has problems:\n" + "\n".join(problems[:20])


@pytest.fixture(scope="session")
def pool() -> Iterator[ServerPool]:
    root = Path(tempfile.mkdtemp(prefix="syncv3-tests-"))
    servers = ServerPool(root)
    try:
        yield servers
    finally:
        servers.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server(pool: ServerPool, db: str) -> Server:
    """The shared server with the default module configuration."""
    return pool.shared(db)


@pytest.fixture
def server_with(pool: ServerPool, db: str) -> Callable[..., Server]:
    """A shared server with a given module configuration."""
    return lambda config, **kwargs: pool.shared(db, config, **kwargs)


@pytest.fixture
def own_server(pool: ServerPool, db: str) -> Iterator[Callable[..., Server]]:
    """Servers for this test only (to restart or kill them); stopped afterwards."""
    made: list[Server] = []

    def make(config: dict[str, Any] | None = None, **kwargs: Any) -> Server:
        made.append(pool.new(db, config, **kwargs))
        return made[-1]

    yield make
    for server in made:
        pool.release(server)
