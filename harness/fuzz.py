"""Hostile sync v3 requests against a live server, and the loop that sends and checks them.

One generator for both users of it: ``tests/integration/test_fuzz.py`` (2,000 requests
per database in the default suite) and ``bench/fuzz.py`` (long runs; figures in
docs/testing.md). A run is reproducible from its seed, up to the since tokens and page
cursors the server hands out, which the generator takes from the responses and
mutates.

The mix: garbage and percent-encoded query strings, random bodies (random JSON, random
bytes, lone surrogates, NUL, huge numbers and the non-finite literals, deep nesting,
huge strings), valid bodies of every stream with fields replaced by hostile values,
and real since tokens, mutated or with weird positions. Every request carries
``timeout=0`` first, or a first ``timeout`` that cannot parse: nothing waits.

Raw non-ASCII bytes in the request target are not sent: Synapse itself
(``urlparse(request.uri)`` in ``synapse/http/proxy.py``, ``getResourceFor``) fails on
them and drops the connection before any module code runs. The module's own query
parser takes any bytes (tests/unit/test_request.py).

Every answer is checked (:func:`check_response`): never a 5xx; every 4xx is a JSON
object with an ``errcode`` string; every 200 is a JSON object with a ``next`` string.
"""

from __future__ import annotations

import http.client
import json
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import attrs

from synapse_syncv3.core.tokens import MalformedTokenError
from synapse_syncv3.streams import ORDER, token_codec

from .client import Client, MatrixUser

__all__ = [
    "FuzzRequest",
    "FuzzResult",
    "HostileRequests",
    "check_response",
    "prepare",
    "run_fuzz",
]

SYNC_PATHS = (
    "/_matrix/client/v3/sync",
    "/_matrix/client/r0/sync",
    "/_matrix/client/unstable/sync",
    "/_synapse/client/syncv3/sync",
)
STREAM_KEYS = (*ORDER, "room_member")
FIELDS = (
    "room_id",
    "room_ids",
    "limit",
    "timeline_limit",
    "sort",
    "state_events",
    "lazy_load_members",
    "full_state",
    "p",
)

#: Strings that broke, or could break, something.
WEIRD_STRINGS = (
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\udc00y",
    "\n",
    "5\n",
    "\x85",
    "é",
    "☃",
    "\U0001f600",
    "!",
    "!:",
    "!:hs",
    "!\ud800:hs",
    "!a\x00:localhost",
    "!a:localhost\n",
    "V3_",
    "m1.",
    "*",
    "room_list",
    "by_pl",
    "by_name",
    "by_recency",
    "%00",
    "' OR 1=1 --",
    "\\",
    '"',
)
#: JSON literals spliced in as text (json.dumps cannot write most of them).
LITERALS = (
    "1e400",
    "-1e400",
    "1E-400",
    "-0",
    "0.0",
    "10.0",
    "9" * 300,
    "9" * 5000,
    "-" + "9" * 5000,
    "NaN",
    "Infinity",
    "-Infinity",
    "true",
    "null",
    '"\\ud800"',
    '"\\u0000"',
    '"\\udfff\\ud800"',
    '"\\uZZZZ"',
    '""',
    "[]",
    "{}",
)
#: Positions for since tokens: some valid for some streams, most valid for none.
POSITIONS = (
    "0",
    "1",
    "7",
    "999999999999999999",
    "18446744073709551615",
    "99999999999999999999",
    "m1~1.2",
    "m99~99.99",
    "m1~1.2~3.4",
    "1,1",
    "0,0",
    "999999,999999",
    "1_1",
    "0_0",
    "9999999_9999999",
    "a",
    "-1",
    "01",
    "1.5",
    "~",
    "s1",
    "x" * 400,
)
QUERY_GARBAGE = (
    "%",
    "%Z",
    "%zz",
    "%E2%98",
    "%ED%A0%80",
    "%C0%80",
    "%FF%FE",
    "%00",
    "5%0A",
    "%0A5",
    "+5",
    "5+",
    "1e3",
    "%EF%BC%95",
    "==",
    "&&",
    ";",
    "#",
    "%23",
    "%26since%3D",
)
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True)
class FuzzRequest:
    """One POST; ``query`` is the raw query string (printable ASCII), sent as is."""

    index: int
    kind: str
    path: str
    query: str
    body: bytes

    def describe(self, limit: int = 500) -> str:
        body = self.body if len(self.body) <= limit else self.body[:limit] + b"..."
        return f"[{self.kind}] POST {self.path}?{self.query} body ({len(self.body)} bytes) {body!r}"


@dataclass
class FuzzResult:
    seed: int
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errcodes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    stopped_early: bool = False

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def summary(self) -> str:
        """One line: counts per status (errcodes of the 4xx in brackets), 5xx, failures."""
        statuses = " ".join(f"{status}×{n}" for status, n in sorted(self.statuses.items()))
        errcodes = ", ".join(f"{code} {n}" for code, n in self.errcodes.most_common())
        return (
            f"fuzz seed={self.seed}: {self.requests} requests in {self.elapsed:.1f} s "
            f"({self.rate:.0f}/s): {statuses} [{errcodes}]; {self.server_errors} × 5xx; "
            f"{len(self.failures)} failed checks"
            + (" (stopped at the time limit)" if self.stopped_early else "")
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "requests": self.requests,
            "elapsed_s": round(self.elapsed, 2),
            "requests_per_s": round(self.rate, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errcodes": dict(self.errcodes.most_common()),
            "kinds": dict(self.kinds.most_common()),
            "server_errors": self.server_errors,
            "failures": self.failures[:50],
            "stopped_early": self.stopped_early,
        }


class HostileRequests:
    """A seeded stream of hostile requests for one user in one room.

    :meth:`observe` feeds it the answers, from which it keeps recent since tokens and
    member-list cursors to replay, mutate and combine.
    """

    def __init__(self, seed: int, room_id: str) -> None:
        self.rng = random.Random(seed)
        self.room_id = room_id
        self.codec = token_codec()
        self.tokens: deque[str] = deque(maxlen=6)
        self.cursors: deque[str] = deque(maxlen=6)
        self._kinds: list[tuple[str, Callable[[], tuple[str, bytes]]]] = [
            ("query", self._garbage_query),
            ("json", self._random_json),
            ("bytes", self._random_bytes),
            ("streams", self._mutated_streams),
            ("since", self._since_play),
            ("huge", self._huge),
        ]
        self._weights = [16, 14, 5, 37, 26, 2]

    # --- Feeding back ---------------------------------------------------------------

    def observe(self, status: int, body: Any) -> None:
        """Keep the ``next`` token and any member-list cursor of a 200."""
        if status != 200 or not isinstance(body, dict):
            return
        token = body.get("next")
        if isinstance(token, str):
            self.tokens.append(token)
        members = body.get("room_members")
        if isinstance(members, dict):
            page = members.get("p")
            if isinstance(page, dict) and isinstance(page.get("next"), str):
                self.cursors.append(page["next"])

    # --- Requests -------------------------------------------------------------------

    def make(self, index: int) -> FuzzRequest:
        rng = self.rng
        kind, build = rng.choices(self._kinds, self._weights)[0]
        query, body = build()
        return FuzzRequest(index, kind, rng.choice(SYNC_PATHS), query, body)

    def _query(self, since: str | None = None, extra: str = "") -> str:
        """``timeout=0`` first; ``since`` percent-encoded (whatever it holds)."""
        parts = ["timeout=0"]
        if since is not None:
            parts.append("since=" + quote(since.encode("utf-8", "surrogatepass"), safe=""))
        if self.rng.random() < 0.1:
            parts.append("set_presence=" + self.rng.choice(["online", "unavailable", "offline"]))
        if extra:
            parts.append(extra)
        return "&".join(parts)

    def _garbage_query(self) -> tuple[str, bytes]:
        rng = self.rng
        fields = []
        for _ in range(rng.randint(1, 5)):
            name = rng.choice(
                ["since", "timeout", "set_presence", "x", "Since", "since%00", self._garbage()]
            )
            fields.append(name if rng.random() < 0.1 else f"{name}={self._garbage()}")
        if rng.random() < 0.03:
            fields.append("access_token=" + self._garbage())  # 401 M_MISSING_TOKEN
        if rng.random() < 0.3:
            # The first timeout is garbage that can never parse: a 400, never a wait
            # (no "&" or "#" that would end it before the "x").
            bad = "x" + self._garbage().replace("&", "").replace("#", "")
            query = f"timeout={bad}&" + "&".join(fields)
        else:
            since = self._since() if rng.random() < 0.5 else None
            query = self._query(since, "&".join(fields))
        body = self._body_of(self._valid_body()) if rng.random() < 0.5 else b"{}"
        return query, body

    def _garbage(self) -> str:
        rng = self.rng
        choice = rng.random()
        if choice < 0.35:
            return "".join(f"%{byte:02X}" for byte in rng.randbytes(rng.randint(1, 8)))
        if choice < 0.6:
            return rng.choice(QUERY_GARBAGE)
        if choice < 0.85:
            return "".join(rng.choice(PRINTABLE) for _ in range(rng.randint(0, 12)))
        return rng.choice(QUERY_GARBAGE) + rng.choice(QUERY_GARBAGE)

    def _random_json(self) -> tuple[str, bytes]:
        rng = self.rng
        choice = rng.random()
        if choice < 0.5:
            value: Any = self._random_value(3)
            if rng.random() < 0.6:
                value = {rng.choice(STREAM_KEYS): self._random_value(3) for _ in range(3)}
            body = self._body_of(value)
        elif choice < 0.8:
            # A literal spliced into a stream field, a list, or a top-level key.
            literal = rng.choice(LITERALS)
            stream = rng.choice(STREAM_KEYS)
            field_name = rng.choice(FIELDS)
            body = rng.choice(
                [
                    f'{{"{stream}": {{"{field_name}": {literal}}}}}',
                    f'{{"{stream}": {{"{field_name}": [{literal}, {literal}]}}}}',
                    f'{{"x": {literal}, "{stream}": {literal}}}',
                    f'{{{literal}: 1, "{stream}": {{}}}}',
                    literal,
                ]
            ).encode()
        else:
            depth = rng.choice([10, 100, 1000, 5000, 100_000])
            opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('{"typing":{"x":', "}")])
            body = (opener * depth + "1" + closer * depth).encode()
        return self._query(self._since() if rng.random() < 0.3 else None), body

    def _random_bytes(self) -> tuple[str, bytes]:
        rng = self.rng
        valid = self._body_of(self._valid_body())
        body = rng.choice(
            [
                rng.randbytes(rng.randint(0, 200)),
                b"",
                b"   ",
                b"\xef\xbb\xbf" + valid,  # a UTF-8 byte order mark
                valid.decode().encode("utf-16"),
                valid[: rng.randint(0, len(valid))],
                valid.replace(b'"', b'"\xff', 1),
                valid.replace(b"{", b"{\xed\xa0\x80", 1),  # an encoded surrogate
                valid + b"\x00",
                valid + rng.randbytes(4),
            ]
        )
        return self._query(self._since() if rng.random() < 0.3 else None), body

    def _mutated_streams(self) -> tuple[str, bytes]:
        rng = self.rng
        body = self._valid_body()
        for obj in body.values():
            if isinstance(obj, dict):
                self._mutate(obj)
        if rng.random() < 0.1:
            body[rng.choice(STREAM_KEYS)] = self._random_value(2)
        return self._query(self._since() if rng.random() < 0.7 else None), self._body_of(body)

    def _since_play(self) -> tuple[str, bytes]:
        rng = self.rng
        body: Any = self._valid_body() if rng.random() < 0.6 else {}
        if body and rng.random() < 0.3:
            for obj in body.values():
                if isinstance(obj, dict):
                    self._mutate(obj)
        return self._query(self._since(valid_share=0.3)), self._body_of(body)

    def _huge(self) -> tuple[str, bytes]:
        rng = self.rng
        size = rng.choice([300, 70_000, 1_000_000])
        text = rng.choice(["a", "é", "\U0001f600", "\\u0000", "\\ud800"]) * (size // 2)
        stream, room = rng.choice(STREAM_KEYS), self.room_id
        body = rng.choice(
            [
                f'{{"x": "{text}", "to_device": {{}}}}',
                f'{{"{stream}": {{"room_id": "!{text}:localhost"}}}}',
                f'{{"room_list": {{"state_events": [["{text}", ""]]}}}}',
                f'{{"room_data": {{"room_ids": ["{room}"], "state_events": [["t", "{text}"]]}}}}',
                f'{{"room_members": {{"room_id": "{room}", "p": {{"since": "{text}"}}}}}}',
                '{"x": [' + ",".join(["1"] * (size // 4)) + "]}",
                "{" + ",".join(f'"k{i}": {i}' for i in range(size // 20)) + "}",
            ]
        ).encode()
        return self._query(self._since() if rng.random() < 0.5 else None), body

    # --- Bodies -----------------------------------------------------------------------

    def _body_of(self, value: Any) -> bytes:
        """JSON; sometimes with raw lone surrogates, which makes invalid UTF-8."""
        if self.rng.random() < 0.15:
            return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return json.dumps(value).encode()

    def _valid_body(self) -> dict[str, Any]:
        rng = self.rng
        streams = rng.sample(ORDER, rng.randint(1, 4))
        body: dict[str, Any] = {}
        for stream in streams:
            key = "room_member" if stream == "room_members" and rng.random() < 0.2 else stream
            body[key] = self._valid_object(stream) if rng.random() < 0.9 else None
        return body

    def _valid_object(self, stream: str) -> dict[str, Any]:
        rng = self.rng
        room = self.room_id
        if stream == "typing":
            return rng.choice([{"room_id": room}, {"room_ids": [room, "!other:localhost"]}])
        if stream == "to_device":
            return rng.choice([{}, {"limit": rng.choice([0, 1, 5, 5000])}])
        if stream == "room_members":
            obj: dict[str, Any] = {
                "room_id": room,
                "limit": rng.choice([1, 2, 50]),
                "sort": rng.choice(["by_pl", "by_name"]),
            }
            page = rng.random()
            if page < 0.2:
                obj["p"] = {}
            elif page < 0.5 and self.cursors:
                obj["p"] = {rng.choice(["since", "next"]): rng.choice(self.cursors)}
            return obj
        if stream == "room_list":
            return rng.choice(
                [
                    {},
                    {
                        "sort": ["by_name", "by_recency"],
                        "limit": 3,
                        "state_events": [["m.room.name", ""], ["*", "*"]],
                        "timeline_limit": 2,
                    },
                    {"p": {}},
                ]
            )
        if stream == "room_data":
            return rng.choice(
                [
                    {"room_ids": [room]},
                    {
                        "room_ids": "room_list",
                        "timeline_limit": 1,
                        "state_events": [["m.room.member", "*"]],
                        "lazy_load_members": True,
                        "full_state": True,
                    },
                ]
            )
        if stream == "receipts":
            return rng.choice([{}, {"room_ids": [room]}])
        return {}

    def _mutate(self, obj: dict[str, Any]) -> None:
        rng = self.rng
        for _ in range(rng.randint(1, 2)):
            choice = rng.random()
            if choice < 0.7:
                name = rng.choice(list(obj)) if obj and rng.random() < 0.5 else rng.choice(FIELDS)
                obj[name] = self._hostile_value(name)
            elif choice < 0.85 and obj:
                del obj[rng.choice(list(obj))]
            else:
                obj[self._weird_string()] = self._random_value(2)

    def _hostile_value(self, name: str) -> Any:
        rng = self.rng
        if rng.random() < 0.15:
            return self._random_value(2)
        if name == "room_id":
            return self._hostile_room_id()
        if name == "room_ids":
            return rng.choice(
                [
                    [self._hostile_room_id() for _ in range(rng.randint(0, 3))],
                    [self.room_id] * 3,
                    [f"!r{i}:localhost" for i in range(rng.choice([100, 101]))],
                    "room_list",
                    "rooms",
                    self.room_id,
                ]
            )
        if name in ("limit", "timeline_limit"):
            return rng.choice([-1, 0, 1, 2**31, 2**63, 10**30, 10**400, True, 1.5, "10", None])
        if name == "sort":
            return rng.choice(
                ["by_pl", "by_age", ["by_name"] * 5, ["by_size"], [], ["by_recency", 1], "x"]
            )
        if name == "state_events":
            pair = [self._weird_string(), self._weird_string()]
            return rng.choice(
                [
                    [pair],
                    [["m.room.name", ""], pair],
                    [["t" * rng.choice([255, 256]), ""]],
                    [["t", "é" * rng.choice([127, 128])]],
                    [["t", ""]] * rng.choice([100, 101]),
                    [["", ""]],
                    [["t"]],
                    [["t", 1]],
                    "all",
                ]
            )
        if name in ("lazy_load_members", "full_state"):
            return rng.choice([True, False, 1, "yes", None])
        if name == "p":
            cursor = rng.choice(self.cursors) if self.cursors else "m1.AAAA"
            return rng.choice(
                [
                    {},
                    {"since": self._mutate_text(cursor)},
                    {"next": self._mutate_text(cursor)},
                    {"since": cursor, "next": self._mutate_text(cursor)},
                    {"since": self._weird_string()},
                    {"next": "x" * rng.choice([100, 256, 257, 5000])},
                    {"since": 5},
                    [],
                    "next",
                ]
            )
        return self._random_value(2)

    def _hostile_room_id(self) -> Any:
        rng = self.rng
        b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        return rng.choice(
            [
                self.room_id,
                self.room_id + rng.choice(["\n", "\x00", " ", "\ud800"]),
                self.room_id.upper(),
                "!" + "".join(rng.choice(b64) for _ in range(rng.choice([42, 43, 44]))),
                "!x:[::1]:8448",
                "!x:[::1",
                "!x:localhost:99999999",
                "!" + "a" * 244 + ":localhost",
                "!" + "a" * 245 + ":localhost",
                "!" + "é" * 120 + ":localhost",
                "!" + self._weird_string() + ":localhost",
                "!nope:localhost",
                self._weird_string(),
                5,
                None,
            ]
        )

    def _weird_string(self) -> str:
        rng = self.rng
        if rng.random() < 0.5:
            return rng.choice(WEIRD_STRINGS)
        ranges = [(0, 0x1F), (0x20, 0x7E), (0x80, 0x7FF), (0xD800, 0xDFFF), (0x10000, 0x10FFFF)]
        return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 10)))

    def _random_value(self, depth: int) -> Any:
        rng = self.rng
        choice = rng.random()
        if depth <= 0 or choice < 0.5:
            return rng.choice(
                [
                    None,
                    True,
                    False,
                    0,
                    -1,
                    10**400,
                    rng.randint(-(2**70), 2**70),
                    rng.uniform(-1e300, 1e300),
                    self._weird_string(),
                    self._weird_string(),
                ]
            )
        if choice < 0.75:
            return [self._random_value(depth - 1) for _ in range(rng.randint(0, 4))]
        return {
            self._weird_string(): self._random_value(depth - 1) for _ in range(rng.randint(0, 4))
        }

    # --- Since tokens -----------------------------------------------------------------

    def _since(self, valid_share: float = 0.6) -> str | None:
        """A real recent token (``valid_share`` of the time), one with weird positions,
        a mutated one, or garbage."""
        rng = self.rng
        if not self.tokens:
            return None if rng.random() < 0.5 else rng.choice(["", "garbage", "s72594_4483_1934"])
        token = rng.choice(list(self.tokens)[-3:])
        choice = rng.random()
        if choice < valid_share:
            return token
        if choice < valid_share + (1 - valid_share) * 0.5:
            return self._with_weird_positions(token)
        return self._mutate_text(token)

    def _with_weird_positions(self, token: str) -> str:
        rng = self.rng
        try:
            decoded = self.codec.decode(token)
        except MalformedTokenError:
            return token
        positions = dict(decoded.positions)
        for _ in range(rng.randint(1, 3)):
            stream = rng.choice(ORDER)
            current = positions.get(stream)
            if current is not None and current.isdigit() and rng.random() < 0.5:
                positions[stream] = str(max(0, int(current) + rng.randint(-3, 1000)))
            else:
                positions[stream] = rng.choice(POSITIONS)
        changed = decoded.with_positions(positions)
        if rng.random() < 0.2:
            changed = attrs.evolve(changed, version=rng.choice([1, decoded.version + 1, 2**62]))
        try:
            return self.codec.encode(changed)
        except ValueError:
            return self._mutate_text(token)

    def _mutate_text(self, text: str) -> str:
        rng = self.rng
        chars = list(text)
        for _ in range(rng.randint(1, 3)):
            choice = rng.random()
            index = rng.randrange(len(chars)) if chars else 0
            char = rng.choice([rng.choice(PRINTABLE), self._weird_string()[:1] or "x"])
            if choice < 0.35 and chars:
                chars[index] = char
            elif choice < 0.55 and chars:
                del chars[index]
            elif choice < 0.75:
                chars.insert(index, char)
            else:
                chars.append(char)
        return "".join(chars)


# --- Sending and checking ------------------------------------------------------------


def check_response(status: int, body: bytes) -> tuple[str | None, Any]:
    """(what is wrong with the answer or None, the parsed body)."""
    if status >= 500:
        return f"server error {status}", None
    try:
        value = json.loads(body)
    except ValueError:
        return f"{status} with a body that is not JSON", None
    if not isinstance(value, dict):
        return f"{status} with a body that is not a JSON object", value
    if status == 200:
        token = value.get("next")
        if not isinstance(token, str) or not token.startswith("V3_"):
            return "200 without a next token", value
        return None, value
    if 400 <= status < 500:
        if not isinstance(value.get("errcode"), str):
            return f"{status} without an errcode", value
        return None, value
    return f"unexpected status {status}", value


def run_fuzz(
    base_url: str,
    access_token: str,
    room_id: str,
    requests: int,
    seed: int,
    *,
    time_limit: float | None = None,
    progress: Callable[[FuzzResult], None] | None = None,
    progress_every: int = 1000,
) -> FuzzResult:
    """Send ``requests`` hostile requests (or as many as fit in ``time_limit`` seconds)
    as the owner of ``access_token``, a member of ``room_id``; check every answer."""
    client = Client(base_url, access_token, timeout=60)
    generator = HostileRequests(seed, room_id)
    result = FuzzResult(seed=seed)
    started = time.monotonic()
    try:
        for index in range(requests):
            if time_limit is not None and time.monotonic() - started > time_limit:
                result.stopped_early = True
                break
            request = generator.make(index)
            result.kinds[request.kind] += 1
            try:
                response = client.request(
                    "POST", request.path, raw_body=request.body, raw_query=request.query
                )
                status, body = response.status, response.body
            except (OSError, http.client.HTTPException) as e:
                status, body = 0, repr(e).encode()
                problem: str | None = f"no answer: {e!r}"
                value: Any = None
            else:
                problem, value = check_response(status, body)
            result.requests += 1
            result.statuses[status] += 1
            if isinstance(value, dict) and isinstance(value.get("errcode"), str):
                result.errcodes[value["errcode"]] += 1
            if problem is not None:
                result.failures.append(
                    f"seed={seed} request #{index}: {problem}\n  {request.describe()}\n"
                    f"  -> {status} {body[:300]!r}"
                )
            generator.observe(status, value)
            if progress is not None and result.requests % progress_every == 0:
                result.elapsed = time.monotonic() - started
                progress(result)
    finally:
        client.close()
        result.elapsed = time.monotonic() - started
    return result


def prepare(alice: MatrixUser, bob: MatrixUser) -> str:
    """A room of ``alice`` with ``bob`` joined, a message, a typing notification and a
    to-device message for ``alice``: something for every stream to compute."""
    room_id = alice.create_room(invite=[bob.user_id])
    bob.join(room_id)
    alice.send_message(room_id, "hello")
    bob.set_typing(room_id, True)
    bob.send_to_device("m.fuzz", {alice.user_id: {alice.device_id: {"n": 1}}})
    return room_id
