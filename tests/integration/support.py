"""Helpers shared by the integration tests (imported explicitly; not a conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from meshstream_zmq.aio import AsyncWatcher
from meshstream_zmq.client import split_frames
from tests.conftest import ROOT, Client, Cluster, _die_with_the_tests, clients_on, title  # noqa: F401 - re-exported

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


# ---------------------------------------------------------------- a processor pair on loopback
# (tests/integration/test_failover.py, test_node_watcher.py)

PAIR_DEADLINE = 30.0  # for anything to happen (2 shared cores, 6 interpreters); never a measure


def free_block(n: int = 4) -> int:
    """A port P with P..P+n-1 free on loopback (a processor's --tcp takes four). Drawn below
    Linux's ephemeral range (32768 up), where the kernel gives no connection a local port:
    with every test's connections about, a free block there is rare (failed once under
    load); bound with SO_REUSEADDR, as ZeroMQ binds."""
    rng = random.Random()
    for _ in range(2000):
        base = rng.randrange(20000, 32768 - n)
        held: list[socket.socket] = []
        try:
            for p in range(base, base + n):
                t = socket.socket()
                held.append(t)
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for t in held:
                t.close()
        return base
    raise AssertionError("no block of free ports")


class Proc:
    """A meshstream command in its own process group, logging to a file."""

    def __init__(self, tmp: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.log = tmp / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *args], cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_the_tests)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


class Pair:
    """A primary/backup processor pair on loopback TCP (free ports, private run dirs), and
    gateways naming both; every process is stopped by the `pair` fixture."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {"primary": free_block(), "backup": free_block()}
        self.ws_port = free_block(1)
        self.procs: dict[str, Proc] = {}
        self.url = f"ws://127.0.0.1:{self.ws_port}/wsmesh"

    def processor(self, which: str, name: str | None = None, *extra: str) -> Proc:
        other = "backup" if which == "primary" else "primary"
        args = ["processor", "--tcp", f"127.0.0.1:{self.ports[which]}",
                "--peer", f"127.0.0.1:{self.ports[other]}", "--run-dir",
                str(self.tmp / f"{name or which}-run"), "--metrics-port", "0", *extra]
        p = Proc(self.tmp, name or which, args + (["--backup"] if which == "backup" else []))
        self.procs[name or which] = p
        return p

    def gateways(self, *extra: str) -> Proc:
        """Two gateways (and, unless `extra` says --no-watchers, the Words Battle watchers)."""
        p = Proc(self.tmp, "gateways", [
            "run", "--no-processor", "--gateways", "2", "--port", str(self.ws_port),
            "--host", "127.0.0.1", "--run-dir", str(self.tmp / "gw-run"), "--metrics-port", "0",
            "--tcp", f"127.0.0.1:{self.ports['primary']}",
            "--peer", f"127.0.0.1:{self.ports['backup']}", "--time-scale", "0.2", *extra])
        self.procs["gateways"] = p
        return p

    def healthz(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ws_port}/healthz", timeout=2) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()
        except OSError:
            return 0, ""

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.text()[-3000:]}" for p in self.procs.values())

    async def until(self, cond, what: str) -> None:
        deadline = time.monotonic() + PAIR_DEADLINE
        while not cond():
            assert time.monotonic() < deadline, f"timed out: {what}\n{self.logs()}"
            await asyncio.sleep(0.05)  # polling a log or /healthz, with a deadline

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.kill(signal.SIGTERM if p.proc.poll() is None else signal.SIGKILL)


@pytest.fixture(name="pair")
def pair_fixture(tmp_path: Path) -> Iterator[Pair]:
    """`pair`: import `pair_fixture` into a test module to use it."""
    made = Pair(tmp_path)
    try:
        yield made
    finally:
        made.stop()


async def one_per_gateway(url: str, n: int) -> list[Client]:
    """`n` clients connected through `url`, each on another gateway process (by its ID)."""
    clients: dict[int, Client] = {}
    while len(clients) < n:
        c = await Client.connect(url)
        if gateway_index(c) in clients:
            await c.close()
        else:
            clients[gateway_index(c)] = c
    return list(clients.values())


def serving(proc: Proc) -> bool:
    """Whether this processor of a pair last logged itself active."""
    lines = [line for line in proc.text().splitlines()
             if '"processor active"' in line or '"processor passive' in line]
    return bool(lines) and '"processor active"' in lines[-1]


@contextlib.asynccontextmanager
async def welcomed(bot: AsyncWatcher) -> AsyncIterator[AsyncWatcher]:
    """An asyncio watcher started and welcomed for the block, closed after it."""
    await bot.start()
    try:
        await bot.wait_welcomed(15)
        yield bot
    finally:
        await bot.close()
