"""Events in client format: Synapse's visibility filter and its event serializer.

Synapse area: ``synapse.visibility`` (``filter_and_transform_events_for_client``) and
``synapse.events.utils`` (``FilteredEvent``, ``EventClientSerializer``, the serializer
config).

Versions (the branch each line serves):

* From 1.152 the visibility filter returns ``FilteredEvent``s and the serializer
  passes anything else through unserialized, so state events are wrapped with
  ``FilteredEvent.state`` (whole supported range).
* 1.157 and later: ``EventClientSerializer.create_config(requester=...,
  event_format=EventFormat.ClientV2WithoutRoomId)`` builds the config.
* 1.152 to 1.156: no ``create_config``; a ``SerializeEventConfig`` is built directly
  with the format function ``format_event_for_client_v2_without_room_id``.

The branch is chosen once, at import, on whether ``EventClientSerializer`` has
``create_config``.
"""

from __future__ import annotations

from typing import Any

from synapse.events.utils import EventClientSerializer, FilteredEvent
from synapse.util.async_helpers import delay_cancellation
from synapse.visibility import filter_and_transform_events_for_client

from synapse_syncv3.compat.base import JsonDict, SynapseBase

if hasattr(EventClientSerializer, "create_config"):
    # 1.157 and later.
    from synapse.events.utils import EventFormat  # type: ignore[attr-defined]

    async def _client_v2_config(serializer: Any, requester: Any) -> Any:
        """The serializer config of v2 sync's timeline events."""
        return await serializer.create_config(
            requester=requester, event_format=EventFormat.ClientV2WithoutRoomId
        )

else:
    # 1.152 to 1.156.
    from synapse.events.utils import (
        SerializeEventConfig,
        format_event_for_client_v2_without_room_id,  # type: ignore[attr-defined]
    )

    async def _client_v2_config(serializer: Any, requester: Any) -> Any:
        """The serializer config of v2 sync's timeline events."""
        return SerializeEventConfig(  # type: ignore[call-arg]
            event_format=format_event_for_client_v2_without_room_id,  # type: ignore[arg-type]
            requester=requester,
        )


__all__ = ["TimelineMixin"]


class TimelineMixin(SynapseBase):
    """Visible events and state events, serialized as v2 sync serializes them."""

    async def serialized_state_events(self, requester: Any, event_ids: list[str]) -> list[JsonDict]:
        """State events in client format (SPEC §1.5), in the order of ``event_ids``,
        without a visibility filter: the caller decided the user may see them."""
        events = await self._store.get_events(event_ids, get_prev_content=False)
        present = [FilteredEvent.state(events[e]) for e in event_ids if e in events]
        return await self._serialize(requester, present)

    async def visible_serialized_events(
        self, requester: Any, event_ids: list[str], is_peeking: bool
    ) -> list[JsonDict]:
        """Events in client format, after Synapse's own visibility filter (history
        visibility, erasure, soft failure), in the order of ``event_ids``."""
        user_id = requester.user.to_string()
        events = await self._store.get_events_as_list(event_ids, get_prev_content=True)
        filtered = await self._visible_to(user_id, events, is_peeking=is_peeking)
        return await self._serialize(requester, filtered)

    # Both run under delay_cancellation: a request cancelled because its client left
    # lets them finish, then ends as CancelledError. Cancelled inside, Synapse's
    # batched lookups fail with FirstError(CancelledError) (logged as a failed request
    # and an unhandled error in a Deferred; found by bench/soak.py).

    async def _visible_to(self, user_id: str, events: list[Any], **kwargs: Any) -> list[Any]:
        """Synapse's visibility filter (``filter_and_transform_events_for_client``;
        ``kwargs``: its ``is_peeking``, ``always_include_ids``): ``FilteredEvent``s."""
        return await delay_cancellation(  # type: ignore[no-any-return]
            filter_and_transform_events_for_client(
                self._hs.get_storage_controllers(), user_id, events, **kwargs
            )
        )

    async def _bundled_aggregations(self, items: list[Any], user_id: str) -> Any:
        """The relations handler's bundled aggregations of ``FilteredEvent``s."""
        return await delay_cancellation(
            self._hs.get_relations_handler().get_bundled_aggregations(items, user_id)
        )

    async def _serialize(
        self, requester: Any, filtered: list[Any], bundle_aggregations: Any = None
    ) -> list[JsonDict]:
        """Serialize ``FilteredEvent``s the way v2 sync serializes timeline events
        (with the bundled aggregations of the relations handler, if given)."""
        serializer = self._hs.get_event_client_serializer()
        config = await _client_v2_config(serializer, requester)
        return list(
            await serializer.serialize_events(
                filtered,
                self._clock.time_msec(),
                config=config,
                bundle_aggregations=bundle_aggregations,
            )
        )
