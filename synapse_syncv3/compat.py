"""Every touch of Synapse internals, in one file.

Everything else in synapse_syncv3 uses either the public ``ModuleApi`` or this module,
so a Synapse release that moves an internal breaks this file only. Supported range:
matrix-synapse 1.152.0 to the newest release (tested: 1.152.0, 1.157.1, 1.163.2).

Version notes (the branch each line serves):

* ``Requester`` is an attrs class up to 1.154 and a Rust class from 1.155; both have
  ``user``, ``device_id`` and ``is_guest``, which is all we read.
* ``Notifier.wait_for_stream_token`` bounds future tokens itself up to 1.15x and
  expects bounded tokens later; we always bound first (harmless on older releases).
* ``synapse.rest.SERVLET_GROUPS`` exists since 1.114; without it the client path is
  not injected and a warning is logged (SPEC §1.3).
* ``Linearizer(name, clock)``, ``Ratelimiter(store, clock, cfg)``,
  ``PresenceHandler.user_syncing``, ``TypingNotificationEventSource.get_new_events``
  (``to_key`` since 1.114) and the device-inbox store methods are unchanged over the
  range.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from synapse.api.errors import SynapseError
from synapse.api.ratelimiting import Ratelimiter
from synapse.http.servlet import RestServlet
from synapse.logging.context import make_deferred_yieldable, run_in_background
from synapse.rest.client._base import client_patterns
from synapse.types import StreamKeyType, StreamToken
from synapse.util.async_helpers import Linearizer, ObservableDeferred
from synapse.util.cancellation import cancellable

from synapse_syncv3.core.members import Member

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "ObservableDeferred",
    "RestServlet",
    "SynapseCompat",
    "SynapseError",
    "cancellable",
    "client_sync_patterns",
    "make_deferred_yieldable",
    "run_in_background",
    "synapse_version",
]

#: SQL condition, over ``syncv3_sessions AS s``, that the session's device still
#: exists in Synapse's ``devices`` table (read only; used by the session sweep).
DEVICE_EXISTS_SQL = (
    "EXISTS (SELECT 1 FROM devices AS d WHERE d.user_id = s.user_id AND d.device_id = s.device_id)"
)


def synapse_version() -> tuple[int, int, int]:
    """The running Synapse release as a tuple, e.g. (1, 163, 2)."""
    import synapse

    numbers = [int(part) for part in re.findall(r"\d+", synapse.__version__)[:3]]
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


def client_sync_patterns() -> Iterable[re.Pattern[str]]:
    """The very same path regex as Synapse's ``SyncRestServlet``.

    ``JsonResource`` files a POST servlet registered with an identical compiled
    pattern next to Synapse's GET in one route entry; any other regex that matches
    the same paths would never be reached (SYNAPSE-NOTES §2.3).
    """
    return client_patterns("/sync$")


# Per homeserver: what registers the module's servlets on Synapse's client resource.
# Synapse calls the registration functions of SERVLET_GROUPS with its HomeServer; one
# process may host several homeservers (Synapse's own test harness does).
_CLIENT_SERVLETS: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = (
    weakref.WeakKeyDictionary()
)


def _register_module_client_servlets(hs: Any, http_server: Any) -> None:
    register = _CLIENT_SERVLETS.get(hs)
    if register is not None:
        register(http_server)


def inject_client_servlet(api: ModuleApi, register: Callable[[Any], None]) -> str | None:
    """Have ``register(http_server)`` called when Synapse builds its client API
    resource (on the main process and on generic workers).

    Must run before Synapse starts listening, i.e. from the module's ``__init__``.
    Returns None on success, or the reason it is impossible on this Synapse.
    """
    try:
        import synapse.rest as rest
    except ImportError as e:  # pragma: no cover - Synapse always has it
        return f"cannot import synapse.rest ({e})"
    groups = getattr(rest, "SERVLET_GROUPS", None)
    if not isinstance(groups, dict) or "client" not in groups:
        return "synapse.rest.SERVLET_GROUPS['client'] does not exist on this Synapse"
    current = tuple(groups["client"])
    if _register_module_client_servlets not in current:
        groups["client"] = (*current, _register_module_client_servlets)
    _CLIENT_SERVLETS[api._hs] = register
    return None


JsonDict = dict[str, Any]


@attrs.frozen
class MembershipView:
    """A local user's relation to a room, as far as its member list is concerned."""

    #: Current membership: join, invite, knock, leave, ban, forgotten, or None.
    membership: str | None
    #: Room stream position of the leave/kick/ban event of a user who was joined.
    left_at: int | None
    world_readable: bool


class SynapseCompat:
    """Synapse's internals, as the module needs them."""

    def __init__(self, api: ModuleApi) -> None:
        hs = api._hs  # this class is the one place where internals are reached
        self._hs = hs
        # Typed as Any: mypy cannot see through Synapse's cache descriptors.
        self._store: Any = hs.get_datastores().main
        self._event_sources = hs.get_event_sources()
        self._notifier = hs.get_notifier()
        self._clock = hs.get_clock()
        self._presence_handler = hs.get_presence_handler()
        self._server_notices_sender = hs.get_server_notices_sender()
        self._presence_limiter = Ratelimiter(
            store=self._store,
            clock=self._clock,
            cfg=hs.config.ratelimiting.rc_presence_per_user,
        )

    @property
    def clock(self) -> Any:
        return self._clock

    def make_linearizer(self, name: str) -> Linearizer:
        return Linearizer(name=name, clock=self._clock)

    # -- requests and requesters ---------------------------------------------------

    @staticmethod
    def requester_identity(requester: Any) -> tuple[str, str | None, bool]:
        """(user_id, device_id, is_guest) of a Requester (attrs ≤1.154, Rust ≥1.155)."""
        return requester.user.to_string(), requester.device_id, bool(requester.is_guest)

    @staticmethod
    def is_disconnected(request: Any) -> bool:
        """Whether the client of a SynapseRequest has gone away."""
        return bool(getattr(request, "_disconnected", False))

    async def presence_context(
        self, requester: Any, set_presence: str
    ) -> AbstractContextManager[None]:
        """Mark the user as syncing, exactly as Synapse's v2 ``SyncRestServlet`` does
        (including its per-user presence rate limit)."""
        user_id, device_id, _ = self.requester_identity(requester)
        allowed, _ = await self._presence_limiter.can_do_action(requester)
        affect_presence = allowed and set_presence != "offline"
        return await self._presence_handler.user_syncing(
            user_id,
            device_id,
            affect_presence=affect_presence,
            presence_state=set_presence,
        )

    async def on_user_syncing(self, user_id: str) -> None:
        """Let Synapse send outstanding server notices, as v2 sync does."""
        await self._server_notices_sender.on_user_syncing(user_id)

    # -- positions and waiting -----------------------------------------------------

    def current_token(self) -> StreamToken:
        return self._event_sources.get_current_token()

    @staticmethod
    def typing_key(token: StreamToken) -> int:
        return int(token.typing_key)

    @staticmethod
    def to_device_key(token: StreamToken) -> int:
        return int(token.to_device_key)

    def current_typing_key(self) -> int:
        return int(self._event_sources.sources.typing.get_current_key())

    async def bound_to_device_position(self, position: int) -> StreamToken:
        """The current token with the to-device position replaced by ``position``,
        clamped to what this homeserver has allocated.

        Like ``EventSources.bound_future_token``, but quiet: a position from a since
        token is client input, and Synapse logs an ERROR when it bounds one.
        """
        token = self.current_token()
        id_gen = self._store.get_to_device_id_generator()
        position = await _bounded(position, int(token.to_device_key), id_gen)
        return token.copy_and_replace(StreamKeyType.TO_DEVICE, position)

    async def wait_for_stream_token(self, token: StreamToken) -> bool:
        """Wait (up to Synapse's limit, 10 s) until this worker has caught up with
        ``token``; False if it did not (SPEC §13.3)."""
        return bool(await self._notifier.wait_for_stream_token(token))

    async def wait_for_events(
        self,
        user_id: str,
        timeout_ms: int,
        callback: Callable[[], Awaitable[T | None]],
        from_token: StreamToken,
    ) -> T | None:
        """Wait on Synapse's notifier until ``callback`` returns a truthy value or the
        timeout expires. The notifier wakes a user for activity of any stream, and the
        tokens it passes may be ahead of each other in any field, so the callback
        ignores them and recomputes from a fresh current token."""

        async def on_wake(_before: StreamToken, _after: StreamToken) -> T | None:
            return await callback()

        return await self._notifier.wait_for_events(
            user_id, timeout_ms, on_wake, from_token=from_token
        )

    # -- rooms and typing ----------------------------------------------------------

    async def joined_rooms(self, user_id: str) -> frozenset[str]:
        return frozenset(await self._store.get_rooms_for_user(user_id))

    async def typing_in_rooms(
        self, user_id: str, room_ids: Collection[str], from_key: int, to_key: int | None
    ) -> dict[str, list[str]]:
        """Current typing users of the rooms whose typing set changed in
        (from_key, to_key]; rooms that did not change are absent."""
        if not room_ids:
            return {}
        source = self._event_sources.sources.typing
        events, _ = await source.get_new_events(
            user=_user_id(user_id),
            from_key=from_key,
            to_key=to_key,
            limit=len(room_ids),
            room_ids=room_ids,
            is_guest=False,
        )
        return {event["room_id"]: list(event["content"]["user_ids"]) for event in events}

    # -- to-device -----------------------------------------------------------------

    async def to_device_messages(
        self, user_id: str, device_id: str, from_key: int, to_key: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Messages with from_key < id <= to_key, oldest first, at most ``limit``, and
        the position to continue from (the last id returned if the limit cut)."""
        messages, last = await self._store.get_messages_for_device(
            user_id, device_id, from_key, to_key, limit
        )
        return list(messages), int(last)

    async def delete_to_device_messages(self, user_id: str, device_id: str, up_to: int) -> int:
        """Delete messages with id <= up_to through Synapse's own routine."""
        return int(await self._store.delete_messages_for_device(user_id, device_id, up_to))

    async def device_exists(self, user_id: str, device_id: str) -> bool:
        return await self._store.get_device(user_id, device_id) is not None

    # -- room members (SPEC §7.3) ----------------------------------------------------

    def room_key(self, token: StreamToken) -> int:
        """The room event stream position of a token (its minimum over event writers,
        so that with several event persisters nothing is skipped)."""
        return int(token.room_key.stream)

    async def bound_room_position(self, position: int) -> StreamToken:
        """The current token with the room position replaced by ``position``, clamped
        (quietly) to what the homeserver has allocated."""
        from synapse.types import RoomStreamToken

        token = self.current_token()
        id_gen = self._store.get_events_stream_id_generator()
        position = await _bounded(position, int(token.room_key.stream), id_gen)
        return token.copy_and_replace(StreamKeyType.ROOM, RoomStreamToken(stream=position))

    def room_changed_since(self, room_id: str, position: int) -> bool:
        """False only if the room certainly has no event after ``position`` (Synapse's
        in-memory stream change cache; cheap enough for every notifier wake)."""
        from synapse.types import RoomStreamToken

        changed = self._store.get_rooms_that_changed([room_id], RoomStreamToken(stream=position))
        return room_id in changed

    async def membership_view(self, user_id: str, room_id: str) -> MembershipView:
        """What a local user may see of a room's member list (SPEC §7.3)."""
        membership, event_id = await self._store.get_local_current_membership_for_user_in_room(
            user_id, room_id
        )
        world_readable = False
        state = self._hs.get_storage_controllers().state
        visibility = await state.get_current_state_event(room_id, "m.room.history_visibility", "")
        if visibility is not None:
            world_readable = visibility.content.get("history_visibility") == "world_readable"
        left_at: int | None = None
        if membership in ("leave", "ban") and event_id is not None:
            if await self._store.did_forget(user_id, room_id):
                membership = "forgotten"
            elif await self._ever_joined(user_id, room_id):
                left_at = int((await self._store.get_position_for_event(event_id)).stream)
        return MembershipView(membership, left_at, world_readable)

    async def _ever_joined(self, user_id: str, room_id: str) -> bool:
        def txn(cursor: Any) -> bool:
            cursor.execute(
                "SELECT 1 FROM room_memberships WHERE room_id = ? AND user_id = ?"
                " AND membership = 'join' LIMIT 1",
                (room_id, user_id),
            )
            return cursor.fetchone() is not None

        return bool(await self._store.db_pool.runInteraction("syncv3_ever_joined", txn))

    async def member_state_at(self, room_id: str, position: int) -> list[Member]:
        """The member events of the room's state at a room stream position, with the
        data the member list is sorted by: membership, ``content.displayname`` when it
        is a string (as Synapse stores it in ``room_memberships``), and the power level
        in force (Synapse's own rule, creators' unlimited power included)."""
        from synapse.api.constants import EventTypes
        from synapse.event_auth import get_user_power_level
        from synapse.storage.database import make_in_list_sql_clause
        from synapse.storage.databases.main.events_worker import EventRedactBehaviour
        from synapse.storage.engines import PostgresEngine
        from synapse.types import RoomStreamToken
        from synapse.types.state import StateFilter
        from synapse.util.iterutils import batch_iter

        token = self.current_token().copy_and_replace(
            StreamKeyType.ROOM, RoomStreamToken(stream=position)
        )
        state_ids = await self._hs.get_storage_controllers().state.get_state_ids_at(
            room_id,
            token,
            state_filter=StateFilter.from_types(
                [
                    (EventTypes.Member, None),
                    (EventTypes.PowerLevels, ""),
                    (EventTypes.Create, ""),
                ]
            ),
            await_full_state=False,
        )
        auth_ids = [
            state_ids[key]
            for key in ((EventTypes.Create, ""), (EventTypes.PowerLevels, ""))
            if key in state_ids
        ]
        auth_events = await self._store.get_events(
            auth_ids, redact_behaviour=EventRedactBehaviour.block
        )
        by_key = {(e.type, e.state_key): e for e in auth_events.values()}
        if (EventTypes.Create, "") not in by_key:
            return []
        member_ids = [
            event_id for (kind, _), event_id in state_ids.items() if kind == EventTypes.Member
        ]
        engine = self._store.database_engine
        # One statement on PostgreSQL (``= ANY``); batches within SQLite's limit of
        # bound variables.
        batch = max(1, len(member_ids)) if isinstance(engine, PostgresEngine) else 500

        def txn(cursor: Any) -> list[tuple[str, str, str, str | None]]:
            rows: list[tuple[str, str, str, str | None]] = []
            for chunk in batch_iter(member_ids, batch):
                clause, args = make_in_list_sql_clause(engine, "event_id", chunk)
                cursor.execute(
                    "SELECT event_id, user_id, membership, display_name FROM room_memberships"
                    " WHERE " + clause,
                    args,
                )
                rows.extend(cursor.fetchall())
            return rows

        rows = await self._store.db_pool.runInteraction("syncv3_member_state", txn)
        # Synapse's own rule, asked once for everybody it can differ for (users named in
        # the power levels, creators) and once for "anybody else".
        create = by_key[(EventTypes.Create, "")]
        levels = by_key.get((EventTypes.PowerLevels, ""))
        users = levels.content.get("users") if levels is not None else None
        named = [*(users if isinstance(users, dict) else ()), create.sender]
        for creators in (create.content.get("creator"), create.content.get("additional_creators")):
            named.extend(creators if isinstance(creators, list) else [creators])
        special = {u: get_user_power_level(u, by_key) for u in named if isinstance(u, str)}
        anybody = get_user_power_level("@\x00anybody:invalid", by_key)
        return [
            Member(
                event_id=event_id,
                user_id=member,
                membership=membership,
                display_name=display_name,
                power=special.get(member, anybody),
            )
            for event_id, member, membership, display_name in rows
        ]

    async def member_event_ids_between(
        self, room_id: str, after: int, up_to: int, limit: int
    ) -> list[tuple[str, int]]:
        """(event id, stream position) of the room's ``m.room.member`` events with
        after < position <= up_to, oldest first, at most ``limit``."""

        def txn(cursor: Any) -> list[tuple[str, int]]:
            cursor.execute(
                "SELECT e.event_id, e.stream_ordering FROM events AS e"
                " LEFT JOIN rejections AS r ON r.event_id = e.event_id"
                " WHERE e.room_id = ? AND e.type = 'm.room.member' AND NOT e.outlier"
                " AND r.event_id IS NULL AND e.stream_ordering > ? AND e.stream_ordering <= ?"
                " ORDER BY e.stream_ordering ASC LIMIT ?",
                (room_id, after, up_to, limit),
            )
            return [(event_id, int(position)) for event_id, position in cursor.fetchall()]

        return list(await self._store.db_pool.runInteraction("syncv3_member_events", txn))

    async def serialized_state_events(self, requester: Any, event_ids: list[str]) -> list[JsonDict]:
        """State events in client format (SPEC §1.5), in the order of ``event_ids``,
        without a visibility filter: the caller decided the user may see them."""
        from synapse.events.utils import FilteredEvent

        events = await self._store.get_events(event_ids, get_prev_content=False)
        present = [FilteredEvent.state(events[e]) for e in event_ids if e in events]
        return await self._serialize(requester, present)

    async def visible_serialized_events(
        self, requester: Any, event_ids: list[str], is_peeking: bool
    ) -> list[JsonDict]:
        """Events in client format, after Synapse's own visibility filter (history
        visibility, erasure, soft failure), in the order of ``event_ids``."""
        from synapse.visibility import filter_and_transform_events_for_client

        user_id = requester.user.to_string()
        events = await self._store.get_events_as_list(event_ids, get_prev_content=True)
        filtered = await filter_and_transform_events_for_client(
            self._hs.get_storage_controllers(), user_id, events, is_peeking=is_peeking
        )
        return await self._serialize(requester, filtered)

    async def _serialize(self, requester: Any, filtered: list[Any]) -> list[JsonDict]:
        """Serialize ``FilteredEvent``s the way v2 sync serializes timeline events."""
        serializer = self._hs.get_event_client_serializer()
        if hasattr(serializer, "create_config"):  # 1.157 and later
            from synapse.events.utils import EventFormat  # type: ignore[attr-defined]

            config = await serializer.create_config(
                requester=requester, event_format=EventFormat.ClientV2WithoutRoomId
            )
        else:  # 1.152 to 1.156
            from synapse.events.utils import (
                SerializeEventConfig,
                format_event_for_client_v2_without_room_id,  # type: ignore[attr-defined]
            )

            config = SerializeEventConfig(  # type: ignore[call-arg]
                event_format=format_event_for_client_v2_without_room_id,  # type: ignore[arg-type]
                requester=requester,
            )
        return list(
            await serializer.serialize_events(filtered, self._clock.time_msec(), config=config)
        )

    # -- receipts and account data (SPEC §7.6, §7.7) -----------------------------------

    @staticmethod
    def receipt_key(token: StreamToken) -> Any:
        """The receipt position (a ``MultiWriterStreamToken``) of a StreamToken."""
        return token.receipt_key

    @staticmethod
    def receipts_ahead(key: Any, since: Any) -> bool:
        """Whether receipt position ``key`` is past ``since`` for some writer."""
        return not key.is_before_or_eq(since)

    @staticmethod
    def later_receipt_key(a: Any, b: Any) -> Any:
        """The receipt position at or after both ``a`` and ``b``."""
        return a.copy_and_advance(b)

    async def receipt_position_string(self, key: Any) -> str:
        """Synapse's own wire form of a receipt position: ``12`` or ``m12~1.14~2.13``."""
        return str(await key.to_string(self._store))

    async def bound_receipt_position(
        self, stream: int, writers: Iterable[tuple[int, int]]
    ) -> StreamToken:
        """The current token with the receipt position replaced by the one given in
        Synapse's wire form (``stream``, and ``(instance id, position)`` of writers
        ahead of it, all positions > ``stream``), clamped to what this homeserver has
        allocated.

        ``MultiWriterStreamToken.parse`` and ``EventSources.bound_future_token`` log an
        ERROR for bad or future positions; a position from a since token is client
        input, so this resolves and bounds it quietly. A writer id this homeserver
        does not know is dropped: the position falls back to ``stream`` for it, which
        only means delivering again (never losing) that writer's receipts.
        """
        from synapse.types import MultiWriterStreamToken

        key = MultiWriterStreamToken(stream=stream, instance_map=await self._writers(writers))
        token = self.current_token()
        id_gen = self._store.get_receipts_stream_id_gen()
        key = await _bounded_multi_writer(key, token.receipt_key, id_gen)
        return token.copy_and_replace(StreamKeyType.RECEIPT, key)

    async def receipts_in_rooms(
        self, user_id: str, room_ids: Collection[str], from_key: Any | None, to_key: Any
    ) -> dict[str, dict[str, Any]]:
        """``{room_id: content of m.receipt}`` of the rooms with receipts in
        (from_key, to_key] (all current receipts when ``from_key`` is None), with other
        users' private read receipts removed, as v2 sync gives them."""
        if not room_ids:
            return {}
        source = self._event_sources.sources.receipt
        if from_key is None:
            events = await self._store.get_linearized_receipts_for_rooms(room_ids, to_key=to_key)
            events = source.filter_out_private_receipts(events, user_id)
        else:
            events, _ = await source.get_new_events(
                user=_user_id(user_id),
                from_key=from_key,
                to_key=to_key,
                limit=len(room_ids),
                room_ids=room_ids,
                is_guest=False,
            )
        rooms: dict[str, dict[str, Any]] = {}
        for event in events:
            content = rooms.setdefault(event["room_id"], {})
            for event_id, by_type in event["content"].items():
                for receipt_type, by_user in by_type.items():
                    # Copies: the events come from Synapse's caches.
                    content.setdefault(event_id, {}).setdefault(receipt_type, {}).update(by_user)
        return rooms

    @staticmethod
    def account_data_keys(token: StreamToken) -> tuple[int, int]:
        """(account data position, push rules position) of a StreamToken."""
        return int(token.account_data_key), int(token.push_rules_key)

    async def bound_account_data_position(self, account_data: int, push_rules: int) -> StreamToken:
        """The current token with the account-data and push-rules positions replaced,
        each clamped to what this homeserver has allocated (quietly, like
        ``bound_to_device_position``)."""
        token = self.current_token()
        account_data = await _bounded(
            account_data,
            int(token.account_data_key),
            self._store.get_account_data_id_generator(),
        )
        push_rules = await _bounded(
            push_rules, int(token.push_rules_key), self._store.get_push_rules_stream_id_gen()
        )
        token = token.copy_and_replace(StreamKeyType.ACCOUNT_DATA, account_data)
        return token.copy_and_replace(StreamKeyType.PUSH_RULES, push_rules)

    async def global_account_data(self, user_id: str, since: int | None) -> dict[str, Any]:
        """``{type: content}`` of the user's global account data (changed after
        ``since``, or all when None), without ``m.push_rules``. Deleted entries have
        content ``{}``, as in v2 sync."""
        if since is None:
            return dict(await self._store.get_global_account_data_for_user(user_id))
        return dict(await self._store.get_updated_global_account_data_for_user(user_id, since))

    async def room_account_data(self, user_id: str, since: int | None) -> dict[str, dict[str, Any]]:
        """``{room_id: {type: content}}`` of the user's room account data (changed
        after ``since``, or all when None), with the room tags as ``m.tag`` as v2 sync
        gives them (``{"tags": {}}`` for a room whose last tag was removed)."""
        if since is None:
            data = await self._store.get_room_account_data_for_user(user_id)
            tags = await self._store.get_tags_for_user(user_id)
        else:
            data = await self._store.get_updated_room_account_data_for_user(user_id, since)
            tags = await self._store.get_updated_tags(user_id, since)
        rooms = {room_id: dict(by_type) for room_id, by_type in data.items()}
        for room_id, room_tags in tags.items():
            rooms.setdefault(room_id, {})["m.tag"] = {"tags": dict(room_tags)}
        return rooms

    async def push_rules_changed(self, user_id: str, since: int) -> bool:
        return bool(await self._store.have_push_rules_changed_for_user(user_id, since))

    async def push_rules_content(self, user_id: str) -> dict[str, Any]:
        """The content of the global ``m.push_rules`` account data, as v2 sync
        builds it."""
        handler = self._hs.get_push_rules_handler()
        return dict(await handler.push_rules_for_user(_user_id(user_id)))

    # -- presence and e2ee (SPEC §7.8, §7.9) -------------------------------------------

    def presence_enabled(self) -> bool:
        """Whether Synapse has presence enabled (``presence.enabled``, also "untracked")."""
        return bool(self._hs.config.server.presence_enabled)

    @staticmethod
    def presence_key(token: StreamToken) -> int:
        return int(token.presence_key)

    async def bound_presence_position(self, position: int) -> StreamToken:
        """The current token with the presence position replaced by ``position``,
        clamped to what this homeserver has allocated (quietly, as
        :meth:`bound_to_device_position`)."""
        token = self.current_token()
        id_gen = self._store.get_presence_stream_id_gen()
        position = await _bounded(position, int(token.presence_key), id_gen)
        return token.copy_and_replace(StreamKeyType.PRESENCE, position)

    async def presence_events(
        self, user_id: str, is_guest: bool, from_key: int | None
    ) -> tuple[list[dict[str, Any]], int]:
        """``m.presence`` events of the users the user may see (those sharing a room,
        the user, and whoever a presence router adds) whose presence changed after
        ``from_key`` (None: everyone's current presence), formatted as v2 sync does,
        and the presence position they go up to.

        Offline users are left out when ``from_key`` is None unless Synapse is
        configured to include them on initial sync (the rule of v2 sync).
        """
        from synapse.handlers.presence import format_user_presence_state

        include_offline = (
            from_key is not None or self._hs.config.server.presence_include_offline_users_on_sync
        )
        states, key = await self._event_sources.sources.presence.get_new_events(
            user=_user_id(user_id),
            from_key=from_key,
            is_guest=is_guest,
            include_offline=bool(include_offline),
        )
        now_ms = self._clock.time_msec()
        events = [
            {
                "type": "m.presence",
                "sender": state.user_id,
                "content": format_user_presence_state(state, now_ms, include_user_id=False),
            }
            for state in states
        ]
        return events, int(key)

    async def e2ee_position_string(self, token: StreamToken) -> str:
        """The room and device-list positions of ``token`` as ``<room>_<device lists>``,
        each in Synapse's own string form (``s12`` / ``m12~1.14`` and ``7`` /
        ``m7~1.9``). The room position is needed because ``device_lists.left`` and
        newly shared users come from membership changes."""
        room = await token.room_key.to_string(self._store)
        devices = await token.device_list_key.to_string(self._store)
        return f"{room}_{devices}"

    async def load_e2ee_position(self, raw: str) -> StreamToken:
        """The current token with the room and device-list positions of ``raw`` (a
        string of :meth:`e2ee_position_string` whose syntax the caller checked),
        each clamped to what this homeserver has allocated.

        Parsed here rather than with Synapse's ``parse``, which logs an ERROR for an
        unknown writer instance id: such an entry (client input) is dropped, which
        only moves the position back (at-least-once delivery).
        """
        room_raw, devices_raw = raw.split("_", 1)
        now = self.current_token()
        room = await self._multi_writer_token(now.room_key, room_raw[1:])
        devices = await self._multi_writer_token(
            now.device_list_key, devices_raw[1:] if devices_raw[0] == "m" else devices_raw
        )
        room = await _bounded_multi_writer(
            room, now.room_key, self._store.get_events_stream_id_generator()
        )
        devices = await _bounded_multi_writer(
            devices, now.device_list_key, self._store.get_device_stream_id_generator()
        )
        return now.copy_and_replace(StreamKeyType.ROOM, room).copy_and_replace(
            StreamKeyType.DEVICE_LIST, devices
        )

    async def _multi_writer_token(self, template: Any, raw: str) -> Any:
        """A multi-writer token of ``template``'s class from ``N`` or ``N~id.pos~…``
        (Synapse's string form without its prefix); entries of unknown instance ids
        and entries not ahead of ``N`` are dropped.

        Only PostgreSQL deployments have several writers per stream (and the
        ``instance_map`` table): on SQLite every entry is unknown.
        """
        from attrs import evolve

        stream_raw, *entries = raw.split("~")
        stream = int(stream_raw)
        writers = [(int(i), int(pos)) for i, pos in (entry.split(".") for entry in entries)]
        ahead = [(instance_id, pos) for instance_id, pos in writers if pos > stream]
        return evolve(template, stream=stream, instance_map=await self._writers(ahead))

    async def _writers(self, writers: Iterable[tuple[int, int]]) -> Any:
        """The ``instance_map`` of a multi-writer token from ``(instance id, position)``
        pairs of a since token, resolved quietly (Synapse's ``parse`` logs an ERROR for
        an unknown id): unknown ids are dropped, so the position falls back to the
        token's minimum for that writer, which only means delivering again (never
        losing). Only PostgreSQL deployments have several writers per stream (and the
        ``instance_map`` table): on SQLite every entry is dropped."""
        from immutabledict import immutabledict
        from synapse.api.errors import StoreError
        from synapse.storage.engines import PostgresEngine

        instance_map: dict[str, int] = {}
        if isinstance(self._store.database_engine, PostgresEngine):
            for instance_id, position in writers:
                try:
                    name = await self._store.get_name_from_instance_id(instance_id)
                except StoreError:
                    continue
                instance_map[str(name)] = position
        return immutabledict(instance_map)

    @staticmethod
    def e2ee_position_behind(position: StreamToken, now: StreamToken) -> bool:
        """Whether the room or device-list stream moved in (position, now]."""
        return not (
            now.room_key.is_before_or_eq(position.room_key)
            and now.device_list_key.is_before_or_eq(position.device_list_key)
        )

    async def device_list_changes(
        self, user_id: str, from_token: StreamToken
    ) -> tuple[list[str], list[str]]:
        """``(changed, left)`` since ``from_token`` up to the current token, exactly
        as v2 sync computes ``device_lists``."""
        updates = await self._hs.get_device_handler().get_user_ids_changed(user_id, from_token)
        return sorted(updates.changed), sorted(updates.left)

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """One-time-key counts of the device; ``signed_curve25519`` always present."""
        counts = dict(await self._store.count_e2e_one_time_keys(user_id, device_id))
        counts.setdefault("signed_curve25519", 0)
        return counts

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        return list(await self._store.get_e2e_unused_fallback_key_types(user_id, device_id))


async def _bounded(position: int, current: int, id_gen: Any) -> int:
    """A stream position from a since token, bounded quietly (Synapse's
    ``bound_future_token`` logs an ERROR, and this is client input): kept if this
    worker has reached it; if ahead, kept up to what the stream has allocated (this
    worker lags: the caller waits for replication), clamped beyond (never issued)."""
    if position <= current:
        return position
    return min(position, int(await id_gen.get_max_allocated_token()))


async def _bounded_multi_writer(key: Any, current: Any, id_gen: Any) -> Any:
    """:func:`_bounded` for a multi-writer token (receipts, device lists, rooms)."""
    if key.is_before_or_eq(current):
        return key
    return key.bound_stream_token(int(await id_gen.get_max_allocated_token()))


def _user_id(user_id: str) -> Any:
    from synapse.types import UserID

    return UserID.from_string(user_id)
