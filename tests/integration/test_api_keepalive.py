"""The server API's connections (docs/api.md, "Connections") against a real cluster:
HTTP/1.1 keep-alive as pooled clients (requests.Session, urllib3, Node's agent) use it,
its bounds, and the answers that still close."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from meshstream_zmq import api
from tests.conftest import Client, Cluster
from tests.integration.support import module_cluster

KEY = "api-key-for-the-keepalive-tests-0123"
AUTH = {"Authorization": f"apikey {KEY}"}
AUTH_LINE = f"Authorization: apikey {KEY}\r\n".encode()
IDLE = 2.0  # --api-idle-timeout of this module's cluster (short: the idle test waits for it)


@pytest.fixture(scope="module")
def api_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = module_cluster(tmp_path_factory, gateways=1,
                       env={"MESHSTREAM_API_KEY": KEY, "MESHSTREAM_API_IDLE_TIMEOUT": str(IDLE)})
    answered_by_the_processor(c.port)
    yield c
    c.stop()


def answered_by_the_processor(port: int, deadline: float = 30.0) -> None:
    """Until the gateway's API watcher is welcomed (before that: 503)."""
    end = time.monotonic() + deadline
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/api/rooms", headers=AUTH)
            if conn.getresponse().status == 200:
                return
        finally:
            conn.close()
        assert time.monotonic() < end, "the API never reached the processor"
        time.sleep(0.05)  # polling a state, with a deadline


def raw(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(data)
    return s


def read_answer(s: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response off a raw socket (its Content-Length body); what follows stays in `buf`."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"closed before an answer: {bytes(buf)!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    n = int(headers["content-length"])
    while len(rest) < n:
        chunk = s.recv(65536)
        assert chunk, "closed inside a body"
        rest += chunk
    buf[:] = rest[n:]
    return int(lines[0].split(" ")[1]), headers, rest[:n]


def closed_by_the_gateway(s: socket.socket) -> bool:
    """Whether the gateway ends the connection (EOF; a reset counts) before the socket's
    timeout, with nothing more sent."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def get(path: str, version: str = "HTTP/1.1", extra: str = "") -> bytes:
    return (f"GET {path} {version}\r\nHost: 127.0.0.1\r\nAuthorization: apikey {KEY}\r\n"
            f"{extra}\r\n").encode()


async def test_three_requests_are_answered_over_one_connection(api_cluster: Cluster) -> None:
    member = await Client.connect(api_cluster.url)
    try:
        await member.request({"action": "join-room", "target": "ka-three", "id": 1}, "client-joined-room")

        def publish_three() -> list[tuple[int, int, str | None, Any]]:
            conn = http.client.HTTPConnection("127.0.0.1", api_cluster.port, timeout=20)
            try:
                out = []
                for n in range(3):
                    conn.request("POST", "/api/publish", body=json.dumps(
                        {"room": "ka-three", "data": {"n": n}}).encode(), headers=AUTH)
                    r = conn.getresponse()
                    document = json.loads(r.read())
                    assert conn.sock is not None, "the answer closed the connection"
                    out.append((r.status, conn.sock.getsockname()[1], r.getheader("Connection"),
                                document))
                return out
            finally:
                conn.close()

        answers = await asyncio.to_thread(publish_three)
        assert [status for status, *_ in answers] == [200, 200, 200]
        assert {port for _, port, *_ in answers} == {answers[0][1]}  # one connection, one peer port
        assert {connection for _, _, connection, _ in answers} == {"keep-alive"}
        offsets = [document["offset"] for *_, document in answers]
        assert offsets == sorted(offsets) and len(set(offsets)) == 3
        assert [(await member.expect("publish"))["message_body"] for _ in range(3)] == [
            {"n": 0}, {"n": 1}, {"n": 2}]
    finally:
        await member.close()


@pytest.mark.parametrize(("version", "extra"), [("HTTP/1.1", "Connection: close\r\n"),
                                                ("HTTP/1.0", "")])
def test_a_client_that_asks_to_close_is_answered_then_closed(
        api_cluster: Cluster, version: str, extra: str) -> None:
    with raw(api_cluster.port, get("/api/rooms", version, extra)) as s:
        status, headers, _ = read_answer(s, bytearray())
        assert (status, headers["connection"]) == (200, "close")
        assert closed_by_the_gateway(s)


def test_http_1_0_with_keep_alive_is_kept(api_cluster: Cluster) -> None:
    extra = "Connection: keep-alive\r\n"
    with raw(api_cluster.port, get("/api/rooms", "HTTP/1.0", extra)) as s:
        buf = bytearray()
        assert read_answer(s, buf)[1]["connection"] == "keep-alive"
        s.sendall(get("/api/rooms", "HTTP/1.0", extra))
        assert read_answer(s, buf)[0] == 200


def test_a_request_sent_before_the_answer_is_answered_after_it(api_cluster: Cluster) -> None:
    # Both in one write: the gateway reads the second once the first is answered.
    with raw(api_cluster.port, get("/api/rooms?limit=1") + get("/api/nothing")) as s:
        buf = bytearray()
        first, second = read_answer(s, buf), read_answer(s, buf)
        assert (first[0], second[0]) == (200, 404)
        assert json.loads(second[2])["error"]["code"] == "not-found"


def test_a_refused_request_still_closes(api_cluster: Cluster) -> None:
    # A wrong key (the body is never read), then a POST without Content-Length.
    wrong = b"GET /api/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: apikey " + b"w" * 32 + b"\r\n\r\n"
    for request in (wrong, b"POST /api/publish HTTP/1.1\r\nHost: x\r\n" + AUTH_LINE + b"\r\n"):
        with raw(api_cluster.port, request) as s:
            status, headers, _ = read_answer(s, bytearray())
            assert status in (400, 401) and headers["connection"] == "close"
            assert closed_by_the_gateway(s)


def test_an_idle_connection_is_closed_after_the_idle_timeout(api_cluster: Cluster) -> None:
    with raw(api_cluster.port, get("/api/rooms")) as s:
        _, headers, _ = read_answer(s, bytearray())
        answered = time.monotonic()
        assert headers["connection"] == "keep-alive"
        assert headers["keep-alive"] == f"timeout={int(IDLE)}, max={api.MAX_REQUESTS - 1}"
        assert closed_by_the_gateway(s)  # within the socket's 20 s
        assert time.monotonic() - answered >= IDLE / 2  # kept for a while, not closed at once


def test_the_last_of_max_requests_closes(api_cluster: Cluster) -> None:
    # Unknown endpoints: answered (404) by the gateway alone, each a whole request.
    with raw(api_cluster.port, get("/api/nothing")) as s:
        buf = bytearray()
        for n in range(1, api.MAX_REQUESTS + 1):
            status, headers, _ = read_answer(s, buf)
            assert status == 404
            if n < api.MAX_REQUESTS:
                assert headers["connection"] == "keep-alive", n
                s.sendall(get("/api/nothing"))
        assert headers["connection"] == "close"
        assert closed_by_the_gateway(s)
