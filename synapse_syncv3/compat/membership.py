"""Room membership of local users: joined rooms, what a user may see of a room's member
list, and the member events of a stretch of the room stream.

Synapse area: the room member store (``get_rooms_for_user``,
``get_local_current_membership_for_user_in_room``, ``did_forget``,
``get_position_for_event``) and the current state of ``m.room.history_visibility``;
the SQL on ``room_memberships`` and ``events`` is in ``synapse_sql.py``.

Versions: every store and state-controller method used here is unchanged over the
supported range (1.152.0 to the newest release).
"""

from __future__ import annotations

import attrs
from synapse.api.constants import EventTypes

from synapse_syncv3.compat import synapse_sql
from synapse_syncv3.compat.base import SynapseBase

__all__ = ["MembershipMixin", "MembershipView"]


@attrs.frozen
class MembershipView:
    """A local user's relation to a room, as far as its member list is concerned."""

    #: Current membership: join, invite, knock, leave, ban, forgotten, or None.
    membership: str | None
    #: Room stream position of the leave/kick/ban event of a user who was joined.
    left_at: int | None
    world_readable: bool


class MembershipMixin(SynapseBase):
    """Joined rooms and member-list access (SPEC §7.3)."""

    async def joined_rooms(self, user_id: str) -> frozenset[str]:
        return frozenset(await self._store.get_rooms_for_user(user_id))

    async def membership_view(self, user_id: str, room_id: str) -> MembershipView:
        """What a local user may see of a room's member list (SPEC §7.3)."""
        membership, event_id = await self._store.get_local_current_membership_for_user_in_room(
            user_id, room_id
        )
        world_readable = False
        state = self._hs.get_storage_controllers().state
        visibility = await state.get_current_state_event(
            room_id, EventTypes.RoomHistoryVisibility, ""
        )
        if visibility is not None:
            world_readable = visibility.content.get("history_visibility") == "world_readable"
        left_at: int | None = None
        if membership in ("leave", "ban") and event_id is not None:
            if await self._store.did_forget(user_id, room_id):
                membership = "forgotten"
            elif await synapse_sql.ever_joined(self._store, user_id, room_id):
                left_at = int((await self._store.get_position_for_event(event_id)).stream)
        return MembershipView(membership, left_at, world_readable)

    async def member_event_ids_between(
        self, room_id: str, after: int, up_to: int, limit: int
    ) -> list[tuple[str, int]]:
        """(event id, stream position) of the room's ``m.room.member`` events with
        after < position <= up_to, oldest first, at most ``limit``."""
        return await synapse_sql.member_event_ids_between(self._store, room_id, after, up_to, limit)
