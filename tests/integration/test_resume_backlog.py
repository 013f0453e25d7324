"""A big resume backlog on a real cluster (docs/protocol.md, "Sessions and resume"): the
replay arrives after `client-connected` as ordinary messages, paced by the connection's
send queue, so a client with a message limit resumes whatever it missed; frames that come
meanwhile wait behind the replay, in order, up to `--send-queue` bytes; a resumer that
stops reading is then closed 4000 and removed, as any slow consumer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import websockets

from meshstream_zmq.client import Client as PyClient
from meshstream_zmq.client import Message, Resumed
from tests.conftest import Client, Cluster
from tests.integration.support import DEADLINE, close_code, join, sync, uid
from tests.integration.test_resume import Tracked, tracked

BODY = "y" * 60_000  # one message: 60 KB, under --max-frame (64 KiB) with its envelope
SEND_QUEUE = 1 << 20  # the default --send-queue


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One gateway: once a member has its own copy of a room message, the gateway has
    handed that message to every member there, the resumer included."""
    c = Cluster(tmp_path_factory.mktemp("backlog"), gateways=1)
    yield c
    c.stop()


def is_chat(n: Any) -> Any:
    return lambda m: m.get("action") == "chat" and m["message_body"].get("n") == n


async def say(b: Client, room: str, ns: range | list[Any]) -> None:
    """`b` says each of `ns` in `room` (60 KB each), reading its own copy of each."""
    for n in ns:
        await b.send({"action": "chat", "target": room, "message_body": {"n": n, "x": BODY}})
        await b.next(is_chat(n), timeout=DEADLINE)


async def away_with_missed(cluster: Cluster, room: str, missed: int) -> tuple[Tracked, Client]:
    """`a` and `b` in `room`; `a`'s connection is lost, then `b` says `missed` messages."""
    a = await tracked(cluster.url)
    b = await Client.connect(cluster.url)
    await join(a, room)
    await join(b, room)
    await a.expect("client-joined-room", sender=b.id)
    await sync(a)
    a.lose()
    await say(b, room, range(missed))
    return a, b


async def stalled(cluster: Cluster, a: Tracked) -> tuple[Tracked, dict[str, Any]]:
    """A resume of `a` that reads its `client-connected`, then nothing: a small receive
    window and a one-message queue, so the kernel's buffers fill and stay full."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", cluster.port))
    r = Tracked(await websockets.connect(a.resume_url(cluster.url), sock=sock,
                                         max_size=2**24, max_queue=1))
    r.positions = replace(a.positions, positions=dict(a.positions.positions)) if a.positions else None
    hello = await r.expect("client-connected", timeout=DEADLINE)
    r.id = hello["target"]
    return r, hello


async def chats(c: Tracked, count: int) -> list[Any]:
    """The `n` of the next `count` chat messages `c` reads (Tracked checks their order)."""
    got: list[Any] = []
    while len(got) < count:
        m = await c.next(lambda m: m.get("action") == "chat", timeout=DEADLINE)
        got.append(m["message_body"]["n"])
    return got


async def test_the_python_client_resumes_after_more_than_its_message_limit_missed(
        cluster: Cluster) -> None:
    missed = 300  # 300 x 60 KB = 18 MB, more than the client's 16 MiB message limit
    room = uid("big")
    a, b = await away_with_missed(cluster, room, missed)
    # today's gateway wrote it all as one message: closed 1006 before client-connected
    assert a.positions is not None
    back = await PyClient.connect(a.positions.url(cluster.url), reconnect=False)
    try:
        assert back.id == a.id
        await say(b, room, ["live"])  # while the replay is being written, or after it
        events = []
        async with asyncio.timeout(DEADLINE * 2):
            async for event in back:
                events.append(event)
                if isinstance(event, Message) and event.body.get("n") == "live":
                    break
        assert events[0] == Resumed(a.id)
        assert [e.body["n"] for e in events if isinstance(e, Message) and e.action == "chat"] \
            == [*range(missed), "live"]
        # still in its room, as itself
        own = await back.request("chat", room, {"n": "back"})
        assert own["sender"] == a.id
        assert (await b.next(is_chat("back"), timeout=DEADLINE))["sender"] == a.id
    finally:
        await back.close()
        await b.close()


async def test_a_resumer_that_stops_reading_gets_the_rest_when_it_reads_again(
        cluster: Cluster) -> None:
    missed = 400  # 24 MB: far more than the kernel's buffers hold
    room = uid("late")
    a, b = await away_with_missed(cluster, room, missed)
    r, hello = await stalled(cluster, a)
    assert hello["message_body"]["resumed"] is True and r.id == a.id
    live = 5  # 300 KB behind the replay: within the send queue
    await say(b, room, [f"live{i}" for i in range(live)])
    assert await chats(r, missed + live) == [*range(missed), *(f"live{i}" for i in range(live))]
    await r.send({"action": "chat", "target": room, "message_body": {"n": "r"}})
    assert (await b.next(is_chat("r"), timeout=DEADLINE))["sender"] == a.id
    await r.close()
    await b.close()


async def test_a_resumer_that_reads_nothing_is_closed_as_slow_once_the_send_queue_waits_behind(
        cluster: Cluster) -> None:
    room = uid("stuck")
    a, b = await away_with_missed(cluster, room, 400)
    r, hello = await stalled(cluster, a)
    assert hello["message_body"]["resumed"] is True
    # more than --send-queue bytes come behind a replay it does not read: closed 4000 and,
    # closed for cause, removed at once (the others are told it left)
    await say(b, room, [f"live{i}" for i in range(SEND_QUEUE // len(BODY) + 3)])
    await b.expect("client-left-room", sender=a.id, target=room, timeout=DEADLINE)
    assert await close_code(r) in (4000, 1006)  # 1006: cut when the closing handshake was not read
    await b.close()
