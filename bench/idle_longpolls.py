"""Idle long-polls at scale (issue 10 item 4): what N waiting long-polls cost Synapse,
and what waking every one of them costs, for sync v3 next to v2 sync in the same run.

One Synapse process (``--db sqlite|postgres``, default N = 10,000) or the worker
topology (``--workers``: PostgreSQL, Redis, the main process and two generic workers
with the module, N = 2,000 spread evenly over the two workers; the to-device messages
are sent through the main process, their stream's writer). N users with one device
each, registered through the shared-secret admin API and cached in bench/.cache/ (the
single-process runs; ``--reseed`` rebuilds), plus one sender.

For each API in turn (v3 first, then v2; ``--order v2,v3`` swaps), on processes
started afresh for it:

1. an initial sync per device (v3: a new session with ``to_device``; v2: GET /sync
   with ``timeout=0``) and a second one with ``timeout=0`` from its token (v3: it
   confirms the first delivery, a write; every long-poll after it is what an idle
   device sends again and again), 16 at a time;
2. the RSS of each serving process ("before");
3. N long-polls (v3: ``POST /_matrix/client/v3/sync?since=...&timeout=30000`` with
   ``{}``; v2: ``GET /_matrix/client/v3/sync?since=...&timeout=30000``), opened in
   waves, each on a keep-alive connection of its own, until Synapse's notifier counts
   N listeners (``synapse_notifier_listeners``); a long-poll that times out is issued
   again at once, so that N stay waiting;
4. the RSS again ("waiting"): RSS per waiting request = (waiting - before) / N; and
   the CPU time the processes used over an idle window of ``--idle-window`` seconds
   (timers, and the long-polls re-issued after their timeout);
5. one to-device message to every device (PUT /sendToDevice, ``--batch`` recipients
   per request, one request after another): the CPU time of the serving processes
   (utime + stime of every thread, from /proc) from just before the first send until
   every long-poll answered, divided by N = CPU per wake (the send's own CPU, from
   Synapse's per-servlet metrics, is reported beside it and, in a single process,
   included); and the wake-all time, from the start of the first send until the last
   long-poll answered. On PostgreSQL the CPU of the database backends serving the
   Synapse database is reported too.

The client is one asyncio event loop with a minimal HTTP/1.1 client
(bench/aio_http.py); the file-descriptor limits of this process (and so of the Synapse
processes it starts) are raised to the hard limit.

    bench/run idle_longpolls.py                        # SQLite, 10,000
    bench/run idle_longpolls.py --db postgres          # PostgreSQL, 10,000
    bench/run idle_longpolls.py --workers              # main + 2 workers, 2,000
    bench/run idle_longpolls.py -n 2000 --db sqlite    # fewer

Targets (issue 10): <= 20 KB of RSS per waiting request, <= 1 ms of CPU per wake and
never more than v2's, no error. Writes bench/results/idle_longpolls-<setup>.json, .txt
and .png (answers over time after the first send; KiB per waiting request; CPU per
wake).

``--profile DIR`` loads bench/profiling/sitecustomize.py into the serving processes:
each writes a tracemalloc comparison (waiting vs before; the snapshots split by part
with bench/profiling/memory_split.py) and a cProfile of the wake window
(``--profile-window idle``: of the idle window, timeouts and re-issues, without
tracemalloc) into DIR
(slower; not for the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.aio_http import HttpConnection, raise_fd_limit, register_users
from bench.common import (
    Deadline,
    count_diff,
    exit_on_sigterm,
    module_version,
    percentile,
    save,
    seeded_server,
    servlet_usage,
    synapse_version,
    transaction_counts,
    usage_diff,
)
from harness import REPO_ROOT, Homeserver, WorkerDeployment
from harness.homeserver import deep_merge

SYNC = "/_matrix/client/v3/sync"
TIMEOUT_MS = 30000  # --timeout
SEED_VERSION = 1
TARGET_KB = 20.0
TARGET_CPU_MS = 1.0
PROFILE_DIR = Path(__file__).resolve().parent / "profiling"

#: Module configuration: sessions live long enough for the run.
MODULE_CONFIG = {"session_ttl": "1y"}


# ------------------------------------------------------------- process figures


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (seconds)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def gauge(metrics_text: str, name: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def load_note() -> dict[str, Any]:
    """The load average and the other benchmarks running on the machine now."""
    others = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if (
            "bench/" in cmd
            and "python" in cmd
            and "idle_longpolls" not in cmd
            and "synapse.app" not in cmd  # this run's own Synapse processes
        ):
            others.append(cmd)
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "other_benchmarks": sorted(others)}


def postgres_backend_pids(dbname: str) -> list[int]:
    import psycopg2

    from harness import postgres_dsn

    conn = psycopg2.connect(postgres_dsn(), connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def postgres_cpu(dbname: str | None) -> float | None:
    if dbname is None:
        return None
    total = 0.0
    for pid in postgres_backend_pids(dbname):
        with contextlib.suppress(OSError):
            total += proc_cpu_seconds(pid)
    return total


# ------------------------------------------------------------------- clients


@dataclass
class Device:
    user_id: str
    token: str
    device_id: str
    #: Index of the serving process (in Setup.targets).
    target: int
    conn: HttpConnection | None = None
    since: str | None = None
    answered: float | None = None
    #: When the long-poll in flight was sent (time.monotonic()).
    issued_at: float = 0.0


@dataclass
class PhaseState:
    api: str
    marker: str
    timeout_ms: int = TIMEOUT_MS
    stop: bool = False
    in_window: bool = False
    timeouts: int = 0
    timeouts_in_window: int = 0
    other_answers: int = 0
    errors: list[str] = field(default_factory=list)
    issued: int = 0
    answered: int = 0
    all_answered: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0


async def initial_sync(api: str, dev: Device) -> None:
    """The initial sync, then one more with ``timeout=0`` from its token, as a client's
    second request: for v3 it confirms the session's first to_device delivery (a
    write), so that every long-poll after it is what an idle device sends again and
    again (for v2 alike, to treat both the same)."""
    assert dev.conn is not None
    if api == "v3":
        body = await dev.conn.json("POST", SYNC, body={"to_device": {}}, token=dev.token)
        body = await dev.conn.json(
            "POST", SYNC, body={}, query={"since": body["next"], "timeout": 0}, token=dev.token
        )
        dev.since = body["next"]
    else:
        body = await dev.conn.json("GET", SYNC, query={"timeout": 0}, token=dev.token)
        body = await dev.conn.json(
            "GET", SYNC, query={"since": body["next_batch"], "timeout": 0}, token=dev.token
        )
        dev.since = body["next_batch"]


async def long_poll(api: str, dev: Device, state: PhaseState) -> None:
    """Long-poll until the marked to-device message arrives; timeouts are issued again."""
    assert dev.conn is not None
    errors_here = 0
    while not state.stop:
        state.issued += 1
        dev.issued_at = time.monotonic()
        try:
            if api == "v3":
                status, payload = await dev.conn.request(
                    "POST",
                    SYNC,
                    body={},
                    token=dev.token,
                    query={"since": dev.since, "timeout": state.timeout_ms},
                )
            else:
                status, payload = await dev.conn.request(
                    "GET",
                    SYNC,
                    token=dev.token,
                    query={"since": dev.since, "timeout": state.timeout_ms},
                )
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            if state.stop:
                return
            state.errors.append(f"{dev.user_id}: {type(e).__name__}: {e}")
            errors_here += 1
            if errors_here > 5:
                return
            await asyncio.sleep(1)
            continue
        now = time.perf_counter()
        if status != 200:
            state.errors.append(f"{dev.user_id}: HTTP {status}: {payload[:200]!r}")
            errors_here += 1
            if errors_here > 5:
                return
            await asyncio.sleep(1)
            continue
        body = json.loads(payload)
        dev.since = body["next"] if api == "v3" else body["next_batch"]
        events = (body.get("to_device") or {}).get("events") or []
        if any((e.get("content") or {}).get("marker") == state.marker for e in events):
            dev.answered = now
            state.answered += 1
            if state.answered == state.expected:
                state.all_answered.set()
            return
        if (api == "v3" and set(body) == {"next"}) or (api == "v2" and not events):
            state.timeouts += 1
            if state.in_window:
                state.timeouts_in_window += 1
        else:
            state.other_answers += 1


# -------------------------------------------------------------------- setups


class Setup:
    """The processes of a run: ``targets`` serve the long-polls, ``sender`` takes the
    sends; ``restart`` starts the serving processes afresh."""

    name: str
    targets: list[Homeserver]
    sender: Homeserver
    db_name: str | None
    users: list[dict[str, str]]
    sender_token: str

    def restart(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


#: Synapse's caches that every sync request reads (api/auth/internal.py, and the
#: per-user presence rate limit of v2 sync and sync v3): the token, the account's lock,
#: the token's "used" mark, the user's rate-limit override. Each holds 1,000 entries
#: times the cache factor (0.5 unless configured).
AUTH_CACHES = (
    "get_user_by_access_token",
    "get_user_locked_status",
    "mark_access_token_as_used",
    "get_ratelimit_for_user",
)


def auth_cache_config(entries: int) -> dict[str, Any]:
    """homeserver.yaml settings whose auth caches hold ``entries`` devices."""
    factor = max(0.5, entries / 1000)
    return {"caches": {"per_cache_factors": {name: factor for name in AUTH_CACHES}}}


class SingleSetup(Setup):
    def __init__(
        self, db: str, n: int, reseed: bool, env: dict[str, str], config: dict[str, Any]
    ) -> None:
        def seed(hs: Homeserver) -> dict[str, Any]:
            return asyncio.run(seed_users(hs, n))

        self.server = seeded_server(
            f"idle_longpolls-{n}",
            SEED_VERSION,
            db,
            seed,
            reseed=reseed,
            module_config=MODULE_CONFIG,
        )
        hs = self.server.hs
        hs.env.update(env)  # from the next start on (every phase starts it afresh)
        hs.extra_config = deep_merge(hs.extra_config, config)
        self.name = db
        self.targets = [hs]
        self.sender = hs
        self.db_name = self.server.postgres.name if self.server.postgres is not None else None
        self.users = self.server.meta["users"]
        self.sender_token = self.server.meta["sender"]["access_token"]

    def restart(self) -> None:
        self.server.hs.restart(timeout=120)

    def close(self) -> None:
        self.server.stop()


class WorkersSetup(Setup):
    def __init__(self, n: int, env: dict[str, str], config: dict[str, Any]) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="syncv3-bench-idle-"))
        self.deployment = WorkerDeployment.create(
            self.workdir,
            module_config=MODULE_CONFIG,
            presence=False,
            env=env,
            extra_config=config,
        )
        try:
            self.deployment.start(timeout=120)
            meta = asyncio.run(seed_users(self.deployment.main, n))
        except BaseException:
            self.deployment.close()
            raise
        self.name = "workers"
        self.targets = list(self.deployment.workers)
        self.sender = self.deployment.main
        self.db_name = self.deployment.postgres.name
        self.users = meta["users"]
        self.sender_token = meta["sender"]["access_token"]

    def restart(self) -> None:
        for worker in self.targets:
            self.deployment.restart_process(worker.name, kill=False, timeout=120)

    def close(self) -> None:
        import shutil

        self.deployment.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def seed_users(hs: Homeserver, n: int) -> dict[str, Any]:
    started = time.monotonic()
    host, port = "127.0.0.1", hs.port
    print(f"registering {n} users and a sender (shared-secret admin API, 8 at a time)")

    def on_done(done: int) -> None:
        if done % 500 == 0 or done == n:
            rate = done / max(time.monotonic() - started, 1e-9)
            print(
                f"  users: {done}/{n} ({rate:.0f}/s, ~{(n - done) / rate:.0f} s left)", flush=True
            )

    users = await register_users(
        host,
        port,
        hs.registration_shared_secret,
        [f"idle{i:05d}" for i in range(n)],
        on_done=on_done,
    )
    sender = (await register_users(host, port, hs.registration_shared_secret, ["idlesender"]))[0]
    return {"users": users, "sender": sender}


# -------------------------------------------------------------------- a phase


def _rss(setup: Setup) -> list[int]:
    return [proc_rss(t.pid) for t in setup.targets if t.pid is not None]


def _cpu(procs: Sequence[Homeserver]) -> list[float]:
    return [proc_cpu_seconds(p.pid) for p in procs if p.pid is not None]


async def _metrics(hs: Homeserver) -> str:
    return await asyncio.to_thread(hs.metrics)


async def _transactions(setup: Setup) -> dict[str, float]:
    """Database transactions the serving processes ran since start-up, by name."""
    total: dict[str, float] = {}
    for target in setup.targets:
        for desc, n in transaction_counts(await _metrics(target)).items():
            if not desc.startswith("SQL "):
                total[desc] = total.get(desc, 0.0) + n
    return total


async def _listeners(setup: Setup) -> float:
    """Long-polls waiting on the notifiers of the serving processes (0 when a process
    is too busy to answer the metrics request in time)."""
    try:
        texts = await asyncio.gather(*(_metrics(t) for t in setup.targets))
    except (TimeoutError, OSError):
        return 0.0
    return sum(gauge(text, "synapse_notifier_listeners") for text in texts)


async def _profile_signal(setup: Setup, sig: signal.Signals, enabled: bool) -> None:
    if not enabled:
        return
    for target in setup.targets:
        if target.pid is not None:
            os.kill(target.pid, sig)
    await asyncio.sleep(2 if sig == signal.SIGUSR1 else 5)


def _signal_targets(setup: Setup, sig: signal.Signals) -> None:
    for target in setup.targets:
        assert target.pid is not None
        os.kill(target.pid, sig)


async def _profile_report(path: Path, limit_s: float = 300.0) -> str:
    """The memory report a server writes on SIGUSR2 (it takes a while with many
    allocations traced: the file appears whole, once written)."""
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no profile report at {path} after {limit_s:.0f} s")
        await asyncio.sleep(1)
    return path.read_text()


def quiet_start(devices: list[Device], timeout_s: float, wanted: float) -> float:
    """Seconds to wait for the start of the longest stretch (within the next timeout
    period) in which no waiting long-poll times out; 0 when the stretch that starts
    now is at least ``wanted`` seconds long or no stretch is."""
    now = time.monotonic()
    deadlines = sorted(
        d.issued_at + timeout_s for d in devices if d.answered is None and d.issued_at
    )
    upcoming = [t - now for t in deadlines if t > now]
    if not upcoming or upcoming[0] >= wanted:
        return 0.0
    best_start, best_length = 0.0, upcoming[0]
    # The long-polls issued again after a timeout time out one period later.
    for before, after in itertools.pairwise([*upcoming, upcoming[0] + timeout_s]):
        if after - before > best_length:
            best_start, best_length = before, after - before
    if best_start + 1.0 > timeout_s:
        return 0.0
    return best_start + 0.5  # past the processing of the last timeout before it


async def run_phase(
    setup: Setup, api: str, args: argparse.Namespace, deadline: Deadline
) -> dict[str, Any]:
    n = len(setup.users)
    print(f"\n== {api}: {n} long-polls on {setup.name} ==", flush=True)
    load_start = load_note()
    restart_started = time.monotonic()
    setup.restart()
    print(f"serving processes started afresh in {time.monotonic() - restart_started:.1f} s")
    connect_limit = asyncio.Semaphore(64)
    devices = [
        Device(
            u["user_id"],
            u["access_token"],
            u["device_id"],
            target=i % len(setup.targets),
        )
        for i, u in enumerate(setup.users)
    ]
    for dev in devices:
        target = setup.targets[dev.target]
        dev.conn = HttpConnection("127.0.0.1", target.port, connect_limit)

    # 1. initial syncs
    started = time.monotonic()
    queue: asyncio.Queue[Device] = asyncio.Queue()
    for dev in devices:
        queue.put_nowait(dev)
    done = 0

    async def initial_worker() -> None:
        nonlocal done
        while True:
            try:
                dev = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await initial_sync(api, dev)
            done += 1
            if done % 1000 == 0 or done == n:
                rate = done / (time.monotonic() - started)
                print(f"  initial syncs: {done}/{n} ({rate:.0f}/s)", flush=True)

    await asyncio.gather(*(initial_worker() for _ in range(16)))
    deadline.check("initial syncs")
    initial_s = time.monotonic() - started
    # Idle connections are closed so that "before" holds no connection of ours.
    for dev in devices:
        assert dev.conn is not None
        dev.conn.close()

    # 2. RSS before
    await asyncio.sleep(3)
    rss_before = _rss(setup)
    # tracemalloc slows the process down too much for a profile of re-issues.
    trace_memory = args.profile is not None and args.profile_window == "wake"
    await _profile_signal(setup, signal.SIGUSR1, trace_memory)  # snapshot "before"

    # 3. open the long-polls: evenly over one timeout period (so that their deadlines,
    # and the re-issues after them, are spread evenly, as independent clients' are),
    # or in waves of --wave (each wave once the previous one waits)
    state = PhaseState(api, marker=uuid.uuid4().hex, timeout_ms=args.timeout, expected=n)
    tasks: list[asyncio.Task[None]] = []
    ramp_started = time.monotonic()
    last_print = 0.0
    waiting = 0.0

    async def progress() -> None:
        nonlocal last_print, waiting
        if time.monotonic() - last_print > 5:
            waiting = await _listeners(setup)
            print(
                f"  long-polls: {len(tasks)}/{n} issued, {waiting:.0f} waiting, "
                f"{state.timeouts} timed out and issued again, {len(state.errors)} errors"
                f" ({time.monotonic() - ramp_started:.0f} s)",
                flush=True,
            )
            last_print = time.monotonic()

    if args.ramp == "even":
        step = max(1, n // 1000)
        interval = args.timeout / 1000 * step / n
        for k, start in enumerate(range(0, n, step)):
            delay = ramp_started + k * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for dev in devices[start : start + step]:
                tasks.append(asyncio.create_task(long_poll(api, dev, state)))
            await progress()
            deadline.check("opening long-polls")
            if len(state.errors) > 20:
                break
    else:
        wave = args.wave
        for start in range(0, n, wave):
            for dev in devices[start : start + wave]:
                tasks.append(asyncio.create_task(long_poll(api, dev, state)))
            while True:
                await asyncio.sleep(0.5)
                await progress()
                waiting = await _listeners(setup)
                if waiting >= len(tasks) - max(20, wave // 10) or state.errors:
                    break
                deadline.check("opening long-polls")
            if len(state.errors) > 20:
                break
    # With re-issues going on, some long-polls are always between two requests: at
    # 30 s timeouts and 10,000, ~333 a second, each for the milliseconds its re-issue
    # is queued and served (tens of milliseconds on a busy process).
    tolerance = max(5, n // 100) if args.ramp == "even" else 0
    waiting = await _listeners(setup)
    while waiting < n - tolerance and not len(state.errors) > 20:
        await asyncio.sleep(0.5)
        await progress()
        waiting = await _listeners(setup)
        deadline.check("opening long-polls")
        if time.monotonic() - ramp_started > args.ramp_limit:
            break
    ramp_s = time.monotonic() - ramp_started
    print(
        f"  {waiting:.0f} of {n} waiting after {ramp_s:.1f} s "
        f"({state.timeouts} timed out and issued again, {len(state.errors)} errors)",
        flush=True,
    )

    # 4. RSS with N waiting, idle CPU
    await asyncio.sleep(3)
    rss_waiting = _rss(setup)
    waiting_check = await _listeners(setup)
    await _profile_signal(setup, signal.SIGUSR2, trace_memory)  # snapshot "waiting"
    traced_kib = None
    if trace_memory:
        traced_kib = 0.0
        for target in setup.targets:
            text = await _profile_report(args.profile / f"{target.pid}-memory.txt")
            traced_kib += float(text.split("total traced difference: ")[1].split(" KiB")[0])
        traced_kib /= n
    # One whole timeout period (unless --idle-window says otherwise): every long-poll
    # times out and is issued again once in it.
    idle_window = args.idle_window if args.idle_window else args.timeout / 1000
    print(f"  idle window of {idle_window:.0f} s", flush=True)
    idle_timeouts = state.timeouts
    idle_txns_before = await _transactions(setup)
    profile_idle = args.profile is not None and args.profile_window == "idle"
    if profile_idle:
        _signal_targets(setup, signal.SIGPROF)  # start the CPU profile
    idle_cpu_before = _cpu(setup.targets)
    idle_started = time.monotonic()
    await asyncio.sleep(idle_window)
    idle_cpu = sum(_cpu(setup.targets)) - sum(idle_cpu_before)
    if profile_idle:
        _signal_targets(setup, signal.SIGPROF)  # stop and write the CPU profile
    idle_txns = count_diff(idle_txns_before, await _transactions(setup))
    idle_s = time.monotonic() - idle_started
    idle_timeouts = state.timeouts - idle_timeouts
    per_waiting_kib = [
        (after - before) / 1024 / max(1, sum(1 for d in devices if d.target == i))
        for i, (before, after) in enumerate(zip(rss_before, rss_waiting, strict=True))
    ]
    total_kib = (sum(rss_waiting) - sum(rss_before)) / 1024 / n
    print(
        f"  RSS per waiting request: {total_kib:.1f} KiB "
        f"({', '.join(f'{k:.1f}' for k in per_waiting_kib)} per process); idle: "
        f"{idle_cpu / idle_s * 100:.1f} % of a core over {idle_s:.0f} s "
        f"({idle_timeouts} timeouts issued again)",
        flush=True,
    )

    # 5. wake every long-poll, starting where the fewest of them time out
    wait = quiet_start(devices, args.timeout / 1000, args.quiet)
    print(f"  starting the sends in {wait:.1f} s (between timeouts)", flush=True)
    await asyncio.sleep(wait)
    sender = HttpConnection("127.0.0.1", setup.sender.port)
    procs = list(setup.targets)
    if setup.sender not in procs:
        procs.append(setup.sender)
    usage_before = [servlet_usage(await _metrics(p)) for p in procs]
    profile_wake = args.profile is not None and args.profile_window == "wake"
    if profile_wake:
        _signal_targets(setup, signal.SIGPROF)  # start the CPU profile
        await asyncio.sleep(1)
    wake_txns_before = await _transactions(setup)
    pg_before = postgres_cpu(setup.db_name)
    cpu_before = _cpu(procs)
    state.in_window = True
    sent_at = time.perf_counter()
    window_started = time.monotonic()
    batch = args.batch
    for start in range(0, n, batch):
        messages: dict[str, dict[str, Any]] = {}
        for i, dev in enumerate(devices[start : start + batch], start):
            messages[dev.user_id] = {dev.device_id: {"marker": state.marker, "n": i}}
        await sender.json(
            "PUT",
            f"/_matrix/client/v3/sendToDevice/m.bench.idle/{state.marker}-{start}",
            body={"messages": messages},
            token=setup.sender_token,
        )
    send_s = time.perf_counter() - sent_at
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.all_answered.wait(), timeout=args.wake_limit)
    cpu_after = _cpu(procs)
    pg_after = postgres_cpu(setup.db_name)
    window_s = time.monotonic() - window_started
    state.in_window = False
    if profile_wake:
        _signal_targets(setup, signal.SIGPROF)  # stop and write the CPU profile
        await asyncio.sleep(3)
    usage_after = [servlet_usage(await _metrics(p)) for p in procs]
    wake_txns = count_diff(wake_txns_before, await _transactions(setup))
    answered = [d.answered for d in devices if d.answered is not None]
    wake_all_s = (max(answered) - sent_at) if answered else float("nan")
    latencies = sorted((t - sent_at) * 1000 for t in answered)
    await asyncio.sleep(2)
    rss_after = _rss(setup)
    state.stop = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for dev in devices:
        if dev.conn is not None:
            dev.conn.close()
    sender.close()

    target_names = [t.name for t in setup.targets]
    cpu = {p.name: round(a - b, 3) for p, a, b in zip(procs, cpu_after, cpu_before, strict=True)}
    target_cpu = sum(cpu[name] for name in target_names)
    send_cpu = 0.0
    send_requests = 0
    for _p, before, after in zip(procs, usage_before, usage_after, strict=True):
        for key, used in usage_diff(before, after).items():
            if "SendToDevice" in key:
                send_cpu += used.get("cpu_user_s", 0.0) + used.get("cpu_sys_s", 0.0)
                send_requests += int(used.get("requests", 0))
    # The send's CPU counts against the serving processes only when it ran there.
    send_cpu_in_targets = send_cpu if setup.sender in setup.targets else 0.0
    # Long-polls that timed out during the wake window were answered and issued again:
    # CPU that idle long-polls cost anyway. Estimated from the idle window (its CPU per
    # timeout, everything else the processes did in it included) and taken out.
    per_timeout = idle_cpu / idle_timeouts if idle_timeouts >= 20 else None
    churn_cpu = state.timeouts_in_window * per_timeout if per_timeout is not None else None
    result: dict[str, Any] = {
        "api": api,
        "n": n,
        "per_process": {
            name: sum(1 for d in devices if d.target == i) for i, name in enumerate(target_names)
        },
        "initial_syncs_s": round(initial_s, 1),
        "ramp_s": round(ramp_s, 1),
        "waiting_reached": waiting,
        "waiting_at_rss": waiting_check,
        "rss_before": dict(zip(target_names, rss_before, strict=True)),
        "rss_waiting": dict(zip(target_names, rss_waiting, strict=True)),
        "rss_after_wake": dict(zip(target_names, rss_after, strict=True)),
        "kib_per_waiting": round(total_kib, 2),
        "traced_kib_per_waiting": round(traced_kib, 2) if traced_kib is not None else None,
        "kib_per_waiting_by_process": dict(
            zip(target_names, [round(k, 2) for k in per_waiting_kib], strict=True)
        ),
        "idle_window_s": round(idle_s, 1),
        "idle_cpu_s": round(idle_cpu, 3),
        "idle_timeouts": idle_timeouts,
        "idle_transactions": idle_txns,
        "wake_transactions": wake_txns,
        "send_s": round(send_s, 2),
        "send_requests": send_requests,
        "send_cpu_s": round(send_cpu, 3),
        "wake_window_s": round(window_s, 2),
        "answered": len(answered),
        "wake_all_s": round(wake_all_s, 3),
        "latency_ms": {
            "median": round(statistics.median(latencies), 1) if latencies else None,
            "p95": round(percentile(latencies, 95), 1) if latencies else None,
            "max": round(max(latencies), 1) if latencies else None,
        },
        "latencies_ms": [round(x, 1) for x in latencies],
        "cpu_s_by_process": cpu,
        "cpu_ms_per_wake": round(target_cpu / n * 1000, 3),
        "cpu_ms_per_wake_without_send": round((target_cpu - send_cpu_in_targets) / n * 1000, 3),
        "cpu_ms_per_timeout_cycle": (
            round(per_timeout * 1000, 3) if per_timeout is not None else None
        ),
        "cpu_ms_per_wake_without_timeouts": (
            round((target_cpu - churn_cpu) / n * 1000, 3) if churn_cpu is not None else None
        ),
        "sender_cpu_ms_per_wake": (
            round(cpu[setup.sender.name] / n * 1000, 3)
            if setup.sender not in setup.targets
            else None
        ),
        "postgres_cpu_ms_per_wake": (
            round((pg_after - pg_before) / n * 1000, 3)
            if pg_after is not None and pg_before is not None
            else None
        ),
        "timeouts": state.timeouts,
        "timeouts_in_wake_window": state.timeouts_in_window,
        "other_answers": state.other_answers,
        "errors": state.errors[:50],
        "error_count": len(state.errors) + (n - len(answered)),
        "load_start": load_start,
        "load_end": load_note(),
    }
    print(
        f"  woke {len(answered)}/{n} in {wake_all_s:.2f} s (send {send_s:.2f} s); CPU per wake "
        f"{result['cpu_ms_per_wake']:.3f} ms ({result['cpu_ms_per_wake_without_send']:.3f} ms "
        f"without the send's own); {state.timeouts_in_window} timeouts in the window; "
        f"{len(state.errors)} errors; load {result['load_end']['loadavg']}",
        flush=True,
    )
    return result


# -------------------------------------------------------------------- report


def wake_cpu(phase: dict[str, Any]) -> float:
    """CPU per wake without the long-polls that timed out in the wake window (when
    some did), else as measured."""
    corrected = phase.get("cpu_ms_per_wake_without_timeouts")
    return float(corrected if corrected is not None else phase["cpu_ms_per_wake"])


def _backfill(phase: dict[str, Any]) -> None:
    """The timeout correction for a result saved before it was computed."""
    if "cpu_ms_per_timeout_cycle" in phase:
        return
    idle_timeouts = phase["idle_timeouts"]
    per_timeout = phase["idle_cpu_s"] / idle_timeouts if idle_timeouts >= 20 else None
    phase["cpu_ms_per_timeout_cycle"] = (
        round(per_timeout * 1000, 3) if per_timeout is not None else None
    )
    if per_timeout is not None:
        raw = phase["cpu_ms_per_wake"] / 1000 * phase["n"]
        churn = phase["timeouts_in_wake_window"] * per_timeout
        phase["cpu_ms_per_wake_without_timeouts"] = round((raw - churn) / phase["n"] * 1000, 3)
    else:
        phase["cpu_ms_per_wake_without_timeouts"] = None


def report(result: dict[str, Any]) -> str:
    phases = result["phases"]
    for phase in phases.values():
        _backfill(phase)
    lines = [
        f"Idle long-polls at scale, {result['setup']}: n={result['n']} "
        f"({result['layout']}), timeout={result.get('timeout_ms', TIMEOUT_MS)} ms, "
        f"matrix-synapse {result['synapse']}, "
        f"synapse-syncv3 {result['module']}: {result['command']}",
        f"{'':<34}" + "".join(f"{api:>14}" for api in phases),
    ]

    def row(label: str, fmt: str, getter: Any) -> None:
        cells = []
        for phase in phases.values():
            value = getter(phase)
            cells.append(f"{'-' if value is None else format(value, fmt):>14}")
        lines.append(f"{label:<34}" + "".join(cells))

    row("RSS per waiting request (KiB)", ".1f", lambda p: p["kib_per_waiting"])
    row("  traced (tracemalloc, KiB)", ".1f", lambda p: p.get("traced_kib_per_waiting"))
    row("CPU per wake (ms)", ".3f", lambda p: p["cpu_ms_per_wake"])
    row("  without the send's own (ms)", ".3f", lambda p: p["cpu_ms_per_wake_without_send"])
    row("  without timeouts in it (ms)", ".3f", lambda p: p.get("cpu_ms_per_wake_without_timeouts"))
    row("  sender process (ms)", ".3f", lambda p: p["sender_cpu_ms_per_wake"])
    row("  PostgreSQL backends (ms)", ".3f", lambda p: p["postgres_cpu_ms_per_wake"])
    row("wake-all time (s)", ".2f", lambda p: p["wake_all_s"])
    row("  of which sending (s)", ".2f", lambda p: p["send_s"])
    row("wake latency median (ms)", ".0f", lambda p: p["latency_ms"]["median"])
    row("wake latency p95 (ms)", ".0f", lambda p: p["latency_ms"]["p95"])
    row("answered", "d", lambda p: p["answered"])
    row("errors", "d", lambda p: p["error_count"])
    row("timeouts in the wake window", "d", lambda p: p["timeouts_in_wake_window"])
    row("opening N long-polls (s)", ".1f", lambda p: p["ramp_s"])
    row(
        "idle CPU with N waiting (% core)",
        ".1f",
        lambda p: p["idle_cpu_s"] / p["idle_window_s"] * 100,
    )
    row("  timeouts issued again in it", "d", lambda p: p["idle_timeouts"])
    row("CPU per timeout + re-issue (ms)", ".2f", lambda p: p.get("cpu_ms_per_timeout_cycle"))
    row("RSS before (MiB, serving)", ".0f", lambda p: sum(p["rss_before"].values()) / 2**20)
    row("RSS waiting (MiB, serving)", ".0f", lambda p: sum(p["rss_waiting"].values()) / 2**20)
    for api, phase in phases.items():
        txns = phase.get("idle_transactions")
        if txns and phase["idle_timeouts"]:
            per = {d: n / phase["idle_timeouts"] for d, n in txns.items()}
            top = sorted(per.items(), key=lambda kv: -kv[1])[:8]
            lines.append(
                f"{api}: database transactions per timeout + re-issue "
                f"{sum(per.values()):.2f} (" + ", ".join(f"{d} {n:.2f}" for d, n in top) + ")"
            )
    for api, phase in phases.items():
        txns = phase.get("wake_transactions")
        if txns:
            # Transactions of the serving processes in the wake window, per long-poll
            # woken (sends through a serving process and timeouts in the window included).
            per = {d: n / phase["n"] for d, n in txns.items()}
            top = sorted(per.items(), key=lambda kv: -kv[1])[:8]
            lines.append(
                f"{api}: database transactions per wake (window, all of it) "
                f"{sum(per.values()):.2f} (" + ", ".join(f"{d} {n:.2f}" for d, n in top) + ")"
            )
    for api, phase in phases.items():
        lines.append(
            f"load {api}: start {phase['load_start']['loadavg']}, "
            f"end {phase['load_end']['loadavg']}, other benchmarks: "
            f"{len(phase['load_start']['other_benchmarks'])} at start, "
            f"{len(phase['load_end']['other_benchmarks'])} at end"
        )
    if "v3" in phases and "v2" in phases:
        v3, v2 = phases["v3"], phases["v2"]
        kib_ok = v3["kib_per_waiting"] * 1.024 <= TARGET_KB
        cpu_ok = wake_cpu(v3) <= TARGET_CPU_MS
        vs_v2 = wake_cpu(v3) <= wake_cpu(v2)
        errors_ok = v3["error_count"] == 0 and v2["error_count"] == 0
        lines.append(
            f"targets: RSS per waiting request {v3['kib_per_waiting'] * 1.024:.1f} KB <= "
            f"{TARGET_KB:.0f} KB: {'yes' if kib_ok else 'NO'}; CPU per wake "
            f"{wake_cpu(v3):.3f} ms <= {TARGET_CPU_MS} ms: {'yes' if cpu_ok else 'NO'}; "
            f"<= v2's {wake_cpu(v2):.3f} ms: {'yes' if vs_v2 else 'NO'}; "
            f"no error: {'yes' if errors_ok else 'NO'}"
        )
    for api, phase in phases.items():
        for error in phase["errors"][:5]:
            lines.append(f"  {api} error: {error}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return False
    phases = result["phases"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1, 1]})
    ax = axes[0]
    for api, phase in phases.items():
        lat = [x / 1000 for x in phase["latencies_ms"]]
        ax.plot(lat, range(1, len(lat) + 1), label=f"{api} (all in {phase['wake_all_s']:.2f} s)")
        ax.axvline(phase["send_s"], linestyle=":", linewidth=0.8, color=ax.lines[-1].get_color())
    ax.set_xlabel("seconds after the first send (dotted: last send done)")
    ax.set_ylabel("long-polls answered")
    ax.set_title("answers after one to-device message each")
    ax.legend()
    ax.grid(alpha=0.3)
    names = list(phases)
    ax = axes[1]
    ax.bar(
        names,
        [phases[a]["kib_per_waiting"] * 1.024 for a in names],
        color=["C0", "C1"][: len(names)],
    )
    ax.axhline(TARGET_KB, color="red", linestyle="--", linewidth=1, label="target")
    ax.set_ylabel("KB of RSS per waiting request")
    ax.set_title("memory while waiting")
    ax.legend()
    ax = axes[2]
    ax.bar(
        names, [phases[a]["cpu_ms_per_wake"] for a in names], color="lightgray", label="as measured"
    )
    ax.bar(
        names,
        [wake_cpu(phases[a]) for a in names],
        color=["C0", "C1"][: len(names)],
        width=0.5,
        label="without timeouts",
    )
    ax.axhline(TARGET_CPU_MS, color="red", linestyle="--", linewidth=1, label="target")
    ax.set_ylabel("ms of CPU per wake (serving processes)")
    ax.set_title("CPU per wake")
    ax.legend()
    fig.suptitle(
        f"{result['n']} idle long-polls, {result['setup']} ({result['layout']}), Synapse "
        f"{result['synapse']}, load {phases[names[0]]['load_start']['loadavg'][0]}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", action="store_true", help="main + 2 workers (PostgreSQL)")
    parser.add_argument("-n", type=int, help="long-polls (10,000; 2,000 with --workers)")
    parser.add_argument("--order", default="v3,v2", help="APIs in turn (default v3,v2)")
    parser.add_argument("--timeout", type=int, default=TIMEOUT_MS, help="long-poll timeout (ms)")
    parser.add_argument("--batch", type=int, default=100, help="recipients per send request")
    parser.add_argument(
        "--ramp",
        choices=("even", "waves"),
        default="even",
        help="open the long-polls evenly over one timeout period (default) or in waves",
    )
    parser.add_argument(
        "--wave", type=int, default=500, help="long-polls opened per wave (--ramp waves)"
    )
    parser.add_argument(
        "--idle-window",
        type=float,
        default=0.0,
        help="seconds of the idle CPU measure (default: one timeout period)",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=15.0,
        help="seconds without timeouts wanted for the wake (the longest stretch is used)",
    )
    parser.add_argument("--ramp-limit", type=float, default=600.0)
    parser.add_argument("--wake-limit", type=float, default=120.0)
    parser.add_argument(
        "--cache-factor",
        type=float,
        help="Synapse's global cache factor (SYNAPSE_CACHE_FACTOR; Synapse's default is "
        "0.5): 20 holds the access tokens of 10,000 users; with the default, every "
        "re-issue looks its token up in the database",
    )
    parser.add_argument(
        "--auth-caches",
        type=int,
        metavar="ENTRIES",
        help="size Synapse's caches that every sync request reads (access token, lock, "
        "'used' mark, presence rate limit) for this many devices (caches.per_cache_factors; "
        "with Synapse's defaults they hold 500, and every re-issue of more devices looks "
        "its token up in the database); both APIs alike",
    )
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--time-limit", type=float, default=3600)
    parser.add_argument("--profile", type=Path, help="write tracemalloc/cProfile output here")
    parser.add_argument(
        "--profile-window",
        choices=("wake", "idle"),
        default="wake",
        help="what the CPU profile covers: the wake (default) or the idle window "
        "(timeouts and re-issues)",
    )
    parser.add_argument(
        "--module-path",
        type=Path,
        help="a directory with another synapse_syncv3 package (older code) to measure",
    )
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    parser.add_argument(
        "--report-from", type=Path, help="write the report and plot of a saved result again"
    )
    args = parser.parse_args()
    exit_on_sigterm()
    if args.report_from is not None:
        saved = json.loads(args.report_from.read_text())
        png = save(args.report_from.stem, saved, report(saved))
        if plot(saved, png):
            print(f"plot: {png}")
        return
    n = args.n or (2000 if args.workers else 10000)
    apis = [a.strip() for a in args.order.split(",") if a.strip()]
    if not apis or any(a not in ("v3", "v2") for a in apis):
        parser.error("--order takes v3 and/or v2")
    limit = raise_fd_limit(n * 2 + 1000)
    if limit < n + 500:
        parser.error(f"the open-file limit is {limit}: too low for {n} connections")
    print(f"open-file limit {limit}; load {load_note()}")
    env: dict[str, str] = {}
    if args.cache_factor is not None:
        env["SYNAPSE_CACHE_FACTOR"] = str(args.cache_factor)
    path = [str(REPO_ROOT)]
    if args.module_path is not None:
        if not (args.module_path / "synapse_syncv3" / "__init__.py").exists():
            parser.error(f"--module-path: no synapse_syncv3 package in {args.module_path}")
        path.insert(0, str(args.module_path.resolve()))
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        path.insert(0, str(PROFILE_DIR))
        env["SYNCV3_BENCH_PROFILE_DIR"] = str(args.profile.resolve())
    if len(path) > 1:
        env["PYTHONPATH"] = os.pathsep.join(path)
    deadline = Deadline(args.time_limit)
    config: dict[str, Any] = {}
    if args.auth_caches:
        config = auth_cache_config(args.auth_caches)
    setup: Setup = (
        WorkersSetup(n, env, config)
        if args.workers
        else SingleSetup(args.db, n, args.reseed, env, config)
    )
    phases: dict[str, Any] = {}
    try:
        for api in apis:
            phases[api] = asyncio.run(run_phase(setup, api, args, deadline))
    finally:
        setup.close()
    setup_name = "workers" if args.workers else args.db
    result = {
        "setup": setup_name,
        "layout": (
            "main + 2 generic workers, PostgreSQL, Redis; long-polls on the workers, sends "
            "through main"
            if args.workers
            else "one process"
        ),
        "n": n,
        "timeout_ms": args.timeout,
        "ramp": args.ramp,
        "cache_factor": args.cache_factor,
        "auth_caches": args.auth_caches,
        "synapse": synapse_version(),
        "module": (module_version() if args.module_path is None else f"from {args.module_path}"),
        "command": " ".join(["bench/run", "idle_longpolls.py", *sys.argv[1:]]),
        "profiled": args.profile is not None,
        "phases": phases,
    }
    name = f"idle_longpolls-{setup_name}" + (f"-{args.tag}" if args.tag else "")
    png = save(name, result, report(result))
    if plot(result, png):
        print(f"plot: {png}")
    bad = any(p["error_count"] for p in phases.values())
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
