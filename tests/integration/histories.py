"""Seeded random room histories, driven through the client API.

A :class:`History` is one room with the syncing user ``me``, its creator ``alice``
(the moderator, and the observer of the room: joined from the start, never leaving)
and two or three others. :meth:`History.act` performs one random action that is valid
in the current state of the room: messages, topic/name/custom state changes, display
name changes (duplicate joins), redactions, ``m.room.history_visibility`` changes,
invites, joins, leaves (and invite rejections), kicks, bans and unbans, a join and a
leave in one go, and ``me`` ignoring or un-ignoring someone. The same seed gives the
same sequence of actions (event ids differ from run to run), so a failure is
reproduced by its seed.

Each history also draws the room_data parameters to compare with (timeline limit,
lazy-loading, a state filter) and its checkpoints: the action indices before which
the test takes since tokens on both protocols.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from harness import MatrixUser
from harness.client import new_txn_id, quote
from tests.integration.helpers import Server
from tests.integration.room_oracle import Params

VISIBILITIES = ("joined", "invited", "shared", "world_readable")
CUSTOM_STATE = "org.example.state"
STATE_FILTERS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("m.room.topic", "*"), ("m.room.member", "*")),
    (("m.room.name", ""), (CUSTOM_STATE, "a"), ("m.room.history_visibility", "")),
    (("*", ""),),
)


_CASTS: dict[str, dict[str, MatrixUser]] = {}


def _cast(server: Server) -> dict[str, MatrixUser]:
    """alice, bob, carol and dave of ``server`` (registered once per server)."""
    if server.base_url not in _CASTS:
        _CASTS[server.base_url] = {
            name: server.user(displayname=name) for name in ("alice", "bob", "carol", "dave")
        }
    return _CASTS[server.base_url]


@dataclass
class Person:
    name: str
    user: MatrixUser
    membership: str | None = None

    @property
    def user_id(self) -> str:
        return self.user.user_id


@dataclass
class History:
    """One seeded random history of one room (see the module docstring)."""

    server: Server
    seed: int
    rng: random.Random = field(init=False)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = self.rng = random.Random(self.seed)
        self.length = rng.randint(14, 20)
        self.params = Params(
            timeline_limit=rng.choice((1, 2, 3, 3, 5, 5, 8, 20)),
            lazy_load_members=rng.random() < 0.25,
        )
        if not self.params.lazy_load_members and rng.random() < 0.2:
            self.params = Params(self.params.timeline_limit, rng.choice(STATE_FILTERS))
        #: Action indices before which the test takes a checkpoint (the end is one too).
        self.checkpoints = sorted(rng.sample(range(1, self.length), 2))
        #: An action index before which the test also asks for a first delivery.
        self.first_delivery_at = rng.randrange(1, self.length)
        #: Whether the first checkpoint's answer is asked with full_state.
        self.full_state = rng.random() < 0.3
        cast = _cast(self.server)
        self.alice = Person("alice", cast["alice"], "join")
        # The syncing user is new in every history (its rooms and ignore list are its
        # own); the others are shared by the histories of a server, in new rooms.
        self.me = Person("me", self.server.user(displayname="me"))
        names = ["bob", "carol", "dave"][: rng.choice((2, 3))]
        self.others = [Person(name, cast[name]) for name in names]
        self.preset = rng.choice(("private_chat", "private_chat", "public_chat"))
        self.visibility = rng.choice(VISIBILITIES)
        start = {
            person.name: rng.choices(("join", "invite", None), (65, 20, 15))[0]
            for person in [self.me, *self.others]
        }
        invited = [p for p in [self.me, *self.others] if start[p.name] is not None]
        self.room_id = self.alice.user.create_room(
            preset=self.preset,
            invite=[person.user_id for person in invited],
            power_level_content_override={"state_default": 0},
            initial_state=[
                {
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": {"history_visibility": self.visibility},
                }
            ],
        )
        self.log.append(
            f"setup: alice creates the room ({self.preset}, {self.visibility}), inviting "
            + (", ".join(p.name for p in invited) or "nobody")
        )
        self.messages: list[tuple[str, Person]] = []
        self.state_events: list[str] = []
        self.ignored: set[str] = set()
        self.ignore_changes = 0
        self.counter = 0
        self.done = 0
        for person in invited:
            person.membership = "invite"
            if start[person.name] == "join":
                self._join(person)
                self.log.append(f"setup: {person.name} joins")

    # The cast ---------------------------------------------------------------------

    @property
    def people(self) -> list[Person]:
        return [self.alice, self.me, *self.others]

    def name_of(self, user_id: str) -> str:
        return next((p.name for p in self.people if p.user_id == user_id), user_id)

    def describe(self) -> str:
        """The seed, the parameters and every action so far."""
        return (
            f"history seed {self.seed}: {self.params}, checkpoints before actions "
            f"{self.checkpoints}"
            + (" (the first with full_state)" if self.full_state else "")
            + f", first delivery before action {self.first_delivery_at}, "
            f"users {', '.join(f'{p.name}={p.user_id}' for p in self.people)}\n    "
            + "\n    ".join(self.log)
        )

    # Actions ---------------------------------------------------------------------

    def act(self) -> str:
        """Perform one random valid action; returns (and logs) what it did."""
        kinds: list[tuple[str, int]] = [
            ("message", 30),
            ("topic", 7),
            ("name", 3),
            ("custom", 6),
            ("displayname", 4),
            ("redact", 5),
            ("visibility", 5),
            ("leave", 6),
            ("invite", 7),
            ("join", 8),
            ("kick", 3),
            ("ban", 2),
            ("unban", 3),
            ("join_leave", 3),
            ("ignore", 1),
        ]
        for _ in range(50):
            kind = self.rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
            action = getattr(self, f"_try_{kind}")()
            if action is not None:
                text = action()
                self.log.append(f"action {self.done:2}: {text}")
                self.done += 1
                return text
        raise AssertionError("no valid action found")  # pragma: no cover

    def _pick(self, people: list[Person]) -> Person | None:
        """A random one of ``people``, ``me`` with a higher chance."""
        if not people:
            return None
        if self.me in people and self.rng.random() < 0.4:
            return self.me
        return self.rng.choice(people)

    def _with(self, membership: tuple[str | None, ...], alice: bool = False) -> list[Person]:
        return [
            p for p in self.people if p.membership in membership and (alice or p is not self.alice)
        ]

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def _try_message(self) -> Callable[[], str] | None:
        sender = self._pick(self._with(("join",), alice=True))
        if sender is None:
            return None

        def run() -> str:
            body = f"{sender.name} {self._next()}"
            event_id = sender.user.send_message(self.room_id, body)
            self.messages.append((event_id, sender))
            return f"{sender.name} says {body!r}"

        return run

    def _state(self, sender: Person, type_: str, key: str, content: dict[str, object]) -> str:
        event_id = sender.user.send_state(self.room_id, type_, key, content)
        self.state_events.append(event_id)
        return event_id

    def _try_topic(self) -> Callable[[], str] | None:
        sender = self._pick(self._with(("join",), alice=True))
        if sender is None:
            return None

        def run() -> str:
            topic = f"topic {self._next()}"
            self._state(sender, "m.room.topic", "", {"topic": topic})
            return f"{sender.name} sets the topic to {topic!r}"

        return run

    def _try_name(self) -> Callable[[], str] | None:
        def run() -> str:
            name = f"name {self._next()}"
            self._state(self.alice, "m.room.name", "", {"name": name})
            return f"alice names the room {name!r}"

        return run

    def _try_custom(self) -> Callable[[], str] | None:
        sender = self._pick(self._with(("join",), alice=True))
        if sender is None:
            return None
        key = self.rng.choice(("", "a", "b"))

        def run() -> str:
            value = self._next()
            self._state(sender, CUSTOM_STATE, key, {"value": value})
            return f"{sender.name} sets {CUSTOM_STATE}[{key!r}] to {value}"

        return run

    def _try_displayname(self) -> Callable[[], str] | None:
        person = self._pick(self._with(("join",), alice=True))
        if person is None:
            return None

        def run() -> str:
            name = f"{person.name}-{self._next()}"
            content = {"membership": "join", "displayname": name}
            person.user.send_state(self.room_id, "m.room.member", person.user_id, content)
            return f"{person.name} changes their display name to {name!r} (a duplicate join)"

        return run

    def _try_redact(self) -> Callable[[], str] | None:
        candidates = [(e, "message") for e, _ in self.messages]
        candidates += [(e, "state event") for e in self.state_events]
        if not candidates:
            return None
        event_id, what = self.rng.choice(candidates)

        def run() -> str:
            path = f"/rooms/{quote(self.room_id)}/redact/{quote(event_id)}/{new_txn_id()}"
            self.alice.user._call("PUT", path, {"reason": "random"})
            return f"alice redacts the {what} {event_id[:9]}"

        return run

    def _try_visibility(self) -> Callable[[], str] | None:
        choice = self.rng.choice([v for v in VISIBILITIES if v != self.visibility])

        def run() -> str:
            self._state(self.alice, "m.room.history_visibility", "", {"history_visibility": choice})
            self.visibility = choice
            return f"alice sets history_visibility to {choice}"

        return run

    def _try_leave(self) -> Callable[[], str] | None:
        person = self._pick(self._with(("join", "invite")))
        if person is None:
            return None

        def run() -> str:
            was = person.membership
            person.user.leave(self.room_id)
            person.membership = "leave"
            return f"{person.name} " + ("rejects the invite" if was == "invite" else "leaves")

        return run

    def _invite(self, person: Person) -> None:
        self.alice.user.invite(self.room_id, person.user_id)
        person.membership = "invite"

    def _join(self, person: Person) -> None:
        person.user.join(self.room_id)
        person.membership = "join"

    def _joinable(self) -> list[Person]:
        allowed: tuple[str | None, ...] = ("invite",)
        if self.preset == "public_chat":
            allowed = ("invite", "leave", None)
        return self._with(allowed)

    def _try_invite(self) -> Callable[[], str] | None:
        person = self._pick(self._with(("leave", None)))
        if person is None:
            return None

        def run() -> str:
            self._invite(person)
            return f"alice invites {person.name}"

        return run

    def _try_join(self) -> Callable[[], str] | None:
        person = self._pick(self._joinable())
        if person is None:
            return None

        def run() -> str:
            self._join(person)
            return f"{person.name} joins"

        return run

    def _moderate(
        self, action: str, membership: tuple[str | None, ...]
    ) -> Callable[[], str] | None:
        person = self._pick(self._with(membership))
        if person is None:
            return None

        def run() -> str:
            path = f"/rooms/{quote(self.room_id)}/{action}"
            self.alice.user._call("POST", path, {"user_id": person.user_id})
            person.membership = "ban" if action == "ban" else "leave"
            return f"alice {action}s {person.name}"

        return run

    def _try_kick(self) -> Callable[[], str] | None:
        return self._moderate("kick", ("join", "invite"))

    def _try_ban(self) -> Callable[[], str] | None:
        return self._moderate("ban", ("join", "invite", "leave", None))

    def _try_unban(self) -> Callable[[], str] | None:
        return self._moderate("unban", ("ban",))

    def _try_join_leave(self) -> Callable[[], str] | None:
        person = self._pick(self._joinable())
        if person is None:
            return None

        def run() -> str:
            self._join(person)
            person.user.leave(self.room_id)
            person.membership = "leave"
            return f"{person.name} joins and leaves at once"

        return run

    def _try_ignore(self) -> Callable[[], str] | None:
        if self.ignore_changes >= 2:
            return None
        other = self.rng.choice(self.others)

        def run() -> str:
            self.ignore_changes += 1
            self.ignored ^= {other.user_id}
            self.me.user.set_account_data(
                "m.ignored_user_list", {"ignored_users": {u: {} for u in sorted(self.ignored)}}
            )
            verb = "ignores" if other.user_id in self.ignored else "stops ignoring"
            return f"me {verb} {other.name}"

        return run
