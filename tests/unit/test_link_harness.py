"""Both ends of the gateway⇄processor link, in memory, through the real wire codec.

Two or three `Gateway` cores (meshstream_zmq/gateway.py) and one real `Processor`
(services/processor.py: its `on_gateway`, `on_subscription`, `beat` and `flush`, so
`Mesh` and `GatewayOutput` too) exchange the bytes they would put on ZeroMQ: encoded
`GatewayBatch`es one way, `[topic, GatewayOut | ProcessorBeat]` the other. Only the
sockets are replaced: the processor's XPUB by `Wire` (the same `send_multipart`), each
gateway's PUSH by its outbox's `push_batch`. Hypothesis plays the network in between.

The network is ZeroMQ's, no more and no less:

- PUSH → PULL, one pipe per gateway: batches arrive in order, at most once; the
  processor takes them from the gateways' pipes in any interleaving. A push is refused
  while the gateway has no connection (`IMMEDIATE`: `EAGAIN`, `push_batch` False). A
  processor restart loses what was in flight to it (the oldest first); the rest reaches
  the new one.
- XPUB → SUB, one pipe per gateway carrying its own topic and the beats, in order, at
  most once. A message is sent to a gateway only once its subscription has reached the
  processor (the slow joiner). A pipe holds `HWM` messages: a gateway that stops reading
  loses what comes past that, as does any pipe that overflows (`drop`: any message in
  flight may be one of those lost). A SUB that reconnects loses what was in flight and
  subscribes again; so do all of them when the processor restarts.
- Delays are messages left in flight while other things happen (time passing included).
- Neither socket pair duplicates or reorders a message, so the harness never does.
  The repeats the link must survive are its own: hello every heartbeat until welcomed
  (a second hello gets a second welcome), resume requests asked again after a hello or
  a gap (a second answer must be dropped), beats saying the same thing twice, a gateway
  replaced in its slot whose last batches arrive after its successor's hello.

After every step: `Gateway.check()`, `Mesh.check()`, `GatewayOutput.check()`; no client
is ever written a room message of a room it was not a member of when the processor sent
it (a stale mirror must not leak a room to a client that left it); no request `id` is
answered twice. Once the network is quiet (everything delivered, every gateway up and
acknowledged, every GatewayOut applied and said so: the `settle` rule and the teardown
get there by letting heartbeats run with no more faults, within `SETTLE` seconds), each
gateway's mirror equals the processor's membership of the clients it has on that
gateway, and every request is answered.

An answer to a frame with an `id` is any frame written back carrying that `id`: its
reply or own copy, or an error, from the processor or from the gateway
(`processor-unavailable` when refused, `processor-restarted` when the processor may have
lost it). Exactly one, with these exceptions. `messages-lost` carries no id and answers
nothing, but a frame whose answer may have been among the lost messages (`messages-lost`
reached its client after it was sent) is answered at most once; so is a frame whose
connection ended before its answer could be written, and one a processor confirmed
(acknowledged) and then restarted before its answer was read: what was in flight from
it died with it, unreported (a limitation, not a promise). And `processor-restarted` may
follow an answer: the processor forgot the gateway (it restarted, or dropped the gateway
as silent or stalled) between answering the frame and acknowledging it, so the gateway
cannot know; the client, having both, knows the frame was processed.
"""

from __future__ import annotations

import json
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshstream_zmq import LOBBY
from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config
from meshstream_zmq.errors import ErrorCode
from meshstream_zmq.gateway import Connection, Gateway, Link, Resume
from services.processor import Processor
from tests.unit.test_gateway_core import Outbox

HWM = 8  # messages a gateway's SUB pipe holds in the model (beats included)
ROOMS = ("r1", "r2")
HEARTBEAT = 0.5
SETTLE = 30.0  # seconds of heartbeats the link may take to recover once faults stop
LOST = ErrorCode.MESSAGES_LOST.value
RESTARTED = ErrorCode.PROCESSOR_RESTARTED.value


@dataclass(eq=False)
class Sent:
    """A frame a client sent with an id, and what came back for it."""

    request: int
    client: str
    link: str
    answers: list[dict[str, Any]] = field(default_factory=list)
    lost: bool = False  # messages-lost reached its client after it was sent
    crashed: bool = False  # confirmed by a processor that restarted before it was answered

    def codes(self) -> list[str | None]:
        """Each answer's error code (None: not an error)."""
        return [a["message_body"]["code"] if a["action"] == "error" else None for a in self.answers]


class GatewaySide(Outbox):
    """A gateway's I/O: its PUSH (batches put in flight, or refused) and its clients'
    sockets (every frame written is read back by the network)."""

    def __init__(self, net: Network, node: Node) -> None:
        super().__init__()
        self.net = net
        self.node = node

    def push_batch(self, batch: bytes) -> bool:
        if self.node.refusing:
            return False
        self.node.outbound.append(batch)
        return True

    def write(self, link: Any, payload: bytes) -> int:
        self.net.written(link, payload)
        return super().write(link, payload)

    def close(self, link: Any, code: int, reason: str) -> None:
        self.node.closes.append(link)  # its closing handshake completes later (finish_close)


@dataclass(eq=False)
class Node:
    """One gateway process: its core and its two pipes."""

    gw: Gateway = field(init=False)
    out: GatewaySide = field(init=False)
    outbound: deque[bytes] = field(default_factory=deque)  # PUSH: batches in flight
    inbox: deque[tuple[bytes, bytes]] = field(default_factory=deque)  # SUB: in flight to it
    subscribed: bool = False  # its subscription has reached the processor's XPUB
    reading: bool = True  # it reads its SUB (else what comes waits, up to HWM)
    held: bool = False  # its batches wait in its PUSH pipe (the processor reads others)
    refusing: bool = False  # its PUSH has no connection: pushes fail with EAGAIN
    lossy: int = 0  # the next GatewayOuts to it its pipe loses (overflowing; a beat fits)
    closes: list[str] = field(default_factory=list)  # links closed by the core, handshake pending

    @property
    def topic(self) -> bytes:
        return self.gw.id.encode() + b"."


class Wire:
    """The processor's XPUB: each message goes to the pipe of every gateway whose
    subscription matches its topic and has reached the processor."""

    def __init__(self, net: Network) -> None:
        self.net = net

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        topic, payload = frames
        for node in self.net.nodes:
            if node.subscribed and topic in (b"processor", node.topic):
                if node.lossy and topic != b"processor":
                    node.lossy -= 1
                elif len(node.inbox) < HWM:  # past HWM, XPUB without NODROP loses it
                    node.inbox.append((topic, payload))


class Network:
    """N gateways and a processor over a ZeroMQ that loses and delays (the module docstring):
    every operation here is one thing a client, a socket or the clock does."""

    def __init__(self, gateways: int = 2) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.proc = Processor(Config(run_dir=str(Path(self.tmp.name) / "run"), metrics_port=0))
        self.wire = Wire(self)
        self.proc.pub = self.wire  # type: ignore[assignment]
        self.proc.failed = self.failed  # type: ignore[method-assign]
        self.instrument()
        self.now = 0.0
        self.nodes: list[Node] = []
        self.dead: list[Node] = []  # replaced gateway processes: their last batches may arrive
        self.generation = 0
        self.links: dict[str, tuple[Node, Connection]] = {}
        self.ended: set[str] = set()  # links that are gone
        self.ids = 0
        self.sent: dict[int, Sent] = {}
        self.secrets: dict[str, str] = {}  # client -> its latest resume secret
        self.lost: dict[str, str] = {}  # clients whose connection was lost -> their secret
        self.resuming: dict[str, tuple[str, str]] = {}  # link of a resume -> (client, secret)
        self.allowed: dict[bytes, frozenset[str]] = {}  # room message -> the members when sent
        for index in range(1, gateways + 1):
            self.add_gateway(index)
        self.settle()

    def instrument(self) -> None:
        """The processor's outbox on the wire, and each room message's members noted."""
        out = self.proc.out
        out.pub = self.wire  # type: ignore[assignment]
        broadcast = out.broadcast

        def noted(gateways: Any, room: str, frame: bytes, exclude: Any = ()) -> None:
            self.allowed[frame] = frozenset(self.proc.mesh.rooms[room].members)
            broadcast(gateways, room, frame, exclude)

        out.broadcast = noted  # type: ignore[method-assign]

    def failed(self, what: str, now: float, **fields: object) -> None:
        raise  # an exception in the core is a bug here: let it through

    def close(self) -> None:
        self.proc.close()
        self.tmp.cleanup()

    # ------------------------------------------------------------ what clients receive

    def written(self, link: str, payload: bytes) -> None:
        _, conn = self.links[link]
        client = conn.id
        for line in payload.split(b"\n"):
            members = self.allowed.get(line)
            assert members is None or client in members, f"{client} got a message of a room it was not in"
            frame = json.loads(line)
            action = frame["action"]
            if action == "client-connected":
                self.secrets[frame["target"]] = frame["message_body"]["session"]
            elif action == "error" and frame["message_body"]["code"] == LOST:
                for sent in self.sent.values():
                    if sent.client == client:
                        sent.lost = True
            if "id" in frame:
                sent = self.sent[frame["id"]]
                sent.answers.append(frame)
                codes = sent.codes()
                assert len(codes) == 1 or codes[1:] == [RESTARTED] != codes[:1], (
                    f"request {frame['id']} answered twice: {sent.answers}")

    def frames(self, link: str) -> list[dict[str, Any]]:
        """What the client of `link` has received."""
        return self.links[link][0].out.frames_for(link)

    # ------------------------------------------------------------ clients

    def live(self) -> list[str]:
        return sorted(link for link, (node, conn) in self.links.items()
                      if node in self.nodes and node.gw.conns.get(conn.id) is conn and not conn.closing)

    def up(self) -> list[Node]:
        return [n for n in self.nodes if n.gw.up]

    def connect(self, node: Node, resume: Resume | None = None) -> str:
        link = f"L{len(self.links) + 1}"
        conn = node.gw.connect(link, self.now, resume=resume)
        assert conn is not None
        self.links[link] = (node, conn)
        node.gw.flush()
        return link

    def resume(self, node: Node, client: str) -> str:
        """A client whose connection was lost comes back (on any gateway)."""
        secret = self.lost.pop(client)
        link = self.connect(node, Resume(secret))
        self.resuming[link] = (client, secret)
        return link

    def send(self, link: str, action: str, room: str) -> int:
        node, conn = self.links[link]
        self.ids += 1
        self.sent[self.ids] = Sent(self.ids, conn.id, link)
        node.gw.client_frame(conn, json.dumps({"action": action, "target": room, "id": self.ids}),
                             self.now)
        node.gw.flush()
        return self.ids

    def disconnect(self, link: str, clean: bool) -> None:
        """The client closes (clean) or its connection is lost (away: it may resume)."""
        node, conn = self.links[link]
        self.ended.add(link)
        if not clean:
            self.lost[conn.id] = self.secrets[conn.id]
        node.gw.disconnect(conn, clean)
        node.gw.flush()

    def finish_close(self, node: Node) -> None:
        """The closing handshake of a connection the core closed completes."""
        link = node.closes.pop(0)
        _, conn = self.links[link]
        self.ended.add(link)
        if conn.held is not None:  # a resume unanswered in time: the client tries again later
            client, secret = self.resuming[link]
            self.lost[client] = secret
        elif conn.away_on_close and node.gw.conns.get(conn.id) is conn and conn.id in self.secrets:
            self.lost[conn.id] = self.secrets[conn.id]  # (closed before its greeting: it never knew)
        node.gw.disconnect(conn, clean=False)
        node.gw.flush()

    # ------------------------------------------------------------ the network

    def push(self, node: Node, n: int = 1) -> None:
        """The processor reads `n` batches a gateway sent, then flushes."""
        for _ in range(n):
            self.proc.on_gateway(node.outbound.popleft(), self.now)
        self.proc.flush(self.now)

    def subscribe(self, node: Node) -> None:
        """A gateway's subscription reaches the processor's XPUB."""
        node.subscribed = True
        self.proc.on_subscription(b"\x01" + node.topic)
        self.proc.flush(self.now)

    def receive(self, node: Node, n: int = 1) -> None:
        """A gateway reads `n` of the messages in flight to it."""
        gw = node.gw
        for _ in range(n):
            topic, payload = node.inbox.popleft()
            if topic == b"processor":
                gw.processor_beat(pb.ProcessorBeat.FromString(payload), self.now)
            else:
                gw.processor_out(pb.GatewayOut.FromString(payload))
            gw.flush()  # the end of the gateway's tick

    def resubscribe(self, node: Node, keep: int = 0) -> None:
        """A gateway's SUB reconnects: what was in flight past its first `keep` messages is
        lost, the processor sees it unsubscribe, and it subscribes again (`subscribe`)."""
        node.inbox = deque(list(node.inbox)[:keep])
        if node.subscribed:
            node.subscribed = False
            self.proc.on_subscription(b"\x00" + node.topic)

    def tick(self, dt: float = HEARTBEAT) -> None:
        """Time passes (longer than a heartbeat: a process paused); everyone heartbeats."""
        self.now += dt
        self.proc.beat(self.now)
        self.proc.flush(self.now)
        for node in self.nodes:
            gw = node.gw
            gw.heartbeat(self.now)
            gw.keepalive(self.now)
            for link in node.out.pings:  # the clients answer every ping
                gw.pong(self.links[link][1])
            node.out.pings.clear()
            gw.flush()

    def restart_processor(self, draw: Callable[[int], int] = lambda n: 0) -> None:
        """A new processor epoch with empty state: of what was in flight to the old one the
        first `draw(n)` batches are lost (the rest reaches the new one), of what it had sent
        each gateway the first `draw(n)` messages are still read; every SUB subscribes again."""
        for sent in self.sent.values():
            node, _ = self.links[sent.link]
            if not sent.answers and (
                    str(sent.request).encode() not in {u.request_id for u in node.gw.unacked}):
                sent.crashed = True
        for node in [*self.dead, *self.nodes]:
            for _ in range(draw(len(node.outbound))):
                node.outbound.popleft()
        for node in self.nodes:
            self.resubscribe(node, draw(len(node.inbox)))
        self.proc.fresh_state()
        self.instrument()

    def add_gateway(self, index: int) -> Node:
        self.generation += 1
        node = Node()
        node.out = GatewaySide(self, node)
        node.gw = Gateway(f"gw{index}-{self.generation}", index, node.out, send_queue=1 << 20)
        node.gw.heartbeat(self.now)  # its hello
        node.gw.flush()
        self.nodes.append(node)
        return node

    def restart_gateway(self, i: int) -> None:
        """A gateway process dies and a new one takes its slot: its clients' connections are
        lost (they may resume), its last batches may still reach the processor."""
        old = self.nodes[i]
        for link, (node, conn) in self.links.items():
            if node is old and link not in self.ended:
                self.ended.add(link)
                if old.gw.conns.get(conn.id) is conn and conn.id in self.secrets:
                    self.lost[conn.id] = self.secrets[conn.id]
        self.resubscribe(old)
        self.dead.append(old)
        new = self.add_gateway(old.gw.index)
        self.nodes.remove(new)
        self.nodes[i] = new

    # ------------------------------------------------------------ quiet

    def flow(self) -> None:
        """What the network does by itself: every pipe not held or unread is delivered,
        every closing handshake completes (a subscription waits for `subscribe`)."""
        busy = True
        while busy:
            busy = False
            for node in [*self.dead, *self.nodes]:
                if node.outbound and not node.held:
                    self.push(node, len(node.outbound))
                    busy = True
            for node in self.nodes:
                if node.inbox and node.reading:
                    self.receive(node, len(node.inbox))
                    busy = True
                while node.closes:
                    self.finish_close(node)
                    busy = True

    def unsettled(self) -> str:
        """Why the network is not quiet yet ("" once it is)."""
        if any(n.outbound for n in self.dead):
            return "batches of a replaced gateway in flight"
        for node in self.nodes:
            gw = node.gw
            if node.outbound or node.inbox or node.closes or not node.subscribed:
                return f"{gw.id}: in flight"
            if not node.reading or node.refusing or node.held or node.lossy:
                return f"{gw.id}: a fault on"
            if gw.link is not Link.UP or gw.unacked or gw.waiting or gw.retained:
                return (f"{gw.id}: {gw.link}, unacked {list(gw.unacked)}, "
                        f"waiting {list(gw.waiting)}, retained {len(gw.retained)}")
        if set(self.proc.mesh.gateways) != {n.gw.id for n in self.nodes}:
            return f"the processor knows {sorted(self.proc.mesh.gateways)}"
        for gateway, stream in self.proc.out.streams.items():
            if stream.unapplied or stream.ops:
                return f"{gateway}: GatewayOuts not applied {list(stream.unapplied)}"
        return ""

    def settle(self) -> None:
        """No more faults: everyone reads and is connected; heartbeats run until quiet."""
        for node in [*self.dead, *self.nodes]:
            node.reading, node.held, node.refusing, node.lossy = True, False, False, 0
        waited = 0.0
        while True:
            for node in self.nodes:
                if not node.subscribed:
                    self.subscribe(node)
            self.flow()
            if not self.unsettled():
                return
            assert waited < SETTLE, f"the link did not recover: {self.unsettled()}"
            waited += HEARTBEAT
            self.tick()

    # ------------------------------------------------------------ what must hold

    def check(self) -> None:
        for node in self.nodes:
            node.gw.check()
        self.proc.mesh.check()
        self.proc.out.check()

    def agree(self) -> None:
        """The quiet network's promises: mirrors match the processor, every request answered."""
        assert not self.unsettled()
        mesh = self.proc.mesh
        for node in self.nodes:
            gw = node.gw
            mirror = {c.id: c.rooms for c in gw.conns.values()}
            view = {c: mesh.clients[c].rooms - {LOBBY} for c in mesh.gateways[gw.id].clients}
            assert mirror == view, (gw.id, mirror, view)
        for request, sent in self.sent.items():
            if not sent.answers and not sent.lost and not sent.crashed:
                assert sent.link in self.ended, f"request {request} of {sent.client} never answered"


# ------------------------------------------------------------------ the state machine


class LinkMachine(RuleBasedStateMachine):
    """Clients, sockets and the clock, in any order hypothesis likes (the module docstring).
    After each step the network does what it does by itself (`Network.flow`): the faults
    are states a rule puts a pipe in (held, unread, refusing, lossy) or one-off losses."""

    def __init__(self) -> None:
        super().__init__()
        self.net = net = Network()
        for node in net.nodes:  # two clients each, in rooms, to start with
            for room in ROOMS:
                net.send(net.connect(node), "join-room", room)
        net.settle()

    def nodes(self, has: Callable[[Node], Any] = lambda n: True) -> list[Node]:
        return [n for n in self.net.nodes if has(n)]

    # clients

    @precondition(lambda self: self.net.up())
    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        self.net.connect(data.draw(st.sampled_from(self.net.up())))
        self.net.flow()

    @precondition(lambda self: self.net.up() and self.net.lost)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        self.net.resume(data.draw(st.sampled_from(self.net.up())),
                        data.draw(st.sampled_from(list(self.net.lost))))
        self.net.flow()

    @precondition(lambda self: self.net.live())
    @rule(data=st.data(), action=st.sampled_from(["join-room", "leave-room", "say", "say"]),
          room=st.sampled_from(ROOMS))
    def send(self, data: st.DataObject, action: str, room: str) -> None:
        self.net.send(data.draw(st.sampled_from(self.net.live())), action, room)
        self.net.flow()

    @precondition(lambda self: self.net.live())
    @rule(data=st.data(), clean=st.booleans())
    def disconnect(self, data: st.DataObject, clean: bool) -> None:
        self.net.disconnect(data.draw(st.sampled_from(self.net.live())), clean)
        self.net.flow()

    # the pipes

    @rule(data=st.data())
    def hold(self, data: st.DataObject) -> None:
        """A gateway's batches wait in its PUSH pipe (the processor reads the others first),
        or flow again."""
        node = data.draw(st.sampled_from(self.net.nodes))
        node.held = not node.held
        self.net.flow()

    @precondition(lambda self: any(n.outbound for n in [*self.net.dead, *self.net.nodes]))
    @rule(data=st.data())
    def push(self, data: st.DataObject) -> None:
        """The processor reads some of what a held gateway sent."""
        node = data.draw(st.sampled_from([n for n in [*self.net.dead, *self.net.nodes] if n.outbound]))
        self.net.push(node, data.draw(st.integers(1, len(node.outbound))))
        self.net.flow()

    @rule(data=st.data())
    def reading(self, data: st.DataObject) -> None:
        """A gateway stops reading its SUB (overloaded, a congested link), or starts again."""
        node = data.draw(st.sampled_from(self.net.nodes))
        node.reading = not node.reading
        self.net.flow()

    @precondition(lambda self: any(n.inbox for n in self.net.nodes))
    @rule(data=st.data())
    def receive(self, data: st.DataObject) -> None:
        """A gateway that stopped reading reads a few messages."""
        node = data.draw(st.sampled_from(self.nodes(lambda n: n.inbox)))
        self.net.receive(node, data.draw(st.integers(1, len(node.inbox))))
        self.net.flow()

    @precondition(lambda self: self.net.live())
    @rule(data=st.data(), room=st.sampled_from(ROOMS), n=st.integers(1, 3), more=st.integers(0, 3))
    def burst(self, data: st.DataObject, room: str, n: int, more: int) -> None:
        """A gateway's pipe overflows: the next `n` GatewayOuts to it are lost (a beat still
        fits) while its clients join, leave and chat in `room`; the chat goes on for `more`
        messages (from anyone)."""
        node = data.draw(st.sampled_from(self.net.nodes))
        node.lossy = n
        for i in range(n + more):
            own = [link for link in self.net.live() if self.net.links[link][0] is node]
            link = data.draw(st.sampled_from(own if own and i < n else self.net.live()))
            action = data.draw(st.sampled_from(["join-room", "leave-room", "say"])) if i < n else "say"
            self.net.send(link, action, room)
            self.net.flow()
            if not self.net.live():
                return

    @precondition(lambda self: any(n.inbox for n in self.net.nodes))
    @rule(data=st.data(), beat=st.booleans())
    def drop(self, data: st.DataObject, beat: bool) -> None:
        """One message waiting for a gateway is lost: a GatewayOut (a beat, if `beat` or none)."""
        node = data.draw(st.sampled_from(self.nodes(lambda n: n.inbox)))
        outs = [i for i, (topic, _) in enumerate(node.inbox) if topic != b"processor"]
        del node.inbox[data.draw(st.sampled_from(outs if outs and not beat else range(len(node.inbox))))]
        self.net.flow()

    @rule(data=st.data())
    def refusing(self, data: st.DataObject) -> None:
        """A gateway's PUSH loses its connection to the processor, or gets it back."""
        node = data.draw(st.sampled_from(self.net.nodes))
        node.refusing = not node.refusing

    @rule(data=st.data())
    def resubscribe(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self.net.nodes))
        self.net.resubscribe(node, data.draw(st.integers(0, len(node.inbox))))
        self.net.flow()

    @precondition(lambda self: any(not n.subscribed for n in self.net.nodes))
    @rule(data=st.data())
    def subscribe(self, data: st.DataObject) -> None:
        self.net.subscribe(data.draw(st.sampled_from(self.nodes(lambda n: not n.subscribed))))
        self.net.flow()

    # time and processes

    @rule(dt=st.sampled_from([HEARTBEAT, HEARTBEAT, 1.0, 3.5]))
    def tick(self, dt: float) -> None:
        self.net.tick(dt)
        self.net.flow()

    @rule(data=st.data())
    def restart_processor(self, data: st.DataObject) -> None:
        self.net.restart_processor(lambda n: data.draw(st.integers(0, n)))
        self.net.flow()

    @rule(data=st.data())
    def restart_gateway(self, data: st.DataObject) -> None:
        self.net.restart_gateway(data.draw(st.integers(0, len(self.net.nodes) - 1)))
        self.net.flow()

    @precondition(lambda self: len(self.net.nodes) < 3)
    @rule()
    def add_gateway(self) -> None:
        self.net.add_gateway(len(self.net.nodes) + 1)
        self.net.flow()

    @rule()
    def settle(self) -> None:
        self.net.settle()
        self.net.agree()

    @invariant()
    def consistent(self) -> None:
        self.net.check()
        if not self.net.unsettled():
            self.net.agree()

    def teardown(self) -> None:
        try:
            self.net.settle()
            self.net.agree()
        finally:
            self.net.close()


TestLink = LinkMachine.TestCase
TestLink.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


# ------------------------------------------------------------------ cases it found


@pytest.fixture
def net() -> Iterator[Network]:
    network = Network()
    yield network
    network.close()


def codes(net: Network, link: str) -> list[str]:
    return [f["message_body"]["code"] for f in net.frames(link) if f["action"] == "error"]


def test_a_gap_resyncs_the_mirror_and_leaks_nothing_meanwhile(net: Network) -> None:
    """The `left` of a client is lost with the GatewayOut carrying it; the next one shows
    the gap: the clients are told, the mirror is resynced, and the client that left never
    gets the room's next message (nor any later)."""
    node = net.nodes[0]
    a, b = net.connect(node), net.connect(node)
    net.send(a, "join-room", "r1")
    net.send(b, "join-room", "r1")
    net.settle()
    net.send(a, "leave-room", "r1")
    net.push(node)
    node.inbox.clear()  # the `left` (and a's own copy of its leave) lost
    net.send(b, "say", "r1")
    net.push(node)
    net.receive(node)  # the gap: b's message must not reach a
    net.send(b, "say", "r1")
    net.settle()
    net.agree()
    assert LOST in codes(net, a) and LOST in codes(net, b)
    said = [f for f in net.frames(a) if f["action"] == "say"]
    assert said == []


def test_a_reply_lost_with_the_last_gatewayout_is_reported(net: Network) -> None:
    """No GatewayOut follows the lost one (the SUB was reconnecting): no gap shows it; the
    processor drops the gateway as stalled, it says hello again, and its clients are told
    messages-lost (the join's answer is gone, and the hello undid the join)."""
    node = net.nodes[0]
    link = net.connect(node)
    net.settle()
    net.resubscribe(node)
    request = net.send(link, "join-room", "r1")
    net.push(node)  # answered while the SUB is not subscribed: lost
    net.settle()
    net.agree()
    assert net.sent[request].answers == [] and net.sent[request].lost


def test_frames_in_flight_when_the_processor_drops_a_silent_gateway_are_answered(net: Network) -> None:
    """The processor paused past the peer timeout and dropped the gateway, which said
    hello again: the frame it ignored meanwhile is answered processor-restarted."""
    link = net.connect(net.nodes[0])
    net.settle()
    request = net.send(link, "join-room", "r1")
    net.tick(3.5)
    net.settle()
    net.agree()
    assert net.sent[request].codes() == [RESTARTED]


def test_a_refused_resume_is_asked_again(net: Network) -> None:
    link = net.connect(net.nodes[0])
    net.settle()
    client = net.links[link][1].id
    net.disconnect(link, clean=False)
    net.settle()
    net.nodes[1].refusing = True
    back = net.resume(net.nodes[1], client)
    net.settle()
    net.agree()
    assert net.links[back][1].id == client
    assert net.frames(back)[0]["message_body"]["resumed"] is True


def test_a_refused_resync_is_asked_again(net: Network) -> None:
    node = net.nodes[0]
    a, b = net.connect(node), net.connect(node)
    net.send(a, "join-room", "r1")
    net.send(b, "join-room", "r1")
    net.settle()
    net.send(a, "leave-room", "r1")
    net.push(node)
    node.inbox.clear()
    net.send(b, "say", "r1")
    net.push(node)
    node.refusing = True
    net.receive(node)  # the gap: its Resync refused
    net.settle()
    net.agree()


def test_a_resume_answered_before_the_welcome_waits_for_it(net: Network) -> None:
    """After a processor restart the gateway says hello, and asks its resume again, before
    its subscription reaches the new processor: the answer waits for the welcome (the XPUB
    would drop it)."""
    node = net.nodes[0]
    link = net.connect(node)
    net.settle()
    client = net.links[link][1].id
    net.disconnect(link, clean=False)
    net.push(node)
    net.restart_processor()
    back = net.resume(node, client)
    net.subscribe(node)
    net.tick()
    net.receive(node)  # the new epoch's beat: hello (and the resume asked again)
    net.restart_processor()  # and once more: its hello is processed before its subscription
    net.settle()
    net.agree()
    assert net.links[back][1].id == net.frames(back)[0]["target"]


def test_a_second_hello_does_not_undo_a_resume(net: Network) -> None:
    """The gateway said hello twice (the processor paused); the processor resumed a client
    between the two: the second hello, sent before the answer came, does not list it."""
    node = net.nodes[0]
    link = net.connect(node)
    net.settle()
    client = net.links[link][1].id
    net.disconnect(link, clean=False)
    back = net.resume(node, client)
    net.tick(3.5)
    net.tick()
    net.settle()
    net.agree()
    assert net.links[back][1].id == client


def test_a_resume_answer_lost_in_a_gap_is_asked_again(net: Network) -> None:
    node = net.nodes[1]
    link = net.connect(net.nodes[0])
    net.settle()
    client = net.links[link][1].id
    net.disconnect(link, clean=False)
    net.settle()
    back = net.resume(node, client)
    net.push(node)
    net.resubscribe(node)  # its answer lost
    net.subscribe(node)
    other = net.connect(node)  # something more for this gateway: the gap shows
    net.send(other, "join-room", "r2")
    net.settle()
    net.agree()
    assert net.links[back][1].id == client


def test_a_hello_sent_before_ops_arrived_does_not_undo_them(net: Network) -> None:
    """The processor paused past the peer timeout: it dropped the gateway while the `left`
    of a client was on its way to it, and the gateway's hello, sent before it read that,
    still lists the room. The processor keeps what it knows and sends it after the welcome."""
    node = net.nodes[0]
    link = net.connect(node)
    net.send(link, "join-room", "r1")
    net.settle()
    net.send(link, "leave-room", "r1")
    net.push(node)  # left, the answer on its way (not read yet)
    net.tick(3.5)  # the processor drops the gateway; the gateway says hello, r1 listed
    net.settle()
    net.agree()
    assert net.links[link][1].rooms == set() and net.sent[2].codes()[0] is None  # its answer


def test_a_sync_lost_in_a_gap_is_asked_again(net: Network) -> None:
    node = net.nodes[0]
    a, b = net.connect(node), net.connect(node)
    net.send(a, "join-room", "r1")
    net.send(b, "join-room", "r1")
    net.settle()
    node.lossy = 1
    net.send(b, "say", "r1")
    net.push(node)
    net.send(b, "say", "r1")
    net.push(node)
    net.receive(node)  # the gap: a Resync
    node.lossy = 1
    net.push(node)  # its sync, lost
    net.send(b, "say", "r1")
    net.push(node)
    net.receive(node)  # another gap, while resyncing
    net.settle()
    net.agree()
