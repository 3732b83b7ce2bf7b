"""Sync v3 on Synapse's generic workers (SPEC §8, §13; issue 10 items 1 and 2).

One deployment for the whole module (``harness.WorkerDeployment``): PostgreSQL, Redis,
the main process and two generic workers, all with the module. Requests go straight to
the process a reverse proxy would send them to (SPEC §13.2): sync v3 to either worker,
registration to the main process, and typing, to-device and receipt requests to
``worker2`` ("B"), which the deployment makes the writer of those streams (as the
main process is for room events). ``worker1`` ("A") only serves sync.

The race test drives the case of issue 10 on purpose: a new session on A started
within a few milliseconds of a confirming request of another session of the device on
B, with messages waiting and small limits; every message the new session may not
lose is counted. ``SYNCV3_RACE_ROUNDS`` sets the number of rounds (default 40; 300
for the figure in docs/workers.md); ``SYNCV3_RACE_MODULE_PATH=<dir>`` runs the
deployment with the ``synapse_syncv3`` package found in ``<dir>`` (for instance an
export of an older commit), to show the loss on code without the per-device guard.

Worker tests run in the newest Synapse environment only (tox env ``py313-synlatest``,
which installs Synapse's ``redis`` extra). Elsewhere, or without that extra, Redis or
PostgreSQL, they are skipped with the reason; with ``SYNCV3_REQUIRE_POSTGRES=1`` (CI)
a missing Redis, PostgreSQL or extra in the newest environment fails instead.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from harness import (
    Account,
    Homeserver,
    MatrixUser,
    WorkerDeployment,
    postgres_unavailable_reason,
    redis_unavailable_reason,
    worker_support_missing_reason,
)
from harness.logs import log_problems_of
from tests.integration.helpers import UNKNOWN_SESSION_BODY, V3, after, retype, timed

#: Streams written by worker B (the rest, room events included, by the main process).
B_WRITES = ("typing", "to_device", "receipts")

_REQUIRED = bool(os.environ.get("SYNCV3_REQUIRE_POSTGRES"))


def _unavailable() -> tuple[str, bool] | None:
    """(reason, whether CI must fail rather than skip), or None to run."""
    tox_env = os.environ.get("TOX_ENV_NAME")
    if tox_env and not tox_env.endswith("synlatest"):
        return f"worker tests run in the newest Synapse environment only, not {tox_env}", False
    missing = worker_support_missing_reason()
    if missing is not None:
        # tox installs the extra in the newest environment: missing there is a fault.
        return missing, tox_env is not None
    for reason in (postgres_unavailable_reason(), redis_unavailable_reason()):
        if reason is not None:
            return reason, True
    return None


@attrs.define
class Cluster:
    deployment: WorkerDeployment

    @property
    def main(self) -> Homeserver:
        return self.deployment.main

    @property
    def a(self) -> Homeserver:
        return self.deployment.workers[0]

    @property
    def b(self) -> Homeserver:
        return self.deployment.workers[1]

    def account(self) -> Account:
        return self.main.register()

    def user(self, account: Account, process: Homeserver) -> MatrixUser:
        return self.deployment.user(account, process)

    def v3(self, account: Account, process: Homeserver) -> V3:
        return V3(self.user(account, process))

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self.deployment.postgres.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return [tuple(row) for row in cur.fetchall()]

    def inbox(self, account: Account) -> int:
        rows = self.query(
            "SELECT COUNT(*) FROM device_inbox WHERE user_id = %s AND device_id = %s",
            account.user_id,
            account.device_id,
        )
        return int(rows[0][0])

    def room(self, creator: Account, *members: Account) -> str:
        """A room of ``creator`` (made through worker A) that ``members`` joined."""
        owner = self.user(creator, self.a)
        room = owner.create_room(invite=[m.user_id for m in members])
        for member in members:
            self.user(member, self.a).join(room)
        return room


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    unavailable = _unavailable()
    if unavailable is not None:
        reason, must_run = unavailable
        if must_run and _REQUIRED:
            pytest.fail(f"{reason} (SYNCV3_REQUIRE_POSTGRES is set)")
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="syncv3-workers-"))
    env = {}
    module_path = os.environ.get("SYNCV3_RACE_MODULE_PATH")
    if module_path:
        env["PYTHONPATH"] = module_path
    deployment = WorkerDeployment.create(
        workdir, stream_writers={stream: ["worker2"] for stream in B_WRITES}, env=env
    )
    try:
        deployment.start()
        yield Cluster(deployment)
    finally:
        deployment.close()
    problems = [line for path in deployment.log_paths() for line in _log_problems(path)]
    assert not problems, "worker deployment logs have problems:\n" + "\n".join(problems[:20])
    shutil.rmtree(workdir, ignore_errors=True)


def _log_problems(path: Path) -> list[str]:
    """Problems of a process's log up to its shutdown (Synapse's Redis connection logs
    errors while a process shuts down, which is Synapse's business)."""
    until = "Received SIGTERM, shutting down"
    return [f"{path.name}: {line}" for line in log_problems_of(path, until=until)]


def to_device_contents(body: dict[str, Any]) -> list[Any]:
    return [event["content"] for event in body.get("to_device", {}).get("events", [])]


def send_to_device(cluster: Cluster, sender: Account, to: Account, **content: Any) -> None:
    cluster.user(sender, cluster.b).send_to_device("m.test", {to.user_id: {to.device_id: content}})


# -- one session over several processes ------------------------------------------------


def test_one_session_alternates_between_workers(cluster: Cluster) -> None:
    alice, bob = cluster.account(), cluster.account()
    room = cluster.room(alice, bob)
    processes = [cluster.a, cluster.b, cluster.main]
    clients = [cluster.v3(bob, process) for process in processes]
    first = clients[0].ok({"to_device": {"limit": 2}, "typing": {"room_id": room}})
    assert first["typing"] == {"user_ids": []}
    for n in range(7):
        send_to_device(cluster, alice, bob, n=n)
    received: list[Any] = []
    since = first["next"]
    for turn in range(1, 20):
        body = clients[turn % 3].ok({}, since=since, timeout=5000)
        received += to_device_contents(body)
        since = body["next"]
        if len(received) == 7:
            break
    assert received == [{"n": n} for n in range(7)]
    # Typing set through B wakes the session's long-poll, wherever it waits.
    with after(0.3, lambda: retype(cluster.user(alice, cluster.b), room)):
        body = clients[0].ok({}, since=since, timeout=10000)
    assert alice.user_id in body["typing"]["user_ids"]
    # The last request confirms everything: the inbox is empty.
    assert clients[1].ok({}, since=body["next"], timeout=0) == {"next": body["next"]}
    assert cluster.inbox(bob) == 0


def test_session_created_on_one_worker_used_on_another(cluster: Cluster) -> None:
    alice, bob = cluster.account(), cluster.account()
    created = cluster.v3(bob, cluster.b).ok({"to_device": {"limit": 3}})
    send_to_device(cluster, alice, bob, hello="A")
    # Params are sticky across processes: the limit set on B is echoed by A and main.
    body = cluster.v3(bob, cluster.a).ok({}, since=created["next"], timeout=5000)
    assert body["to_device"] == {"limit": 3, "events": [_event(alice, {"hello": "A"})]}
    again = cluster.v3(bob, cluster.main).ok({}, since=created["next"])
    assert again["to_device"]["events"] == body["to_device"]["events"]


def _event(sender: Account, content: dict[str, Any]) -> dict[str, Any]:
    return {"sender": sender.user_id, "type": "m.test", "content": content}


# -- wakes across processes -------------------------------------------------------------


WAKES = ("to_device", "typing", "receipt", "message_via_b", "message_via_main")


@pytest.mark.parametrize("kind", WAKES)
def test_long_poll_on_a_is_woken_from_another_process(cluster: Cluster, kind: str) -> None:
    alice, bob = cluster.account(), cluster.account()
    room = cluster.room(alice, bob)
    event_id = cluster.user(alice, cluster.a).send_message(room, "before")
    streams: dict[str, Any] = {
        "to_device": ({"to_device": {}}, "to_device"),
        "typing": ({"typing": {"room_id": room}}, "typing"),
        "receipt": ({"receipts": {"room_ids": [room]}}, "receipts"),
        "message_via_b": ({"room_data": {"room_ids": [room], "timeline_limit": 5}}, "room_data"),
        "message_via_main": (
            {"room_data": {"room_ids": [room], "timeline_limit": 5}},
            "room_data",
        ),
    }
    body, key = streams[kind]
    waiter = cluster.v3(bob, cluster.a)
    since = waiter.ok(body)["next"]

    def trigger() -> None:
        if kind == "to_device":
            send_to_device(cluster, alice, bob, wake=1)
        elif kind == "typing":
            retype(cluster.user(alice, cluster.b), room)
        elif kind == "receipt":
            cluster.user(alice, cluster.b).send_receipt(room, event_id)
        else:
            via = cluster.b if kind == "message_via_b" else cluster.main
            cluster.user(alice, via).send_message(room, "wake")

    with after(0.5, trigger):
        woken, elapsed = timed(lambda: waiter.ok({}, since=since, timeout=15000))
    assert key in woken, woken
    assert elapsed < 10, f"woken after {elapsed:.1f} s"
    if kind.startswith("message"):
        timeline = woken["room_data"]["rooms"][room]["timeline"]["events"]
        assert [e["content"].get("body") for e in timeline] == ["wake"]
    elif kind == "to_device":
        assert to_device_contents(woken) == [{"wake": 1}]
    elif kind == "typing":
        assert alice.user_id in woken["typing"]["user_ids"]
    else:
        receipts = woken["receipts"]["rooms"][room]
        assert alice.user_id in receipts[event_id]["m.read"]


# -- pages across processes ---------------------------------------------------------------


def test_room_members_pages_continue_on_another_worker(cluster: Cluster) -> None:
    accounts = [cluster.account() for _ in range(5)]
    room = cluster.room(accounts[0], *accounts[1:])
    reader = accounts[1]
    params = {"room_id": room, "limit": 2, "sort": "by_name"}
    first = cluster.v3(reader, cluster.a).ok({"room_members": params})
    page1 = first["room_members"]
    assert page1["count"] == 5 and len(page1["events"]) == 2
    second = cluster.v3(reader, cluster.b).ok(
        {"room_members": {**params, "p": {"since": page1["p"]["next"]}}}, since=first["next"]
    )
    page2 = second["room_members"]
    third = cluster.v3(reader, cluster.main).ok(
        {"room_members": {**params, "p": {"next": page2["p"]["next"]}}}, since=second["next"]
    )
    page3 = third["room_members"]
    assert "p" not in page3
    seen = [e["state_key"] for page in (page1, page2, page3) for e in page["events"]]
    expected = sorted((a.user_id for a in accounts), key=lambda u: (u[1:].lower(), u))
    assert seen == expected


def test_room_list_pages_continue_on_another_worker(cluster: Cluster) -> None:
    alice = cluster.account()
    rooms = {cluster.room(alice) for _ in range(3)}
    params = {"limit": 1, "timeline_limit": 0}
    first = cluster.v3(alice, cluster.a).ok({"room_list": params})
    listed = first["room_list"]
    assert listed["count"] == 3, listed
    seen = [entry["room_id"] for entry in listed["rooms"]]
    since, cursor = first["next"], listed["p"]["next"]
    for process in (cluster.b, cluster.main):
        body = cluster.v3(alice, process).ok(
            {"room_list": {**params, "p": {"since": cursor}}}, since=since
        )
        page = body["room_list"]
        seen += [entry["room_id"] for entry in page["rooms"]]
        since, cursor = body["next"], page.get("p", {}).get("next")
    assert cursor is None
    assert sorted(seen) == sorted(rooms)


# -- device deletion and to_device deletion ---------------------------------------------


def test_device_deletion_on_main_ends_sessions_used_on_workers(cluster: Cluster) -> None:
    bob = cluster.account()
    phone = cluster.main.login(bob.localpart, device_id="PHONE")
    on_a = cluster.v3(phone, cluster.a).ok({"to_device": {}})["next"]
    on_b = cluster.v3(phone, cluster.b).ok({})["next"]
    keep = cluster.v3(bob, cluster.a).ok({})["next"]
    cluster.user(bob, cluster.main).delete_device("PHONE")
    again = cluster.main.login(bob.localpart, device_id="PHONE")
    for process, since in ((cluster.a, on_a), (cluster.b, on_b), (cluster.a, on_b)):
        response = cluster.v3(again, process).error({}, since=since)
        assert response.json() == UNKNOWN_SESSION_BODY
    rows = cluster.query(
        "SELECT COUNT(*) FROM syncv3_sessions WHERE user_id = %s AND device_id = 'PHONE'",
        bob.user_id,
    )
    assert rows == [(0,)]
    assert cluster.v3(bob, cluster.b).ok({}, since=keep)["next"] == keep


def test_to_device_deletion_is_driven_from_the_workers(cluster: Cluster) -> None:
    alice, bob = cluster.account(), cluster.account()
    v3_a, v3_b = cluster.v3(bob, cluster.a), cluster.v3(bob, cluster.b)
    s1 = v3_a.ok({"to_device": {}})["next"]
    s2 = v3_b.ok({"to_device": {}})["next"]
    for n in range(3):
        send_to_device(cluster, alice, bob, n=n)
    got1 = v3_a.ok({}, since=s1, timeout=5000)
    while len(to_device_contents(got1)) < 3:  # replication may bring them one by one
        got1 = v3_a.ok({}, since=s1, timeout=5000)
    v3_a.ok({}, since=got1["next"])  # S1 confirms on A; S2 has confirmed nothing
    assert cluster.inbox(bob) == 3
    got2 = v3_b.ok({}, since=s2, timeout=5000)
    assert to_device_contents(got2) == [{"n": n} for n in range(3)]
    v3_b.ok({}, since=got2["next"])  # S2 confirms on B: now they go
    assert cluster.inbox(bob) == 0
    # A session created afterwards on A starts with an empty inbox, and blocks again.
    s3 = v3_a.ok({"to_device": {}})
    assert to_device_contents(s3) == []


# -- the race of issue 10 --------------------------------------------------------------


@attrs.define
class RaceTally:
    rounds: int = 0
    #: Rounds in which the new session's first delivery came before the deletion.
    new_session_first: int = 0
    #: Rounds in which the deletion came first (the new session starts after it).
    deletion_first: int = 0
    lost: int = 0
    lost_rounds: list[int] = attrs.field(factory=list)


#: Messages per round; the confirming session takes CONFIRMING_LIMIT of them before
#: the race and confirms them in it, the new session asks for NEW_LIMIT at a time.
BATCH, CONFIRMING_LIMIT, NEW_LIMIT = 4, 3, 1


def test_new_sessions_race_a_confirming_session(cluster: Cluster) -> None:
    rounds = int(os.environ.get("SYNCV3_RACE_ROUNDS", "40"))
    tally = race(cluster, rounds, random.Random(rounds))
    print(f"\nworker race: {tally}")
    assert tally.lost == 0, tally
    assert tally.rounds == rounds


def race(cluster: Cluster, rounds: int, rng: random.Random) -> RaceTally:
    """Each round: a batch of messages for the device; session S_B on B takes the
    first ones, then confirms them in a request that starts within a few ms of the
    first request of a new session S_A on A; S_A is then drained and stops to_device.
    S_A may miss only messages that S_B had confirmed; any other is lost."""
    alice, bob = cluster.account(), cluster.account()
    sender = cluster.user(alice, cluster.b)
    v3_b = cluster.v3(bob, cluster.b)
    v3_a_race, v3_a = cluster.v3(bob, cluster.a), cluster.v3(bob, cluster.a)
    since_b = v3_b.ok({"to_device": {"limit": CONFIRMING_LIMIT}})["next"]
    tally = RaceTally()
    # Offset of S_A's start against S_B's, in ms: adapted so that both orders occur.
    offset_ms = 2.0
    for round_no in range(rounds):
        batch = list(range(round_no * BATCH, (round_no + 1) * BATCH))
        for n in batch:
            sender.send_to_device("m.race", {bob.user_id: {bob.device_id: {"n": n}}})
        # S_B confirms the previous round and takes the first messages of this one.
        taken: list[int] = []
        while len(taken) < CONFIRMING_LIMIT:
            body = v3_b.ok({}, since=since_b, timeout=5000)
            taken += [c["n"] for c in to_device_contents(body)]
            since_b = body["next"]
        assert taken == batch[:CONFIRMING_LIMIT]
        confirmed = taken[-1]

        # The race: S_B's confirming request on B against S_A's creation on A.
        jitter = offset_ms + rng.uniform(-4, 4)
        results = _at_once(
            lambda: v3_b.ok({}, since=since_b),  # noqa: B023 (called before the loop moves)
            lambda: v3_a_race.ok({"to_device": {"limit": NEW_LIMIT}}),
            jitter / 1000,
        )
        assert set(results) == {"a", "b"}, f"round {round_no}: a request failed"
        since_b = results["b"]["next"]
        assert [c["n"] for c in to_device_contents(results["b"])] == batch[CONFIRMING_LIMIT:]

        # Drain S_A until the last message of the batch (nobody confirms it).
        received = [c["n"] for c in to_device_contents(results["a"])]
        since_a = results["a"]["next"]
        for _ in range(4 * BATCH):
            if batch[-1] in received:
                break
            body = v3_a.ok({}, since=since_a, timeout=5000)
            received += [c["n"] for c in to_device_contents(body)]
            since_a = body["next"]
        v3_a.ok({"to_device": None}, since=since_a)  # S_A stops counting
        assert received == sorted(set(received)), f"round {round_no}: {received}"

        tally.rounds += 1
        if received and received[0] == batch[0]:
            tally.new_session_first += 1
            offset_ms += 0.5
        else:
            tally.deletion_first += 1
            offset_ms -= 0.5
        start_at = received[0] if received else batch[-1] + 1
        lost = [n for n in batch if n not in received and (n > start_at or n > confirmed)]
        if lost:
            tally.lost += len(lost)
            tally.lost_rounds.append(round_no)
    return tally


def _at_once(
    first: Callable[[], dict[str, Any]], second: Callable[[], dict[str, Any]], delay: float
) -> dict[str, Any]:
    """Run ``first`` ("b") and ``second`` ("a") in two threads, ``second`` starting
    ``delay`` seconds after ``first`` (before it when negative); their results."""
    results: dict[str, Any] = {}
    start = threading.Barrier(2)

    def run(key: str, call: Callable[[], dict[str, Any]], wait: float) -> None:
        start.wait()
        if wait > 0:
            time.sleep(wait)
        results[key] = call()

    threads = [
        threading.Thread(target=run, args=("b", first, -delay)),
        threading.Thread(target=run, args=("a", second, delay)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results
