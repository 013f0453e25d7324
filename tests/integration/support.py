"""Helpers shared by the integration tests (imported explicitly; not a conftest)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from meshstream_zmq.client import split_frames
from tests.conftest import Client, Cluster, clients_on, title  # noqa: F401 - re-exported

DEADLINE = 15.0  # generous upper bound for anything the system promises "within seconds"
_ids = itertools.count(1)


def uid(prefix: str = "r") -> str:
    """A room name (or request id) unique within the test session."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


def gateway_index(client: Client) -> int:
    """Client IDs look like 'gw<index>-<epoch>.<n>'."""
    head = client.id.partition("-")[0]
    assert head.startswith("gw"), client.id
    return int(head[2:])


def roles(cluster: Cluster, prefix: str = "") -> dict[str, int]:
    return cluster.roles(prefix)


def kill(cluster: Cluster, role: str, sig: int = signal.SIGKILL) -> int:
    return cluster.kill(role, sig)


def http_get(cluster: Cluster, path: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of GET http://127.0.0.1:<port><path>."""
    url = f"http://127.0.0.1:{cluster.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


async def wait_for(cond: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> Any:
    """Poll a condition (sync callable) until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def spread(cluster: Cluster) -> AsyncIterator[Callable[..., Any]]:
    """`await spread(gateways, per_gateway)`: clients on distinct gateways, closed afterwards."""
    made: list[Client] = []

    async def make(gateways: int = 2, per_gateway: int = 1) -> list[list[Client]]:
        groups = await clients_on(cluster.url, gateways, per_gateway)
        made.extend(c for g in groups for c in g)
        return groups

    yield make
    for c in made:
        await c.close()


async def sync(c: Client) -> None:
    """A round trip through the processor: whatever it routed to `c` earlier is now in the inbox.

    The processor handles frames in order and a gateway applies its output in order,
    so once this reply is here, any (mis)delivery decided before it has arrived too.
    """
    rid = uid("sync")
    await c.request({"action": "list-rooms", "id": rid}, "room-list")


async def roundtrip(c: Client, room: str) -> None:
    """A valid frame still works: `c` (a member of `room`) gets its own broadcast back."""
    token = uid("ok")
    await c.send({"action": "ping-test", "target": room, "message_body": {"token": token}})
    got = await c.next(lambda m: m.get("action") == "ping-test"
                       and m.get("message_body", {}).get("token") == token)
    assert got["sender"] == c.id


async def join(c: Client, room: str, **extra: Any) -> dict[str, Any]:
    rid = uid("join")
    msg = {"action": "join-room", "target": room, "id": rid, **extra}
    return await c.request(msg, "client-joined-room")


async def close_code(c: Client, timeout: float = DEADLINE) -> int | None:
    """Read (and discard) until the server closes the connection; returns the close code."""
    deadline = time.monotonic() + timeout
    ws = c.ws
    while ws.state is not State.CLOSED:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("the server did not close the connection")
        try:
            frame = await asyncio.wait_for(ws.recv(), remaining)
        except ConnectionClosed:
            break
        except TimeoutError:
            continue
        if isinstance(frame, str):
            c.inbox.extend(split_frames(frame))
    return ws.close_code


def module_cluster(tmp_path_factory: pytest.TempPathFactory, **kwargs: Any) -> Cluster:
    """A cluster shared by a module's tests (each test uses its own rooms)."""
    base: Path = tmp_path_factory.mktemp("cluster")
    return Cluster(base, **kwargs)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for a whole test module: import this and `cluster` into the module."""
    c = module_cluster(tmp_path_factory)
    yield c
    c.stop()


@pytest.fixture
def cluster(shared_cluster: Cluster) -> Cluster:
    return shared_cluster
