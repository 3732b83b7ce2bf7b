"""Runs one sync v3 request (SPEC §3.5): session, params merge, confirmation,
long-poll, streams, response.

The servlet has already authenticated and parsed the request; this module never sees
HTTP. A request runs in phases so that one that fails changes nothing (SPEC §3.1,
§3.6):

1. **Check** (nothing written): load the session, params and stream state named by
   ``since``, merge the body, bind the positions, run every stream's ``check``.
2. **Protect** (undone on failure): a new session's row is inserted and a session that
   (re)starts to_device counts as having confirmed nothing, so that no to-device
   deletion can pass what the first computation hands out.
3. **First computation** of the requested streams. If it raises, the protection is
   undone and the exception propagates (a 500 leaves the session as it was).
4. **Commit**: the new params version, the to_device confirmation and the deletion it
   allows (SPEC §3.5 steps 2–3), eviction for a new session. Written before any wait,
   so a timeout reply carries the new params version; a cancelled wait keeps it.
5. **Wait** for the user's activity if there is nothing to say (the module's own wait
   on Synapse's notifier: one listener in the user's notifier stream and one entry on
   a shared deadline timer per waiting request); each wake recomputes the streams
   whose Synapse positions moved.
6. **Respond**; the stream state changed by the response is persisted, as a new state
   version named by ``next``, only for a reply that is not a timeout reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import CancelledError

from synapse_syncv3 import metrics
from synapse_syncv3.compat import Listening, SynapseCompat
from synapse_syncv3.config import SyncV3Config
from synapse_syncv3.core.params import Params, merge, reset_streams, started_streams
from synapse_syncv3.core.request import QueryParams, RequestBody
from synapse_syncv3.core.tokens import SinceToken, TokenCodec
from synapse_syncv3.sessions import SessionManager, SessionRef
from synapse_syncv3.store import LoadedSession
from synapse_syncv3.streams import StreamSet
from synapse_syncv3.streams.base import NO_ROOMS, StreamContext, StreamRequest, StreamResult

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

#: A request that completes this long after it started marks its session used again
#: (SPEC §4.3); quicker ones are covered by the mark made when they started.
_TOUCH_AFTER_SECONDS = 1.0

#: Streams whose object also appears whenever another stream object with data
#: appears, so that what they carry stays fresh (SPEC §7.9: the e2ee counts).
_SHOWN_WITH_OTHER_DATA = frozenset({"e2ee"})


class InjectedFault(RuntimeError):
    """Raised by a stream's first computation on purpose (tests only, see
    :attr:`SyncRequest.fault`)."""


@attrs.frozen
class SyncRequest:
    requester: Any
    user_id: str
    device_id: str
    query: QueryParams
    body: RequestBody
    #: Tests only: the stream whose first computation raises :class:`InjectedFault`.
    #: Set by the servlet only when the process runs with fault injection enabled.
    fault: str | None = None
    #: The HTTP request, opaque here: only for asking Synapse whether its client is
    #: still there (``SynapseCompat.is_disconnected``).
    connection: Any = None

    @property
    def kind(self) -> str:
        """Label for metrics: ``initial``, ``incremental`` or ``page``."""
        if self.body.is_page_request:
            return "page"
        return "initial" if self.query.since is None else "incremental"


@attrs.define
class _Checked:
    """A request that passed every check (phase 1); nothing is written yet."""

    since: SinceToken | None
    loaded: LoadedSession | None
    old: Params
    new: Params
    #: Requested streams in computation order.
    requested: list[str]
    #: Streams with a first delivery (new, restarted, reset, or no position).
    fresh: frozenset[str]
    #: What each requested stream is asked, positions bound.
    requests: dict[str, StreamRequest]
    #: The positions of ``since`` as sent, for a timeout reply.
    since_raw: dict[str, str]
    ctx: StreamContext
    #: False if this worker did not catch up with the positions of ``since``.
    caught_up: bool = True


class SyncV3Handler:
    def __init__(
        self,
        config: SyncV3Config,
        synapse: SynapseCompat,
        sessions: SessionManager,
        streams: StreamSet,
        codec: TokenCodec,
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        self._config = config
        self._synapse = synapse
        self._sessions = sessions
        self._streams = streams
        self._codec = codec
        self._ready = ready
        self._resets = {name: stream.resets for name, stream in streams.by_name.items()}
        for name in streams.order:  # export every stream's histogram from the start
            metrics.STREAM_DURATION.labels(stream=name)

    async def handle(self, req: SyncRequest) -> JsonDict:
        """Phases 1 to 6 of one request. The wait is written out here, not in
        coroutines of its own: a waiting request holds this one frame of the handler."""
        started = time.monotonic()
        await self._ready()
        checked = await self._check(req)
        new_session = None
        if checked.since is None:
            new_session = await self._sessions.start(req.user_id, req.device_id, checked.new)
        try:
            waited = 0.0
            presence = await self._synapse.presence_context(req.requester, req.query.set_presence)
            with presence:
                await self._synapse.on_user_syncing(req.user_id)
                results = None
                if checked.caught_up:
                    results = await self._first_computation(req, checked)
                session = await self._commit(req, checked, new_session)
                if results is not None and self._may_wait(req, checked, results):
                    wait_started = time.monotonic()
                    metrics.WAITING_REQUESTS.inc()
                    outcome = "cancelled"
                    try:
                        # Phase 5 (SPEC §6.2). Each wake of the user (by any of
                        # Synapse's streams) recomputes the requested streams that
                        # moved. At the deadline nothing is recomputed: nothing woke
                        # the user since the last computation (a wake that comes
                        # between a computation and the next listen fires that
                        # listen at once), so nothing this request asks for moved.
                        deadline = self._synapse.wait_clock_ms() + req.query.timeout_ms
                        token = checked.ctx.now
                        while True:
                            listening = self._synapse.listen(
                                req.user_id, token, deadline
                            ) or await self._open_and_listen(req.user_id, token, deadline)
                            with listening:
                                woken = await listening
                            del listening
                            if woken is None:
                                break
                            results = await self._recompute_moved(checked, results, woken)
                            if _has_data(results):
                                break
                            token = woken
                        if not _has_data(results):
                            results = None
                        if self._synapse.is_disconnected(req.connection):
                            # Answered as the client went away: not a completed request.
                            raise CancelledError()
                        outcome = "timeout" if results is None else "data"
                    finally:
                        metrics.WAITING_REQUESTS.dec()
                        waited = time.monotonic() - wait_started
                        metrics.WAIT_DURATION.labels(outcome=outcome).observe(waited)
            return await self._reply(req, checked, session, results, started, waited)
        except BaseException:
            if new_session is not None:
                # The client never got a token of this session: do not leave it
                # behind to hold back to-device deletion until it expires.
                await self._sessions.discard(new_session.session_id)
            raise

    # -- phase 1: every check, nothing written ------------------------------------------

    async def _check(self, req: SyncRequest) -> _Checked:
        since = req.query.since
        loaded = None
        old = Params.empty()
        if since is not None:
            loaded = await self._sessions.load(since, req.user_id, req.device_id)
            old = Params.from_json(loaded.params_json)
        new = merge(old, req.body.streams)
        requested = self._streams.ordered(new.names())
        starting = started_streams(old, new) | reset_streams(old, new, self._resets)
        if since is not None:
            starting |= {name for name in requested if name not in since.positions}
        # Usually empty: then the shared empty set, not one per waiting request.
        fresh = frozenset(starting) if starting else NO_ROOMS
        ctx = StreamContext(
            user_id=req.user_id,
            device_id=req.device_id,
            requester=req.requester,
            synapse=self._synapse,
            config=self._config,
            state=self._sessions.state_of(since, loaded),
        )
        checked = _Checked(since, loaded, old, new, requested, fresh, {}, {}, ctx)

        # Positions from `since`, bound to what this server has issued; wait for
        # replication if this worker lags behind them (SPEC §4.4, §13.3).
        positions: dict[str, Any] = {}
        wait_for = []
        for name in requested:
            if since is None or name in fresh:
                continue
            checked.since_raw[name] = since.positions[name]
            loaded_position = await self._streams[name].load_position(ctx, checked.since_raw[name])
            positions[name] = loaded_position.value
            if loaded_position.wait_for is not None:
                wait_for.append(loaded_position.wait_for)
        for token in wait_for:
            if not await self._synapse.wait_for_stream_token(token):
                logger.warning("Timed out waiting for replication; answering with a timeout reply")
                checked.caught_up = False
                return checked

        for name in requested:
            stream = self._streams[name]
            before, after = old.get(name), new.get(name)
            request = StreamRequest(
                params=after or {},
                per_request=req.body.per_request.get(name, {}),
                position=positions.get(name),
                fresh_rooms=(
                    stream.fresh_rooms(before, after)
                    if before is not None and after is not None and name not in fresh
                    else NO_ROOMS
                ),
            )
            await stream.check(ctx, request)
            checked.requests[name] = request
        return checked

    # -- phases 2 to 6 ----------------------------------------------------------------

    async def _commit(
        self, req: SyncRequest, checked: _Checked, new_session: SessionRef | None
    ) -> SessionRef:
        """Phase 4: commit what the request changes (SPEC §3.5 steps 2-3)."""
        if checked.since is None:
            assert new_session is not None
            await self._sessions.admit(new_session, req.user_id, req.device_id)
            return new_session
        assert checked.loaded is not None
        session = await self._sessions.record(
            checked.since, checked.loaded, req.user_id, req.device_id, checked.old, checked.new
        )
        # Not needed past the commit: a waiting request keeps only the decoded state
        # (ctx.state), not the stored text as well.
        checked.loaded = None
        return session

    def _may_wait(
        self, req: SyncRequest, checked: _Checked, results: Mapping[str, StreamResult]
    ) -> bool:
        return (
            checked.since is not None
            and not checked.fresh  # a first delivery or reset is data (SPEC §6.1)
            and not self._answer_at_once(checked)
            and req.query.timeout_ms > 0
            and not _has_data(results)
        )

    async def _reply(
        self,
        req: SyncRequest,
        checked: _Checked,
        session: SessionRef,
        results: Mapping[str, StreamResult] | None,
        started: float,
        waited: float,
    ) -> JsonDict:
        """Phase 6: the timeout reply, or the response with its stream state persisted."""
        if results is None:
            response = self._timeout_reply(session, checked.since_raw)
        else:
            # The stream state this response changed becomes a new version (SPEC
            # §7.5.2): written only now, for a reply that is sent with its data.
            session = await self._sessions.persist_state(session, checked.ctx.state)
            response = self._response(session, checked, req.body, results)

        elapsed = time.monotonic() - started
        metrics.REQUEST_DURATION.labels(kind=req.kind).observe(max(0.0, elapsed - waited))
        if elapsed >= _TOUCH_AFTER_SECONDS:
            # Marked used again as the response leaves, not before: a long-poll woken
            # after a long wait does not wait for this write, and the long-polls that
            # one notification wakes share one write.
            self._sessions.mark_used(session.session_id)
        return response

    def _answer_at_once(self, checked: _Checked) -> bool:
        """Some stream's per-request fields ask for an answer without waiting
        (SPEC §6.1 cases 2 and 3: ``p``, ``full_state``)."""
        return any(
            self._streams[name].answer_at_once(request.per_request)
            for name, request in checked.requests.items()
        )

    async def _first_computation(
        self, req: SyncRequest, checked: _Checked
    ) -> dict[str, StreamResult]:
        """Phases 2 and 3: protect, compute; undo the protection if computing fails."""
        mark = None
        if checked.since is not None:
            mark = await self._sessions.protect(
                checked.since, req.user_id, req.device_id, checked.old, checked.new
            )
        try:
            return await self._compute(checked, checked.requested, {}, fault=req.fault)
        except BaseException:
            if mark is not None:
                assert checked.since is not None
                await self._sessions.unprotect(checked.since, mark)
            raise

    async def _compute(
        self,
        checked: _Checked,
        names: list[str],
        previous: Mapping[str, StreamResult],
        fault: str | None = None,
        now: Any = None,
    ) -> dict[str, StreamResult]:
        """Compute ``names`` at a fresh ``now`` (sampled here unless the caller just
        sampled it); the other requested streams keep their ``previous`` results
        (nothing they report moved, and a result without data changed no stream
        state), except those shown with other data."""
        ctx = checked.ctx
        ctx.now = self._synapse.current_token() if now is None else now
        ctx.state = ctx.state.fork()
        ctx.results = {}
        for name in checked.requested:
            # A stream shown with other data is recomputed along with it, so that what
            # it carries is fresh (it comes last in the order).
            refresh = name in _SHOWN_WITH_OTHER_DATA and _has_data(ctx.results)
            if name not in names and not refresh:
                ctx.results[name] = previous[name]
                continue
            if name == fault:
                raise InjectedFault(f"fault injected into the {name} stream")
            stream_started = time.monotonic()
            ctx.results[name] = await self._streams[name].compute(ctx, checked.requests[name])
            metrics.STREAM_DURATION.labels(stream=name).observe(time.monotonic() - stream_started)
        return ctx.results

    async def _open_and_listen(self, user_id: str, token: Any, deadline: int) -> Listening:
        """The user's first wait (or the first since the notifier dropped the user's
        stream): have the notifier keep one, then listen."""
        await self._synapse.open_user_stream(user_id, token)
        listening = self._synapse.listen(user_id, token, deadline)
        if listening is None:
            raise RuntimeError("Synapse's notifier keeps no stream for the user")
        return listening

    async def _recompute_moved(
        self, checked: _Checked, results: dict[str, StreamResult], woken: Any
    ) -> dict[str, StreamResult]:
        """After a wake: recompute the requested streams whose Synapse positions moved
        since the last computation (the others keep their results), at the token of
        the wake."""
        ctx = checked.ctx
        now = self._synapse.wake_token(ctx.now, woken)
        moved = [name for name in checked.requested if self._streams[name].moved(ctx, ctx.now, now)]
        if not moved:
            return results
        # No await since `now` was chosen: it is the token of this wake.
        return await self._compute(checked, moved, results, now=now)

    # -- replies -------------------------------------------------------------------------

    def _timeout_reply(self, session: SessionRef, since_raw: Mapping[str, str]) -> JsonDict:
        """Exactly ``{"next": ...}`` with the positions of ``since`` (SPEC §6.3)."""
        return {
            "next": self._codec.encode(
                SinceToken(session.session_id, session.version, since_raw, session.state)
            )
        }

    def _response(
        self,
        session: SessionRef,
        checked: _Checked,
        body: RequestBody,
        results: Mapping[str, StreamResult],
    ) -> JsonDict:
        """Stream objects by the rules of SPEC §1.4, then ``next``."""
        params = checked.new
        echo = body.non_null_streams()
        other_data = any(
            result.has_data
            for name, result in results.items()
            if name not in _SHOWN_WITH_OTHER_DATA
        )
        response: JsonDict = {}
        positions = {}
        for name, result in results.items():
            if result.position is not None:
                positions[name] = result.position
            shown_with_others = other_data and name in _SHOWN_WITH_OTHER_DATA
            if not (result.has_data or name in checked.fresh or name in echo or shown_with_others):
                continue
            key = params.key_for(name)
            if result.error is not None:
                response[key] = dict(result.error)
            else:
                negotiated = self._streams[name].negotiate(
                    params.get(name) or {}, self._config.max_limits
                )
                response[key] = {**negotiated, **(result.payload or {})}
        response["next"] = self._codec.encode(
            SinceToken(session.session_id, session.version, positions, session.state)
        )
        return response


def _has_data(results: Mapping[str, StreamResult]) -> bool:
    return any(result.has_data for result in results.values())
