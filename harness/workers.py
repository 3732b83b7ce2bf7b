"""A Synapse worker deployment for tests: PostgreSQL, Redis, the main process and
generic workers, every process with the module loaded and its own client listener.

Synapse's workers need PostgreSQL (a database of its own, :class:`PostgresDatabase`)
and Redis for replication. Redis is the server named by ``SYNCV3_TEST_REDIS``
(``host:port``, default ``127.0.0.1:6379``) when it answers ``PING``; otherwise a
``redis-server`` of our own is started on a free port (``--save ''``, nothing on disk
outside the work directory) if the binary exists. Synapse itself needs its ``redis``
extra (``txredisapi``, ``hiredis``) in the interpreter that runs it.

Every deployment has its own ``server_name``: Synapse names its Redis channels after
it, so deployments sharing one Redis never see each other's replication traffic.

There is no reverse proxy: a test sends each request to the process a proxy would
route it to (SPEC §13.2), by its ``base_url``. Generic workers serve sync (v2 and v3)
and room sends; typing, to-device and receipt requests go to the writer of their
stream (the main process unless ``stream_writers`` names a worker, which then gets a
replication listener of its own); registration and the admin API go to the main
process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .client import Account, MatrixUser
from .homeserver import NO_MODULE_CONFIG, Homeserver, free_port
from .postgres import PostgresDatabase

__all__ = [
    "DEFAULT_REDIS",
    "GenericWorker",
    "MainProcess",
    "RedisServer",
    "RedisUnavailableError",
    "WorkerDeployment",
    "process_rss",
    "redis_unavailable_reason",
    "worker_support_missing_reason",
]

DEFAULT_REDIS = "127.0.0.1:6379"
_REDIS_ENV = "SYNCV3_TEST_REDIS"


class RedisUnavailableError(RuntimeError):
    """No Redis answers and none can be started; the message says why."""


def _redis_address() -> tuple[str, int]:
    raw = os.environ.get(_REDIS_ENV) or DEFAULT_REDIS
    host, _, port = raw.rpartition(":")
    return host or "127.0.0.1", int(port)


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers ``PING`` at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_unavailable_reason() -> str | None:
    """None when a Redis can be used (one answers, or ``redis-server`` can be
    started), else a one-line reason to skip."""
    host, port = _redis_address()
    if redis_ping(host, port):
        return None
    if shutil.which("redis-server"):
        return None
    return (
        f"worker tests skipped: no Redis answers at {host}:{port} and redis-server is not"
        f" installed (apt-get install redis-server, or set {_REDIS_ENV}=host:port)"
    )


def worker_support_missing_reason() -> str | None:
    """None when this interpreter (which runs Synapse) has Synapse's ``redis`` extra,
    else a one-line reason to skip."""
    missing = [name for name in ("txredisapi", "hiredis") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"worker tests skipped: {', '.join(missing)} not installed in {sys.executable}"
        " (Synapse's redis extra: pip install 'matrix-synapse[redis]')"
    )


class RedisServer:
    """A Redis to replicate through: an existing one, or ``redis-server`` of our own."""

    def __init__(self, host: str, port: int, proc: subprocess.Popen[bytes] | None = None):
        self.host = host
        self.port = port
        self._proc = proc
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        owner = f"own, pid {self._proc.pid}" if self._proc is not None else "existing"
        return f"<RedisServer {self.host}:{self.port} {owner}>"

    @property
    def owned(self) -> bool:
        return self._proc is not None

    @classmethod
    def find_or_start(cls, workdir: Path, timeout: float = 10) -> RedisServer:
        """The Redis at ``SYNCV3_TEST_REDIS`` (default 127.0.0.1:6379) if it answers,
        else a ``redis-server`` of our own on a free port; RedisUnavailableError if
        neither."""
        host, port = _redis_address()
        if redis_ping(host, port):
            return cls(host, port)
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailableError(redis_unavailable_reason() or "no Redis")
        own_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        log = (workdir / f"redis-{own_port}.log").open("ab")
        argv = [binary, "--port", str(own_port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir)]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        server = cls("127.0.0.1", own_port, proc)
        server._log = log
        deadline = time.monotonic() + timeout
        while not redis_ping("127.0.0.1", own_port, timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RedisUnavailableError(
                    f"redis-server on port {own_port} did not come up (log in {workdir})"
                )
            time.sleep(0.05)
        return server

    def stop(self) -> None:
        """Stop our own redis-server (an existing Redis is left alone). Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class MainProcess(Homeserver):
    """Synapse's main process of a worker deployment: PostgreSQL, Redis, a replication
    listener in the ``instance_map``, a server name of its own."""

    def __init__(
        self,
        workdir: Path,
        *,
        postgres: PostgresDatabase,
        redis: RedisServer,
        server_name: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(workdir, postgres=postgres, name="main", **kwargs)
        self.server_name = server_name
        self.redis = redis
        self.replication_port = free_port()
        #: Workers with a replication listener (stream writers), by name.
        self.instance_map: dict[str, dict[str, Any]] = {}
        #: ``stream_writers`` of the shared configuration (stream -> instance names).
        self.stream_writers: dict[str, list[str]] = {}

    def _choose_new_port(self, port: int) -> bool:
        """The replication port too may be replaced at the first start: workers read it
        from the shared configuration only when they start, after this process."""
        if port == self.replication_port and not self._started_once:
            self.replication_port = free_port()
            return True
        return super()._choose_new_port(port)

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["listeners"] = [
            *config["listeners"],
            {
                "port": self.replication_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["replication"], "compress": False}],
            },
        ]
        config["instance_map"] = {
            "main": {"host": "127.0.0.1", "port": self.replication_port},
            **self.instance_map,
        }
        if self.stream_writers:
            config["stream_writers"] = self.stream_writers
        config["redis"] = {"enabled": True, "host": self.redis.host, "port": self.redis.port}
        return config


class GenericWorker(Homeserver):
    """A ``synapse.app.generic_worker`` of a deployment, with a client (and metrics)
    listener of its own. It shares the main process's configuration file, work
    directory and database; accounts are made on the main process."""

    def __init__(self, main: MainProcess, worker_name: str, **kwargs: Any) -> None:
        super().__init__(
            main.workdir,
            postgres=main.postgres,
            module_config=main.module_config,
            module_name=main.module_name,
            python=main.python,
            name=worker_name,
            env=main.env,
            **kwargs,
        )
        self.main = main
        self.server_name = main.server_name
        self.worker_name = worker_name
        #: Set for stream writers, which other processes call over HTTP replication.
        self.replication_port: int | None = None

    def config(self) -> dict[str, Any]:
        """The worker's own file, read after the main process's."""
        listeners: list[dict[str, Any]] = [
            {
                "type": "http",
                "port": self.port,
                "bind_addresses": ["127.0.0.1"],
                "x_forwarded": False,
                "resources": [{"names": ["client", "metrics"], "compress": False}],
            }
        ]
        if self.replication_port is not None:
            listeners.append(
                {
                    "type": "http",
                    "port": self.replication_port,
                    "bind_addresses": ["127.0.0.1"],
                    "x_forwarded": False,
                    "resources": [{"names": ["replication"], "compress": False}],
                }
            )
        return {
            "worker_app": "synapse.app.generic_worker",
            "worker_name": self.worker_name,
            "worker_log_config": str(self.log_config_path),
            "worker_listeners": listeners,
        }

    def write_config(self) -> Path:
        self.main.write_config()
        self.log_config_path.write_text(_json(self.log_config()))
        self.config_path.write_text(_json(self.config()))
        return self.config_path

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "synapse.app.generic_worker",
            "-c",
            str(self.main.config_path),
            "-c",
            str(self.config_path),
        ]

    def register(self, *args: Any, **kwargs: Any) -> Account:
        return self.main.register(*args, **kwargs)

    def admin_account(self) -> Account:
        return self.main.admin_account()


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2) + "\n"


class WorkerDeployment:
    """PostgreSQL + Redis + the main process + ``workers`` generic workers.

    The caller owns ``postgres`` and ``redis`` (and stops/drops them); use
    :meth:`create` to have the deployment make and own both.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        postgres: PostgresDatabase,
        redis: RedisServer,
        workers: int = 2,
        module_config: Mapping[str, Any] | None = NO_MODULE_CONFIG,
        extra_config: Mapping[str, Any] | None = None,
        presence: bool = True,
        env: Mapping[str, str] | None = None,
        server_name: str | None = None,
        stream_writers: Mapping[str, list[str]] | None = None,
    ) -> None:
        """``stream_writers`` maps Synapse streams (``typing``, ``to_device``,
        ``receipts``, ...) to the names of the workers (``worker1``, ...) or ``main``
        that write them."""
        self.workdir = Path(workdir).resolve()
        self.postgres = postgres
        self.redis = redis
        #: Unique per deployment: Synapse's Redis channels are named after it.
        self.server_name = server_name or f"w{secrets.token_hex(4)}.test"
        self.main = MainProcess(
            self.workdir,
            postgres=postgres,
            redis=redis,
            server_name=self.server_name,
            module_config=module_config,
            extra_config=extra_config,
            presence=presence,
            env=env,
        )
        self.workers = [GenericWorker(self.main, f"worker{n + 1}") for n in range(workers)]
        for stream, writers in (stream_writers or {}).items():
            self.main.stream_writers[stream] = list(writers)
            for worker in self.workers:
                if worker.worker_name in writers and worker.replication_port is None:
                    worker.replication_port = free_port()
                    self.main.instance_map[worker.worker_name] = {
                        "host": "127.0.0.1",
                        "port": worker.replication_port,
                    }
        self._owned: list[Any] = []

    def __repr__(self) -> str:
        return f"<WorkerDeployment {self.server_name} main={self.main!r} workers={self.workers!r}>"

    @classmethod
    def create(cls, workdir: Path, **kwargs: Any) -> WorkerDeployment:
        """A deployment with a database and (if needed) a Redis of its own, both
        released by :meth:`close`."""
        postgres = PostgresDatabase.create(prefix="syncv3_workers")
        try:
            redis = RedisServer.find_or_start(Path(workdir) / "redis")
        except BaseException:
            postgres.drop()
            raise
        deployment = cls(workdir, postgres=postgres, redis=redis, **kwargs)
        deployment._owned = [redis, postgres]
        return deployment

    @property
    def processes(self) -> list[Homeserver]:
        return [self.main, *self.workers]

    def start(self, timeout: float = 90) -> None:
        """Start the main process, then every worker (in parallel)."""
        self.main.start(timeout)
        for worker in self.workers:
            worker._spawn()
        for worker in self.workers:
            worker.wait_ready(timeout)

    def stop(self) -> None:
        """Stop the workers, then the main process."""
        for process in [*self.workers, self.main]:
            with contextlib.suppress(Exception):
                process.stop()

    def close(self) -> None:
        """:meth:`stop`, then release what :meth:`create` made."""
        try:
            self.stop()
        finally:
            for owned in self._owned:
                if isinstance(owned, RedisServer):
                    owned.stop()
                else:
                    owned.drop()
            self._owned = []

    def worker(self, name: str) -> Homeserver:
        """The process called ``name`` (``main``, ``worker1``, ...)."""
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(name)

    def kill(self, name: str) -> None:
        """SIGKILL the process called ``name`` and wait for it: nothing gets to shut
        down cleanly. The other processes keep running; :meth:`start_process` brings
        it back."""
        self.worker(name).kill()

    def start_process(self, name: str, timeout: float = 90) -> float:
        """Start the process called ``name`` again (after :meth:`kill` or a stop), with
        the same ports, configuration, database and Redis, and wait until it answers;
        returns the seconds that took."""
        process = self.worker(name)
        started = time.monotonic()
        process.start(timeout)
        return time.monotonic() - started

    def restart_process(self, name: str, *, kill: bool = True, timeout: float = 90) -> float:
        """SIGKILL (or, with ``kill=False``, SIGTERM) one process and start it again;
        returns the seconds until it answered."""
        process = self.worker(name)
        if kill:
            process.kill()
        else:
            process.stop()
        return self.start_process(name, timeout)

    def rss(self) -> dict[str, int | None]:
        """The resident set size in bytes of each process, by name (None when it is
        not running)."""
        return {process.name: process_rss(process) for process in self.processes}

    def user(self, account: Account, process: Homeserver, timeout: float = 60) -> MatrixUser:
        """``account`` talking to ``process`` (what a proxy would route there)."""
        return MatrixUser(process.base_url, account, timeout=timeout)

    def log_paths(self) -> list[Path]:
        return [process.log_path for process in self.processes]

    def __enter__(self) -> WorkerDeployment:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def process_rss(process: Homeserver) -> int | None:
    """The resident set size of a running process in bytes (Linux ``/proc``), or None."""
    pid = process.pid if process.running else None
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None
