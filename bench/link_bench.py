"""The link micro-benchmark: the Python both ends of the gateway<->processor link cost per
chat message, in one process, with nothing else in the way.

    python -m bench.link_bench                      # 1,000 clients in rooms of 4, best of 5 x 20,000
    python -m bench.link_bench --quick              # best of 2 x 2,000 (a smoke test)
    make bench BENCH_ARGS="--scenarios link"        # the same, from bench.run

Two `Gateway` cores (meshstream_zmq/gateway.py) and the real `Processor`
(services/processor.py: its `on_gateway`, `on_subscription`, `beat` and `flush`, so `Mesh`
and `GatewayOutput` too) exchange the bytes they would put on ZeroMQ, through the real wire
codec: encoded GatewayBatches one way, `[topic, GatewayOut | ProcessorBeat]` the other. Only
the sockets are replaced, as in tests/unit/test_link_harness.py but without its faults and
checks: the processor's XPUB by `Wire` (the same `send_multipart`), each gateway's PUSH by a
queue, the clients' sockets by a count of writes. No event loop, no websockets, no system
calls: what is left is the cores' own routing, mirror and codec.

The load is chat's (bench.run's `chat`): --clients clients dealt over --gateways gateways,
--room-size to a room, each message a `send-message` of a ~100-byte body from the next
client in turn, delivered to its room (its sender included) before the next is sent;
heartbeats every 2,000 messages (half a second of the cores' clock). The figure is this
thread's CPU time (`time.thread_time`) per message sent, the best of --repeat runs of
--messages after a warm-up: ≈ 36 µs on the 2-core box of docs/performance.md, of the
≈ 330 µs all of meshstream's processes spend per chat message there. The verdict is PASS
when the clients were written as many deliveries as they were owed (one per member of the
room per message): a core that routes wrongly gives no figure to trust. The figures on
stdout and in bench-results/link-<time>.json (--out DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from bench import log, scenario_main
from bench.harness import CACHE, save
from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config
from meshstream_zmq.gateway import Connection, Gateway, Link
from services.processor import Processor

DEFAULTS: dict[str, Any] = {"clients": 1000, "room_size": 4, "gateways": 2, "messages": 20000,
                            "repeat": 5}
QUICK = {"messages": 2000, "repeat": 2}
WARMUP = 2000  # messages before the measured runs
TICK_EVERY = 2000  # messages between heartbeats
HEARTBEAT = 0.5  # seconds of the cores' clock per heartbeat
SETTLE_BEATS = 60  # heartbeats the link may take to come up before the run is abandoned
PAD = "x" * 100


class Side:
    """A gateway's I/O (meshstream_zmq.gateway.GatewayOutbox): its PUSH is a queue of encoded
    batches, its clients' sockets a count of writes (each write is one delivery here: the
    driver flushes after every message, so no write joins two)."""

    def __init__(self) -> None:
        self.outbound: deque[bytes] = deque()
        self.writes = 0
        self.notices: list[str] = []

    def wake(self) -> None:
        pass  # the driver flushes after every input

    def push_batch(self, batch: bytes) -> bool:
        self.outbound.append(batch)
        return True

    def write(self, link: Any, payload: bytes) -> int:
        self.writes += 1
        return 0  # nothing left buffered: the client reads at once

    def close(self, link: Any, code: int, reason: str) -> None:
        self.notices.append(f"closed {link}: {code} {reason[:80]}")

    def ping(self, link: Any) -> None:
        pass

    def switch_processor(self) -> None:
        pass

    def notice(self, level: str, message: str, fields: dict[str, object]) -> None:
        self.notices.append(f"{level}: {message[:80]}")

    def admin_answer(self, query: int, answer: bytes) -> None:
        pass


class Node:
    """One gateway: its core, its I/O and what the processor sent it, unread."""

    def __init__(self, index: int) -> None:
        self.side = Side()
        self.gw = Gateway(f"gw{index}-bench", index, self.side, send_queue=1 << 20)
        self.inbox: deque[tuple[bytes, bytes]] = deque()
        self.topic = self.gw.id.encode() + b"."


class Wire:
    """The processor's XPUB: each message to every gateway whose topic it carries (a beat,
    topic `processor`, to all)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        topic, payload = frames
        for node in self.nodes:
            if topic == node.topic or topic == b"processor":
                node.inbox.append((topic, payload))


class BenchProcessor(Processor):
    """The real processor, but an exception in its core is raised, not logged and skipped."""

    def failed(self, what: str, now: float, **fields: object) -> None:
        raise  # a figure of a failing core means nothing: stop the run


class Cluster:
    """The gateways and the processor, joined by `Wire` and the gateways' queues."""

    def __init__(self, gateways: int, run_dir: str) -> None:
        self.now = 0.0
        self.nodes = [Node(i) for i in range(1, gateways + 1)]
        self.proc = BenchProcessor(Config(run_dir=run_dir, metrics_port=0))
        self.proc.pub = Wire(self.nodes)  # type: ignore[assignment]
        self.proc.out.pub = self.proc.pub
        for node in self.nodes:
            node.gw.heartbeat(self.now)  # its hello
            node.gw.flush()
            self.proc.on_subscription(b"\x01" + node.topic)
        self.proc.flush(self.now)
        for _ in range(SETTLE_BEATS):
            self.flow()
            if all(node.gw.link is Link.UP for node in self.nodes):
                return
            self.tick()
        raise RuntimeError("the gateways were not welcomed: "
                           + ", ".join(f"{n.gw.id} {n.gw.link}" for n in self.nodes))

    def push(self, node: Node) -> None:
        """The processor reads what a gateway sent, then flushes."""
        while node.side.outbound:
            self.proc.on_gateway(node.side.outbound.popleft(), self.now)
        self.proc.flush(self.now)

    def receive(self, node: Node) -> None:
        """A gateway reads what the processor sent it, each message a tick of its own."""
        gw = node.gw
        while node.inbox:
            topic, payload = node.inbox.popleft()
            if topic == b"processor":
                gw.processor_beat(pb.ProcessorBeat.FromString(payload), self.now)
            else:
                gw.processor_out(pb.GatewayOut.FromString(payload))
            gw.flush()

    def flow(self) -> None:
        """Everything in flight delivered, both ways, until nothing is."""
        while any(n.side.outbound or n.inbox for n in self.nodes):
            for node in self.nodes:
                self.push(node)
            for node in self.nodes:
                self.receive(node)

    def tick(self) -> None:
        """Half a second passes: the processor and every gateway heartbeat."""
        self.now += HEARTBEAT
        self.proc.beat(self.now)
        self.proc.flush(self.now)
        for node in self.nodes:
            node.gw.heartbeat(self.now)
            node.gw.flush()

    def close(self) -> None:
        self.proc.close()


def chat_frame(room: str, n: int) -> str:
    """What bench/node/loadgen.js sends in chat: a timestamp, a counter and a pad."""
    return ('{"action":"send-message","target":"%s","message_body":{"t":%d.5,"n":%d,"pad":"%s"}}'
            % (room, n, n, PAD))


class Chat:
    """The chat load on a `Cluster`: clients dealt round-robin over the gateways, joined to
    rooms of `room_size`, sending in turn."""

    def __init__(self, cluster: Cluster, clients: int, room_size: int) -> None:
        self.cluster = cluster
        self.clients: list[tuple[Node, Connection, str]] = []
        for i in range(clients):
            node = cluster.nodes[i % len(cluster.nodes)]
            conn = node.gw.connect(f"L{i}", cluster.now)
            if conn is None:
                raise RuntimeError(f"{node.gw.id} refused a connection")
            room = f"r{i // room_size}"
            node.gw.client_frame(conn, json.dumps({"action": "join-room", "target": room}), cluster.now)
            node.gw.flush()
            self.clients.append((node, conn, room))
        cluster.flow()
        for node in cluster.nodes:
            node.side.notices.clear()  # the welcomes: only what happens under load is reported
        self.members = Counter(room for *_, room in self.clients)
        self.sent = 0

    def deliveries(self) -> int:
        return sum(node.side.writes for node in self.cluster.nodes)

    def run(self, messages: int) -> tuple[float, int, int]:
        """`messages` chat messages, each delivered before the next is sent: (CPU seconds of
        this thread, deliveries owed, deliveries made). The frames are made first, so their
        cost is the client's, not the cores'."""
        cluster, nodes, clients = self.cluster, self.cluster.nodes, self.clients
        plan, owed = [], 0
        for k in range(self.sent, self.sent + messages):
            node, conn, room = clients[k % len(clients)]
            plan.append((node, conn, chat_frame(room, k), (k + 1) % TICK_EVERY == 0))
            owed += self.members[room]
        self.sent += messages
        before = self.deliveries()
        started = time.thread_time()
        for node, conn, frame, beat in plan:
            node.gw.client_frame(conn, frame, cluster.now)
            node.gw.flush()
            cluster.push(node)
            for other in nodes:
                cluster.receive(other)
            if beat:
                cluster.tick()
                cluster.flow()
        spent = time.thread_time() - started
        cluster.flow()
        return spent, owed, self.deliveries() - before


def run_scenario(o: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if o.quick:
        for k, v in QUICK.items():
            if getattr(o, k) == DEFAULTS[k]:
                setattr(o, k, v)
    load = {k: getattr(o, k) for k in DEFAULTS}
    results: dict[str, Any] = {"time": time.strftime("%Y%m%d-%H%M%S"), "argv": sys.argv[1:],
                               "nproc": os.cpu_count(), "load": load}
    with tempfile.TemporaryDirectory(prefix="meshstream-link-") as tmp:  # the processor binds IPC here
        cluster = Cluster(o.gateways, str(Path(tmp) / "run"))
        try:
            chat = Chat(cluster, o.clients, o.room_size)
            log(f"link: {o.clients} clients joined; {o.repeat} run(s) of {o.messages} messages")
            chat.run(min(WARMUP, o.messages))
            runs = [chat.run(o.messages) for _ in range(o.repeat)]
        finally:
            cluster.close()
    per_msg = [round(1e6 * spent / o.messages, 2) for spent, _, _ in runs]
    owed, made = sum(r[1] for r in runs), sum(r[2] for r in runs)
    notices = [n for node in cluster.nodes for n in node.side.notices]
    results.update(us_per_msg=min(per_msg), runs_us_per_msg=per_msg, deliveries_owed=owed,
                   deliveries=made, notices=notices[:20], verdict="PASS" if made == owed else "FAIL")
    lines = [f"link: {o.gateways} gateway cores + the processor in one process, the real wire codec, "
             f"no sockets; {o.clients} clients in rooms of {o.room_size}",
             f"{min(per_msg):.1f} us of Python per chat message (best of {o.repeat} x {o.messages:,}; "
             f"runs {', '.join(f'{u:.1f}' for u in per_msg)})",
             f"deliveries {made:,} of {owed:,} owed -> {results['verdict']}"]
    if notices:
        lines.append(f"{len(notices)} notice(s) from the gateway cores, first: {notices[0]}")
    save(results, f"link-{results['time']}", Path(o.out))
    return results, "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.link_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DEFAULTS
    ap.add_argument("--clients", type=int, default=d["clients"], help="clients (1000)")
    ap.add_argument("--room-size", type=int, default=d["room_size"], help="clients per room (4)")
    ap.add_argument("--gateways", type=int, default=d["gateways"], help="gateway cores (2)")
    ap.add_argument("--messages", type=int, default=d["messages"], help="messages per run (20000)")
    ap.add_argument("--repeat", type=int, default=d["repeat"], help="runs; the best counts (5)")
    ap.add_argument("--quick", action="store_true", help="best of 2 x 2,000")
    ap.add_argument("--out", default=str(CACHE), help="where the JSON goes (bench-results)")
    return ap


def main(argv: list[str] | None = None) -> int:
    return scenario_main(parser, run_scenario, lambda results: results["verdict"] == "PASS", argv)


if __name__ == "__main__":
    sys.exit(main())
