"""Profiling hooks for a Synapse process started by a benchmark (bench/idle_longpolls.py
``--profile DIR``): this directory is put first on the process's PYTHONPATH, so Python
imports this file at start-up. Nothing here runs unless ``SYNCV3_BENCH_PROFILE_DIR``
is set.

* SIGUSR1: start tracemalloc (10 frames) and remember the live objects by type
  ("before");
* SIGUSR2: snapshot what was allocated since and is still alive, and compare the live
  objects with "before"; writes
  ``<pid>-memory.txt`` (the largest differences by line and by traceback, and by
  object type) and the two snapshots (``<pid>-before.tracemalloc``,
  ``<pid>-after.tracemalloc``, for ``bench/profiling/memory_split.py``);
* SIGPROF: start cProfile (main thread); the next SIGPROF stops it and writes
  ``<pid>-cpu.prof`` and ``<pid>-cpu.txt`` (by own time and by cumulative time).
"""

from __future__ import annotations

import os

_DIR = os.environ.get("SYNCV3_BENCH_PROFILE_DIR", "")

if _DIR:
    import cProfile
    import gc
    import io
    import pstats
    import signal
    import sys
    import tracemalloc
    from collections import Counter
    from typing import Any

    _state: dict[str, Any] = {}

    def _types() -> Counter[str]:
        return Counter(type(o).__qualname__ for o in gc.get_objects())

    def _before(signum: int, frame: Any) -> None:
        gc.collect()
        _state["types"] = _types()
        tracemalloc.start(10)
        _state["snapshot"] = tracemalloc.take_snapshot()

    def _compare(signum: int, frame: Any) -> None:
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        types = _types()
        before = _state.get("snapshot")
        out = io.StringIO()
        if before is not None:
            filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
            snapshot = snapshot.filter_traces(filters)
            before = before.filter_traces(filters)
            by_line = snapshot.compare_to(before, "lineno")
            total = sum(s.size_diff for s in by_line)
            print(f"total traced difference: {total / 1024:.0f} KiB", file=out)
            print("\n== by file (the allocating frame) ==", file=out)
            for stat in snapshot.compare_to(before, "filename")[:30]:
                print(stat, file=out)
            module = sum(
                t.size
                for t in snapshot.traces
                if any("synapse_syncv3" in frame.filename for frame in t.traceback)
            )
            print(f"\nallocated under synapse_syncv3 code: {module / 1024:.0f} KiB", file=out)
            print("\n== allocated under synapse_syncv3 code, by its innermost line ==", file=out)
            by_site: Counter[str] = Counter()
            for t in snapshot.traces:
                for frame in reversed(t.traceback):  # innermost first
                    if "synapse_syncv3" in frame.filename:
                        by_site[f"{frame.filename}:{frame.lineno}"] += t.size
                        break
            for site, size in by_site.most_common(40):
                print(f"{size / 1024:>10.1f} KiB  {site}", file=out)
            print("\n== allocated in synapse_syncv3 files, by line ==", file=out)
            ours = snapshot.filter_traces([tracemalloc.Filter(True, "*synapse_syncv3*")])
            for line_stat in ours.statistics("lineno"):
                print(line_stat, file=out)
            print("\n== by line ==", file=out)
            for stat in by_line[:80]:
                print(stat, file=out)
            print("\n== by traceback ==", file=out)
            for stat in snapshot.compare_to(before, "traceback")[:40]:
                print(f"\n{stat.size_diff / 1024:.1f} KiB in {stat.count_diff} blocks", file=out)
                for line in stat.traceback.format(limit=25):
                    print(line, file=out)
            print("\n== live objects by type (difference) ==", file=out)
            diff = types.copy()
            diff.subtract(_state["types"])
            for name, count in diff.most_common(80):
                print(f"{count:>10} {name}", file=out)
        snapshot.dump(os.path.join(_DIR, f"{os.getpid()}-after.tracemalloc"))
        if before is not None:
            before.dump(os.path.join(_DIR, f"{os.getpid()}-before.tracemalloc"))
        path = os.path.join(_DIR, f"{os.getpid()}-memory.txt")
        with open(path + ".part", "w") as f:
            f.write(out.getvalue())
        os.replace(path + ".part", path)

    def _cpu(signum: int, frame: Any) -> None:
        profiler = _state.pop("profiler", None)
        if profiler is None:
            profiler = cProfile.Profile()
            _state["profiler"] = profiler
            profiler.enable()
            return
        profiler.disable()
        base = os.path.join(_DIR, f"{os.getpid()}-cpu")
        profiler.dump_stats(base + ".prof")
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(60)
        stats.sort_stats("cumulative").print_stats(120)
        with open(base + ".txt", "w") as f:
            f.write(out.getvalue())

    signal.signal(signal.SIGUSR1, _before)
    signal.signal(signal.SIGUSR2, _compare)
    signal.signal(signal.SIGPROF, _cpu)
    print(f"profiling hooks loaded in {sys.argv[0]} (pid {os.getpid()})", file=sys.stderr)
