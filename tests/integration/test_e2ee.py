"""The e2ee stream (SPEC §7.9; §14 item 84)."""

from __future__ import annotations

import base64
import itertools
from typing import Any

from harness import MatrixUser
from tests.integration.helpers import (
    V3,
    Server,
    after,
    position_of,
    shared_room,
    timed,
    with_position,
)

_key_ids = itertools.count(1)


def key_id() -> str:
    return base64.b64encode(next(_key_ids).to_bytes(6, "big")).decode().rstrip("=")


def signed_key(user: MatrixUser, fallback: bool = False) -> dict[str, Any]:
    key: dict[str, Any] = {
        "key": base64.b64encode(key_id().encode() * 4).decode().rstrip("="),
        "signatures": {user.user_id: {f"ed25519:{user.device_id}": "sig"}},
    }
    if fallback:
        key["fallback"] = True
    return key


def upload_one_time_keys(user: MatrixUser, count: int) -> dict[str, int]:
    keys = {f"signed_curve25519:{key_id()}": signed_key(user) for _ in range(count)}
    counts: dict[str, int] = user._call("POST", "/keys/upload", {"one_time_keys": keys})[
        "one_time_key_counts"
    ]
    return counts


def upload_fallback_key(user: MatrixUser) -> None:
    keys = {f"signed_curve25519:{key_id()}": signed_key(user, fallback=True)}
    user._call("POST", "/keys/upload", {"fallback_keys": keys})


def upload_device_keys(user: MatrixUser) -> None:
    device = user.device_id
    keys = {
        "user_id": user.user_id,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device}": "c" * 43, f"ed25519:{device}": "e" * 43},
        "signatures": {user.user_id: {f"ed25519:{device}": "s" * 86}},
    }
    user._call("POST", "/keys/upload", {"device_keys": keys})


def claim_one(claimer: MatrixUser, owner: MatrixUser) -> dict[str, Any]:
    body = {"one_time_keys": {owner.user_id: {owner.device_id: "signed_curve25519"}}}
    claimed: dict[str, Any] = claimer._call("POST", "/keys/claim", body)["one_time_keys"]
    return claimed


EMPTY = {
    "device_one_time_keys_count": {"signed_curve25519": 0},
    "device_unused_fallback_key_types": [],
}


def test_first_delivery_and_device_list_change(server: Server) -> None:  # item 84
    (alice, bob), _ = server.room_with(2)
    bob_laptop = server.login(bob)
    v3 = V3(alice)
    first = v3.ok({"e2ee": {}})
    assert first["e2ee"] == EMPTY
    assert position_of(first["next"], "e2ee")

    with after(0.3, lambda: upload_device_keys(bob_laptop)):
        body, elapsed = timed(lambda: v3.ok({}, since=first["next"], timeout=20000))
    assert elapsed < 10
    assert bob.user_id in body["e2ee"]["device_lists"]["changed"]
    assert body["e2ee"]["device_lists"]["left"] == []
    assert body["e2ee"]["device_one_time_keys_count"] == {"signed_curve25519": 0}

    # Nothing since: an echo carries the counts and no device_lists.
    echo = v3.ok({"e2ee": {}}, since=body["next"])
    assert echo["e2ee"] == EMPTY


def test_one_time_key_counts_move(server: Server) -> None:
    alice, bob = server.user(), server.user()
    assert upload_one_time_keys(alice, 3) == {"signed_curve25519": 3}
    upload_fallback_key(alice)
    v3 = V3(alice)
    first = v3.ok({"e2ee": {}})
    assert first["e2ee"] == {
        "device_one_time_keys_count": {"signed_curve25519": 3},
        "device_unused_fallback_key_types": ["signed_curve25519"],
    }
    claimed = claim_one(bob, alice)
    assert [key.split(":")[0] for key in claimed[alice.user_id][alice.device_id]] == [
        "signed_curve25519"
    ]
    body = v3.ok({"e2ee": {}}, since=first["next"])
    assert body["e2ee"]["device_one_time_keys_count"] == {"signed_curve25519": 2}

    # Claim the rest: the fallback key is handed out and becomes used.
    claim_one(bob, alice)
    claim_one(bob, alice)
    claim_one(bob, alice)
    body = v3.ok({"e2ee": {}}, since=body["next"])
    assert body["e2ee"] == EMPTY


def test_counts_alone_are_not_data(server: Server) -> None:
    alice, bob = server.user(), server.user()
    v3 = V3(alice)
    first = v3.ok({"e2ee": {}})

    def keys_move() -> None:
        upload_one_time_keys(alice, 2)
        claim_one(bob, alice)

    with after(0.3, keys_move):
        body, elapsed = timed(lambda: v3.ok({}, since=first["next"], timeout=1500))
    assert body == {"next": first["next"]}
    assert elapsed >= 1.4
    body = v3.ok({"e2ee": {}}, since=first["next"])
    assert body["e2ee"]["device_one_time_keys_count"] == {"signed_curve25519": 1}


def test_counts_are_for_the_requesting_device_only(server: Server) -> None:
    (alice, bob), _ = server.room_with(2)
    upload_one_time_keys(bob, 5)
    alice_other = server.login(alice)
    upload_one_time_keys(alice_other, 4)
    assert V3(alice).ok({"e2ee": {}})["e2ee"] == EMPTY
    assert V3(bob).ok({"e2ee": {}})["e2ee"]["device_one_time_keys_count"] == {
        "signed_curve25519": 5
    }
    assert V3(alice_other).ok({"e2ee": {}})["e2ee"]["device_one_time_keys_count"] == {
        "signed_curve25519": 4
    }


def test_user_who_leaves_the_only_shared_room_is_left(server: Server) -> None:
    alice, bob = server.user(), server.user()
    room = shared_room(alice, bob)
    v3 = V3(alice)
    first = v3.ok({"e2ee": {}})
    with after(0.3, lambda: bob.leave(room)):
        body, elapsed = timed(lambda: v3.ok({}, since=first["next"], timeout=20000))
    assert elapsed < 10
    assert body["e2ee"]["device_lists"] == {"changed": [], "left": [bob.user_id]}


def test_new_room_member_is_changed(server: Server) -> None:
    alice, bob, carol = server.user(), server.user(), server.user()
    room = shared_room(alice, bob)
    v3 = V3(alice)
    first = v3.ok({"e2ee": {}})
    alice.invite(room, carol.user_id)
    carol.join(room)
    body = v3.ok({}, since=first["next"])
    assert carol.user_id in body["e2ee"]["device_lists"]["changed"]


def test_changes_of_users_not_sharing_a_room_do_not_wake(server: Server) -> None:
    (alice, _bob), _ = server.room_with(2)
    carol = server.user()
    v3 = V3(alice)
    first = v3.ok({"e2ee": {}})

    def carol_devices() -> None:
        upload_device_keys(carol)
        upload_device_keys(server.login(carol))

    with after(0.3, carol_devices):
        body, elapsed = timed(lambda: v3.ok({}, since=first["next"], timeout=1500))
    assert body == {"next": first["next"]}
    assert elapsed >= 1.4


def test_e2ee_appears_with_other_data(server: Server) -> None:
    alice, bob = server.user(), server.user()
    upload_one_time_keys(alice, 1)
    v3 = V3(alice)
    first = v3.ok({"to_device": {}, "e2ee": {}})
    assert first["e2ee"]["device_one_time_keys_count"] == {"signed_curve25519": 1}

    def message() -> None:
        claim_one(bob, alice)
        bob.send_to_device("m.test", {alice.user_id: {alice.device_id: {"n": 1}}})

    with after(0.3, message):
        body = v3.ok({}, since=first["next"], timeout=5000)
    assert [event["content"] for event in body["to_device"]["events"]] == [{"n": 1}]
    assert body["e2ee"] == EMPTY


def test_positions_are_bounded_and_never_fail(server: Server) -> None:
    (alice, bob), _ = server.room_with(2)
    v3 = V3(alice)
    first = v3.ok({"e2ee": {}})
    position = position_of(first["next"], "e2ee")
    room, devices = position.split("_")
    assert room.startswith(("s", "m"))
    assert devices[0] in "m0123456789"

    # Ahead of anything issued: clamped, no error and no data.
    ahead = with_position(first["next"], "e2ee", "s99999999_99999999")
    assert "e2ee" not in v3.ok({}, since=ahead)
    # An unknown writer instance id is dropped (the position moves back), quietly.
    unknown = with_position(
        first["next"], "e2ee", f"m{room.lstrip('sm').split('~')[0]}~987654.99999999_m1~987655.5"
    )
    assert v3.ok({"e2ee": {}}, since=unknown)["e2ee"]["device_one_time_keys_count"]

    for bad in ("5", "s5", "s5_", "_5", "t1-5_3", "s01_3", "s5_m3", "s5_m3~1", "m5_3", "s5_3_4"):
        response = v3.error({}, since=with_position(first["next"], "e2ee", bad))
        assert response.errcode == "M_INVALID_PARAM"

    # The position still moves on from the real one.
    upload_device_keys(bob)
    body = v3.ok({}, since=first["next"])
    assert bob.user_id in body["e2ee"]["device_lists"]["changed"]
