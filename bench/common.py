"""What every benchmark in bench/ shares: statistics, the text table, the box plot and
the result files in bench/results/."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

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


def save(name: str, result: dict[str, Any], text: str) -> Path:
    """Print the report and write ``<name>.json`` (samples) and ``<name>.txt`` to
    bench/results/; returns the path the plot goes to."""
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / name
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".txt").write_text(text + "\n")
    return stem.with_suffix(".png")
