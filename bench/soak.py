"""Soak: 200 simulated sync v3 clients on Synapse's workers for 10 minutes.

Starts a worker deployment (PostgreSQL, Redis, the main process and two generic
workers with the module; ``worker2`` writes the typing, to_device and receipt
streams, the main process the room events) with a short session TTL, registers
``--clients / 4`` users with four devices each in a handful of shared rooms, and runs
one thread per device. The clients are a mix (``KINDS``) of long-polls on every
served stream (to_device, typing, receipts, room_data), pagers (room_members and
room_list pages, then streaming, then a new snapshot), clients that change their
params on every request (room_data rooms: more params versions than are kept), clients
that open a new session every few requests (eviction beyond
``max_sessions_per_device``), and clients that leave sessions to expire. About one
request in ten is abandoned by the client (connection closed before the answer).
A traffic thread sends room messages (through the main process or a worker), typing
notifications, receipts and to-device messages at ``--rate`` actions per second.

Every ``--sample-every`` seconds it records the RSS of each process, the database
connections (``pg_stat_activity``), the rows and sizes of the ``syncv3_*`` tables
(and Synapse's ``device_inbox``), the most params and stream state versions of one
session, sessions past their TTL not yet swept, and the requests by status; a progress
line every ~30 s. Checked at the end (exit 1 otherwise): no 5xx (client side and the
module's request counter on every process), every process's RSS at the end within
10 % of its RSS after the warm-up, database connections flat after the warm-up,
params versions per session ≤ 20, no session left unswept beyond TTL + sweep
interval, no module error in any log.

    bench/run soak.py                         # 200 clients, 10 minutes
    bench/run soak.py --minutes 3             # a short run
    bench/run soak.py --clients 100 --rate 1

Writes bench/results/soak.json, .txt and .png (RSS, table rows and connections over
time).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import exit_on_sigterm, module_version, save, synapse_version
from harness import (
    Account,
    Client,
    Homeserver,
    MatrixUser,
    WorkerDeployment,
    redis_unavailable_reason,
    worker_support_missing_reason,
)
from harness.chaos import (
    CONNECTION_ERRORS,
    abandon_request,
    log_problems,
    sync_query,
    transaction_retries,
)

SYNC_PATH = "/_matrix/client/v3/sync"

#: The module configuration of the run: sessions expire after a minute (the sweep
#: runs every 30 s on the main process), long-polls wait at most 20 s.
SESSION_TTL_S = 60
MODULE_CONFIG = {
    "session_ttl": f"{SESSION_TTL_S}s",
    "max_timeout_ms": 20000,
    "max_sessions_per_device": 5,
}
SWEEP_INTERVAL_S = SESSION_TTL_S / 2

#: Client kinds and their share of the clients (out of 20).
KINDS: dict[str, int] = {
    "to_device": 4,
    "typing": 2,
    "receipts": 2,
    "room_data": 2,
    "params_churn": 1,
    "room_members": 2,
    "room_list": 3,
    "new_sessions": 2,
    "expire": 2,
}

ROOMS = 8
ROOMS_PER_USER = 2
#: Share of sync requests abandoned by the client.
ABORT_SHARE = 0.1
SYNC_TABLES = (
    "syncv3_sessions",
    "syncv3_params",
    "syncv3_stream_state",
    "syncv3_sent_rooms",
    "syncv3_room_list_snapshots",
    "syncv3_to_device_deletions",
)


class Tally:
    """Counters shared by every client thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.by_kind: Counter[str] = Counter()
        self.aborted = 0
        self.sessions_created = 0
        self.sessions_abandoned = 0
        self.pages = 0
        self.connection_errors = 0
        self.unexpected: list[str] = []

    def count(self, kind: str, status: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.by_kind[kind] += 1

    def note(self, message: str) -> None:
        with self.lock:
            if len(self.unexpected) < 50:
                self.unexpected.append(message)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": sum(self.statuses.values()),
                "statuses": dict(self.statuses),
                "server_errors": sum(n for s, n in self.statuses.items() if s.startswith("5")),
                "aborted": self.aborted,
                "sessions_created": self.sessions_created,
                "sessions_abandoned": self.sessions_abandoned,
                "pages": self.pages,
                "connection_errors": self.connection_errors,
            }


class World:
    """The deployment, its users, devices and rooms."""

    def __init__(self, deployment: WorkerDeployment) -> None:
        self.deployment = deployment
        self.devices: list[Account] = []
        self.user_rooms: dict[str, list[str]] = {}
        self.rooms: list[str] = []
        self.last_event: dict[str, str] = {}
        self.stop = threading.Event()
        self.tally = Tally()
        self.lock = threading.Lock()

    def route(self, user_index: int, rng: random.Random) -> str:
        """The worker a proxy routing by user sends sync to (now and then the other)."""
        workers = self.deployment.workers
        worker = workers[user_index % len(workers)]
        if rng.random() < 0.1:
            worker = rng.choice(workers)
        return worker.base_url


def setup(deployment: WorkerDeployment, clients: int) -> World:
    world = World(deployment)
    main = deployment.main
    users = max(1, clients // 4)
    owner = MatrixUser(main.base_url, main.register())
    world.rooms = [owner.create_room(preset="public_chat") for _ in range(ROOMS)]
    accounts: list[list[Account]] = [[] for _ in range(users)]

    def make_user(u: int) -> None:
        first = main.register(displayname=f"Soak user {u:03d}")
        devices = [first] + [main.login(first.localpart) for _ in range(3)]
        rooms = [world.rooms[(u + k * 3) % ROOMS] for k in range(ROOMS_PER_USER)]
        member = MatrixUser(main.base_url, first)
        for room in rooms:
            member.join(room)
        world.user_rooms[first.user_id] = rooms
        accounts[u] = devices

    for start in range(0, users, 4):
        batch = [
            threading.Thread(target=make_user, args=(u,))
            for u in range(start, min(users, start + 4))
        ]
        for t in batch:
            t.start()
        for t in batch:
            t.join()
    world.devices = [device for devices in accounts for device in devices][:clients]
    for room in world.rooms:
        world.last_event[room] = owner.send_message(room, "hello")
    return world


# -- the clients ------------------------------------------------------------------------


class SimClient:
    """One device: a loop of sync v3 requests of its kind."""

    def __init__(self, world: World, index: int, account: Account, kind: str, seed: int) -> None:
        self.world = world
        self.index = index
        self.account = account
        self.kind = kind
        self.rng = random.Random(seed * 100_003 + index)
        self.rooms = world.user_rooms[account.user_id]
        self.clients: dict[str, Client] = {}
        self.since: str | None = None
        self.user_index = index // 4

    # -- one request

    def sync(
        self, body: dict[str, Any], timeout_ms: int, may_abort: bool = True
    ) -> dict[str, Any] | None:
        """One request with the current ``since``; the answer (None if abandoned,
        failed or an error, which is counted). A 400 M_UNKNOWN_SYNC_SESSION drops the
        session."""
        world = self.world
        base_url = world.route(self.user_index, self.rng)
        if may_abort and self.since is not None and self.rng.random() < ABORT_SHARE:
            after = (
                self.rng.uniform(0, 0.02) if self.rng.random() < 0.3 else self.rng.uniform(0.02, 2)
            )
            if abandon_request(
                base_url,
                SYNC_PATH,
                self.account.access_token,
                body,
                after=after,
                reset=self.rng.random() < 0.5,
                query=sync_query(self.since, timeout_ms),
            ):
                with world.tally.lock:
                    world.tally.aborted += 1
            return None
        client = self.clients.get(base_url)
        if client is None:
            client = self.clients[base_url] = Client(base_url, self.account.access_token)
        query: dict[str, Any] = {"timeout": timeout_ms}
        if self.since is not None:
            query["since"] = self.since
        try:
            response = client.post(SYNC_PATH, body, query=query, timeout=timeout_ms / 1000 + 30)
        except CONNECTION_ERRORS as e:
            client.close()
            with world.tally.lock:
                world.tally.connection_errors += 1
            world.tally.note(f"{self.kind}: connection error {type(e).__name__}: {e}")
            time.sleep(0.5)
            return None
        if response.status == 200:
            world.tally.count(self.kind, "200")
            payload: dict[str, Any] = response.json()
            if self.since is None:
                with world.tally.lock:
                    world.tally.sessions_created += 1
            self.since = payload["next"]
            return payload
        label = f"{response.status} {response.errcode or ''}".strip()
        world.tally.count(self.kind, label)
        if response.errcode == "M_UNKNOWN_SYNC_SESSION":
            self.since = None
        if response.status >= 500 or response.errcode != "M_UNKNOWN_SYNC_SESSION":
            world.tally.note(f"{self.kind}: {label}: {response.text(300)}")
        time.sleep(0.2)
        return None

    def long_poll(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return self.sync(body if self.since is None else {}, self.rng.choice((5000, 10000, 15000)))

    # -- the loop of each kind

    def run(self) -> None:
        step = getattr(self, f"step_{self.kind}")
        while not self.world.stop.is_set():
            step()

    def step_to_device(self) -> None:
        self.long_poll({"to_device": {"limit": 50}})

    def step_typing(self) -> None:
        self.long_poll({"typing": {"room_id": self.rooms[0]}})

    def step_receipts(self) -> None:
        self.long_poll({"receipts": {"room_ids": self.rooms}})

    def step_room_data(self) -> None:
        self.long_poll({"room_data": {"room_ids": self.rooms, "timeline_limit": 5}})

    def step_params_churn(self) -> None:
        """room_data whose rooms and limit change on every request: a new params
        version each time (only the latest 20 are kept)."""
        rooms = self.rng.sample(self.rooms, self.rng.randint(1, len(self.rooms)))
        limit = self.rng.randint(1, 10)
        self.sync(
            {"room_data": {"room_ids": rooms, "timeline_limit": limit}, "to_device": {}}, 3000
        )

    def pages(self, key: str, params: dict[str, Any]) -> None:
        """A first page (a new snapshot), its continuation pages, then a few
        streaming long-polls."""
        answer = self.sync({key: {**params, "p": {}}} if self.since else {key: params}, 0)
        stream = (answer or {}).get(key, {})
        cursor = stream.get("p", {}).get("next")
        while cursor is not None and not self.world.stop.is_set():
            answer = self.sync({key: {**params, "p": {"next": cursor}}}, 0, may_abort=False)
            if answer is None:
                return
            with self.world.tally.lock:
                self.world.tally.pages += 1
            cursor = answer.get(key, {}).get("p", {}).get("next")
        for _ in range(self.rng.randint(1, 3)):
            if self.world.stop.is_set():
                return
            self.sync({}, self.rng.choice((5000, 10000)))

    def step_room_members(self) -> None:
        sort = self.rng.choice(("by_pl", "by_name"))
        self.pages(
            "room_members", {"room_id": self.rng.choice(self.rooms), "limit": 4, "sort": sort}
        )

    def step_room_list(self) -> None:
        self.pages("room_list", {"limit": 1, "timeline_limit": self.rng.randint(0, 2)})

    def step_new_sessions(self) -> None:
        """A new session every few requests on the same device (evicting the least
        recently used beyond max_sessions_per_device)."""
        self.since = None
        self.sync(
            {
                "to_device": {},
                "typing": {"room_ids": self.rooms},
                "room_data": {"room_ids": self.rooms[:1], "timeline_limit": 2},
            },
            0,
        )
        for _ in range(self.rng.randint(1, 4)):
            if self.world.stop.is_set():
                return
            self.sync({}, self.rng.choice((0, 2000, 5000)))

    def step_expire(self) -> None:
        """A session used a couple of times, then left to expire."""
        self.since = None
        self.sync({"to_device": {}, "receipts": {}}, 0)
        for _ in range(self.rng.randint(0, 2)):
            self.sync({}, 1000)
        with self.world.tally.lock:
            self.world.tally.sessions_abandoned += 1
        self.world.stop.wait(self.rng.uniform(10, 40))


def assign_kinds(count: int, rng: random.Random) -> list[str]:
    pool = [kind for kind, share in KINDS.items() for _ in range(share)]
    kinds = [pool[i % len(pool)] for i in range(count)]
    rng.shuffle(kinds)
    return kinds


# -- traffic ---------------------------------------------------------------------------


def traffic(world: World, rate: float, seed: int, targets: list[Account]) -> None:
    """Room messages, typing, receipts and to-device messages at ``rate`` per second."""
    rng = random.Random(seed)
    deployment = world.deployment
    writer = deployment.worker("worker2")
    senders = world.devices[::4]
    interval = 1 / rate
    next_at = time.monotonic()
    while not world.stop.is_set():
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            world.stop.wait(delay)
        sender = rng.choice(senders)
        room = rng.choice(world.user_rooms[sender.user_id])
        action = rng.random()
        try:
            if action < 0.4:
                via = rng.choice((deployment.main, deployment.main, *deployment.workers))
                event_id = MatrixUser(via.base_url, sender).send_message(room, "soak")
                world.last_event[room] = event_id
            elif action < 0.6:
                MatrixUser(writer.base_url, sender).set_typing(room, rng.random() < 0.7, 5000)
            elif action < 0.75:
                MatrixUser(writer.base_url, sender).send_receipt(room, world.last_event[room])
            else:
                to = rng.choice(targets)
                MatrixUser(writer.base_url, sender).send_to_device(
                    "m.soak", {to.user_id: {to.device_id: {"at": time.time()}}}
                )
        except (AssertionError, *CONNECTION_ERRORS) as e:
            world.tally.note(f"traffic: {type(e).__name__}: {str(e)[:200]}")


# -- sampling --------------------------------------------------------------------------


def sample(world: World, started: float) -> dict[str, Any]:
    deployment = world.deployment
    now_ms = int(time.time() * 1000)
    point: dict[str, Any] = {"t": round(time.monotonic() - started, 1)}
    point["rss_mib"] = {
        name: round(value / 2**20, 1) if value is not None else None
        for name, value in deployment.rss().items()
    }
    with deployment.postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        point["db_connections"] = int(cur.fetchone()[0])
        rows: dict[str, int] = {}
        sizes: dict[str, int] = {}
        for table in (*SYNC_TABLES, "device_inbox"):
            cur.execute(f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}")
            count, size = cur.fetchone()
            rows[table] = int(count)
            sizes[table] = int(size)
        point["rows"] = rows
        point["bytes"] = sizes
        cur.execute(
            "SELECT coalesce(max(n), 0) FROM"
            " (SELECT count(*) AS n FROM syncv3_params GROUP BY session_id) AS v"
        )
        point["max_params_versions"] = int(cur.fetchone()[0])
        cur.execute(
            "SELECT coalesce(max(n), 0) FROM"
            " (SELECT count(*) AS n FROM syncv3_stream_state GROUP BY session_id) AS v"
        )
        point["max_state_versions"] = int(cur.fetchone()[0])
        cur.execute(
            "SELECT coalesce(max(n), 0) FROM"
            " (SELECT count(*) AS n FROM syncv3_sent_rooms GROUP BY session_id) AS v"
        )
        point["max_sent_rooms_per_session"] = int(cur.fetchone()[0])
        cur.execute(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM syncv3_sent_rooms"
            " GROUP BY session_id, stream, room_id) AS v"
        )
        point["max_versions_per_sent_room"] = int(cur.fetchone()[0])
        cur.execute("SELECT stream, count(*) FROM syncv3_sent_rooms GROUP BY stream")
        point["sent_rooms_by_stream"] = {str(row[0]): int(row[1]) for row in cur.fetchall()}
        ttl_ms = SESSION_TTL_S * 1000
        cur.execute(
            "SELECT count(*), coalesce(min(last_used_ts), 0) FROM syncv3_sessions"
            " WHERE last_used_ts < %s",
            (now_ms - ttl_ms,),
        )
        expired, oldest = cur.fetchone()
        point["expired_unswept"] = int(expired)
        point["oldest_overdue_s"] = (
            round((now_ms - ttl_ms - int(oldest)) / 1000, 1) if expired else 0
        )
        cur.execute(
            "SELECT count(*) FROM syncv3_sessions WHERE last_used_ts >= %s", (now_ms - ttl_ms,)
        )
        point["live_sessions"] = int(cur.fetchone()[0])
    point["clients"] = world.tally.snapshot()
    point["caches"] = cache_sizes(deployment)
    point["cache_entries"] = {name: sum(sizes.values()) for name, sizes in point["caches"].items()}
    return point


_CACHE_SIZE_RE = re.compile(r"^synapse_util_caches_cache_size\{([^}]*)\} (\S+)$", re.MULTILINE)


def cache_sizes(deployment: WorkerDeployment) -> dict[str, dict[str, int]]:
    """Entries of each of Synapse's caches (``synapse_util_caches_cache_size``), per
    process: what of the RSS growth is Synapse's caches filling."""
    sizes: dict[str, dict[str, int]] = {}
    for process in deployment.processes:
        try:
            text = process.metrics()
        except Exception:
            continue
        caches: dict[str, int] = {}
        for labels, value in _CACHE_SIZE_RE.findall(text):
            name = dict(_LABEL_RE.findall(labels)).get("name", "?")
            if float(value) > 0:
                caches[name] = caches.get(name, 0) + int(float(value))
        sizes[process.name] = caches
    return sizes


_LABEL_RE = re.compile(r'(\w+)="([^"]*)"')
_METRIC_RE = re.compile(r"^synapse_syncv3_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)


def server_counts(deployment: WorkerDeployment) -> dict[str, dict[str, float]]:
    """synapse_syncv3_requests_total by code, and sessions removed by reason, per process."""
    counts: dict[str, dict[str, float]] = {}
    for process in deployment.processes:
        try:
            text = process.metrics()
        except Exception as e:
            print(f"(metrics of {process.name}: {e})")
            continue
        codes: dict[str, float] = {}

        def add(key: str, value: str) -> None:
            codes[key] = codes.get(key, 0.0) + float(value)  # noqa: B023 (called at once)

        for labels, value in _METRIC_RE.findall(text):
            code = dict(_LABEL_RE.findall(labels)).get("code", "?")
            add(f"code {code}", value)
        for reason, value in re.findall(
            r'^synapse_syncv3_sessions_removed_total\{reason="(\w+)"\} (\S+)$', text, re.MULTILINE
        ):
            add(f"removed {reason}", value)
        created = re.search(r"^synapse_syncv3_sessions_created_total (\S+)$", text, re.MULTILINE)
        if created:
            add("sessions created", created.group(1))
        counts[process.name] = codes
    return counts


# -- the run ---------------------------------------------------------------------------


def _pid(process: Homeserver) -> int:
    if process.pid is None:
        raise RuntimeError(f"{process} is not running")
    return process.pid


def _profile_env(profile: Path | None) -> dict[str, str] | None:
    """Load bench/profiling/sitecustomize.py into the Synapse processes."""
    if profile is None:
        return None
    profile.mkdir(parents=True, exist_ok=True)
    hooks = Path(__file__).resolve().parent / "profiling"
    path = [str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"SYNCV3_BENCH_PROFILE_DIR": str(profile.resolve()), "PYTHONPATH": os.pathsep.join(path)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    for reason in (worker_support_missing_reason(), redis_unavailable_reason()):
        if reason is not None:
            sys.exit(reason)
    duration = args.minutes * 60
    warmup = min(120.0, duration * 0.25)
    workdir = Path(tempfile.mkdtemp(prefix="syncv3-soak-"))
    deployment = WorkerDeployment.create(
        workdir,
        module_config=MODULE_CONFIG,
        stream_writers={stream: ["worker2"] for stream in ("typing", "to_device", "receipts")},
        extra_config=(
            {"event_cache_size": args.event_cache_size} if args.event_cache_size else None
        ),
        env=_profile_env(args.profile),
    )
    samples: list[dict[str, Any]] = []
    try:
        deployment.start()
        print(f"deployment {deployment.server_name} ready (main + 2 workers)", flush=True)
        with deployment.postgres.connect() as conn, conn.cursor() as cur:
            cur.execute("SHOW autovacuum")
            autovacuum = str(cur.fetchone()[0])
        setup_started = time.monotonic()
        world = setup(deployment, args.clients)
        print(
            f"{len(world.devices)} devices of {len(world.user_rooms)} users in {ROOMS} rooms"
            f" ready in {time.monotonic() - setup_started:.0f} s",
            flush=True,
        )
        rng = random.Random(args.seed)
        kinds = assign_kinds(len(world.devices), rng)
        clients = [
            SimClient(world, i, account, kind, args.seed)
            for i, (account, kind) in enumerate(zip(world.devices, kinds, strict=True))
        ]
        to_device_targets = [
            c.account
            for c in clients
            if c.kind in ("to_device", "new_sessions", "expire", "params_churn")
        ]
        threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
        threads.append(
            threading.Thread(
                target=traffic, args=(world, args.rate, args.seed, to_device_targets), daemon=True
            )
        )
        started = time.monotonic()
        for t in threads:
            t.start()
        print(
            f"soak: {len(clients)} clients ({', '.join(f'{k} {kinds.count(k)}' for k in KINDS)}),"
            f" {args.rate}/s traffic, {args.minutes:g} min, warm-up {warmup:.0f} s",
            flush=True,
        )
        last_print = -1e9
        profiling = False
        while True:
            elapsed = time.monotonic() - started
            if args.profile is not None and not profiling and elapsed >= warmup:
                # tracemalloc in worker1 from the end of the warm-up (its "before").
                os.kill(_pid(deployment.workers[0]), signal.SIGUSR1)
                profiling = True
            point = sample(world, started)
            samples.append(point)
            if elapsed - last_print >= 29 or elapsed >= duration:
                last_print = elapsed
                print(progress_line(point), flush=True)
            if elapsed >= duration:
                break
            world.stop.wait(min(args.sample_every, max(0.0, duration - elapsed)))
        if profiling:
            # What worker1 allocated since the warm-up and still holds, by line and
            # traceback (bench/profiling/sitecustomize.py writes <pid>-memory.txt).
            os.kill(_pid(deployment.workers[0]), signal.SIGUSR2)
            time.sleep(20)
        world.stop.set()
        for t in threads:
            t.join(40)
        metrics = server_counts(deployment)
    finally:
        deployment.close()
    ours: list[str] = []
    theirs: list[str] = []
    retries: Counter[str] = Counter()
    for path in deployment.log_paths():
        mine, others = log_problems(path)
        ours += mine
        theirs += others
        retries += transaction_retries(path)
    data = {
        "synapse": synapse_version(),
        "module": module_version(),
        "command": " ".join(["bench/run", "soak.py", *sys.argv[1:]]),
        "clients": args.clients,
        "kinds": dict(Counter(kinds)),
        "rate": args.rate,
        "minutes": args.minutes,
        "warmup_s": warmup,
        "module_config": MODULE_CONFIG,
        "event_cache_size": args.event_cache_size,
        "samples": samples,
        "server_counts": metrics,
        "unexpected": world.tally.unexpected,
        "module_log_problems": ours[:50],
        "synapse_log_problems": len(theirs),
        "synapse_log_examples": theirs[:20],
        "transaction_retries": dict(retries.most_common()),
        "autovacuum": autovacuum,
    }
    data["checks"] = checks(data)
    if args.keep:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return data


def progress_line(point: dict[str, Any]) -> str:
    c = point["clients"]
    rss = ", ".join(f"{k} {v}" for k, v in point["rss_mib"].items())
    rows = point["rows"]
    return (
        f"  {point['t']:6.0f} s: {c['requests']} requests ({c['server_errors']} 5xx,"
        f" {c['aborted']} aborted, {c['pages']} pages, {c['sessions_created']} sessions);"
        f" RSS MiB {rss}; DB connections {point['db_connections']}; sessions"
        f" {rows['syncv3_sessions']} ({point['live_sessions']} live, {point['expired_unswept']}"
        f" expired unswept), params {rows['syncv3_params']} (max {point['max_params_versions']}"
        f" per session), state {rows['syncv3_stream_state']}, sent_rooms"
        f" {rows['syncv3_sent_rooms']}, snapshots {rows['syncv3_room_list_snapshots']},"
        f" device_inbox {rows['device_inbox']}; Synapse cache entries"
        f" {', '.join(f'{k} {v}' for k, v in point.get('cache_entries', {}).items())}"
    )


def checks(data: dict[str, Any]) -> dict[str, Any]:
    samples = data["samples"]
    warm = [s for s in samples if s["t"] >= data["warmup_s"]] or samples[-1:]
    first, last = warm[0], samples[-1]
    rss = {}
    for name, start in first["rss_mib"].items():
        end = last["rss_mib"].get(name)
        growth = (end - start) / start if start and end else None
        rss[name] = {"after_warmup": start, "end": end, "growth": growth}
    connections = [s["db_connections"] for s in warm]
    third = max(1, len(connections) // 3)
    server_5xx: Counter[str] = Counter()
    for counts in data["server_counts"].values():
        for key, value in counts.items():
            if key.startswith("code 5"):
                server_5xx[key.removeprefix("code ")] += int(value)
    overdue_limit = SWEEP_INTERVAL_S + 15
    result = {
        "client_5xx": last["clients"]["server_errors"],
        # Counted by the module on every process, for requests whose client may have
        # gone: a request cancelled while Synapse relays its presence to the main
        # process ends in Synapse's 502 "Failed to talk to main process" (see
        # docs/testing.md); the client saw nothing. Any other 5xx fails the run.
        "server_5xx": dict(server_5xx),
        "rss": rss,
        "rss_ok": all(r["growth"] is not None and abs(r["growth"]) <= 0.10 for r in rss.values()),
        "db_connections": {
            "min": min(connections),
            "max": max(connections),
            "first_third_mean": sum(connections[:third]) / third,
            "last_third_mean": sum(connections[-third:]) / third,
        },
        "max_params_versions": max(s["max_params_versions"] for s in samples),
        "max_state_versions": max(s["max_state_versions"] for s in samples),
        "max_sent_rooms_per_session": max(s["max_sent_rooms_per_session"] for s in samples),
        "max_versions_per_sent_room": max(s["max_versions_per_sent_room"] for s in samples),
        "sent_rooms_by_stream_after_warmup": first["sent_rooms_by_stream"],
        "sent_rooms_by_stream_end": last["sent_rooms_by_stream"],
        "max_oldest_overdue_s": max(s["oldest_overdue_s"] for s in samples),
        "overdue_limit_s": overdue_limit,
        "cache_entries": {
            name: {
                "after_warmup": first.get("cache_entries", {}).get(name),
                "end": last.get("cache_entries", {}).get(name),
            }
            for name in last.get("cache_entries", {})
        },
        "cache_growth": {
            name: sorted(
                (
                    (cache, size - first.get("caches", {}).get(name, {}).get(cache, 0))
                    for cache, size in caches.items()
                ),
                key=lambda item: -item[1],
            )[:8]
            for name, caches in last.get("caches", {}).items()
        },
        "rows_after_warmup": first["rows"],
        "rows_end": last["rows"],
        "rows_max": {t: max(s["rows"][t] for s in warm) for t in first["rows"]},
        "module_log_problems": len(data["module_log_problems"]),
        # Of those: a request the client had closed, cancelled by Synapse inside one of
        # its calls that turns the cancellation into another error (FirstError).
        "module_log_problems_cancelled": sum(
            "CancelledError" in line for line in data["module_log_problems"]
        ),
    }
    db = result["db_connections"]
    result["connections_ok"] = db["last_third_mean"] <= db["first_third_mean"] + 2
    result["ok"] = (
        result["client_5xx"] == 0
        and not any(code != "502" for code in server_5xx)
        and result["rss_ok"]
        and result["connections_ok"]
        and result["max_params_versions"] <= 20
        and result["max_oldest_overdue_s"] <= overdue_limit
        and result["module_log_problems"] == 0
    )
    return result


def report(data: dict[str, Any]) -> str:
    c = data["checks"]
    last = data["samples"][-1]
    clients = last["clients"]
    lines = [
        f"soak on workers (matrix-synapse {data['synapse']}, module {data['module']}):"
        f" {data['command']}",
        f"{data['clients']} clients {data['kinds']}, traffic {data['rate']}/s,"
        f" {data['minutes']:g} min, warm-up {data['warmup_s']:.0f} s, module config"
        f" {data['module_config']}, event_cache_size"
        f" {data.get('event_cache_size') or 'default'}",
        f"requests: {clients['requests']} answered ({clients['statuses']}), {clients['aborted']}"
        f" abandoned by the client, {clients['pages']} continuation pages,"
        f" {clients['sessions_created']} sessions created, {clients['sessions_abandoned']} left"
        f" to expire, {clients['connection_errors']} connection errors",
        f"5xx: {c['client_5xx']} seen by clients; counted by the module: {c['server_5xx'] or 0}",
        "RSS MiB after warm-up -> end: "
        + ", ".join(
            f"{name} {r['after_warmup']} -> {r['end']} ({r['growth']:+.1%})"
            if r["growth"] is not None
            else f"{name} ?"
            for name, r in c["rss"].items()
        ),
        "Synapse cache entries after warm-up -> end: "
        + ", ".join(
            f"{name} {e['after_warmup']} -> {e['end']}" for name, e in c["cache_entries"].items()
        ),
        *(
            f"  {name}, caches grown most: "
            + ", ".join(f"{cache} {grown:+d}" for cache, grown in grown_most)
            for name, grown_most in c["cache_growth"].items()
        ),
        f"DB connections after warm-up: min {c['db_connections']['min']}, max"
        f" {c['db_connections']['max']}, mean first third"
        f" {c['db_connections']['first_third_mean']:.1f}, last third"
        f" {c['db_connections']['last_third_mean']:.1f}",
        f"params versions per session: max {c['max_params_versions']} (≤ 20); stream state"
        f" versions: max {c['max_state_versions']}; sent_rooms rows: max"
        f" {c['max_sent_rooms_per_session']} per session, max {c['max_versions_per_sent_room']}"
        " versions recording one room of one session",
        f"sent_rooms rows by stream after warm-up -> end: {c['sent_rooms_by_stream_after_warmup']}"
        f" -> {c['sent_rooms_by_stream_end']}",
        f"sessions past TTL not swept: at most {c['max_oldest_overdue_s']} s overdue (limit"
        f" {c['overdue_limit_s']:.0f} s)",
        f"on-disk sizes (KiB, autovacuum {data['autovacuum']}: without it dead rows stay) at the"
        " end: " + ", ".join(f"{t} {b // 1024}" for t, b in last["bytes"].items()),
        "rows after warm-up -> max -> end: "
        + ", ".join(
            f"{t} {c['rows_after_warmup'][t]} -> {c['rows_max'][t]} -> {c['rows_end'][t]}"
            for t in c["rows_end"]
        ),
        f"server counts: {data['server_counts']}",
        f"module log problems: {c['module_log_problems']} ({c['module_log_problems_cancelled']}"
        " of them a cancelled request of a client that had gone); Synapse's own:"
        f" {data['synapse_log_problems']}",
        f"transactions retried by Synapse: {data['transaction_retries'] or 'none'}",
    ]
    lines += data["module_log_problems"][:10]
    lines += [f"  (Synapse) {line}" for line in data["synapse_log_examples"][:5]]
    lines += [f"  unexpected: {line}" for line in data["unexpected"][:10]]
    lines.append("OK" if c["ok"] else "FAILED")
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return
    samples = data["samples"]
    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for name in samples[0]["rss_mib"]:
        axes[0].plot(t, [s["rss_mib"][name] for s in samples], label=name)
    axes[0].set_title("RSS (MiB)")
    for table in samples[0]["rows"]:
        axes[1].plot(t, [s["rows"][table] for s in samples], label=table.replace("syncv3_", ""))
    axes[1].set_yscale("symlog")
    axes[1].set_title("rows")
    axes[2].plot(t, [s["db_connections"] for s in samples], label="DB connections")
    axes[2].plot(t, [s["live_sessions"] for s in samples], label="live sessions")
    axes[2].plot(t, [s["expired_unswept"] for s in samples], label="expired, not swept")
    axes[2].plot(t, [s["max_params_versions"] for s in samples], label="max params versions")
    axes[2].set_title("connections and sessions")
    for name in samples[-1].get("cache_entries", {}):
        axes[3].plot(
            t, [s.get("cache_entries", {}).get(name, 0) / 1000 for s in samples], label=name
        )
    axes[3].set_title("Synapse cache entries (thousands)")
    for ax in axes:
        ax.axvline(data["warmup_s"] / 60, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("minutes")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"soak: {data['clients']} clients on main + 2 workers, {data['minutes']:g} min")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=3, help="traffic actions per second")
    parser.add_argument("--sample-every", type=float, default=10, help="seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default="soak", help="result file name")
    parser.add_argument("--keep", action="store_true", help="keep the logs (work directory)")
    parser.add_argument(
        "--profile",
        type=Path,
        help="tracemalloc in worker1 from the end of the warm-up to the end; its report"
        " (<pid>-memory.txt) goes here",
    )
    parser.add_argument(
        "--event-cache-size",
        help="Synapse's event_cache_size (default: Synapse's, 10K): a small one shows how much"
        " of the RSS growth is the event cache filling",
    )
    args = parser.parse_args()
    if args.clients < 4:
        parser.error("--clients must be at least 4")
    exit_on_sigterm()
    data = run(args)
    png = save(args.output, data, report(data))
    plot(data, png)
    if not data["checks"]["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
