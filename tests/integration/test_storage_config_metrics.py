"""Storage, configuration and metrics (SPEC §10–12; §14 items 87–89)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from synapse_syncv3.schema import SCHEMA_VERSION, SESSION_TABLES
from tests.integration.helpers import V3, Server, until


def _tables(server: Server) -> set[str]:
    if server.postgres is not None:
        rows = server.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    else:
        rows = server.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {row[0] for row in rows}


def test_tables_and_second_start(own_server: Callable[..., Server]) -> None:  # item 87
    server = own_server()
    # Requests wait for table creation, which runs in the background at start-up.
    since = V3(server.user()).ok({"to_device": {}})["next"]
    assert server.query("SELECT version FROM syncv3_schema_version") == [(SCHEMA_VERSION,)]
    ours = {t for t in _tables(server) if "syncv3" in t}
    assert {"syncv3_schema_version", *SESSION_TABLES} <= ours
    assert all(t.startswith("syncv3_") for t in ours)
    server.restart()  # a second start on the same database
    assert server.query("SELECT version FROM syncv3_schema_version") == [(SCHEMA_VERSION,)]
    assert server.query("SELECT COUNT(*) FROM syncv3_sessions")[0][0] == 1
    assert since.startswith("V3_")


def test_upgrade_from_schema_1_keeps_sessions(own_server: Callable[..., Server]) -> None:
    """SPEC §10.2, §10.4: tables of schema version 1 (before stream state) are upgraded
    in place at start-up, and tokens issued before the upgrade keep working."""
    server = own_server()
    user = server.user()
    v3 = V3(user)
    since = v3.ok({"to_device": {}})["next"]
    server.hs.stop()
    for table in ("syncv3_stream_state", "syncv3_sent_rooms"):
        server.execute(f"DROP TABLE {table}")
    server.execute("UPDATE syncv3_schema_version SET version = 1")
    server.hs.start()
    body = v3.ok({"to_device": {"limit": 7}}, since=since)
    assert body["to_device"]["limit"] == 7
    assert server.query("SELECT version FROM syncv3_schema_version") == [(SCHEMA_VERSION,)]
    assert {"syncv3_stream_state", "syncv3_sent_rooms"} <= _tables(server)


def test_session_rows_go_with_the_session(server_with: Callable[..., Server]) -> None:
    server = server_with({"max_sessions_per_device": 2})
    user = server.user()
    v3 = V3(user)
    first = v3.ok({"to_device": {"limit": 1}})["next"]
    v3.ok({"to_device": {"limit": 2}}, since=first)
    session_id = first[3:].split(".")[0]
    assert (
        server.query(f"SELECT COUNT(*) FROM syncv3_params WHERE session_id = '{session_id}'")[0][0]
        == 2
    )
    v3.ok({})
    v3.ok({})  # evicts the first session
    for table in ("syncv3_sessions", "syncv3_params"):
        rows = server.query(f"SELECT COUNT(*) FROM {table} WHERE session_id = '{session_id}'")
        assert rows[0][0] == 0, table


def test_newer_schema_is_left_alone(own_server: Callable[..., Server]) -> None:
    """SPEC §10.2: a stored version newer than the module: no change, 500 M_UNKNOWN."""
    server = own_server()
    server.expected_log_problems.append("schema version 99")
    user = server.user()
    V3(user).ok({})  # the tables exist
    server.hs.stop()
    server.execute("UPDATE syncv3_schema_version SET version = 99")
    server.hs.start()
    response = user.sync_v3({})
    assert response.status == 500
    assert response.errcode == "M_UNKNOWN"
    assert server.query("SELECT version FROM syncv3_schema_version") == [(99,)]
    assert "schema version 99" in server.hs.log_tail(400)
    assert "next_batch" in user.v2_sync()  # the rest of Synapse works


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"max_sessions_per_device": 0}, "max_sessions_per_device"),
        ({"session_ttl": "soon"}, "session_ttl"),
        ({"no_such_key": 1}, "no_such_key"),
        ({"max_limits": {"to_device": 0}}, "max_limits.to_device"),
    ],
    ids=["max_sessions", "session_ttl", "unknown_key", "nested"],
)
def test_invalid_config_stops_synapse(pool: object, db: str, config: dict, key: str) -> None:
    server = pool.new(db, config, start=False)  # type: ignore[attr-defined]
    code, output = server.hs.start_expecting_failure()
    assert code != 0
    assert f"modules.<item 0>.config.{key}" in output


def test_requests_metric(server: Server) -> None:  # item 89
    v3 = V3(server.user())
    before = server.metric("synapse_syncv3_requests_total", 0, kind="initial", code="200")
    v3.ok({})
    after = server.metric("synapse_syncv3_requests_total", kind="initial", code="200")
    assert after == before + 1
    bad = server.metric("synapse_syncv3_requests_total", 0, code="400")
    v3.error(b"[")
    assert server.metric("synapse_syncv3_requests_total", code="400") == bad + 1
    for name in (
        "synapse_syncv3_request_duration_seconds_count",
        "synapse_syncv3_stream_duration_seconds_count",
        "synapse_syncv3_wait_duration_seconds_count",
        "synapse_syncv3_waiting_requests",
        "synapse_syncv3_sessions_created_total",
        "synapse_syncv3_sessions_removed_total",
        "synapse_syncv3_to_device_delivered_total",
        "synapse_syncv3_to_device_deleted_total",
        "synapse_syncv3_active_sessions",
    ):
        server.metric(name)  # exported


def test_active_sessions_gauge(server_with: Callable[..., Server]) -> None:
    server = server_with({"session_ttl": "2s", "max_timeout_ms": 1000})
    V3(server.user()).ok({})
    until(
        lambda: server.metric("synapse_syncv3_active_sessions") >= 1,
        "the gauge never counted the session",
        limit=5,
    )
