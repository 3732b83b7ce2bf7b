"""Helpers shared by the integration tests: a server handle, a sync v3 client, and a
way to act while a long-poll is in flight."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from harness import Homeserver, MatrixUser, PostgresDatabase
from harness.client import Response
from harness.logs import log_problems_of
from synapse_syncv3.core.tokens import SinceToken
from synapse_syncv3.streams import token_codec

V3_PATH = "/_matrix/client/v3/sync"
MODULE_PATH = "/_synapse/client/syncv3/sync"
TOKEN_RE = re.compile(r"^V3_[A-Za-z0-9._~-]+$")
UNKNOWN_SESSION_BODY = {"errcode": "M_UNKNOWN_SYNC_SESSION", "error": "Session unknown or expired"}


@attrs.define
class Server:
    hs: Homeserver
    engine: str
    postgres: PostgresDatabase | None
    #: Substrings of log problems a test provoked on purpose.
    expected_log_problems: list[str] = attrs.field(factory=list)

    def log_problems(self) -> list[str]:
        """ERROR/CRITICAL lines, tracebacks and logcontext complaints in the log."""
        return log_problems_of(self.hs.log_path, self.expected_log_problems)

    @property
    def base_url(self) -> str:
        return self.hs.base_url

    def user(self, displayname: str | None = None, admin: bool = False) -> MatrixUser:
        account = self.hs.register(admin=admin, displayname=displayname)
        return MatrixUser(self.hs.base_url, account)

    def room_with(self, count: int = 2) -> tuple[list[MatrixUser], str]:
        """``count`` new users who have all joined a new room (created by the first)."""
        users = [self.user() for _ in range(count)]
        return users, shared_room(users[0], *users[1:])

    def login(self, user: MatrixUser, device_id: str | None = None, **kwargs: Any) -> MatrixUser:
        """Another device (or the same device id again) of ``user``."""
        account = self.hs.login(user.localpart, device_id=device_id, **kwargs)
        return MatrixUser(self.hs.base_url, account)

    def wait_for_background_updates(self, timeout: float = 30) -> None:
        """Wait until Synapse has no pending background database updates."""
        deadline = time.monotonic() + timeout
        while self.query("SELECT count(*) FROM background_updates")[0][0]:
            assert time.monotonic() < deadline, "Synapse's background updates did not finish"
            time.sleep(0.05)

    def restart(self, kill: bool = False) -> None:
        """Stop Synapse (SIGTERM, or SIGKILL with ``kill``) and start it again.

        Synapse's own background updates of a fresh database are waited for first: a
        restart in the middle of one (the user directory population) makes Synapse log
        errors about its own temporary tables on the next start, which is Synapse's
        business, not what the tests examine.
        """
        self.wait_for_background_updates()
        self.hs.restart(kill=kill)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query against the homeserver's database."""
        with self._cursor() as cur:
            cur.execute(sql)
            return [tuple(row) for row in cur.fetchall()]

    def execute(self, sql: str) -> None:
        """Run a statement that changes the homeserver's database (committed)."""
        with self._cursor() as cur:
            cur.execute(sql)

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor on the homeserver's database; what it did is committed at the end."""
        if self.postgres is not None:
            with self.postgres.connect() as conn, conn.cursor() as cur:  # autocommit
                yield cur
            return
        conn = sqlite3.connect(self.hs.workdir / "homeserver.db")
        try:
            yield conn.cursor()
            conn.commit()
        finally:
            conn.close()

    def metric(self, name: str, missing: float | None = None, **labels: str) -> float:
        """Sum of a metric's samples matching ``labels`` on /_synapse/metrics;
        ``missing`` is the value when there is none (else the metric must exist)."""
        text = self.hs.metrics()
        total = 0.0
        found = False
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            sample = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(sample.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
                found = True
        if not found:
            if missing is not None:
                return missing
            raise AssertionError(f"metric {name} {labels} not exported")
        return total


class V3:
    """A sync v3 client for one user: requests, and a record of every token seen."""

    def __init__(self, user: MatrixUser, path: str = V3_PATH) -> None:
        self.user = user
        self.path = path

    def post(
        self,
        body: object = None,
        since: str | None = None,
        timeout: int | None = None,
        path: str | None = None,
        **query: Any,
    ) -> Response:
        if isinstance(body, bytes):
            args = {**query, "since": since, "timeout": timeout}
            response = self.user.client.request(
                "POST", path or self.path, raw_body=body, query=args
            )
        else:
            response = self.user.sync_v3(
                {} if body is None else body,
                since=since,
                timeout=timeout,
                path=path or self.path,
                **query,
            )
        if response.status == 200:
            token = response.json().get("next")
            assert isinstance(token, str) and TOKEN_RE.match(token), token
            assert len(token) < 512
        assert response.status < 500, f"server error: {response.status} {response.body!r}"
        return response

    def ok(self, body: object = None, since: str | None = None, **kwargs: Any) -> dict[str, Any]:
        response = self.post(body, since=since, **kwargs)
        assert response.status == 200, f"{response.status}: {response.body!r}"
        result: dict[str, Any] = response.json()
        return result

    def error(self, body: object = None, since: str | None = None, **kwargs: Any) -> Response:
        response = self.post(body, since=since, **kwargs)
        assert 400 <= response.status < 500, f"{response.status}: {response.body!r}"
        return response


@contextmanager
def after(delay: float, action: Callable[[], object]) -> Iterator[None]:
    """Run ``action`` in a thread ``delay`` seconds from now (while the body of the
    ``with`` block long-polls); re-raise its failure at the end of the block."""
    failure: list[BaseException] = []

    def run() -> None:
        time.sleep(delay)
        try:
            action()
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=30)
    if failure:
        raise failure[0]


def position_of(token: str, stream: str) -> str:
    """The position of ``stream`` in ``token``."""
    return token_codec().decode(token).positions[stream]


def with_position(token: str, stream: str, position: str) -> str:
    """``token`` with the position of ``stream`` replaced by ``position`` (any string in
    the token alphabet: positions ahead of the server, or malformed ones)."""
    codec = token_codec()
    decoded = codec.decode(token)
    positions = {**decoded.positions, stream: position}
    return codec.encode(SinceToken(decoded.session_id, decoded.version, positions))


def until(check: Callable[[], bool], what: str, limit: float = 10) -> None:
    """Wait until ``check()`` holds; fail with ``what`` after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def shared_room(creator: MatrixUser, *members: MatrixUser) -> str:
    """A new room of ``creator`` that ``members`` have joined."""
    room = creator.create_room(invite=[member.user_id for member in members])
    for member in members:
        member.join(room)
    return room


def retype(user: MatrixUser, room_id: str) -> None:
    """Start typing, making sure an event is emitted even if already typing."""
    user.set_typing(room_id, False)
    user.set_typing(room_id, True)
