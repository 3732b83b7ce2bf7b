"""Room state at a room stream position, as the member list needs it.

Synapse area: the state storage controller (``get_state_ids_at`` with a
``StateFilter``), events (``get_events`` with ``EventRedactBehaviour``) and the power
rule of ``synapse.event_auth``; the SQL on ``room_memberships`` is in
``synapse_sql.py``.

Versions: ``get_state_ids_at(..., await_full_state=False)``, ``StateFilter.from_types``,
``EventRedactBehaviour.block`` and ``get_user_power_level(user_id, auth_events)`` (which
gives room creators unlimited power in room versions that have it) are unchanged over
the supported range (1.152.0 to the newest release).
"""

from __future__ import annotations

from synapse.api.constants import EventTypes
from synapse.event_auth import get_user_power_level
from synapse.storage.databases.main.events_worker import EventRedactBehaviour
from synapse.types import RoomStreamToken, StreamKeyType
from synapse.types.state import StateFilter

from synapse_syncv3.compat import synapse_sql
from synapse_syncv3.compat.base import SynapseBase
from synapse_syncv3.core.members import Member

__all__ = ["StateMixin"]


class StateMixin(SynapseBase):
    """Member state of a room at a position (SPEC §7.3)."""

    async def member_state_at(self, room_id: str, position: int) -> list[Member]:
        """The member events of the room's state at a room stream position, with the
        data the member list is sorted by: membership, ``content.displayname`` when it
        is a string (as Synapse stores it in ``room_memberships``), and the power level
        in force (Synapse's own rule, creators' unlimited power included)."""
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
        rows = await synapse_sql.membership_rows(self._store, member_ids)
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
