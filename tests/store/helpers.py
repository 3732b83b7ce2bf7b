"""Shared bits of the store tests: sessions with defaults, states of a version."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from synapse_syncv3.core.state import SessionState, decode_values, register_value
from synapse_syncv3.store import LoadedSession, RecordedRequest
from tests.store.conftest import Backend

USER = "@alice:test"
OTHER_USER = "@bob:test"
DEVICE = "ALICEPHONE"
OTHER_DEVICE = "ALICELAPTOP"
HOUR = 60 * 60 * 1000
TTL = HOUR
#: A "now" far enough from 0 that now - TTL is a plausible time.
T0 = 1_700_000_000_000
PARAMS_1 = '{"typing":{"room_id":"!a:test"}}'


@register_value
@attrs.frozen
class Marker:
    """A stream state value of the tests."""

    KEY: ClassVar[str] = "test_store_marker"

    n: int

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Marker:
        return cls(int(data["n"]))


def params(n: int) -> str:
    """Distinct canonical params JSON, one per ``n``."""
    return f'{{"to_device":{{"limit":{n}}}}}'


async def create(
    backend: Backend,
    session_id: str,
    *,
    now_ms: int = T0,
    user_id: str = USER,
    device_id: str = DEVICE,
    wants_to_device: bool = False,
    params_json: str = PARAMS_1,
) -> None:
    await backend.store.create_session(
        session_id=session_id,
        user_id=user_id,
        device_id=device_id,
        params_json=params_json,
        wants_to_device=wants_to_device,
        now_ms=now_ms,
    )


async def load(
    backend: Backend,
    session_id: str,
    *,
    version: int = 1,
    state_version: int = 0,
    now_ms: int = T0,
    user_id: str = USER,
    device_id: str = DEVICE,
    ttl_ms: int = TTL,
) -> LoadedSession | None:
    return await backend.store.load_session(
        session_id=session_id,
        version=version,
        state_version=state_version,
        user_id=user_id,
        device_id=device_id,
        now_ms=now_ms,
        ttl_ms=ttl_ms,
    )


async def record(
    backend: Backend,
    session_id: str,
    *,
    new_params_json: str | None = None,
    wants_to_device: bool = True,
    to_device_restarted: bool = False,
    confirm_to_device: int | None = None,
    want_confirmations: bool = True,
    now_ms: int = T0,
    user_id: str = USER,
    device_id: str = DEVICE,
) -> RecordedRequest:
    return await backend.store.record_request(
        session_id=session_id,
        user_id=user_id,
        device_id=device_id,
        new_params_json=new_params_json,
        wants_to_device=wants_to_device,
        to_device_restarted=to_device_restarted,
        confirm_to_device=confirm_to_device,
        want_confirmations=want_confirmations,
        now_ms=now_ms,
        ttl_ms=TTL,
    )


async def state_at(backend: Backend, session_id: str, version: int) -> SessionState:
    """The session's stream state as of ``version`` (0: none), read back the way
    ``SessionManager.state_of`` does."""
    if version == 0:
        return SessionState()
    loaded = await load(backend, session_id, state_version=version)
    assert loaded is not None, f"state version {version} of {session_id} is not loadable"
    assert loaded.state_json is not None
    store = backend.store
    return SessionState(
        version,
        decode_values(loaded.state_json),
        lambda stream, up_to, after, ids: store.read_sent_rooms(
            session_id, stream, up_to, after, ids
        ),
        read_snapshot=lambda snapshot_id: store.read_snapshot(session_id, snapshot_id),
    )
