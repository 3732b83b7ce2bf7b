"""A minimal asyncio HTTP/1.1 client for benchmarks that hold thousands of requests open
from one process (bench/idle_longpolls.py): one keep-alive connection per simulated
client, JSON bodies, ``Content-Length`` or chunked responses, nothing else.

The standard library's clients need a thread per open request; ten thousand waiting
long-polls need an event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import resource
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

__all__ = [
    "HttpConnection",
    "HttpError",
    "raise_fd_limit",
    "register_users",
]


class HttpError(RuntimeError):
    def __init__(self, status: int, body: bytes, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft limit of open files towards ``wanted`` (at most the
    hard limit); child processes (Synapse) inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to ``host:port``, opened on first use (at
    most ``connect_limit`` connections being opened at once, so that a listen backlog
    does not overflow) and again after the server closed it."""

    def __init__(
        self, host: str, port: int, connect_limit: asyncio.Semaphore | None = None
    ) -> None:
        self.host = host
        self.port = port
        self._connect_limit = connect_limit
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def _connect(self) -> None:
        if self._connect_limit is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            return
        async with self._connect_limit:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        token: str | None = None,
        query: dict[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request and read the whole response: ``(status, body)``. A kept-alive
        connection that turns out closed before any byte of the answer is opened again
        once."""
        target = path
        if query:
            target += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        payload = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if token is not None:
            head.append(f"Authorization: Bearer {token}")
        if body is not None or method in ("POST", "PUT"):
            head.append("Content-Type: application/json")
            head.append(f"Content-Length: {len(payload)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        for attempt in (1, 2):
            reused = self._writer is not None
            if not reused:
                await self._connect()
            assert self._reader is not None and self._writer is not None
            try:
                self._writer.write(data)
                status_line = await self._reader.readline()
                if not status_line:
                    raise ConnectionResetError("connection closed before the answer")
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if reused and attempt == 1:
                    continue
                raise
            try:
                return await self._read_rest(status_line)
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    async def _read_rest(self, status_line: bytes) -> tuple[int, bytes]:
        assert self._reader is not None
        reader = self._reader
        parts = status_line.split(b" ", 2)
        status = int(parts[1])
        length: int | None = None
        chunked = False
        close = status_line.startswith(b"HTTP/1.0")
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value.strip())
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif key == b"connection":
                close = value.strip().lower() == b"close"
        if chunked:
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readline()
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            payload = b"".join(chunks)
        elif length is not None:
            payload = await reader.readexactly(length)
        else:
            payload = await reader.read()
            close = True
        if close:
            self.close()
        return status, payload

    async def json(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        token: str | None = None,
        query: dict[str, Any] | None = None,
        expect: int = 200,
    ) -> Any:
        status, payload = await self.request(method, path, body=body, token=token, query=query)
        if status != expect:
            raise HttpError(status, payload, f"{method} {path}")
        return json.loads(payload)


async def register_users(
    host: str,
    port: int,
    shared_secret: str,
    localparts: list[str],
    *,
    concurrency: int = 8,
    on_done: Callable[[int], None] | None = None,
) -> list[dict[str, str]]:
    """Register ``localparts`` through Synapse's shared-secret admin API, ``concurrency``
    at a time; returns ``{"user_id", "access_token", "device_id", "localpart"}`` in order."""
    path = "/_synapse/admin/v1/register"
    results: list[dict[str, str] | None] = [None] * len(localparts)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(localparts)):
        queue.put_nowait(i)
    done = 0

    async def worker() -> None:
        nonlocal done
        conn = HttpConnection(host, port)
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                localpart = localparts[i]
                nonce = (await conn.json("GET", path))["nonce"]
                mac = hmac.new(shared_secret.encode(), digestmod=hashlib.sha1)
                for part in (nonce, localpart, "pw"):
                    mac.update(part.encode())
                    mac.update(b"\x00")
                mac.update(b"notadmin")
                body = {
                    "nonce": nonce,
                    "username": localpart,
                    "password": "pw",
                    "admin": False,
                    "mac": mac.hexdigest(),
                }
                answer = await conn.json("POST", path, body=body)
                results[i] = {
                    "user_id": answer["user_id"],
                    "access_token": answer["access_token"],
                    "device_id": answer["device_id"],
                    "localpart": localpart,
                }
                done += 1
                if on_done is not None:
                    on_done(done)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in results if r is not None]


def quote_path(value: str) -> str:
    return quote(value, safe="")
