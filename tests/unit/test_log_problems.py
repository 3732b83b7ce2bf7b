"""The check every test run makes on Synapse's logs (harness/logs.py)."""

from __future__ import annotations

from harness.logs import log_problems_in

RETRY = (
    (
        "2026-12-03 13:30:59,288 - synapse.storage.background_updates - 435 - ERROR - "
        "background_updates-0 - Error doing update: Current state was updated after we "
        "gathered it to update `sliding_sync_joined_rooms` in the background update. "
        "Raising exception so we can just try again.\n"
    )
    + """\
Traceback (most recent call last):
  File "synapse/storage/background_updates.py", line 430, in run_background_updates
synapse.storage.databases.main.events_bg_updates.SlidingSyncJoinedRoomsRetry: ...
"""
)
OURS = """\
2026-12-03 13:31:00,001 - synapse.http.server - 130 - ERROR - POST-1 - Failed handle request
Traceback (most recent call last):
  File "synapse_syncv3/handler.py", line 1, in handle
ValueError: boom
"""
QUIET = "2026-12-03 13:30:58,000 - synapse.app - 1 - INFO - main - Synapse now listening\n"


def test_synapse_s_own_retry_and_its_traceback_are_no_problem() -> None:
    assert log_problems_in(QUIET + RETRY + QUIET) == []


def test_a_problem_after_a_retry_is_still_found_with_its_traceback() -> None:
    problems = log_problems_in(RETRY + OURS)
    assert len(problems) == 2
    assert "Failed handle request" in problems[0] and problems[1].startswith("Traceback")


def test_expected_problems_and_the_end_of_the_reading() -> None:
    assert len(log_problems_in(OURS, expected=["Failed handle request"])) == 1  # traceback
    assert log_problems_in(QUIET + OURS, until="now listening") == []
    assert log_problems_in("a logcontext complaint\n") == ["a logcontext complaint"]
