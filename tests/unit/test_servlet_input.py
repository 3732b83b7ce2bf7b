"""The servlet's own handling of hostile input, before any Synapse call: the query
string read from the raw URI, and the shape of the Authorization header."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from synapse.api.errors import SynapseError
from twisted.internet.defer import CancelledError, FirstError
from twisted.python.failure import Failure

from synapse_syncv3.errors import SyncV3Error
from synapse_syncv3.servlet import SyncV3Endpoint, query_args


def request(uri: bytes, authorization: list[bytes] | None = None) -> Any:
    headers = {b"Authorization": authorization or []}
    return SimpleNamespace(
        uri=uri,
        requestHeaders=SimpleNamespace(getRawHeaders=lambda name: headers.get(name) or None),
    )


@pytest.mark.parametrize(
    ("uri", "args"),
    [
        # Each of these raised in urlsplit/parse_qs (before Python 3.13 for the
        # percent-encoded ones; on every version for raw bytes): a 500.
        (b"/_matrix/client/v3/sync?since=%E2%98%83", {b"since": ["☃".encode()]}),
        (b"/_matrix/client/v3/sync?timeout=%FF", {b"timeout": [b"\xff"]}),
        (b"/_matrix/client/v3/sync?x=%C3%A9&timeout=1", {b"timeout": [b"1"]}),
        (b"/_matrix/client/v3/sync?x=\xff&since=\xe2\x98\x83", {b"since": ["☃".encode()]}),
        (b"/_matrix/client/v3/sync?access_token=%00", {b"access_token": [b"\x00"]}),
        (b"/_matrix/client/v3/sync", {}),
    ],
)
def test_query_args_never_raise(uri: bytes, args: dict[bytes, list[bytes]]) -> None:
    assert query_args(request(uri)) == args


def _parse(req: Any) -> SyncV3Error:
    """Run the endpoint's checks up to authentication, which must not be reached."""

    async def unreachable(*args: object, **kwargs: object) -> None:
        raise AssertionError("the header reached Synapse's authentication")

    endpoint: Any = SimpleNamespace(_api=SimpleNamespace(get_user_by_req=unreachable))
    with pytest.raises(SyncV3Error) as info:
        asyncio.run(SyncV3Endpoint._parse(endpoint, req, {}))
    return info.value


@pytest.mark.parametrize(
    "header",
    [b"Bearer abc\n", b"Bearer abc\r\n", b"Bearer a\nb", b" Bearer abc", b"Bearer abc "],
)
def test_bearer_header_must_be_exactly_bearer_and_a_token(header: bytes) -> None:
    error = _parse(request(b"/sync", [header]))
    assert (error.code, error.errcode) == (401, "M_MISSING_TOKEN")


class _Cancelled:
    """A request whose client left while the handler ran: the handler fails with the
    error the cancellation came out as inside Synapse."""

    def __init__(self, error: BaseException, disconnected: bool) -> None:
        self.error = error
        self.disconnected = disconnected

    def endpoint(self) -> Any:
        async def parse(request: Any, args: Any) -> Any:
            return SimpleNamespace(kind="incremental")

        async def handle(req: Any) -> Any:
            raise self.error

        endpoint: Any = SyncV3Endpoint.__new__(SyncV3Endpoint)
        endpoint._parse = parse
        endpoint._handler = SimpleNamespace(handle=handle)
        endpoint._synapse = SimpleNamespace(is_disconnected=lambda request: self.disconnected)
        return endpoint


def _requests_counted(code: str) -> float:
    from synapse_syncv3 import metrics

    return float(metrics.REQUESTS.labels(kind="incremental", code=code)._value.get())


@pytest.mark.parametrize(
    "error",
    [
        SynapseError(502, "Failed to talk to master process"),  # a worker's presence relay
        FirstError(Failure(CancelledError()), 0),  # Synapse's batched lookups
        CancelledError(),
    ],
    ids=["502", "first_error", "cancelled"],
)
def test_an_error_after_the_client_left_is_a_cancellation(error: BaseException) -> None:
    before = {code: _requests_counted(code) for code in ("500", "502")}
    endpoint = _Cancelled(error, disconnected=True).endpoint()
    with pytest.raises(CancelledError):
        asyncio.run(endpoint.on_post(request(b"/sync?since=x")))
    assert {code: _requests_counted(code) for code in ("500", "502")} == before


def test_an_error_while_the_client_waits_is_counted() -> None:
    before = _requests_counted("502")
    endpoint = _Cancelled(SynapseError(502, "bad gateway"), disconnected=False).endpoint()
    with pytest.raises(SynapseError):
        asyncio.run(endpoint.on_post(request(b"/sync?since=x")))
    assert _requests_counted("502") == before + 1
