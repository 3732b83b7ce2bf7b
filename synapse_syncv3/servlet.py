"""HTTP entry points: authenticate, parse, call the handler, encode (SPEC §1–3).

The same :class:`SyncV3Endpoint` serves two routes:

* :class:`SyncV3ClientServlet`, injected into Synapse's client API resource with the
  very same path regex as Synapse's GET ``/sync``, so POST reaches us and GET stays
  Synapse's v2 sync;
* :class:`SyncV3Resource`, the always-on ``/_synapse/client/syncv3/sync`` path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from synapse.module_api import DirectServeJsonResource
from twisted.internet.defer import CancelledError

from synapse_syncv3 import errors, metrics
from synapse_syncv3.compat import (
    RestServlet,
    SynapseCompat,
    SynapseError,
    cancellable,
    client_sync_patterns,
)
from synapse_syncv3.config import SyncV3Config
from synapse_syncv3.core.encoding import INLINE_JSON_CHARS, json_within
from synapse_syncv3.core.request import parse_body, parse_query
from synapse_syncv3.core.request import query_args as parse_query_args
from synapse_syncv3.core.tokens import TokenCodec
from synapse_syncv3.errors import SyncV3Error
from synapse_syncv3.handler import SyncRequest, SyncV3Handler
from synapse_syncv3.streams import StreamSet

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

MODULE_PATH = "/_synapse/client/syncv3/sync"

#: Tests only: names a stream whose first computation raises (see docs/testing.md).
FAULT_HEADER = b"X-Syncv3-Inject-Fault"

_BEARER_RE = re.compile(rb"Bearer [\x21-\x7e]+")


class SyncV3Endpoint:
    """Authentication, parsing and error mapping shared by both routes."""

    def __init__(
        self,
        api: ModuleApi,
        synapse: SynapseCompat,
        handler: SyncV3Handler,
        codec: TokenCodec,
        config: SyncV3Config,
        streams: StreamSet,
        faults_enabled: bool = False,
    ) -> None:
        self._api = api
        self._synapse = synapse
        self._handler = handler
        self._codec = codec
        self._config = config
        self._streams = streams
        #: Tests only (SYNCV3_FAULT_INJECTION): honour the fault injection header.
        self._faults_enabled = faults_enabled

    async def on_post(self, request: Any) -> tuple[int, JsonDict] | None:
        """Returns what Synapse's resource is to send, or None once the response
        has been sent here (a small one, encoded on the reactor thread)."""
        args = query_args(request)
        kind = "incremental" if b"since" in args else "initial"
        code = 500
        try:
            req = await self._parse(request, args)
            del args  # parsed: a long-poll waits without it
            kind = req.kind
            response = await self._handler.handle(req)
            code = 200
            if json_within(response, INLINE_JSON_CHARS):
                self._synapse.respond_json_inline(request, response)
                return None
            return 200, response
        except Exception as e:
            if isinstance(e, CancelledError) or self._synapse.is_disconnected(request):
                # The client went away: not a completed request, whatever the error
                # the cancellation came out as inside Synapse (e.g. a worker's presence
                # relay turns it into a 502 "Failed to talk to master process").
                code = 0
                raise CancelledError() from None
            if isinstance(e, SyncV3Error):
                code = e.code
                raise SynapseError(e.code, e.msg, e.errcode) from None
            if isinstance(e, errors.StorageTooNewError):
                raise SynapseError(500, str(e), errors.UNKNOWN) from None
            if isinstance(e, SynapseError):
                code = e.code
            raise
        finally:
            if code:
                metrics.REQUESTS.labels(kind=kind, code=str(code)).inc()

    async def _parse(self, request: Any, args: dict[bytes, list[bytes]]) -> SyncRequest:
        """Checks in the order of SPEC §3.1."""
        if b"access_token" in args:
            raise SyncV3Error(
                401,
                errors.MISSING_TOKEN,
                "Send the access token in the Authorization header ('Authorization: Bearer "
                "<token>'); sync v3 does not accept access_token in the query string",
            )
        headers = request.requestHeaders.getRawHeaders(b"Authorization") or []
        if not headers:
            raise SyncV3Error(
                401,
                errors.MISSING_TOKEN,
                "Missing access token: send an Authorization header 'Bearer <token>'",
            )
        if len(headers) != 1 or not _BEARER_RE.fullmatch(headers[0]):
            raise SyncV3Error(
                401, errors.MISSING_TOKEN, "The Authorization header must be 'Bearer <token>'"
            )
        requester = await self._api.get_user_by_req(request, allow_guest=True)
        user_id, device_id, is_guest = self._synapse.requester_identity(requester)
        if is_guest:
            raise SyncV3Error(403, errors.GUEST_ACCESS_FORBIDDEN, "Guest access is not allowed")
        if device_id is None:
            raise SyncV3Error(403, errors.FORBIDDEN, "sync v3 needs a device")

        query = parse_query(args, self._codec, self._config.max_timeout_ms)
        request.content.seek(0)
        body = parse_body(request.content.read(), self._streams.by_name)
        return SyncRequest(
            requester=requester,
            user_id=user_id,
            device_id=device_id,
            query=query,
            body=body,
            fault=self._fault(request),
            connection=request,
        )

    def _fault(self, request: Any) -> str | None:
        """Tests only: the stream named by the fault injection header, when the
        process runs with fault injection enabled (``SYNCV3_FAULT_INJECTION=1``)."""
        if not self._faults_enabled:
            return None
        values = request.requestHeaders.getRawHeaders(FAULT_HEADER) or []
        name = values[0].decode("ascii", "replace") if values else None
        return name if name in self._streams.by_name else None


def query_args(request: Any) -> dict[bytes, list[bytes]]:
    """The query string's parameters, from the URI itself (never raises, whatever
    bytes the URI holds: see :func:`synapse_syncv3.core.request.query_args`).

    Twisted merges the body of a request sent as ``application/x-www-form-urlencoded``
    (curl's default for ``-d``) into ``request.args``, over the query parameters. The
    Content-Type of a sync v3 request is not checked (SPEC §3.3), so the body must not
    be able to pose as ``since`` or ``timeout``.
    """
    uri = request.uri
    return parse_query_args(uri) if isinstance(uri, bytes) else {}


class SyncV3ClientServlet(RestServlet):
    """POST on Synapse's own ``/sync`` route (r0, v3 and unstable)."""

    PATTERNS = client_sync_patterns()
    CATEGORY = "Sync requests"

    def __init__(self, endpoint: SyncV3Endpoint) -> None:
        super().__init__()
        self._endpoint = endpoint

    @cancellable
    def on_POST(self, request: Any) -> Awaitable[tuple[int, JsonDict] | None]:
        # Not a coroutine itself: a waiting request holds one frame less.
        return self._endpoint.on_post(request)


class SyncV3Resource(DirectServeJsonResource):
    """``/_synapse/client/syncv3/sync``: POST only; other methods get 405."""

    def __init__(self, endpoint: SyncV3Endpoint, clock: Any) -> None:
        super().__init__(clock=clock)
        self._endpoint = endpoint

    @cancellable
    def _async_render_POST(self, request: Any) -> Awaitable[tuple[int, JsonDict] | None]:
        # Not a coroutine itself: a waiting request holds one frame less.
        return self._endpoint.on_post(request)
