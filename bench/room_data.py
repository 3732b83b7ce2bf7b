"""room_data: first deliveries, old since tokens and quiet requests, vs v2 sync.

Starts a real Synapse with synapse-syncv3 loaded on a seeded database (cached in
bench/.cache/ after the first run, see ``bench.common.seeded_server``) and measures,
against Synapse's own v2 sync (``GET /_matrix/client/v3/sync``) in the same run:

(a) **first delivery of 50 rooms**: a new sync v3 session asking
    ``{"room_data": {"room_ids": [50 rooms], "timeline_limit": 20}}`` (all state), next
    to a v2 initial sync with the filter
    ``{"room": {"rooms": [the same 50], "timeline": {"limit": 20}}}``. Each room has 5
    members and about 30 events (creation, name, topic, 4 joins, 19 messages).
(b) **an old since**: one room (``big``) got 10,000 messages after the since token
    was taken; one more message is sent, then the same request (``timeline_limit``
    20, that one room) is answered from the old since (replayed for every sample)
    and from a fresh since (taken just before that message). v2 sync, filtered to
    the room, is asked the same two questions.
(d) **database transactions per incremental request with nothing new for the served
    rooms**: Synapse's ``synapse_storage_transaction_time_count`` (by ``desc``) is read
    from its metrics listener before and after each request; a session serving the
    50 rooms asks ``timeout=0`` with its latest since, (d1) when nothing happened at
    all and (d2) after a message in another room the user is in (the room stream
    moved). Listed next to v2 sync's incremental request (filtered to the 50 rooms),
    ``GET /account/whoami`` (Synapse's per-request cost: authentication) and an idle
    window (background work). (d3): a long-poll (1.5 s) during which the user's other
    room gets a message, which wakes the wait without data for the served rooms; its
    transactions beyond those of the same send without a waiting long-poll.

Every request of (a), (b) and (d) is also shown with what it used by Synapse's
per-servlet request metrics: main-thread CPU time, database transactions and their
time, time spent waiting for a database connection.

Reports median and p95 per series, the ratios, the transactions per request by desc,
writes the samples to bench/results/room_data-<db>.json (and .txt) and a plot next to
them.

    bench/run room_data.py                    # SQLite, 30 samples per series
    bench/run room_data.py --db postgres      # PostgreSQL at SYNCV3_TEST_POSTGRES
    bench/run room_data.py --samples 50 --quiet-requests 200
    bench/run room_data.py --reseed           # seed again instead of using the cache

Seeding (50 rooms, then 10,000 messages into one room, several senders at a time,
with progress) takes a few minutes; it is done once per database and Synapse version.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Deadline,
    boxplot_panels,
    count_diff,
    exit_on_sigterm,
    module_version,
    percentile,
    progress,
    save,
    seeded_server,
    series_table,
    servlet_usage,
    synapse_version,
    transaction_counts,
    transaction_times,
    usage_diff,
    usage_summary,
)
from harness import Account, Homeserver
from harness.client import Client

SEED_VERSION = 1
ROOMS = 50
MEMBERS = 4  # besides the reader: 5 members per room
MESSAGES_PER_ROOM = 19  # with creation (5), name, topic and 4 joins: 30 events
BIG_EVENTS = 10_000
TIMELINE_LIMIT = 20
V3_PATH = "/_matrix/client/v3/sync"
SESSION_LOOKUP = "syncv3_load_session"
#: Descs seen in fewer requests than this share are summed up in the report.
MIN_SHOWN = 0.2
#: The timeout of the (d3) long-polls, in ms.
WAKE_TIMEOUT_MS = 1500
D3_SEND_ALONE = "(d3) the send alone"

Usage = dict[str, dict[str, float]]


def account_json(account: Account) -> dict[str, Any]:
    return dataclasses.asdict(account)


def account_from(data: dict[str, Any]) -> Account:
    return Account(**data)


def v2_filter(rooms: list[str]) -> dict[str, Any]:
    return {"room": {"rooms": rooms, "timeline": {"limit": TIMELINE_LIMIT}}}


# ----------------------------------------------------------------------- seed


def seed(hs: Homeserver, big_events: int, deadline: Deadline) -> dict[str, Any]:
    reader_account = hs.register(localpart="reader")
    reader = hs.user(reader_account)
    members = [hs.user(hs.register(localpart=f"member{i}")) for i in range(MEMBERS)]

    def make_room(index: int) -> str:
        creator = members[index % MEMBERS]
        room = creator.create_room(
            preset="public_chat", name=f"Room {index}", topic=f"Topic of room {index}"
        )
        for user in [reader, *members]:
            if user is not creator:
                user.join(room)
        for n in range(MESSAGES_PER_ROOM):
            members[(index + n) % MEMBERS].send_message(room, f"message {n} in room {index}")
        return room

    print(f"seeding {ROOMS} rooms of {MEMBERS + 1} members and ~30 events")
    started = time.monotonic()
    rooms: list[str] = []
    with ThreadPoolExecutor(6) as pool:
        for room in pool.map(make_room, range(ROOMS)):
            rooms.append(room)
            progress("rooms", len(rooms), ROOMS, started, 10)
            deadline.check("seeding rooms")

    big = members[0].create_room(preset="public_chat", name="Big room")
    for user in [reader, *members[1:]]:
        user.join(big)
    for n in range(30):
        members[n % MEMBERS].send_message(big, f"before the old since {n}")
    # The (b) session, on a device of its own (a device keeps 10 sessions at most).
    old_device = hs.login("reader", device_id="OLDSINCE")
    old_client = Client(hs.base_url, old_device.access_token)
    body = {"room_data": {"room_ids": [big], "timeline_limit": TIMELINE_LIMIT}}
    first = old_client.post(V3_PATH, body).expect(200, "first delivery of the big room")
    assert big in first["room_data"]["rooms"], first
    # Presenting the first answer's token confirms the first delivery; this answer's
    # token is the old since.
    old_since = old_client.post(V3_PATH, {}, query={"since": first["next"], "timeout": 0}).expect(
        200
    )["next"]
    v2_old = reader.v2_sync(filter=v2_filter([big]))["next_batch"]

    print(f"seeding {big_events} messages into the big room, 8 at a time")
    started = time.monotonic()
    done = 0
    with ThreadPoolExecutor(8) as pool:
        for _ in pool.map(
            lambda n: members[n % MEMBERS].send_message(big, f"after the old since {n}"),
            range(big_events),
        ):
            done += 1
            progress("messages", done, big_events, started, 500)
            if done % 100 == 0:
                deadline.check("seeding messages")
    return {
        "reader": account_json(reader_account),
        "members": [account_json(m.account) for m in members],
        "old_device": account_json(old_device),
        "rooms": rooms,
        "big": big,
        "big_events": big_events,
        "old_since": old_since,
        "v2_old_since": v2_old,
    }


# -------------------------------------------------------------------- measure


class Measured(NamedTuple):
    result: Any
    ms: float
    #: Database transactions run meanwhile, by desc (whoever ran them), and "SQL <verb>"
    #: statement counts.
    txns: dict[str, int]
    #: Milliseconds spent in those transactions, by desc.
    txn_ms: dict[str, float]
    #: What the requests that finished meanwhile used, per servlet.
    usage: Usage


class Meter:
    """Times requests and reads Synapse's metrics around them."""

    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    def measure(self, fn: Callable[[], Any]) -> Measured:
        before = self.hs.metrics()
        started = time.perf_counter()
        result = fn()
        ms = (time.perf_counter() - started) * 1000
        after = self.hs.metrics()
        txns = count_diff(transaction_counts(before), transaction_counts(after))
        old_times, new_times = transaction_times(before), transaction_times(after)
        txn_ms = {
            desc: round((new_times[desc] - old_times.get(desc, 0.0)) * 1000, 3)
            for desc in txns
            if desc in new_times
        }
        usage = usage_diff(servlet_usage(before), servlet_usage(after))
        return Measured(result, ms, txns, txn_ms, usage)


class Series:
    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {}
        self.txns: dict[str, list[dict[str, int]]] = {}
        self.txn_ms: dict[str, list[dict[str, float]]] = {}
        self.usage: dict[str, list[Usage]] = {}

    def declare(self, names: list[str]) -> None:
        """Fix the order of the series in the report and the plot."""
        for name in names:
            self.ms.setdefault(name, [])
            self.txns.setdefault(name, [])
            self.txn_ms.setdefault(name, [])
            self.usage.setdefault(name, [])

    def add(self, name: str, measured: Measured) -> None:
        self.declare([name])
        self.ms[name].append(measured.ms)
        self.txns[name].append(measured.txns)
        self.txn_ms[name].append(measured.txn_ms)
        self.usage[name].append(measured.usage)


def first_delivery(
    hs: Homeserver, meta: dict[str, Any], samples: int, series: Series, deadline: Deadline
) -> None:
    rooms: list[str] = meta["rooms"]
    reader = hs.user(account_from(meta["reader"]))
    device = hs.login("reader", device_id="FIRST")
    client = Client(hs.base_url, device.access_token)
    body = {"room_data": {"room_ids": rooms, "timeline_limit": TIMELINE_LIMIT}}
    meter = Meter(hs)

    def v3() -> None:
        answer = client.post(V3_PATH, body).expect(200)
        got = answer["room_data"]["rooms"]
        assert len(got) == ROOMS, len(got)
        entry = got[rooms[0]]
        assert len(entry["timeline"]["events"]) == TIMELINE_LIMIT and entry["timeline"]["limited"]
        assert len(entry["state"]["events"]) >= 5, entry["state"]

    def v2() -> None:
        answer = reader.v2_sync(filter=v2_filter(rooms))
        got = answer["rooms"]["join"]
        assert len(got) == ROOMS, len(got)
        assert len(got[rooms[0]]["timeline"]["events"]) == TIMELINE_LIMIT

    calls = {"(a) v3 first delivery": v3, "(a) v2 initial sync": v2}
    series.declare(list(calls))
    for fn in calls.values():  # warm-up, not counted
        fn()
    print(f"(a) first delivery of {ROOMS} rooms, {samples} samples per series")
    started = time.monotonic()
    for i in range(samples):
        for name in list(calls) if i % 2 == 0 else reversed(list(calls)):
            series.add(name, meter.measure(calls[name]))
        progress("(a)", i + 1, samples, started, 10)
        deadline.check("(a)")


def old_since(
    hs: Homeserver, meta: dict[str, Any], samples: int, series: Series, deadline: Deadline
) -> None:
    big: str = meta["big"]
    reader = hs.user(account_from(meta["reader"]))
    sender = hs.user(account_from(meta["members"][1]))
    client = Client(hs.base_url, meta["old_device"]["access_token"])
    old, v2_old = meta["old_since"], meta["v2_old_since"]
    v2_params: dict[str, Any] = {"filter": v2_filter([big])}
    meter = Meter(hs)
    # Fresh tokens: the same session continued from the old since (a replay of the old
    # since stays allowed, SPEC §4.5), and v2 from its old since.
    chain = {"v3": old, "v2": v2_old}

    def catch_up() -> None:
        chain["v3"] = client.post(V3_PATH, {}, query={"since": chain["v3"], "timeout": 0}).expect(
            200
        )["next"]
        chain["v2"] = reader.v2_sync(since=chain["v2"], **v2_params)["next_batch"]

    def v3_request(since: str) -> dict[str, Any]:
        answer: dict[str, Any] = client.post(
            V3_PATH, {}, query={"since": since, "timeout": 0}
        ).expect(200)
        return answer

    def v2_request(since: str) -> dict[str, Any]:
        return reader.v2_sync(since=since, **v2_params)

    def check_v3(answer: dict[str, Any], event_id: str, events: int) -> None:
        timeline = answer["room_data"]["rooms"][big]["timeline"]
        assert len(timeline["events"]) == events, (len(timeline["events"]), events)
        assert timeline["events"][-1]["event_id"] == event_id
        assert timeline["limited"] == (events > 1)

    def check_v2(answer: dict[str, Any], event_id: str, events: int) -> None:
        timeline = answer["rooms"]["join"][big]["timeline"]
        assert len(timeline["events"]) == events, (len(timeline["events"]), events)
        assert timeline["events"][-1]["event_id"] == event_id
        assert timeline["limited"] == (events > 1)

    names = [
        "(b) v3 fresh since",
        "(b) v3 old since",
        "(b) v3 since 21 events old",
        "(b) v2 fresh since",
        "(b) v2 old since",
        "(b) v2 since 21 events old",
    ]
    series.declare(names)
    print(
        f"(b) one new message, since {meta['big_events']} events old vs fresh (and 21 events "
        f"old), {samples} samples per series"
    )
    started = time.monotonic()
    rng = random.Random(1)
    with ThreadPoolExecutor(4) as pool:
        for i in range(samples + 1):  # the first round warms up
            catch_up()
            near = dict(chain)
            list(pool.map(lambda n: sender.send_message(big, f"filler {n}"), range(20)))
            catch_up()
            event_id = sender.send_message(big, f"new message {i}")
            calls = {
                names[0]: (partial(v3_request, chain["v3"]), check_v3, 1),
                names[1]: (partial(v3_request, old), check_v3, TIMELINE_LIMIT),
                names[2]: (partial(v3_request, near["v3"]), check_v3, TIMELINE_LIMIT),
                names[3]: (partial(v2_request, chain["v2"]), check_v2, 1),
                names[4]: (partial(v2_request, v2_old), check_v2, TIMELINE_LIMIT),
                names[5]: (partial(v2_request, near["v2"]), check_v2, TIMELINE_LIMIT),
            }
            # A random order: whichever asks first for the 20 newest events reads their
            # bundled aggregations from the database, the others find them cached.
            order = list(names)
            rng.shuffle(order)
            for name in order:
                request, check, events = calls[name]
                measured = meter.measure(request)
                check(measured.result, event_id, events)
                if i:
                    series.add(name, measured)
            if i:
                progress("(b)", i, samples, started, 10)
            deadline.check("(b)")


def quiet_requests(
    hs: Homeserver,
    meta: dict[str, Any],
    requests: int,
    wakes: int,
    series: Series,
    deadline: Deadline,
) -> None:
    rooms: list[str] = meta["rooms"]
    big: str = meta["big"]
    reader = hs.user(account_from(meta["reader"]))
    sender = hs.user(account_from(meta["members"][2]))
    device = hs.login("reader", device_id="QUIET")
    client = Client(hs.base_url, device.access_token)
    v2_params: dict[str, Any] = {"filter": v2_filter(rooms)}
    meter = Meter(hs)
    first = client.post(V3_PATH, {"room_data": {"room_ids": rooms, "timeline_limit": 20}}).expect(
        200
    )
    chain = {"v3": first["next"], "v2": reader.v2_sync(**v2_params)["next_batch"]}

    def v3() -> None:
        answer = client.post(V3_PATH, {}, query={"since": chain["v3"], "timeout": 0}).expect(200)
        assert "room_data" not in answer, answer
        chain["v3"] = answer["next"]

    def v2() -> None:
        answer = reader.v2_sync(since=chain["v2"], **v2_params)
        assert not answer.get("rooms", {}).get("join"), answer["rooms"]
        chain["v2"] = answer["next_batch"]

    def whoami() -> None:
        reader.whoami()

    def idle() -> None:
        time.sleep(0.01)

    v3()  # confirms the first delivery
    v2()
    print(f"(d) transactions per quiet request, {requests} requests per series")
    started = time.monotonic()
    for i in range(requests):
        calls = {
            "(d1) v3 nothing new": v3,
            "(d1) v2 nothing new": v2,
            "(d) GET /account/whoami": whoami,
            "(d) idle 10 ms": idle,
        }
        for name, fn in calls.items():
            time.sleep(0.05)  # let background work of the previous step finish
            series.add(name, meter.measure(fn))
        for name, fn in (("(d2) v3 other room moved", v3), ("(d2) v2 other room moved", v2)):
            sender.send_message(big, f"elsewhere {i}")
            time.sleep(0.15)
            series.add(name, meter.measure(fn))
        progress("(d)", i + 1, requests, started, 25)
        deadline.check("(d)")

    def long_poll(api: str) -> None:
        """A long-poll (1.5 s) during which the user's other room gets a message: it
        wakes the user, gives no data to the served rooms, and the wait goes on."""
        answers: list[dict[str, Any]] = []

        def poll() -> None:
            if api == "v3":
                query = {"since": chain["v3"], "timeout": WAKE_TIMEOUT_MS}
                answers.append(client.post(V3_PATH, {}, query=query).expect(200))
            else:
                answers.append(
                    reader.v2_sync(since=chain["v2"], timeout=WAKE_TIMEOUT_MS, **v2_params)
                )

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        time.sleep(0.3)
        sender.send_message(big, "wakes the user, not the served rooms")
        thread.join(30)
        answer = answers[0]
        if api == "v3":
            assert answer == {"next": chain["v3"]}, answer  # the timeout reply
        else:
            assert not answer.get("rooms", {}).get("join"), answer["rooms"]
            chain["v2"] = answer["next_batch"]

    def send_alone() -> None:
        # As long as a long-poll window, so that background work weighs the same.
        started = time.monotonic()
        time.sleep(0.3)
        sender.send_message(big, "wakes nobody who waits")
        time.sleep(max(0.0, WAKE_TIMEOUT_MS / 1000 - (time.monotonic() - started)))

    print(f"(d3) long-polls woken by another room, {wakes} per series")
    started = time.monotonic()
    for i in range(wakes):
        for api in ("v3", "v2") if i % 2 == 0 else ("v2", "v3"):
            time.sleep(0.1)
            series.add(f"(d3) {api} long-poll, other room", meter.measure(partial(long_poll, api)))
        time.sleep(0.1)
        series.add(D3_SEND_ALONE, meter.measure(send_alone))
        progress("(d3)", i + 1, wakes, started, 5)
        deadline.check("(d3)")


def run(
    db: str,
    samples: int,
    requests: int,
    big_events: int,
    reseed: bool,
    time_limit: float,
    seed_only: bool = False,
) -> dict[str, Any] | None:
    deadline = Deadline(time_limit)
    server = seeded_server(
        "room_data" if big_events == BIG_EVENTS else f"room_data{big_events}",
        SEED_VERSION,
        db,
        lambda hs: seed(hs, big_events, deadline),
        reseed=reseed,
    )
    if seed_only:
        server.stop()
        return None
    series = Series()
    try:
        hs, meta = server.hs, server.meta
        first_delivery(hs, meta, samples, series, deadline)
        old_since(hs, meta, samples, series, deadline)
        quiet_requests(hs, meta, requests, max(10, requests // 5), series, deadline)
    finally:
        server.stop()
    return {
        "db": db,
        "synapse": synapse_version(),
        "module": module_version(),
        "samples": samples,
        "quiet_requests": requests,
        "big_events": big_events,
        "rooms": ROOMS,
        "timeline_limit": TIMELINE_LIMIT,
        "command": " ".join(["bench/run", "room_data.py", *sys.argv[1:]]),
        "series": series.ms,
        "transactions": series.txns,
        "transaction_ms": series.txn_ms,
        "usage": series.usage,
    }


# --------------------------------------------------------------------- report


def txn_summary(
    samples: list[dict[str, int]], times: list[dict[str, float]]
) -> tuple[float, float, dict[str, float], dict[str, float]]:
    """Per request (mean): transactions, SQL statements, transactions per desc, and
    milliseconds per desc."""
    total: dict[str, int] = {}
    total_ms: dict[str, float] = {}
    for sample in samples:
        for desc, n in sample.items():
            total[desc] = total.get(desc, 0) + n
    for sample_ms in times:
        for desc, ms in sample_ms.items():
            total_ms[desc] = total_ms.get(desc, 0.0) + ms
    per = {desc: n / len(samples) for desc, n in sorted(total.items(), key=lambda kv: -kv[1])}
    statements = sum(n for desc, n in per.items() if desc.startswith("SQL "))
    transactions = {desc: n for desc, n in per.items() if not desc.startswith("SQL ")}
    per_ms = {desc: ms / len(samples) for desc, ms in total_ms.items()}
    return sum(transactions.values()), statements, transactions, per_ms


def ratio(series: dict[str, list[float]], a: str, b: str) -> str:
    med = statistics.median(series[a]) / statistics.median(series[b])
    p95 = percentile(series[a], 95) / percentile(series[b], 95)
    return f"{a} / {b}: median ratio {med:.2f}, p95 ratio {p95:.2f}"


AGGREGATIONS = ("get_applicable_edits", "get_thread_summaries", "_get_references_for_events_txn")


def aggregation_split(result: dict[str, Any]) -> list[str]:
    """The limited (20-event) samples of (b) split by whether the bundled aggregations
    of the newest events were read from the database during the request (whichever
    request of a round asks first pays them; the others find them in Synapse's cache)."""
    fresh = statistics.median(result["series"]["(b) v3 fresh since"])
    lines = []
    for name in result["series"]:
        if not name.startswith("(b)") or "fresh" in name:
            continue
        samples = zip(result["series"][name], result["transactions"][name], strict=True)
        paid: list[float] = []
        cached: list[float] = []
        for ms, txns in samples:
            (paid if any(txns.get(desc) for desc in AGGREGATIONS) else cached).append(ms)
        parts = [
            f"{label}: n={len(values)}, median {statistics.median(values):.1f} ms "
            f"({statistics.median(values) / fresh:.2f} x v3 fresh)"
            for label, values in (("aggregations read", paid), ("cached", cached))
            if values
        ]
        lines.append(f"{name}, " + "; ".join(parts))
    return lines


def report(result: dict[str, Any]) -> str:
    series: dict[str, list[float]] = result["series"]
    timed = {k: v for k, v in series.items() if k.startswith(("(a)", "(b)"))}
    lines = [
        f"room_data on {result['db']}, matrix-synapse {result['synapse']}, synapse-syncv3 "
        f"{result.get('module', 'unknown')}, "
        f"{result['samples']} samples per series (a, b), {result['quiet_requests']} "
        f"requests per series (d): {result['command']}",
        "",
        "request time (ms)",
        *series_table(timed, 26),
        ratio(series, "(a) v3 first delivery", "(a) v2 initial sync"),
        ratio(series, "(b) v3 old since", "(b) v3 fresh since") + " (target <= 2)",
        *(
            [ratio(series, "(b) v3 old since", "(b) v3 since 21 events old")]
            if "(b) v3 since 21 events old" in series
            else []
        ),
        ratio(series, "(b) v3 old since", "(b) v2 old since"),
        ratio(series, "(b) v3 fresh since", "(b) v2 fresh since"),
        *aggregation_split(result),
        "",
        "per request (mean): database transactions run meanwhile, by desc (with their time), "
        "and the SQL statements in them; and what the request itself used (per servlet)",
    ]
    for name, samples in result["transactions"].items():
        times = result["transaction_ms"][name]
        if name == D3_SEND_ALONE:
            continue
        if name.startswith("(d3)"):
            # The window holds the long-poll and the send that woke it: the send's
            # transactions (measured alone) are taken off.
            alone = txn_summary(result["transactions"][D3_SEND_ALONE], [])[2]
            per = txn_summary(samples, times)[2]
            extra = {desc: n - alone.get(desc, 0.0) for desc, n in per.items()}
            lines.append(f"{name}: transactions beyond those of the send that woke it")
            lines.extend(f"    {line}" for line in usage_summary(result["usage"][name]))
            lines.extend(
                f"    {n:>7.2f}  {desc}" for desc, n in extra.items() if abs(n) >= MIN_SHOWN
            )
            continue
        total, statements, per, per_ms = txn_summary(samples, times)
        ms = statistics.median(series[name])
        lines.append(
            f"{name:<26}{total:>7.2f} transactions, {statements:.2f} statements "
            f"(median {ms:.1f} ms)"
        )
        lines.extend(f"    {line}" for line in usage_summary(result["usage"][name]))
        lines.extend(
            f"    {n:>7.2f}  {desc} ({per_ms.get(desc, 0.0):.2f} ms)"
            for desc, n in per.items()
            if n >= MIN_SHOWN
        )
        rest = {desc: n for desc, n in per.items() if n < MIN_SHOWN}
        if rest:
            lines.append(
                f"    {sum(rest.values()):>7.2f}  {len(rest)} other descs below {MIN_SHOWN} per "
                "request (background work of Synapse, see the idle window)"
            )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    series = result["series"]
    return boxplot_panels(
        [
            (
                f"(a) first delivery, {result['rooms']} rooms",
                {k[4:]: v for k, v in series.items() if k.startswith("(a)")},
                False,
            ),
            (
                f"(b) 1 new message, since fresh, {result['big_events']} or 21 events old",
                {k[4:]: v for k, v in series.items() if k.startswith("(b)")},
                False,
            ),
        ],
        path,
        title=f"room_data vs v2 sync ({result['db']}, Synapse {result['synapse']}, "
        f"n={result['samples']})",
        ylabel="request time (ms)",
        width=15,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--samples", type=int, default=30, help="per series of (a) and (b)")
    parser.add_argument("--quiet-requests", type=int, default=100, help="per series of (d)")
    parser.add_argument(
        "--big-events", type=int, default=BIG_EVENTS, help="messages after the old since"
    )
    parser.add_argument("--reseed", action="store_true", help="seed again, ignoring the cache")
    parser.add_argument("--time-limit", type=float, default=3600, help="seconds, seeding included")
    parser.add_argument("--seed-only", action="store_true", help="fill the cache, measure nothing")
    parser.add_argument(
        "--report-from", type=Path, help="write the report and plot of a saved JSON result again"
    )
    args = parser.parse_args()
    exit_on_sigterm()
    if args.report_from is not None:
        saved = json.loads(args.report_from.read_text())
        png = save(f"room_data-{saved['db']}", saved, report(saved))
        if plot(saved, png):
            print(f"plot: {png}")
        return
    if args.samples < 5 or args.quiet_requests < 5:
        parser.error("at least 5 samples and 5 quiet requests")
    result = run(
        args.db,
        args.samples,
        args.quiet_requests,
        args.big_events,
        args.reseed,
        args.time_limit,
        args.seed_only,
    )
    if result is None:
        return
    png = save(f"room_data-{args.db}", result, report(result))
    if plot(result, png):
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
