"""room_list: the first screen of a client for an account in 10, 1,000 and 5,000 rooms.

Starts a real Synapse with synapse-syncv3 loaded on a seeded database (cached in
bench/.cache/ after the first run, see ``bench.common.seeded_server``) holding one
account per room count N (``reader<N>``, in N rooms), and measures in the same run,
interleaved (a random order per round, after one warm-up of every series):

* ``v3 first page <sort>``: a new sync v3 session (no ``since``) asking
  ``{"room_list": {"limit": 20, "timeline_limit": 1, "state_events":
  [["m.room.avatar", ""], ["m.room.encryption", ""]], "sort": [<sort>]}}`` for each
  sort of ``by_recency``, ``by_name``, ``by_notification_count``, ``by_highlight_count``.
* ``v3 continuation page``: the next page of the ``by_recency`` first page just taken
  (the same stream object plus ``p: {"next": <its cursor>}``, with its ``next`` as
  ``since``; SPEC §7.3, §7.4, §5.1: leaving the other fields out would reset). Not
  measured where the first page holds every room (N <= 20).
* ``v3 streaming update``: one session per N in streaming mode; another user sends a
  message into one room of the account, then the incremental request (``timeout=0``)
  reports that one room.
* ``native sliding sync``: Synapse's MSC4186 endpoint
  (``/_matrix/client/unstable/org.matrix.simplified_msc3575/sync``), one list with
  range [0, 19], ``timeline_limit`` 1, the same ``required_state``, a new ``conn_id``
  every sample.
* ``v2 initial sync``: ``GET /_matrix/client/v3/sync`` with the filter
  ``{"room": {"timeline": {"limit": 1}}}`` and no since. It takes seconds at 1,000
  rooms and a minute or more at 5,000: it gets at most ``--v2-samples`` samples and no
  new one once ``--v2-budget`` seconds were spent on it for that N (always one).

Around every request Synapse's metrics are read (outside the timed span): the database
transactions and SQL statements run meanwhile (``synapse_storage_transaction_time_count``,
``synapse_storage_query_time_count``) and what the request itself used (its servlet's
CPU time and database transactions). The report gives, per N, median / p95 of every
series, the ratios against their targets (5,000/10 rooms for the v3 first page <= 1.3;
native / v3 >= 2 at 1,000 and 5,000; v2 / v3 >= 400 at 1,000) and the transactions and
statements per v3 first page (they should not grow with N). As long as the module does
not serve ``room_list`` (its answer is an error object), the v3 series are recorded as
"not served" and the other series are measured all the same.

Each account holds: 1 invite (3 from 100 rooms up) from another user; N/20 direct-message
rooms (2 to 100) with one of four other users, unnamed (so their names come from the
heroes) and encrypted, the first five with an unread message, the first two of those
mentioning the account (highlight), the others with a message of the account; and the
rest, rooms of the account alone, half of them named, the newest 30 with a message.
So the 20 most recent rooms end with a message, as in an active account (native sliding
sync pays one more query per room of its page whose timeline holds no "bump" event).
Seeding goes through the client API, 8 requests at a time with progress; Synapse's
rate limits are off (the harness's config). On 2 shared cores seeding 10 + 1,000 + 5,000
rooms took 10 minutes on SQLite (10-12 rooms/s) and 19 on PostgreSQL (5-6 rooms/s); the
database is then cached per room counts, database and Synapse version (``--reseed``
rebuilds it). A run from the cache took 7 minutes on SQLite and 13 on PostgreSQL, most of
it v2 initial syncs of 5,000 rooms (about 50 s each on SQLite, 150 s on PostgreSQL).

    bench/run room_list.py                              # SQLite, 10,1000,5000 rooms
    bench/run room_list.py --db postgres                # PostgreSQL at SYNCV3_TEST_POSTGRES
    bench/run room_list.py --rooms 10,1000 --samples 30
    bench/run room_list.py --seed-only                  # fill the cache, measure nothing
    bench/run room_list.py --report-from bench/results/room_list-sqlite.json

Results: bench/results/room_list-<db>.json (samples), .txt (the report) and .png (time
against room count per series, log scales).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Deadline,
    count_diff,
    exit_on_sigterm,
    module_version,
    percentile,
    progress,
    save,
    seeded_server,
    servlet_usage,
    synapse_version,
    transaction_counts,
    usage_diff,
)
from harness import Account, Homeserver, MatrixUser
from harness.client import Client, Response

SEED_VERSION = 2
DEFAULT_COUNTS = (10, 1000, 5000)
SEED_WORKERS = 8
#: The newest rooms of the account's own that get a message from it.
ACTIVE_OWN_ROOMS = 30
FRIENDS = ("Alice Anders", "Bob Brennan", "Carol Chen", "Dan Dorsey")
NAME_WORDS = ("design", "ops", "random", "games", "music", "travel", "books", "lunch", "infra")

V3_PATH = "/_matrix/client/v3/sync"
NATIVE_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
V2_PATH = "/_matrix/client/v3/sync"
PAGE = 20
TIMELINE_LIMIT = 1
STATE = [["m.room.avatar", ""], ["m.room.encryption", ""]]
SORTS = ("by_recency", "by_name", "by_notification_count", "by_highlight_count")
V2_FILTER = {"room": {"timeline": {"limit": TIMELINE_LIMIT}}}
#: HTTP timeout of every benchmark request (a v2 initial sync of 5,000 rooms is slow).
HTTP_TIMEOUT = 900.0
#: Pause before each sample, so that the background work of the previous one is done.
SETTLE = 0.05
#: Pause between the message of a streaming sample and its request: the work Synapse
#: does after persisting an event (push actions, notifier, delayed events, device
#: lists) stays out of the measured window.
AFTER_SEND = 0.3

FIRST = "v3 first page {sort}"
CONTINUATION = "v3 continuation page"
STREAMING = "v3 streaming update (1 room)"
NATIVE = "native sliding sync [0,19]"
V2 = "v2 initial sync (timeline 1)"
V3_SERIES = [*(FIRST.format(sort=s) for s in SORTS), CONTINUATION, STREAMING]
SERIES = [*V3_SERIES, NATIVE, V2]


def v3_body(sort: str) -> dict[str, Any]:
    return {
        "room_list": {
            "limit": PAGE,
            "timeline_limit": TIMELINE_LIMIT,
            "state_events": STATE,
            "sort": [sort],
        }
    }


def native_body() -> dict[str, Any]:
    return {
        "conn_id": f"bench-{secrets.token_hex(6)}",
        "lists": {
            "all": {
                "ranges": [[0, PAGE - 1]],
                "timeline_limit": TIMELINE_LIMIT,
                "required_state": STATE,
            }
        },
    }


# ----------------------------------------------------------------------- seed


@dataclasses.dataclass
class Layout:
    """What the account in ``total`` rooms holds."""

    total: int

    @property
    def invites(self) -> int:
        return 1 if self.total < 100 else 3

    @property
    def dms(self) -> int:
        return max(2, min(self.total // 20, 100))

    @property
    def own(self) -> int:
        """Rooms of the account alone (half of them named)."""
        return self.total - self.invites - self.dms

    @property
    def unread(self) -> int:
        """DM rooms (the first ones) with an unread message from the other user."""
        return min(5, self.dms - 1)

    @property
    def highlights(self) -> int:
        """Of the unread rooms, the first ones mention the account."""
        return min(2, self.unread)


def run_pool(
    label: str, fn: Callable[[int], Any], total: int, deadline: Deadline, every: int
) -> list[Any]:
    """``fn(i)`` for i in range(total), SEED_WORKERS at a time, with progress."""
    started = time.monotonic()
    results: list[Any] = []
    with ThreadPoolExecutor(SEED_WORKERS) as pool:
        for result in pool.map(fn, range(total)):
            results.append(result)
            progress(label, len(results), total, started, every)
            if len(results) % 20 == 0:
                deadline.check(f"seeding {label}")
    return results


def seed_account(
    hs: Homeserver, total: int, friends: list[MatrixUser], deadline: Deadline
) -> dict[str, Any]:
    layout = Layout(total)
    account = hs.register(localpart=f"reader{total}", displayname=f"Reader {total}")
    reader = hs.user(account)
    rng = random.Random(total)
    names = [
        f"{rng.choice(NAME_WORDS)} {rng.randrange(100_000)}" if i % 2 == 0 else None
        for i in range(layout.own)
    ]
    print(
        f"seeding {account.user_id}: {layout.own} rooms of its own, {layout.dms} direct "
        f"chats, {layout.invites} invites ({total} rooms)",
        flush=True,
    )

    def own_room(i: int) -> str:
        return reader.create_room(preset="public_chat", name=names[i])

    def dm_room(i: int) -> str:
        friend = friends[i % len(friends)]
        room = reader.create_room(
            preset="trusted_private_chat",
            is_direct=True,
            invite=[friend.user_id],
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        friend.join(room)
        return room

    def invite_room(i: int) -> str:
        friend = friends[i % len(friends)]
        return friend.create_room(name=f"Invitation {i}" if i else None, invite=[account.user_id])

    own = run_pool(f"rooms of reader{total}", own_room, layout.own, deadline, 250)
    dms = run_pool(f"direct chats of reader{total}", dm_room, layout.dms, deadline, 25)
    direct: dict[str, list[str]] = {}
    for i, room in enumerate(dms):
        direct.setdefault(friends[i % len(friends)].user_id, []).append(room)
    reader.set_account_data("m.direct", direct)
    # Rooms whose newest event is a message, as in an active account: the newest of its
    # own rooms and every direct chat (the other member's unread messages come last).
    # Native sliding sync pays one more query for a room of its page whose timeline
    # holds no "bump" event (a message is one, a join or a name is not), which would
    # count against it unfairly.
    active = [*own[-ACTIVE_OWN_ROOMS:], *dms[layout.unread :]]
    run_pool(
        f"messages of reader{total}",
        lambda i: reader.send_message(active[i], f"hello {i}"),
        len(active),
        deadline,
        50,
    )
    for i in range(layout.unread):
        friend = friends[i % len(friends)]
        if i < layout.highlights:
            friend.send_event(
                dms[i],
                "m.room.message",
                {
                    "msgtype": "m.text",
                    "body": f"Reader {total}: have a look",
                    "m.mentions": {"user_ids": [account.user_id]},
                },
            )
        else:
            friend.send_message(dms[i], "unread")
    invites = run_pool(f"invites of reader{total}", invite_room, layout.invites, deadline, 5)
    return {
        "account": dataclasses.asdict(account),
        "total": total,
        "joined": layout.own + layout.dms,
        "invites": invites,
        "dms": dms,
        "own_rooms": len(own),
        # The streaming samples' messages go into the last direct chat (no unread
        # message at first), from its other member.
        "stream_room": dms[-1],
        "stream_sender": (len(dms) - 1) % len(friends),
        "unread": layout.unread,
        "highlights": layout.highlights,
    }


def seed(hs: Homeserver, counts: list[int], deadline: Deadline) -> dict[str, Any]:
    started = time.monotonic()
    friends = [
        hs.user(hs.register(localpart=f"friend{i}", displayname=name))
        for i, name in enumerate(FRIENDS)
    ]
    accounts: dict[str, Any] = {}
    for total in counts:
        begun = time.monotonic()
        accounts[str(total)] = seed_account(hs, total, friends, deadline)
        accounts[str(total)]["seed_seconds"] = round(time.monotonic() - begun, 1)
        print(f"  {total} rooms seeded in {time.monotonic() - begun:.0f} s", flush=True)
    return {
        "friends": [dataclasses.asdict(f.account) for f in friends],
        "accounts": accounts,
        "seed_seconds": round(time.monotonic() - started, 1),
    }


# -------------------------------------------------------------------- measure


class Unavailable(Exception):
    """A series cannot be measured for this room count (the module does not serve
    room_list yet, or answered an error); the message says why."""


@dataclasses.dataclass
class Sample:
    ms: float
    #: Database transactions run meanwhile by desc, and "SQL <verb>" statement counts.
    txns: dict[str, int]
    #: What the finished requests used, per servlet (the metrics listener left out).
    usage: dict[str, dict[str, float]]

    def as_json(self) -> dict[str, Any]:
        return {"ms": round(self.ms, 3), "txns": self.txns, "usage": self.usage}


def timed(hs: Homeserver, request: Callable[[], Response]) -> tuple[Response, Sample]:
    """One request, timed, with Synapse's metrics read before and after it."""
    time.sleep(SETTLE)
    before = hs.metrics()
    started = time.perf_counter()
    response = request()
    ms = (time.perf_counter() - started) * 1000
    after = hs.metrics()
    usage = {
        key: fields
        for key, fields in usage_diff(servlet_usage(before), servlet_usage(after)).items()
        if "etrics" not in key
    }
    txns = count_diff(transaction_counts(before), transaction_counts(after))
    return response, Sample(ms, txns, usage)


def error_of(response: Response, what: str) -> str:
    """Why a response is not a usable answer (raises nothing)."""
    try:
        body = response.json()
    except ValueError:
        body = response.text(200)
    if isinstance(body, dict) and "errcode" in body:
        return f"{what}: HTTP {response.status} {body['errcode']}: {body.get('error', '')}"
    return f"{what}: HTTP {response.status} {str(body)[:200]}"


class Reader:
    """One seeded account and the clients and state its series need."""

    def __init__(self, hs: Homeserver, meta: dict[str, Any], total: int) -> None:
        self.hs = hs
        self.total = total
        entry = meta["accounts"][str(total)]
        self.entry = entry
        account = Account(**entry["account"])
        self.user_id = account.user_id
        self.expected_count: int = entry["total"]
        self.joined: int = entry["joined"]
        self.invites: int = len(entry["invites"])
        self.stream_room: str = entry["stream_room"]
        self.sender = hs.user(Account(**meta["friends"][entry["stream_sender"]]))

        def client(device: str) -> Client:
            token = hs.login(account.localpart, device_id=f"{device}{total}").access_token
            return Client(hs.base_url, token, timeout=HTTP_TIMEOUT)

        # Devices of their own: a device keeps a few sessions only (the least recently
        # used one goes), and v2 sync has per-device effects.
        self.first = client("RLFIRST")
        self.stream = client("RLSTREAM")
        self.native = client("RLNATIVE")
        self.v2 = client("RLV2")
        self.stream_since: str | None = None
        #: Problems seen in answers (the benchmark goes on; the report lists them).
        self.notes: list[str] = []
        self._sent = 0

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            print(f"  note ({self.total} rooms): {text}", flush=True)

    # --- v3

    def _v3(
        self, client: Client, body: dict[str, Any], since: str | None = None
    ) -> Callable[[], Response]:
        query: dict[str, Any] = {"timeout": 0}
        if since is not None:
            query["since"] = since
        return lambda: client.post(V3_PATH, body, query=query)

    def _room_list(self, response: Response, what: str) -> dict[str, Any]:
        if response.status != 200:
            raise Unavailable(error_of(response, what))
        body = response.json()
        room_list = body.get("room_list")
        if not isinstance(room_list, dict):
            raise Unavailable(f"{what}: no room_list in the answer")
        if "errcode" in room_list:
            raise Unavailable(f"not served: {room_list['errcode']} ({room_list.get('error', '')})")
        return room_list

    def _check_page(self, room_list: dict[str, Any], what: str, expected_rooms: int) -> None:
        rooms = room_list.get("rooms", [])
        if room_list.get("count") != self.expected_count:
            self.note(f"{what}: count {room_list.get('count')}, expected {self.expected_count}")
        if len(rooms) != expected_rooms:
            self.note(f"{what}: {len(rooms)} rooms, expected {expected_rooms}")

    def first_page(self, sort: str) -> tuple[Sample, dict[str, Any], str]:
        what = f"first page {sort}"
        response, sample = timed(self.hs, self._v3(self.first, v3_body(sort)))
        room_list = self._room_list(response, what)
        self._check_page(room_list, what, min(PAGE, self.expected_count))
        return sample, room_list, response.json()["next"]

    def continuation(self, first: dict[str, Any], since: str) -> Sample:
        cursor = first.get("p", {}).get("next")
        if not isinstance(cursor, str):
            raise Unavailable("the first page gave no p.next cursor")
        # The whole stream object again: an object replaces the stored params, and
        # leaving state_events out would reset the stream (SPEC §5.1, §5.4).
        body = v3_body("by_recency")
        body["room_list"]["p"] = {"next": cursor}
        response, sample = timed(self.hs, self._v3(self.first, body, since))
        room_list = self._room_list(response, "continuation page")
        self._check_page(room_list, "continuation page", min(PAGE, self.expected_count - PAGE))
        seen = {r.get("room_id") for r in first.get("rooms", [])}
        if any(r.get("room_id") in seen for r in room_list.get("rooms", [])):
            self.note("continuation page: rooms of the first page again")
        return sample

    def streaming(self) -> Sample | None:
        """One message into the stream room, then the timed incremental request; None
        (and a note) when the answer has no room_list."""
        if self.stream_since is None:
            response = self._v3(self.stream, v3_body("by_recency"))()
            self._room_list(response, "streaming session's first page")
            # Confirms the first delivery; from here on the session streams.
            response = self._v3(self.stream, {}, response.json()["next"])()
            if response.status != 200:
                raise Unavailable(error_of(response, "streaming catch-up"))
            self.stream_since = response.json()["next"]
        self._sent += 1
        self.sender.send_message(self.stream_room, f"streamed {self._sent}")
        time.sleep(AFTER_SEND)
        response, sample = timed(self.hs, self._v3(self.stream, {}, self.stream_since))
        if response.status == 200 and "room_list" not in response.json():
            self.note("streaming update: an answer without room_list after a message")
            self.stream_since = response.json()["next"]
            return None
        room_list = self._room_list(response, "streaming update")
        self.stream_since = response.json()["next"]
        got = [r.get("room_id") for r in room_list.get("rooms", [])]
        if got != [self.stream_room]:
            self.note(f"streaming update: rooms {got[:5]}, expected only the room written to")
        return sample

    # --- Synapse's own

    def native_sync(self) -> Sample:
        response, sample = timed(self.hs, lambda: self.native.post(NATIVE_PATH, native_body()))
        if response.status != 200:
            raise Unavailable(error_of(response, "native sliding sync"))
        body = response.json()
        count = body.get("lists", {}).get("all", {}).get("count")
        if count != self.expected_count:
            self.note(f"native sliding sync: count {count}, expected {self.expected_count}")
        if len(body.get("rooms", {})) != min(PAGE, self.expected_count):
            self.note(f"native sliding sync: {len(body.get('rooms', {}))} rooms")
        return sample

    def v2_sync(self) -> Sample:
        query = {"timeout": 0, "filter": json.dumps(V2_FILTER)}
        response, sample = timed(self.hs, lambda: self.v2.get(V2_PATH, query=query))
        if response.status != 200:
            raise Unavailable(error_of(response, "v2 initial sync"))
        rooms = response.json().get("rooms", {})
        joined, invited = len(rooms.get("join", {})), len(rooms.get("invite", {}))
        if (joined, invited) != (self.joined, self.invites):
            self.note(f"v2 initial sync: {joined} joined, {invited} invited rooms")
        return sample


class Recorder:
    """Samples per series and room count, and why a series was not measured."""

    def __init__(self, counts: list[int]) -> None:
        self.samples: dict[str, dict[str, list[Sample]]] = {
            name: {str(n): [] for n in counts} for name in SERIES
        }
        self.status: dict[str, dict[str, str]] = {name: {} for name in SERIES}

    def blocked(self, name: str, total: int) -> bool:
        return str(total) in self.status[name]

    def block(self, name: str, total: int, why: str) -> None:
        if not self.blocked(name, total):
            self.status[name][str(total)] = why
            print(f"  {name}, {total} rooms: {why}", flush=True)

    def add(self, name: str, total: int, sample: Sample) -> None:
        self.samples[name][str(total)].append(sample)


class Runner:
    def __init__(
        self,
        hs: Homeserver,
        meta: dict[str, Any],
        counts: list[int],
        v2_samples: int,
        v2_budget: float,
    ) -> None:
        self.hs = hs
        self.counts = counts
        self.accounts = {n: Reader(hs, meta, n) for n in counts}
        self.recorder = Recorder(counts)
        self.v2_samples = v2_samples
        self.v2_budget = v2_budget
        self.v2_spent = {n: 0.0 for n in counts}
        #: The 1-minute load average at the start of every round (others' work shows).
        self.load: list[float] = []

    def _try(self, names: list[str], total: int, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; on :class:`Unavailable` block ``names`` for ``total``."""
        try:
            return fn()
        except Unavailable as why:
            for name in names:
                self.recorder.block(name, total, str(why))
            return None

    def jobs(self, total: int, warm_up: bool) -> list[tuple[str, Callable[[], None]]]:
        """This round's measurements for one account, each recording its samples."""
        account = self.accounts[total]
        rec = self.recorder
        jobs: list[tuple[str, Callable[[], None]]] = []
        v3_blocked = all(rec.blocked(FIRST.format(sort=s), total) for s in SORTS)

        def first(sort: str) -> None:
            name = FIRST.format(sort=sort)
            if rec.blocked(name, total):  # by an earlier job of this round
                return
            try:
                got = account.first_page(sort)
            except Unavailable as why:
                # Not served: no v3 series is, for this account. A failed by_recency
                # first page leaves its continuation page without a cursor.
                if str(why).startswith("not served"):
                    blocks = V3_SERIES
                else:
                    blocks = [name, CONTINUATION] if sort == "by_recency" else [name]
                for blocked in blocks:
                    rec.block(blocked, total, str(why))
                return
            sample, room_list, since = got
            if not warm_up:
                rec.add(name, total, sample)
            if sort != "by_recency" or rec.blocked(CONTINUATION, total):
                return
            if account.expected_count <= PAGE:
                rec.block(CONTINUATION, total, f"n/a (the first page holds all {total} rooms)")
                return
            cont = self._try([CONTINUATION], total, lambda: account.continuation(room_list, since))
            if cont is not None and not warm_up:
                rec.add(CONTINUATION, total, cont)

        if not v3_blocked:
            for sort in SORTS:
                if not rec.blocked(FIRST.format(sort=sort), total):
                    jobs.append((FIRST.format(sort=sort), functools.partial(first, sort)))
            if not rec.blocked(STREAMING, total):

                def streaming() -> None:
                    if rec.blocked(STREAMING, total):
                        return
                    sample = self._try([STREAMING], total, account.streaming)
                    if sample is not None and not warm_up:
                        rec.add(STREAMING, total, sample)

                jobs.append((STREAMING, streaming))

        def simple(name: str, fn: Callable[[], Sample]) -> Callable[[], None]:
            def job() -> None:
                sample = self._try([name], total, fn)
                if sample is not None and not warm_up:
                    rec.add(name, total, sample)

            return job

        if not rec.blocked(NATIVE, total):
            jobs.append((NATIVE, simple(NATIVE, account.native_sync)))
        taken = len(rec.samples[V2][str(total)])
        last = rec.samples[V2][str(total)][-1].ms / 1000 if taken else 0.0
        if not rec.blocked(V2, total) and (
            warm_up
            or taken == 0
            or (taken < self.v2_samples and self.v2_spent[total] + last <= self.v2_budget)
        ):

            def v2() -> None:
                started = time.monotonic()
                simple(V2, account.v2_sync)()
                if not warm_up:
                    self.v2_spent[total] += time.monotonic() - started

            jobs.append((V2, v2))
        return jobs

    def run(self, samples: int, deadline: Deadline) -> str:
        """Warm-up, then ``samples`` rounds; returns how the run ended."""
        rng = random.Random(7)
        for total in self.counts:
            print(f"warm-up, {total} rooms (every series once)", flush=True)
            started = time.monotonic()
            for _, job in self.jobs(total, warm_up=True):
                job()
            print(f"  done in {time.monotonic() - started:.1f} s", flush=True)
        print(f"measuring: {samples} rounds over {', '.join(map(str, self.counts))} rooms")
        started = time.monotonic()
        for i in range(samples):
            self.load.append(os.getloadavg()[0])
            if deadline.left() < 0:
                return f"stopped by the time limit after {i} of {samples} rounds"
            for total in self.counts if i % 2 == 0 else reversed(self.counts):
                jobs = self.jobs(total, warm_up=False)
                rng.shuffle(jobs)
                for _, job in jobs:
                    job()
            progress("rounds", i + 1, samples, started, 2)
        return f"{samples} rounds"


def run(args: argparse.Namespace, counts: list[int]) -> dict[str, Any] | None:
    deadline = Deadline(args.time_limit)
    server = seeded_server(
        "room_list_" + "_".join(map(str, counts)),
        SEED_VERSION,
        args.db,
        lambda hs: seed(hs, counts, deadline),
        reseed=args.reseed,
    )
    if args.seed_only:
        server.stop()
        return None
    try:
        runner = Runner(server.hs, server.meta, counts, args.v2_samples, args.v2_budget)
        ended = runner.run(args.samples, deadline)
    finally:
        server.stop()
    rec = runner.recorder
    return {
        "db": args.db,
        "synapse": synapse_version(),
        "module": module_version(),
        "counts": counts,
        "samples": args.samples,
        "v2_samples": args.v2_samples,
        "v2_budget_s": args.v2_budget,
        "ended": ended,
        "command": " ".join(["bench/run", "room_list.py", *sys.argv[1:]]),
        "seed_seconds": server.meta.get("seed_seconds"),
        "seed_seconds_per_count": {
            str(n): server.meta["accounts"][str(n)].get("seed_seconds") for n in counts
        },
        "layout": {
            str(n): {
                key: server.meta["accounts"][str(n)][key]
                for key in ("total", "joined", "own_rooms", "unread", "highlights")
            }
            | {
                "invites": len(server.meta["accounts"][str(n)]["invites"]),
                "dms": len(server.meta["accounts"][str(n)]["dms"]),
            }
            for n in counts
        },
        "series": {
            name: {n: [s.as_json() for s in got] for n, got in per.items()}
            for name, per in rec.samples.items()
        },
        "status": rec.status,
        "cpus": os.cpu_count(),
        "load_1min": [round(x, 2) for x in runner.load],
        "notes": {str(n): runner.accounts[n].notes for n in counts},
    }


# --------------------------------------------------------------------- report


def times(result: dict[str, Any], name: str, total: int) -> list[float]:
    return [s["ms"] for s in result["series"][name].get(str(total), [])]


def cpu_ms(sample: dict[str, Any]) -> float:
    """The main-thread CPU time of the finished requests of a sample (Synapse's
    per-servlet metrics): less sensitive than the request time to other work on the
    machine."""
    return (
        sum(u.get("cpu_user_s", 0.0) + u.get("cpu_sys_s", 0.0) for u in sample["usage"].values())
        * 1000
    )


def cpus(result: dict[str, Any], name: str, total: int) -> list[float]:
    return [cpu_ms(s) for s in result["series"][name].get(str(total), [])]


def cell(result: dict[str, Any], name: str, total: int) -> str:
    values = times(result, name, total)
    if values:
        return f"{statistics.median(values):.1f} / {percentile(values, 95):.1f} ({len(values)})"
    status = result["status"][name].get(str(total), "no samples")
    if status.startswith("not served"):
        return "not served"
    return "n/a" if status.startswith("n/a") else "failed"


def ratio_line(
    result: dict[str, Any],
    label: str,
    top: tuple[str, int],
    bottom: tuple[str, int],
    target: str,
    good: Callable[[float], bool],
) -> str:
    a, b = times(result, *top), times(result, *bottom)
    if not a or not b:
        missing = top if not a else bottom
        return (
            f"{label}: - ({missing[0]} at {missing[1]} rooms: {cell(result, *missing)}); {target}"
        )
    value = statistics.median(a) / statistics.median(b)
    p95 = percentile(a, 95) / percentile(b, 95)
    cpu_a, cpu_b = cpus(result, *top), cpus(result, *bottom)
    cpu = statistics.median(cpu_a) / max(statistics.median(cpu_b), 1e-9)
    verdict = "met" if good(value) else "MISSED"
    return f"{label}: {value:.2f} (p95 {p95:.2f}; CPU time {cpu:.2f}); {target}: {verdict}"


def per_request(samples: list[dict[str, Any]]) -> tuple[float, float, float, float, float]:
    """Medians over the samples of: the request's own database transactions and their
    time in ms (its servlet's metrics), its CPU ms, all transactions run meanwhile, SQL
    statements meanwhile (the last two include Synapse's background work)."""
    own, db_ms, cpu, txns, statements = [], [], [], [], []
    for s in samples:
        own.append(sum(u.get("db_txns", 0.0) for u in s["usage"].values()))
        db_ms.append(sum(u.get("db_txn_s", 0.0) for u in s["usage"].values()) * 1000)
        cpu.append(cpu_ms(s))
        txns.append(sum(n for d, n in s["txns"].items() if not d.startswith("SQL ")))
        statements.append(sum(n for d, n in s["txns"].items() if d.startswith("SQL ")))
    return (
        statistics.median(own),
        statistics.median(db_ms),
        statistics.median(cpu),
        statistics.median(txns),
        statistics.median(statements),
    )


def top_descs(samples: list[dict[str, Any]], limit: int = 12) -> list[str]:
    """The transactions' descs of a series, per request (mean), most frequent first."""
    total: dict[str, int] = {}
    for s in samples:
        for desc, n in s["txns"].items():
            if not desc.startswith("SQL "):
                total[desc] = total.get(desc, 0) + n
    ranked = sorted(total.items(), key=lambda kv: -kv[1])[:limit]
    return [f"{n / len(samples):.1f} {desc}" for desc, n in ranked]


def load_line(result: dict[str, Any]) -> str:
    load = result.get("load_1min") or []
    if not load:
        return "load average: not recorded"
    return (
        f"1-minute load average at the rounds' start: min {min(load):.1f}, median "
        f"{statistics.median(load):.1f}, max {max(load):.1f} ({result.get('cpus')} CPUs; "
        "other work on the machine inflates request times more than CPU times)"
    )


def report(result: dict[str, Any]) -> str:
    counts: list[int] = result["counts"]
    seeded = ", ".join(f"{n}: {result['seed_seconds_per_count'].get(str(n))} s" for n in counts)
    width = max(len(n) for n in SERIES) + 2
    lines = [
        f"room_list on {result['db']}, matrix-synapse {result['synapse']}, synapse-syncv3 "
        f"{result['module']}, {result['samples']} samples per series (v2: at most "
        f"{result['v2_samples']}, {result['v2_budget_s']:.0f} s per room count), "
        f"{result['ended']}: {result['command']}",
        f"seeding (once, then cached): {result['seed_seconds']} s in all ({seeded})",
        load_line(result),
        "",
        "request time (ms): median / p95 (samples)",
        f"{'series':<{width}}" + "".join(f"{f'{n} rooms':>26}" for n in counts),
    ]
    for name in SERIES:
        lines.append(f"{name:<{width}}" + "".join(f"{cell(result, name, n):>26}" for n in counts))
    first = FIRST.format(sort="by_recency")
    lo, hi = counts[0], counts[-1]
    lines += ["", "ratios of medians (targets of issue 9)"]
    for sort in SORTS:
        name = FIRST.format(sort=sort)
        lines.append(
            ratio_line(
                result,
                f"{name}, {hi}/{lo} rooms",
                (name, hi),
                (name, lo),
                "target <= 1.3",
                lambda r: r <= 1.3,
            )
        )
    for n in counts:
        if n >= 1000:
            lines.append(
                ratio_line(
                    result,
                    f"native / v3 first page by_recency, {n} rooms",
                    (NATIVE, n),
                    (first, n),
                    "target >= 2",
                    lambda r: r >= 2,
                )
            )
    if 1000 in counts:
        lines.append(
            ratio_line(
                result,
                "v2 initial / v3 first page by_recency, 1000 rooms",
                (V2, 1000),
                (first, 1000),
                "target >= 400",
                lambda r: r >= 400,
            )
        )
    for name in (CONTINUATION, STREAMING):
        measured = [n for n in counts if times(result, name, n)]
        if len(measured) >= 2:
            a, b = measured[-1], measured[0]
            lines.append(
                ratio_line(
                    result,
                    f"{name}, {a}/{b} rooms",
                    (name, a),
                    (name, b),
                    "independent of room count (about 1)",
                    lambda r: r <= 1.3,
                )
            )
        else:
            lines.append(f"{name}: not measured at two room counts")
    lines += [
        "",
        "per request (medians): the request's own DB transactions | their time (ms) | "
        "its main-thread CPU (ms) | all transactions run meanwhile | SQL statements "
        "meanwhile (the last two include Synapse's background work)",
    ]
    for name in SERIES:
        for n in counts:
            samples = result["series"][name].get(str(n), [])
            if not samples:
                continue
            own, db_ms, cpu, txns, statements = per_request(samples)
            lines.append(
                f"{name:<{width}}{n:>6} rooms: {own:>6.0f} | {db_ms:>8.1f} | {cpu:>8.1f} | "
                f"{txns:>6.0f} | {statements:>6.0f}"
            )
    for name in (first, NATIVE):
        for n in counts:
            samples = result["series"][name].get(str(n), [])
            if samples:
                lines.append(f"{name}, {n} rooms, transactions per request by desc (mean):")
                lines.extend(f"    {line}" for line in top_descs(samples))
    status = [
        f"{name}, {n} rooms: {why}"
        for name, per in result["status"].items()
        for n, why in per.items()
    ]
    notes = [f"{n} rooms: {note}" for n, got in result["notes"].items() for note in got]
    if status or notes:
        lines += ["", "not measured / notes:", *status, *notes]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    """Median request time against room count per series (log scales), whiskers to p95."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return False
    counts: list[int] = result["counts"]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name in SERIES:
        xs, med, p95 = [], [], []
        for n in counts:
            values = times(result, name, n)
            if values:
                xs.append(n)
                med.append(statistics.median(values))
                p95.append(percentile(values, 95))
        if not xs:
            continue
        errors = [[0.0] * len(xs), [p - m for p, m in zip(p95, med, strict=True)]]
        style = "--" if name in (NATIVE, V2) else "-"
        ax.errorbar(xs, med, yerr=errors, fmt="o" + style, capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("rooms of the account")
    ax.set_ylabel("request time (ms), median, whisker to p95")
    ax.set_title(
        f"room_list first screen ({result['db']}, Synapse {result['synapse']}, "
        f"synapse-syncv3 {result['module']})",
        fontsize=10,
    )
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--rooms",
        default=",".join(map(str, DEFAULT_COUNTS)),
        help="comma-separated room counts, one account each (seeded together, cached)",
    )
    parser.add_argument("--samples", type=int, default=20, help="per series and room count")
    parser.add_argument("--v2-samples", type=int, help="at most (default: --samples)")
    parser.add_argument(
        "--v2-budget", type=float, default=180, help="seconds of v2 samples per room count"
    )
    parser.add_argument("--reseed", action="store_true", help="seed again, ignoring the cache")
    parser.add_argument("--seed-only", action="store_true", help="fill the cache, measure nothing")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=5400,
        help="seconds, seeding included (seeding stops with an error; measuring stops "
        "after the round in progress and reports what it has)",
    )
    parser.add_argument(
        "--report-from", type=Path, help="write the report and plot of a saved JSON result again"
    )
    args = parser.parse_args()
    exit_on_sigterm()
    if args.report_from is not None:
        saved = json.loads(args.report_from.read_text())
        png = save(f"room_list-{saved['db']}", saved, report(saved))
        if plot(saved, png):
            print(f"plot: {png}")
        return
    try:
        counts = sorted({int(n) for n in args.rooms.split(",") if n.strip()})
    except ValueError:
        parser.error("--rooms takes comma-separated integers")
    if not counts or min(counts) < 5:
        parser.error("--rooms: at least one count, each at least 5")
    if args.samples < 3:
        parser.error("at least 3 samples")
    if args.v2_samples is None:
        args.v2_samples = args.samples
    result = run(args, counts)
    if result is None:
        return
    png = save(f"room_list-{args.db}", result, report(result))
    if plot(result, png):
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
