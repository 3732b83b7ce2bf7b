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

With ``--rooms 10,1000`` it also measures a message: for each count N, a user joined
to N rooms long-polls with sync v3 serving one of them (``room_data``, timeline_limit
20) and with v2 sync (unfiltered, as a client syncs), and another user sends an
``m.room.message`` into that room. Next to each wake latency the sender's own request
time (the ``PUT /send`` round trip) is recorded, so the cost beyond the send shows.
The N rooms (created by the user, in a loop with progress) are seeded once and cached
in bench/.cache/ (``--reseed`` rebuilds); results then go to
bench/results/wake_latency_rooms-<db>.json, with a plot whose second panel shows, per
sample, the wake latency minus the send round trip (negative: the waiting client had
its answer before the sender had the answer to its own request).

    bench/run wake_latency.py --rooms 10,1000 --only-rooms
    bench/run wake_latency.py --rooms 10,1000 --only-rooms --db postgres
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Deadline,
    SeededServer,
    boxplot,
    boxplot_panels,
    exit_on_sigterm,
    metric_counts,
    module_version,
    percentile,
    progress,
    save,
    seeded_server,
    series_table,
    servlet_usage,
    synapse_version,
    usage_diff,
    usage_summary,
)
from harness import Account, Homeserver, MatrixUser, PostgresDatabase

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


ROOMS_SEED_VERSION = 1


def seed_rooms(hs: Homeserver, counts: list[int], deadline: Deadline) -> dict[str, Any]:
    """For each count N: user ``joinedN`` joined to N rooms, one of them (the served
    room) created by ``sender``, the others created by ``joinedN`` itself."""
    sender = hs.user(hs.register(localpart="sender"))
    users: dict[str, Any] = {}
    for count in counts:
        account = hs.register(localpart=f"joined{count}")
        user = hs.user(account)
        served = sender.create_room(preset="public_chat", name=f"served ({count} rooms)")
        user.join(served)
        print(f"seeding {count - 1} more rooms for {account.user_id}, 4 at a time")
        started = time.monotonic()
        done = 0
        with ThreadPoolExecutor(4) as pool:
            for _ in pool.map(
                lambda i, user=user: user.create_room(name=f"room {i}"), range(count - 1)
            ):
                done += 1
                progress("rooms", done, count - 1, started, 100)
                if done % 20 == 0:
                    deadline.check("seeding rooms")
        users[str(count)] = {"account": dataclasses.asdict(account), "served": served}
    return {"sender": dataclasses.asdict(sender.account), "users": users}


#: The pseudo servlet under which a sample's room_data computations are recorded.
COMPUTATIONS = "syncv3 room_data computations"


def stream_computations(metrics_text: str) -> dict[str, float]:
    """How often sync v3 computed ``room_data`` and for how long in all (seconds), from
    the module's ``synapse_syncv3_stream_duration_seconds``. Read once the long-poll
    waits and again after its answer, the difference is the computation(s) of the wake."""
    metric = "synapse_syncv3_stream_duration_seconds"
    return {
        "count": metric_counts(metrics_text, f"{metric}_count", "stream").get("room_data", 0.0),
        "seconds": metric_counts(metrics_text, f"{metric}_sum", "stream").get("room_data", 0.0),
    }


class MessageBench:
    """Wake latency of a message into a served room, for a user joined to N rooms."""

    def __init__(self, hs: Homeserver, meta: dict[str, Any], count: int) -> None:
        self.hs = hs
        entry = meta["users"][str(count)]
        account = Account(**entry["account"])
        self.room: str = entry["served"]
        self.sender = hs.user(Account(**meta["sender"]))
        self.v3_device = hs.user(hs.login(account.localpart, device_id=f"V3WAKE{count}"))
        self.v2_device = hs.user(hs.login(account.localpart, device_id=f"V2WAKE{count}"))
        body = {"room_data": {"room_ids": [self.room], "timeline_limit": 20}}
        first = self.v3_device.sync_v3(body).expect(200)
        assert self.room in first["room_data"]["rooms"], first
        self.v3_since: str = first["next"]
        # A v2 token without an initial sync of every room: tokens do not depend on the
        # filter, and the long-polls below ask without one, as a client syncs.
        empty: dict[str, Any] = {"room": {"rooms": []}}
        self.v2_since: str = self.v2_device.v2_sync(filter=empty)["next_batch"]
        self.catch_up("v3")
        self.catch_up("v2")

    def catch_up(self, api: str) -> None:
        if api == "v3":
            self.v3_since = self.v3_device.sync_v3({}, since=self.v3_since, timeout=0).expect(200)[
                "next"
            ]
        else:
            self.v2_since = self.v2_device.v2_sync(since=self.v2_since, timeout=0)["next_batch"]

    def _v3_poll(self) -> dict[str, Any]:
        body: dict[str, Any] = self.v3_device.sync_v3(
            {}, since=self.v3_since, timeout=30000
        ).expect(200)
        return body

    def _v2_poll(self) -> dict[str, Any]:
        return self.v2_device.v2_sync(since=self.v2_since, timeout=30000)

    def measure(self, api: str) -> tuple[float, float, dict[str, dict[str, float]]]:
        """(send start -> long-poll response, send round trip) in ms, and what the
        long-poll and the send used (Synapse's per-servlet metrics, read outside the
        timed span)."""
        self.catch_up(api)
        before = servlet_usage(self.hs.metrics())
        poll = LongPoll(self._v3_poll if api == "v3" else self._v2_poll)
        time.sleep(SETTLE)
        # The long-poll waits now: what it computed so far was its first computation.
        computed_before = stream_computations(self.hs.metrics())
        sent = time.perf_counter()
        event_id = self.sender.send_message(self.room, "wake up")
        sent_done = time.perf_counter()
        body = poll.wait()
        if api == "v3":
            events = body["room_data"]["rooms"][self.room]["timeline"]["events"]
            self.v3_since = body["next"]
        else:
            events = body["rooms"]["join"][self.room]["timeline"]["events"]
            self.v2_since = body["next_batch"]
        assert [e["event_id"] for e in events] == [event_id], events
        text = self.hs.metrics()
        usage = usage_diff(before, servlet_usage(text))
        computed = stream_computations(text)
        for key, value in computed.items():
            # The module's own timing of its stream computations, as a pseudo servlet.
            delta = value - computed_before.get(key, 0.0)
            usage.setdefault(COMPUTATIONS, {})[key] = delta
        return (poll.arrived - sent) * 1000, (sent_done - sent) * 1000, usage


def run_rooms(
    server: SeededServer, counts: list[int], samples: int, deadline: Deadline
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[Any]]]:
    """The message series for every count: wake latencies and send round trips
    (``send`` series, from the v3 and v2 samples alike); per API and count the wake
    latency minus the send round trip of the same sample, and the per-servlet usage of
    each sample."""
    series: dict[str, list[float]] = {}
    beyond: dict[str, list[float]] = {}
    usage: dict[str, list[Any]] = {}
    for count in counts:
        bench = MessageBench(server.hs, server.meta, count)
        names = {api: f"{api} message ({count} rooms)" for api in ("v3", "v2")}
        send_name = f"send ({count} rooms)"
        for name in (*names.values(), send_name):
            series[name] = []
        for api in ("v3", "v2"):
            beyond[f"{api} {count}"] = []
            usage[f"{api} {count}"] = []
        bench.measure("v3")  # warm-up
        bench.measure("v2")
        print(f"message, {count} joined rooms: {samples} samples per series")
        started = time.monotonic()
        for i in range(samples):
            for api in ("v3", "v2") if i % 2 == 0 else ("v2", "v3"):
                wake, send, used = bench.measure(api)
                series[names[api]].append(wake)
                series[send_name].append(send)
                beyond[f"{api} {count}"].append(wake - send)
                usage[f"{api} {count}"].append(used)
            progress(f"message, {count} rooms", i + 1, samples, started, 10)
            deadline.check("message series")
    return series, beyond, usage


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


def plot(result: dict[str, Any], path: Path, width: float = 8) -> bool:
    if "beyond_send" in result:
        # The --rooms result: the latencies, and beside them per sample the wake
        # latency minus the send round trip (what the wake costs beyond the send).
        beyond = {
            f"{key.split()[0]} ({key.split()[1]} rooms)": values
            for key, values in result["beyond_send"].items()
        }
        return boxplot_panels(
            [
                ("send start → long-poll response", result["series"], False),
                ("beyond the send (wake − send round trip)", beyond, False),
            ],
            path,
            title=f"Wake latency of a message, sync v3 vs v2 sync ({result['db']}, Synapse "
            f"{result['synapse']}, n={result['samples']})",
            ylabel="ms",
            width=3 + 1.1 * (len(result["series"]) + len(beyond)),
        )
    return boxplot(
        result["series"],
        path,
        title=f"Wake latency, sync v3 vs v2 sync ({result['db']}, Synapse {result['synapse']}, "
        f"n={result['samples']})",
        ylabel="send start → long-poll response (ms)",
        width=width,
    )


def run_with_rooms(
    db: str,
    samples: int,
    counts: list[int],
    only_rooms: bool,
    reseed: bool,
    time_limit: float,
    seed_only: bool = False,
) -> dict[str, Any] | None:
    deadline = Deadline(time_limit)
    server = seeded_server(
        "wake_rooms-" + "-".join(map(str, counts)),
        ROOMS_SEED_VERSION,
        db,
        lambda hs: seed_rooms(hs, counts, deadline),
        reseed=reseed,
    )
    if seed_only:
        server.stop()
        return None
    series: dict[str, list[float]] = {}
    try:
        if not only_rooms:
            bench = Bench(server.hs)
            for kind in ("to_device", "typing"):
                for api in ("v3", "v2"):
                    series[f"{api} {kind}"] = []
                for i in range(samples):
                    for api in ("v3", "v2") if i % 2 == 0 else ("v2", "v3"):
                        series[f"{api} {kind}"].append(bench.measure(api, kind))
                    if (i + 1) % 10 == 0 or i + 1 == samples:
                        print(f"  {kind}: {i + 1}/{samples}", flush=True)
        rooms_series, beyond, usage = run_rooms(server, counts, samples, deadline)
        series.update(rooms_series)
    finally:
        server.stop()
    return {
        "db": db,
        "samples": samples,
        "synapse": synapse_version(),
        "module": module_version(),
        "rooms": counts,
        "command": " ".join(["bench/run", "wake_latency.py", *sys.argv[1:]]),
        "series": series,
        "beyond_send": beyond,
        "usage": usage,
    }


def report_rooms(result: dict[str, Any]) -> str:
    series = result["series"]
    lines = [
        f"Wake latency, send start -> long-poll response (ms), {result['db']}, "
        f"matrix-synapse {result['synapse']}, synapse-syncv3 {result.get('module', 'unknown')}, "
        f"n={result['samples']} per series (send: 2n, from the v3 and v2 samples): "
        f"{result['command']}",
        *series_table(series, 26),
    ]
    for kind in ("to_device", "typing"):
        if f"v3 {kind}" in series:
            v3, v2 = series[f"v3 {kind}"], series[f"v2 {kind}"]
            lines.append(
                f"{kind}: v3/v2 median ratio {statistics.median(v3) / statistics.median(v2):.2f}"
                f", p95 ratio {percentile(v3, 95) / percentile(v2, 95):.2f}"
            )
    for count in result["rooms"]:
        v3 = series[f"v3 message ({count} rooms)"]
        v2 = series[f"v2 message ({count} rooms)"]
        beyond = {api: result["beyond_send"][f"{api} {count}"] for api in ("v3", "v2")}
        lines.append(
            f"message, {count} rooms: v3/v2 median ratio "
            f"{statistics.median(v3) / statistics.median(v2):.2f}, p95 ratio "
            f"{percentile(v3, 95) / percentile(v2, 95):.2f}; beyond the send (wake - send "
            f"round trip, per sample): v3 median {statistics.median(beyond['v3']):.1f} ms, "
            f"p95 {percentile(beyond['v3'], 95):.1f} ms (target <= 3 ms median); "
            f"v2 median {statistics.median(beyond['v2']):.1f} ms, "
            f"p95 {percentile(beyond['v2'], 95):.1f} ms"
        )
        for api in ("v3", "v2"):
            samples = result["usage"][f"{api} {count}"]
            lines.extend(f"  {api} samples, {line}" for line in usage_summary(samples))
            runs = [s[COMPUTATIONS] for s in samples if COMPUTATIONS in s]
            computations = sum(run["count"] for run in runs)
            if computations:
                each = sum(run["seconds"] for run in runs) / computations * 1000
                lines.append(
                    f"  {api} samples, room_data computed {computations / len(samples):.1f} "
                    f"times per wake, {each:.1f} ms each (mean; the module's "
                    "synapse_syncv3_stream_duration_seconds)"
                )
    return "\n".join(lines)


def main() -> None:
    if "--workers" in sys.argv[1:]:
        # The series on Synapse's workers: bench/wake_latency_workers.py.
        from bench.wake_latency_workers import main as workers_main

        workers_main([arg for arg in sys.argv[1:] if arg != "--workers"])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workers",
        action="store_true",
        help="long-poll on a worker, send through another or the main process "
        "(bench/wake_latency_workers.py; --samples only)",
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument(
        "--rooms",
        default="",
        help="comma-separated joined-room counts for the message series, e.g. 10,1000",
    )
    parser.add_argument(
        "--only-rooms", action="store_true", help="with --rooms: skip to_device and typing"
    )
    parser.add_argument("--reseed", action="store_true", help="with --rooms: seed again")
    parser.add_argument(
        "--time-limit", type=float, default=3600, help="with --rooms: seconds, seeding included"
    )
    parser.add_argument(
        "--seed-only", action="store_true", help="with --rooms: fill the cache, measure nothing"
    )
    parser.add_argument(
        "--report-from",
        type=Path,
        help="write the report and plot of a saved --rooms result (JSON) again",
    )
    args = parser.parse_args()
    exit_on_sigterm()
    if args.report_from is not None:
        saved = json.loads(args.report_from.read_text())
        png = save(f"wake_latency_rooms-{saved['db']}", saved, report_rooms(saved))
        if plot(saved, png, 4 + 1.4 * len(saved["series"])):
            print(f"plot: {png}")
        return
    if args.samples < 50:
        parser.error("at least 50 samples per series")
    try:
        counts = sorted({int(n) for n in args.rooms.split(",") if n.strip()})
    except ValueError:
        parser.error("--rooms takes comma-separated integers")
    if any(n < 1 for n in counts):
        parser.error("--rooms: every count is at least 1 (the served room)")
    if args.only_rooms and not counts:
        parser.error("--only-rooms needs --rooms")
    if counts:
        rooms_result = run_with_rooms(
            args.db,
            args.samples,
            counts,
            args.only_rooms,
            args.reseed,
            args.time_limit,
            args.seed_only,
        )
        if rooms_result is None:
            return
        result = rooms_result
        png = save(f"wake_latency_rooms-{args.db}", result, report_rooms(result))
        width = 4 + 1.4 * len(result["series"])
    else:
        result = run(args.db, args.samples)
        png = save(f"wake_latency-{args.db}", result, report(result))
        width = 8
    if plot(result, png, width):
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
