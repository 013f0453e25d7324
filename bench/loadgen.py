"""A small Python load generator, used by `make bench` when ../shared/bench (Node) is absent.

Same scenarios, options and output as the shared loadgen.js for the `meshstream`
adapter (fanout | chat | idle; "@@phase" markers on stderr, one JSON line on stdout),
but written with the websockets client, so it saturates long before a server does:
its figures are a smoke test of `make bench`, not a comparison.

    python -m bench.loadgen --scenario chat --ports 8765 --rooms 50 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import websockets

DEFAULTS = {"fanout": {"rooms": 1, "clients": 500}, "chat": {"rooms": 250, "clients": 4},
            "idle": {"rooms": 100}}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def phase(name: str) -> None:
    log(f"@@phase {name} {int(time.time() * 1000)}")


def now_ms() -> float:
    return time.time() * 1000


class Hist:
    def __init__(self) -> None:
        self.v: list[float] = []

    def summary(self) -> dict[str, float]:
        v = sorted(self.v) or [0.0]

        def q(p: float) -> float:
            return round(v[min(len(v) - 1, int(p * len(v)))], 2)

        return {"p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": round(v[-1], 3)}


class Client:
    def __init__(self, room: str, pub: bool = False) -> None:
        self.room, self.pub = room, pub
        self.ws: Any = None
        self.on_deliver: Callable[[float], None] | None = None
        self.joined = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    async def connect(self, url: str) -> None:
        self.ws = await websockets.connect(url, max_size=None, compression=None, ping_interval=None)
        self.task = asyncio.create_task(self.reader())

    async def reader(self) -> None:
        try:
            async for frame in self.ws:
                for line in str(frame).splitlines():
                    try:
                        m = json.loads(line)
                    except ValueError:
                        continue
                    if m.get("action") == "client-joined-room" and not self.joined.done():
                        self.joined.set_result(True)
                    elif m.get("action") == "send-message" and m.get("target") == self.room:
                        body = m.get("message_body") or {}
                        if self.on_deliver and isinstance(body.get("t"), (int, float)):
                            self.on_deliver(body["t"])
        except websockets.ConnectionClosed:
            pass

    async def join(self, timeout: float = 2.0) -> bool:
        await self.ws.send(json.dumps({"action": "join-room", "target": self.room, "message_body": {}}))
        try:
            await asyncio.wait_for(asyncio.shield(self.joined), timeout)
            return True
        except TimeoutError:
            return False

    async def publish(self, n: int, pad: str) -> None:
        await self.ws.send(json.dumps({"action": "send-message", "target": self.room,
                                       "message_body": {"t": now_ms(), "n": n, "pad": pad}}))


async def connect_all(o: argparse.Namespace,
                      specs: list[tuple[str, bool]]) -> tuple[list[Client], dict[str, Any]]:
    phase("connect-start")
    t0 = time.monotonic()
    clients = [Client(room, pub) for room, pub in specs]
    sem = asyncio.Semaphore(64)
    failed = 0

    async def one(i: int, c: Client) -> None:
        nonlocal failed
        async with sem:
            try:
                await c.connect(f"ws://{o.host}:{o.ports[i % len(o.ports)]}{o.path}")
            except Exception:  # noqa: BLE001 - counted
                failed += 1

    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    secs = time.monotonic() - t0
    phase("connect-end")
    ok = [c for c in clients if c.ws is not None]
    log(f"connected {len(ok)}/{len(specs)} in {secs:.2f}s failed={failed}")
    t1 = time.monotonic()
    confirmed = sum(await asyncio.gather(*(c.join() for c in ok)))
    return ok, {"connected": len(ok), "connect_failed": failed, "connect_s": round(secs, 3),
                "connect_rate": round(len(ok) / secs) if secs else 0, "joined": len(ok),
                "joins_confirmed": confirmed, "join_s": round(time.monotonic() - t1, 3)}


async def fanout(o: argparse.Namespace) -> dict[str, Any]:
    specs = [(f"room-{r}", j == 0) for r in range(o.rooms) for j in range(o.clients + 1)]
    clients, info = await connect_all(o, specs)
    await asyncio.sleep(0.3)
    members: dict[str, int] = {}
    for c in clients:
        members[c.room] = members.get(c.room, 0) + 1
    pubs = [c for c in clients if c.pub]
    expected = sum(o.messages * members[p.room] for p in pubs)
    hist, pad = Hist(), "x" * o.size
    state = {"received": 0, "sent": 0, "last": 0.0}
    done = asyncio.get_running_loop().create_future()
    inflight = {id(p): 0 for p in pubs}
    wake = {id(p): asyncio.Event() for p in pubs}

    def make(c: Client):
        def deliver(t: float) -> None:
            tn = now_ms()
            state["received"] += 1
            state["last"] = tn
            hist.v.append(tn - t)
            if c.pub:
                inflight[id(c)] -= 1
                wake[id(c)].set()
            if state["received"] >= expected and not done.done():
                done.set_result(None)
        return deliver

    for c in clients:
        c.on_deliver = make(c)

    async def pump(p: Client) -> None:
        for n in range(o.messages):
            while inflight[id(p)] >= o.window:
                wake[id(p)].clear()
                await wake[id(p)].wait()
            inflight[id(p)] += 1
            state["sent"] += 1
            await p.publish(n, pad)

    phase("measure-start")
    t0 = now_ms()
    pumps = [asyncio.create_task(pump(p)) for p in pubs]
    try:
        await asyncio.wait_for(done, o.timeout)
    except TimeoutError:
        pass
    phase("measure-end")
    for t in pumps:
        t.cancel()
    wall = max(1e-9, ((state["last"] or now_ms()) - t0) / 1000)
    return {"rooms": o.rooms, "clients_per_room": o.clients, "messages": o.messages, **info,
            "sent": state["sent"], "expected": expected, "received": state["received"],
            "lost": expected - state["received"], "wall_s": round(wall, 3),
            "deliveries_per_s": round(state["received"] / wall), **hist.summary()}


async def chat(o: argparse.Namespace) -> dict[str, Any]:
    specs = [(f"room-{r}", False) for r in range(o.rooms) for _ in range(o.clients)]
    clients, info = await connect_all(o, specs)
    await asyncio.sleep(0.3)
    members: dict[str, int] = {}
    for c in clients:
        members[c.room] = members.get(c.room, 0) + 1
    hist, pad = Hist(), "x" * o.size
    st = {"sent": 0, "expected": 0, "received": 0}

    def deliver(t: float) -> None:
        st["received"] += 1
        hist.v.append(now_ms() - t)

    for c in clients:
        c.on_deliver = deliver
    period = 1 / o.rate
    end = time.monotonic() + o.duration

    async def talk(c: Client) -> None:
        await asyncio.sleep(random.random() * period)
        n = 0
        while time.monotonic() < end:
            st["sent"] += 1
            st["expected"] += members[c.room]
            await c.publish(n, pad)
            n += 1
            await asyncio.sleep(period)

    phase("measure-start")
    t0 = time.monotonic()
    await asyncio.gather(*(talk(c) for c in clients))
    drain = time.monotonic() + 10
    while st["received"] < st["expected"] and time.monotonic() < drain:
        await asyncio.sleep(0.02)
    phase("measure-end")
    wall = time.monotonic() - t0
    return {"rooms": o.rooms, "clients_per_room": o.clients, "rate": o.rate, "duration": o.duration,
            **info, **st, "lost": st["expected"] - st["received"], "wall_s": round(wall, 3),
            "deliveries_per_s": round(st["received"] / wall), **hist.summary()}


async def idle(o: argparse.Namespace) -> dict[str, Any]:
    specs = [(f"room-{i % o.rooms}", False) for i in range(o.conns)]
    clients, info = await connect_all(o, specs)
    phase("hold-start")
    await asyncio.sleep(o.hold)
    phase("hold-end")
    return {"conns": o.conns, "rooms": o.rooms, "hold_s": o.hold, **info,
            "still_open": sum(1 for c in clients if c.task is not None and not c.task.done())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=["fanout", "chat", "idle"], required=True)
    ap.add_argument("--adapter", default="meshstream", choices=["meshstream"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--ports", required=True)
    ap.add_argument("--path", default="/wsmesh")
    ap.add_argument("--rooms", type=int)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--rate", type=float, default=2)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--conns", type=int, default=5000)
    ap.add_argument("--hold", type=float, default=5)
    ap.add_argument("--timeout", type=float, default=300)
    o = ap.parse_args()
    o.ports = [int(p) for p in o.ports.split(",")]
    for k, v in DEFAULTS[o.scenario].items():
        if getattr(o, k) is None:
            setattr(o, k, v)
    log(f"loadgen.py {o.scenario} ports={o.ports}")
    fn = {"fanout": fanout, "chat": chat, "idle": idle}[o.scenario]
    try:
        result = asyncio.run(asyncio.wait_for(fn(o), o.timeout + 30))
    except Exception as exc:  # noqa: BLE001 - reported like loadgen.js does
        result = {"error": str(exc)}
    print(json.dumps({"scenario": o.scenario, "adapter": o.adapter, "ports": o.ports, **result}), flush=True)


if __name__ == "__main__":
    main()
