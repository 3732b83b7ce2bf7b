"""To-device chaos on a worker deployment (issue 10 item 3; SPEC §8, §13).

One device has several sync v3 sessions spread over the generic workers. Senders
send numbered to-device messages to it through the process that writes Synapse's
to_device stream (Synapse allows exactly one), while the sessions long-poll and page
through them with small limits, a share of their requests is abandoned by the client
(the connection is closed after a random delay, before the answer is read: some
before the server has read the request, many in the middle of a long-poll), a few
answers are read and then "forgotten" (the client retries with the old ``since``, as a
client that crashed before saving its token would), and a chaos thread SIGKILLs and
restarts the workers and the main process in turn. Clients whose process is down go
to another one, as a reverse proxy would.

Afterwards every process runs again and each session is drained. Checked:

* **lost**: a message whose send was answered 200 and that a session never
  received (SPEC §8.1: it stays in the inbox until every session confirmed it);
* **duplicates after confirmation**: a message delivered again to a session that
  had already sent a ``since`` covering it (SPEC §8.2: its confirmation only moves
  forward; the client never replays an older ``since``). Duplicates *before*
  confirmation (the same ``since`` sent again after an abandoned or forgotten answer)
  are allowed and counted;
* the device inbox is empty once every session confirmed everything, and no
  request got a 5xx or lost its session.

A send attempt that got no answer (its process was killed) is retried with a new
transaction id and an attempt number in the content, so each stored copy is a
message of its own: ``(n, attempt)``. Copies stored without an answer are delivered
too and counted separately ("unanswered but stored").

Used by ``tests/integration/test_workers_chaos.py`` (a short run) and
``bench/chaos_workers.py`` (the full run).
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from .client import Account, Client, new_txn_id, quote
from .logs import PROBLEM_RE, RECORD_RE
from .workers import WorkerDeployment

__all__ = [
    "ChaosResult",
    "ChaosSettings",
    "abandon_request",
    "log_problems",
    "run_chaos",
    "transaction_retries",
]

SYNC_PATH = "/_matrix/client/v3/sync"

#: Confirmation index of a delivery whose answer the client forgot: it is confirmed
#: only once the message comes again in an answer that is kept.
_NEVER = 1 << 62

#: Connection failures a client retries (the process was killed or is starting).
CONNECTION_ERRORS = (
    ConnectionError,
    http.client.HTTPException,
    socket.timeout,
    TimeoutError,
    OSError,
)


@attrs.define
class ChaosSettings:
    #: Messages to send (each is answered 200 once; retries add attempts).
    messages: int = 3000
    #: Seconds over which the messages are sent (the kills happen meanwhile).
    send_seconds: float = 240.0
    #: Sender threads.
    senders: int = 2
    #: to_device limits of the sessions (one session per entry).
    limits: tuple[int, ...] = (7, 20, 50)
    #: Share of sync requests abandoned by the client before reading the answer.
    abort_share: float = 0.25
    #: Share of answers read and then forgotten (the old ``since`` is sent again).
    forget_share: float = 0.04
    #: Long-poll timeouts (ms) the sessions pick from.
    timeouts_ms: tuple[int, ...] = (0, 1000, 3000, 10000)
    #: Processes killed in turn, one every ``kill_every`` seconds from the start.
    victims: tuple[str, ...] = ("worker1", "main", "worker2")
    kill_every: float = 20.0
    #: Seconds a killed process stays down before it is started again.
    down_for: tuple[float, float] = (0.2, 3.0)
    #: After sending: seconds allowed to drain every session.
    drain_seconds: float = 180.0
    seed: int = 1


@attrs.define
class Kill:
    at: float
    process: str
    down_s: float
    restart_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "at_s": round(self.at, 1),
            "process": self.process,
            "down_s": round(self.down_s, 2),
            "restart_s": round(self.restart_s, 2),
        }


@attrs.define
class SessionTally:
    name: str
    limit: int
    requests: int = 0
    #: Requests abandoned by the client (connection closed before the answer).
    abandoned: int = 0
    #: Answers read and forgotten.
    forgotten: int = 0
    #: Requests that failed on the connection (process down or killed mid-request).
    connection_errors: int = 0
    #: Requests per process that answered.
    answered_by: Counter[str] = attrs.field(factory=Counter)
    statuses: Counter[int] = attrs.field(factory=Counter)
    delivered: int = 0
    duplicates_before: int = 0
    duplicates_after: int = 0
    #: A few examples of duplicates after confirmation.
    after_examples: list[str] = attrs.field(factory=list)
    #: Out-of-order deliveries (a message older than one already kept, in one answer).
    out_of_order: int = 0
    #: Keys (sender, n, attempt) received, with their confirmation index.
    seen: dict[tuple[int, int, int], int] = attrs.field(factory=dict)
    lost: int = 0
    failures: list[str] = attrs.field(factory=list)


@attrs.define
class ChaosResult:
    settings: ChaosSettings
    writer: str
    elapsed_s: float = 0.0
    send_s: float = 0.0
    drain_s: float = 0.0
    #: Messages answered 200 (distinct (n, attempt) copies answered 200).
    sent: int = 0
    send_attempts: int = 0
    #: Attempts that got no answer (connection failed; stored or not).
    unanswered_attempts: int = 0
    #: Of those, copies that turned out stored (a session received them).
    unanswered_stored: int = 0
    send_statuses: Counter[int] = attrs.field(factory=Counter)
    kills: list[Kill] = attrs.field(factory=list)
    sessions: list[SessionTally] = attrs.field(factory=list)
    inbox_left: int = -1
    pending_deletions_left: int = -1
    failures: list[str] = attrs.field(factory=list)

    @property
    def lost(self) -> int:
        return sum(s.lost for s in self.sessions)

    @property
    def duplicates_before(self) -> int:
        return sum(s.duplicates_before for s in self.sessions)

    @property
    def duplicates_after(self) -> int:
        return sum(s.duplicates_after for s in self.sessions)

    @property
    def server_errors(self) -> int:
        codes = sum((s.statuses for s in self.sessions), Counter()) + self.send_statuses
        return sum(n for code, n in codes.items() if code >= 500)

    @property
    def ok(self) -> bool:
        return (
            not self.failures
            and self.lost == 0
            and self.duplicates_after == 0
            and self.server_errors == 0
            and self.inbox_left == 0
            and not any(s.failures or s.out_of_order for s in self.sessions)
        )

    def as_dict(self) -> dict[str, Any]:
        # Requests that reached a process (a refused connection is tried elsewhere).
        sync_requests = sum(s.requests - s.connection_errors for s in self.sessions)
        abandoned = sum(s.abandoned for s in self.sessions)
        return {
            "settings": attrs.asdict(self.settings),
            "to_device_writer": self.writer,
            "elapsed_s": round(self.elapsed_s, 1),
            "send_s": round(self.send_s, 1),
            "drain_s": round(self.drain_s, 1),
            "sent": self.sent,
            "send_attempts": self.send_attempts,
            "unanswered_attempts": self.unanswered_attempts,
            "unanswered_stored": self.unanswered_stored,
            "send_statuses": dict(self.send_statuses),
            "kills": [k.as_dict() for k in self.kills],
            "kills_by_process": dict(Counter(k.process for k in self.kills)),
            "sync_requests": sync_requests,
            "abandoned": abandoned,
            "abandoned_share": round(abandoned / sync_requests, 3) if sync_requests else 0,
            "lost": self.lost,
            "duplicates_before_confirmation": self.duplicates_before,
            "duplicates_after_confirmation": self.duplicates_after,
            "server_errors": self.server_errors,
            "inbox_left": self.inbox_left,
            "pending_deletions_left": self.pending_deletions_left,
            "sessions": [
                {
                    "session": s.name,
                    "limit": s.limit,
                    "requests": s.requests,
                    "abandoned": s.abandoned,
                    "forgotten": s.forgotten,
                    "connection_errors": s.connection_errors,
                    "answered_by": dict(s.answered_by),
                    "statuses": dict(s.statuses),
                    "delivered": s.delivered,
                    "received_distinct": len(s.seen),
                    "lost": s.lost,
                    "duplicates_before": s.duplicates_before,
                    "duplicates_after": s.duplicates_after,
                    "after_examples": s.after_examples,
                    "out_of_order": s.out_of_order,
                    "failures": s.failures[:10],
                }
                for s in self.sessions
            ],
            "failures": self.failures[:20],
            "ok": self.ok,
        }

    def summary(self) -> str:
        d = self.as_dict()
        kills = ", ".join(f"{name} × {n}" for name, n in d["kills_by_process"].items()) or "none"
        return (
            f"sent {self.sent} messages ({self.send_attempts} attempts, "
            f"{self.unanswered_attempts} unanswered of which {self.unanswered_stored} stored) "
            f"through {self.writer} in {self.send_s:.0f} s; {len(self.sessions)} sessions, "
            f"{d['sync_requests']} sync requests, {d['abandoned']} abandoned "
            f"({d['abandoned_share']:.0%}); kills: {kills}; lost {self.lost}, duplicates "
            f"before confirmation {self.duplicates_before}, after confirmation "
            f"{self.duplicates_after}; 5xx {self.server_errors}; inbox left {self.inbox_left}"
        )


# -- an abandoned request --------------------------------------------------------------


def abandon_request(
    base_url: str,
    path: str,
    access_token: str,
    body: Any,
    *,
    after: float,
    reset: bool = False,
    query: str = "",
) -> bool:
    """POST ``body`` (JSON) and close the connection ``after`` seconds later without
    reading the answer (``reset``: with an RST instead of a FIN). False if the
    connection could not be made or the request not sent."""
    parts = urlsplit(base_url)
    data = json.dumps(body).encode()
    target = path + (f"?{query}" if query else "")
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        f"Authorization: Bearer {access_token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    try:
        sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=5)
    except OSError:
        return False
    try:
        sock.sendall(head + data)
        time.sleep(after)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def sync_query(since: str | None, timeout_ms: int) -> str:
    query = f"timeout={timeout_ms}"
    if since is not None:
        query = f"since={quote(since)}&" + query
    return query


# -- the run ---------------------------------------------------------------------------


class _Run:
    def __init__(
        self,
        deployment: WorkerDeployment,
        settings: ChaosSettings,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.deployment = deployment
        self.settings = settings
        self.progress = progress or (lambda line: None)
        writers = deployment.main.stream_writers.get("to_device") or ["main"]
        self.writer = deployment.worker(writers[0])
        self.result = ChaosResult(settings, self.writer.name)
        self.lock = threading.Lock()
        self.sending_done = threading.Event()
        self.stop_chaos = threading.Event()
        self.drain = threading.Event()
        #: Set when sending takes far too long (a process did not come back).
        self.give_up = threading.Event()
        #: Answered copies: (sender index, n, attempt).
        self.sent_keys: set[tuple[int, int, int]] = set()
        self.unanswered_keys: set[tuple[int, int, int]] = set()
        self.started = time.monotonic()

    # -- helpers

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fail(self, message: str) -> None:
        with self.lock:
            self.result.failures.append(f"{self.elapsed():.1f} s: {message}")

    def sync_targets(self, preferred: int, rng: random.Random) -> list[str]:
        """Processes to try for a sync request, in order: a worker (the preferred one
        mostly), the other worker, then the main process."""
        workers = [w.name for w in self.deployment.workers]
        first = workers[preferred % len(workers)]
        if rng.random() < 0.3:
            first = rng.choice(workers)
        rest = [w for w in workers if w != first]
        return [first, *rest, self.deployment.main.name]

    # -- senders

    def sender(self, index: int, account: Account, to: Account, numbers: list[int]) -> None:
        client = Client(self.writer.base_url, account.access_token, timeout=30)
        per_message = self.settings.send_seconds / max(1, self.settings.messages)
        start = time.monotonic()
        for position, n in enumerate(numbers):
            if self.give_up.is_set():
                return
            # Pace the sends over send_seconds (all senders together).
            due = start + position * per_message * self.settings.senders
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            attempt = 0
            while True:
                attempt += 1
                key = (index, n, attempt)
                content = {"s": index, "n": n, "a": attempt}
                path = f"/_matrix/client/v3/sendToDevice/m.chaos/{new_txn_id()}"
                body = {"messages": {to.user_id: {to.device_id: content}}}
                with self.lock:
                    self.result.send_attempts += 1
                try:
                    response = client.put(path, body)
                except CONNECTION_ERRORS:
                    client.close()
                    with self.lock:
                        self.result.unanswered_attempts += 1
                        self.unanswered_keys.add(key)
                    if self.give_up.is_set():
                        return
                    time.sleep(0.2)
                    continue
                with self.lock:
                    self.result.send_statuses[response.status] += 1
                if response.status == 200:
                    with self.lock:
                        self.sent_keys.add(key)
                        self.result.sent += 1
                    break
                if response.status >= 500 or response.status == 429:
                    time.sleep(0.2)
                    continue
                self.fail(f"sendToDevice answered {response.status}: {response.text(300)}")
                return

    # -- sessions

    def session(self, index: int, account: Account, tally: SessionTally) -> None:
        rng = random.Random(self.settings.seed * 1000 + index)
        clients = {
            p.name: Client(p.base_url, account.access_token) for p in self.deployment.processes
        }
        since: str | None = None
        since_index = 0  # how many answers were kept: the index of `since`
        body: dict[str, Any] = {"to_device": {"limit": tally.limit}}
        quiet_in_a_row = 0
        while True:
            draining = self.drain.is_set()
            if draining and since is not None and quiet_in_a_row >= 2 and self.all_received(tally):
                return
            timeout_ms = 1000 if draining else rng.choice(self.settings.timeouts_ms)
            request_body = body if since is None else {}
            targets = self.sync_targets(index, rng)
            if not draining and since is not None and rng.random() < self.settings.abort_share:
                self.abandon(tally, clients, targets, account, since, timeout_ms, rng)
                continue
            answer = self.request(tally, clients, targets, since, request_body, timeout_ms)
            if answer is None:
                if tally.failures:
                    return
                time.sleep(0.05)
                continue
            process, _status, payload = answer
            events = payload.get("to_device", {}).get("events", [])
            forget = (
                not draining and since is not None and rng.random() < self.settings.forget_share
            )
            kept_index = _NEVER if forget else since_index + 1
            last_n: dict[int, tuple[int, int]] = {}
            for event in events:
                content = event.get("content", {})
                key = (int(content["s"]), int(content["n"]), int(content["a"]))
                tally.delivered += 1
                previous = tally.seen.get(key)
                if previous is not None:
                    if previous <= since_index:
                        tally.duplicates_after += 1
                        if len(tally.after_examples) < 5:
                            tally.after_examples.append(
                                f"{key} confirmed at answer {previous}, again in the answer to"
                                f" since #{since_index} from {process}"
                            )
                    else:
                        tally.duplicates_before += 1
                    tally.seen[key] = min(previous, kept_index)
                else:
                    tally.seen[key] = kept_index
                order = (key[1], key[2])
                if key[0] in last_n and order < last_n[key[0]]:
                    tally.out_of_order += 1
                last_n[key[0]] = order
            if forget:
                tally.forgotten += 1
                continue
            next_token = payload.get("next")
            if not isinstance(next_token, str):
                tally.failures.append(f"answer without next from {process}: {payload}")
                return
            quiet_in_a_row = 0 if events else quiet_in_a_row + 1
            since, since_index = next_token, since_index + 1

    def all_received(self, tally: SessionTally) -> bool:
        with self.lock:
            expected = set(self.sent_keys)
        return expected.issubset(tally.seen)

    def request(
        self,
        tally: SessionTally,
        clients: dict[str, Client],
        targets: list[str],
        since: str | None,
        body: dict[str, Any],
        timeout_ms: int,
    ) -> tuple[str, int, dict[str, Any]] | None:
        """One sync request on the first process of ``targets`` that takes the
        connection; (process, status, body) or None when every one failed."""
        for name in targets:
            client = clients[name]
            query: dict[str, Any] = {"timeout": timeout_ms}
            if since is not None:
                query["since"] = since
            tally.requests += 1
            try:
                response = client.post(SYNC_PATH, body, query=query, timeout=timeout_ms / 1000 + 30)
            except CONNECTION_ERRORS:
                client.close()
                tally.connection_errors += 1
                continue
            tally.statuses[response.status] += 1
            if response.status == 200:
                tally.answered_by[name] += 1
                return name, 200, response.json()
            if response.status >= 500:
                # Counted as a server error (the run fails); another process may serve it.
                continue
            tally.failures.append(f"{name} answered {response.status}: {response.text(300)}")
            return None
        return None

    def abandon(
        self,
        tally: SessionTally,
        clients: dict[str, Client],
        targets: list[str],
        account: Account,
        since: str,
        timeout_ms: int,
        rng: random.Random,
    ) -> None:
        """Send the request and close the connection before reading the answer: right
        away (before the server may have read it) or in the middle of the wait."""
        after = rng.uniform(0, 0.02) if rng.random() < 0.3 else rng.uniform(0.02, 1.5)
        for name in targets:
            tally.requests += 1
            sent = abandon_request(
                clients[name].base_url,
                SYNC_PATH,
                account.access_token,
                {},
                after=after,
                reset=rng.random() < 0.5,
                query=sync_query(since, max(timeout_ms, 1000)),
            )
            if sent:
                tally.abandoned += 1
                return
            tally.connection_errors += 1

    # -- chaos

    def chaos(self) -> None:
        rng = random.Random(self.settings.seed)
        victims = list(self.settings.victims)
        turn = 0
        while victims:
            # Kill number k at k × kill_every seconds (or as soon as the previous
            # process is up again).
            turn += 1
            wait = turn * self.settings.kill_every - self.elapsed()
            if self.stop_chaos.wait(max(0.0, wait)):
                return
            name = victims[(turn - 1) % len(victims)]
            at = self.elapsed()
            self.deployment.kill(name)
            down = rng.uniform(*self.settings.down_for)
            time.sleep(down)
            try:
                restart = self.deployment.start_process(name)
            except Exception as e:
                self.fail(f"{name} did not start again: {e}")
                return
            with self.lock:
                self.result.kills.append(Kill(at, name, down, restart))
            self.progress(
                f"  {at:6.1f} s: SIGKILL {name}, down {down:.1f} s, up again in {restart:.1f} s"
            )

    def report_progress(self) -> Iterator[None]:
        """A progress line now and then (a generator polled by the main loop)."""
        last = 0.0
        while True:
            now = self.elapsed()
            if now - last >= 10:
                last = now
                with self.lock:
                    sent = self.result.sent
                    kills = len(self.result.kills)
                received = ", ".join(f"{len(s.seen)}" for s in self.result.sessions)
                abandoned = sum(s.abandoned for s in self.result.sessions)
                requests = sum(s.requests for s in self.result.sessions)
                self.progress(
                    f"  {now:6.1f} s: sent {sent}/{self.settings.messages}, received per session"
                    f" [{received}], sync requests {requests} ({abandoned} abandoned), kills"
                    f" {kills}, duplicates after confirmation"
                    f" {sum(s.duplicates_after for s in self.result.sessions)}"
                )
            yield

    def guarded(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        """A daemon thread running ``target``; an exception fails the run."""

        def run() -> None:
            try:
                target(*args)
            except BaseException as e:
                self.fail(f"{target.__name__} raised {type(e).__name__}: {e}")

        return threading.Thread(target=run, daemon=True)

    def run(self, sender: Account, receiver: Account) -> ChaosResult:
        settings = self.settings
        result = self.result
        result.sessions = [
            SessionTally(f"S{i + 1}", limit) for i, limit in enumerate(settings.limits)
        ]
        session_threads = [
            self.guarded(self.session, i, receiver, tally)
            for i, tally in enumerate(result.sessions)
        ]
        for thread in session_threads:
            thread.start()
        shares: list[list[int]] = [[] for _ in range(settings.senders)]
        for n in range(settings.messages):
            shares[n % settings.senders].append(n)
        sender_threads = [
            self.guarded(self.sender, i, sender, receiver, share) for i, share in enumerate(shares)
        ]
        chaos = self.guarded(self.chaos)
        for thread in sender_threads:
            thread.start()
        chaos.start()
        ticker = self.report_progress()
        give_up = settings.send_seconds * 1.5 + 60
        while any(t.is_alive() for t in sender_threads):
            next(ticker)
            time.sleep(0.5)
            if self.elapsed() > give_up and not self.give_up.is_set():
                self.fail(f"sending not done after {give_up:.0f} s; giving up")
                self.give_up.set()
        result.send_s = self.elapsed()
        self.stop_chaos.set()
        chaos.join()
        # Every process runs again (a kill in progress has finished its restart).
        for process in self.deployment.processes:
            if not process.running:
                self.fail(f"{process.name} was not running after the chaos; starting it")
                process.start(90)
        drain_started = time.monotonic()
        self.drain.set()
        deadline = drain_started + settings.drain_seconds
        while any(t.is_alive() for t in session_threads) and time.monotonic() < deadline:
            next(ticker)
            time.sleep(0.5)
        result.drain_s = time.monotonic() - drain_started
        if any(t.is_alive() for t in session_threads):
            self.fail(f"sessions not drained after {settings.drain_seconds:.0f} s")
        result.elapsed_s = self.elapsed()
        # Every session has sent a since covering all it received: the inbox is empty.
        with self.lock:
            sent_keys = set(self.sent_keys)
            unanswered = set(self.unanswered_keys)
        received_any: set[tuple[int, int, int]] = set()
        for tally in result.sessions:
            tally.lost = len(sent_keys - set(tally.seen))
            received_any |= set(tally.seen)
        result.unanswered_stored = len(unanswered & received_any)
        stray = received_any - sent_keys - unanswered
        if stray:
            self.fail(f"{len(stray)} messages received that were never sent: {sorted(stray)[:5]}")
        result.inbox_left = self._count(
            "SELECT COUNT(*) FROM device_inbox WHERE user_id = %s AND device_id = %s",
            receiver,
        )
        result.pending_deletions_left = self._count(
            "SELECT COUNT(*) FROM syncv3_to_device_deletions WHERE user_id = %s AND device_id = %s",
            receiver,
        )
        return result

    def _count(self, sql: str, account: Account) -> int:
        with self.deployment.postgres.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, (account.user_id, account.device_id))
            return int(cur.fetchone()[0])


def run_chaos(
    deployment: WorkerDeployment,
    settings: ChaosSettings,
    progress: Callable[[str], None] | None = None,
) -> ChaosResult:
    """Run the chaos on a started deployment (see the module docstring); accounts are
    registered on the main process."""
    sender = deployment.main.register()
    receiver = deployment.main.register()
    run = _Run(deployment, settings, progress)
    run.progress(
        f"chaos: {settings.messages} messages through {run.writer.name} over"
        f" {settings.send_seconds:.0f} s, {len(settings.limits)} sessions of"
        f" {receiver.user_id} {receiver.device_id}, kills every {settings.kill_every:.0f} s"
        f" ({', '.join(settings.victims) or 'none'})"
    )
    return run.run(sender, receiver)


# -- logs ------------------------------------------------------------------------------

_EXCEPTION_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def _log_lines(path: Path) -> list[str]:
    """The lines of a process's log up to its final shutdown (Synapse's Redis
    connection logs errors while a process shuts down, which is Synapse's business)."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines):
        if "Received SIGTERM, shutting down" in line:
            return lines[:number]
    return lines


def log_problems(path: Path) -> tuple[list[str], list[str]]:
    """ERROR/CRITICAL lines, tracebacks and logcontext complaints of a process's log
    (up to its shutdown), split into (the module's, everyone else's). A problem belongs
    to the module when its line or its traceback names ``synapse_syncv3``."""
    ours: list[str] = []
    theirs: list[str] = []
    lines = _log_lines(path)
    covered = -1  # lines up to here belong to a block already reported
    for number, line in enumerate(lines):
        if number <= covered or not PROBLEM_RE.search(line):
            continue
        block = [line]
        for follow in lines[number + 1 : number + 200]:
            if RECORD_RE.match(follow):
                break
            block.append(follow)
        covered = number + len(block) - 1
        text = "\n".join(block)
        entry = f"{path.name}: {line[:300]}"
        raised = [b for b in block[1:] if _EXCEPTION_RE.match(b)]
        if raised:  # a traceback follows: name its exception
            entry += f" | {raised[-1].strip()[:240]}"
        if "synapse_syncv3" in text:
            ours.append(entry)
        else:
            theirs.append(entry)
    return ours, theirs


_RETRY_RE = re.compile(r"\[TXN OPERROR\] \{(\S+)-[0-9a-f]+\} (.*)$")


def transaction_retries(path: Path) -> Counter[str]:
    """Transactions Synapse retried after an operational error (serialization
    failures, deadlocks), by ``"<transaction>: <error>"``, from a process's log."""
    retries: Counter[str] = Counter()
    for line in _log_lines(path):
        match = _RETRY_RE.search(line)
        if match:
            retries[f"{match.group(1)}: {match.group(2)[:80]}"] += 1
    return retries
