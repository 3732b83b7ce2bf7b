"""Wake latency on Synapse's workers (issue 10 item 6): a long-poll waits on worker A
(``worker1``) and the send goes through worker B (``worker2``) or the main process.

The worker topology of the test harness (PostgreSQL, Redis, the main process and two
generic workers with the module; ``worker2`` writes the to_device, typing and receipts
streams, the main process persists room events, as in bench/soak.py). Series, each
next to Synapse's own v2 sync long-polling on the same worker, interleaved:

* ``to_device via worker2``: a to-device message sent through its stream writer, B;
* ``message via worker2``: an ``m.room.message`` sent through B (created there,
  persisted by the main process over replication) into a room the v3 session serves
  (``room_data``, timeline_limit 20) and v2 syncs (unfiltered, as a client syncs);
* ``message via main``: the same, sent through the main process.

Each sample: the long-poll (30 s timeout) is given 0.3 s to start waiting, then the
send; the latency is from the start of the send to the arrival of the long-poll's
answer, and the send's own round trip is recorded next to it. v2 and v3 use different
devices of the receiving user (v2 sync deletes a device's to-device messages by
itself). Writes bench/results/wake_latency_workers.json, .txt and .png.

    bench/run wake_latency.py --workers              # 60 samples per series
    bench/run wake_latency_workers.py --samples 100  # the same script directly
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    boxplot_panels,
    exit_on_sigterm,
    module_version,
    percentile,
    save,
    series_table,
    synapse_version,
)
from bench.wake_latency import SETTLE, LongPoll
from harness import (
    MatrixUser,
    WorkerDeployment,
    redis_unavailable_reason,
    worker_support_missing_reason,
)

SERIES = ("to_device via worker2", "message via worker2", "message via main")


class WorkersBench:
    """alice long-polls on worker1 (device V3 with sync v3, device V2 with v2 sync);
    bob sends through worker2 or the main process."""

    def __init__(self, deployment: WorkerDeployment) -> None:
        main = deployment.main
        worker1, worker2 = deployment.workers
        alice = main.register(localpart="alice")
        bob = main.register(localpart="bob")
        v2_account = main.login("alice", device_id="V2DEVICE")
        self.v3 = deployment.user(alice, worker1)
        self.v2 = deployment.user(v2_account, worker1)
        self.bob_main = deployment.user(bob, main)
        self.bob_worker2 = deployment.user(bob, worker2)
        self.room = self.bob_main.create_room(invite=[alice.user_id])
        MatrixUser(main.base_url, alice).join(self.room)
        body = {"to_device": {}, "room_data": {"room_ids": [self.room], "timeline_limit": 20}}
        self.v3_since: str = self.v3.sync_v3(body).expect(200)["next"]
        empty: dict[str, Any] = {"room": {"rooms": []}}
        self.v2_since: str = self.v2.v2_sync(filter=empty)["next_batch"]
        self.catch_up("v3")
        self.catch_up("v2")

    def catch_up(self, api: str) -> None:
        """Take in what the other API's sends produced, so that the next long-poll
        really waits."""
        if api == "v3":
            self.v3_since = self.v3.sync_v3({}, since=self.v3_since, timeout=0).expect(200)["next"]
        else:
            self.v2_since = self.v2.v2_sync(since=self.v2_since, timeout=0)["next_batch"]

    def _v3_poll(self) -> dict[str, Any]:
        body: dict[str, Any] = self.v3.sync_v3({}, since=self.v3_since, timeout=30000).expect(200)
        return body

    def _v2_poll(self) -> dict[str, Any]:
        return self.v2.v2_sync(since=self.v2_since, timeout=30000)

    def measure(self, api: str, series: str) -> tuple[float, float]:
        """(send start -> long-poll answer, send round trip), in ms."""
        self.catch_up(api)
        poll = LongPoll(self._v3_poll if api == "v3" else self._v2_poll)
        time.sleep(SETTLE)
        device = self.v3 if api == "v3" else self.v2
        sent = time.perf_counter()
        if series == "to_device via worker2":
            marker = str(time.time())
            self.bob_worker2.send_to_device(
                "m.bench", {device.user_id: {device.device_id: {"t": marker}}}
            )
            sent_done = time.perf_counter()
            body = poll.wait()
            if api == "v3":
                events = body["to_device"]["events"]
                self.v3_since = body["next"]
            else:
                events = body["to_device"]["events"]
                self.v2_since = body["next_batch"]
            assert [e["content"]["t"] for e in events] == [marker], events
        else:
            sender = self.bob_worker2 if series == "message via worker2" else self.bob_main
            event_id = sender.send_message(self.room, "wake up")
            sent_done = time.perf_counter()
            body = poll.wait()
            if api == "v3":
                events = body["room_data"]["rooms"][self.room]["timeline"]["events"]
                self.v3_since = body["next"]
            else:
                events = body["rooms"]["join"][self.room]["timeline"]["events"]
                self.v2_since = body["next_batch"]
            assert [e["event_id"] for e in events] == [event_id], events
        return (poll.arrived - sent) * 1000, (sent_done - sent) * 1000


def run(samples: int) -> dict[str, Any]:
    for reason in (worker_support_missing_reason(), redis_unavailable_reason()):
        if reason is not None:
            sys.exit(reason)
    workdir = Path(tempfile.mkdtemp(prefix="syncv3-bench-wakew-"))
    deployment = WorkerDeployment.create(
        workdir,
        presence=False,
        stream_writers={stream: ["worker2"] for stream in ("typing", "to_device", "receipts")},
    )
    series: dict[str, list[float]] = {}
    sends: dict[str, list[float]] = {}
    load_start = [round(x, 2) for x in os.getloadavg()]
    try:
        deployment.start(timeout=120)
        print(f"deployment {deployment.server_name} ready (main + 2 workers, PostgreSQL, Redis)")
        bench = WorkersBench(deployment)
        for name in SERIES:
            for api in ("v3", "v2"):
                series[f"{api} {name}"] = []
            sends[name] = []
            bench.measure("v3", name)  # warm-up
            bench.measure("v2", name)
            started = time.monotonic()
            for i in range(samples):
                for api in ("v3", "v2") if i % 2 == 0 else ("v2", "v3"):
                    wake, send = bench.measure(api, name)
                    series[f"{api} {name}"].append(wake)
                    sends[name].append(send)
                if (i + 1) % 10 == 0 or i + 1 == samples:
                    rate = (i + 1) / (time.monotonic() - started)
                    print(f"  {name}: {i + 1}/{samples} ({rate:.1f}/s)", flush=True)
    finally:
        deployment.close()
    return {
        "db": "postgres",
        "layout": "main + 2 generic workers; long-polls on worker1; worker2 writes to_device, "
        "typing and receipts; main persists events",
        "samples": samples,
        "synapse": synapse_version(),
        "module": module_version(),
        "command": " ".join(["bench/run", Path(sys.argv[0]).name, *sys.argv[1:]]),
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "series": series,
        "sends": sends,
    }


def report(result: dict[str, Any]) -> str:
    series = result["series"]
    lines = [
        f"Wake latency on workers, send start -> long-poll answer (ms): {result['layout']}; "
        f"PostgreSQL, matrix-synapse {result['synapse']}, synapse-syncv3 {result['module']}, "
        f"n={result['samples']} per series, load {result['load_start']} -> {result['load_end']}: "
        f"{result['command']}",
        *series_table({**series, **{f"send {k}": v for k, v in result["sends"].items()}}, 30),
    ]
    for name in SERIES:
        v3, v2 = series[f"v3 {name}"], series[f"v2 {name}"]
        lines.append(
            f"{name}: v3/v2 median ratio {statistics.median(v3) / statistics.median(v2):.2f}, "
            f"p95 ratio {percentile(v3, 95) / percentile(v2, 95):.2f}"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    panels = [
        (name, {api: result["series"][f"{api} {name}"] for api in ("v3", "v2")}, False)
        for name in SERIES
    ]
    return boxplot_panels(
        panels,
        path,
        title=f"Wake latency on workers: long-poll on worker1, sync v3 vs v2 sync (PostgreSQL, "
        f"Synapse {result['synapse']}, n={result['samples']})",
        ylabel="send start → long-poll answer (ms)",
        width=11,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if args.samples < 20:
        parser.error("at least 20 samples per series")
    result = run(args.samples)
    png = save("wake_latency_workers", result, report(result))
    if plot(result, png):
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
