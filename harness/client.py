"""A small keep-alive HTTP client for Matrix client-server calls in tests (stdlib only)."""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import json
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote as _urlquote
from urllib.parse import urlencode, urlsplit

__all__ = [
    "NO_BODY",
    "USE_CLIENT_TOKEN",
    "Account",
    "Client",
    "MatrixUser",
    "Response",
    "quote",
]

CLIENT_V3: Final = "/_matrix/client/v3"


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NO_BODY: Final = _Sentinel("NO_BODY")
"""Default of ``json_body``: send no JSON body."""
USE_CLIENT_TOKEN: Final = _Sentinel("USE_CLIENT_TOKEN")
"""Default of ``token``: use the client's own ``access_token`` (if any)."""

QueryParams = Mapping[str, object] | Sequence[tuple[str, object]]


def quote(s: str) -> str:
    """Percent-encode one path component (``/``, ``:``, ``!``, ``#``, ``@`` all encoded)."""
    return _urlquote(s, safe="")


def _query_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def encode_query(query: QueryParams) -> str:
    """urlencode ``query``; bools become ``true``/``false``, dicts and lists JSON (filters).

    A sequence of pairs may repeat a parameter. ``None`` values are left out.
    """
    items = query.items() if isinstance(query, Mapping) else query
    return urlencode([(k, _query_value(v)) for k, v in items if v is not None])


@dataclass(frozen=True)
class Account:
    """A user's credentials on a test homeserver."""

    user_id: str
    access_token: str
    device_id: str
    password: str
    localpart: str
    refresh_token: str | None = None

    @classmethod
    def from_response(cls, result: Mapping[str, Any], localpart: str, password: str) -> Account:
        """From the answer of a register or login request."""
        return cls(
            user_id=result["user_id"],
            access_token=result["access_token"],
            device_id=result["device_id"],
            password=password,
            localpart=localpart,
            refresh_token=result.get("refresh_token"),
        )

    def with_token(self, access_token: str, refresh_token: str | None = None) -> Account:
        """A copy with another access token (and the given refresh token)."""
        return dataclasses.replace(self, access_token=access_token, refresh_token=refresh_token)


@dataclass
class Response:
    """A complete HTTP response."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    method: str = ""
    path: str = ""

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.method} {self.path} {self.text(200)!r}>"

    def text(self, limit: int | None = None) -> str:
        """The body decoded as UTF-8 (lossy), optionally truncated to ``limit`` characters."""
        t = self.body.decode("utf-8", "replace")
        if limit is not None and len(t) > limit:
            return t[:limit] + f"... ({len(t)} chars)"
        return t

    def json(self) -> Any:
        """The parsed JSON body; ValueError (showing the body) if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise ValueError(
                f"{self.method} {self.path} -> {self.status}: body is not JSON ({e}): "
                f"{self.text(2000)!r}"
            ) from None

    @property
    def errcode(self) -> str | None:
        """The Matrix ``errcode`` of the body, or None."""
        try:
            parsed = json.loads(self.body)
        except ValueError:
            return None
        code = parsed.get("errcode") if isinstance(parsed, dict) else None
        return code if isinstance(code, str) else None

    def expect(self, status: int = 200, what: str = "") -> Any:
        """Assert the status (message shows the body) and return the parsed JSON."""
        if self.status != status:
            prefix = f"{what}: " if what else ""
            raise AssertionError(
                f"{prefix}{self.method} {self.path}: expected HTTP {status}, got {self.status}: "
                f"{self.text(2000)}"
            )
        return self.json()


class Client:
    """HTTP client with one keep-alive connection per thread.

    ``access_token`` is sent as ``Authorization: Bearer`` unless a request passes ``token``
    (``None`` for an unauthenticated request).
    """

    def __init__(self, base_url: str, access_token: str | None = None, timeout: float = 60) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported base URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<Client {self.base_url}>"

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads drop them)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = NO_BODY,
        raw_body: bytes | None = None,
        query: QueryParams | None = None,
        raw_query: str | None = None,
        token: str | _Sentinel | None = USE_CLIENT_TOKEN,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and read the whole response.

        ``path`` is absolute (``/_matrix/...``); quoting its components is the caller's job
        (see :func:`quote`). ``raw_query`` is appended to the query string exactly as
        given (after ``query``), for malformed query strings: printable ASCII only, as
        http.client refuses anything else. A dropped keep-alive connection is re-opened
        once.
        """
        if json_body is not NO_BODY and raw_body is not None:
            raise ValueError("pass json_body or raw_body, not both")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        url = path
        if query:
            qs = encode_query(query)
            if qs:
                url += ("&" if "?" in url else "?") + qs
        if raw_query is not None:
            url += ("&" if "?" in url else "?") + raw_query

        hdrs: dict[str, str] = {"Accept": "application/json"}
        body: bytes | None = None
        if json_body is not NO_BODY:
            body = json.dumps(json_body).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif raw_body is not None:
            body = raw_body
            hdrs["Content-Type"] = "application/octet-stream"
        bearer = self.access_token if token is USE_CLIENT_TOKEN else token
        if isinstance(bearer, str):
            hdrs["Authorization"] = f"Bearer {bearer}"
        if headers:
            hdrs.update(headers)

        t = self.timeout if timeout is None else timeout
        for attempt in (0, 1):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = self._new_connection(t)
                self._local.conn = conn
            else:
                conn.timeout = t
                if conn.sock is not None:
                    conn.sock.settimeout(t)
            start = time.perf_counter()
            try:
                conn.request(method, url, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
            except (
                http.client.RemoteDisconnected,
                http.client.BadStatusLine,
                http.client.CannotSendRequest,
                ConnectionResetError,
                BrokenPipeError,
                ConnectionAbortedError,
            ):
                self.close()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            elapsed = time.perf_counter() - start
            resp_headers: dict[str, str] = {}
            for k, v in resp.getheaders():
                k = k.lower()
                resp_headers[k] = f"{resp_headers[k]}, {v}" if k in resp_headers else v
            if resp.will_close:
                self.close()
            return Response(resp.status, data, resp_headers, elapsed, method, url)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json_body: object = NO_BODY, **kwargs: Any) -> Response:
        return self.request("POST", path, json_body=json_body, **kwargs)

    def put(self, path: str, json_body: object = NO_BODY, **kwargs: Any) -> Response:
        return self.request("PUT", path, json_body=json_body, **kwargs)

    def delete(self, path: str, json_body: object = NO_BODY, **kwargs: Any) -> Response:
        return self.request("DELETE", path, json_body=json_body, **kwargs)


_txn_prefix = secrets.token_hex(4)
_txn_counter = itertools.count()


def new_txn_id() -> str:
    """A transaction id unique within this process (and very likely across processes)."""
    return f"h{_txn_prefix}-{next(_txn_counter)}"


def _sync_http_timeout(timeout_ms: object, default: float) -> float:
    if isinstance(timeout_ms, (int, float)) and not isinstance(timeout_ms, bool):
        return max(default, timeout_ms / 1000 + 30)
    return default


class MatrixUser:
    """Common client operations as one user. Each asserts HTTP 200 (else AssertionError
    showing the response) and returns the useful part of the answer."""

    def __init__(self, base_url: str, account: Account, *, timeout: float = 60) -> None:
        self.account = account
        self.client = Client(base_url, account.access_token, timeout=timeout)

    def __repr__(self) -> str:
        return f"<MatrixUser {self.user_id} {self.device_id}>"

    @property
    def user_id(self) -> str:
        return self.account.user_id

    @property
    def device_id(self) -> str:
        return self.account.device_id

    @property
    def localpart(self) -> str:
        return self.account.localpart

    @property
    def access_token(self) -> str | None:
        """The token requests currently use (``client.access_token``; assign that to switch)."""
        return self.client.access_token

    def _call(self, method: str, path: str, body: object = NO_BODY, **kwargs: Any) -> Any:
        resp = self.client.request(method, CLIENT_V3 + path, json_body=body, **kwargs)
        return resp.expect(200, what=self.user_id)

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/account/whoami")
        return result

    def create_room(self, **body: Any) -> str:
        """``POST /createRoom``; body is ``{"preset": "private_chat"}`` updated by ``body``
        (a ``None`` value removes a key). Returns the room id."""
        content: dict[str, Any] = {"preset": "private_chat", **body}
        content = {k: v for k, v in content.items() if v is not None}
        room_id: str = self._call("POST", "/createRoom", content)["room_id"]
        return room_id

    def invite(self, room_id: str, user_id: str) -> None:
        self._call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": user_id})

    def join(self, room_id: str) -> str:
        joined: str = self._call("POST", f"/join/{quote(room_id)}", {})["room_id"]
        return joined

    def leave(self, room_id: str) -> None:
        self._call("POST", f"/rooms/{quote(room_id)}/leave", {})

    def send_event(self, room_id: str, type: str, content: Mapping[str, Any]) -> str:
        """Send a timeline event with a fresh txn id; returns the event id."""
        path = f"/rooms/{quote(room_id)}/send/{quote(type)}/{new_txn_id()}"
        event_id: str = self._call("PUT", path, dict(content))["event_id"]
        return event_id

    def send_message(
        self, room_id: str, body: str = "hi", msgtype: str = "m.text", **extra: Any
    ) -> str:
        return self.send_event(
            room_id, "m.room.message", {"msgtype": msgtype, "body": body, **extra}
        )

    def send_state(
        self, room_id: str, type: str, state_key: str, content: Mapping[str, Any]
    ) -> str:
        path = f"/rooms/{quote(room_id)}/state/{quote(type)}/{quote(state_key)}"
        event_id: str = self._call("PUT", path, dict(content))["event_id"]
        return event_id

    def set_typing(self, room_id: str, typing: bool, timeout_ms: int = 30000) -> None:
        path = f"/rooms/{quote(room_id)}/typing/{quote(self.user_id)}"
        self._call("PUT", path, {"typing": typing, "timeout": timeout_ms})

    def send_receipt(self, room_id: str, event_id: str, receipt_type: str = "m.read") -> None:
        path = f"/rooms/{quote(room_id)}/receipt/{quote(receipt_type)}/{quote(event_id)}"
        self._call("POST", path, {})

    def set_account_data(
        self, type: str, content: Mapping[str, Any], room_id: str | None = None
    ) -> None:
        user = quote(self.user_id)
        if room_id is None:
            path = f"/user/{user}/account_data/{quote(type)}"
        else:
            path = f"/user/{user}/rooms/{quote(room_id)}/account_data/{quote(type)}"
        self._call("PUT", path, dict(content))

    def send_to_device(self, type: str, messages: Mapping[str, Mapping[str, Any]]) -> None:
        """``messages``: ``{user_id: {device_id or "*": content}}``."""
        path = f"/sendToDevice/{quote(type)}/{new_txn_id()}"
        self._call("PUT", path, {"messages": messages})

    def set_displayname(self, name: str) -> None:
        self._call("PUT", f"/profile/{quote(self.user_id)}/displayname", {"displayname": name})

    def logout(self) -> None:
        self._call("POST", "/logout", {})

    def delete_device(self, device_id: str) -> None:
        """``DELETE /devices/{id}``, completing user-interactive auth with the password."""
        path = CLIENT_V3 + f"/devices/{quote(device_id)}"
        first = self.client.delete(path, {})
        if first.status == 200:
            return
        if first.status != 401 or "session" not in first.json():
            first.expect(401, what=f"{self.user_id} delete_device (UIA challenge)")
            raise AssertionError(f"no UIA session in {first!r}")
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.localpart},
            "password": self.account.password,
            "session": first.json()["session"],
        }
        self.client.delete(path, {"auth": auth}).expect(200, what=f"{self.user_id} delete_device")

    def refresh(self, refresh_token: str) -> tuple[str, str]:
        """``POST /refresh``; returns ``(access_token, refresh_token)``. Does not switch
        ``client.access_token``."""
        result = self._call("POST", "/refresh", {"refresh_token": refresh_token}, token=None)
        return result["access_token"], result["refresh_token"]

    def v2_sync(self, since: str | None = None, timeout: int = 0, **params: Any) -> dict[str, Any]:
        """``GET /sync``; extra params as query (a dict ``filter`` is JSON-encoded)."""
        query: dict[str, object] = {"timeout": timeout, "since": since, **params}
        result: dict[str, Any] = self._call(
            "GET", "/sync", query=query, timeout=_sync_http_timeout(timeout, self.client.timeout)
        )
        return result

    def sync_v3(
        self,
        body: object = None,
        since: str | None = None,
        timeout: int | None = None,
        path: str = CLIENT_V3 + "/sync",
        **query: Any,
    ) -> Response:
        """``POST`` a sync v3 request (``body`` None means ``{}``); the raw Response, unchecked.

        ``since``/``timeout`` go into the query string only when not None.
        """
        q: dict[str, object] = dict(query)
        if since is not None:
            q["since"] = since
        if timeout is not None:
            q["timeout"] = timeout
        return self.client.request(
            "POST",
            path,
            json_body={} if body is None else body,
            query=q,
            timeout=_sync_http_timeout(timeout, self.client.timeout),
        )
