"""Runs one sync v3 request (SPEC §3.5): session, params merge, confirmation,
long-poll, streams, response.

The servlet has already authenticated and parsed the request; this module never sees
HTTP. Streams are computed through the registry in :mod:`synapse_syncv3.streams`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import CancelledError

from synapse_syncv3 import metrics
from synapse_syncv3.compat import SynapseCompat
from synapse_syncv3.config import SyncV3Config
from synapse_syncv3.core.params import Params, merge, ordered, reset_streams, started_streams
from synapse_syncv3.core.request import QueryParams, RequestBody
from synapse_syncv3.core.tokens import SinceToken, TokenCodec
from synapse_syncv3.sessions import SessionManager, SessionRef
from synapse_syncv3.streams import BY_NAME, ORDER
from synapse_syncv3.streams.base import StreamContext, StreamResult

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

#: A request that completes this long after it started marks its session used again
#: (SPEC §4.3); quicker ones are covered by the mark made when they started.
_TOUCH_AFTER_SECONDS = 1.0

#: Streams whose object also appears whenever another stream object with data
#: appears, so that what they carry stays fresh (SPEC §7.9: the e2ee counts).
_SHOWN_WITH_OTHER_DATA = frozenset({"e2ee"})


@attrs.frozen
class SyncRequest:
    requester: Any
    user_id: str
    device_id: str
    query: QueryParams
    body: RequestBody

    @property
    def kind(self) -> str:
        """Label for metrics: ``initial``, ``incremental`` or ``page``."""
        if self.body.is_page_request:
            return "page"
        return "initial" if self.query.since is None else "incremental"


class SyncV3Handler:
    def __init__(
        self,
        config: SyncV3Config,
        synapse: SynapseCompat,
        sessions: SessionManager,
        codec: TokenCodec,
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        self._config = config
        self._synapse = synapse
        self._sessions = sessions
        self._codec = codec
        self._ready = ready
        self._resets = {name: stream.resets for name, stream in BY_NAME.items()}
        for name in ORDER:  # export every stream's histogram from the start
            metrics.STREAM_DURATION.labels(stream=name)

    async def handle(self, req: SyncRequest, is_disconnected: Callable[[], bool]) -> JsonDict:
        started = time.monotonic()
        await self._ready()
        since = req.query.since

        # 1-2. Session and params (SPEC §4, §5).
        if since is None:
            old = Params.empty()
        else:
            loaded = await self._sessions.load(since, req.user_id, req.device_id)
            old = Params.from_json(loaded.params_json)
        new = merge(old, req.body.streams)
        fresh = started_streams(old, new) | reset_streams(old, new, self._resets)
        if since is not None:
            fresh |= {name for name in new.names() if name not in since.positions}

        # 3. Store params and the to_device confirmation, delete what is confirmed.
        if since is not None:
            session = await self._sessions.record(
                since, loaded, req.user_id, req.device_id, old, new
            )
            return await self._respond(req, session, new, fresh, started, is_disconnected)
        session = await self._sessions.create(req.user_id, req.device_id, new)
        try:
            return await self._respond(req, session, new, fresh, started, is_disconnected)
        except BaseException:
            # The client never got a token of this session: do not leave it behind to
            # hold back to-device deletion until it expires.
            await self._sessions.discard(session.session_id)
            raise

    async def _respond(
        self,
        req: SyncRequest,
        session: SessionRef,
        new: Params,
        fresh: set[str],
        started: float,
        is_disconnected: Callable[[], bool],
    ) -> JsonDict:
        """Steps 4-6 of SPEC §3.5: positions, compute, wait, response."""
        since = req.query.since
        waited = 0.0
        ctx = StreamContext(
            user_id=req.user_id,
            device_id=req.device_id,
            requester=req.requester,
            synapse=self._synapse,
            config=self._config,
            session_id=session.session_id,
        )
        requested = ordered(new.names(), ORDER)

        # Positions from `since`, bound to what this server has issued; wait for
        # replication if this worker lags behind them (SPEC §4.4, §13.3).
        since_raw: dict[str, str] = {}
        positions: dict[str, Any] = {}
        if since is not None:
            wait_for = []
            for name in requested:
                if name in fresh:
                    continue
                since_raw[name] = since.positions[name]
                loaded_position = await BY_NAME[name].load_position(ctx, since_raw[name])
                positions[name] = loaded_position.value
                if loaded_position.wait_for is not None:
                    wait_for.append(loaded_position.wait_for)
            for token in wait_for:
                if not await self._synapse.wait_for_stream_token(token):
                    logger.warning(
                        "Timed out waiting for replication; answering with a timeout reply"
                    )
                    return self._timeout_reply(session, since_raw)

        async def compute() -> dict[str, StreamResult]:
            ctx.now = self._synapse.current_token()
            ctx.results = {}
            for name in requested:
                stream_started = time.monotonic()
                ctx.results[name] = await BY_NAME[name].compute(
                    ctx,
                    new.get(name) or {},
                    req.body.per_request.get(name, {}),
                    None if name in fresh else positions[name],
                )
                metrics.STREAM_DURATION.labels(stream=name).observe(
                    time.monotonic() - stream_started
                )
            return ctx.results

        async def compute_if_data() -> dict[str, StreamResult] | None:
            results = await compute()
            return results if _has_data(results) else None

        # 4-5. Answer at once or wait (SPEC §6).
        presence = await self._synapse.presence_context(req.requester, req.query.set_presence)
        with presence:
            await self._synapse.on_user_syncing(req.user_id)
            first = await compute()
            results: dict[str, StreamResult] | None = first
            may_wait = (
                since is not None
                and not fresh  # a first delivery or reset is data (SPEC §6.1)
                and not req.body.is_page_request
                and req.query.timeout_ms > 0
                and not _has_data(first)
            )
            if may_wait:
                wait_started = time.monotonic()
                metrics.WAITING_REQUESTS.inc()
                outcome = "cancelled"
                try:
                    results = await self._synapse.wait_for_events(
                        req.user_id, req.query.timeout_ms, compute_if_data, from_token=ctx.now
                    )
                    if is_disconnected():
                        # Synapse's notifier swallows the cancellation of its wait.
                        raise CancelledError()
                    outcome = "timeout" if results is None else "data"
                finally:
                    metrics.WAITING_REQUESTS.dec()
                    waited = time.monotonic() - wait_started
                    metrics.WAIT_DURATION.labels(outcome=outcome).observe(waited)

        if results is None:
            response = self._timeout_reply(session, since_raw)
        else:
            response = self._response(session, new, fresh, req.body, results)

        elapsed = time.monotonic() - started
        metrics.REQUEST_DURATION.labels(kind=req.kind).observe(max(0.0, elapsed - waited))
        if elapsed >= _TOUCH_AFTER_SECONDS:
            await self._sessions.touch(session.session_id)
        return response

    def _timeout_reply(self, session: SessionRef, since_raw: Mapping[str, str]) -> JsonDict:
        """Exactly ``{"next": ...}`` with the positions of ``since`` (SPEC §6.3)."""
        return {
            "next": self._codec.encode(SinceToken(session.session_id, session.version, since_raw))
        }

    def _response(
        self,
        session: SessionRef,
        params: Params,
        fresh: set[str],
        body: RequestBody,
        results: Mapping[str, StreamResult],
    ) -> JsonDict:
        """Stream objects by the rules of SPEC §1.4, then ``next``."""
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
            if not (result.has_data or name in fresh or name in echo or shown_with_others):
                continue
            key = params.key_for(name)
            if result.error is not None:
                response[key] = dict(result.error)
            else:
                negotiated = BY_NAME[name].negotiate(
                    params.get(name) or {}, self._config.max_limits
                )
                response[key] = {**negotiated, **(result.payload or {})}
        response["next"] = self._codec.encode(
            SinceToken(session.session_id, session.version, positions)
        )
        return response


def _has_data(results: Mapping[str, StreamResult]) -> bool:
    return any(result.has_data for result in results.values())
