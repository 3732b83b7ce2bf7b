"""Reading Synapse's logs for problems: ERROR/CRITICAL records, tracebacks and logcontext
complaints, the check every test run makes on every server's log."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SYNAPSE_RETRIES", "log_problems_in", "log_problems_of"]

#: Lines that mean something went wrong inside Synapse or the module.
PROBLEM_RE = re.compile(r" - (ERROR|CRITICAL) - |^Traceback|logcontext", re.MULTILINE)

#: The start of a log record (a traceback's lines follow their record without it).
RECORD_RE = re.compile(r"^\d{4}-\d\d-\d\d ")

#: ERROR records Synapse writes by design before it retries, with their tracebacks:
#: not problems. Its background update filling ``sliding_sync_joined_rooms`` on a new
#: database raises when a room's state moved while it ran, and tries again.
SYNAPSE_RETRIES = ("Current state was updated after we gathered it",)


def log_problems_in(
    text: str, expected: Sequence[str] = (), *, until: str | None = None
) -> list[str]:
    """The problem lines of a Synapse log's ``text``, without ``expected`` ones and
    Synapse's own retries (with their tracebacks); ``until`` ends the reading at the
    first line holding it (e.g. a shutdown, whose noise is Synapse's business)."""
    problems = []
    skipping = False
    for line in text.splitlines():
        if until is not None and until in line:
            break
        if RECORD_RE.match(line):
            skipping = any(retry in line for retry in SYNAPSE_RETRIES)
        if skipping:
            continue
        if PROBLEM_RE.search(line) and not any(e in line for e in expected):
            problems.append(line[:300])
    return problems


def log_problems_of(
    path: Path, expected: Sequence[str] = (), *, until: str | None = None
) -> list[str]:
    """:func:`log_problems_in` of the log at ``path`` (none when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return log_problems_in(text, expected, until=until)
