"""Endpoint and authentication (SPEC §1, §2; §14 items 1–9)."""

from __future__ import annotations

from collections.abc import Callable

from harness import MatrixUser
from tests.integration.helpers import MODULE_PATH, V3, Server


def test_post_with_empty_body_returns_only_next(server: Server) -> None:  # item 1
    body = V3(server.user()).ok({})
    assert list(body) == ["next"]
    assert body["next"].startswith("V3_")


def test_every_served_path_answers_the_same_way(server: Server) -> None:  # item 2
    v3 = V3(server.user())
    for path in (
        "/_matrix/client/r0/sync",
        "/_matrix/client/unstable/sync",
        MODULE_PATH,
        "/_matrix/client/v3/sync",
    ):
        body = v3.ok({}, path=path)
        assert list(body) == ["next"] and body["next"].startswith("V3_"), path
    # A token from one path works on another.
    token = v3.ok({"to_device": {}}, path=MODULE_PATH)["next"]
    assert "to_device" not in v3.ok({}, since=token, path="/_matrix/client/r0/sync")


def test_get_stays_synapse_v2_sync(server: Server) -> None:  # item 3
    user = server.user()
    v2 = user.v2_sync()
    assert "next_batch" in v2 and "next" not in v2
    # ... on the same server where POST is sync v3
    assert "next" in V3(user).ok({})


def test_client_path_off(server_with: Callable[..., Server]) -> None:  # item 4
    server = server_with({"serve_client_path": False})
    user = server.user()
    response = user.sync_v3({}, path="/_matrix/client/v3/sync")
    assert response.status == 405
    assert response.errcode == "M_UNRECOGNIZED"
    assert V3(user).ok({}, path=MODULE_PATH)["next"].startswith("V3_")
    assert "next_batch" in user.v2_sync()


def test_other_methods_on_module_path(server: Server) -> None:  # item 5
    user = server.user()
    for method in ("GET", "PUT", "DELETE"):
        response = user.client.request(method, MODULE_PATH)
        assert response.status == 405, method
        assert response.errcode == "M_UNRECOGNIZED"
    options = user.client.request("OPTIONS", MODULE_PATH, token=None)
    assert options.status == 204


def test_missing_authorization(server: Server) -> None:  # item 6
    user = server.user()
    for path in ("/_matrix/client/v3/sync", MODULE_PATH):
        response = user.client.request("POST", path, json_body={}, token=None)
        assert response.status == 401
        assert response.errcode == "M_MISSING_TOKEN"


def test_access_token_in_query_is_refused(server: Server) -> None:  # item 7
    user = server.user()
    response = user.client.request(
        "POST",
        "/_matrix/client/v3/sync",
        json_body={},
        token=None,
        query={"access_token": user.access_token},
    )
    assert response.status == 401
    assert response.errcode == "M_MISSING_TOKEN"
    assert "Authorization" in response.json()["error"]
    # ... also with a header added
    response = user.client.request(
        "POST", "/_matrix/client/v3/sync", json_body={}, query={"access_token": user.access_token}
    )
    assert response.status == 401
    assert response.errcode == "M_MISSING_TOKEN"


def test_unknown_guest_and_deviceless_tokens(server: Server) -> None:  # item 8
    user = server.user()
    unknown = user.client.request("POST", MODULE_PATH, json_body={}, token="syt_not_a_real_token")
    assert (unknown.status, unknown.errcode) == (401, "M_UNKNOWN_TOKEN")

    guest = server.hs.guest_account()
    response = user.client.request("POST", MODULE_PATH, json_body={}, token=guest.access_token)
    assert (response.status, response.errcode) == (403, "M_GUEST_ACCESS_FORBIDDEN")

    puppet = server.hs.login_as(user.user_id)
    response = user.client.request("POST", MODULE_PATH, json_body={}, token=puppet)
    assert (response.status, response.errcode) == (403, "M_FORBIDDEN")
    assert response.json()["error"] == "sync v3 needs a device"


def test_refreshed_access_token_keeps_the_sessions(server: Server) -> None:  # item 9
    first = server.user()
    device = server.login(first, device_id="REFRESHDEV", refresh_token=True)
    assert device.account.refresh_token
    since = V3(device).ok({"to_device": {}})["next"]

    access_token, _ = device.refresh(device.account.refresh_token)
    refreshed = MatrixUser(server.base_url, device.account.with_token(access_token))
    body = V3(refreshed).ok({}, since=since)
    assert body["next"] == since


def test_small_and_large_responses_carry_synapse_s_headers(server: Server) -> None:
    """A small response is encoded on the reactor thread (it has a Content-Length), a
    large one in Synapse's thread pool (chunked); both carry the headers of Synapse's
    own JSON responses, v2 sync's being the oracle."""
    alice, bob = server.user(), server.user()
    v2_headers = bob.client.request(
        "GET", "/_matrix/client/v3/sync", query={"timeout": "0"}
    ).headers
    expected = {
        name: v2_headers[name]
        for name in v2_headers
        if name.startswith("access-control-") or name in ("content-type", "cache-control")
    }
    assert expected["content-type"] == "application/json"
    assert "access-control-allow-origin" in expected

    for path in ("/_matrix/client/v3/sync", MODULE_PATH):
        small = bob.sync_v3({}, path=path)
        assert small.status == 200 and list(small.json()) == ["next"]
        assert {name: small.headers.get(name) for name in expected} == expected, path
        assert small.headers.get("content-length") == str(len(small.body)), path

    for n in range(3):
        alice.send_to_device("m.test", {bob.user_id: {bob.device_id: {"n": n, "pad": "x" * 8000}}})
    for path in ("/_matrix/client/v3/sync", MODULE_PATH):
        large = bob.sync_v3({"to_device": {}}, path=path)
        assert large.status == 200 and len(large.json()["to_device"]["events"]) == 3
        assert {name: large.headers.get(name) for name in expected} == expected, path
        assert "content-length" not in large.headers, path
