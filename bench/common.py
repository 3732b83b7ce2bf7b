"""What every benchmark in bench/ shares: statistics, the text table, the box plot and
the result files in bench/results/."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Homeserver, PostgresDatabase, postgres_dsn

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def series_table(series: dict[str, list[float]], width: int) -> list[str]:
    """One line per series: median, p95, min and max, after a header line."""
    lines = [f"{'series':<{width}}{'median':>10}{'p95':>10}{'min':>10}{'max':>10}"]
    for name, values in series.items():
        lines.append(
            f"{name:<{width}}{statistics.median(values):>10.1f}{percentile(values, 95):>10.1f}"
            f"{min(values):>10.1f}{max(values):>10.1f}"
        )
    return lines


def boxplot(
    series: dict[str, list[float]],
    path: Path,
    *,
    title: str,
    ylabel: str,
    width: float,
    log: bool = False,
) -> bool:
    """A box plot of every series; False (and a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return False
    names = list(series)
    fig, ax = plt.subplots(figsize=(width, 4.5))
    ax.boxplot([series[n] for n in names], showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def boxplot_panels(
    panels: list[tuple[str, dict[str, list[float]], bool]],
    path: Path,
    *,
    title: str,
    ylabel: str,
    width: float,
) -> bool:
    """Box plots side by side, one panel per ``(title, series, log scale)``; False (and
    a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.8), squeeze=False)
    for ax, (panel_title, series, log) in zip(axes[0], panels, strict=True):
        names = list(series)
        ax.boxplot([series[n] for n in names], showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=15, fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def save(name: str, result: dict[str, Any], text: str) -> Path:
    """Print the report and write ``<name>.json`` (samples) and ``<name>.txt`` to
    bench/results/; returns the path the plot goes to."""
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / name
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".txt").write_text(text + "\n")
    return stem.with_suffix(".png")


# ------------------------------------------------------------------ time limits


class Deadline:
    """A time limit for a whole run: :meth:`check` raises once it has passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return self._end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() < 0:
            raise TimeoutError(f"time limit of {self.seconds:.0f} s reached ({what})")


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, ``kill``) into SystemExit, so that ``finally`` blocks
    stop the Synapse a benchmark started and drop its database."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def progress(label: str, done: int, total: int, started: float, every: int) -> None:
    """Print ``label: done/total (rate/s, ~N s left)`` every ``every`` items and at the end."""
    if done % every and done != total:
        return
    rate = done / max(time.monotonic() - started, 1e-9)
    left = (total - done) / rate if rate else 0.0
    shown = f"{rate:.1f}" if rate >= 1 else f"{rate:.2g}"  # slow items: 0.05/s, not 0.0/s
    print(f"  {label}: {done}/{total} ({shown}/s, ~{left:.0f} s left)", flush=True)


def synapse_version() -> str:
    import synapse

    return str(synapse.__version__).split()[0]


def module_version() -> str:
    """The last commit that changed synapse_syncv3/, which a benchmark measures (the
    working tree is what Synapse imports), with ``+modified`` when the working tree's
    synapse_syncv3/ differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", "synapse_syncv3"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "synapse_syncv3"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+modified" if dirty else "")


# ------------------------------------------------------ Synapse's own metrics


def metric_counts(metrics_text: str, metric: str, label: str) -> dict[str, float]:
    """The values of counter ``metric`` (also when exported as ``<metric>_total``) from
    the Prometheus text of ``/_synapse/metrics``, summed by the value of ``label``."""
    counts: dict[str, float] = {}
    prefixes = (f"{metric}{{", f"{metric}_total{{")
    for line in metrics_text.splitlines():
        if not line.startswith(prefixes):
            continue
        labels, _, value = line.partition("{")[2].rpartition("} ")
        key = ""
        for item in labels.split('",'):
            name, _, raw = item.partition('="')
            if name.strip() == label:
                key = raw.rstrip('"')
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


def transaction_counts(metrics_text: str) -> dict[str, float]:
    """Database transactions run since start-up by ``desc``
    (``synapse_storage_transaction_time_count``; event fetches are ``do_fetch``), plus
    the SQL statements run, by verb, under ``"SQL <verb>"`` keys
    (``synapse_storage_query_time_count``)."""
    counts = metric_counts(metrics_text, "synapse_storage_transaction_time_count", "desc")
    queries = metric_counts(metrics_text, "synapse_storage_query_time_count", "verb")
    counts.update({f"SQL {verb}": n for verb, n in queries.items()})
    return counts


_SERVLET_METRICS = {
    "requests": "synapse_http_server_response_count",
    "cpu_user_s": "synapse_http_server_response_ru_utime_seconds",
    "cpu_sys_s": "synapse_http_server_response_ru_stime_seconds",
    "db_txns": "synapse_http_server_response_db_txn_count",
    "db_txn_s": "synapse_http_server_response_db_txn_duration_seconds",
    "db_sched_s": "synapse_http_server_response_db_sched_duration_seconds",
}


def servlet_usage(metrics_text: str) -> dict[str, dict[str, float]]:
    """What Synapse's finished requests used, per ``"<method> <servlet>[ <tag>]"``
    (its per-request metrics: the request's own main-thread CPU time, the database
    transactions it ran and their time, time spent waiting for a database connection).
    A long-poll counts when its response is sent, wait included but idle."""
    usage: dict[str, dict[str, float]] = {}
    for field, metric in _SERVLET_METRICS.items():
        prefixes = (f"{metric}{{", f"{metric}_total{{")
        for line in metrics_text.splitlines():
            if not line.startswith(prefixes):
                continue
            labels_text, _, value = line.partition("{")[2].rpartition("} ")
            labels = dict(item.partition('="')[::2] for item in labels_text.rstrip('"').split('",'))
            key = f"{labels.get('method', '')} {labels.get('servlet', '')}"
            if labels.get("tag"):
                key += f" {labels['tag']}"
            usage.setdefault(key, {})[field] = float(value)
    return usage


def usage_diff(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Per servlet, what the requests that finished between two :func:`servlet_usage`
    used (servlets with finished requests only)."""
    diff: dict[str, dict[str, float]] = {}
    for key, fields in after.items():
        old = before.get(key, {})
        delta = {field: value - old.get(field, 0.0) for field, value in fields.items()}
        if delta.get("requests", 0) > 0:
            diff[key] = delta
    return diff


def transaction_times(metrics_text: str) -> dict[str, float]:
    """Seconds spent in database transactions since start-up, by ``desc``
    (``synapse_storage_transaction_time_sum``)."""
    return metric_counts(metrics_text, "synapse_storage_transaction_time_sum", "desc")


def count_diff(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """The transactions run between two :func:`transaction_counts`, by desc (non-zero only)."""
    diff = {desc: round(after[desc] - before.get(desc, 0.0)) for desc in after}
    return {desc: n for desc, n in sorted(diff.items()) if n}


def usage_summary(samples: list[dict[str, dict[str, float]]]) -> list[str]:
    """One line per servlet seen in at least half of the samples: per request, the
    request's CPU time (user+sys, main thread), its database transactions, their time
    and the time it waited for a database connection."""
    totals: dict[str, dict[str, float]] = {}
    seen: dict[str, int] = {}
    for sample in samples:
        for key, fields in sample.items():
            seen[key] = seen.get(key, 0) + 1
            total = totals.setdefault(key, {})
            for field, value in fields.items():
                total[field] = total.get(field, 0.0) + value
    lines = []
    for key, total in totals.items():
        if seen[key] * 2 < len(samples) or not total.get("requests") or "Metrics" in key:
            continue
        if "cpu_user_s" not in total:  # not a servlet
            continue
        n = total["requests"]
        cpu = (total.get("cpu_user_s", 0.0) + total.get("cpu_sys_s", 0.0)) / n * 1000
        lines.append(
            f"{key}: CPU {cpu:.1f} ms, {total.get('db_txns', 0.0) / n:.1f} DB transactions "
            f"taking {total.get('db_txn_s', 0.0) / n * 1000:.1f} ms, waiting "
            f"{total.get('db_sched_s', 0.0) / n * 1000:.1f} ms for a connection (per request)"
        )
    return lines


# ------------------------------------------------- seeded databases, cached

CACHE = Path(__file__).resolve().parent / ".cache"
"""Seeded Synapse databases (SQLite files; for PostgreSQL the name of a template
database on the server) kept between runs, keyed by benchmark, seed version, database
and Synapse version. Delete the directory (and ``DROP DATABASE syncv3_benchcache_*``)
to reclaim the space; ``--reseed`` rebuilds one."""

_CACHE_DB_PREFIX = "syncv3_benchcache"


class SeededServer:
    """A running Synapse on a copy of a seeded database, and what the seed returned."""

    def __init__(
        self, hs: Homeserver, meta: dict[str, Any], postgres: PostgresDatabase | None
    ) -> None:
        self.hs = hs
        self.meta = meta
        self.postgres = postgres

    def stop(self) -> None:
        try:
            self.hs.stop()
        finally:
            if self.postgres is not None:
                self.postgres.drop()
            shutil.rmtree(self.hs.workdir, ignore_errors=True)


def _cache_db_name(key: str) -> str:
    return f"{_CACHE_DB_PREFIX}_{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _pg_admin(sql_text: str, *identifiers: str) -> list[tuple[Any, ...]]:
    """Run one statement on the PostgreSQL server (autocommit); identifiers fill ``{}``."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(postgres_dsn(), connect_timeout=3)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL(sql_text).format(*(sql.Identifier(i) for i in identifiers)))
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def _pg_exists(name: str) -> bool:
    import psycopg2

    conn = psycopg2.connect(postgres_dsn(), connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def _clone_postgres(template: str) -> PostgresDatabase:
    name = f"syncv3_bench_{secrets.token_hex(6)}"
    _pg_admin("CREATE DATABASE {} TEMPLATE {}", name, template)
    return PostgresDatabase(name, postgres_dsn())


def _prune(name: str, db: str, keep: Path) -> None:
    """Remove the caches of other seed or Synapse versions of the same benchmark."""
    if not CACHE.exists():
        return
    for other in CACHE.glob(f"{name}-*-{db}-*"):
        if other == keep:
            continue
        meta = other / "meta.json"
        if db == "postgres" and meta.exists():
            template = json.loads(meta.read_text()).get("template")
            if template:
                with contextlib.suppress(Exception):
                    _pg_admin("DROP DATABASE IF EXISTS {}", template)
        shutil.rmtree(other, ignore_errors=True)


def seeded_server(
    name: str,
    seed_version: int,
    db: str,
    seed: Callable[[Homeserver], dict[str, Any]],
    *,
    reseed: bool = False,
    module_config: Mapping[str, Any] | None = None,
) -> SeededServer:
    """Start a Synapse (with the module, presence off) on a copy of the database that
    ``seed(hs)`` filled, seeding it first if bench/.cache/ has no copy for this
    benchmark, seed version, database and Synapse version. ``seed`` returns what the
    benchmark needs later (tokens, room ids, since tokens: JSON), kept next to the
    copy. The copy the run works on is thrown away by :meth:`SeededServer.stop`; the
    cache itself is never served."""
    database = cast(Literal["sqlite", "postgres"], db)
    key = f"{name}-s{seed_version}-{db}-{synapse_version()}"
    cache_dir = CACHE / key
    meta_path = cache_dir / "meta.json"
    if reseed and cache_dir.exists():
        _prune(name, db, keep=Path("/nonexistent"))
    config = dict(module_config or {"session_ttl": "1y"})
    workdir = Path(tempfile.mkdtemp(prefix="syncv3-bench-"))
    cached = meta_path.exists()
    if cached and db == "postgres":
        cached = _pg_exists(json.loads(meta_path.read_text())["template"])
    postgres: PostgresDatabase | None = None
    if cached:
        print(f"using the seeded database cached in {cache_dir} (--reseed rebuilds it)")
        stored = json.loads(meta_path.read_text())
        for item in cache_dir.iterdir():
            if item.name != "meta.json":
                shutil.copy2(item, workdir / item.name)
        if db == "postgres":
            postgres = _clone_postgres(stored["template"])
        hs = Homeserver(
            workdir,
            database=database,
            postgres=postgres,
            presence=False,
            name="bench",
            module_config=config,
        )
        server = SeededServer(hs, stored["meta"], postgres)
        try:
            hs.start()
        except BaseException:
            server.stop()
            raise
        print(f"Synapse ready in {hs.ready_seconds:.1f} s ({db})")
        return server

    _prune(name, db, keep=cache_dir)
    if db == "postgres":
        postgres = PostgresDatabase.create(prefix="syncv3_bench")
    hs = Homeserver(
        workdir,
        database=database,
        postgres=postgres,
        presence=False,
        name="bench",
        module_config=config,
    )
    try:
        hs.start()
        print(f"Synapse ready in {hs.ready_seconds:.1f} s ({db}); seeding (cached for later runs)")
        started = time.monotonic()
        meta = seed(hs)
        hs.wait_for_background_updates(timeout=120)
        hs.stop()
        print(f"seeded in {time.monotonic() - started:.0f} s")
        staging = CACHE / f".{key}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(hs.signing_key_path, staging / hs.signing_key_path.name)
        record: dict[str, Any] = {"meta": meta, "seeded_s": round(time.monotonic() - started)}
        if postgres is not None:
            template = _cache_db_name(key)
            _pg_admin("DROP DATABASE IF EXISTS {}", template)
            _pg_admin("CREATE DATABASE {} TEMPLATE {}", template, postgres.name)
            record["template"] = template
        else:
            for item in workdir.glob("homeserver.db*"):
                shutil.copy2(item, staging / item.name)
        (staging / "meta.json").write_text(json.dumps(record, indent=1))
        shutil.rmtree(cache_dir, ignore_errors=True)
        staging.rename(cache_dir)
        hs.start()
        print(f"Synapse restarted on the seeded database in {hs.ready_seconds:.1f} s")
    except BaseException:
        hs.stop()
        if postgres is not None:
            postgres.drop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return SeededServer(hs, meta, postgres)
