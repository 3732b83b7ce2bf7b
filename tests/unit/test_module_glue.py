"""The Synapse glue that can be checked without running Synapse: the version check
and config errors of ``parse_config``, the client-path injection and its fallback,
and that Synapse internals are reached only through the ``compat`` package."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from synapse.module_api.errors import ConfigError

import synapse_syncv3.module as module
from synapse_syncv3 import compat

PACKAGE = Path(module.__file__).parent


def test_parse_config_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        module.SyncV3Module.parse_config({"max_sessions_per_device": 0})
    assert info.value.path == ("max_sessions_per_device",)
    assert info.value.msg == "must be an integer between 1 and 1000"


def test_old_synapse_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "synapse_version", lambda: (1, 151, 0))
    with pytest.raises(ConfigError) as info:
        module.SyncV3Module.parse_config({})
    assert "1.152.0" in info.value.msg


def test_synapse_version_parses_build_suffixes(monkeypatch: pytest.MonkeyPatch) -> None:
    import synapse

    monkeypatch.setattr(synapse, "__version__", "1.163.2 (b=main,595b678)")
    assert compat.synapse_version() == (1, 163, 2)
    monkeypatch.setattr(synapse, "__version__", "1.160.0rc1")
    assert compat.synapse_version() == (1, 160, 0)


class _FakeHomeServer:
    """Stands in for Synapse's HomeServer: only its identity matters here."""


def _fake_api() -> Any:
    return SimpleNamespace(_hs=_FakeHomeServer())


def test_client_servlet_injection_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    import synapse.rest as rest

    original = tuple(rest.SERVLET_GROUPS["client"])
    monkeypatch.setitem(rest.SERVLET_GROUPS, "client", original)
    registered: list[Any] = []
    api = _fake_api()
    assert compat.inject_client_servlet(api, registered.append) is None
    assert compat.inject_client_servlet(api, registered.append) is None
    added = tuple(rest.SERVLET_GROUPS["client"])[len(original) :]
    assert len(added) == 1  # one registration function, however many instances
    added[0](api._hs, "http-server")
    added[0](_FakeHomeServer(), "other homeserver's server")  # not ours: ignored
    assert registered == ["http-server"]


def test_injection_impossible_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import synapse.rest as rest

    monkeypatch.delattr(rest, "SERVLET_GROUPS")
    reason = compat.inject_client_servlet(_fake_api(), lambda server: None)
    assert reason is not None and "SERVLET_GROUPS" in reason


def test_synapse_internals_only_in_compat() -> None:
    """Every import of Synapse outside the compat package is of the public module API."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE / "compat":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if (name == "synapse" or name.startswith("synapse.")) and not name.startswith(
                    "synapse.module_api"
                ):
                    offenders.append(f"{path.relative_to(PACKAGE)}: {name}")
        if "._hs" in path.read_text():
            offenders.append(f"{path.relative_to(PACKAGE)}: api._hs")
    assert not offenders, offenders
