"""Chaos on Synapse's workers (issue 10 item 3; SPEC §8, §13): a short run of
harness/chaos.py in the default suite.

One device with three sync v3 sessions spread over two generic workers; numbered
to-device messages sent through ``worker2`` (the to_device stream writer) while a
quarter of the sync requests are abandoned by the client and the first worker, the
main process and the writer are SIGKILLed and restarted in turn. Every message must
reach every session (0 lost), none may come again after its session confirmed it,
no request may get a 5xx, the inbox must be empty once everything is confirmed, and
no log may show an error of the module. ``bench/chaos_workers.py`` runs the long
version (3,000 messages, a dozen kills); the figures are in docs/testing.md.

``SYNCV3_CHAOS_MESSAGES`` and ``SYNCV3_CHAOS_SECONDS`` change the size of this run.
Like tests/integration/test_workers.py, it runs in the newest Synapse environment only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import WorkerDeployment
from harness.chaos import ChaosSettings, log_problems, run_chaos
from tests.integration.test_workers import _REQUIRED, _unavailable


@pytest.fixture
def deployment() -> Iterator[WorkerDeployment]:
    unavailable = _unavailable()
    if unavailable is not None:
        reason, must_run = unavailable
        if must_run and _REQUIRED:
            pytest.fail(f"{reason} (SYNCV3_REQUIRE_POSTGRES is set)")
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="syncv3-chaos-"))
    deployment = WorkerDeployment.create(workdir, stream_writers={"to_device": ["worker2"]})
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.close()
    shutil.rmtree(workdir, ignore_errors=True)


def test_to_device_survives_kills_and_abandoned_requests(
    deployment: WorkerDeployment,
) -> None:
    seconds = float(os.environ.get("SYNCV3_CHAOS_SECONDS", "32"))
    settings = ChaosSettings(
        messages=int(os.environ.get("SYNCV3_CHAOS_MESSAGES", "600")),
        send_seconds=seconds,
        kill_every=seconds / 4,
        down_for=(0.2, 1.5),
        drain_seconds=60,
    )
    result = run_chaos(deployment, settings, progress=print)
    print(result.summary())
    ours = [line for path in deployment.log_paths() for line in log_problems(path)[0]]
    details = result.as_dict()
    assert result.sent == settings.messages, details
    assert result.lost == 0, details
    assert result.duplicates_after == 0, details
    assert result.server_errors == 0, details
    assert result.inbox_left == 0, details
    assert not result.failures, details
    assert {kill.process for kill in result.kills} >= {"worker1", "main"}, details
    assert 0.15 < details["abandoned_share"] < 0.35, details
    assert not ours, "module errors in the logs:\n" + "\n".join(ours[:20])
