"""The failover benchmark (issue 11): the active processor of a primary/backup pair
SIGKILLed under chat traffic; how long until the room works again, as a client sees it.

    python -m bench.failover_bench                        # 5 rounds, --failover-timeout 2
    python -m bench.failover_bench --failover-timeout 1.0 # the timeout is configurable
    python -m bench.failover_bench --quick                # 2 rounds, shorter phases (a smoke test)
    make bench BENCH_ARGS="--scenarios failover"          # the same, from bench.run

It starts, on loopback TCP with private run directories and free ports, the pair
(`meshstream processor --tcp 127.0.0.1:P --peer 127.0.0.1:Q`, and the same with P and Q
swapped plus `--backup`) and `meshstream run --no-processor --no-watchers --gateways 2
--tcp 127.0.0.1:P --peer 127.0.0.1:Q`; every process gets --failover-timeout. Two clients
(meshstream_zmq.client), one on each gateway process, join a room and each sends a room
message every --interval (20 ms) as a request (its answer: its own copy, or an error with
its id). Each round:

1. --steady seconds of traffic through the active processor;
2. SIGKILL the active processor (found from the processors' own logs);
3. traffic goes on until a message sent after the kill has reached the *other* gateway's
   client in both directions (that time is the takeover as a client sees it: the later of
   the two directions), then --after seconds more;
4. the traffic stops and every request is awaited: each must get its echo or an error
   (processor-unavailable / processor-restarted) within --answer-deadline; one that
   gets neither is `unanswered` (must be 0), and so are connections lost (`reconnects`);
5. the killed processor is started again with its own flags and must log "processor
   passive" (no failback): the next round kills the other one, so rounds alternate.

The verdict compares the median and the max of the takeover over the rounds with the
failover timeout (the issue's "within 2 s by default"). The breakdown comes from the new
active processor's log line "processor active" (its wall-clock `ts`): the kill -> the
standby active (the gateways' silence detection, half the failover timeout, then their
hello) -> the first delivery (the gateways' hellos rebuild the rooms). A table on stdout,
every figure in bench-results/failover-<time>.json; every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import REPO, log, scenario_main
from bench.harness import CACHE, HOST, free_port, save, ws_upgrade_ok
from bench.sampling import alive, tree

FAILOVER_DEFAULTS: dict[str, Any] = {"rounds": 5, "failover_timeout": 2.0, "interval": 0.02,
                                     "steady": 2.0, "after": 1.0, "answer_deadline": 10.0}
QUICK = {"rounds": 2, "steady": 1.0, "after": 0.5}
OUTAGE = ("processor-unavailable", "processor-restarted")  # the answers a failover may give
ROOM = "failover-bench"
ROLES = ("primary", "backup")


class BenchError(Exception):
    """A round (or the set-up) that could not be measured; recorded, and the run goes on."""


# ------------------------------------------------------------------ the pure part

@dataclass
class Traffic:
    """One round's frames: when each was sent, how it was answered, when it was received."""

    sent: dict[tuple[str, int], float] = field(default_factory=dict)  # (sender, n) -> monotonic
    answers: dict[tuple[str, int], str] = field(default_factory=dict)  # "echo", an error code, …
    received: list[tuple[str, str, int, float]] = field(default_factory=list)  # (by, from, n, at)
    # the same, as the frames came off the socket, before the client library's seq check
    wire: list[tuple[str, str, int, float]] = field(default_factory=list)
    dropped: int = 0  # frames the library dropped as already received (a seq not above the last)


def takeover(traffic: Traffic, dead: float, killed: float,
             wire: bool = False) -> dict[str, float | None]:
    """Per sender: seconds from `killed` until the first message it sent at or after `dead`
    (the processor surely gone) reached another client (`wire`: its socket, whatever the
    client library then did with it); None if none did."""
    first: dict[str, float | None] = {s: None for s, _ in traffic.sent}
    for _by, sender, n, at in traffic.wire if wire else traffic.received:
        sent = traffic.sent.get((sender, n))
        if sent is None or sent < dead:
            continue
        took = at - killed
        best = first.get(sender)
        if best is None or took < best:
            first[sender] = took
    return first


def account(traffic: Traffic) -> dict[str, Any]:
    """How the round's frames were answered: echoes, errors by code, and the frames that got
    nothing (`unanswered`: no answer within the deadline, or the connection lost first)."""
    codes = Counter(traffic.answers.get(key, "unanswered") for key in traffic.sent)
    echoes = codes.pop("echo", 0)
    unanswered = codes.pop("unanswered", 0) + codes.pop("connection-lost", 0)
    return {"sent": len(traffic.sent), "echoes": echoes, "errors": sum(codes.values()),
            "error_codes": dict(sorted(codes.items())), "unanswered": unanswered,
            "delivered": len(traffic.received), "dropped_as_seen": traffic.dropped}


def window(traffic: Traffic, killed: float) -> dict[str, list[float]]:
    """Per sender: when (seconds from the kill) its first and last unanswered frame was sent."""
    out: dict[str, list[float]] = {}
    for (sender, n), at in traffic.sent.items():
        if traffic.answers.get((sender, n), "unanswered") in ("unanswered", "connection-lost"):
            w = out.setdefault(sender, [at - killed, at - killed])
            w[0], w[1] = min(w[0], at - killed), max(w[1], at - killed)
    return {k: [round(a, 3), round(b, 3)] for k, (a, b) in sorted(out.items())}


def round_ok(r: dict[str, Any]) -> bool:
    """A round that kept every promise but the time: measured, nothing unanswered, no
    reconnects, only outage errors, and the killed processor back as the standby."""
    return ("error" not in r and r.get("takeover_s") is not None and r.get("unanswered") == 0
            and r.get("reconnects") == 0 and r.get("came_back") == "passive"
            and all(code in OUTAGE for code in r.get("error_codes", {})))


def summarize(rounds: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Median and max of the takeover over the measured rounds against `target` (seconds)."""
    took = [r["takeover_s"] for r in rounds if r.get("takeover_s") is not None]
    s: dict[str, Any] = {"rounds": len(rounds), "measured": len(took), "target_s": target,
                         "killed": dict(Counter(r.get("killed", "?") for r in rounds))}
    for key in ("takeover_s", "wire_takeover_s", "active_s", "resync_s", "first_answer_s"):
        vals = [r[key] for r in rounds if isinstance(r.get(key), (int, float))]
        s[f"{key.removesuffix('_s')}_median_s"] = round(statistics.median(vals), 3) if vals else None
        s[f"{key.removesuffix('_s')}_max_s"] = round(max(vals), 3) if vals else None
    for key in ("sent", "errors", "unanswered", "reconnects", "dropped_as_seen"):
        s[key] = sum(int(r.get(key, 0)) for r in rounds)
    s["failed_rounds"] = sum(not round_ok(r) for r in rounds)
    median, worst = s["takeover_median_s"], s["takeover_max_s"]
    s["median_pass"] = median is not None and median <= target
    s["max_pass"] = worst is not None and worst <= target and len(took) == len(rounds)
    s["verdict"] = "PASS" if s["median_pass"] and s["max_pass"] and not s["failed_rounds"] else "FAIL"
    return s


def fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, dict):
        return ",".join(f"{k}:{n}" for k, n in v.items()) or "-"
    return str(v)


COLUMNS = [("round", "round"), ("killed", "killed"), ("takeover_s", "takeover_s"),
           ("wire_s", "wire_takeover_s"), ("active_s", "active_s"), ("resync_s", "resync_s"),
           ("1st_answer_s", "first_answer_s"),
           ("sent", "sent"), ("errors", "error_codes"), ("unanswered", "unanswered"),
           ("dropped", "dropped_as_seen"), ("reconnects", "reconnects"), ("back", "came_back")]


def table(rounds: list[dict[str, Any]], s: dict[str, Any], opts: dict[str, Any]) -> str:
    rows = [[c for c, _ in COLUMNS]]
    for r in rounds:
        rows.append([fmt(r.get(k)) for _, k in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"\n== failover (--failover-timeout {opts['failover_timeout']:g}, {s['rounds']} rounds, "
             f"2 clients on 2 gateways, a room message every {opts['interval'] * 1000:g} ms each)"]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for r in rounds:
        if "error" in r:
            lines.append(f"round {r.get('round')}: {r['error']}")
    t = s["target_s"]
    lines += [
        f"takeover (kill -> a message sent after it reaches the other gateway's client): "
        f"median {fmt(s['takeover_median_s'])} s {'<=' if s['median_pass'] else '>'} {t:g} s "
        f"{'PASS' if s['median_pass'] else 'FAIL'}; max {fmt(s['takeover_max_s'])} s "
        f"{'<=' if s['max_pass'] else '>'} {t:g} s {'PASS' if s['max_pass'] else 'FAIL'} "
        f"({s['measured']}/{s['rounds']} rounds measured)",
        f"  of which: the standby active after median {fmt(s['active_median_s'])} s (silence "
        f"detection {t / 2:g} s, then a hello), the rooms back median {fmt(s['resync_median_s'])} s "
        f"later; the sender's first answer after median {fmt(s['first_answer_median_s'])} s",
        f"  on the socket (before the client library's seq check): median "
        f"{fmt(s['wire_takeover_median_s'])} s, max {fmt(s['wire_takeover_max_s'])} s; frames the "
        f"library dropped as already seen: {s['dropped_as_seen']}",
        f"frames: {s['sent']} sent, {s['errors']} answered with an error, {s['unanswered']} "
        f"unanswered; reconnects {s['reconnects']}; rounds failing a promise: {s['failed_rounds']}",
        f"verdict: {s['verdict']}",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ the processes

class Proc:
    """A meshstream command in its own session, logging to a file."""

    def __init__(self, logf: Path, args: list[str]) -> None:
        self.logf = logf
        with open(logf, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", *args], cwd=REPO,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def text(self) -> str:
        try:
            return self.logf.read_text(errors="replace")
        except OSError:
            return ""

    def state(self) -> str:
        """The last of "active"/"passive" this processor logged ("" before either)."""
        last = ""
        for line in self.text().splitlines():
            if '"processor active"' in line:
                last = "active"
            elif '"processor passive' in line:
                last = "passive"
        return last

    def became_active_at(self) -> float | None:
        """The wall-clock `ts` of its last "processor active" line."""
        at = None
        for line in self.text().splitlines():
            if '"processor active"' in line:
                try:
                    at = float(json.loads(line)["ts"])
                except (ValueError, KeyError):
                    pass
        return at

    def stop(self) -> None:
        """SIGTERM to its session (itself and any child), then SIGKILL."""
        pids = tree(self.proc.pid) | {self.proc.pid}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                continue
            end = time.monotonic() + 5
            while time.monotonic() < end and any(alive(p) for p in pids):
                time.sleep(0.05)
            if not any(alive(p) for p in pids):
                return


class PairCluster:
    """The pair and the gateways on loopback, in a private directory."""

    def __init__(self, o: argparse.Namespace, logdir: Path) -> None:
        self.o = o
        self.logdir = logdir
        self.tmp = Path(tempfile.mkdtemp(prefix="msf-"))  # 0700: the run directories
        self.ports = {"primary": free_port((1, 2, 3)), "backup": 0}
        while not self.ports["backup"] or abs(self.ports["backup"] - self.ports["primary"]) < 4:
            self.ports["backup"] = free_port((1, 2, 3))
        self.ws_port = free_port()
        while abs(self.ws_port - self.ports["primary"]) < 4 or abs(self.ws_port - self.ports["backup"]) < 4:
            self.ws_port = free_port()
        self.url = f"ws://{HOST}:{self.ws_port}/wsmesh"
        self.procs: dict[str, Proc] = {}
        self.starts = Counter[str]()
        self.gateways: Proc | None = None
        self.killed: Proc | None = None  # SIGKILLed and not yet replaced: its exit is expected

    def common(self) -> list[str]:
        return ["--metrics-port", "0", "--failover-timeout", str(self.o.failover_timeout)]

    def start_processor(self, role: str) -> Proc:
        other = "backup" if role == "primary" else "primary"
        self.starts[role] += 1
        name = f"{role}-{self.starts[role]}"
        args = ["processor", "--tcp", f"{HOST}:{self.ports[role]}", "--peer",
                f"{HOST}:{self.ports[other]}", "--run-dir", str(self.tmp / f"{name}-run"),
                *self.common()] + (["--backup"] if role == "backup" else [])
        self.procs[role] = Proc(self.logdir / f"{name}.log", args)
        return self.procs[role]

    def start(self) -> None:
        for role in ROLES:
            self.start_processor(role)
        self.gateways = Proc(self.logdir / "gateways.log", [
            "run", "--no-processor", "--no-watchers", "--gateways", "2", "--host", HOST,
            "--port", str(self.ws_port), "--run-dir", str(self.tmp / "gw-run"),
            "--tcp", f"{HOST}:{self.ports['primary']}", "--peer", f"{HOST}:{self.ports['backup']}",
            *self.common()])

    async def until(self, cond: Any, what: str, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while not cond():
            for p in [*self.procs.values(), self.gateways]:
                if p is not None and p.proc.poll() is not None and p is not self.killed:
                    raise BenchError(f"{p.logf.name}: exited {p.proc.returncode} while waiting for {what}")
            if time.monotonic() > end:
                raise BenchError(f"timed out after {timeout:g} s waiting for {what} (logs in {self.logdir})")
            await asyncio.sleep(0.05)  # polling logs and a port, with a deadline

    def active(self) -> str:
        """The one role whose processor says it is active (and the other passive), else ""."""
        states = {role: p.state() for role, p in self.procs.items()}
        live = [r for r in ROLES if states.get(r) == "active" and self.procs[r].proc.poll() is None]
        return live[0] if len(live) == 1 and "passive" in states.values() else ""

    def stop(self) -> None:
        for p in [self.gateways, *self.procs.values()]:
            if p is not None:
                p.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------ the clients

class Probe:
    """One client (meshstream_zmq.client) that sends a numbered room message every interval
    as a request, and records what it receives and how its connection fares."""

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self.client = client
        self.events: Counter[str] = Counter()
        self.traffic = Traffic()
        self.pending: set[asyncio.Task[None]] = set()
        self.answered_at: dict[int, float] = {}  # n -> when its answer came
        self.reader = asyncio.create_task(self.read())
        # Instrumentation: what arrives on the socket, before the library's seq check.
        accept = client.session.accept

        def seen(frame: dict[str, Any]) -> bool:
            ok = bool(accept(frame))
            body = frame.get("message_body")
            if isinstance(body, dict) and frame.get("action") == "chat" and body.get("from") != self.name:
                self.traffic.wire.append((self.name, str(body.get("from")), int(body.get("n", 0)),
                                          time.monotonic()))
            if not ok:
                self.traffic.dropped += 1
            return ok

        setattr(client.session, "accept", seen)  # noqa: B010 - an instance's method, wrapped

    async def read(self) -> None:
        from meshstream_zmq.client import Connected, Message

        greeted = False
        async for event in self.client:
            if isinstance(event, Connected) and not greeted:
                greeted = True  # the first connection's, read after the round may have begun
            elif isinstance(event, Message):
                body = event.body
                if event.action == "chat" and body.get("from") not in (None, self.name):
                    self.traffic.received.append((self.name, str(body["from"]), int(body["n"]),
                                                  time.monotonic()))
            else:
                self.events[type(event).__name__] += 1

    async def ask(self, n: int, deadline: float) -> None:
        from meshstream_zmq.client import ConnectionLost, RequestError

        key = (self.name, n)
        try:
            await self.client.request("chat", ROOM, {"from": self.name, "n": n}, timeout=deadline)
            self.traffic.answers[key] = "echo"
        except RequestError as exc:
            self.traffic.answers[key] = exc.code
        except TimeoutError:
            self.traffic.answers[key] = "unanswered"
        except ConnectionLost:
            self.traffic.answers[key] = "connection-lost"
        self.answered_at.setdefault(n, time.monotonic())

    async def send(self, interval: float, deadline: float, stop: asyncio.Event) -> None:
        self.answered_at = {}
        n = 0
        due = time.monotonic()
        while not stop.is_set():
            n += 1
            self.traffic.sent[(self.name, n)] = time.monotonic()
            task = asyncio.create_task(self.ask(n, deadline))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # the sending pace

    def reconnects(self) -> int:
        return sum(self.events[k] for k in ("Disconnected", "Reconnecting", "Resumed", "Connected"))


async def connect_probes(url: str) -> list[Probe]:
    """Two clients, one on each gateway process (client IDs start gw<index>-)."""
    from meshstream_zmq.client import Client

    by_gateway: dict[str, Any] = {}
    extra = []
    for _ in range(50):
        c = await Client.connect(url, request_timeout=30)
        gw = c.id.partition("-")[0]
        if gw in by_gateway:
            extra.append(c)
        else:
            by_gateway[gw] = c
        if len(by_gateway) == 2:
            break
    for c in extra:
        await c.close()
    if len(by_gateway) < 2:
        for c in by_gateway.values():
            await c.close()
        raise BenchError("could not place a client on each of the 2 gateway processes")
    probes = []
    for gw, c in sorted(by_gateway.items()):
        await c.join(ROOM)
        probes.append(Probe(gw, c))
    return probes


# ------------------------------------------------------------------ a round

async def one_round(o: argparse.Namespace, cluster: PairCluster, probes: list[Probe],
                    rnd: int) -> dict[str, Any]:
    res: dict[str, Any] = {"round": rnd}
    for p in probes:
        p.traffic = Traffic()
    before = {p.name: p.reconnects() for p in probes}
    before_events = {p.name: Counter(p.events) for p in probes}
    stop = asyncio.Event()
    senders = [asyncio.create_task(p.send(o.interval, o.answer_deadline, stop)) for p in probes]
    try:
        await asyncio.sleep(o.steady)  # the steady state the kill interrupts
        if not all(p.traffic.received for p in probes):
            raise BenchError("no room messages between the gateways before the kill")
        role = cluster.active()
        if not role:
            raise BenchError("not exactly one active processor before the kill")
        res["killed"] = role
        victim = cluster.procs[role]
        cluster.killed = victim
        killed_wall = time.time()
        killed = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)
        dead = time.monotonic()

        def both_ways() -> bool:
            merged = merge(probes)
            return all(v is not None for v in takeover(merged, dead, killed).values())

        try:
            await cluster.until(both_ways, "room messages between the gateways again", o.give_up)
        except BenchError as exc:
            res["error"] = str(exc)
        await asyncio.sleep(o.after)  # the traffic after the takeover
    finally:
        stop.set()
        await asyncio.gather(*senders, return_exceptions=True)
        pending = [t for p in probes for t in p.pending]
        await asyncio.gather(*pending, return_exceptions=True)  # each ends by its deadline
    if "killed" not in res:
        return res
    traffic = merge(probes)
    per_sender = takeover(traffic, dead, killed)
    res["takeover_by_sender_s"] = {k: round(v, 3) if v is not None else None for k, v in per_sender.items()}
    if all(v is not None for v in per_sender.values()):
        res["takeover_s"] = round(max(v for v in per_sender.values() if v is not None), 3)
    on_wire = takeover(traffic, dead, killed, wire=True)
    if all(v is not None for v in on_wire.values()):
        res["wire_takeover_s"] = round(max(v for v in on_wire.values() if v is not None), 3)
    firsts = [at for p in probes for n, at in p.answered_at.items()
              if p.traffic.sent[(p.name, n)] >= dead]
    res["first_answer_s"] = round(min(firsts) - killed, 3) if firsts else None
    standby = "backup" if res["killed"] == "primary" else "primary"
    became = cluster.procs[standby].became_active_at()
    if became is not None and became >= killed_wall:
        res["active_s"] = round(became - killed_wall, 3)
        if res.get("wire_takeover_s") is not None:  # the rooms rebuilt, as the server sends
            res["resync_s"] = round(res["wire_takeover_s"] - res["active_s"], 3)
    res.update(account(traffic))
    res["unanswered_sent_s"] = window(traffic, killed)
    res["reconnects"] = sum(p.reconnects() - before[p.name] for p in probes)
    res["client_events"] = {p.name: dict(p.events - before_events[p.name]) for p in probes}
    res["server_errors"] = sum(p.events["ServerError"] for p in probes)
    # the killed one comes back, with its own flags: it must find the other active
    again = cluster.start_processor(res["killed"])
    cluster.killed = None
    t0 = time.monotonic()
    try:
        await cluster.until(lambda: again.state() != "", f"the restarted {res['killed']} to settle")
        res["came_back"] = again.state()
        res["came_back_s"] = round(time.monotonic() - t0, 2)
    except BenchError as exc:
        res.setdefault("error", str(exc))
    return res


def merge(probes: list[Probe]) -> Traffic:
    t = Traffic()
    for p in probes:
        t.sent.update(p.traffic.sent)
        t.answers.update(p.traffic.answers)
        t.received.extend(p.traffic.received)
        t.wire.extend(p.traffic.wire)
        t.dropped += p.traffic.dropped
    return t


async def measure(o: argparse.Namespace, logdir: Path) -> list[dict[str, Any]]:
    cluster = PairCluster(o, logdir)
    probes: list[Probe] = []
    rounds: list[dict[str, Any]] = []
    try:
        cluster.start()
        await cluster.until(lambda: cluster.active() == "primary", "the primary active")
        gw = cluster.gateways
        assert gw is not None
        await cluster.until(lambda: gw.text().count('"welcomed by processor"') >= 2
                            and ws_upgrade_ok(cluster.ws_port, "/wsmesh"), "both gateways welcomed")
        probes = await connect_probes(cluster.url)
        for rnd in range(1, o.rounds + 1):
            try:
                r = await one_round(o, cluster, probes, rnd)
            except BenchError as exc:
                r = {"round": rnd, "error": str(exc)}
            rounds.append(r)
            log(f"[failover r{rnd}] " + ", ".join(f"{k}={fmt(r.get(k))}" for _, k in COLUMNS[1:])
                + (f" ERROR {r['error']}" if "error" in r else ""))
            if r.get("came_back") != "passive":
                break  # the pair is not in a state to kill again
    finally:
        for p in probes:
            await p.client.close()
            p.reader.cancel()
        cluster.stop()
    return rounds


def run_scenario(o: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if o.quick:
        for k, v in QUICK.items():
            if getattr(o, k) == FAILOVER_DEFAULTS[k]:
                setattr(o, k, v)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = CACHE / "logs" / f"failover-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    opts = {k: getattr(o, k) for k in FAILOVER_DEFAULTS}
    results: dict[str, Any] = {"time": stamp, "argv": sys.argv[1:], "nproc": os.cpu_count(),
                               "load": opts, "logs": str(logdir)}
    try:
        rounds = asyncio.run(asyncio.wait_for(measure(o, logdir), o.deadline))
    except (BenchError, TimeoutError, OSError) as exc:
        rounds = [{"round": 0, "error": f"set-up: {exc}"}]
    results["rounds"] = rounds
    results["summary"] = summarize(rounds, o.failover_timeout)
    text = table(rounds, results["summary"], opts)
    save(results, f"failover-{stamp}")
    return results, text


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.failover_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = FAILOVER_DEFAULTS
    ap.add_argument("--rounds", type=int, default=d["rounds"], help="kills, alternating primary/backup (5)")
    ap.add_argument("--failover-timeout", type=float, default=d["failover_timeout"],
                    help="given to every process, and the target (2)")
    ap.add_argument("--interval", type=float, default=d["interval"],
                    help="seconds between a client's messages")
    ap.add_argument("--steady", type=float, default=d["steady"], help="seconds of traffic before each kill")
    ap.add_argument("--after", type=float, default=d["after"], help="seconds of traffic after the takeover")
    ap.add_argument("--answer-deadline", type=float, default=d["answer_deadline"],
                    help="seconds a frame may wait for its echo or error before it counts as unanswered")
    ap.add_argument("--give-up", type=float, default=30.0, help="seconds to wait for a takeover")
    ap.add_argument("--quick", action="store_true", help="2 rounds, shorter phases")
    ap.add_argument("--deadline", type=float, default=600.0, help="hard limit on the whole run, s")
    return ap


def main(argv: list[str] | None = None) -> int:
    return scenario_main(parser, run_scenario, lambda results: results["summary"]["verdict"] == "PASS", argv)


if __name__ == "__main__":
    sys.exit(main())
