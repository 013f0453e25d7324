"""The server API benchmark (issue 19, item 5): publishes through the HTTP API, single and
batched, beside an asyncio watcher publishing the same load; what each costs the gateway.

    python -m bench.api_bench                          # 3 rounds: 20 members, 400 publishes/s, 10 s
    python -m bench.api_bench --rate 800 --members 50
    python -m bench.api_bench --quick                  # 1 round, 5 members, 200/s for 3 s (a smoke test)
    make bench BENCH_ARGS="--scenarios api"            # the same, from bench.run

One `meshstream run --gateways 1 --no-watchers` with an API key (bench.harness.Server: a
free port, a private run directory), started once for all the runs. --members WebSocket
clients in this process join one room and read. Each run publishes --rate messages a
second for --duration seconds to that room, in one of three ways (each message stamped
with the time its call started):

- single: --senders concurrent senders, each over one keep-alive HTTP/1.1 connection (a
  small hand-written client, as a pooled requests.Session uses one), one `POST
  /api/publish` at a time, the next once answered;
- batch: the same, `POST /api/batch` of --batch publishes per call;
- watcher: meshstream_zmq.aio.AsyncWatcher in this process, --senders tasks each awaiting
  its `send_room` (the same frame: action `publish`, sender `meshstream`).

Calls are paced to the rate (a sender late on its schedule goes on at once). After the
load, every delivery is awaited (all arrived, or none for --quiet s): every member is owed
every message once (`lost`, `dups`). Per run: the gateway's and the processor's CPU (utime+
stime from /proc/<pid>/stat, from the first call to the last delivery), publishes per
gateway CPU-second and per processor CPU-second, and the latency from the call to each
member's socket (p50/p99 over all deliveries). The kinds alternate (A B C, C B A, ...: the
box drifts); the summary is the medians over --rounds rounds, and the gateway CPU the API
adds per publish (single and batch minus watcher, per publish). A table on stdout, every
figure in bench-results/api-<time>.json; every process started is stopped. It passes when
every run was measured and none lost or repeated a message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import log, scenario_main
from bench.harness import CACHE, HOST, MESHSTREAM_BENCH_ENV, Server, Target, save
from bench.report import fmt
from bench.resume_bench import quantile
from bench.sampling import CLK_TCK, cpu_ticks
from bench.stuck_gateway_bench import run_loop

DEFAULTS: dict[str, Any] = {"rounds": 3, "members": 20, "rate": 400.0, "duration": 10.0,
                            "senders": 4, "batch": 100, "size": 100}
QUICK = {"rounds": 1, "members": 5, "rate": 200.0, "duration": 3.0}
KINDS = ("single", "batch", "watcher")
ROOM = "api-bench"
KEY = "api-bench-key-0123456789abcdef"  # the cluster's MESHSTREAM_API_KEY (its own, on loopback)


class BenchError(Exception):
    """A run (or the set-up) that could not be measured; recorded, and the bench goes on."""


# ------------------------------------------------------------------ the pure part

@dataclass
class Tally:
    """One run: publishes sent (numbered from 0), what each member got (numbers, in arrival
    order), every delivery's latency, and the calls that failed."""

    members: int = 0
    sent: int = 0
    got: dict[int, list[int]] = field(default_factory=dict)  # member -> n in arrival order
    latency_ms: list[float] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)  # calls not answered 200, by why

    def receive(self, member: int, n: int, latency_ms: float) -> None:
        self.got.setdefault(member, []).append(n)
        self.latency_ms.append(latency_ms)

    @property
    def delivered(self) -> int:
        return len(self.latency_ms)


def account(t: Tally) -> dict[str, Any]:
    """Every member owed every message once: missing ones (`lost`), second copies (`dups`);
    the latency quantiles over all deliveries."""
    lost = dups = 0
    for m in range(t.members):
        ns = t.got.get(m, [])
        lost += t.sent - len({n for n in ns if 0 <= n < t.sent})
        dups += len(ns) - len(set(ns))
    return {"sent": t.sent, "expected": t.sent * t.members, "delivered": t.delivered,
            "lost": lost, "dups": dups, "failed": sum(t.failed.values()),
            "failed_why": dict(sorted(t.failed.items())),
            "p50_ms": quantile(t.latency_ms, 0.5), "p99_ms": quantile(t.latency_ms, 0.99)}


def rates(sent: int, seconds: float, gateway_ticks: int, processor_ticks: int) -> dict[str, Any]:
    """One run's CPU figures from its ticks (CLK_TCK a second)."""
    gw, proc = gateway_ticks / CLK_TCK, processor_ticks / CLK_TCK
    return {"load_s": round(seconds, 2), "rate": round(sent / seconds, 1) if seconds else None,
            "gateway_cpu_s": round(gw, 2), "processor_cpu_s": round(proc, 2),
            "per_gateway_cpu_s": round(sent / gw) if gw else None,
            "per_processor_cpu_s": round(sent / proc) if proc else None}


def run_ok(r: dict[str, Any]) -> bool:
    """Measured, and every message reached every member once (no call failed)."""
    return ("error" not in r and r.get("sent", 0) > 0
            and all(r.get(k) == 0 for k in ("lost", "dups", "failed")))


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return round(statistics.median(vals), 3) if vals else None


def summarize(rounds: list[dict[str, Any]], wanted: int = 0, restarts: int = 0) -> dict[str, Any]:
    """Medians per kind; the gateway CPU (µs) the API adds per publish beside the watcher
    (from the medians of publishes per CPU-second); the verdict. `wanted`: rounds asked for
    (a kind with fewer measured runs fails); `restarts`: children the supervisor restarted."""
    ok = {k: [r for r in rounds if r.get("kind") == k and "error" not in r] for k in KINDS}
    s: dict[str, Any] = {"runs": len(rounds)}
    for kind in KINDS:
        for key in ("per_gateway_cpu_s", "per_processor_cpu_s", "gateway_cpu_s", "rate",
                    "p50_ms", "p99_ms"):
            s[f"{key}_{kind}"] = _median(ok[kind], key)
        s[f"measured_{kind}"] = len(ok[kind])
    base = s["per_gateway_cpu_s_watcher"]
    for kind in ("single", "batch"):
        per = s[f"per_gateway_cpu_s_{kind}"]
        s[f"api_us_{kind}"] = round(1e6 / per - 1e6 / base, 1) if per and base else None
    s["failed_runs"] = sum(not run_ok(r) for r in rounds)
    s["restarts"] = restarts
    short = bool(wanted) and any(s[f"measured_{k}"] < wanted for k in KINDS)
    s["verdict"] = "PASS" if rounds and not (s["failed_runs"] or short or restarts) else "MISS"
    return s


COLUMNS = [("round", "round"), ("kind", "kind"), ("sent", "sent"), ("rate/s", "rate"),
           ("gw_cpu_s", "gateway_cpu_s"), ("pub/gw_cpu_s", "per_gateway_cpu_s"),
           ("proc_cpu_s", "processor_cpu_s"), ("pub/proc_cpu_s", "per_processor_cpu_s"),
           ("p50ms", "p50_ms"), ("p99ms", "p99_ms"), ("lost", "lost"), ("dups", "dups"),
           ("failed", "failed"), ("conns", "connections")]


def table(rounds: list[dict[str, Any]], s: dict[str, Any], opts: dict[str, Any]) -> str:
    rows = [[c for c, _ in COLUMNS]] + [[fmt(r.get(k)) for _, k in COLUMNS] for r in rounds]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"\n== api (1 gateway, {opts['members']} members in one room; {opts['rate']:g} "
             f"publishes/s for {opts['duration']:g} s from {opts['senders']} senders: single "
             f"/api/publish, /api/batch of {opts['batch']}, an asyncio watcher's send_room; "
             f"{opts['rounds']} rounds)"]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for r in rounds:
        if "error" in r:
            lines.append(f"round {r.get('round')} {r.get('kind')}: {r['error']}")
    for kind in KINDS:
        extra = (f"; gateway CPU per publish beyond the watcher's: {s[f'api_us_{kind}']:+g} µs"
                 if kind != "watcher" and s[f"api_us_{kind}"] is not None else "")
        lines.append(f"{kind:>7}: {fmt(s[f'per_gateway_cpu_s_{kind}'])} publishes per gateway "
                     f"CPU-second ({fmt(s[f'per_processor_cpu_s_{kind}'])} per processor "
                     f"CPU-second), call -> member p50 {fmt(s[f'p50_ms_{kind}'])} ms, p99 "
                     f"{fmt(s[f'p99_ms_{kind}'])} ms (medians of {s[f'measured_{kind}']}){extra}")
    lines.append(f"runs failing (lost, repeated, a call failed, not measured): {s['failed_runs']}; "
                 f"children restarted: {s['restarts']}; verdict: {s['verdict']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ the clients

class Member:
    """A WebSocket client in the room: records every publish of the run in the Tally."""

    def __init__(self, ws: Any, idx: int) -> None:
        self.ws, self.idx = ws, idx
        self.tally = Tally()
        self.run = ""
        self.joined = asyncio.Event()
        self.reader = asyncio.create_task(self.read())

    @classmethod
    async def connect(cls, url: str, idx: int) -> Member:
        import websockets

        ws = await websockets.connect(url, max_size=None, compression=None, ping_interval=None,
                                      open_timeout=30, close_timeout=2)
        return cls(ws, idx)

    async def read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        from meshstream_zmq.client import split_frames

        try:
            async for frame in self.ws:
                now = time.monotonic()
                for m in split_frames(str(frame)):
                    body = m.get("message_body") or {}
                    if m.get("action") == "publish" and body.get("r") == self.run:
                        self.tally.receive(self.idx, int(body["n"]), (now - float(body["t"])) * 1000)
                    elif m.get("action") == "client-joined-room" and m.get("target") == ROOM:
                        self.joined.set()
        except ConnectionClosed:
            pass

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to the API, a request at a time; reopened when the
    gateway closes it (its MAX_REQUESTS-th answer), `opened` counting the connections."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.opened = 0
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, document: Any) -> tuple[int, Any]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(HOST, self.port)
            self.opened += 1
        reader, writer = self.streams
        body = json.dumps(document).encode()
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nAuthorization: apikey "
                     f"{KEY}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                     f"\r\n\r\n".encode() + body)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        answer = await reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(head[0].split(" ")[1]), json.loads(answer)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


Send = Callable[[list[dict[str, Any]]], Awaitable[str]]  # bodies -> "" or why the call failed


def api_sender(conn: HttpConnection) -> Send:
    async def send(bodies: list[dict[str, Any]]) -> str:
        if len(bodies) == 1:
            status, answer = await conn.post("/api/publish", {"room": ROOM, "data": bodies[0]})
            return "" if status == 200 else f"{status} {answer.get('error', {}).get('code')}"
        status, answer = await conn.post("/api/batch", {"requests": [
            {"publish": {"room": ROOM, "data": b}} for b in bodies]})
        if status != 200:
            return f"{status} {answer.get('error', {}).get('code')}"
        bad = [r for r in answer["results"] if r["status"] != 200]
        return f"item {bad[0]['status']}" if bad else ""
    return send


def watcher_sender(bot: Any) -> Send:
    from meshstream_zmq import SERVER_SENDER
    from meshstream_zmq.aio import CommandError

    async def send(bodies: list[dict[str, Any]]) -> str:
        try:
            await bot.send_room(ROOM, "publish", bodies[0], sender=SERVER_SENDER)
        except CommandError as exc:
            return exc.code
        return ""
    return send


async def load(sends: list[Send], tally: Tally, run: str, o: argparse.Namespace, per_call: int,
               pad: str) -> float:
    """Every sender in turn takes the next call's messages, on the rate's schedule; the
    seconds from the first call to the last answer, or to the schedule's end if later (the
    last of few batches starts well before it)."""
    total = int(o.rate * o.duration)
    calls = -(-total // per_call)
    period = per_call / o.rate  # between two calls, over all senders
    t0 = time.monotonic()

    async def sender(i: int, send: Send) -> None:
        for c in range(i, calls, len(sends)):
            delay = t0 + c * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the pace (late: at once)
            now = time.monotonic()
            bodies = [{"r": run, "n": n, "t": now, "pad": pad}
                      for n in range(c * per_call, min(total, (c + 1) * per_call))]
            try:
                why = await send(bodies)
            except (OSError, asyncio.IncompleteReadError, KeyError, ValueError) as exc:
                why = type(exc).__name__
            if why:
                tally.failed[why] += 1

    tally.sent = total
    await asyncio.gather(*(sender(i, s) for i, s in enumerate(sends)))
    return max(time.monotonic() - t0, calls * period)


async def settle(tally: Tally, quiet: float, cap: float = 60.0) -> None:
    """Until every member has every message, or no delivery for `quiet` s."""
    t0 = last_change = time.monotonic()
    last = -1
    while time.monotonic() - t0 < cap:
        delivered = tally.delivered
        if delivered >= tally.sent * tally.members:
            return
        if delivered != last:
            last, last_change = delivered, time.monotonic()
        elif time.monotonic() - last_change > quiet:
            return
        await asyncio.sleep(0.05)  # polling counters, with a deadline


# ------------------------------------------------------------------ the runs

def cluster_target(run_dir: str) -> Target:
    return Target("meshstream", [sys.executable, "-m", "services.cli", "run", "--port", "{port}",
                                 "--host", HOST, "--gateways", "1", "--no-watchers",
                                 "--metrics-port", "0", "--run-dir", run_dir],
                  Path(__file__).resolve().parent.parent, "meshstream", "/wsmesh",
                  env={**MESHSTREAM_BENCH_ENV, "MESHSTREAM_API_KEY": KEY})


def api_up(port: int, deadline: float = 30.0) -> None:
    """Until the gateway's API watcher is welcomed (503 before)."""
    end = time.monotonic() + deadline
    while True:
        request = urllib.request.Request(f"http://{HOST}:{port}/api/rooms",
                                         headers={"Authorization": f"apikey {KEY}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > end:
            raise BenchError("the API never reached the processor")
        time.sleep(0.1)  # polling a state, with a deadline


async def one_run(o: argparse.Namespace, kind: str, rnd: int, port: int, pids: dict[str, int],
                  members: list[Member], bot: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"round": rnd, "kind": kind}
    run = f"{kind}-{rnd}"
    tally = Tally(members=len(members))
    for m in members:
        m.tally, m.run = tally, run
    conns = [HttpConnection(port) for _ in range(o.senders)]
    sends = ([watcher_sender(bot)] * o.senders if kind == "watcher"
             else [api_sender(c) for c in conns])
    try:
        before = {name: cpu_ticks(pid) for name, pid in pids.items()}
        seconds = await load(sends, tally, run, o, o.batch if kind == "batch" else 1, "x" * o.size)
        await settle(tally, o.quiet)
        after = {name: cpu_ticks(pid) for name, pid in pids.items()}
        res.update(account(tally))
        res.update(rates(tally.sent, seconds, after["gateway"] - before["gateway"],
                         after["processor"] - before["processor"]))
        res["connections"] = sum(c.opened for c in conns) if kind != "watcher" else None
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, not fatal
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for c in conns:
            c.close()
    return res


async def measure(o: argparse.Namespace, srv: Server, run_dir: str) -> list[dict[str, Any]]:
    from meshstream_zmq.aio import AsyncWatcher
    from meshstream_zmq.config import Config

    names = {name: pid for pid, name in srv.sampler.names.items()}
    if "gateway 1" not in names or "processor" not in names:
        raise BenchError(f"gateway 1 or processor not among {sorted(names)}")
    pids = {"gateway": names["gateway 1"], "processor": names["processor"]}
    members = await asyncio.gather(*(Member.connect(f"ws://{HOST}:{srv.port}/wsmesh", i)
                                     for i in range(o.members)))
    bot = AsyncWatcher("api-bench", config=Config(port=srv.port, run_dir=run_dir))
    rounds: list[dict[str, Any]] = []
    try:
        for m in members:
            await m.ws.send(json.dumps({"action": "join-room", "target": ROOM, "message_body": {}}))
        await asyncio.wait_for(asyncio.gather(*(m.joined.wait() for m in members)), 30)
        await bot.start()
        await bot.wait_welcomed(30)
        for rnd in range(1, o.rounds + 1):
            for kind in KINDS if rnd % 2 else KINDS[::-1]:  # A B C, C B A: the box drifts
                r = await one_run(o, kind, rnd, srv.port, pids, members, bot)
                rounds.append(r)
                log(f"[api r{rnd} {kind}] " + ", ".join(f"{c}={fmt(r.get(k))}" for c, k in COLUMNS[2:])
                    + (f" ERROR {r['error']}" if "error" in r else ""))
                await asyncio.sleep(o.pause)  # a quiet gap between two runs
    finally:
        await bot.close()
        await asyncio.gather(*(m.close() for m in members), return_exceptions=True)
    return rounds


def run_scenario(o: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if o.quick:
        for k, v in QUICK.items():
            if getattr(o, k) == DEFAULTS[k]:
                setattr(o, k, v)
    if o.members < 1 or o.senders < 1 or o.rate <= 0 or o.duration <= 0 or not 1 <= o.batch <= 100:
        raise SystemExit("api: --members, --senders, --rate, --duration must be positive, "
                         "--batch 1 to 100")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    CACHE.mkdir(exist_ok=True)
    opts = {k: getattr(o, k) for k in DEFAULTS}
    results: dict[str, Any] = {"time": stamp, "argv": sys.argv[1:], "nproc": os.cpu_count(),
                               "load": opts, "loadavg_before": os.getloadavg()}
    tmp = tempfile.mkdtemp(prefix="msa-")  # 0700: the run directory
    run_dir = os.path.join(tmp, "run")
    srv = Server(cluster_target(run_dir), CACHE / f"api-{stamp}.cluster.log", 1.0)
    try:
        srv.wait_ready(60)
        api_up(srv.port)
        rounds = run_loop(asyncio.wait_for(measure(o, srv, run_dir), o.deadline))
    except Exception as exc:  # noqa: BLE001 - reported as a failed bench, the cluster stopped
        rounds = [{"round": 0, "kind": "-", "error": f"{type(exc).__name__}: {exc}"}]
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["loadavg_after"] = os.getloadavg()
    results["rounds"] = rounds
    results["summary"] = summarize(rounds, o.rounds, srv.restarts())
    text = table(rounds, results["summary"], opts)
    save(results, f"api-{stamp}")
    return results, text


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.api_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DEFAULTS
    ap.add_argument("--rounds", type=int, default=d["rounds"], help="runs of each kind, alternating (3)")
    ap.add_argument("--members", type=int, default=d["members"], help="WebSocket members of the room (20)")
    ap.add_argument("--rate", type=float, default=d["rate"], help="publishes/s, all senders together (400)")
    ap.add_argument("--duration", type=float, default=d["duration"], help="seconds of load per run (10)")
    ap.add_argument("--senders", type=int, default=d["senders"],
                    help="concurrent senders: keep-alive connections, or watcher tasks (4)")
    ap.add_argument("--batch", type=int, default=d["batch"], help="publishes per /api/batch call (100)")
    ap.add_argument("--size", type=int, default=d["size"], help="padding characters per message (100)")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between two runs")
    ap.add_argument("--quiet", type=float, default=3.0,
                    help="after the load: seconds without a delivery before what is missing is lost")
    ap.add_argument("--quick", action="store_true", help="1 round, 5 members, 200/s for 3 s")
    ap.add_argument("--deadline", type=float, default=900.0, help="hard limit on the whole run, s")
    return ap


def main(argv: list[str] | None = None) -> int:
    return scenario_main(parser, run_scenario, lambda results: results["summary"]["verdict"] == "PASS", argv)


if __name__ == "__main__":
    sys.exit(main())
