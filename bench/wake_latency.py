"""Wake latency: how long after a send does a waiting long-poll answer?

Starts a real Synapse with synapse-syncv3 loaded, then, for a to-device message and for
a typing notification, measures the time from the start of the sender's request to
the arrival of the long-poll response, for sync v3 (POST /_matrix/client/v3/sync) and
for Synapse's own v2 sync (GET /_matrix/client/v3/sync) on the same server, in the
same run, interleaved. Reports median and p95 per kind and API and the v3/v2 ratio,
writes the samples to bench/results/wake_latency-<db>.json and a plot next to it.

    bench/run wake_latency.py                 # SQLite, 60 samples per series
    bench/run wake_latency.py --db postgres   # PostgreSQL at SYNCV3_TEST_POSTGRES
    bench/run wake_latency.py --samples 200

The long-polls are given 0.3 s to start waiting before the send; each has a 30 s
timeout. v2 and v3 use different devices of the receiving user, because v2 sync
deletes a device's to-device messages by itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import boxplot, percentile, save, series_table
from harness import Homeserver, MatrixUser, PostgresDatabase

SETTLE = 0.3  # seconds a long-poll gets to start waiting before the send


class LongPoll:
    """Runs one long-poll in a thread and records when its response arrived."""

    def __init__(self, request: Callable[[], dict[str, Any]]) -> None:
        self.result: dict[str, Any] | None = None
        self.arrived = 0.0
        self._request = request
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.result = self._request()
        self.arrived = time.perf_counter()

    def wait(self) -> dict[str, Any]:
        self._thread.join(timeout=60)
        if self.result is None:
            raise RuntimeError("long-poll did not answer")
        return self.result


class Bench:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.bob = MatrixUser(hs.base_url, hs.register(localpart="bob"))
        alice = hs.register(localpart="alice")
        self.v3_device = MatrixUser(hs.base_url, alice)
        self.v2_device = MatrixUser(hs.base_url, hs.login("alice", device_id="V2DEVICE"))
        self.room = self.bob.create_room(invite=[alice.user_id])
        self.v3_device.join(self.room)
        self.typing = False
        first = self.v3_device.sync_v3({"typing": {"room_id": self.room}, "to_device": {}})
        self.v3_since = first.expect(200)["next"]
        self.v2_since = self.v2_device.v2_sync(timeout=0)["next_batch"]

    def _v3_poll(self) -> dict[str, Any]:
        response = self.v3_device.sync_v3({}, since=self.v3_since, timeout=30000)
        body: dict[str, Any] = response.expect(200)
        return body

    def _v2_poll(self) -> dict[str, Any]:
        return self.v2_device.v2_sync(since=self.v2_since, timeout=30000)

    def _trigger(self, kind: str, device: MatrixUser) -> None:
        if kind == "to_device":
            self.bob.send_to_device(
                "m.bench", {device.user_id: {device.device_id: {"t": time.time()}}}
            )
        else:
            self.typing = not self.typing
            self.bob.set_typing(self.room, self.typing)

    def catch_up(self, api: str) -> None:
        """Take in whatever the other API's triggers produced, so that the next
        long-poll really waits."""
        if api == "v3":
            self.v3_since = self.v3_device.sync_v3({}, since=self.v3_since).expect(200)["next"]
        else:
            self.v2_since = self.v2_device.v2_sync(since=self.v2_since, timeout=0)["next_batch"]

    def measure(self, api: str, kind: str) -> float:
        device = self.v3_device if api == "v3" else self.v2_device
        self.catch_up(api)
        poll = LongPoll(self._v3_poll if api == "v3" else self._v2_poll)
        time.sleep(SETTLE)
        sent = time.perf_counter()
        self._trigger(kind, device)
        body = poll.wait()
        if api == "v3":
            assert kind in body, body
            self.v3_since = body["next"]
        else:
            self.v2_since = body["next_batch"]
            if kind == "typing":
                assert body["rooms"]["join"][self.room]["ephemeral"]["events"], body
            else:
                assert body["to_device"]["events"], body
        return (poll.arrived - sent) * 1000


def run(db: str, samples: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="syncv3-bench-"))
    postgres = PostgresDatabase.create(prefix="syncv3_bench") if db == "postgres" else None
    hs = Homeserver(workdir, database=db, postgres=postgres, presence=False, name="bench")  # type: ignore[arg-type]
    series: dict[str, list[float]] = {
        f"{api} {kind}": [] for kind in ("to_device", "typing") for api in ("v3", "v2")
    }
    try:
        hs.start()
        print(f"Synapse ready in {hs.ready_seconds:.1f} s ({db}); {samples} samples per series")
        bench = Bench(hs)
        for kind in ("to_device", "typing"):
            for i in range(samples):
                for api in ("v3", "v2") if i % 2 == 0 else ("v2", "v3"):
                    series[f"{api} {kind}"].append(bench.measure(api, kind))
                if (i + 1) % 10 == 0 or i + 1 == samples:
                    print(f"  {kind}: {i + 1}/{samples}", flush=True)
        import synapse

        return {
            "db": db,
            "samples": samples,
            "synapse": synapse.__version__.split()[0],
            "series": series,
        }
    finally:
        hs.stop()
        if postgres is not None:
            postgres.drop()


def report(result: dict[str, Any]) -> str:
    series = result["series"]
    lines = [
        f"Wake latency, send start -> long-poll response (ms), {result['db']}, "
        f"matrix-synapse {result['synapse']}, n={result['samples']} per series",
        *series_table(series, 14),
    ]
    for kind in ("to_device", "typing"):
        v3, v2 = series[f"v3 {kind}"], series[f"v2 {kind}"]
        lines.append(
            f"{kind}: v3/v2 median ratio {statistics.median(v3) / statistics.median(v2):.2f}, "
            f"p95 ratio {percentile(v3, 95) / percentile(v2, 95):.2f}"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    return boxplot(
        result["series"],
        path,
        title=f"Wake latency, sync v3 vs v2 sync ({result['db']}, Synapse {result['synapse']}, "
        f"n={result['samples']})",
        ylabel="send start → long-poll response (ms)",
        width=8,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    if args.samples < 50:
        parser.error("at least 50 samples per series")
    result = run(args.db, args.samples)
    png = save(f"wake_latency-{args.db}", result, report(result))
    if plot(result, png):
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
