"""The stuck-gateway benchmark (issue 16, item 6): chat through two gateways while a third
gateway stops reading for 30 s; the healthy clients must not notice.

    python -m bench.stuck_gateway_bench                   # 3 rounds: 100 clients, 25 rooms, 30 s
    python -m bench.stuck_gateway_bench --rounds 5 --rate 5
    python -m bench.stuck_gateway_bench --quick           # 1 round, 20 clients, 8 s (a smoke test)
    make bench BENCH_ARGS="--scenarios stuck-gateway"     # the same, from bench.run

Each run starts its own `meshstream run --gateways 2 --no-watchers` (bench.harness.Server:
a free port, a private run directory, metrics on PORT+1000.., the defaults otherwise).
--clients hand-written WebSocket clients in this process, half on each gateway process
(client IDs start gw<index>-), join --rooms rooms, each room with as many members on
either gateway; every client sends a room message --rate times a second (stamped with
its send time) for --duration seconds; then the traffic stops and every message is
awaited (until all arrived, or nothing arrived for --quiet seconds). Every member of a
room is owed every message of that room once and in order, the sender's own copy
included: per receiver and sender, what is missing is `lost`, a second copy a `dup`, an
earlier one after a later one `disorder` (all must be 0). Latency: send -> each receiver.

The two kinds of run alternate, A B B A A B ... (the box drifts, and the first run of a
process is slower), --rounds each; both wait --pause (2) s between the joins and the chat:

- reference: the chat alone;
- stuck: before the chat, tests/integration/stuck_gateway.py, a real process speaking the
  gateway protocol over the real ZeroMQ sockets, says hello with --stuck-members clients
  in every chat room (so it is owed every message), then heartbeats and never reads, for
  --stuck seconds (the chat's length by default).

Per run, from the processor: its longest loop stall since it started (the metric
meshstream_processor_loop_max_seconds, read after the chat), whether it dropped the stuck
gateway (its log line `gateway stalled: dropped` and meshstream_drops_total{reason=
"gateway-stalled"}) and when, its peak RSS (bench.sampling, /proc), and children restarted.

The verdict (medians over the rounds of each kind): the healthy clients' p99 with the stuck
gateway within --p99-ratio (1.5) x the reference's; 0 lost, dup or out of order in every
run; the processor's longest loop stall under --stall-ms (50 ms); the stuck gateway dropped
in every stuck run; no run failed and no child restarted. A table on stdout, every figure
in bench-results/stuck-gateway-<time>.json; every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import REPO, log, scenario_main
from bench.harness import CACHE, HOST, Server, Target, save
from bench.report import fmt
from bench.resume_bench import quantile

STUCK_DEFAULTS: dict[str, Any] = {"rounds": 3, "clients": 100, "rooms": 25, "rate": 2.0,
                                  "duration": 30.0, "stuck": 0.0, "stuck_members": 4, "size": 100}
QUICK = {"rounds": 1, "clients": 20, "rooms": 5, "duration": 8.0}
KINDS = ("reference", "stuck")
GATEWAYS = ("gw1", "gw2")
METRICS_OFFSET = 1000  # `meshstream run` without --metrics-port: the processor's on PORT+1000
LOOP_MAX = "meshstream_processor_loop_max_seconds"
STALLED = ("meshstream_drops_total", (("reason", "gateway-stalled"),))
DROPPED_LINE = '"gateway stalled: dropped"'


class BenchError(Exception):
    """A run (or its set-up) that could not be measured; recorded, and the bench goes on."""


# ------------------------------------------------------------------ the pure part

@dataclass
class Tally:
    """One run's chat: each client's room, what each sender sent (numbered from 0), what
    each receiver got from each sender in arrival order, and every delivery's latency."""

    rooms: dict[int, str] = field(default_factory=dict)  # client -> its room
    sent: Counter[int] = field(default_factory=Counter)  # sender -> messages sent
    got: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (receiver, sender) -> n
    latency_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # error frames, by code
    disconnects: int = 0
    delivered: int = 0

    def receive(self, receiver: int, sender: int, n: int, latency_ms: float) -> None:
        self.got.setdefault((receiver, sender), []).append(n)
        self.latency_ms.append(latency_ms)
        self.delivered += 1

    def expected(self) -> int:
        """Deliveries owed: every message to every member of its room, the sender included."""
        size = Counter(self.rooms.values())
        return sum(n * size[self.rooms[s]] for s, n in self.sent.items())


def account(t: Tally) -> dict[str, Any]:
    """Per receiver and sender of its room, every message expected once, in order: what is
    missing (`lost`), a second copy (`dups`), an earlier n after a later one (`disorder`),
    one from a sender of another room (`strays`); the latency quantiles over all deliveries."""
    members: dict[str, list[int]] = {}
    for client, room in t.rooms.items():
        members.setdefault(room, []).append(client)
    lost = dups = disorder = 0
    losing: set[int] = set()
    for receiver, room in t.rooms.items():
        for sender in members[room]:
            ns = t.got.get((receiver, sender), [])
            distinct = {n for n in ns if 0 <= n < t.sent[sender]}
            missing = t.sent[sender] - len(distinct)
            lost += missing
            if missing:
                losing.add(receiver)
            dups += len(ns) - len(set(ns))
            disorder += sum(1 for a, b in zip(ns, ns[1:], strict=False) if b < a)
    strays = sum(len(ns) for (r, s), ns in t.got.items() if t.rooms.get(r) != t.rooms.get(s))
    return {"sent": sum(t.sent.values()), "expected": t.expected(), "delivered": t.delivered,
            "lost": lost, "receivers_losing": len(losing), "dups": dups, "disorder": disorder,
            "strays": strays, "errors": sum(t.errors.values()), "error_codes": dict(sorted(t.errors.items())),
            "disconnects": t.disconnects,
            "p50_ms": quantile(t.latency_ms, 0.5), "p99_ms": quantile(t.latency_ms, 0.99),
            "max_ms": quantile(t.latency_ms, 1.0)}


def run_ok(r: dict[str, Any]) -> bool:
    """A run that kept every promise but the figures: measured, every message once and in
    order, no error frame or lost connection, no child restarted, and (stuck runs) the
    stuck gateway dropped by the processor."""
    return ("error" not in r and r.get("sent", 0) > 0 and r.get("restarts", 0) == 0
            and all(r.get(k) == 0 for k in ("lost", "dups", "disorder", "strays", "errors", "disconnects"))
            and (r.get("kind") != "stuck" or bool(r.get("dropped"))))


def _median(rounds: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rounds if isinstance(r.get(key), (int, float))]
    return round(statistics.median(vals), 3) if vals else None


def summarize(rounds: list[dict[str, Any]], p99_ratio: float = 1.5, stall_ms: float = 50.0,
              wanted: int = 0) -> dict[str, Any]:
    """Medians per kind, the three targets and the verdict. `wanted`: rounds asked for (a
    kind with fewer measured runs fails)."""
    ok = {k: [r for r in rounds if r.get("kind") == k and "error" not in r] for k in KINDS}
    s: dict[str, Any] = {"runs": len(rounds), "targets": {"p99_ratio": p99_ratio, "stall_ms": stall_ms}}
    for kind in KINDS:
        for key in ("p50_ms", "p99_ms", "max_ms", "loop_max_ms", "rss_peak_mb", "sent", "dropped_after_s"):
            s[f"{key}_{kind}"] = _median(ok[kind], key)
        s[f"measured_{kind}"] = len(ok[kind])
        s[f"lost_{kind}"] = sum(int(r.get("lost", 0)) for r in ok[kind])
        s[f"dups_{kind}"] = sum(int(r.get("dups", 0)) + int(r.get("disorder", 0)) for r in ok[kind])
    s["loop_max_ms_worst"] = max((r["loop_max_ms"] for r in ok["stuck"]
                                  if isinstance(r.get("loop_max_ms"), (int, float))), default=None)
    s["dropped"] = sum(bool(r.get("dropped")) for r in ok["stuck"])
    ref, stuck = s["p99_ms_reference"], s["p99_ms_stuck"]
    s["p99_ratio"] = round(stuck / ref, 2) if ref and stuck is not None else None
    s["p99_pass"] = s["p99_ratio"] is not None and s["p99_ratio"] <= p99_ratio
    s["lost_pass"] = bool(ok["stuck"]) and all(
        r.get(k) == 0 for r in ok["stuck"] for k in ("lost", "dups", "disorder", "strays"))
    stall = s["loop_max_ms_stuck"]
    s["stall_pass"] = stall is not None and stall < stall_ms
    s["dropped_pass"] = bool(ok["stuck"]) and s["dropped"] == len(ok["stuck"])
    s["failed_runs"] = sum(not run_ok(r) for r in rounds)
    short = wanted and any(s[f"measured_{k}"] < wanted for k in KINDS)
    s["verdict"] = "PASS" if (s["p99_pass"] and s["lost_pass"] and s["stall_pass"] and s["dropped_pass"]
                              and not s["failed_runs"] and not short) else "MISS"
    return s


COLUMNS = [("round", "round"), ("kind", "kind"), ("sent", "sent"), ("deliv", "delivered"),
           ("p50ms", "p50_ms"), ("p99ms", "p99_ms"), ("maxms", "max_ms"), ("lost", "lost"),
           ("dups", "dups"), ("disorder", "disorder"), ("errors", "errors"), ("disc", "disconnects"),
           ("loop_ms", "loop_max_ms"), ("dropped", "dropped"), ("drop_s", "dropped_after_s"),
           ("procMB", "rss_peak_mb"), ("restarts", "restarts")]


def table(rounds: list[dict[str, Any]], s: dict[str, Any], opts: dict[str, Any]) -> str:
    rows = [[c for c, _ in COLUMNS]] + [[fmt(r.get(k)) for _, k in COLUMNS] for r in rounds]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    per_room = opts["clients"] // opts["rooms"]
    stuck_s = opts["stuck"] or opts["duration"]
    lines = [f"\n== stuck-gateway ({opts['clients']} clients in {opts['rooms']} rooms of {per_room} on "
             f"2 gateways, {opts['rate']:g} msg/s each for {opts['duration']:g} s; a third gateway "
             f"with {opts['stuck_members']} clients in every room stops reading for {stuck_s:g} s; "
             f"{opts['rounds']} rounds of each kind)"]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for r in rounds:
        if "error" in r:
            lines.append(f"round {r.get('round')} {r.get('kind')}: {r['error']}")
    t = s["targets"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    lines += [
        f"healthy clients' p99: {fmt(s['p99_ms_stuck'])} ms with the stuck gateway, "
        f"{fmt(s['p99_ms_reference'])} ms without (medians): {fmt(s['p99_ratio'])}x "
        f"{'<=' if s['p99_pass'] else '>'} {t['p99_ratio']:g}x {verdict(s['p99_pass'])}; "
        f"p50 {fmt(s['p50_ms_stuck'])} / {fmt(s['p50_ms_reference'])} ms",
        f"lost on the healthy gateways with it: {s['lost_stuck']} (dup or out of order "
        f"{s['dups_stuck']}; without it: {s['lost_reference']} / {s['dups_reference']}) "
        f"{verdict(s['lost_pass'])}",
        f"processor's longest loop stall with it: median {fmt(s['loop_max_ms_stuck'])} ms "
        f"(worst {fmt(s['loop_max_ms_worst'])}; without it {fmt(s['loop_max_ms_reference'])}) "
        f"{'<' if s['stall_pass'] else '>='} {t['stall_ms']:g} ms {verdict(s['stall_pass'])}",
        f"the stuck gateway dropped by the processor: {s['dropped']}/{s['measured_stuck']} runs, "
        f"median {fmt(s['dropped_after_s_stuck'])} s after its hello {verdict(s['dropped_pass'])}",
        f"processor peak RSS: median {fmt(s['rss_peak_mb_stuck'])} MB with it, "
        f"{fmt(s['rss_peak_mb_reference'])} MB without; runs failing a promise: {s['failed_runs']}",
        f"verdict: {s['verdict']}",
    ]
    return "\n".join(lines)


def metric(text: str, name: str, labels: tuple[tuple[str, str], ...] = ()) -> float | None:
    """One sample's value from a Prometheus text page (None if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels):
                return float(sample.value)
    return None


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def dropped_at(log_text: str, gateway: str) -> float | None:
    """The wall-clock `ts` of the processor's `gateway stalled: dropped` line for `gateway`."""
    for line in log_text.splitlines():
        if DROPPED_LINE in line:
            try:
                entry = json.loads(line)
                if entry.get("gateway") == gateway:
                    return float(entry["ts"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not one of its JSON lines
    return None


# ------------------------------------------------------------------ the clients

class Chatter:
    """One healthy client: the hand-written protocol (as bench.resume_client), a room, and
    a reader that records every chat message it receives in the run's Tally."""

    def __init__(self, ws: Any, client_id: str, tally: Tally) -> None:
        self.ws, self.id, self.tally = ws, client_id, tally
        self.idx = -1
        self.room = ""
        self.joined = asyncio.Event()
        self.replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.closing = False  # closed by the bench: not a lost connection

    @property
    def gateway(self) -> str:
        return self.id.partition("-")[0]

    @classmethod
    async def connect(cls, url: str, tally: Tally) -> Chatter:
        import websockets

        ws = await websockets.connect(url, max_size=None, compression=None, ping_interval=None,
                                      open_timeout=30, close_timeout=2)
        first = json.loads(str(await asyncio.wait_for(ws.recv(), 30)).splitlines()[0])
        if first.get("action") != "client-connected":
            await ws.close()
            raise BenchError(f"first frame {str(first.get('action'))[:40]}")
        return cls(ws, str(first.get("target") or first["message_body"]["client"]), tally)

    def start(self, idx: int, room: str) -> None:
        self.idx, self.room = idx, room
        self.tally.rooms[idx] = room
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        from meshstream_zmq.client import split_frames

        try:
            async for frame in self.ws:
                now = time.monotonic()
                for m in split_frames(str(frame)):
                    self.handle(m, now)
        except ConnectionClosed:
            pass
        if not self.closing:
            self.tally.disconnects += 1

    def handle(self, m: dict[str, Any], now: float) -> None:
        action, body = m.get("action"), m.get("message_body") or {}
        if action == "send-message" and m.get("target") == self.room and "t" in body:
            self.tally.receive(self.idx, int(body["c"]), int(body["n"]), (now - float(body["t"])) * 1000)
        elif action == "client-joined-room" and body.get("client") == self.id:
            self.joined.set()
        elif str(m.get("id")) in self.replies:
            self.replies.pop(str(m.get("id"))).set_result(m)
        elif action == "error":
            self.tally.errors[str(body.get("code"))] += 1

    async def request(self, frame: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        rid = f"q{self.idx}-{len(self.replies)}-{time.monotonic_ns()}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        await self.ws.send(json.dumps({**frame, "id": rid}))
        return await asyncio.wait_for(fut, timeout)

    async def chat(self, rate: float, size: int, stop: asyncio.Event) -> None:
        from websockets.exceptions import ConnectionClosed

        period, pad, n = 1 / rate, "x" * size, 0
        await asyncio.sleep(random.random() * period)  # spread the clients over a period
        while not stop.is_set():
            body = {"c": self.idx, "n": n, "t": time.monotonic(), "text": pad}
            try:
                await self.ws.send(json.dumps({"action": "send-message", "target": self.room,
                                               "message_body": body}))
            except ConnectionClosed:
                return
            n += 1
            self.tally.sent[self.idx] = n
            await asyncio.sleep(period * random.uniform(0.9, 1.1))  # the sending pace

    async def close(self) -> None:
        self.closing = True
        await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


async def connect_chatters(url: str, o: argparse.Namespace, tally: Tally) -> list[Chatter]:
    """--clients clients, half on each gateway process (SO_REUSEPORT spreads them at random:
    extras are closed), joined to --rooms rooms so that every room has as many members on
    either gateway."""
    half = o.clients // 2
    by_gw: dict[str, list[Chatter]] = {g: [] for g in GATEWAYS}
    failed: BaseException | None = None
    for attempt in range(10):
        need = sum(max(0, half - len(v)) for v in by_gw.values())
        if not need:
            break
        if failed is not None:
            await asyncio.sleep(0.2 * attempt)  # a gateway not yet welcomed: its upgrade got 503
        got = await asyncio.gather(*(Chatter.connect(url, tally) for _ in range(need)),
                                   return_exceptions=True)
        for c in got:
            if isinstance(c, BaseException):  # e.g. 503 from a gateway not yet welcomed: again
                failed = c
                continue
            bucket = by_gw.get(c.gateway)
            if bucket is not None and len(bucket) < half:
                bucket.append(c)
            else:
                await c.ws.close()
    chatters = [c for g in GATEWAYS for c in by_gw[g]]
    if any(len(v) < half for v in by_gw.values()):
        await asyncio.gather(*(c.close() for c in chatters))
        raise BenchError(f"could not place {half} clients on each gateway: "
                         f"{ {g: len(v) for g, v in by_gw.items()} } (last failure: {failed!r})")
    for g in GATEWAYS:
        for i, c in enumerate(by_gw[g]):
            c.start(len(tally.rooms), f"sg-{i % o.rooms}")
    for c in chatters:
        await c.ws.send(json.dumps({"action": "join-room", "target": c.room, "message_body": {}}))
    try:
        await asyncio.wait_for(asyncio.gather(*(c.joined.wait() for c in chatters)), 30)
    except TimeoutError:
        late = sum(not c.joined.is_set() for c in chatters)
        raise BenchError(f"{late} clients not joined in 30 s") from None
    return chatters


async def stuck_members_listed(chatters: list[Chatter], stuck_id: str, members: int) -> None:
    """Until every room lists the stuck gateway's clients (its hello and the healthy
    gateways' frames come on different pipes: asked again until it has been applied)."""
    by_room = {c.room: c for c in chatters}
    end = time.monotonic() + 30
    todo = set(by_room)
    while todo:
        for room in list(todo):
            reply = await by_room[room].request({"action": "list-members", "target": room,
                                                 "message_body": {"after": "gw9"}})  # gw99-stuck…
            listed = (reply.get("message_body") or {}).get("members") or []
            if sum(str(m).startswith(stuck_id) for m in listed) >= members:
                todo.discard(room)
        if todo and time.monotonic() > end:
            raise BenchError(f"the stuck gateway's clients not in {len(todo)} rooms after 30 s")
        if todo:
            await asyncio.sleep(0.1)  # asked again: the hello is applied soon


async def settle(tally: Tally, quiet: float, cap: float = 60.0) -> float:
    """After the traffic: until every owed delivery arrived, or none for `quiet` s (what is
    missing then is lost). The seconds it took."""
    t0 = time.monotonic()
    last, changed = -1, t0
    while time.monotonic() - t0 < cap and tally.delivered < tally.expected():
        if tally.delivered != last:
            last, changed = tally.delivered, time.monotonic()
        elif time.monotonic() - changed > quiet:
            break
        await asyncio.sleep(0.05)  # polling counters, with a deadline
    return round(time.monotonic() - t0, 2)


# ------------------------------------------------------------------ a run

def cluster_target(run_dir: str, checkout: Path = REPO) -> Target:
    """`meshstream run` (of `checkout`) with 2 gateways and no watchers in `run_dir`; metrics
    on PORT+1000 (processor), +1001, +1002 (gateways): supervisor.children()."""
    return Target("meshstream", [sys.executable, "-m", "services.cli", "run", "--port", "{port}",
                                 "--host", HOST, "--gateways", "2", "--no-watchers", "--run-dir", run_dir],
                  checkout, "meshstream", "/wsmesh", listeners=2, metrics_offset=METRICS_OFFSET,
                  metrics_ports=3)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


async def one_run(o: argparse.Namespace, kind: str, rnd: int, logdir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"round": rnd, "kind": kind}
    tmp = tempfile.mkdtemp(prefix="mss-")  # 0700: the run directory
    run_dir = os.path.join(tmp, "run")
    srv = Server(cluster_target(run_dir, Path(o.checkout).resolve()),
                 logdir / f"{kind}-r{rnd}.cluster.log", 0.2)  # RSS every 200 ms
    tally = Tally()
    chatters: list[Chatter] = []
    stuck: subprocess.Popen[str] | None = None
    try:
        await asyncio.to_thread(srv.wait_ready, 60)
        srv.sampler.start()
        pids = [p for p, name in srv.sampler.names.items() if name == "processor"]
        if len(pids) != 1:
            raise BenchError(f"processor not found among {sorted(srv.sampler.names.values())}")
        processor = pids[0]
        metrics_port = srv.port + METRICS_OFFSET
        url = f"ws://{HOST}:{srv.port}/wsmesh"
        chatters = await connect_chatters(url, o, tally)
        rooms = sorted({c.room for c in chatters})
        if kind == "stuck":
            hello_wall = time.time()
            stuck = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.stuck_gateway", run_dir, ",".join(rooms),
                 str(o.stuck_members), str(o.stuck or o.duration)],
                cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True)
            assert stuck.stdout is not None
            res["stuck_gateway"] = stuck_id = (await asyncio.to_thread(stuck.stdout.readline)).strip()
            if not stuck_id:
                raise BenchError(f"the stuck gateway exited ({stuck.wait()}) before its hello")
            await stuck_members_listed(chatters, stuck_id, o.stuck_members)
        await asyncio.sleep(o.pause)  # a quiet start for both kinds, after the connects and joins
        before = await asyncio.to_thread(scrape, metrics_port)
        res["loop_max_before_ms"] = ms(metric(before, LOOP_MAX))
        stop = asyncio.Event()
        senders = [asyncio.create_task(c.chat(o.rate, o.size, stop)) for c in chatters]
        await asyncio.sleep(o.duration)  # the chat
        stop.set()
        await asyncio.gather(*senders)
        res["settle_s"] = await settle(tally, o.quiet)
        after = await asyncio.to_thread(scrape, metrics_port)
        res["loop_max_ms"] = ms(metric(after, LOOP_MAX))  # None: a processor without it
        res["stalled_drops"] = int(metric(after, *STALLED) or 0)
        res["rss_peak_mb"] = round(srv.sampler.peak.get(processor, 0) / 1024, 1)
        if kind == "stuck":
            at = dropped_at(Path(srv.logf.name).read_text(errors="replace"), res["stuck_gateway"])
            res["dropped"] = at is not None and res["stalled_drops"] >= 1
            res["dropped_after_s"] = round(at - hello_wall, 2) if at is not None else None
        res.update(account(tally))
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, not fatal
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await asyncio.gather(*(c.close() for c in chatters), return_exceptions=True)
        if stuck is not None:
            stuck.kill()
            stuck.wait()
        await asyncio.to_thread(srv.stop)
        shutil.rmtree(tmp, ignore_errors=True)
    res["restarts"] = srv.restarts()
    return res


async def measure(o: argparse.Namespace, logdir: Path) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = []
    for rnd in range(1, o.rounds + 1):
        # alternating, in the order A B B A A B ...: the box drifts, and a run's place counts
        for kind in KINDS if rnd % 2 else KINDS[::-1]:
            r = await one_run(o, kind, rnd, logdir)
            rounds.append(r)
            log(f"[stuck-gateway r{rnd} {kind}] " + ", ".join(f"{c}={fmt(r.get(k))}" for c, k in COLUMNS[2:])
                + (f" ERROR {r['error']}" if "error" in r else ""))
    return rounds


def run_loop(coro: Any) -> Any:
    """asyncio.run, on uvloop when there is one (the clients' own latency, as resume_client)."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def run_scenario(o: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if o.quick:
        for k, v in QUICK.items():
            if getattr(o, k) == STUCK_DEFAULTS[k]:
                setattr(o, k, v)
    if o.clients < 4 or o.clients % 2 or o.rooms < 1 or o.clients // 2 < o.rooms:
        raise SystemExit("stuck-gateway: --clients must be even and at least 2 x --rooms")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = CACHE / "logs" / f"stuck-gateway-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    opts = {k: getattr(o, k) for k in STUCK_DEFAULTS}
    results: dict[str, Any] = {"time": stamp, "argv": sys.argv[1:], "nproc": os.cpu_count(),
                               "load": opts, "checkout": str(Path(o.checkout).resolve()),
                               "logs": str(logdir)}
    try:
        rounds = run_loop(asyncio.wait_for(measure(o, logdir), o.deadline))
    except TimeoutError as exc:
        rounds = [{"round": 0, "kind": "-", "error": f"deadline: {exc}"}]
    results["rounds"] = rounds
    results["summary"] = summarize(rounds, o.p99_ratio, o.stall_ms, o.rounds)
    text = table(rounds, results["summary"], opts)
    if Path(o.checkout).resolve() != REPO:
        text += f"\n(meshstream run of {results['checkout']})"
    save(results, f"stuck-gateway-{stamp}")
    return results, text


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.stuck_gateway_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = STUCK_DEFAULTS
    ap.add_argument("--rounds", type=int, default=d["rounds"], help="runs of each kind, alternating (3)")
    ap.add_argument("--clients", type=int, default=d["clients"],
                    help="healthy clients, half on each gateway (100)")
    ap.add_argument("--rooms", type=int, default=d["rooms"], help="chat rooms (25)")
    ap.add_argument("--rate", type=float, default=d["rate"], help="room messages/s per client (2)")
    ap.add_argument("--duration", type=float, default=d["duration"], help="seconds of chat per run (30)")
    ap.add_argument("--stuck", type=float, default=d["stuck"],
                    help="seconds the stuck gateway lives without reading (0: --duration)")
    ap.add_argument("--stuck-members", type=int, default=d["stuck_members"],
                    help="the stuck gateway's clients, each in every room (4)")
    ap.add_argument("--size", type=int, default=d["size"], help="padding characters per message (100)")
    ap.add_argument("--pause", type=float, default=2.0,
                    help="seconds between the last join (and the stuck gateway's hello) and the chat")
    ap.add_argument("--quiet", type=float, default=3.0,
                    help="after the chat: seconds without a delivery before what is missing counts as lost")
    ap.add_argument("--p99-ratio", type=float, default=1.5, help="target: p99 with / without (1.5)")
    ap.add_argument("--stall-ms", type=float, default=50.0, help="target: the processor's longest loop stall")
    ap.add_argument("--checkout", default=str(REPO),
                    help="the meshstream checkout whose `meshstream run` is measured (e.g. a `git "
                         "worktree` of main, for an A/B; the stuck gateway is always this one's)")
    ap.add_argument("--quick", action="store_true", help="1 round, 20 clients in 5 rooms, 8 s")
    ap.add_argument("--deadline", type=float, default=900.0, help="hard limit on the whole run, s")
    return ap


def main(argv: list[str] | None = None) -> int:
    return scenario_main(parser, run_scenario, lambda results: results["summary"]["verdict"] == "PASS", argv)


if __name__ == "__main__":
    sys.exit(main())
