"""Session lifecycle and the to_device delivery guarantee (SPEC §4, §8).

Owns the rules that involve every session of a device: eviction on creation, expiry,
deletion with the device, and deletion of to-device messages once every counting
session has confirmed them. SQL is in :mod:`synapse_syncv3.store`; the minimum is the
pure :func:`synapse_syncv3.core.acks.deletable_up_to`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, MutableMapping
from typing import Any

import attrs

from synapse_syncv3 import metrics
from synapse_syncv3.compat import SynapseCompat
from synapse_syncv3.config import SyncV3Config
from synapse_syncv3.core.params import Params
from synapse_syncv3.core.state import SessionState, Snapshot, decode_values
from synapse_syncv3.core.tokens import SinceToken, new_session_id
from synapse_syncv3.errors import unknown_session
from synapse_syncv3.store import LoadedSession, SessionStore, ToDeviceMark

logger = logging.getLogger(__name__)

#: Entries of the known-rooms cache of one module instance.
KNOWN_ROOMS_CACHE_SIZE = 10_000

#: Sessions marked used in one transaction at most (:meth:`SessionManager.mark_used`).
TOUCH_BATCH = 1000
#: Seconds a mark waits before it is written: a request of the same session that
#: starts meanwhile (a long-poll issued again after its timeout reply) marks the session
#: used itself, later, and the mark is dropped.
TOUCH_DELAY_S = 1.0

TO_DEVICE = "to_device"


@attrs.frozen
class SessionRef:
    session_id: str
    #: The params version that applies to the response (new if params changed).
    version: int
    #: The stream state version the response is issued with.
    state: int


class SessionManager:
    def __init__(
        self,
        config: SyncV3Config,
        store: SessionStore,
        synapse: SynapseCompat,
        clock_ms: Callable[[], int],
    ) -> None:
        self._config = config
        self._store = store
        self._synapse = synapse
        self._clock_ms = clock_ms
        # Serialises, per device, session creation against "confirm, compute the
        # minimum, delete" in this process. Across processes the store's per-device
        # guard does the same (SessionStore); this lock only saves database waits.
        self._device_lock = synapse.make_linearizer("syncv3_device")
        #: known_rooms answers by (session, state version, stream, rooms): a version's
        #: rows never change, so a long-polling session asks the database once.
        self._known_rooms: OrderedDict[tuple[Any, ...], frozenset[str]] = OrderedDict()
        #: Sessions to mark used (session id -> time), see :meth:`mark_used`.
        self._to_touch: dict[str, int] = {}
        self._touching = False

    @property
    def _ttl(self) -> int:
        return self._config.session_ttl_ms

    async def load(self, since: SinceToken, user_id: str, device_id: str) -> LoadedSession:
        """The session, params and stream state named by ``since``, or 400
        M_UNKNOWN_SYNC_SESSION."""
        now_ms = self._clock_ms()
        loaded = await self._store.load_session(
            session_id=since.session_id,
            version=since.version,
            state_version=since.state,
            user_id=user_id,
            device_id=device_id,
            now_ms=now_ms,
            ttl_ms=self._ttl,
        )
        if loaded is None:
            raise unknown_session()
        if self._to_touch.get(since.session_id, now_ms + 1) <= now_ms:
            # Loading marked the session used at or after a mark still waiting here.
            del self._to_touch[since.session_id]
        return loaded

    def state_of(self, since: SinceToken | None, loaded: LoadedSession | None) -> SessionState:
        """The stream state as of ``since`` (empty for a new session)."""
        if since is None or loaded is None or loaded.state_json is None:
            return SessionState()
        session_id = since.session_id

        async def read_rooms(
            stream: str, up_to: int, after: int, room_ids: Collection[str] | None
        ) -> set[str]:
            return await self._store.read_sent_rooms(session_id, stream, up_to, after, room_ids)

        async def read_snapshot(snapshot_id: str) -> Snapshot | None:
            return await self._store.read_snapshot(session_id, snapshot_id)

        return SessionState(
            since.state,
            decode_values(loaded.state_json),
            read_rooms,
            _ScopedCache(self._known_rooms, (session_id, since.state)),
            read_snapshot,
        )

    async def start(self, user_id: str, device_id: str, params: Params) -> SessionRef:
        """Insert a new session (SPEC §4.1) before its first response is computed, so
        that it holds back to-device deletion from the start. If the request fails,
        :meth:`discard` it; if it succeeds, :meth:`admit` it."""
        session_id = new_session_id()
        async with self._device_lock.queue((user_id, device_id)):
            pending = await self._store.create_session(
                session_id=session_id,
                user_id=user_id,
                device_id=device_id,
                params_json=params.to_json(),
                wants_to_device=TO_DEVICE in params,
                now_ms=self._clock_ms(),
            )
            try:
                # A deletion decided (on any worker) before this session existed:
                # carry it out before the first delivery reads the inbox.
                await self._delete_up_to(user_id, device_id, pending)
            except BaseException:
                await self._store.delete_session(session_id)
                raise
        return SessionRef(session_id, 1, 0)

    async def admit(self, session: SessionRef, user_id: str, device_id: str) -> None:
        """A new session's first response was computed: make room for it among the
        device's sessions (evict the least recently used, drop expired ones)."""
        now_ms = self._clock_ms()
        async with self._device_lock.queue((user_id, device_id)):
            created = await self._store.make_room(
                session_id=session.session_id,
                user_id=user_id,
                device_id=device_id,
                now_ms=now_ms,
                ttl_ms=self._ttl,
                max_sessions=self._config.max_sessions_per_device,
            )
            if created.evicted or created.expired:
                # The removed sessions may have been the ones blocking deletion.
                await self._delete_confirmed_locked(user_id, device_id, now_ms)
        metrics.SESSIONS_CREATED.inc()
        if created.evicted:
            metrics.SESSIONS_REMOVED.labels(reason="evicted").inc(len(created.evicted))
        if created.expired:
            metrics.SESSIONS_REMOVED.labels(reason="expired").inc(len(created.expired))

    async def protect(
        self, since: SinceToken, user_id: str, device_id: str, old: Params, new: Params
    ) -> ToDeviceMark | None:
        """Before the first computation of a request that (re)starts to_device: count
        the session as having confirmed nothing, so that no deletion passes what its
        first delivery hands out. Returns what to restore if the request fails."""
        if TO_DEVICE not in new or TO_DEVICE in old:
            return None
        async with self._device_lock.queue((user_id, device_id)):
            started = await self._store.start_to_device(since.session_id, user_id, device_id)
            if started is None:
                raise unknown_session()
            mark, pending = started
            try:
                await self._delete_up_to(user_id, device_id, pending)
            except BaseException:
                await self._store.restore_to_device(since.session_id, mark)
                raise
        return mark

    async def unprotect(self, since: SinceToken, mark: ToDeviceMark) -> None:
        """Undo :meth:`protect` for a request that failed."""
        await self._store.restore_to_device(since.session_id, mark)

    async def persist_state(self, session: SessionRef, state: SessionState) -> SessionRef:
        """Write what this response changed in the stream state as a new version; the
        returned ref names it (unchanged when nothing changed)."""
        if not state.changed:
            return session
        version = await self._store.persist_state(session.session_id, state)
        if version is None:
            raise unknown_session()
        return attrs.evolve(session, state=version)

    async def record(
        self,
        since: SinceToken,
        loaded: LoadedSession,
        user_id: str,
        device_id: str,
        old: Params,
        new: Params,
    ) -> SessionRef:
        """Store changed params and the to_device confirmation carried by ``since``,
        then delete what every counting session has confirmed (SPEC §3.5, §8)."""
        changed = not new.same_as(old)
        wants = TO_DEVICE in new
        if not changed and not wants and not loaded.wants_to_device:
            return SessionRef(since.session_id, since.version, since.state)

        confirm = None
        raw = since.positions.get(TO_DEVICE)
        if wants and TO_DEVICE in old and raw is not None:
            # Never confirm beyond what this server has issued.
            current = self._synapse.current_to_device_key()
            confirm = min(int(raw), current)

        stored = loaded.to_device_confirmed
        confirms_nothing_new = confirm is None or (stored is not None and confirm <= stored)
        if (
            not changed
            and wants
            and TO_DEVICE in old
            and loaded.wants_to_device
            and confirms_nothing_new
        ):
            # Nothing to write (a long-poll issued again after a timeout reply): the
            # params, who counts and this session's confirmation are as stored, so no
            # deletion becomes possible through this request either; each change that
            # makes one possible runs its own decision (a confirmation, an eviction,
            # the sweep of an expired session). Skipping never deletes anything.
            return SessionRef(since.session_id, since.version, since.state)

        now_ms = self._clock_ms()
        async with self._device_lock.queue((user_id, device_id)):
            recorded = await self._store.record_request(
                session_id=since.session_id,
                user_id=user_id,
                device_id=device_id,
                new_params_json=new.to_json() if changed else None,
                wants_to_device=wants,
                to_device_restarted=wants and TO_DEVICE not in old,
                confirm_to_device=confirm,
                # Stopping to_device also changes who counts (§8.2 rule 2).
                want_confirmations=wants or loaded.wants_to_device,
                now_ms=now_ms,
                ttl_ms=self._ttl,
            )
            if not recorded.session_exists:
                raise unknown_session()
            await self._delete_up_to(user_id, device_id, recorded.delete_up_to)
        return SessionRef(since.session_id, recorded.new_version or since.version, since.state)

    async def discard(self, session_id: str) -> None:
        """Delete a session whose token was never handed out."""
        await self._store.delete_session(session_id)

    async def touch(self, session_id: str) -> None:
        await self._store.touch(session_id, self._clock_ms())

    def mark_used(self, session_id: str) -> None:
        """Mark a session used as a request's response leaves (SPEC §4.3), in a
        background process; returns at once. The time of the mark is written within
        about :data:`TOUCH_DELAY_S`, unless a request of the session starts first
        (its load marks the session used, later). Sessions marked meanwhile are
        written together, so the long-polls that one notification wakes share a
        transaction instead of one each. Marks not yet written when the process
        stops are lost: the session keeps the start of that request as its last use."""
        self._to_touch[session_id] = self._clock_ms()
        if not self._touching:
            self._touching = True
            self._synapse.in_background("syncv3_touch_sessions", self._write_touches)

    async def _write_touches(self) -> None:
        try:
            await self._synapse.sleep(TOUCH_DELAY_S)
            while self._to_touch:
                batch = self._to_touch
                if len(batch) > TOUCH_BATCH:
                    batch = dict(list(batch.items())[:TOUCH_BATCH])
                    for session_id in batch:
                        del self._to_touch[session_id]
                else:
                    self._to_touch = {}
                await self._store.touch_many(batch)
        finally:
            self._touching = False

    async def on_device_deleted(self, user_id: str, device_id: str) -> None:
        """Delete the sessions of a device that no longer exists (SPEC §4.3)."""
        if not await self._synapse.device_exists(user_id, device_id):
            removed = await self._store.delete_device_sessions(user_id, device_id)
            if removed:
                metrics.SESSIONS_REMOVED.labels(reason="device_deleted").inc(len(removed))
                logger.info(
                    "Deleted %d sync v3 sessions of deleted device %s of %s",
                    len(removed),
                    device_id,
                    user_id,
                )

    async def sweep(self) -> None:
        """Delete expired sessions and those of deleted devices, re-run to_device
        deletion where an expired session was blocking it, and refresh the gauge."""
        now_ms = self._clock_ms()
        batch = 1000
        while True:
            result = await self._store.sweep(now_ms, self._ttl, batch=batch)
            if result.expired:
                metrics.SESSIONS_REMOVED.labels(reason="expired").inc(result.expired)
            if result.device_deleted:
                metrics.SESSIONS_REMOVED.labels(reason="device_deleted").inc(result.device_deleted)
            for user_id, device_id in result.to_device_devices:
                async with self._device_lock.queue((user_id, device_id)):
                    await self._delete_confirmed_locked(user_id, device_id, now_ms)
            if result.expired < batch and result.device_deleted < batch:
                break
        metrics.ACTIVE_SESSIONS.set(await self._store.count_live_sessions(now_ms, self._ttl))

    async def _delete_confirmed_locked(self, user_id: str, device_id: str, now_ms: int) -> None:
        up_to = await self._store.decide_deletion(user_id, device_id, now_ms, self._ttl)
        await self._delete_up_to(user_id, device_id, up_to)

    async def _delete_up_to(self, user_id: str, device_id: str, up_to: int | None) -> None:
        """Carry out a deletion the store decided (or handed back as pending) through
        Synapse's own routine, then mark it done."""
        if up_to is None:
            return
        # Decided on a worker that is ahead of this one (a token to wait for): Synapse's
        # routine skips the deletion when this worker has seen no new message for the
        # user since its last deletion, so catch up first (SPEC §13.3's limit).
        _, ahead = await self._synapse.bound_to_device_key(up_to)
        if ahead is not None and not await self._synapse.wait_for_stream_token(ahead):
            logger.warning(
                "Replication did not reach to-device position %d; deleting anyway", up_to
            )
        deleted = await self._synapse.delete_to_device_messages(user_id, device_id, up_to)
        if deleted:
            metrics.TO_DEVICE_DELETED.inc(deleted)
        await self._store.deletion_done(user_id, device_id, up_to)


class _ScopedCache(MutableMapping[tuple[str, frozenset[str]], frozenset[str]]):
    """One session's state version's view of the known-rooms cache (least recently
    used entries out beyond :data:`KNOWN_ROOMS_CACHE_SIZE`)."""

    def __init__(self, cache: OrderedDict[tuple[Any, ...], frozenset[str]], scope: tuple[Any, ...]):
        self._cache = cache
        self._scope = scope

    def _key(self, key: tuple[str, frozenset[str]]) -> tuple[Any, ...]:
        return self._scope + key

    def __getitem__(self, key: tuple[str, frozenset[str]]) -> frozenset[str]:
        value = self._cache[self._key(key)]
        self._cache.move_to_end(self._key(key))
        return value

    def __setitem__(self, key: tuple[str, frozenset[str]], value: frozenset[str]) -> None:
        self._cache[self._key(key)] = value
        while len(self._cache) > KNOWN_ROOMS_CACHE_SIZE:
            self._cache.popitem(last=False)

    def __delitem__(self, key: tuple[str, frozenset[str]]) -> None:
        del self._cache[self._key(key)]

    def __iter__(self) -> Iterator[tuple[str, frozenset[str]]]:
        size = len(self._scope)
        return (k[size:] for k in list(self._cache) if k[:size] == self._scope)  # type: ignore[misc]

    def __len__(self) -> int:
        return sum(1 for _ in self)
