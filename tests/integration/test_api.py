"""The server API (docs/api.md) against a real cluster: HTTP calls to the gateways' port,
clients on real WebSockets receiving what the API sends."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from meshstream_zmq import api
from tests.conftest import Client, Cluster
from tests.integration.support import module_cluster

KEY = "api-key-for-the-tests-0123456789"
SECRET = "jwt-secret-for-the-api-tests-0123456789"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = module_cluster(tmp_path_factory, env={"MESHSTREAM_API_KEY": KEY,
                                              "MESHSTREAM_JWT_SECRET": SECRET})
    yield c
    c.stop()


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + 600)}, SECRET, algorithm="HS256")


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        raw = r.read()
        return r.status, dict(r.getheaders()), json.loads(raw) if raw else None
    finally:
        conn.close()


async def call(cluster: Cluster, method: str, path: str, document: Any = None,
               key: str | None = KEY) -> tuple[int, Any]:
    headers = {"Authorization": f"apikey {key}"} if key is not None else {}
    body = None if document is None else json.dumps(document).encode()
    if body is not None:
        headers["Content-Type"] = "application/json"
    status, _, answer = await asyncio.to_thread(request, cluster.port, method, path, body, headers)
    return status, answer


async def user(cluster: Cluster, sub: str) -> Client:
    return await Client.connect(f"{cluster.url}?token={token(sub)}")


async def test_no_key_a_wrong_key_and_the_document_without_one(api_cluster: Cluster) -> None:
    status, answer = await call(api_cluster, "GET", "/api/rooms", key=None)
    assert (status, answer["error"]["code"]) == (401, "bad-api-key")
    status, answer = await call(api_cluster, "POST", "/api/publish", {"room": "r"}, key="x" * 32)
    assert (status, answer["error"]["code"]) == (401, "bad-api-key")
    status, document = await call(api_cluster, "GET", "/api/openapi.json", key=None)
    assert status == 200 and document["openapi"].startswith("3.")


async def test_the_served_document_lists_every_route_the_gateway_answers(api_cluster: Cluster) -> None:
    _, document = await call(api_cluster, "GET", "/api/openapi.json", key=None)
    assert document == json.loads((ROOT / "docs" / "api.openapi.json").read_text())
    listed = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    assert listed == {(path, method) for path, (method, _) in api.ROUTES.items()}
    for path, method in listed:  # each answers (its own error at worst), none is unknown
        status, answer = await call(api_cluster, method, path.replace("{room}", "nowhere"),
                                    {} if method == "POST" else None)
        assert status != 404 or answer["error"]["code"] != "not-found", (path, answer)
    status, answer = await call(api_cluster, "GET", "/api/elsewhere")
    assert (status, answer["error"]["code"]) == (404, "not-found")


async def test_bad_json_oversize_and_unknown_room_are_json_errors(api_cluster: Cluster) -> None:
    headers = {"Authorization": f"apikey {KEY}"}
    status, _, answer = await asyncio.to_thread(request, api_cluster.port, "POST", "/api/publish",
                                                b'{"room": NaN', headers)
    assert (status, answer["error"]["code"]) == (400, "bad-json")
    big = json.dumps({"room": "r", "data": {"x": "a" * (64 * 1024)}}).encode()
    status, _, answer = await asyncio.to_thread(request, api_cluster.port, "POST", "/api/publish",
                                                big, headers)
    assert (status, answer["error"]["code"]) == (413, "too-large")
    status, answer = await call(api_cluster, "POST", "/api/publish", {"room": "api-none", "data": {}})
    assert (status, answer["error"]["code"]) == (404, "unknown-room")
    status, answer = await call(api_cluster, "GET", "/api/rooms/api-none/history")
    assert (status, answer["error"]["code"]) == (404, "unknown-room")
    status, answer = await call(api_cluster, "POST", "/api/publish", {"room": "r", "data": [1]})
    assert (status, answer["error"]["code"]) == (400, "bad-body")


async def test_publish_reaches_the_members_with_its_offset_and_history_pages(api_cluster: Cluster) -> None:
    a = await user(api_cluster, "ann")
    try:
        await a.request({"action": "join-room", "target": "api-pub", "id": 1}, "client-joined-room")
        answers = []
        for n in range(5):
            status, answer = await call(api_cluster, "POST", "/api/publish",
                                        {"room": "api-pub", "data": {"n": n}})
            assert status == 200, answer
            answers.append(answer)
            got = await a.expect("publish")
            assert (got["target"], got["sender"], got["message_body"]) == ("api-pub", "meshstream", {"n": n})
            assert (got["offset"], got["epoch"]) == (answer["offset"], answer["epoch"])
        since = answers[0]["offset"] - 1
        history = "/api/rooms/api-pub/history?limit=3&since="
        status, page = await call(api_cluster, "GET", f"{history}{since}")
        assert status == 200
        assert [m["message_body"] for m in page["messages"]] == [{"n": 0}, {"n": 1}, {"n": 2}]
        status, rest = await call(api_cluster, "GET", f"{history}{page['next']}")
        assert [m["message_body"] for m in rest["messages"]] == [{"n": 3}, {"n": 4}]
        assert rest["next"] is None
        assert page["epoch"] == answers[0]["epoch"]
    finally:
        await a.close()


async def test_a_user_with_three_connections_is_sent_to_and_disconnected_by_user(
        api_cluster: Cluster) -> None:
    conns = [await user(api_cluster, "carol") for _ in range(3)]
    other = await user(api_cluster, "dave")
    try:
        for c in [*conns, other]:
            await c.request({"action": "join-room", "target": "api-users", "id": 1}, "client-joined-room")
        status, room = await call(api_cluster, "GET", "/api/rooms/api-users")
        assert status == 200 and room["count"] == 4
        assert sorted((m["client"], m["user"]) for m in room["members"]) == sorted(
            [(c.id, "carol") for c in conns] + [(other.id, "dave")])
        status, answer = await call(api_cluster, "POST", "/api/send", {"user": "carol", "data": {"hi": 1}})
        assert status == 200 and sorted(answer["clients"]) == sorted(c.id for c in conns)
        for c in conns:
            got = await c.expect("send")
            assert (got["message_body"], got["IsTargetClient"]) == ({"hi": 1}, True)
        status, answer = await call(api_cluster, "POST", "/api/remove",
                                    {"room": "api-users", "user": "carol"})
        assert status == 200 and len(answer["clients"]) == 3
        left = {(await other.expect("client-left-room"))["sender"] for _ in conns}
        assert left == {c.id for c in conns}
        status, answer = await call(api_cluster, "POST", "/api/disconnect",
                                    {"user": "carol", "code": 4020, "reason": "banned"})
        assert status == 200 and len(answer["clients"]) == 3
        for c in conns:
            await c.ws.wait_closed()
            assert (c.ws.close_code, c.ws.close_reason) == (4020, "banned")
        await other.request({"action": "list-rooms", "id": 2}, "room-list")  # still connected
        status, answer = await call(api_cluster, "POST", "/api/send", {"client": conns[0].id, "data": {}})
        assert (status, answer["error"]["code"]) == (404, "unknown-client")
    finally:
        for c in [*conns, other]:
            await c.close()


async def test_batch_applies_in_order_and_answers_each(api_cluster: Cluster) -> None:
    a = await user(api_cluster, "ann")
    try:
        await a.request({"action": "join-room", "target": "api-batch", "id": 1}, "client-joined-room")
        status, answer = await call(api_cluster, "POST", "/api/batch", {"requests": [
            {"publish": {"room": "api-batch", "data": {"n": 1}}},
            {"publish": {"room": "api-none", "data": {}}},
            {"broadcast": {"rooms": ["api-batch", "api-none"], "data": {"n": 2}}},
            {"room": {"room": "api-batch"}},
            {"bogus": {}}]})
        assert status == 200
        results = answer["results"]
        assert [r["status"] for r in results] == [200, 404, 200, 200, 400]
        first, broadcast = results[0]["result"], results[2]["result"]["results"]
        assert broadcast[0]["offset"] == first["offset"] + 1
        assert broadcast[1]["error"]["code"] == "unknown-room"
        assert results[3]["result"]["offset"] == broadcast[0]["offset"]
        assert [(await a.expect("publish"))["message_body"] for _ in range(2)] == [{"n": 1}, {"n": 2}]
        status, answer = await call(api_cluster, "POST", "/api/batch", {"requests": [{"rooms": {}}] * 101})
        assert (status, answer["error"]["code"]) == (400, "bad-body")
    finally:
        await a.close()


async def test_an_idempotency_key_is_applied_once_whichever_gateway_answers(api_cluster: Cluster) -> None:
    a = await user(api_cluster, "ann")
    try:
        await a.request({"action": "join-room", "target": "api-once", "id": 1}, "client-joined-room")
        body = {"room": "api-once", "data": {"n": 1}, "idempotency_key": "order-17"}
        answers = [await call(api_cluster, "POST", "/api/publish", body) for _ in range(6)]
        # SO_REUSEPORT spreads the calls over both gateways: the processor remembers the key
        assert all(a == answers[0] for a in answers) and answers[0][0] == 200
        await call(api_cluster, "POST", "/api/publish", {"room": "api-once", "data": {"n": 2}})
        assert [(await a.expect("publish"))["message_body"] for _ in range(2)] == [{"n": 1}, {"n": 2}]
    finally:
        await a.close()


async def test_rooms_are_paged(api_cluster: Cluster) -> None:
    a = await user(api_cluster, "ann")
    try:
        for i in range(3):
            await a.request({"action": "join-room", "target": f"api-page-{i}", "id": i}, "client-joined-room")
        status, page = await call(api_cluster, "GET", "/api/rooms?limit=2&after=api-page-")
        assert status == 200 and [r["name"] for r in page["rooms"]] == ["api-page-0", "api-page-1"]
        assert page["rooms"][0]["members"] == 1 and page["next"] == "api-page-1"
        status, rest = await call(api_cluster, "GET", f"/api/rooms?limit=2&after={page['next']}")
        assert rest["rooms"][0]["name"] == "api-page-2"
    finally:
        await a.close()


async def test_wrong_keys_from_one_address_are_limited_and_logged_without_the_key(
        tmp_path: Path) -> None:
    """security.md, Limits: 10 wrong server API keys per address and gateway process, then
    `429`; each logged `wrong api key` (rate-limited), never the key itself."""
    cluster = Cluster(tmp_path, gateways=1, env={"MESHSTREAM_API_KEY": KEY})
    try:
        wrong = "wrong-key-that-must-not-be-logged-0123"
        statuses = [(await call(cluster, "GET", "/api/rooms", key=wrong))[0] for _ in range(11)]
        assert statuses == [401] * 10 + [429]
        log = cluster.read_log()
        assert "wrong api key" in log and wrong not in log
    finally:
        cluster.stop()


async def test_the_api_over_https(tmp_path: Path) -> None:
    """The same API on a TLS gateway port (--tls-cert): a publish (to the lobby, which
    always is) over HTTPS, with a certificate made here."""
    import ssl

    from tests.integration.test_gateway_security import self_signed

    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    cluster = Cluster(tmp_path, gateways=1, args=["--tls-cert", str(cert), "--tls-key", str(key)],
                      env={"MESHSTREAM_API_KEY": KEY}, tls=trust)
    try:
        def publish() -> tuple[int, Any]:
            conn = http.client.HTTPSConnection("127.0.0.1", cluster.port, timeout=20, context=trust)
            try:
                body = json.dumps({"room": "mesh-global", "data": {"n": 1}})
                conn.request("POST", "/api/publish", body=body, headers={
                    "Authorization": f"apikey {KEY}", "Content-Type": "application/json"})
                r = conn.getresponse()
                return r.status, json.loads(r.read())
            finally:
                conn.close()

        deadline = time.monotonic() + 20
        while (answer := await asyncio.to_thread(publish))[0] == 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # until the gateway's API watcher is welcomed
        status, body = answer
        assert status == 200 and body["offset"] >= 1 and body["epoch"], body
    finally:
        cluster.stop()
