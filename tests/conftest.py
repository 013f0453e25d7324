"""Shared fixtures: real meshstream processes on free ports, and a JSON WebSocket client."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import websockets

from meshstream_zmq.client import split_frames

ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def title(p: psutil.Process) -> str:
    """The process title: setproctitle pads argv with NULs, which psutil returns as ''."""
    return " ".join(a for a in p.cmdline() if a).strip()


def _die_with_the_tests() -> None:
    """In the cluster's supervisor, before exec: SIGTERM when the test run dies, so a run
    killed from outside (a timeout, Ctrl-C twice) leaves no cluster behind; the supervisor
    then stops its children as usual."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Cluster:
    """`meshstream run` in its own process group, with a private run directory."""

    def __init__(self, tmp: Path, gateways: int = 2, watchers: bool = False,
                 args: list[str] | None = None, env: dict[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        """`tls`: the cluster serves TLS (`args` name the certificate); this client-side
        context trusts it, and `url` is wss://."""
        self.port = free_port()
        self.tls = tls
        self.run_dir = str(tmp / "run")
        self.gateways = gateways
        cmd = [sys.executable, "-m", "services.cli", "run", "--port", str(self.port),
               "--gateways", str(gateways), "--run-dir", self.run_dir, "--metrics-port", "0",
               "--host", "127.0.0.1", *([] if watchers else ["--no-watchers"]), *(args or [])]
        self.log = open(tmp / "cluster.log", "wb")  # noqa: SIM115
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_the_tests)
        self.url = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.port}/wsmesh"
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()  # a cluster that failed to start must not leak its processes
            raise

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.read_log()
            if len(self.roles("gateway")) == self.gateways and self.healthy():
                return
            time.sleep(0.05)
        raise AssertionError("cluster not healthy:\n" + self.read_log())

    def healthy(self) -> bool:
        try:
            scheme = "https" if self.tls else "http"
            with urllib.request.urlopen(f"{scheme}://127.0.0.1:{self.port}/healthz", timeout=1,
                                        context=self.tls) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def read_log(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-6000:]

    def processes(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def roles(self, prefix: str = "") -> dict[str, int]:
        """Process title ('meshstream: gateway 1' → 'gateway 1') → PID, for live children."""
        out = {}
        for p in self.processes():
            try:
                name = title(p)
            except psutil.Error:
                continue
            if name.startswith("meshstream: " + prefix):
                out[name.removeprefix("meshstream: ")] = p.pid
        return out

    def kill(self, role: str, sig: int = signal.SIGKILL) -> int:
        pid = self.roles(role)[role]
        os.kill(pid, sig)
        return pid

    def stop(self) -> None:
        kids = self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        gone, alive = psutil.wait_procs(kids, timeout=5)
        for p in alive:
            p.kill()
        self.log.close()
        assert not alive, f"processes left behind: {alive}"


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(**kwargs: Any) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", **kwargs)
        made.append(c)
        return c

    (tmp_path / "c0").mkdir()
    for i in range(1, 4):
        (tmp_path / f"c{i}").mkdir()
    yield make
    for c in made:
        c.stop()


@pytest.fixture
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory()


class Client:
    """A WebSocket client that splits server frames into JSON objects."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self.id = ""

    @classmethod
    async def connect(cls, url: str) -> Client:
        c = cls(await websockets.connect(url, max_size=2**24))
        hello = await c.expect("client-connected")
        c.id = hello["target"]
        assert hello["message_body"]["client"] == c.id
        return c

    @property
    def gateway(self) -> str:
        return self.id.partition(".")[0]

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def _fill(self, timeout: float) -> None:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str), "server frames are text"
        self.inbox.extend(split_frames(frame))  # the client library's framing: split on \r?\n

    async def next(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        """The first message (in order) matching pred; messages before it stay queued."""
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.inbox):
                if pred(msg):
                    return self.inbox.pop(i)
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await self._fill(remaining)
            except TimeoutError:
                raise AssertionError(f"no matching message; inbox: {self.inbox}") from None

    async def expect(self, action: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> bool:
            return m.get("action") == action and all(m.get(k) == v for k, v in fields.items())
        return await self.next(match, timeout)

    async def error(self, code: str, timeout: float = 10) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> bool:
            return m.get("action") == "error" and m["message_body"]["code"] == code
        return await self.next(match, timeout)

    async def request(self, obj: dict[str, Any], reply: str, timeout: float = 10) -> dict[str, Any]:
        await self.send(obj)
        return await self.expect(reply, timeout, **({"id": obj["id"]} if "id" in obj else {}))

    async def close(self) -> None:
        await self.ws.close()


async def clients_on(url: str, gateways: int, per_gateway: int = 1,
                     timeout: float = 15) -> list[list[Client]]:
    """Clients on `gateways` distinct gateways, `per_gateway` each (SO_REUSEPORT spreads
    connections at random: connect until each group is full; surplus ones are closed)."""
    by_gateway: dict[str, list[Client]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = await Client.connect(url)
        group = by_gateway.setdefault(c.gateway, [])
        if len(group) < per_gateway:
            group.append(c)
        else:
            await c.close()
        full = [g for g in by_gateway.values() if len(g) >= per_gateway][:gateways]
        if len(full) == gateways:
            for g in by_gateway.values():
                if g not in full:
                    for extra in g:
                        await extra.close()
            return full
    for g in by_gateway.values():
        for c in g:
            await c.close()
    raise AssertionError(f"clients landed on {len(by_gateway)} gateways only")


@pytest.fixture
async def connect(cluster: Cluster) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Client] = []

    async def make(url: str | None = None) -> Client:
        c = await Client.connect(url or cluster.url)
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.close()
