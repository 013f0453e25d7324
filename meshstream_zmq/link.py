"""The processor's end of the gateway link, with no I/O: what each gateway is owed.

`GatewayOutput` is the gateway half of the core's `Outbox`: it gathers the ops for
each gateway in a tick, numbers each gateway's `GatewayOut`s, and keeps account of
what every gateway has not yet applied (each GatewayBatch says `received`: the last
GatewayOut it applied). That account is the link's flow control. ZeroMQ's XPUB
drops what a full subscriber pipe cannot take, and only for that subscriber, so
sending never blocks and every other gateway, and every processor beat, goes on;
a gateway that stops reading (overloaded, a congested link, a bug) is found here
instead: once its unapplied output passes `lag_bytes`, or its oldest unapplied
GatewayOut is older than `lag_age`, it is `stalled`. The processor then drops it
(its clients go away, as when a gateway dies) and sends it nothing more; once it
reads again it finds itself missing from the processor's beat and says hello.

The processor adapter (services/processor.py) subclasses it with the sockets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from . import meshstream_pb2 as pb
from .wire import deliver_op, length_delimited, varint

LAG_BYTES = 64 << 20  # a gateway's unapplied output past this: stalled
# A long drain is flushed every this many room messages: the gateways start writing
# while the processor reads on, and each GatewayOut stays a few hundred KB.
FLUSH_BROADCASTS = 1024


@dataclass(slots=True, eq=False)
class GatewayStream:
    """What one gateway is owed: this tick's ops, and its GatewayOuts not yet applied."""

    gateway: str
    seq: int = 0  # of its last GatewayOut
    ops: list[bytes] = field(default_factory=list)  # encoded `ops` fields, this tick
    unapplied: deque[tuple[int, int, float]] = field(default_factory=deque)  # (seq, bytes, sent)
    unapplied_bytes: int = 0
    # Those GatewayOuts themselves, for a processor restarted from its log to send again
    # (`unsent`): what the last one made, it may never have sent. Bounded as `unapplied`.
    retained: deque[bytes] = field(default_factory=deque)


class GatewayOutput:
    """The gateway half of the core's Outbox, and each gateway's flow control."""

    def __init__(self, epoch: str, lag_bytes: int = LAG_BYTES, lag_age: float = 3.0) -> None:
        self.epoch = epoch
        self.run = ""  # this processor process (Welcome.run; fixed length: its bytes are counted)
        self.logged = False  # it keeps a log (Welcome.logged)
        # `GatewayOut.epoch` (field 3) encoded once: a GatewayOut is its ops, b"\x10" (field
        # 2, `seq`) + varint(seq), then this, as upb writes them (test_link.py checks it).
        self.epoch_field = length_delimited(3, epoch.encode()) if epoch else b""
        self.lag_bytes = lag_bytes
        self.lag_age = lag_age
        self.streams: dict[str, GatewayStream] = {}
        self.touched: list[GatewayStream] = []  # with ops this tick (the flush visits only these)
        self.broadcasts = 0  # room messages since the last take()
        self.over: list[str] = []  # gateways the last take() put past lag_bytes
        self.holding: set[str] = set()  # said hello before subscribing: output waits (hold)

    def _ops(self, gateway: str) -> list[bytes]:
        stream = self.streams.get(gateway)
        if stream is None:
            stream = self.streams[gateway] = GatewayStream(gateway)
        if not stream.ops:
            self.touched.append(stream)
        return stream.ops

    def _op(self, gateway: str, op: pb.GatewayOp) -> None:
        self._ops(gateway).append(length_delimited(1, op.SerializeToString()))

    # ------------------------------------------------------------ the Outbox's gateway half

    def deliver(self, gateway: str, frame: bytes, clients: Sequence[str] = (), room: str = "",
                exclude: Sequence[str] = ()) -> None:
        self._ops(gateway).append(deliver_op(frame, clients, room, exclude))

    def broadcast(self, gateways: Iterable[str], room: str, frame: bytes,
                  exclude: Sequence[str] = ()) -> None:
        # The hot path: one op, encoded by hand once, for every gateway holding members.
        op = deliver_op(frame, (), room, exclude)
        self.broadcasts += 1
        streams = self.streams
        for gateway in gateways:
            stream = streams.get(gateway)
            if stream is not None and stream.ops:
                stream.ops.append(op)
            else:
                self._ops(gateway).append(op)

    def membership(self, gateway: str, client: str, room: str, joined: bool) -> None:
        m = pb.Membership(client=client, room=room)
        self._op(gateway, pb.GatewayOp(joined=m) if joined else pb.GatewayOp(left=m))

    def close(self, gateway: str, client: str, code: int, reason: str) -> None:
        self._op(gateway, pb.GatewayOp(close=pb.CloseClient(client=client, code=code, reason=reason)))

    def welcome_gateway(self, gateway: str) -> None:
        op = length_delimited(1, pb.GatewayOp(welcome=pb.Welcome(
            epoch=self.epoch, run=self.run, logged=self.logged)).SerializeToString())
        if gateway in self.holding:  # what waited for the welcome comes after it
            self.holding.discard(gateway)
            self._ops(gateway).insert(0, op)
        else:
            self._ops(gateway).append(op)

    def hold(self, gateway: str) -> None:
        """`gateway` said hello before its subscription reached the XPUB, which would drop
        what is sent to it (a resume's answer, a close): that waits for its welcome."""
        self.holding.add(gateway)

    def resumed(self, gateway: str, link: str, client: str = "", reason: str = "",
                rooms: Sequence[str] = (), replay: Sequence[bytes] = (), epoch: str = "") -> None:
        result = pb.ResumeResult(link=link, client=client, reason=reason, rooms=rooms,
                                 replay=replay, epoch=epoch)
        self._op(gateway, pb.GatewayOp(resumed=result))

    def sync(self, gateway: str, clients: Sequence[tuple[str, Sequence[str]]],
             closing: Sequence[tuple[str, int, str]]) -> None:
        op = pb.GatewayOp()
        for client, rooms in clients:
            op.sync.clients.add(client=client, rooms=rooms)
        for client, code, reason in closing:
            op.sync.close.add(client=client, code=code, reason=reason)
        op.sync.SetInParent()
        self._op(gateway, op)

    def admin_answer(self, gateway: str, query: int, answer: bytes) -> None:
        self._op(gateway, pb.GatewayOp(admin=pb.AdminAnswer(id=query, json=answer)))

    # ------------------------------------------------------------ flush and flow control

    def take(self, now: float) -> list[tuple[str, bytes]]:
        """This tick's GatewayOuts, one per gateway touched: (gateway, encoded GatewayOut),
        each numbered and counted as unapplied until the gateway says it applied it."""
        out = []
        self.over = []
        held = []
        for stream in self.touched:
            if self.holding and stream.gateway in self.holding:
                held.append(stream)
                continue
            ops = stream.ops
            stream.ops = []
            seq = stream.seq = stream.seq + 1
            ops.append(b"\x10" + varint(seq) + self.epoch_field)  # seq > 0: always written
            payload = b"".join(ops)
            stream.unapplied.append((seq, len(payload), now))
            stream.unapplied_bytes += len(payload)
            stream.retained.append(payload)
            if stream.unapplied_bytes > self.lag_bytes:
                self.over.append(stream.gateway)
            out.append((stream.gateway, payload))
        self.touched = held
        self.broadcasts = 0
        return out

    def received(self, gateway: str, seq: int) -> None:
        """The gateway applied every GatewayOut up to `seq` (from its GatewayBatch)."""
        stream = self.streams.get(gateway)
        if stream is None:
            return
        unapplied = stream.unapplied
        while unapplied and unapplied[0][0] <= seq:
            stream.unapplied_bytes -= unapplied.popleft()[1]
            stream.retained.popleft()

    def unsent(self, gateway: str) -> list[bytes]:
        """Every GatewayOut `gateway` has not said it applied, oldest first: to send again
        (it skips those it has: their seqs are not above its last)."""
        stream = self.streams.get(gateway)
        return list(stream.retained) if stream is not None else []

    def stalled(self, now: float) -> list[str]:
        """Gateways past `lag_bytes` of unapplied output, or whose oldest unapplied
        GatewayOut is older than `lag_age`: not reading. The caller drops them (`forget`)."""
        oldest = now - self.lag_age
        return [g for g, s in self.streams.items()
                if s.unapplied_bytes > self.lag_bytes or (s.unapplied and s.unapplied[0][2] < oldest)]

    def lag(self, gateway: str) -> int:
        """Bytes sent to `gateway` and not yet applied by it."""
        stream = self.streams.get(gateway)
        return stream.unapplied_bytes if stream is not None else 0

    def forget(self, gateway: str) -> None:
        """The gateway is gone, or dropped: nothing more is owed to it (a hello starts over)."""
        self.holding.discard(gateway)
        stream = self.streams.pop(gateway, None)
        if stream is not None and stream.ops:
            self.touched.remove(stream)

    def check(self) -> None:
        for gateway, s in self.streams.items():
            assert s.unapplied_bytes == sum(n for _, n, _ in s.unapplied), gateway
            assert [len(p) for p in s.retained] == [n for _, n, _ in s.unapplied], gateway
            assert [q for q, _, _ in s.unapplied] == sorted({q for q, _, _ in s.unapplied}), gateway
            assert not s.unapplied or s.unapplied[-1][0] <= s.seq, gateway
            assert bool(s.ops) == (s in self.touched), gateway
        assert all(self.streams.get(s.gateway) is s for s in self.touched)

    def snapshot(self) -> dict[str, Any]:
        """Plain data, in the order the state holds it (the sockets and this process's
        `run` are not state)."""
        return {"epoch": self.epoch, "broadcasts": self.broadcasts, "over": list(self.over),
                "holding": sorted(self.holding), "touched": [s.gateway for s in self.touched],
                "streams": [{"gateway": s.gateway, "seq": s.seq, "ops": list(s.ops),
                             "unapplied": [list(u) for u in s.unapplied],
                             "unapplied_bytes": s.unapplied_bytes, "retained": list(s.retained)}
                            for s in self.streams.values()]}

    def dump_into(self, msg: pb.ProcessorState.Output) -> None:
        """The state into a snapshot (meshstream_zmq/snapshot.py, which writes the epoch)."""
        for s in self.streams.values():
            m = msg.streams.add(gateway=s.gateway, seq=s.seq)
            m.ops.extend(s.ops)
            m.unapplied.extend(seq for seq, _, _ in s.unapplied)
            m.sent.extend(sent for _, _, sent in s.unapplied)
            m.retained.extend(s.retained)
        msg.touched.extend(s.gateway for s in self.touched)
        msg.broadcasts = self.broadcasts
        msg.over.extend(self.over)
        msg.holding.extend(sorted(self.holding))

    def load_from(self, msg: pb.ProcessorState.Output, epoch: str) -> None:
        """A snapshot's state in place of this one's (the configuration, `run` and `logged`
        stay this process's)."""
        self.epoch = epoch
        self.epoch_field = length_delimited(3, epoch.encode()) if epoch else b""
        self.streams = {}
        for m in msg.streams:
            retained = deque(m.retained)
            unapplied = deque(zip(m.unapplied, map(len, retained), m.sent, strict=True))
            self.streams[m.gateway] = GatewayStream(m.gateway, m.seq, list(m.ops), unapplied,
                                                    sum(map(len, retained)), retained)
        self.touched = [self.streams[g] for g in msg.touched]
        self.broadcasts = msg.broadcasts
        self.over = list(msg.over)
        self.holding = set(msg.holding)


class Peer(Enum):
    """A gateway as the processor's end of its link sees it (every transition: PEER)."""

    UNKNOWN = "unknown"  # never said hello, or dropped (silent, stalled, replaced in its slot)
    SUBSCRIBING = "subscribing"  # said hello; its SUB subscription has not reached us yet
    WELCOMED = "welcomed"  # welcomed: its frames are routed and acknowledged


# Every legal transition, h11-style: (state, event) -> state. `hello` welcomes at once when
# the gateway's subscription is already here (else `subscribed` does, the slow joiner);
# `resync` answers a gap with a sync; `dropped` forgets it. Anything else raises.
PEER: dict[tuple[Peer, str], Peer] = {
    (Peer.UNKNOWN, "hello"): Peer.SUBSCRIBING,
    (Peer.SUBSCRIBING, "hello"): Peer.SUBSCRIBING,
    (Peer.WELCOMED, "hello"): Peer.SUBSCRIBING,  # welcomed again at once: still subscribed
    (Peer.SUBSCRIBING, "subscribed"): Peer.WELCOMED,
    (Peer.WELCOMED, "resync"): Peer.WELCOMED,
    (Peer.UNKNOWN, "dropped"): Peer.UNKNOWN,
    (Peer.SUBSCRIBING, "dropped"): Peer.UNKNOWN,
    (Peer.WELCOMED, "dropped"): Peer.UNKNOWN,
}


class Peers:
    """Each gateway's state at the processor's end of its link, and the subscriptions the
    XPUB has seen (kept while a processor is passive: gateways subscribe to both of a pair)."""

    def __init__(self) -> None:
        self.state: dict[str, Peer] = {}
        self.subscriptions: set[bytes] = set()

    def of(self, gateway: str) -> Peer:
        return self.state.get(gateway, Peer.UNKNOWN)

    def _move(self, gateway: str, event: str) -> Peer:
        new = self.state[gateway] = PEER[(self.of(gateway), event)]
        if new is Peer.UNKNOWN:
            del self.state[gateway]
        return new

    def hello(self, gateway: str) -> bool:
        """It said hello: whether to welcome it now (its subscription is here)."""
        self._move(gateway, "hello")
        if gateway.encode() + b"." in self.subscriptions:
            self._move(gateway, "subscribed")
            return True
        return False

    def subscription(self, message: bytes) -> str | None:
        """An XPUB subscription message: the gateway to welcome now (a slow joiner), if any."""
        topic = message[1:]
        if message[:1] != b"\x01":
            self.subscriptions.discard(topic)
            return None
        self.subscriptions.add(topic)
        gateway = topic[:-1].decode(errors="replace")
        if self.of(gateway) is Peer.SUBSCRIBING:
            self._move(gateway, "subscribed")
            return gateway
        return None

    def resync(self, gateway: str) -> None:
        self._move(gateway, "resync")

    def dropped(self, gateway: str) -> None:
        self._move(gateway, "dropped")

    def snapshot(self) -> dict[str, Any]:
        return {"state": {g: p.value for g, p in self.state.items()},
                "subscriptions": sorted(self.subscriptions)}

    def dump_into(self, msg: pb.ProcessorState.Processor) -> None:
        """Into a snapshot's processor part (meshstream_zmq/snapshot.py)."""
        msg.peers.extend(self.state)
        msg.peer_states.extend(p.value for p in self.state.values())
        msg.subscriptions.extend(sorted(self.subscriptions))

    def load_from(self, msg: pb.ProcessorState.Processor) -> None:
        """A snapshot's state in place of this one's; an unknown state raises ValueError."""
        state = {g: Peer(v) for g, v in zip(msg.peers, msg.peer_states, strict=True)}
        if Peer.UNKNOWN in state.values():
            raise ValueError("a gateway in state unknown is not kept")
        self.state = state
        self.subscriptions = set(msg.subscriptions)
