"""The processor's log on a three-node NATS cluster, three copies of the stream (issue 17
item 7, "one NATS node killed (nothing happens)"): each node in a host (network namespace)
of its own (tests/integration/nats_cluster.py, the layout of docs/deploy.md). A node
SIGKILLed under a stream of appends, the one the writer is connected to or the stream's
leader, changes nothing: no entry lost or doubled, the writer never fails, a reader on
another node reads everything back, a takeover still fences the old writer. Then a
processor and a gateway on a host of their own, on the cluster, under chat: a node killed,
0 lost, 0 duplicated, the same epoch, the same processor.

Needs root (`ip netns`); skipped with the reason otherwise. Every namespace, link and
process made here is removed afterwards, also when the test fails.
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshstream_zmq.journal import RETRY_FOR, Fenced, LogConfig, LogThread
from tests.integration.nats_cluster import NODES, NatsCluster
from tests.integration.netns import Deployment, Net, deployed, healthz, network, until
from tests.integration.support import DEADLINE, join, sync, uid
from tests.integration.test_resume import Tracked, tracked

APP = "app"  # the processor's and the gateway's host
WS_PORT = 8765  # in the app host's own namespace
STREAM = "meshstream-0"
TIMEOUT = 2.0  # LogConfig's default: an append is given up after TIMEOUT × RETRY_FOR


@pytest.fixture
def net() -> Iterator[Net]:
    with network((*NODES, APP)) as made:
        yield made


@pytest.fixture
def deployment(net: Net, tmp_path: Path) -> Iterator[Deployment]:
    with deployed(net, tmp_path) as d:
        yield d


@pytest.fixture
def nats(deployment: Deployment, tmp_path: Path) -> NatsCluster:
    return NatsCluster(deployment, tmp_path / "nats")


def stored_all(log: LogThread, count: int) -> None:
    """Until the log stored `count` entries, woken by its descriptor as the processor's
    poller is; any failure raises (the writer must not fail)."""
    deadline = time.monotonic() + TIMEOUT * RETRY_FOR + DEADLINE
    while log.stored_through() < count:
        assert time.monotonic() < deadline, f"stored through {log.stored_through()} of {count}"
        select.select([log], [], [], 1)


@pytest.mark.parametrize("victim", ["connected", "leader"])
def test_a_node_killed_mid_stream_loses_repeats_and_fails_nothing(
        nats: NatsCluster, victim: str) -> None:
    writer = LogThread(LogConfig(nats.urls, replicas=3, timeout=TIMEOUT), "primary")
    reader = standby = None
    try:
        assert writer.open() == 0
        entries = [b"entry %d " % n + b"x" * (n % 300) for n in range(1500)]
        for n, entry in enumerate(entries):
            assert writer.append(entry) == n + 1
            if n % 50 == 49:  # a steady stream, each burst pipelined, some in flight always
                select.select([writer], [], [], 0.005)
                writer.stored_through()
            if n == 500:  # mid-stream
                killed = (nats.leader(STREAM) if victim == "leader"
                          else nats.serving(nats.net.addr("root")))
                nats.kill(killed)
        stored_all(writer, len(entries))  # nothing failed

        # a reader on another node: every entry, once, in order
        nats.ready([STREAM])  # the two left have a meta leader (a reader makes a consumer)
        other = next(node for node in NODES if node != killed)
        reader = LogThread(LogConfig([nats.url(other)], timeout=TIMEOUT), "reader")
        assert reader.open() == len(entries)
        assert [data for _, data in reader.read()] == entries

        # fencing holds: a second writer takes over, the first is fenced at its next append
        standby = LogThread(LogConfig([nats.url(other)], replicas=3, timeout=TIMEOUT), "standby")
        assert standby.open() == len(entries)
        assert standby.take_over(len(entries), b"takeover") == len(entries) + 1
        writer.append(b"late")
        with pytest.raises(Fenced):
            stored_all(writer, len(entries) + 1)
        assert [data for _, data in reader.read(len(entries))] == [entries[-1], b"takeover"]
    finally:
        for log in (writer, reader, standby):
            if log is not None:
                log.close()


async def test_chat_through_a_nats_node_killed_loses_and_repeats_nothing(
        nats: NatsCluster, deployment: Deployment, tmp_path: Path) -> None:
    """A processor on the cluster (`--log nats://a,b,c --log-replicas 3`) and a gateway,
    two clients chatting through it from the root namespace, all with default settings;
    the stream's leader is SIGKILLed under the chat (the worst case: appends wait seconds
    for another leader, and the processor's outputs, beats included, with them)."""
    run = str(tmp_path / "app-run")
    common = ["--run-dir", run, "--metrics-port", "0"]
    processor = deployment.start(APP, "processor", [
        "processor", "--log", ",".join(nats.urls), "--log-replicas", "3", *common])
    deployment.start(APP, "gateway", ["gateway", "--index", "1", "--port", str(WS_PORT), *common])
    addr = deployment.net.addr(APP)
    await until(lambda: healthz(addr, WS_PORT) == 200, "the gateway healthy", deployment)
    url = f"ws://{addr}:{WS_PORT}/wsmesh"

    room = uid("nats")
    sender, receiver = await tracked(url), await tracked(url)
    clients = (sender, receiver)
    try:
        for c in clients:
            await join(c, room)
        for c in clients:
            await sync(c)
        epoch = sender.epoch
        count = 300
        for n in range(count):
            await sender.send({"action": "chat", "target": room, "message_body": {"n": n},
                               "id": f"s{n}"})
            if n == count // 3:
                nats.kill(nats.leader(STREAM))
            await asyncio.sleep(0.01)  # a steady chat, not a burst (the rate limit is 200/s)

        async def all_of(c: Tracked) -> list[int]:
            got: list[int] = []
            while len(got) < count:
                m = await c.next(lambda m: m.get("action") in ("chat", "error"),
                                 timeout=DEADLINE * 2)
                assert m["action"] == "chat", m  # no processor-restarted, messages-lost, …
                if c is sender:
                    assert m.get("id") == f"s{m['message_body']['n']}"  # each request answered
                got.append(m["message_body"]["n"])
            return got

        for c in clients:  # Tracked fails on a repeat or disorder in the room's stream
            assert await all_of(c) == list(range(count)), c.id
        assert {c.epoch for c in clients} == {epoch}
        assert processor.proc.poll() is None, processor.text()[-3000:]  # never stopped
        assert "the log failed" not in processor.text()
    finally:
        for c in clients:
            await c.close()
