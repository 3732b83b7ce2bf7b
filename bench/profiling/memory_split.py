"""Split what a server held between two tracemalloc snapshots (written by
``sitecustomize.py`` on SIGUSR2 under ``--profile DIR``) into the parts of a waiting
request: the HTTP connection and request, Synapse's request wrapper and logging
context, the notifier's wait, Synapse's caches, the module's own, and the rest.

    python bench/profiling/memory_split.py DIR/<pid>-before.tracemalloc \
        DIR/<pid>-after.tracemalloc -n 1000

An allocation made under Synapse's notifier is the notifier's wait; any other goes to
the category of its innermost frame that is not generic plumbing (Deferreds,
coroutines, context managers, logging-context switches), so that a Deferred a cache
makes counts as the cache's and one the module makes as the module's.
"""

from __future__ import annotations

import argparse
import tracemalloc
from collections import Counter
from pathlib import Path

NOTIFIER = "synapse/notifier.py"
GENERIC = (
    "twisted/internet/defer.py",
    "twisted/python/",
    "synapse/util/async_helpers.py",
    "synapse/logging/context.py",
    "contextlib.py",
    "functools.py",
)
# (category, markers in a frame's file name)
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("module", ("synapse_syncv3",)),
    ("Synapse caches", ("synapse/util/caches",)),
    ("Synapse auth", ("synapse/api/auth", "synapse/handlers/auth")),
    ("metrics", ("prometheus_client", "synapse/metrics")),
    ("logging context", ("synapse/logging",)),
    ("Synapse HTTP", ("synapse/http",)),
    ("Twisted web/tcp", ("twisted/web", "twisted/internet/tcp", "twisted/protocols")),
    ("storage", ("synapse/storage",)),
    ("Twisted reactor", ("twisted/internet",)),
]


def category(traceback: tracemalloc.Traceback) -> str:
    frames = list(traceback)  # tracemalloc lists the oldest frame first
    if any(NOTIFIER in frame.filename for frame in frames):
        return "notifier wait"
    for frame in reversed(frames):
        if any(marker in frame.filename for marker in GENERIC):
            continue
        for name, markers in CATEGORIES:
            if any(marker in frame.filename for marker in markers):
                return name
        parts = frame.filename.split("/")
        return "other: " + "/".join(parts[-3:-1] or parts)
    return "generic plumbing"


def split(before: Path, after: Path) -> Counter[str]:
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    sizes: Counter[str] = Counter()
    for stat in new.compare_to(old, "traceback"):
        sizes[category(stat.traceback)] += stat.size_diff
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("-n", type=int, default=1, help="waiting requests (per-request sizes)")
    args = parser.parse_args()
    sizes = split(args.before, args.after)
    total = sum(sizes.values())
    for name, size in sizes.most_common():
        print(f"{name:<20} {size / 1024 / args.n:8.2f} KiB")
    print(f"{'total':<20} {total / 1024 / args.n:8.2f} KiB")


if __name__ == "__main__":
    main()
