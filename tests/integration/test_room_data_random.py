"""room_data against Synapse's v2 sync on seeded random histories (SPEC §7.5, §9).

Each history (tests/integration/histories.py) is one room with the syncing user, its
creator and two or three others, 14 to 20 random actions, and checkpoints at which both
protocols take since tokens. Compared with v2 (room_oracle.py: SPEC's two deliberate
differences, and the v2 behaviours SPEC does not share, applied to v2's answer):

* the first delivery at the start (whatever the user's membership then is),
* the chained incremental answer at each checkpoint and at the end (the first one
  with ``full_state`` in about a third of the histories),
* a first delivery on a new session in the middle and at the end,
* the answers for (checkpoint, end] of every older checkpoint, replayed on both.

The seed list is fixed: seeds 1 to 30, or 1 to ``SYNCV3_HISTORIES`` for longer runs;
``SYNCV3_HISTORY_SEEDS=4,17`` runs chosen seeds. A failure prints the seed, the
actions, the requests and both answers (of the first few answers that differ; all of
them go to ``$SYNCV3_HISTORY_REPORT.<database>`` when that is set).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.integration.helpers import Server
from tests.integration.histories import History
from tests.integration.room_oracle import Answer, Probe

#: Answers shown in full when the comparison fails (all are counted).
SHOWN = 6


def seeds() -> list[int]:
    chosen = os.environ.get("SYNCV3_HISTORY_SEEDS")
    if chosen:
        return [int(seed) for seed in chosen.split(",") if seed.strip()]
    return list(range(1, int(os.environ.get("SYNCV3_HISTORIES", "30")) + 1))


@dataclass
class Outcome:
    history: History
    probe: Probe
    seconds: float
    answers: list[Answer] = field(default_factory=list)


def run_history(server: Server, seed: int) -> Outcome:
    started = time.monotonic()
    history = History(server, seed)
    me, alice = history.me.user, history.alice.user
    probe = Probe(
        server,
        me,
        alice,
        [history.room_id],
        history.params,
        tolerate_not_served=True,
        cache_facts=True,
        check_v2=False,  # the hand-built tests check it; here it is done until served
    )

    def ask(question: Callable[[str], Answer], label: str) -> None:
        history.log.append(f"-- {label}")
        question(label)

    ask(probe.start, "checkpoint at the start")
    for index in range(history.length):
        if index in history.checkpoints:
            full = history.full_state and index == history.checkpoints[0]
            ask(
                functools.partial(probe.step, full_state=full),
                f"checkpoint before action {index}" + (" (full_state)" if full else ""),
            )
        if index == history.first_delivery_at:
            ask(probe.first_delivery, f"first delivery before action {index}")
        history.act()
        probe.moved()
    ask(probe.step, "checkpoint at the end")
    ask(probe.first_delivery, "first delivery at the end")
    # The last step compared (previous checkpoint, end]; replay every older one.
    for checkpoint in probe.checkpoints[:-2]:
        probe.replay(checkpoint)
    return Outcome(history, probe, time.monotonic() - started, probe.answers)


# A history takes 3–6 s on 2 busy cores; pytest's default of 300 s is for one test.
@pytest.mark.timeout(max(300, 20 * len(seeds())))
def test_random_histories_against_v2(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    outcomes = [run_history(server, seed) for seed in seeds()]
    elapsed = time.monotonic() - started

    answers = [a for o in outcomes for a in o.answers]
    compared = [a for a in answers if a.ours is not None]
    differing = [(o, a) for o in outcomes for a in o.answers if a.differences]
    oracle = [(o, a) for o in outcomes for a in o.answers if a.oracle_problems]
    not_served = next((o.probe.not_served for o in outcomes if o.probe.not_served), None)
    with capsys.disabled():
        print(
            f"\n[{server.engine}] room_data vs v2: {len(outcomes)} histories, "
            f"{len(compared)} answers compared of {len(answers)} asked "
            f"({sum(a.compared for a in compared)} room entries), "
            f"{len(differing)} with differences; v2 self-check: "
            f"{sum(len(a.oracle_problems) for a in answers)} problems, "
            f"{sum(a.v2_end_prev_batch for a in answers)} v2 prev_batch at the timeline end; "
            f"{elapsed:.1f} s ({max(o.seconds for o in outcomes):.1f} s slowest history)"
        )

    def show(pairs: list[tuple[Outcome, Answer]], shown: int = SHOWN) -> str:
        return "\n\n".join(f"{o.history.describe()}\n  {a.report()}" for o, a in pairs[:shown]) + (
            f"\n\n... and {len(pairs) - shown} more" if len(pairs) > shown else ""
        )

    report = os.environ.get("SYNCV3_HISTORY_REPORT")
    if report:
        with open(f"{report}.{server.engine}", "w") as out:
            out.write(show([*oracle, *differing], shown=len(oracle) + len(differing)))

    # v2's own answers must pass the prev_batch continuation check (else the oracle or
    # the check is wrong, and nothing it says can be trusted).
    assert not oracle, "v2's own answers fail the oracle's checks:\n" + show(oracle)
    if not_served is not None:
        pytest.fail(
            f"{not_served} — {len(answers)} v2 answers of {len(outcomes)} histories were "
            "checked; none could be compared"
        )
    assert not differing, (
        f"room_data differs from v2 in {len(differing)} of {len(compared)} answers:\n"
        + show(differing)
    )
