"""The pipeline's floor: CPU per message of a bare PUSH -> PULL -> PUB -> SUB round trip.

    python -m bench.pipeline_floor                  # 2,000 msg/s for 4 s, 100-byte messages
    python -m bench.pipeline_floor --repeat 3 --json

Two Python processes and nothing of meshstream: process A (this one) PUSHes one message
to process B and SUBscribes to B; B PULLs it and PUBlishes it back. One message is in
flight at a time, sent at --rate msg/s (paced by a deadline per message, so sleeping
late does not drift the rate), as in `chat`, where nothing batches. Both sockets of B
bind and A connects, over IPC in a private temporary directory, as the gateways connect
to the processor.

The figure is the CPU (utime+stime from /proc, all threads: ZeroMQ's I/O threads
included) of both processes between the first send and the last reply, per message:
what one chat message must cost meshstream at least for its two hops (gateway ->
processor -> gateway) before any WebSocket or routing work. `make bench` prints it
beside the chat figures; `floor + raw_ws's CPU per chat message` is then what a
meshstream message would cost if the gateway did the websocket work as cheaply as
the single-process server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

import zmq

from bench import log
from bench.sampling import CLK_TCK, cpu_ticks

READY_TIMEOUT_S = 10.0  # B binding, A's SUB joining (slow joiner)
REPLY_TIMEOUT_MS = 1000  # a reply later than this counts as lost
STOP = b"stop"


def echo(directory: str) -> None:
    """Process B: PULL, PUB back. Exits on STOP, when its parent is gone, or after 60 s idle."""
    parent = os.getppid()
    ctx = zmq.Context()
    pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
    pull.bind(f"ipc://{directory}/in")
    pub.bind(f"ipc://{directory}/out")
    print("ready", flush=True)
    idle = 0.0
    try:
        while idle < 60 and os.getppid() == parent:
            if not pull.poll(1000):
                idle += 1
                continue
            idle = 0.0
            msg = pull.recv()
            if msg == STOP:
                break
            pub.send(msg)
    finally:
        pull.close(linger=0)
        pub.close(linger=0)
        ctx.term()


class Pipeline:
    """Process A's side: B started in a private directory, A's PUSH and SUB connected to it."""

    def __init__(self, size: int) -> None:
        self.size = max(size, 8)
        self.tmp = tempfile.TemporaryDirectory(prefix="msfloor-")
        self.b = subprocess.Popen([sys.executable, "-m", "bench.pipeline_floor", "--echo", self.tmp.name],
                                  stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.ctx = zmq.Context()
        self.push, self.sub = self.ctx.socket(zmq.PUSH), self.ctx.socket(zmq.SUB)
        for s in (self.push, self.sub):
            s.setsockopt(zmq.LINGER, 0)
        self.seq = 0

    def connect(self) -> None:
        assert self.b.stdout is not None
        if self.b.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the echo process did not start (exit {self.b.poll()})")
        self.push.connect(f"ipc://{self.tmp.name}/in")
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(f"ipc://{self.tmp.name}/out")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:  # until the SUB gets what it sends (slow joiner)
            if self.round_trip(100) is not None:
                return
        raise RuntimeError("no message came back from the echo process")

    def round_trip(self, timeout_ms: int = REPLY_TIMEOUT_MS) -> float | None:
        """Send one message, wait for it to come back: seconds, or None when it did not."""
        self.seq += 1
        msg = struct.pack("<Q", self.seq) + b"x" * (self.size - 8)
        t = time.perf_counter()
        self.push.send(msg)
        end = t + timeout_ms / 1000
        while (left := end - time.perf_counter()) > 0:
            if not self.sub.poll(max(1, int(left * 1000))):
                break
            reply = self.sub.recv()
            if struct.unpack_from("<Q", reply)[0] == self.seq:  # not a late reply to a lost one
                return time.perf_counter() - t
        return None

    def ticks(self) -> tuple[int, int]:
        return cpu_ticks(os.getpid()), cpu_ticks(self.b.pid)

    def close(self) -> None:
        try:
            if self.b.poll() is None:
                self.push.send(STOP, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        self.push.close(linger=200)
        self.sub.close(linger=0)
        self.ctx.term()
        try:
            self.b.wait(5)
        except subprocess.TimeoutExpired:
            self.b.kill()
            self.b.wait()
        if self.b.stdout:
            self.b.stdout.close()
        self.tmp.cleanup()


def measure(p: Pipeline, rate: float, duration: float) -> dict[str, Any]:
    """rate x duration round trips, paced by deadline; CPU of both processes per message."""
    n = max(1, int(rate * duration))
    period = 1.0 / rate
    rtts: list[float] = []
    lost = 0
    late = 0.0  # the furthest a send fell behind its deadline
    a0, b0 = p.ticks()
    t0 = time.perf_counter()
    stop_at = t0 + 2 * duration + 5  # bounded even when every reply is late
    for i in range(n):
        deadline = t0 + i * period
        now = time.perf_counter()
        if now < deadline:
            time.sleep(deadline - now)
        else:
            late = max(late, now - deadline)
        rtt = p.round_trip()
        if rtt is None:
            lost += 1
            if p.b.poll() is not None:
                raise RuntimeError(f"the echo process exited ({p.b.returncode})")
        else:
            rtts.append(rtt)
        if time.perf_counter() > stop_at:
            n = i + 1
            break
    wall = time.perf_counter() - t0
    a1, b1 = p.ticks()
    a_s, b_s = (a1 - a0) / CLK_TCK, (b1 - b0) / CLK_TCK
    rtts.sort()

    def pct(q: float) -> float | None:
        return round(rtts[min(len(rtts) - 1, int(q * len(rtts)))] * 1e6) if rtts else None

    return {"messages": n, "lost": lost, "wall_s": round(wall, 3), "rate": round(n / wall),
            "cpu_us_per_msg": round((a_s + b_s) * 1e6 / n, 1),
            "a_cpu_us_per_msg": round(a_s * 1e6 / n, 1), "b_cpu_us_per_msg": round(b_s * 1e6 / n, 1),
            "cpu_s": round(a_s + b_s, 2), "rtt_p50_us": pct(0.5), "rtt_p99_us": pct(0.99),
            "max_behind_ms": round(late * 1000, 2)}


def run(rate: float = 2000, duration: float = 4.0, size: int = 100, repeat: int = 1) -> dict[str, Any]:
    """`repeat` measurements with one pair of processes; the median's figures, and all runs."""
    p = Pipeline(size)
    try:
        p.connect()
        for _ in range(min(500, int(rate))):  # warm up (allocations, page faults) off the clock
            p.round_trip()
        runs = []
        for i in range(max(1, repeat)):
            runs.append(measure(p, rate, duration))
            log(f"  floor run {i + 1}: " + ", ".join(f"{k}={v}" for k, v in runs[-1].items()))
    finally:
        p.close()
    mid = sorted(runs, key=lambda r: r["cpu_us_per_msg"])[(len(runs) - 1) // 2]
    return {**mid, "target_rate": rate, "duration_s": duration, "size": size,
            "runs": [r["cpu_us_per_msg"] for r in runs],
            "median_cpu_us_per_msg": statistics.median(r["cpu_us_per_msg"] for r in runs)}


def describe(r: dict[str, Any]) -> str:
    return (f"pipeline floor: {r['median_cpu_us_per_msg']:.0f} us CPU per message "
            f"(A {r['a_cpu_us_per_msg']:.0f} + B {r['b_cpu_us_per_msg']:.0f}): bare PUSH -> PULL -> PUB -> "
            f"SUB round trip over IPC, 2 Python processes, {r['size']} B, one at a time at "
            f"{r['rate']} msg/s (asked {r['target_rate']:.0f}) for {r['wall_s']:.1f} s; "
            f"rtt p50 {r['rtt_p50_us']} us p99 {r['rtt_p99_us']} us, {r['lost']} lost"
            + (f"; runs {r['runs']}" if len(r["runs"]) > 1 else ""))


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(prog="python -m bench.pipeline_floor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2000, help="messages per second")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    ap.add_argument("--size", type=int, default=100, help="bytes per message")
    ap.add_argument("--repeat", type=int, default=1, help="measurements; the median is reported")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a sentence")
    ap.add_argument("--echo", metavar="DIR", help=argparse.SUPPRESS)  # process B
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (child, temp dir) when stopped
    if args.echo:
        echo(args.echo)
        return None
    r = run(args.rate, args.duration, args.size, args.repeat)
    print(json.dumps(r) if args.json else describe(r), flush=True)
    return r


if __name__ == "__main__":
    main()
