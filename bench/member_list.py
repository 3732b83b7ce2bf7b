"""Member list: one page of a big room's member list, sync v3 vs Synapse's own API.

Starts a real Synapse with synapse-syncv3 loaded, seeds one room with N members
(default 10,000; created and force-joined through Synapse's admin API, several at a
time, with progress), then measures in the same run, interleaved:

* ``v3 first page``: a new sync v3 session asking for ``room_members`` with
  ``limit`` (default 100). A message is sent into the room before each sample, so the
  anchor moves and every first page takes and sorts a new snapshot (cold).
* ``v3 next page``: the continuation page (cursor) of that snapshot (warm).
* ``v3 first page (10 members)``: the same request for a room of 10 members, to show
  that the page cost follows the room's size only through the one state load.
* ``GET /members``: Synapse's ``GET /_matrix/client/v3/rooms/{id}/members`` for the
  same room (the whole list, which is what a client without sync v3 has to fetch).

Reports median and p95 per series and the ratios, writes the samples to
bench/results/member_list-<db>.json and a plot next to it.

    bench/run member_list.py                    # SQLite, 10,000 members, 30 samples
    bench/run member_list.py --db postgres      # PostgreSQL at SYNCV3_TEST_POSTGRES
    bench/run member_list.py --members 2000 --samples 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import boxplot, save, series_table
from harness import Homeserver, MatrixUser, PostgresDatabase
from harness.client import Client

V3_PATH = "/_matrix/client/v3/sync"


class Seeder:
    """Creates users and force-joins them into a room, with one HTTP client per
    worker thread (the harness's clients keep one connection each)."""

    def __init__(self, hs: Homeserver, admin: MatrixUser) -> None:
        self._base_url = hs.base_url
        self._token = admin.access_token
        self._local = threading.local()
        self._server_name = admin.user_id.split(":", 1)[1]

    def _client(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = Client(self._base_url, self._token)
            self._local.client = client
        return client

    def add_member(self, room_id: str, index: int) -> None:
        client = self._client()
        user_id = f"@m{index:06d}:{self._server_name}"
        # Every third member has no display name: the sort falls back to the user id.
        body: dict[str, Any] = (
            {} if index % 3 == 0 else {"displayname": f"Member {index * 7919 % 100003}"}
        )
        client.put(f"/_synapse/admin/v2/users/{quote(user_id)}", body).expect(201, user_id)
        client.post(f"/_synapse/admin/v1/join/{quote(room_id)}", {"user_id": user_id}).expect(
            200, f"join {user_id}"
        )

    def fill(self, room_id: str, first: int, count: int, workers: int = 6) -> None:
        started = time.monotonic()
        done = 0
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(lambda i: self.add_member(room_id, i), range(first, first + count)):
                done += 1
                if done % 500 == 0 or done == count:
                    rate = done / (time.monotonic() - started)
                    left = (count - done) / rate
                    print(
                        f"  seeded {done}/{count} members ({rate:.0f}/s, ~{left:.0f} s left)",
                        flush=True,
                    )


def timed_ms(fn: Any, *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args)
    return result, (time.perf_counter() - started) * 1000


def run(db: str, members: int, samples: int, limit: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="syncv3-bench-"))
    postgres = PostgresDatabase.create(prefix="syncv3_bench") if db == "postgres" else None
    hs = Homeserver(workdir, database=db, postgres=postgres, presence=False, name="bench")  # type: ignore[arg-type]
    names = ["v3 first page", "v3 next page", "v3 first page (10 members)", "GET /members"]
    series: dict[str, list[float]] = {name: [] for name in names}
    try:
        hs.start()
        print(f"Synapse ready in {hs.ready_seconds:.1f} s ({db})")
        admin = MatrixUser(hs.base_url, hs.register(localpart="admin", admin=True))
        big = admin.create_room(preset="public_chat")
        small = admin.create_room(preset="public_chat")
        seeder = Seeder(hs, admin)
        print(f"seeding a room of {members} members (the admin is the creator)")
        seeder.fill(big, 0, members - 1)
        seeder.fill(small, members, 9)
        client = Client(hs.base_url, admin.access_token)

        def first_page(room_id: str) -> dict[str, Any]:
            body = {"room_members": {"room_id": room_id, "limit": limit}}
            result: dict[str, Any] = client.post(V3_PATH, body).expect(200)
            return result

        def next_page(room_id: str, since: str, cursor: str) -> dict[str, Any]:
            body = {"room_members": {"room_id": room_id, "limit": limit, "p": {"since": cursor}}}
            result: dict[str, Any] = client.post(f"{V3_PATH}?since={since}", body).expect(200)
            return result

        print(f"measuring, {samples} samples per series, page of {limit}")
        for i in range(samples):
            admin.send_message(big, f"move the anchor {i}")
            admin.send_message(small, f"move the anchor {i}")
            first, ms = timed_ms(first_page, big)
            series["v3 first page"].append(ms)
            page = first["room_members"]
            assert page["count"] == members and len(page["events"]) == limit, page.get("count")
            cursor = page["p"]["next"]
            second, ms = timed_ms(next_page, big, first["next"], cursor)
            assert len(second["room_members"]["events"]) == limit
            series["v3 next page"].append(ms)
            small_page, ms = timed_ms(first_page, small)
            assert small_page["room_members"]["count"] == 10
            series["v3 first page (10 members)"].append(ms)
            listed, ms = timed_ms(
                lambda: client.get(f"/_matrix/client/v3/rooms/{quote(big)}/members").expect(200)
            )
            assert len(listed["chunk"]) == members
            series["GET /members"].append(ms)
            if (i + 1) % 5 == 0 or i + 1 == samples:
                print(f"  {i + 1}/{samples}", flush=True)
        import synapse

        return {
            "db": db,
            "members": members,
            "limit": limit,
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
        f"Member list of a {result['members']}-member room, page of {result['limit']} (ms), "
        f"{result['db']}, matrix-synapse {result['synapse']}, n={result['samples']} per series",
        *series_table(series, 30),
    ]
    base = statistics.median(series["GET /members"])
    for name in ("v3 first page", "v3 next page"):
        lines.append(
            f"{name} / GET /members, median ratio {statistics.median(series[name]) / base:.3f}"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    return boxplot(
        result["series"],
        path,
        title=f"Member list, {result['members']} members, page of {result['limit']} "
        f"({result['db']}, Synapse {result['synapse']}, n={result['samples']})",
        ylabel="request time (ms, log scale)",
        width=9,
        log=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    if args.members < 2 * args.limit:
        parser.error("--members must be at least twice --limit (two full pages are measured)")
    result = run(args.db, args.members, args.samples, args.limit)
    png = save(f"member_list-{args.db}", result, report(result))
    if plot(result, png):
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
