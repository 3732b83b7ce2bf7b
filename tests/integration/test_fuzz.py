"""Hostile requests against a live server: never a 5xx (SPEC §3.6).

2,000 seeded random requests per database (the generator is harness/fuzz.py, shared
with the long run of bench/fuzz.py): garbage and percent-encoded query strings, raw
non-ASCII bytes in the request target, random bodies, valid bodies of every stream
with hostile fields, and real since tokens, mutated or with weird positions. Every
answer must be a 4xx JSON error with an errcode or a 200 with ``next``; the server log
audit at the end of the session must stay clean (no traceback).

``SYNCV3_FUZZ_SEED`` and ``SYNCV3_FUZZ_REQUESTS`` override the seed and the count.
"""

from __future__ import annotations

import os

from harness.fuzz import prepare, run_fuzz
from tests.integration.helpers import Server

SEED = int(os.environ.get("SYNCV3_FUZZ_SEED", "20250601"))
REQUESTS = int(os.environ.get("SYNCV3_FUZZ_REQUESTS", "2000"))


def test_hostile_requests_never_get_a_server_error(server: Server) -> None:
    alice, bob = server.user(), server.user()
    room_id = prepare(alice, bob)
    token = alice.access_token
    assert token is not None
    # A different seed per database, so the two runs do not repeat each other.
    seed = SEED + (1 if server.engine == "postgres" else 0)
    result = run_fuzz(server.base_url, token, room_id, REQUESTS, seed, time_limit=240)
    print(f"\n{server.engine}: {result.summary()}")
    assert not result.failures, (
        f"{len(result.failures)} failed checks ({result.summary()}); first ones:\n"
        + "\n".join(result.failures[:10])
    )
    assert result.requests == REQUESTS, result.summary()
    assert 200 in result.statuses and 400 in result.statuses, result.summary()
