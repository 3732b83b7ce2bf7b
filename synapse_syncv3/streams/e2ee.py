"""The ``e2ee`` stream: a request object without fields. Not served yet (docs/api.md)."""

from __future__ import annotations

from typing import ClassVar

from synapse_syncv3.streams.base import NoFieldsMixin, NotYetServedMixin


class E2EEStream(NoFieldsMixin, NotYetServedMixin):
    name: ClassVar[str] = "e2ee"
    code: ClassVar[str] = "e"
