"""room_list first pages of equal size across room counts (a check of issue 9's
"flat" target with the page held constant).

bench/room_list.py compares the 5,000-room account's first page of 20 rooms with the
10-room account's, whose page holds its whole list (10 rooms, different rooms). This
script uses the same cached accounts (run bench/room_list.py --seed-only first) and
times, interleaved, a new session's by_recency first page with ``limit`` 1, 10 and 20
for each account, so that pages of equal size can be compared:

    bench/run room_list_flat.py [--samples 25]

Prints the median request time per (rooms, limit); SQLite only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import seeded_server
from bench.room_list import DEFAULT_COUNTS, SEED_VERSION
from harness import Account

LIMITS = (1, 10, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=25)
    args = parser.parse_args()
    counts = list(DEFAULT_COUNTS)
    name = "room_list_" + "_".join(map(str, counts))
    server = seeded_server(name, SEED_VERSION, "sqlite", lambda hs: {})
    try:
        hs = server.hs
        port = int(hs.base_url.rsplit(":", 1)[1])
        tokens = {}
        for n in counts:
            account = Account(**server.meta["accounts"][str(n)]["account"])
            tokens[n] = hs.login(account.localpart, device_id=f"FLAT{n}").access_token

        def sample(n: int, limit: int) -> float:
            body = {
                "room_list": {
                    "limit": limit,
                    "timeline_limit": 1,
                    "state_events": [["m.room.avatar", ""], ["m.room.encryption", ""]],
                }
            }
            connection = http.client.HTTPConnection("127.0.0.1", port)
            started = time.perf_counter()
            connection.request(
                "POST",
                "/_matrix/client/v3/sync",
                json.dumps(body),
                {"Authorization": f"Bearer {tokens[n]}", "Content-Type": "application/json"},
            )
            response = connection.getresponse()
            response.read()
            connection.close()
            assert response.status == 200, response.status
            return (time.perf_counter() - started) * 1000

        cases = [(n, limit) for limit in LIMITS for n in counts]
        results: dict[tuple[int, int], list[float]] = {case: [] for case in cases}
        for case in cases:
            sample(*case)  # warm-up
        for round_number in range(args.samples):
            for case in cases:
                results[case].append(sample(*case))
            print(f"round {round_number + 1}/{args.samples}", end="\r", flush=True)
        print()
        for limit in LIMITS:
            medians = {n: statistics.median(results[(n, limit)]) for n in counts}
            line = ", ".join(f"{n} rooms {medians[n]:.1f} ms" for n in counts)
            print(
                f"limit {limit:>2}: {line}; {counts[-1]}/{counts[0]}: "
                f"{medians[counts[-1]] / medians[counts[0]]:.2f}"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
