"""The servlet's own handling of hostile input, before any Synapse call: the query
string read from the raw URI, and the shape of the Authorization header."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

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
