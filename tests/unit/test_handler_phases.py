"""The phases of a request in handler.py (check → protect → first computation →
commit → wait → respond and persist state), with fakes of the session manager, of
Synapse and of the streams. Every fake writes what it is asked into one shared log,
so that a test sees what a request wrote, and in which order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import pytest
from twisted.internet.defer import CancelledError

from synapse_syncv3.config import MaxLimits, SyncV3Config
from synapse_syncv3.core.params import Params
from synapse_syncv3.core.request import QueryParams, RequestBody
from synapse_syncv3.core.state import SessionState
from synapse_syncv3.core.tokens import SinceToken
from synapse_syncv3.errors import INVALID_PARAM, SyncV3Error, invalid_param
from synapse_syncv3.handler import InjectedFault, SyncRequest, SyncV3Handler
from synapse_syncv3.sessions import SessionRef
from synapse_syncv3.store import LoadedSession, ToDeviceMark
from synapse_syncv3.streams import StreamSet, token_codec
from synapse_syncv3.streams.base import (
    LoadedPosition,
    ParsedStreamParams,
    StreamContext,
    StreamRequest,
    StreamResult,
)

USER = "@alice:test"
DEVICE = "ALICEPHONE"
SID = "abcdefghijklmnop"
NEW_SID = "newsessionid0000"
MARK = ToDeviceMark(wants_to_device=False, confirmed=None)

Log = list[tuple[Any, ...]]


class FakeStream:
    """A stream over one field of the fake tokens (a dict: stream name -> int). It has
    data when its field moved past its position; a first delivery is data."""

    code: ClassVar[str]

    def __init__(self, name: str, code: str, log: Log) -> None:
        self.name = name  # type: ignore[misc]
        self.code = code  # type: ignore[misc]
        self.log = log
        self.check_error: SyncV3Error | None = None
        self.compute_error: Exception | None = None
        #: Rooms the stream records in the session state whenever it has data.
        self.rooms: Callable[[int], list[str]] | None = None

    def parse_params(self, obj: dict[str, Any]) -> ParsedStreamParams:
        return ParsedStreamParams(stored={}, per_request={"p": obj["p"]} if "p" in obj else {})

    def resets(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        return False

    def fresh_rooms(self, old: dict[str, Any], new: dict[str, Any]) -> frozenset[str]:
        return frozenset()

    def answer_at_once(self, per_request: dict[str, Any]) -> bool:
        return "p" in per_request

    def negotiate(self, params: dict[str, Any], limits: MaxLimits) -> dict[str, Any]:
        return {"echo": self.name}

    def valid_position(self, raw: str) -> bool:
        return raw.isdigit()

    async def load_position(self, ctx: StreamContext, raw: str) -> LoadedPosition:
        return LoadedPosition(int(raw), wait_for={self.name: int(raw)})

    async def check(self, ctx: StreamContext, request: StreamRequest) -> None:
        self.log.append(("check", self.name))
        if self.check_error is not None:
            raise self.check_error

    def moved(self, ctx: StreamContext, before: Any, after: Any) -> bool:
        return bool(before[self.name] != after[self.name])

    async def compute(self, ctx: StreamContext, request: StreamRequest) -> StreamResult:
        now = ctx.now[self.name]
        self.log.append(("compute", self.name, now))
        if self.compute_error is not None:
            raise self.compute_error
        position = request.position
        has_data = position is None or now > position
        if has_data and self.rooms is not None:
            ctx.state.record_rooms(self.name, self.rooms(now))
        return StreamResult(
            payload={"at": now} if has_data else {},
            has_data=has_data,
            position=str(max(now, position or 0)),
        )

    def computed(self) -> list[int]:
        return [entry[2] for entry in self.log if entry[:2] == ("compute", self.name)]


class FakeSynapse:
    """``SynapseCompat`` as the handler uses it. Tokens are dicts of positions; a
    wait runs the scripted wakes, each moving some positions, then times out."""

    def __init__(self, log: Log, positions: dict[str, int]) -> None:
        self.log = log
        self.positions = dict(positions)
        self.wakes: list[dict[str, int]] = []
        self.cancel_wait = False
        self.caught_up = True
        self.stream_open = False

    async def presence_context(
        self, requester: Any, set_presence: str
    ) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def on_user_syncing(self, user_id: str) -> None:
        return None

    def current_token(self) -> dict[str, int]:
        return dict(self.positions)

    def wake_token(self, before: dict[str, int], woken: dict[str, int]) -> dict[str, int]:
        self.log.append(("wake_token",))
        if all(woken.get(key, 0) >= value for key, value in before.items()):
            return woken
        return self.current_token()

    async def wait_for_stream_token(self, token: Any) -> bool:
        self.log.append(("wait_for_stream_token", token))
        return self.caught_up

    def wait_clock_ms(self) -> int:
        return 1_000_000

    def is_disconnected(self, connection: Any) -> bool:
        return bool(connection is not None and connection.disconnected)

    def listen(self, user_id: str, token: Any, deadline_ms: int) -> FakeListening | None:
        """Each wait takes the next scripted wake (its moves applied), then times out;
        the user's first wait finds no notifier stream."""
        if not self.stream_open:
            return None
        self.log.append(("wait", deadline_ms - self.wait_clock_ms(), token))
        if self.cancel_wait:
            return FakeListening(self.log, error=CancelledError())
        if not self.wakes:
            return FakeListening(self.log, value=None)
        self.positions.update(self.wakes.pop(0))
        return FakeListening(self.log, value=dict(self.positions))

    async def open_user_stream(self, user_id: str, token: Any) -> None:
        self.log.append(("open_user_stream", token))
        self.stream_open = True


class FakeListening:
    """``compat.Listening``: an awaitable context manager."""

    def __init__(self, log: Log, value: Any = None, error: BaseException | None = None) -> None:
        self.log = log
        self.done = _Done(value, error)

    def __await__(self) -> Any:
        return self.done.__await__()

    def __enter__(self) -> FakeListening:
        return self

    def __exit__(self, *exc: object) -> None:
        self.log.append(("listening_done",))


class _Done:
    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value, self.error = value, error

    def __await__(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value
        yield  # a generator: awaitable


class FakeSessions:
    """``SessionManager`` as the handler uses it."""

    def __init__(self, log: Log, params: Params) -> None:
        self.log = log
        self.params = params
        self.protect_mark: ToDeviceMark | None = MARK
        self.persisted: list[SessionState] = []
        #: The params version ``record`` reports.
        self.recorded_version = 2

    async def load(self, since: SinceToken, user_id: str, device_id: str) -> LoadedSession:
        self.log.append(("load", since.session_id))
        return LoadedSession(params_json=self.params.to_json(), wants_to_device=False)

    def state_of(self, since: SinceToken | None, loaded: LoadedSession | None) -> SessionState:
        self.log.append(("state_of",))
        return SessionState(0 if since is None else since.state)

    async def start(self, user_id: str, device_id: str, params: Params) -> SessionRef:
        self.log.append(("start",))
        return SessionRef(NEW_SID, 1, 0)

    async def admit(self, session: SessionRef, user_id: str, device_id: str) -> None:
        self.log.append(("admit", session.session_id))

    async def protect(
        self, since: SinceToken, user_id: str, device_id: str, old: Params, new: Params
    ) -> ToDeviceMark | None:
        self.log.append(("protect",))
        return self.protect_mark

    async def unprotect(self, since: SinceToken, mark: ToDeviceMark) -> None:
        self.log.append(("unprotect", mark))

    async def persist_state(self, session: SessionRef, state: SessionState) -> SessionRef:
        self.log.append(("persist_state",))
        self.persisted.append(state)
        return attrs.evolve(session, state=session.state + 1)

    async def record(
        self,
        since: SinceToken,
        loaded: LoadedSession,
        user_id: str,
        device_id: str,
        old: Params,
        new: Params,
    ) -> SessionRef:
        self.log.append(("record",))
        return SessionRef(since.session_id, self.recorded_version, since.state)

    async def discard(self, session_id: str) -> None:
        self.log.append(("discard", session_id))

    async def touch(self, session_id: str) -> None:
        self.log.append(("touch", session_id))

    def mark_used(self, session_id: str) -> None:
        self.log.append(("touch", session_id))


#: Session manager calls that write something.
WRITES = {"start", "admit", "protect", "unprotect", "persist_state", "record", "discard", "touch"}


class Setup:
    """A handler over two fake streams, ``alpha`` and ``beta``, both stored in the
    session's params."""

    def __init__(self) -> None:
        self.log: Log = []
        self.alpha = FakeStream("alpha", "x", self.log)
        self.beta = FakeStream("beta", "y", self.log)
        self.streams = StreamSet([self.alpha, self.beta])
        self.codec = token_codec(self.streams)
        self.synapse = FakeSynapse(self.log, {"alpha": 5, "beta": 7, "noise": 0})
        self.sessions = FakeSessions(self.log, Params({"alpha": {}, "beta": {}}))
        self.disconnected = False
        self.handler = SyncV3Handler(
            SyncV3Config(),
            self.synapse,  # type: ignore[arg-type]
            self.sessions,  # type: ignore[arg-type]
            self.streams,
            self.codec,
            self._ready,
        )

    async def _ready(self) -> None:
        return None

    def since(self, state: int = 0, **positions: str) -> SinceToken:
        return SinceToken(SID, 1, positions or {"alpha": "5", "beta": "7"}, state)

    def handle(
        self,
        since: SinceToken | None,
        body: dict[str, Any] | None = None,
        per_request: dict[str, Any] | None = None,
        timeout_ms: int = 30_000,
        fault: str | None = None,
    ) -> dict[str, Any]:
        req = SyncRequest(
            requester=object(),
            user_id=USER,
            device_id=DEVICE,
            query=QueryParams(since=since, timeout_ms=timeout_ms, set_presence="online"),
            body=RequestBody(streams=body or {}, per_request=per_request or {}),
            fault=fault,
            connection=self,  # self.disconnected says whether its client went away
        )
        return asyncio.run(self.handler.handle(req))  # type: ignore[no-any-return]

    def names(self) -> list[str]:
        return [entry[0] for entry in self.log]

    def writes(self) -> list[str]:
        return [name for name in self.names() if name in WRITES]

    def decode(self, response: dict[str, Any]) -> SinceToken:
        return self.codec.decode(response["next"])


# -- a fault in the first computation -------------------------------------------------


def test_fault_in_the_first_computation_undoes_the_protection() -> None:
    setup = Setup()
    setup.beta.compute_error = RuntimeError("database went away")
    with pytest.raises(RuntimeError):
        setup.handle(setup.since())
    assert setup.names() == [
        "load",
        "state_of",
        "wait_for_stream_token",
        "wait_for_stream_token",
        "check",
        "check",
        "protect",
        "compute",
        "compute",
        "unprotect",
    ]
    assert ("unprotect", MARK) in setup.log


def test_fault_without_protection_writes_nothing() -> None:
    setup = Setup()
    setup.sessions.protect_mark = None  # the request does not (re)start to_device
    setup.alpha.compute_error = RuntimeError("bug")
    with pytest.raises(RuntimeError):
        setup.handle(setup.since())
    assert setup.writes() == ["protect"]


def test_fault_of_a_new_session_discards_it() -> None:
    setup = Setup()
    setup.alpha.compute_error = RuntimeError("bug")
    with pytest.raises(RuntimeError):
        setup.handle(None, body={"alpha": {}})
    assert setup.writes() == ["start", "discard"]
    assert ("discard", NEW_SID) in setup.log


def test_injected_fault() -> None:
    setup = Setup()
    with pytest.raises(InjectedFault):
        setup.handle(setup.since(), fault="beta")
    assert setup.writes() == ["protect", "unprotect"]
    assert setup.beta.computed() == []


# -- a 400 from a stream's check --------------------------------------------------------


@pytest.mark.parametrize("new_session", [False, True])
def test_check_error_writes_nothing(new_session: bool) -> None:
    setup = Setup()
    setup.beta.check_error = invalid_param("beta.p: not a cursor")
    since = None if new_session else setup.since()
    with pytest.raises(SyncV3Error) as info:
        setup.handle(since, body={"alpha": {}, "beta": {}})
    assert (info.value.code, info.value.errcode) == (400, INVALID_PARAM)
    assert setup.writes() == []
    assert setup.alpha.computed() == setup.beta.computed() == []


# -- timeout reply ----------------------------------------------------------------------


def test_timeout_reply_is_exactly_next_with_the_positions_of_since() -> None:
    setup = Setup()
    setup.sessions.recorded_version = 3  # the body changed the params
    setup.synapse.wakes = [{"noise": 1}, {"noise": 2}]
    since = setup.since(state=4)
    response = setup.handle(since, timeout_ms=1234)
    assert list(response) == ["next"]
    assert setup.decode(response) == SinceToken(SID, 3, since.positions, 4)
    assert setup.writes() == ["protect", "record"]
    # The commit came before the wait, which started from the first computation's now.
    assert setup.names().index("record") < setup.names().index("wait")
    assert ("wait", 1234, {"alpha": 5, "beta": 7, "noise": 0}) in setup.log
    # The user had no notifier stream: opened once, before the first wait; each of
    # the three waits (two wakes, then the deadline) was left.
    assert setup.names().count("open_user_stream") == 1
    assert setup.names().index("open_user_stream") < setup.names().index("wait")
    assert setup.names().count("wait") == setup.names().count("listening_done") == 3


def test_unchanged_timeout_reply_gives_since_back() -> None:
    setup = Setup()
    setup.sessions.recorded_version = 1
    since = setup.since(state=2)
    response = setup.handle(since)
    assert response == {"next": setup.codec.encode(since)}


def test_a_worker_behind_since_answers_with_a_timeout_reply() -> None:
    setup = Setup()
    setup.synapse.caught_up = False
    since = setup.since()
    response = setup.handle(since)
    assert setup.decode(response) == SinceToken(SID, 2, since.positions)
    assert setup.alpha.computed() == setup.beta.computed() == []
    assert "persist_state" not in setup.names()


# -- a reply with data ------------------------------------------------------------------


def test_reply_with_data_persists_the_state_once() -> None:
    setup = Setup()
    setup.alpha.rooms = lambda now: [f"!r{now}:test"]
    setup.synapse.positions["alpha"] = 6
    response = setup.handle(setup.since(state=4))
    assert response["alpha"] == {"echo": "alpha", "at": 6}
    assert "beta" not in response  # no data, not in the body
    assert setup.names().count("persist_state") == 1
    assert setup.names()[-1] == "persist_state"
    [state] = setup.sessions.persisted
    assert state.version == 4
    assert state.changes(5).rooms == {"alpha": frozenset({"!r6:test"})}
    # The token names the state version that was persisted.
    assert setup.decode(response) == SinceToken(SID, 2, {"alpha": "6", "beta": "7"}, 5)


def test_new_session() -> None:
    setup = Setup()
    setup.beta.rooms = lambda now: ["!b:test"]
    response = setup.handle(None, body={"alpha": {}, "beta": {}})
    assert setup.writes() == ["start", "admit", "persist_state"]
    assert response["alpha"] == {"echo": "alpha", "at": 5}
    assert response["beta"] == {"echo": "beta", "at": 7}
    assert setup.decode(response) == SinceToken(NEW_SID, 1, {"alpha": "5", "beta": "7"}, 1)
    assert "wait" not in setup.names()


def test_data_found_on_a_wake_is_persisted_from_that_computation() -> None:
    setup = Setup()
    # Both streams record a room per computation with data, named after "now".
    setup.alpha.rooms = lambda now: [f"!alpha{now}:test"]
    setup.beta.rooms = lambda now: [f"!beta{now}:test"]
    setup.synapse.wakes = [{"alpha": 9}]
    response = setup.handle(setup.since())
    assert response["alpha"] == {"echo": "alpha", "at": 9}
    [state] = setup.sessions.persisted
    assert state.changes(1).rooms == {"alpha": frozenset({"!alpha9:test"})}


# -- a cancelled wait -------------------------------------------------------------------


def test_cancelled_wait_persists_nothing() -> None:
    setup = Setup()
    setup.synapse.cancel_wait = True
    with pytest.raises(CancelledError):
        setup.handle(setup.since())
    assert setup.names()[-1] == "listening_done"  # the wait was left
    # What was committed before the wait stays.
    assert setup.writes() == ["protect", "record"]


def test_client_gone_during_the_wait_persists_nothing() -> None:
    setup = Setup()
    setup.alpha.rooms = lambda now: ["!a:test"]
    setup.synapse.wakes = [{"alpha": 9}]
    setup.disconnected = True
    with pytest.raises(CancelledError):
        setup.handle(setup.since())
    assert "persist_state" not in setup.names()


# -- waking -----------------------------------------------------------------------------


def test_a_wake_recomputes_only_the_streams_that_moved() -> None:
    setup = Setup()
    # Activity no requested stream reports, then beta moves.
    setup.synapse.wakes = [{"noise": 1}, {"noise": 2}, {"beta": 8}]
    response = setup.handle(setup.since())
    assert setup.alpha.computed() == [5]
    assert setup.beta.computed() == [7, 8]
    assert response["beta"] == {"echo": "beta", "at": 8}
    assert "alpha" not in response
    # alpha keeps the result of the first computation.
    assert setup.decode(response).positions == {"alpha": "5", "beta": "8"}


def test_a_wake_without_data_keeps_waiting() -> None:
    setup = Setup()
    setup.synapse.wakes = [{"alpha": 5, "beta": 7}, {"alpha": 6}]
    setup.handle(setup.since())
    assert setup.alpha.computed() == [5, 6]
    assert setup.beta.computed() == [7]


# -- answering at once ------------------------------------------------------------------


def test_answer_at_once_does_not_wait() -> None:
    setup = Setup()
    response = setup.handle(setup.since(), body={"alpha": {}}, per_request={"alpha": {"p": {}}})
    assert "wait" not in setup.names()
    assert response["alpha"] == {"echo": "alpha"}
    assert "persist_state" in setup.names()


@pytest.mark.parametrize(
    ("since_positions", "timeout_ms"),
    [
        pytest.param({"alpha": "5", "beta": "7"}, 0, id="timeout 0"),
        pytest.param({"alpha": "5"}, 30_000, id="a stream without position"),
    ],
)
def test_other_reasons_not_to_wait(since_positions: dict[str, str], timeout_ms: int) -> None:
    setup = Setup()
    response = setup.handle(setup.since(**since_positions), timeout_ms=timeout_ms)
    assert "wait" not in setup.names()
    assert "next" in response
