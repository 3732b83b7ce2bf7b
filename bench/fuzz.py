"""Fuzz: a long run of hostile requests against a real Synapse with synapse-syncv3.

Starts a real Synapse with the module loaded, registers two users in a room, and sends
``--requests`` seeded hostile sync v3 requests (the generator of harness/fuzz.py, the
same as tests/integration/test_fuzz.py runs 2,000 of): garbage and percent-encoded
query strings, random and mutated bodies for every stream, lone surrogates, NUL, huge
numbers, deep nesting, huge strings, and real since tokens, mutated or with weird
positions; ``timeout=0`` always. Every answer is checked: never a 5xx, every 4xx a JSON
error with an errcode, every 200 with ``next``. At the end the Synapse log is checked
for errors and tracebacks.

    bench/run fuzz.py                              # SQLite, 20,000 requests, seed 1
    bench/run fuzz.py --db postgres --requests 50000 --seed 7
    bench/run fuzz.py --time-limit 600             # stop after 10 minutes

Progress every 1,000 requests. Writes bench/results/fuzz-<db>.json and .txt (requests,
counts per status and errcode, 5xx count, requests/s, the first failures). Exits 1 if
any check failed or the log has problems.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import save
from harness import Homeserver, MatrixUser, PostgresDatabase
from harness.fuzz import FuzzResult, prepare, run_fuzz
from harness.logs import log_problems_of


def run(db: str, requests: int, seed: int, time_limit: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="syncv3-bench-"))
    postgres = PostgresDatabase.create(prefix="syncv3_bench") if db == "postgres" else None
    hs = Homeserver(workdir, database=db, postgres=postgres, name="bench")  # type: ignore[arg-type]
    try:
        hs.start()
        print(f"Synapse ready in {hs.ready_seconds:.1f} s ({db}); {requests} requests, seed {seed}")
        alice = MatrixUser(hs.base_url, hs.register(localpart="alice"))
        bob = MatrixUser(hs.base_url, hs.register(localpart="bob"))
        room_id = prepare(alice, bob)
        token = alice.access_token
        assert token is not None

        def progress(result: FuzzResult) -> None:
            print(
                f"  {result.requests}/{requests} in {result.elapsed:.0f} s "
                f"({result.rate:.0f}/s), {result.server_errors} × 5xx, "
                f"{len(result.failures)} failed checks",
                flush=True,
            )

        result = run_fuzz(
            hs.base_url, token, room_id, requests, seed, time_limit=time_limit, progress=progress
        )
    finally:
        hs.stop()
        if postgres is not None:
            postgres.drop()
    import synapse

    return {
        "db": db,
        "synapse": synapse.__version__.split()[0],
        "command": " ".join(["bench/run", "fuzz.py", *sys.argv[1:]]),
        **result.as_dict(),
        "summary": result.summary(),
        "log_problems": log_problems_of(hs.log_path)[:20],
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"fuzz on {result['db']} (matrix-synapse {result['synapse']}): {result['command']}",
        f"requests: {result['requests']} in {result['elapsed_s']} s "
        f"({result['requests_per_s']} requests/s), seed {result['seed']}"
        + (" — stopped at the time limit" if result["stopped_early"] else ""),
        "statuses: " + ", ".join(f"{k} × {v}" for k, v in result["statuses"].items()),
        "errcodes: " + ", ".join(f"{k} × {v}" for k, v in result["errcodes"].items()),
        "request kinds: " + ", ".join(f"{k} × {v}" for k, v in result["kinds"].items()),
        f"5xx: {result['server_errors']}",
        f"failed checks: {len(result['failures'])}",
        f"log problems: {len(result['log_problems'])}",
    ]
    lines += result["failures"][:10] + result["log_problems"][:10]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--time-limit", type=float, default=3600, help="seconds; stops early (default 3600)"
    )
    args = parser.parse_args()
    if args.requests < 1:
        parser.error("--requests must be positive")
    result = run(args.db, args.requests, args.seed, args.time_limit)
    save(f"fuzz-{args.db}", result, report(result))
    if result["failures"] or result["log_problems"] or result["server_errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
