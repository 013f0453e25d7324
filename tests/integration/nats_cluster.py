"""Three real nats-servers clustered with JetStream for tests, each in a host (network
namespace) of its own (tests/integration/netns.py): the layout of docs/deploy.md, "The log
on a NATS cluster", with the same settings. A node can be SIGKILLed, paused (SIGSTOP) and
restarted on its store; `ready()` waits until JetStream answers on every running node
(a meta leader is elected; and each stream named has a leader), never a fixed sleep."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nats
import nats.errors

from tests.integration.nats_server import BINARY
from tests.integration.netns import Deployment, Host

NODES = ("nats1", "nats2", "nats3")
CLIENT_PORT, ROUTE_PORT, MONITOR_PORT = 4222, 6222, 8222  # each node in its own namespace
READY = 30.0  # seconds for the nodes to elect a meta leader (2 cores, shared)


def settings(name: str, addr: str, peers: Sequence[str], store: Path) -> str:
    """One node's nats-server.conf (docs/deploy.md): routes to all three, JetStream on its
    store, fsync before every acknowledgement (`sync_interval: always`: Jepsen found
    acknowledged writes lost with the default), room for a large log entry."""
    routes = ", ".join(f"nats://{p}:{ROUTE_PORT}" for p in peers)
    return f"""server_name: {name}
listen: {addr}:{CLIENT_PORT}
http: {addr}:{MONITOR_PORT}
max_payload: 64MB
jetstream {{
  store_dir: "{store}"
  sync_interval: always
}}
cluster {{
  name: meshstream-log
  listen: {addr}:{ROUTE_PORT}
  routes: [{routes}]
}}
"""


class NatsCluster:
    """The three nodes of `deployment`'s net (hosts named as NODES)."""

    def __init__(self, deployment: Deployment, tmp: Path) -> None:
        self.deployment = deployment
        self.net = deployment.net
        self.tmp = tmp
        self.running: dict[str, Host] = {}
        self.paused: set[str] = set()
        for node in NODES:
            self.start(node)
        self.ready()

    def url(self, node: str) -> str:
        return f"nats://{self.net.addr(node)}:{CLIENT_PORT}"

    @property
    def urls(self) -> list[str]:
        return [self.url(node) for node in NODES]

    def start(self, node: str) -> Host:
        """Start `node` (again) on its store and settings."""
        store = self.tmp / node
        store.mkdir(parents=True, exist_ok=True)
        conf = store / "nats-server.conf"
        conf.write_text(settings(node, self.net.addr(node), [self.net.addr(n) for n in NODES],
                                 store / "js"))
        host = self.deployment.spawn(node, node, [str(BINARY), "-c", str(conf)])
        self.running[node] = host
        return host

    def kill(self, node: str) -> None:
        """SIGKILL `node`: gone at once, its store as it was on disk."""
        host = self.running.pop(node)
        host.stopped = True  # on purpose: not a failure of the deployment
        host.proc.send_signal(signal.SIGKILL)
        host.proc.wait(10)
        self.paused.discard(node)

    def restart(self, node: str) -> None:
        self.kill(node)
        self.start(node)

    def pause(self, node: str) -> None:
        self.running[node].proc.send_signal(signal.SIGSTOP)
        self.paused.add(node)

    def resume(self, node: str) -> None:
        self.running[node].proc.send_signal(signal.SIGCONT)
        self.paused.discard(node)

    def monitor(self, node: str, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.net.addr(node)}:{MONITOR_PORT}{path}",
                                    timeout=2) as r:
            return dict(json.load(r))

    def leader(self, stream: str) -> str:
        """The node leading `stream` (its raft group), as a running node sees it."""
        node = next(n for n in self.running if n not in self.paused)
        for account in self.monitor(node, "/jsz?streams=true").get("account_details", []):
            for detail in account.get("stream_detail", []):
                if detail["name"] == stream:
                    return str(detail["cluster"]["leader"])
        raise AssertionError(f"no stream {stream} on {node}")

    def serving(self, addr: str) -> str:
        """The node a client at `addr` is connected to."""
        for node in self.running:
            if any(c.get("ip") == addr for c in self.monitor(node, "/connz").get("connections", [])):
                return node
        raise AssertionError(f"no NATS node serves {addr}")

    def answers(self, node: str, streams: Sequence[str]) -> bool:
        """JetStream answers on `node`: the account (the meta leader's answer: one is
        elected) and each of `streams` (its leader's)."""
        async def probe() -> None:
            nc = await nats.connect(self.url(node), connect_timeout=1, allow_reconnect=False)
            try:
                js = nc.jetstream(timeout=1)
                await js.account_info()
                for stream in streams:
                    await js.stream_info(stream)
            finally:
                await nc.close()

        with ThreadPoolExecutor(1) as pool:  # its own event loop, whoever calls
            try:
                pool.submit(asyncio.run, probe()).result()
            except (OSError, TimeoutError, nats.errors.Error):
                return False
        return True

    def ready(self, streams: Sequence[str] = (), timeout: float = READY) -> None:
        """Until JetStream answers on every running, unpaused node (answers)."""
        deadline = time.monotonic() + timeout
        while not all(self.answers(n, streams) for n in self.running if n not in self.paused):
            for node, host in self.running.items():
                assert host.proc.poll() is None, f"{node} exited\n{host.text()[-3000:]}"
            assert time.monotonic() < deadline, f"the NATS cluster not ready\n{self.deployment.logs()}"
            time.sleep(0.1)  # polling JetStream, with a deadline
