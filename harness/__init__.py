"""Test harness: a real Synapse subprocess, throwaway PostgreSQL databases, an HTTP client."""

from .client import (
    NO_BODY,
    USE_CLIENT_TOKEN,
    Account,
    Client,
    MatrixUser,
    Response,
    encode_query,
    new_txn_id,
    quote,
)
from .homeserver import (
    REPO_ROOT,
    Homeserver,
    HomeserverStartError,
    deep_merge,
    free_port,
    port_in_use,
    ratelimit_config,
)
from .postgres import (
    PostgresDatabase,
    postgres_dsn,
    postgres_unavailable_reason,
    redact_dsn,
)
from .workers import (
    GenericWorker,
    MainProcess,
    RedisServer,
    RedisUnavailableError,
    WorkerDeployment,
    redis_unavailable_reason,
    worker_support_missing_reason,
)

__all__ = [
    "NO_BODY",
    "REPO_ROOT",
    "USE_CLIENT_TOKEN",
    "Account",
    "Client",
    "GenericWorker",
    "Homeserver",
    "HomeserverStartError",
    "MainProcess",
    "MatrixUser",
    "PostgresDatabase",
    "RedisServer",
    "RedisUnavailableError",
    "Response",
    "WorkerDeployment",
    "deep_merge",
    "encode_query",
    "free_port",
    "new_txn_id",
    "port_in_use",
    "postgres_dsn",
    "postgres_unavailable_reason",
    "quote",
    "ratelimit_config",
    "redact_dsn",
    "redis_unavailable_reason",
    "worker_support_missing_reason",
]
