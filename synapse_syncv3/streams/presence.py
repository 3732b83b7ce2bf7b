"""The ``presence`` stream: a request object without fields. Not served yet (docs/api.md)."""

from __future__ import annotations

from typing import ClassVar

from synapse_syncv3.streams.base import NoFieldsMixin, NotYetServedMixin


class PresenceStream(NoFieldsMixin, NotYetServedMixin):
    name: ClassVar[str] = "presence"
    code: ClassVar[str] = "p"
