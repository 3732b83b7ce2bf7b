"""Smoke tests of the test harness itself: a real Synapse without the module loaded."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import harness.homeserver
from harness import (
    Homeserver,
    HomeserverStartError,
    MatrixUser,
    PostgresDatabase,
    free_port,
    postgres_unavailable_reason,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def homeserver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Homeserver]:
    db: PostgresDatabase | None = None
    if request.param == "postgres":
        reason = postgres_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        db = PostgresDatabase.create()
        request.addfinalizer(db.drop)  # runs after hs.stop (finalizers are LIFO)
    hs = Homeserver(tmp_path / "hs", postgres=db, module_config=None)
    request.addfinalizer(hs.stop)
    hs.start()
    print(f"\n[{request.param}] Synapse ready in {hs.ready_seconds:.2f} s")
    yield hs


def _timeline_ids(sync: dict[str, object], room_id: str) -> list[str]:
    rooms = sync["rooms"]
    assert isinstance(rooms, dict)
    events = rooms["join"][room_id]["timeline"]["events"]
    return [e["event_id"] for e in events]


def test_round_trip_and_restart(homeserver: Homeserver) -> None:
    hs = homeserver
    alice = hs.new_user(displayname="Alice")
    bob = hs.new_user()
    assert alice.user_id.endswith(":localhost") and alice.user_id != bob.user_id

    room_id = alice.create_room(name="smoke", invite=[bob.user_id])
    assert bob.join(room_id) == room_id
    event_id = alice.send_message(room_id, "hello")
    alice.send_to_device("org.example.smoke", {bob.user_id: {bob.device_id: {"n": 1}}})

    sync = bob.v2_sync()
    assert event_id in _timeline_ids(sync, room_id)
    to_device = sync["to_device"]["events"]
    assert [(e["type"], e["sender"], e["content"]) for e in to_device] == [
        ("org.example.smoke", alice.user_id, {"n": 1})
    ]

    old_pid = hs.pid
    hs.restart(kill=True)
    assert hs.pid != old_pid and hs.running
    print(f"restart (after SIGKILL) ready in {hs.ready_seconds:.2f} s")
    # Same MatrixUser: its keep-alive connection died with the old process.
    assert bob.whoami()["user_id"] == bob.user_id
    later = bob.v2_sync(since=sync["next_batch"])
    assert later["next_batch"]
    event2 = alice.send_message(room_id, "after restart")
    assert event2 in _timeline_ids(bob.v2_sync(since=later["next_batch"]), room_id)

    pid = hs.pid
    assert pid is not None
    hs.stop()
    assert hs.pid is None and not hs.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    hs.stop()  # idempotent


def test_accounts_and_client_helpers(homeserver: Homeserver) -> None:
    hs = homeserver
    alice = hs.new_user()
    room_id = alice.create_room()
    alice.send_state(room_id, "m.room.topic", "", {"topic": "t"})
    alice.set_typing(room_id, True)
    alice.set_displayname("A")

    # Refresh-token login and refresh.
    acct = hs.login(alice.localpart, refresh_token=True, device_id="SECOND")
    assert acct.device_id == "SECOND" and acct.refresh_token
    second = MatrixUser(hs.base_url, acct)
    new_access, new_refresh = second.refresh(acct.refresh_token)
    assert new_access != acct.access_token and new_refresh != acct.refresh_token

    # Device deletion with user-interactive auth invalidates the device's token.
    alice.delete_device("SECOND")
    second.client.access_token = new_access
    assert second.client.get("/_matrix/client/v3/account/whoami").errcode == "M_UNKNOWN_TOKEN"

    # Admin login-as token, guest account.
    token = hs.login_as(alice.user_id)
    whoami = hs.client.get("/_matrix/client/v3/account/whoami", token=token).expect()
    assert whoami["user_id"] == alice.user_id
    guest = hs.guest_account()
    assert hs.user(guest).whoami()["is_guest"] is True

    # Raw responses: no assertion, errcode and elapsed are filled in.
    resp = alice.sync_v3({"lists": {}}, timeout=0)
    assert resp.status in (400, 404, 405) and resp.elapsed > 0
    assert hs.client.get("/_matrix/client/v3/sync").errcode == "M_MISSING_TOKEN"
    assert "synapse" in hs.metrics()

    logout_target = hs.user(hs.login(alice.localpart))
    logout_target.logout()
    assert logout_target.client.get("/_matrix/client/v3/account/whoami").status == 401


def test_start_failure_reports_exit_code(tmp_path: Path) -> None:
    hs = Homeserver(tmp_path / "bad", module_name="nonexistent_mod.X", module_config={})
    try:
        code, output = hs.start_expecting_failure(timeout=60)
        assert code != 0
        assert "nonexistent_mod" in output

        with pytest.raises(HomeserverStartError) as info:
            hs.start(timeout=60)
        assert info.value.exit_code not in (None, 0)
        assert "nonexistent_mod" in str(info.value)
    finally:
        hs.kill()
    assert not hs.running


def test_refuses_busy_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        hs = Homeserver(tmp_path / "busy", port=port, module_config=None)
        try:
            with pytest.raises(HomeserverStartError, match="already in use"):
                hs.start()
        finally:
            hs.kill()


def test_port_taken_after_the_choice_is_chosen_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI once lost a run to a port that another process bound between our choice and
    Synapse's bind: a first start on a port the harness chose moves to a new one."""
    hs = Homeserver(tmp_path / "raced", module_config=None)
    chosen = hs.port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", chosen))
        sock.listen()
        # The race: the port looks free when checked, and is taken when Synapse binds.
        monkeypatch.setattr(harness.homeserver, "port_in_use", lambda port: False)
        try:
            hs.start()
            assert hs.port != chosen
            assert hs.base_url == f"http://127.0.0.1:{hs.port}"
            assert f"Couldn't listen on 127.0.0.1:{chosen}" in hs.stdout_path.read_text()
            # Known to clients now: a restart keeps the port.
            monkeypatch.undo()
            hs.stop()
            hs.start()
            assert hs.port != chosen
        finally:
            hs.kill()


def test_chosen_ports_avoid_the_ephemeral_range() -> None:
    """Outgoing connections get their local port from the kernel's ephemeral range at
    any moment; a listener port from it can be taken before Synapse binds it."""
    low, high = harness.homeserver._port_range()
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    first, last = int(ephemeral[0]), int(ephemeral[1])
    assert high < first or low > last
    for _ in range(200):
        assert not first <= free_port() <= last


def test_listen_failure_is_read_from_twisted_s_message() -> None:
    output = (
        "...\ntwisted.internet.error.CannotListenError: Couldn't listen on "
        "127.0.0.1:39786: [Errno 98] Address already in use.\n"
    )
    assert harness.homeserver._port_not_listened_on(output) == 39786
    assert harness.homeserver._port_not_listened_on("ImportError: no module") is None
