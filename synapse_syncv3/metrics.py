"""Prometheus metrics (SPEC §12).

They live in prometheus_client's default registry, which is the registry Synapse
exports on its metrics listener (``/_synapse/metrics``). They are created once, at
import, so instantiating the module several times in one process never registers a
metric twice.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

REQUESTS = Counter(
    "synapse_syncv3_requests",
    "Completed sync v3 requests",
    labelnames=["kind", "code"],
)
REQUEST_DURATION = Histogram(
    "synapse_syncv3_request_duration_seconds",
    "Time to process a sync v3 request, excluding time spent waiting for data",
    labelnames=["kind"],
    buckets=_DURATION_BUCKETS,
)
STREAM_DURATION = Histogram(
    "synapse_syncv3_stream_duration_seconds",
    "Time to compute one stream's part of a response",
    labelnames=["stream"],
    buckets=_DURATION_BUCKETS,
)
WAIT_DURATION = Histogram(
    "synapse_syncv3_wait_duration_seconds",
    "Time spent waiting in long-polls",
    labelnames=["outcome"],
    buckets=_WAIT_BUCKETS,
)
WAITING_REQUESTS = Gauge(
    "synapse_syncv3_waiting_requests",
    "Requests of this process currently waiting",
)
ACTIVE_SESSIONS = Gauge(
    "synapse_syncv3_active_sessions",
    "Live sync v3 sessions (exported by the process that runs background tasks)",
)
SESSIONS_CREATED = Counter(
    "synapse_syncv3_sessions_created",
    "Sync v3 sessions created",
)
SESSIONS_REMOVED = Counter(
    "synapse_syncv3_sessions_removed",
    "Sync v3 sessions removed",
    labelnames=["reason"],
)
TO_DEVICE_DELIVERED = Counter(
    "synapse_syncv3_to_device_delivered",
    "To-device messages put in responses, re-deliveries included",
)
TO_DEVICE_DELETED = Counter(
    "synapse_syncv3_to_device_deleted",
    "To-device messages deleted from device inboxes after every session confirmed them",
)

KINDS = ("initial", "incremental", "page")
REMOVAL_REASONS = ("expired", "evicted", "device_deleted")
WAIT_OUTCOMES = ("data", "timeout", "cancelled")

# Export every label combination from the start, so dashboards see zeros, not gaps.
for _kind in KINDS:
    REQUEST_DURATION.labels(kind=_kind)
for _reason in REMOVAL_REASONS:
    SESSIONS_REMOVED.labels(reason=_reason)
for _outcome in WAIT_OUTCOMES:
    WAIT_DURATION.labels(outcome=_outcome)
