"""synapse-syncv3: the stream-based sync v3 API served natively inside Synapse.

Load it from homeserver.yaml::

    modules:
      - module: synapse_syncv3.SyncV3Module
        config: {}
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Oldest Synapse release this module supports (SPEC §11.3).
MIN_SYNAPSE_VERSION = (1, 152, 0)

__all__ = ["MIN_SYNAPSE_VERSION", "SyncV3Module", "__version__"]

if TYPE_CHECKING:
    from synapse_syncv3.module import SyncV3Module


def __getattr__(name: str) -> Any:
    # Imported lazily so that the pure core (tokens, params, config) can be used and
    # unit-tested without importing Synapse.
    if name == "SyncV3Module":
        from synapse_syncv3.module import SyncV3Module

        return SyncV3Module
    raise AttributeError(name)
