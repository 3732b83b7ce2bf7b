"""The ``account_data`` stream: a request object without fields. Not served yet (docs/api.md)."""

from __future__ import annotations

from typing import ClassVar

from synapse_syncv3.streams.base import NoFieldsMixin, NotYetServedMixin


class AccountDataStream(NoFieldsMixin, NotYetServedMixin):
    name: ClassVar[str] = "account_data"
    code: ClassVar[str] = "a"
