"""Chaos on Synapse's workers: to-device delivery under kills and abandoned requests.

Starts a worker deployment (PostgreSQL, Redis, the main process and two generic
workers with the module; ``worker2`` writes the to_device stream), gives one device
three sync v3 sessions spread over both workers, sends ``--messages`` numbered
to-device messages to it over ``--send-seconds`` while about a quarter of the sync
requests are abandoned by the client and the workers and the main process are
SIGKILLed and restarted in turn (every ``--kill-every`` seconds), then drains every
session. The run and its checks are harness/chaos.py's (also run, shorter, by
tests/integration/test_workers_chaos.py): 0 lost, no duplicate after a session
confirmed a message, no 5xx, an empty inbox at the end, no module error in any log.

    bench/run chaos_workers.py                       # 3,000 messages over 240 s, 12 kills
    bench/run chaos_workers.py --messages 6000 --send-seconds 480 --seed 2
    bench/run chaos_workers.py --time-limit 900      # the whole run, start to end (default)

Progress every 10 s and at each kill. Writes bench/results/chaos_workers.json and
.txt. Exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Deadline, exit_on_sigterm, module_version, save, synapse_version
from harness import WorkerDeployment, redis_unavailable_reason, worker_support_missing_reason
from harness.chaos import ChaosSettings, log_problems, run_chaos, transaction_retries


def run(settings: ChaosSettings, time_limit: float) -> dict[str, Any]:
    for reason in (worker_support_missing_reason(), redis_unavailable_reason()):
        if reason is not None:
            sys.exit(reason)
    deadline = Deadline(time_limit)
    workdir = Path(tempfile.mkdtemp(prefix="syncv3-chaos-"))
    deployment = WorkerDeployment.create(workdir, stream_writers={"to_device": ["worker2"]})
    try:
        deployment.start()
        print(f"deployment {deployment.server_name} ready (main + 2 workers)", flush=True)
        budget = deadline.left() - 60  # keep a minute for the drain and the checks
        settings.drain_seconds = min(
            settings.drain_seconds, max(30.0, budget - settings.send_seconds)
        )
        if settings.send_seconds > budget:
            sys.exit(f"--send-seconds {settings.send_seconds:.0f} does not fit in --time-limit")
        result = run_chaos(deployment, settings, progress=lambda line: print(line, flush=True))
    finally:
        deployment.close()
    ours: list[str] = []
    theirs: list[str] = []
    retries: Counter[str] = Counter()
    for path in deployment.log_paths():
        mine, others = log_problems(path)
        ours += mine
        theirs += others
        retries += transaction_retries(path)
    data = result.as_dict()
    data.update(
        {
            "synapse": synapse_version(),
            "module": module_version(),
            "command": " ".join(["bench/run", "chaos_workers.py", *sys.argv[1:]]),
            "summary": result.summary(),
            "module_log_problems": ours[:50],
            "synapse_log_problems": len(theirs),
            "synapse_log_examples": theirs[:20],
            "transaction_retries": dict(retries.most_common()),
        }
    )
    data["ok"] = data["ok"] and not ours
    shutil.rmtree(workdir, ignore_errors=True)
    return data


def report(data: dict[str, Any]) -> str:
    lines = [
        f"chaos on workers (matrix-synapse {data['synapse']}, module {data['module']}):"
        f" {data['command']}",
        data["summary"],
        f"run {data['elapsed_s']} s (sending {data['send_s']} s, drain {data['drain_s']} s)",
        "kills: "
        + ", ".join(
            f"{k['process']} at {k['at_s']} s (down {k['down_s']} s, up in {k['restart_s']} s)"
            for k in data["kills"]
        ),
        f"send statuses: {data['send_statuses']}",
    ]
    for s in data["sessions"]:
        lines.append(
            f"  {s['session']} (limit {s['limit']}): {s['requests']} requests,"
            f" {s['abandoned']} abandoned, {s['forgotten']} answers forgotten,"
            f" {s['connection_errors']} connection errors, answered by {s['answered_by']},"
            f" statuses {s['statuses']}; {s['delivered']} delivered, {s['received_distinct']}"
            f" distinct, lost {s['lost']}, duplicates before/after confirmation"
            f" {s['duplicates_before']}/{s['duplicates_after']}, out of order {s['out_of_order']}"
        )
        lines += [f"    {e}" for e in s["after_examples"] + s["failures"]]
    lines.append(
        f"pending deletions left: {data['pending_deletions_left']}; module log problems:"
        f" {len(data['module_log_problems'])}; Synapse's own log problems:"
        f" {data['synapse_log_problems']}"
    )
    lines.append(f"transactions retried by Synapse: {data['transaction_retries'] or 'none'}")
    lines += data["failures"] + data["module_log_problems"][:10]
    lines += [f"  (Synapse) {line}" for line in data["synapse_log_examples"][:5]]
    lines.append("OK" if data["ok"] else "FAILED")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--send-seconds", type=float, default=240)
    parser.add_argument("--kill-every", type=float, default=20, help="seconds between kills")
    parser.add_argument("--abort-share", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--time-limit", type=float, default=900, help="seconds for the whole run (default 900)"
    )
    parser.add_argument("--output", default="chaos_workers", help="result file name")
    args = parser.parse_args()
    exit_on_sigterm()
    settings = ChaosSettings(
        messages=args.messages,
        send_seconds=args.send_seconds,
        kill_every=args.kill_every,
        abort_share=args.abort_share,
        seed=args.seed,
    )
    data = run(settings, args.time_limit)
    save(args.output, data, report(data))
    if not data["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
