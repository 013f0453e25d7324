"""Events on the processor's PUB socket, as an outside observer (a watcher, a monitor) sees them.

Frames: [b"event.<kind>", Event protobuf]; see proto/meshstream.proto.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import zmq
import zmq.asyncio

from meshstream_zmq import meshstream_pb2 as pb
from tests.conftest import Client, Cluster, clients_on
from tests.integration import support
from tests.integration.support import DEADLINE, gateway_index, join, kill, uid

spread = support.spread  # fixture: clients on distinct gateways

K = pb.Event
TOPICS = {
    K.CLIENT_CONNECTED: b"event.client-connected",
    K.CLIENT_DISCONNECTED: b"event.client-disconnected",
    K.ROOM_CREATED: b"event.room-created",
    K.ROOM_DELETED: b"event.room-deleted",
    K.CLIENT_JOINED_ROOM: b"event.client-joined-room",
    K.CLIENT_LEFT_ROOM: b"event.client-left-room",
    K.CLIENT_AWAY: b"event.client-away",
    K.CLIENT_BACK: b"event.client-back",
}


class Observer:
    """A SUB socket on the processor's outbound endpoint, subscribed to b"event."."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"event.")
        self.sock.connect(endpoint)
        self.seen: list[tuple[bytes, pb.Event]] = []

    async def recv(self, timeout: float) -> tuple[bytes, pb.Event]:
        topic, payload = await asyncio.wait_for(self.sock.recv_multipart(), timeout)
        ev = pb.Event.FromString(payload)
        self.seen.append((topic, ev))
        return topic, ev

    async def wait(self, kind: int, client: str = "", room: str = "",
                   timeout: float = DEADLINE) -> pb.Event:
        """The next event of `kind` about `client`/`room` (others are recorded and skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {K.Kind.Name(kind)} for {client or room}")
            topic, ev = await self.recv(remaining)
            if ev.kind == kind and (not client or ev.client == client) \
                    and (not room or ev.room == room):
                assert topic == TOPICS[kind], (topic, ev)
                return ev

    async def handshake(self, url: str) -> None:
        """Beat the slow joiner: connect throwaway clients until their event reaches us."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            probe = await Client.connect(url)
            try:
                await self.wait(K.CLIENT_CONNECTED, client=probe.id, timeout=0.5)
                return
            except (AssertionError, TimeoutError):
                continue
            finally:
                await probe.close()
        raise AssertionError("the event subscription never became live")

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
async def observer(cluster: Cluster) -> AsyncIterator[Observer]:
    obs = Observer(f"ipc://{cluster.run_dir}/outbound")
    await obs.handshake(cluster.url)
    yield obs
    obs.close()


async def test_lifecycle_events(cluster: Cluster, observer: Observer, spread) -> None:
    (a,), (b,) = await spread(2, 1)
    ev_a = await observer.wait(K.CLIENT_CONNECTED, client=a.id)
    ev_b = await observer.wait(K.CLIENT_CONNECTED, client=b.id)
    assert ev_a.room == "" and ev_b.room == ""

    room = uid("ev")
    await join(a, room)
    created = await observer.wait(K.ROOM_CREATED, room=room)
    assert created.client == ""
    joined_a = await observer.wait(K.CLIENT_JOINED_ROOM, client=a.id, room=room)
    await join(b, room)
    joined_b = await observer.wait(K.CLIENT_JOINED_ROOM, client=b.id, room=room)

    await b.request({"action": "leave-room", "target": room}, "client-left-room")
    left_b = await observer.wait(K.CLIENT_LEFT_ROOM, client=b.id, room=room)

    await a.close()  # the last member disconnects: left, then the room goes, then a goes
    left_a = await observer.wait(K.CLIENT_LEFT_ROOM, client=a.id, room=room)
    deleted = await observer.wait(K.ROOM_DELETED, room=room)
    assert deleted.client == ""
    gone_a = await observer.wait(K.CLIENT_DISCONNECTED, client=a.id)
    assert gone_a.room == ""

    ordered = [ev_a, ev_b, created, joined_a, joined_b, left_b, left_a, deleted, gone_a]
    seqs = [e.seq for e in ordered]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    # the sequence is processor-wide and gapless: every event in between was seen too
    all_seqs = [e.seq for _, e in observer.seen]
    assert all_seqs == sorted(all_seqs)
    assert all_seqs == list(range(all_seqs[0], all_seqs[0] + len(all_seqs))), all_seqs

    # the lobby itself is never created or deleted, and no join/leave events for it
    for _, e in observer.seen:
        assert e.room != "mesh-global", e


async def test_gateway_kill_emits_away_then_left_and_disconnected(
        cluster_factory: Callable[..., Cluster]) -> None:
    """A SIGKILLed gateway's clients are away, then, when the resume window (1 s here)
    passes, leave with every event (reliability promise)."""
    cluster = cluster_factory(args=["--resume-window", "1"])
    observer = Observer(f"ipc://{cluster.run_dir}/outbound")
    await observer.handshake(cluster.url)
    (a,), (b,) = await clients_on(cluster.url, 2, 1)
    try:
        room = uid("evk")
        await join(a, room)
        await join(b, room)
        await observer.wait(K.CLIENT_JOINED_ROOM, client=b.id, room=room)
        kill(cluster, f"gateway {gateway_index(a)}")
        await observer.wait(K.CLIENT_AWAY, client=a.id, room=room)
        await observer.wait(K.CLIENT_LEFT_ROOM, client=a.id, room=room)
        await observer.wait(K.CLIENT_DISCONNECTED, client=a.id)
        await b.expect("client-left-room", sender=a.id)
        await b.request({"action": "leave-room", "target": room}, "client-left-room")
        await observer.wait(K.CLIENT_LEFT_ROOM, client=b.id, room=room)
        await observer.wait(K.ROOM_DELETED, room=room)
    finally:
        await b.close()
        observer.close()
