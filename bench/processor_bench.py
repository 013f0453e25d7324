"""Processor micro-benchmark: client frames ("envelopes") routed per second.

    python -m bench.processor_bench                 # core, processor, zmq; ~20 s
    python -m bench.processor_bench --modes zmq --frames 500000 --batch 128

One envelope = one client frame (a row of `ClientFrames` in a `GatewayBatch`) routed to its
room. The workload is `chat`-shaped: --clients clients spread round-robin over
--gateways fake gateways, in rooms of --room-size, every frame a `send-message`
with a --size byte body to the sender's room (so each frame becomes one `Deliver`
per gateway holding members of that room). Three levels, and a yardstick:

  core       `Mesh.client_frame` alone, with an Outbox that only counts calls
             (routing rules + JSON frame encoding, no protobuf).
  processor  `Processor.on_gateway` on serialised GatewayBatches + `ZmqOutbox.flush`
             serialising one GatewayOut per gateway, publish replaced by a counter:
             everything the processor does except the sockets, on this one core.
  zmq        end to end: a real processor process (`meshstream processor`), this
             process PUSHes GatewayBatches in and SUBscribes to the GatewayOuts, with
             at most --window frames in flight. Reported per wall second and per CPU
             second of the processor process (its own core: "on one core").
             Its routing thread (the main thread) is reported apart from libzmq's
             I/O thread: the routing thread is the one core the processor needs.
  calibrate  raw pyzmq PUSH -> PULL, 100-byte messages over IPC, no meshstream:
             the issue quotes ~1.0M msg/s for this machine; scale by it.

--transport says what the zmq level's sockets run over: ipc (the default, the run
directory), tcp (the processor's --tcp on loopback ports) or curve (that, with
--keys-dir made by `meshstream keys` in a temporary directory; the fake gateways are
CURVE clients with the gateway key), as between hosts.

Figures are envelopes/s; `batch` is frames per GatewayBatch (the gateway sends one
batch per event-loop tick, so under load batches hold tens to hundreds of frames).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any

import zmq

from bench import REPO
from bench.sampling import CLK_TCK, cpu_ticks
from meshstream_zmq import keys as keyfiles
from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind, Mesh


class CountingOutbox:
    """An Outbox that only counts (the core level)."""

    def __init__(self) -> None:
        self.delivers = 0
        self.other = 0

    def deliver(self, gateway: str, frame: bytes, clients: Sequence[str] = (), room: str = "",
                exclude: Sequence[str] = ()) -> None:
        self.delivers += 1

    def broadcast(self, gateways: Iterable[str], room: str, frame: bytes,
                  exclude: Sequence[str] = ()) -> None:
        for _ in gateways:
            self.delivers += 1

    def membership(self, gateway: str, client: str, room: str, joined: bool) -> None:
        self.other += 1

    def close(self, gateway: str, client: str, code: int, reason: str) -> None:
        self.other += 1

    def event(self, seq: int, kind: EventKind, client: str, room: str, watcher: str,
              user: str = "") -> None:
        self.other += 1

    def to_watcher(self, *args: object) -> bool:
        self.other += 1
        return True

    def reply(self, *args: object, **kwargs: object) -> None:
        self.other += 1

    def welcome(self, *args: object) -> None:
        self.other += 1

    def resumed(self, *args: object, **kwargs: object) -> None:
        self.other += 1


class CountingSocket:
    """Stands in for the processor's XPUB: counts messages and bytes."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def send_multipart(self, frames: list[bytes], flags: int = 0, **_: object) -> None:
        self.messages += 1
        self.bytes += sum(len(f) for f in frames)

    def poll(self, *args: object) -> int:
        return zmq.POLLOUT


class Workload:
    def __init__(self, args: argparse.Namespace) -> None:
        self.gateways = [f"gw{i + 1}-bench" for i in range(args.gateways)]
        self.clients: dict[str, list[str]] = {g: [] for g in self.gateways}
        self.rooms: dict[str, str] = {}  # client -> room
        for i in range(args.clients):
            gw = self.gateways[i % len(self.gateways)]
            client = f"{gw}.{i + 1}"
            self.clients[gw].append(client)
            self.rooms[client] = f"room-{i // args.room_size}"
        self.body = json.dumps({"t": 0.0, "n": 0, "pad": "x" * args.size}, separators=(",", ":")).encode()
        rnd = random.Random(1)
        self.batches: list[tuple[str, bytes, int]] = []  # (gateway, GatewayBatch bytes, frames)
        seq = {g: 0 for g in self.gateways}
        made = 0
        while made < args.frames:
            gw = self.gateways[len(self.batches) % len(self.gateways)]
            batch = pb.GatewayBatch(gateway=gw)
            n = min(args.batch, args.frames - made)
            run = batch.items.add().frames  # what a gateway sends: one run of frames per tick
            run.first_seq = seq[gw] + 1
            seq[gw] += n
            for _ in range(n):
                client = rnd.choice(self.clients[gw])
                run.client.append(client)
                run.action.append("send-message")
                run.target.append(self.rooms[client])
                run.body.append(self.body)
                run.is_target_client.append(False)
                run.request_id.append(b"")
            self.batches.append((gw, batch.SerializeToString(), n))
            made += n
        # one Deliver per (frame, gateway holding members of the frame's room)
        spans = {}
        for room in set(self.rooms.values()):
            spans[room] = len({c.partition(".")[0] for c, r in self.rooms.items() if r == room})
        self.spans = spans

    def hello(self, gw: str, index: int) -> bytes:
        batch = pb.GatewayBatch(gateway=gw)
        h = batch.items.add().hello
        h.index = index
        for client in self.clients[gw]:
            c = h.clients.add()
            c.client = client
            c.rooms.append(self.rooms[client])
        return batch.SerializeToString()

    def expected_delivers(self) -> int:
        total = 0
        for _, payload, _ in self.batches:
            for item in pb.GatewayBatch.FromString(payload).items:
                total += sum(self.spans[target] for target in item.frames.target)
        return total


def _result(name: str, frames: int, secs: float, **extra: Any) -> dict[str, Any]:
    out = {"mode": name, "envelopes": frames, "seconds": round(secs, 3),
           "envelopes_per_s": round(frames / secs)}
    out.update(extra)
    return out


def bench_core(w: Workload, args: argparse.Namespace) -> dict[str, Any]:
    out = CountingOutbox()
    mesh = Mesh(out)  # type: ignore[arg-type]
    for i, gw in enumerate(w.gateways, start=1):
        mesh.gateway_hello(gw, i, [(c, [w.rooms[c]]) for c in w.clients[gw]], 0.0)
    frames = [pair for _, payload, _ in w.batches
              for item in pb.GatewayBatch.FromString(payload).items
              for pair in zip(item.frames.client, item.frames.target, strict=True)]
    body = w.body
    out.delivers = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    client_frame = mesh.client_frame
    for client, target in frames:
        client_frame(client, "send-message", target, body, False, b"")
    secs = time.perf_counter() - t0
    return _result("core", len(frames), secs, cpu_s=round(time.process_time() - cpu0, 3),
                   delivers=out.delivers)


def bench_processor(w: Workload, args: argparse.Namespace) -> dict[str, Any]:
    from services.processor import Processor

    with tempfile.TemporaryDirectory(prefix="msbench-") as tmp:
        proc = Processor(Config(run_dir=tmp, metrics_port=0))
        try:
            counter = CountingSocket()
            real_pub = proc.out.pub
            proc.out.pub = counter  # type: ignore[assignment]
            proc.pub = counter  # type: ignore[assignment]
            for i, gw in enumerate(w.gateways, start=1):
                proc.on_gateway(w.hello(gw, i), 0.0)
            proc.out.flush(0.0)
            counter.messages = counter.bytes = 0
            flush_every = max(1, args.flush_every)
            on_gateway = proc.on_gateway

            def flush() -> None:  # the gateways never acknowledge here: no flow control
                proc.out.flush(1.0)
            frames = 0
            cpu0, t0 = time.process_time(), time.perf_counter()
            for i, (_, payload, n) in enumerate(w.batches, start=1):
                on_gateway(payload, 1.0)
                frames += n
                if i % flush_every == 0:
                    flush()
            flush()
            secs = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            proc.out.pub = proc.pub = real_pub
        finally:
            proc.close()
    return _result("processor", frames, secs, cpu_s=round(cpu, 3), batch=args.batch,
                   flush_every=flush_every, gateway_outs=counter.messages,
                   out_mb=round(counter.bytes / 1e6, 1))


def bench_calibrate(w: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """Raw pyzmq PUSH -> PULL of 100-byte messages over IPC between two processes: the
    issue's yardstick for this machine (about 1.0M msg/s on the day its targets were set),
    so the figures above can be scaled when the shared box is slower or faster."""
    n = 300_000
    with tempfile.TemporaryDirectory(prefix="msbench-") as tmp:
        ep = f"ipc://{tmp}/calibrate"
        code = ("import sys, time, zmq\n"
                "s = zmq.Context().socket(zmq.PULL); s.bind(sys.argv[1]); n = int(sys.argv[2])\n"
                "print('ready', flush=True); s.recv(); t = time.perf_counter()\n"
                "for _ in range(n - 1): s.recv()\n"
                "print(time.perf_counter() - t, flush=True)\n")
        sink = subprocess.Popen([sys.executable, "-c", code, ep, str(n)], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
            ctx = zmq.Context()
            push = ctx.socket(zmq.PUSH)
            push.connect(ep)
            msg = b"x" * 100
            for _ in range(n):
                push.send(msg)
            secs = float(sink.stdout.readline())
            push.close(linger=-1)
            ctx.term()
        finally:
            sink.wait(30)
    return _result("calibrate", n, secs)


TRANSPORTS = ("ipc", "tcp", "curve")


def free_tcp_base(host: str = "127.0.0.1") -> int:
    """A port P with P, P+1 and P+2 free (the processor's --tcp), below the range
    bench.harness.free_port hands out to servers and above the usual fixed ports."""
    rnd = random.Random()
    for _ in range(500):
        port = rnd.randrange(15000, 19990)
        try:
            for off in range(3):
                with socket.socket() as s:
                    s.bind((host, port + off))
        except OSError:
            continue
        return port
    raise RuntimeError("no free TCP ports for the processor")


def transport_fields(transport: str, tmp: str) -> dict[str, str]:
    """The Config fields that put the processor's sockets on `transport`: none for ipc;
    `tcp` on free loopback ports for tcp; for curve also `keys_dir`, written by
    `meshstream keys` into `tmp` (a private directory the caller removes)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r}: one of {', '.join(TRANSPORTS)}")
    if transport == "ipc":
        return {}
    fields = {"tcp": f"127.0.0.1:{free_tcp_base()}"}
    if transport == "curve":
        keys_dir = os.path.join(tmp, "keys")
        subprocess.run([sys.executable, "-m", "services.cli", "keys", keys_dir], cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), check=True,
                       stdout=subprocess.DEVNULL)
        fields["keys_dir"] = keys_dir
    return fields


class ProcessorDied(RuntimeError):
    """The processor exited before it welcomed the fake gateways."""


def bench_zmq(w: Workload, args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="msbench-")
    fields = transport_fields(args.transport, tmp)
    config = Config(run_dir=tmp, **fields)  # type: ignore[arg-type]
    flags = [x for name, value in fields.items() for x in (f"--{name.replace('_', '-')}", value)]
    env = dict(os.environ, PYTHONPATH=str(REPO), MESHSTREAM_LOG_LEVEL="warning")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "processor", "--run-dir", tmp,
                             "--metrics-port", "0", *flags], cwd=REPO, env=env,
                            start_new_session=True)
    print(f"  zmq: processor pid {proc.pid} over {args.transport}", file=sys.stderr, flush=True)
    ctx = zmq.Context()
    socks: list[zmq.Socket] = []
    curve = None
    if config.keys_dir:  # the fake gateways hold the gateway key, as real ones do
        curve = (keyfiles.gateway_pair(config.keys_dir), keyfiles.processor_public(config.keys_dir))

    def client(kind: int) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            pair, server = curve
            sock.setsockopt(zmq.CURVE_SERVERKEY, server)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)
        socks.append(sock)
        return sock

    try:
        ep = config.endpoints
        push = client(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 100_000)
        push.connect(ep.inbound)
        subs = {}
        poller = zmq.Poller()
        for gw in w.gateways:
            sub = client(zmq.SUB)
            sub.setsockopt(zmq.RCVHWM, 100_000)
            sub.setsockopt(zmq.SUBSCRIBE, gw.encode() + b".")
            sub.connect(ep.outbound)
            subs[sub] = gw
            poller.register(sub, zmq.POLLIN)
        # handshake: hello until every gateway is welcomed (slow-joiner safe)
        welcomed: set[str] = set()
        deadline = time.monotonic() + 30
        while len(welcomed) < len(w.gateways):
            if proc.poll() is not None:
                raise ProcessorDied(f"the processor exited (code {proc.returncode}) before "
                                    "welcoming the fake gateways")
            if time.monotonic() > deadline:
                raise RuntimeError("the processor did not welcome the fake gateways in 30 s")
            for i, gw in enumerate(w.gateways, start=1):
                if gw not in welcomed:
                    push.send_multipart([b"gateway", w.hello(gw, i)])
            end = time.monotonic() + 0.5
            while time.monotonic() < end and len(welcomed) < len(w.gateways):
                for sock, _ in poller.poll(100):
                    _, payload = sock.recv_multipart()
                    ops = pb.GatewayOut.FromString(payload).ops
                    if any(op.WhichOneof("kind") == "welcome" for op in ops):
                        welcomed.add(subs[sock])
        expected = w.expected_delivers()
        window = args.window
        received = sent_frames = outs = 0
        spans_per_frame = expected / max(1, sum(n for _, _, n in w.batches))
        cpu0, main0 = cpu_ticks(proc.pid), cpu_ticks(proc.pid, proc.pid)
        t0 = time.perf_counter()
        i = 0
        batches = w.batches
        last_progress = next_ack = time.monotonic()
        applied = dict.fromkeys(w.gateways, 0)  # each fake gateway's last GatewayOut read
        while received < expected:
            if time.monotonic() >= next_ack:  # as a gateway says what it applied (each batch):
                for gw, seq in applied.items():  # else flow control drops it as stalled
                    ack = pb.GatewayBatch(gateway=gw, received=seq)
                    ack.items.add().heartbeat.SetInParent()
                    push.send_multipart([b"gateway", ack.SerializeToString()])
                next_ack = time.monotonic() + 0.5
            while i < len(batches) and (sent_frames - received / spans_per_frame) < window:
                _, payload, n = batches[i]
                push.send_multipart([b"gateway", payload])
                sent_frames += n
                i += 1
            got = False
            for sock, _ in poller.poll(0 if i < len(batches) and sent_frames - received / spans_per_frame
                                        < window else 100):
                for _ in range(1000):
                    try:
                        _, payload = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    gateway_out = pb.GatewayOut.FromString(payload)
                    received += len(gateway_out.ops)
                    applied[subs[sock]] = gateway_out.seq
                    outs += 1
                    got = True
            if got:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > 10:
                raise RuntimeError(f"stalled: {received}/{expected} deliveries")
        secs = time.perf_counter() - t0
        cpu = (cpu_ticks(proc.pid) - cpu0) / CLK_TCK
        main_cpu = (cpu_ticks(proc.pid, proc.pid) - main0) / CLK_TCK
        return _result("zmq", sent_frames, secs, processor_cpu_s=round(cpu, 2),
                       envelopes_per_cpu_s=round(sent_frames / cpu) if cpu else None,
                       main_thread_cpu_s=round(main_cpu, 2),
                       envelopes_per_main_cpu_s=round(sent_frames / main_cpu) if main_cpu else None,
                       batch=args.batch, window=window, gateway_outs=outs, delivers=received,
                       transport=args.transport)
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _per_cpu(r: dict[str, Any]) -> int:
    """Envelopes per CPU-second of the routing process (its own core)."""
    if r.get("envelopes_per_cpu_s"):
        return int(r["envelopes_per_cpu_s"])
    return round(r["envelopes"] / r["cpu_s"]) if r.get("cpu_s") else 0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.processor_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="core,processor,zmq,calibrate")
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=64, help="frames per GatewayBatch")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--room-size", type=int, default=4)
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--size", type=int, default=100, help="padding bytes in each message body")
    ap.add_argument("--flush-every", type=int, default=1,
                    help="processor mode: GatewayBatches per flush (the loop flushes per poll)")
    ap.add_argument("--window", type=int, default=20_000, help="zmq mode: frames in flight")
    ap.add_argument("--transport", choices=TRANSPORTS, default="ipc",
                    help="zmq mode: IPC, loopback TCP, or CURVE over loopback TCP")
    ap.add_argument("--repeat", type=int, default=3, help="runs per level; the best is reported")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = ap.parse_args(argv)
    print(f"processor bench: {args.frames} envelopes, batch {args.batch}, {args.clients} clients "
          f"in rooms of {args.room_size} over {args.gateways} gateways", file=sys.stderr, flush=True)
    w = Workload(args)
    results = []
    for mode in args.modes.split(","):
        fn = {"core": bench_core, "processor": bench_processor, "zmq": bench_zmq,
              "calibrate": bench_calibrate}[mode]
        runs = [fn(w, args) for _ in range(max(1, args.repeat))]
        r = max(runs, key=_per_cpu)  # the box is shared: the least disturbed run
        r["runs"] = [_per_cpu(x) for x in runs]
        results.append(r)
        print(f"  {mode:9s} {r['envelopes_per_s']:>9,} envelopes/s  "
              + "  ".join(f"{k}={v}" for k, v in r.items() if k not in ("mode", "envelopes_per_s")),
              file=sys.stderr, flush=True)
    summary = {"frames": args.frames, "batch": args.batch, "clients": args.clients,
               "room_size": args.room_size, "gateways": args.gateways,
               "transport": args.transport, "results": results}
    print(json.dumps(summary) if args.json else table(summary))
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = [f"processor: {summary['frames']} envelopes (client frames) in GatewayBatches of "
             f"{summary['batch']}, {summary['clients']} clients in rooms of {summary['room_size']} "
             f"over {summary['gateways']} gateways; best of {len(summary['results'][0]['runs'])}",
             f"{'level':10s} {'envelopes/s':>12s} {'per CPU-s':>12s}  notes"]
    for r in summary["results"]:
        notes = {"core": "Mesh routing only", "processor": "decode + route + encode, no sockets",
                 "zmq": f"PUSH -> processor process -> SUB over {r.get('transport')}; "
                        f"{r.get('processor_cpu_s')} CPU-s "
                        f"of the processor process, {r.get('main_thread_cpu_s')} of its routing "
                        f"thread ({r.get('envelopes_per_main_cpu_s') or 0:,}/s on that core)",
                 "calibrate": "yardstick, not meshstream: raw pyzmq PUSH->PULL, 100 B over IPC "
                              "(msg/s; ~1.0M when the issue's targets were set)"}[r["mode"]]
        lines.append(f"{r['mode']:10s} {r['envelopes_per_s']:>12,} {_per_cpu(r):>12,}  {notes}")
    lines.extend(verdict(summary))
    return "\n".join(lines)


TARGET = 250_000  # envelopes per second on one core (the performance issue)


def verdict(summary: dict[str, Any]) -> list[str]:
    """The issue's processor target against this run: the routing work on one core, alone
    (processor level) and in the real process through ZeroMQ (its routing thread; libzmq's
    I/O thread runs beside it). The yardstick says how fast the box was meanwhile."""
    by = {r["mode"]: r for r in summary["results"]}
    lines = []
    if "processor" in by:
        got = _per_cpu(by["processor"])
        lines.append(f"target processor >= {TARGET:,} envelopes/s on one core: processor level "
                     f"{got:,} -> " + ("PASS" if got >= TARGET else "MISS"))
    if "zmq" in by and by["zmq"].get("envelopes_per_main_cpu_s"):
        got = by["zmq"]["envelopes_per_main_cpu_s"]
        stick = by["calibrate"]["envelopes_per_s"] if "calibrate" in by else None
        lines.append(f"target processor >= {TARGET:,} envelopes/s on one core: through ZeroMQ, "
                     f"routing thread {got:,} -> " + ("PASS" if got >= TARGET else "MISS")
                     + (f" (yardstick {stick:,} msg/s this run; ~1,000,000 when the target was set)"
                        if stick else ""))
    return lines


if __name__ == "__main__":
    main()
