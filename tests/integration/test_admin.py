"""/admin on a real cluster: the door (401 without the token, 403 from beyond loopback
without one) and the live snapshot over /admin/ws."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import websockets

from tests.conftest import Cluster
from tests.integration.support import Pair, pair_fixture  # noqa: F401 - the fixture `pair`

TOKEN = "admin-s3cret-token-0123"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def snapshot(url: str, want: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first snapshot pushed over /admin/ws that satisfies `want` (pushed every second)."""
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"search": "", "after": ""}))
        while True:
            snap = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if want(snap):
                return snap


def test_admin_token_is_required_and_opens_page_and_feed(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(watchers=True, env={"MESHSTREAM_ADMIN_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{c.port}"
    status, body = get(f"{base}/admin")
    assert status == 401 and "Admin token" in body  # the page asks for it
    assert get(f"{base}/admin", {"Authorization": "Bearer wrong"})[0] == 401
    status, body = get(f"{base}/admin", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and 'id="chart-messages"' in body and "<script>" in body
    assert get(f"{base}/admin?token={TOKEN}")[0] == 200

    ws = f"ws://127.0.0.1:{c.port}/admin/ws"
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(snapshot(ws, lambda s: True))
    assert refused.value.response.status_code == 401

    def complete(s: dict[str, Any]) -> bool:
        roles = [p["role"] for p in s["processes"]]
        return (roles.count("gateway") == 2 and "processor" in roles and "watcher" in roles
                and len(s["gateways"]) == 2 and bool(s["watchers"]))

    snap = asyncio.run(snapshot(f"{ws}?token={TOKEN}", complete))
    assert all(p["pid"] > 0 and p["rss"] > 0 for p in snap["processes"])
    assert any(r["name"] == "mesh-global" for r in snap["rooms"]["items"])


def outside_address() -> str | None:
    """This host's address on its default route (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_without_a_token_admin_answers_loopback_only(cluster_factory: Callable[..., Cluster]) -> None:
    address = outside_address()
    if address is None:
        pytest.skip("no non-loopback address on this host")
    c = cluster_factory(args=["--host", "0.0.0.0"])
    assert get(f"http://127.0.0.1:{c.port}/admin")[0] == 200
    status, body = get(f"http://{address}:{c.port}/admin")
    assert status == 403 and "loopback" in body
    # A page on another site cannot read the feed through the operator's browser.
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(from_elsewhere(f"ws://127.0.0.1:{c.port}/admin/ws"))
    assert refused.value.response.status_code == 403


async def from_elsewhere(url: str) -> None:
    async with websockets.connect(url, origin=websockets.Origin("http://evil.example")):
        pass


def test_a_respawned_gateway_is_listed_with_its_restart(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory()
    killed = c.kill("gateway 1")
    deadline = time.monotonic() + 30
    while c.roles("gateway 1").get("gateway 1", killed) == killed:  # the supervisor respawns it
        assert time.monotonic() < deadline, c.read_log()
        time.sleep(0.05)
    c.wait_healthy()
    respawned, other = c.roles("gateway 1")["gateway 1"], c.roles("gateway 2")["gateway 2"]

    def listed(s: dict[str, Any]) -> bool:
        return respawned in {p["pid"] for p in s["processes"]}

    snap = asyncio.run(snapshot(f"ws://127.0.0.1:{c.port}/admin/ws", listed))
    restarts = {p["pid"]: p["restarts"] for p in snap["processes"] if p["role"] == "gateway"}
    assert (restarts[respawned], restarts[other]) == (1, 0)  # the slot's new process, its twin


async def test_the_page_names_the_serving_processor_of_a_pair(pair: Pair) -> None:
    primary = pair.processor("primary")
    backup = pair.processor("backup")
    pair.gateways("--no-watchers")
    await pair.until(lambda: pair.healthz()[0] == 200, "the gateways healthy")
    # the pair settled (the backup heard the active primary, and its term)
    await pair.until(lambda: '"processor passive' in backup.text(), "the backup passive")
    ws = f"ws://127.0.0.1:{pair.ws_port}/admin/ws"
    before = (await snapshot(ws, lambda s: True))["serving"]
    assert before["role"] == "primary"
    primary.kill()
    after = (await snapshot(ws, lambda s: s["serving"]["role"] == "backup"))["serving"]
    assert after["term"] > before["term"]  # a takeover


# ------------------------------------------------------------------ the door (issue 20, item 7)

UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def raw(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """GET `path` with exactly these headers (Host included) from 127.0.0.1: the status and
    the response's headers (lower-case names)."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\n{lines}\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, head
            head += chunk
    status, *rest = head.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return int(status.split()[1]), {k.strip().lower(): v.strip()
                                    for k, _, v in (line.partition(":") for line in rest)}


def test_without_a_token_a_rebound_name_is_refused(cluster_factory: Callable[..., Cluster]) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 reaches
    the gateway from loopback, but its requests carry its own name in Host."""
    c = cluster_factory()
    p = c.port
    assert raw(p, "/admin", {"Host": f"127.0.0.1:{p}"})[0] == 200
    assert raw(p, "/admin", {"Host": f"localhost:{p}"})[0] == 200
    assert raw(p, "/admin", {"Host": f"evil.example:{p}"})[0] == 403
    assert raw(p, "/admin", {})[0] == 403  # no Host at all
    evil = {"Host": f"evil.example:{p}", "Origin": f"http://evil.example:{p}"}
    assert raw(p, "/admin/ws", {**evil, **UPGRADE})[0] == 403
    own = {"Host": f"127.0.0.1:{p}", "Origin": f"http://127.0.0.1:{p}"}
    assert raw(p, "/admin/ws", {**own, **UPGRADE})[0] == 101  # the page itself
    assert raw(p, "/admin/ws", {**own, "Origin": "http://evil.example", **UPGRADE})[0] == 403


def test_without_a_token_a_proxied_request_is_refused(cluster_factory: Callable[..., Cluster]) -> None:
    """A proxy on this host makes every request come from loopback: a request that says it
    came through one never passes the loopback rule."""
    c = cluster_factory()
    host = {"Host": f"127.0.0.1:{c.port}"}
    for name, value in (("X-Forwarded-For", "203.0.113.9"), ("X-Real-IP", "203.0.113.9"),
                        ("Forwarded", "for=203.0.113.9"), ("x-forwarded-for", "127.0.0.1")):
        status, _ = raw(c.port, "/admin", {**host, name: value})
        assert status == 403, name
        assert raw(c.port, "/admin/ws", {**host, name: value, **UPGRADE})[0] == 403, name


def test_token_guesses_are_limited_per_address(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(gateways=1, env={"MESHSTREAM_ADMIN_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{c.port}"
    host = {"Host": f"127.0.0.1:{c.port}"}
    assert raw(c.port, "/admin", {**host, "Authorization": f"Bearer {TOKEN}"})[0] == 200
    for n in range(10):  # ten wrong tokens a minute per address
        assert get(f"{base}/admin?token=guess-{n}")[0] == 401
    status, headers = raw(c.port, "/admin", {**host, "Authorization": f"Bearer {TOKEN}"})
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 6  # even the right one, until one refills
    assert raw(c.port, "/admin/ws", {**host, "Authorization": "Bearer guess", **UPGRADE})[0] == 429
    assert get(f"{base}/admin")[0] == 429
    assert get(f"{base}/healthz")[0] == 200  # the rest of the port is not limited
    log = c.read_log()
    assert 1 <= log.count('"wrong admin token"') <= 2, log  # logged rate-limited
    assert "guess-" not in log  # and never the token
