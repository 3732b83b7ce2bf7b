"""The Synapse module: configuration, wiring, routes, background tasks.

Loaded from homeserver.yaml on the main process and on every generic worker::

    modules:
      - module: synapse_syncv3.SyncV3Module
        config: {}
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from synapse.module_api.errors import ConfigError

from synapse_syncv3 import MIN_SYNAPSE_VERSION, errors
from synapse_syncv3.compat import (
    DEVICE_EXISTS_SQL,
    INBOX_HAS_MESSAGES_SQL,
    ObservableDeferred,
    SynapseCompat,
    SynapseError,
    inject_client_servlet,
    make_deferred_yieldable,
    synapse_version,
)
from synapse_syncv3.config import ConfigValueError, SyncV3Config, parse_config
from synapse_syncv3.handler import SyncV3Handler
from synapse_syncv3.servlet import MODULE_PATH, SyncV3ClientServlet, SyncV3Endpoint, SyncV3Resource
from synapse_syncv3.sessions import SessionManager
from synapse_syncv3.store import SessionStore
from synapse_syncv3.streams import build_streams, token_codec

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)

#: Environment variable that enables fault injection (tests only; docs/testing.md).
FAULT_INJECTION_ENV = "SYNCV3_FAULT_INJECTION"


class SyncV3Module:
    def __init__(self, config: SyncV3Config, api: ModuleApi) -> None:
        self._config = config
        self._api = api
        self._synapse = SynapseCompat(api)
        self._store = SessionStore(
            api.run_db_interaction,
            DEVICE_EXISTS_SQL,
            inbox_has_messages_sql=INBOX_HAS_MESSAGES_SQL,
            postgres=self._synapse.database_is_postgres,
        )
        self._sessions = SessionManager(
            config, self._store, self._synapse, api.get_current_time_msec
        )
        streams = build_streams()
        codec = token_codec(streams)
        handler = SyncV3Handler(
            config, self._synapse, self._sessions, streams, codec, self._wait_until_ready
        )
        faults = os.environ.get(FAULT_INJECTION_ENV) == "1"
        if faults:
            logger.warning("%s=1: fault injection for tests is enabled", FAULT_INJECTION_ENV)
        endpoint = SyncV3Endpoint(api, self._synapse, handler, codec, config, streams, faults)

        api.register_web_resource(MODULE_PATH, SyncV3Resource(endpoint, self._synapse.clock))
        if config.serve_client_path:
            reason = inject_client_servlet(api, SyncV3ClientServlet(endpoint).register)
            if reason is not None:
                logger.warning(
                    "synapse-syncv3 cannot serve POST /_matrix/client/v3/sync on this Synapse "
                    "(%s); sync v3 is served on %s only",
                    reason,
                    MODULE_PATH,
                )

        try:
            api.register_password_auth_provider_callbacks(on_logged_out=self._on_logged_out)
        except ConfigError:
            # Delegated authentication (MAS): sessions of deleted devices are removed by
            # the periodic sweep instead (SPEC §4.3).
            logger.info("Delegated authentication: deleted devices are handled by the sweep")

        api.looping_background_call(
            self._sweep, config.sweep_interval_ms, desc="syncv3_sweep_sessions"
        )

        self._ready_state = "pending"
        self._ready: ObservableDeferred[None] = self._start_preparing()

    @staticmethod
    def parse_config(config: dict[str, Any]) -> SyncV3Config:
        running = synapse_version()
        if running < MIN_SYNAPSE_VERSION:
            required = ".".join(map(str, MIN_SYNAPSE_VERSION))
            raise ConfigError(
                f"synapse-syncv3 requires matrix-synapse {required} or later"
                f" (running {'.'.join(map(str, running))})"
            )
        try:
            return parse_config(config)
        except ConfigValueError as e:
            raise ConfigError(e.msg, path=e.path) from None

    # -- tables ----------------------------------------------------------------------

    def _start_preparing(self) -> ObservableDeferred[None]:
        # Database work must not run in __init__'s logging context (SYNAPSE-NOTES §6);
        # requests wait for this Deferred instead.
        d = self._api.run_as_background_process("syncv3_prepare_tables", self._prepare)
        return ObservableDeferred(d, consumeErrors=True)

    async def _prepare(self) -> None:
        try:
            await self._store.prepare()
        except errors.StorageTooNewError as e:
            logger.error("%s; sync v3 requests are refused until the module is upgraded", e)
            self._ready_state = "too_new"
            return
        except Exception:
            logger.exception("Creating the syncv3 tables failed; retrying on the next request")
            self._ready_state = "failed"
            return
        self._ready_state = "ok"
        if self._api.should_run_background_tasks():
            # A fresh gauge and no stale sessions from the start, not one interval
            # later; in its own background process so that requests need not wait.
            self._api.run_as_background_process("syncv3_sweep_sessions", self._sweep)

    async def _wait_until_ready(self) -> None:
        if self._ready_state == "ok":
            return  # every request once ready: no Deferred to observe
        await make_deferred_yieldable(self._ready.observe())
        if self._ready_state == "failed":
            self._ready = self._start_preparing()
            await make_deferred_yieldable(self._ready.observe())
        if self._ready_state == "too_new":
            raise errors.StorageTooNewError("syncv3 tables are newer than this module")
        if self._ready_state != "ok":
            raise SynapseError(500, "syncv3 storage is not available", errors.UNKNOWN)

    async def _sweep(self) -> None:
        if self._ready_state != "ok":
            return  # the tables are not there (yet); the next run will do it
        await self._sessions.sweep()

    # -- callbacks -------------------------------------------------------------------

    async def _on_logged_out(self, user_id: str, device_id: str | None, access_token: str) -> None:
        # Called for every deleted access token; the sessions go only when the device
        # itself was deleted (logout, DELETE /devices, deactivation, password change).
        if device_id is not None:
            await self._sessions.on_device_deleted(user_id, device_id)
