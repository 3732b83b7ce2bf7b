"""Every touch of Synapse internals, in one package: one file per Synapse area, behind
the :class:`SynapseCompat` facade the rest of the module uses (``ctx.synapse``).

Everything else in synapse_syncv3 uses either the public ``ModuleApi`` or this package,
so a Synapse release that moves an internal breaks this package only. Every Synapse
name is imported at the top of the area file that uses it, so such a release fails at
import time and in the type check, not at first use; where a name exists only in some
releases, the area file branches at import and says which releases each branch serves.

Supported range: matrix-synapse 1.152.0 to the newest release (tested: 1.152.0,
1.157.1, 1.163.2).

==================  ============================================================
File                Synapse area
==================  ============================================================
``base.py``         ``HomeServer`` collaborators, current token, clock, linearizers,
                    deferred and logging-context helpers
``positions.py``    stream tokens: reading positions, binding since-token positions
                    (quietly), writer ids of multi-writer positions
``notifier.py``     the notifier: waiting for replication and for a user's activity
``membership.py``   joined rooms, a user's membership and view of a member list
``state.py``        room state at a position (member list, power levels)
``timeline.py``     visibility filter and event serializer (1.152–1.156 / 1.157+)
``rooms.py``        room_data: memberships and their changes, timelines, state at
                    positions, stripped invite/knock state, prev_batch tokens
``room_list.py``    room_list: listed rooms, sort inputs in bulk, names, member
                    and unread counts, current state, latest events of many rooms
``ephemeral.py``    typing, receipts, presence
``account_data.py`` account data, tags, push rules
``devices.py``      device existence, to-device inbox, device lists, e2ee key counts
``http_glue.py``    Synapse version, servlet injection, requester identity,
                    disconnection, presence mark and server notices on sync
``synapse_sql.py``  every SQL statement on Synapse's own tables
==================  ============================================================
"""

from __future__ import annotations

from synapse_syncv3.compat.account_data import AccountDataMixin
from synapse_syncv3.compat.base import (
    JsonDict,
    ObservableDeferred,
    make_deferred_yieldable,
    run_in_background,
)
from synapse_syncv3.compat.devices import DevicesMixin
from synapse_syncv3.compat.ephemeral import EphemeralMixin
from synapse_syncv3.compat.http_glue import (
    HttpGlueMixin,
    RestServlet,
    SynapseError,
    cancellable,
    client_sync_patterns,
    inject_client_servlet,
    synapse_version,
)
from synapse_syncv3.compat.membership import MembershipMixin, MembershipView
from synapse_syncv3.compat.notifier import Listening, NotifierMixin
from synapse_syncv3.compat.positions import PositionsMixin
from synapse_syncv3.compat.room_list import RoomListMixin
from synapse_syncv3.compat.rooms import RoomsMixin
from synapse_syncv3.compat.state import StateMixin
from synapse_syncv3.compat.synapse_sql import DEVICE_EXISTS_SQL, INBOX_HAS_MESSAGES_SQL
from synapse_syncv3.compat.timeline import TimelineMixin

__all__ = [
    "DEVICE_EXISTS_SQL",
    "INBOX_HAS_MESSAGES_SQL",
    "JsonDict",
    "Listening",
    "MembershipView",
    "ObservableDeferred",
    "RestServlet",
    "SynapseCompat",
    "SynapseError",
    "cancellable",
    "client_sync_patterns",
    "inject_client_servlet",
    "make_deferred_yieldable",
    "run_in_background",
    "synapse_version",
]


class SynapseCompat(
    HttpGlueMixin,
    NotifierMixin,
    PositionsMixin,
    MembershipMixin,
    StateMixin,
    RoomListMixin,
    RoomsMixin,
    TimelineMixin,
    EphemeralMixin,
    AccountDataMixin,
    DevicesMixin,
):
    """Synapse's internals, as the module needs them: one mixin per area file, all on
    :class:`~synapse_syncv3.compat.base.SynapseBase`; ``__init__(api)`` runs each
    area's own set-up cooperatively."""
