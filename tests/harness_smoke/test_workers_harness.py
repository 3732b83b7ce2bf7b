"""Smoke tests of the worker part of the harness that need no Synapse: Redis lookup
and a redis-server of our own, and the configuration files of a deployment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import PostgresDatabase, RedisServer, WorkerDeployment
from harness.workers import redis_ping


def test_own_redis_server_when_none_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    monkeypatch.setenv("SYNCV3_TEST_REDIS", "127.0.0.1:1")  # nothing answers there
    redis = RedisServer.find_or_start(tmp_path)
    try:
        assert redis.owned and redis.port != 1
        assert redis_ping(redis.host, redis.port)
    finally:
        redis.stop()
    assert not redis_ping(redis.host, redis.port, timeout=0.2)


def test_deployment_configuration(tmp_path: Path) -> None:
    database = PostgresDatabase("syncv3_workers_unused", "postgresql://postgres@127.0.0.1:5432/x")
    redis = RedisServer("127.0.0.1", 6379)
    deployment = WorkerDeployment(
        tmp_path, postgres=database, redis=redis, stream_writers={"typing": ["worker2"]}
    )
    main, worker1, worker2 = deployment.processes
    shared = main.config()
    assert shared["server_name"] == deployment.server_name != "localhost"
    assert shared["redis"] == {"enabled": True, "host": "127.0.0.1", "port": 6379}
    assert shared["stream_writers"] == {"typing": ["worker2"]}
    assert set(shared["instance_map"]) == {"main", "worker2"}
    assert shared["modules"][0]["module"] == "synapse_syncv3.SyncV3Module"
    worker2.write_config()
    own = json.loads(worker2.config_path.read_text())
    assert own["worker_app"] == "synapse.app.generic_worker"
    assert own["worker_name"] == "worker2"
    ports = {listener["port"] for listener in own["worker_listeners"]}
    assert ports == {worker2.port, shared["instance_map"]["worker2"]["port"]}
    assert worker1.replication_port is None
    command = worker1.command()
    assert command[-4:] == ["-c", str(main.config_path), "-c", str(worker1.config_path)]
    assert "synapse.app.generic_worker" in command
