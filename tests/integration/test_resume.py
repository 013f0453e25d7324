"""Sessions and resume on real clusters (docs/protocol.md, "Sessions and resume"): a client
whose connection is lost comes back, on any gateway, with its ID, its rooms and every
message it missed, exactly once and in order, before live traffic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from meshstream_zmq.client import Session
from tests.conftest import ROOT, Client, Cluster
from tests.integration.support import DEADLINE, gateway_index, join, kill, sync, uid, wait_for


class Tracked(Client):
    """A Client that keeps its session and positions as the client library does
    (meshstream_zmq.client.Session), and fails on any frame that comes twice or out of
    order in its room or in its direct messages."""

    positions: Session | None = None

    @property
    def session(self) -> str:
        return self.positions.secret if self.positions else ""

    @property
    def epoch(self) -> str:
        return self.positions.epoch if self.positions else ""

    async def _fill(self, timeout: float) -> None:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str)
        for line in frame.splitlines():
            if line.strip():
                msg = json.loads(line)
                self.note(msg)
                self.inbox.append(msg)

    def note(self, msg: dict[str, Any]) -> None:
        if self.positions is None:
            self.positions = Session()
        if msg.get("action") == "client-connected":
            self.positions.connected(msg)
        else:
            assert self.positions.accept(msg), f"{msg}: a duplicate or disorder"

    def resume_url(self, url: str, session: str | None = None) -> str:
        assert self.positions is not None
        return replace(self.positions, secret=session or self.session).url(url)

    def lose(self) -> None:
        """The network goes: the TCP connection is cut, no close frame."""
        transport = self.ws.transport
        transport.abort()


async def tracked(url: str) -> Tracked:
    c = Tracked(await websockets.connect(url, max_size=2**24))
    hello = await c.expect("client-connected")
    c.id = hello["target"]
    return c


async def resume(url: str, old: Tracked, session: str | None = None) -> tuple[Tracked, dict[str, Any]]:
    """Connect with old's session and positions; (the new client, its client-connected)."""
    c = Tracked(await websockets.connect(old.resume_url(url, session), max_size=2**24))
    assert old.positions is not None
    c.positions = replace(old.positions, positions=dict(old.positions.positions))
    hello = await c.expect("client-connected")
    c.id = hello["target"]
    return c, hello


async def pair(cluster: Cluster) -> tuple[Tracked, Tracked]:
    """Two Tracked clients on distinct gateways."""
    deadline = time.monotonic() + DEADLINE
    first = await tracked(cluster.url)
    while time.monotonic() < deadline:
        other = await tracked(cluster.url)
        if other.gateway != first.gateway:
            return first, other
        await other.close()
    raise AssertionError("no second gateway")


def about(client: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("action") in ("client-left-room", "client-joined-room") \
        and m.get("sender") == client


async def drain_until_sync(c: Client) -> list[dict[str, Any]]:
    """Everything `c` receives up to a round trip through the processor, in order."""
    rid = uid("sync")
    await c.send({"action": "list-rooms", "id": rid})
    await c.next(lambda m: m.get("id") == rid)
    got, c.inbox = c.inbox, []
    return got


async def missed_then_live(cluster: Cluster, lose: Callable[[Tracked], Any]) -> None:
    a, b = await pair(cluster)
    room = uid("resume")
    await join(a, room)
    await join(b, room)
    await a.expect("client-joined-room", sender=b.id)
    await sync(a)
    old_session = a.session
    await lose(a)

    # while a is away: room messages, and direct messages to a, all accepted
    for n in range(5):
        await b.send({"action": "chat", "target": room, "message_body": {"n": n}})
        await b.expect("chat", sender=b.id)
        await b.send({"action": "dm", "target": a.id, "IsTargetClient": True,
                      "message_body": {"n": n}})
    await sync(b)

    back, hello = await resume(cluster.url, a)
    body = hello["message_body"]
    assert body["resumed"] is True and body["client"] == a.id and hello["target"] == a.id
    assert body["session"] != old_session and back.session == body["session"]
    await b.send({"action": "chat", "target": room, "message_body": {"n": "live"}})
    # b's own copy means the processor has routed it: the sync below comes after it
    # (b and `back` may be on different gateways, whose frames the processor may take in
    # either order)
    await b.next(lambda m: m.get("action") == "chat" and m["message_body"]["n"] == "live")
    got = [(m["action"], m["message_body"]["n"]) for m in await drain_until_sync(back)
           if m.get("action") in ("chat", "dm")]
    assert got == [x for n in range(5) for x in (("chat", n), ("dm", n))] + [("chat", "live")]
    # still a member: it can talk in the room; and b was never told it left or came back
    await back.send({"action": "chat", "target": room, "message_body": {"n": "from a"}})
    await b.expect("chat", sender=a.id)
    assert not [m for m in await drain_until_sync(b) if about(a.id)(m)]
    await back.close()
    await b.close()


async def test_a_lost_connection_resumes_with_everything_it_missed(cluster: Cluster) -> None:
    async def lose(a: Tracked) -> None:
        a.lose()

    await missed_then_live(cluster, lose)


async def test_a_client_of_a_sigkilled_gateway_resumes_on_another(cluster: Cluster) -> None:
    async def lose(a: Tracked) -> None:
        kill(cluster, f"gateway {gateway_index(a)}")
        with contextlib.suppress(ConnectionClosed):
            while True:
                await a.ws.recv()

    await missed_then_live(cluster, lose)


async def test_two_racing_resumes_one_wins_and_the_old_secret_is_useless(cluster: Cluster) -> None:
    a, b = await pair(cluster)
    await sync(a)
    a.lose()
    (c1, h1), (c2, h2) = await asyncio.gather(resume(cluster.url, a), resume(cluster.url, a))
    outcomes = sorted([h1["message_body"]["resumed"], h2["message_body"]["resumed"]])
    assert outcomes == [False, True]
    winner, loser = (h1, h2) if h1["message_body"]["resumed"] else (h2, h1)
    assert winner["message_body"]["client"] == a.id
    assert loser["message_body"]["client"] != a.id
    assert loser["message_body"]["reason"] == "unknown-session"
    # the secret a had is spent: presenting it again gives a new identity, never a.id
    c3, h3 = await resume(cluster.url, a)
    assert h3["message_body"]["resumed"] is False and h3["message_body"]["client"] != a.id
    for c in (c1, c2, c3, b):
        await c.close()


async def test_a_clean_close_leaves_at_once(cluster: Cluster) -> None:
    a, b = await pair(cluster)
    room = uid("clean")
    await join(a, room)
    await join(b, room)
    await a.close()  # the default window is 60 s: a notice now is the clean leave
    await b.expect("client-left-room", sender=a.id, target=room, timeout=DEADLINE)
    c, hello = await resume(cluster.url, a)
    assert hello["message_body"]["resumed"] is False
    await c.close()
    await b.close()


async def test_after_the_window_the_members_are_told_and_the_resume_is_refused(
        cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(args=["--resume-window", "1"])
    a, b = await pair(cluster)
    room = uid("window")
    await join(a, room)
    await join(b, room)
    await sync(a)
    a.lose()
    await b.expect("client-left-room", sender=a.id, target=room, timeout=DEADLINE)
    c, hello = await resume(cluster.url, a)
    body = hello["message_body"]
    assert body["resumed"] is False and body["reason"] in ("expired", "unknown-session")
    assert body["client"] != a.id
    await c.close()
    await b.close()


async def test_a_processor_restart_is_never_a_silent_gap(cluster_factory: Callable[..., Cluster]) -> None:
    """Memory only (--log off): a restarted processor is a new epoch, and a resume says
    so. With the log (the default) it is the same epoch: test_embedded_log.py."""
    cluster = cluster_factory(args=["--log", "off"])
    a, b = await pair(cluster)
    room = uid("epoch")
    await join(a, room)
    await join(b, room)
    await sync(a)
    old_epoch = a.epoch
    kill(cluster, "processor")

    async def processor_back() -> bool:
        """A request's answer: room-list once a processor takes frames, an error before."""
        rid = uid("up")
        await b.send({"action": "list-rooms", "id": rid})
        reply = await b.next(lambda m: m.get("id") == rid, timeout=DEADLINE)
        return bool(reply["action"] == "room-list")

    deadline = time.monotonic() + 30
    while not await processor_back():
        assert time.monotonic() < deadline, "the processor did not come back"
        await asyncio.sleep(0.2)  # retry at a client's pace (under the rate limit)
    a.lose()
    c, hello = await resume(cluster.url, a)
    body = hello["message_body"]
    assert body["resumed"] is False and body["reason"] in ("history-lost", "unknown-session")
    assert body["epoch"] != old_epoch
    await c.close()
    await b.close()


# ------------------------------------------------------------------ rolling restart under load

class Resuming:
    """A client that resumes whenever its connection ends otherwise than by its own close."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.c: Tracked | None = None
        self.got: list[tuple[str, int]] = []  # (sender name, n) of chat frames, in order
        self.accepted: list[int] = []  # its own messages the processor took (echoed)
        self.resumes = 0
        self.refused: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self.stopping = False

    async def start(self) -> None:
        self.c = await tracked(self.url)
        self.connected.set()

    async def read(self) -> None:
        while not self.stopping:
            c = self.c
            assert c is not None
            try:
                await c._fill(3600)
            except (ConnectionClosed, TimeoutError):
                if self.stopping:
                    return
                self.connected.clear()
                await self.reconnect(c)
                continue
            for m in c.inbox:
                if m.get("action") == "chat":
                    body = m["message_body"]
                    self.got.append((body["from"], body["n"]))
                    if body["from"] == self.name:
                        self.accepted.append(body["n"])
            c.inbox.clear()

    async def reconnect(self, old: Tracked) -> None:
        delay = 0.05
        while True:
            try:
                new, hello = await resume(self.url, old)
            except (OSError, ConnectionClosed, websockets.InvalidStatus, TimeoutError):
                await asyncio.sleep(delay)  # a client's backoff, not a synchronisation
                delay = min(1.0, delay * 2)
                continue
            if not hello["message_body"].get("resumed"):
                self.refused.append(hello)
            self.resumes += 1
            self.c = new
            self.connected.set()
            return

    async def send(self, room: str, n: int) -> None:
        await self.connected.wait()
        assert self.c is not None
        with contextlib.suppress(ConnectionClosed):
            await self.c.send({"action": "chat", "target": room,
                               "message_body": {"from": self.name, "n": n}})


async def test_a_rolling_restart_under_chat_load_loses_nothing(cluster: Cluster) -> None:
    room = uid("rolling")
    clients = [Resuming(cluster.url, f"c{i}") for i in range(6)]
    for r in clients:
        await r.start()
        assert r.c is not None
        await join(r.c, room)
    for r in clients:
        assert r.c is not None
        await sync(r.c)
    readers = [asyncio.create_task(r.read()) for r in clients]
    stop_load = asyncio.Event()

    async def load(r: Resuming) -> None:
        n = 0
        while not stop_load.is_set():
            await r.send(room, n)
            n += 1
            await asyncio.sleep(0.02)  # the chat's pace

    loaders = [asyncio.create_task(load(r)) for r in clients]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "restart-gateways", "--run-dir", cluster.run_dir,
        "--timeout", "120", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode() + cluster.read_log()
    stop_load.set()
    await asyncio.gather(*loaders)
    try:
        reasons = [h["message_body"].get("reason") for r in clients for h in r.refused]
        assert not reasons, f"resumes refused: {reasons}\n{cluster.read_log()}"
        assert sum(r.resumes for r in clients) >= 1, "no client was on a restarted gateway"

        def complete() -> bool:
            return all([n for s, n in r.got if s == sender.name] == sender.accepted
                       for r in clients for sender in clients)

        await wait_for(complete, what="every accepted message at every client, once, in order")
        assert all(len(r.accepted) > 10 for r in clients)
    finally:
        for r in clients:
            r.stopping = True
            if r.c is not None:
                await r.c.close()
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def test_restart_gateways_without_a_supervisor_says_so(tmp_path: Any) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "restart-gateways", "--run-dir", str(tmp_path),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 2 and b"no running supervisor" in out

