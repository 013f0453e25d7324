"""`make bench`: meshstream (`make run GATEWAYS=2`) measured side by side with its peers.

    python -m bench.run                                  # fanout, chat, idle; peers raw_ws,nodesio; 2 rounds
    python -m bench.run --scenarios chat --rounds 3
    python -m bench.run --peers raw_ws,nodesio,pysio     # python-socketio too (slow)
    python -m bench.run --quick                          # smaller loads, 1 round (a smoke test)
    python -m bench.run --peers none                     # meshstream alone

When the shared harness (../shared/bench: loadgen.js and the peer servers) is there,
it is copied to bench-results/harness (git-ignored), `npm ci`-ed and given a venv
for the Python peers, once; every target is then driven by the same loadgen.js and
targets alternate (A B C A B C) because the machine is noisy. Without it (or without
Node), meshstream alone is driven by bench/loadgen.py, a small Python load generator
speaking the same protocol (slower: read its numbers as a smoke test, not a figure).

For every run the driver samples each server process from /proc (summed and per
process): CPU (utime+stime) between the loadgen's measure-start/measure-end markers,
peak RSS, and for `idle` the RSS while the connections are held. It prints per-target
medians, meshstream's ratios to the peers and to the issue's targets, and a per-process
table; every raw run is kept in bench-results/bench-<time>.json. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench-results"  # git-ignored
HARNESS = CACHE / "harness"
DEFAULT_SOURCE = REPO.parent / "shared" / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"

SCENARIOS: dict[str, dict[str, Any]] = {  # the loads
    "fanout": {"rooms": 1, "clients": 1000, "messages": 600},
    "chat": {"rooms": 250, "clients": 4, "rate": 2, "duration": 10},
    "idle": {"conns": 10000, "rooms": 100, "hold": 5},
}
QUICK: dict[str, dict[str, Any]] = {
    "fanout": {"clients": 200, "messages": 300},
    "chat": {"rooms": 100, "duration": 4},
    "idle": {"conns": 2000, "hold": 3},
}
# What the issue asks of meshstream, as (metric, peer, bound, better): ratio = meshstream / peer.
TARGETS = {
    "fanout": ("deliveries_per_s", "raw_ws", 0.75, "higher"),
    "chat": ("p99_ms", "raw_ws", 2.5, "lower"),
    "idle": ("kb_per_conn", "raw_ws", 1.5, "lower"),
}
COLUMNS = {
    "fanout": [("deliv/s", "deliveries_per_s"), ("p50ms", "p50_ms"), ("p99ms", "p99_ms"),
               ("maxms", "max_ms"), ("lost", "lost"), ("wall_s", "wall_s"), ("cpu_s", "cpu_s"),
               ("srv%", "srv_util"), ("lgELU", "lg_elu"), ("rssMB", "rss_peak_mb")],
    "chat": [("sent", "sent"), ("deliv", "received"), ("deliv/s", "deliveries_per_s"),
             ("p50ms", "p50_ms"), ("p99ms", "p99_ms"), ("maxms", "max_ms"), ("lost", "lost"),
             ("cpu_s", "cpu_s"), ("srv%", "srv_util"), ("lgELU", "lg_elu"), ("rssMB", "rss_peak_mb")],
    "idle": [("conns", "conns"), ("ok", "connected"), ("joined", "joins_confirmed"),
             ("open", "still_open"), ("conn_s", "connect_s"), ("join_s", "join_s"),
             ("baseMB", "rss_base_mb"), ("holdMB", "rss_hold_mb"), ("KB/conn", "kb_per_conn"),
             ("cpu_s", "cpu_s")],
}


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ harness setup

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def prepare_harness(source: Path, python: str) -> tuple[bool, bool]:
    """Copy the shared harness to HARNESS, `npm ci` it, give it a venv: (node ok, python peers ok)."""
    HARNESS.mkdir(parents=True, exist_ok=True)
    for src in sorted(source.rglob("*")):
        rel = src.relative_to(source)
        if rel.parts[0] in ("node_modules", ".venv", "results"):
            continue
        dest = HARNESS / rel
        if src.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif not dest.exists() or dest.read_bytes() != src.read_bytes():
            shutil.copy2(src, dest)
    node_ok = shutil.which("node") is not None and shutil.which("npm") is not None
    if node_ok:
        lock = _digest(HARNESS / "package-lock.json")
        stamp = HARNESS / "node_modules" / ".meshstream-stamp"
        if not stamp.exists() or stamp.read_text() != lock:
            log(f"bench: npm ci in {HARNESS} (once)")
            r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                               cwd=HARNESS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                log(f"bench: npm ci failed ({r.stderr.strip()[-300:]}); no Node loadgen or nodesio")
                node_ok = False
            else:
                stamp.write_text(lock)
    venv = HARNESS / ".venv"
    stamp = venv / ".meshstream-stamp"
    py_ok = stamp.exists()
    if not py_ok:
        log(f"bench: creating {venv} for the Python peers (once)")
        rc = subprocess.run([python, "-m", "venv", str(venv)], stdout=subprocess.DEVNULL).returncode
        if rc == 0:
            rc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "websockets", "uvloop",
                                 "python-socketio", "aiohttp", "pyzmq"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        py_ok = rc == 0
        if py_ok:
            stamp.write_text("ok")
        else:
            log("bench: venv for the Python peers failed; raw_ws and pysio are skipped")
    return node_ok, py_ok


# ------------------------------------------------------------------ /proc

def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def tree(root: int) -> set[int]:
    kids, out, todo = children_map(), set(), [root]
    while todo:
        p = todo.pop()
        if p not in out and os.path.exists(f"/proc/{p}"):
            out.add(p)
            todo.extend(kids.get(p, []))
    return out


def proc_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return f"pid {pid}"
    if not argv:
        return f"pid {pid}"
    if argv[0].startswith("meshstream: "):  # setproctitle
        return argv[0][len("meshstream: "):]
    exe = os.path.basename(argv[0])
    script = next((os.path.basename(a) for a in argv[1:] if a.endswith((".py", ".js"))), "")
    if exe in ("python", "python3") and "-m" in argv:
        script = argv[argv.index("-m") + 1]
    return f"{exe} {script}".strip()


def proc_cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    except (OSError, IndexError, ValueError):
        return -1


def proc_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def listening(port: int) -> int:
    """How many sockets listen on `port` (SO_REUSEPORT gateways each have one)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


def ws_upgrade_ok(port: int, path: str) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.settimeout(2)
            s.sendall((f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            return s.recv(64).startswith(b"HTTP/1.1 101")
    except OSError:
        return False


def free_port(also: tuple[int, ...] = ()) -> int:
    """A free port P (below the ephemeral range the loadgen's connections use) such that
    P + each offset in `also` is free too (meshstream's metrics ports)."""
    rnd = random.Random()
    for _ in range(500):
        port = rnd.randrange(20000, 30000)
        try:
            for off in (0, *also):
                with socket.socket() as s:
                    s.bind((HOST, port + off))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


# ------------------------------------------------------------------ targets

class Target:
    def __init__(self, name: str, cmd: list[str], cwd: Path, adapter: str, path: str,
                 listeners: int = 1, metrics_offset: int = 0, metrics_ports: int = 0,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.cmd, self.cwd, self.adapter, self.path = name, cmd, cwd, adapter, path
        self.listeners, self.metrics_offset, self.metrics_ports = listeners, metrics_offset, metrics_ports
        self.env = env or {}


class Server:
    """One started target: process tree, readiness, per-process sampling, shutdown."""

    def __init__(self, target: Target, logpath: Path, sample_s: float) -> None:
        self.target = target
        self.port = free_port(tuple(target.metrics_offset + i for i in range(target.metrics_ports)))
        cmd = [c.replace("{port}", str(self.port)) for c in target.cmd]
        self.logf = open(logpath, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=target.cwd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, **target.env})
        self.sample_s = sample_s
        self.pids: set[int] = {self.proc.pid}
        self.names: dict[int, str] = {}
        self.rss: dict[int, int] = {}  # latest per pid
        self.peak: dict[int, int] = {}  # peak per pid
        self.samples: list[tuple[float, int, dict[int, int]]] = []  # (t, total kB, per pid)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target.name} exited with {self.proc.returncode} "
                                   f"(log: {self.logf.name})")
            if listening(self.port) >= self.target.listeners and ws_upgrade_ok(self.port, self.target.path):
                time.sleep(0.5)  # let late starters (watchers, the metrics threads) settle
                self.refresh()
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.target.name} not ready after {timeout:.0f}s (log: {self.logf.name})")

    def refresh(self) -> None:
        self.pids = tree(self.proc.pid)
        for p in self.pids:
            if p not in self.names or self.names[p].startswith(("python", "pid ")):
                self.names[p] = proc_name(p)  # again until setproctitle has named it

    def sample(self) -> None:
        per = {p: proc_rss_kb(p) for p in self.pids}
        for p, kb in per.items():
            self.peak[p] = max(self.peak.get(p, 0), kb)
        self.rss = per
        self.samples.append((time.monotonic(), sum(per.values()), per))

    def cpu(self) -> dict[int, int]:
        return {p: t for p in self.pids if (t := proc_cpu_ticks(p)) >= 0}

    def start_sampling(self) -> None:
        def loop() -> None:
            last = 0.0
            while not self.stopping.wait(self.sample_s):
                if time.monotonic() - last > 1.0:
                    self.refresh()
                    last = time.monotonic()
                self.sample()

        self.sample()
        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def stop(self, grace: float = 5.0) -> None:
        self.stopping.set()
        if self.thread:
            self.thread.join(2)
        pids = tree(self.proc.pid) | {self.proc.pid}
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)  # its own session and process group
            except ProcessLookupError:
                pass
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()
                if not any(_alive(p) for p in pids):
                    break
                time.sleep(0.05)
            else:
                continue
            break
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.logf.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------ one run

def loadgen_cmd(args: argparse.Namespace, scenario: str, target: Target, port: int,
                opts: dict[str, Any]) -> list[str]:
    if args.loadgen == "node":
        cmd = ["node", str(HARNESS / "loadgen.js")]
    else:
        cmd = [sys.executable, "-m", "bench.loadgen"]
    cmd += ["--scenario", scenario, "--adapter", target.adapter, "--host", HOST, "--ports", str(port),
            "--timeout", str(args.lg_timeout)]
    for k, v in opts.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def run_one(args: argparse.Namespace, scenario: str, target: Target, rnd: int, logdir: Path,
            opts: dict[str, Any]) -> dict[str, Any]:
    tag = f"[{scenario} r{rnd} {target.name}]"
    res: dict[str, Any] = {"target": target.name, "round": rnd}
    srv = Server(target, logdir / f"{scenario}-{target.name}-r{rnd}.server.log", args.sample_ms / 1000)
    try:
        log(f"{tag} starting: {' '.join(target.cmd).replace('{port}', str(srv.port))}")
        srv.wait_ready(args.ready_timeout)
        srv.sample()
        base = dict(srv.rss)
        srv.start_sampling()
        cmd = loadgen_cmd(args, scenario, target, srv.port, opts)
        log(f"{tag} ready ({len(srv.pids)} processes); loadgen {' '.join(cmd[2:])}")
        marks: dict[str, tuple[float, dict[int, int]]] = {"start": (time.monotonic(), srv.cpu())}
        lg = subprocess.Popen(cmd, cwd=HARNESS if args.loadgen == "node" else REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lg_log = open(logdir / f"{scenario}-{target.name}-r{rnd}.loadgen.log", "w")  # noqa: SIM115

        def watch() -> None:
            assert lg.stderr is not None
            last = 0.0
            for line in lg.stderr:
                lg_log.write(line)
                if line.startswith("@@phase"):
                    srv.refresh()
                    marks[line.split()[1]] = (time.monotonic(), srv.cpu())
                elif not args.quiet and (time.monotonic() - last > 0.9 or "connected" in line):
                    last = time.monotonic()
                    log(f"{tag}   {line.rstrip()}")

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        killer = threading.Timer(args.lg_timeout + 30, lg.kill)  # hard cap on the loadgen
        killer.start()
        assert lg.stdout is not None
        out = lg.stdout.read()  # not communicate(): the watcher thread owns stderr
        lg.wait()
        killer.cancel()
        watcher.join(5)
        lg_log.close()
        marks["end"] = (time.monotonic(), srv.cpu())
        srv.stopping.set()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"loadgen printed no result (exit {lg.returncode}); see {lg_log.name}")
        res.update(json.loads(lines[-1]))
        res.update(measure(srv, base, marks, res))
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, not fatal
        res["error"] = str(exc)
        log(f"{tag} ERROR {exc}")
    finally:
        srv.stop()
    restarts = Path(srv.logf.name).read_text(errors="replace").count("child exited")
    if restarts:  # a crashed child makes the run suspect: say so
        res["restarts"] = restarts
        log(f"{tag} WARNING: {restarts} child restart(s) during the run, see {srv.logf.name}")
    summary = ", ".join(f"{c}={fmt(res.get(k))}" for c, k in COLUMNS[scenario] if k in res)
    log(f"{tag} -> {summary}")
    return res


def measure(srv: Server, base: dict[int, int], marks: dict[str, tuple[float, dict[int, int]]],
            res: dict[str, Any]) -> dict[str, Any]:
    """CPU and memory, summed over the server's processes and per process."""
    a, b = ("measure-start", "measure-end") if "measure-start" in marks else ("start", "end")
    if b not in marks:
        b = "end"
    (t0, cpu0), (t1, cpu1) = marks[a], marks[b]
    wall = max(t1 - t0, 1e-9)
    hold: list[tuple[float, dict[int, int]]] = []
    if "hold-start" in marks:  # memory while the idle connections are held
        h0, h1 = marks["hold-start"][0], marks.get("hold-end", marks["end"])[0]
        hold = [(t, per) for t, _, per in srv.samples if h0 <= t <= h1]
    procs: dict[str, dict[str, float]] = {}
    for pid in sorted(set(srv.names) & (set(cpu1) | set(srv.peak))):
        name = srv.names[pid]
        d = procs.setdefault(name, {"cpu_s": 0.0, "rss_peak_mb": 0.0, "rss_base_mb": 0.0})
        d["cpu_s"] += max(0, cpu1.get(pid, 0) - cpu0.get(pid, 0)) / CLK_TCK
        d["rss_peak_mb"] += srv.peak.get(pid, 0) / 1024
        d["rss_base_mb"] += base.get(pid, 0) / 1024
        if hold:
            d["rss_hold_mb"] = d.get("rss_hold_mb", 0.0) + max(per.get(pid, 0) for _, per in hold) / 1024
    for d in procs.values():
        d["srv_util"] = d["cpu_s"] / wall
        for k in list(d):
            d[k] = round(d[k], 3 if k.endswith("util") else 2)
    total_base = sum(base.values())
    out: dict[str, Any] = {
        "procs": procs,
        "cpu_s": round(sum(d["cpu_s"] for d in procs.values()), 2),
        "srv_util": round(sum(d["cpu_s"] for d in procs.values()) / wall, 2),
        "rss_base_mb": round(total_base / 1024, 1),
        "rss_peak_mb": round(max([kb for _, kb, _ in srv.samples] + [total_base]) / 1024, 1),
    }
    if hold:
        held = max(sum(per.values()) for _, per in hold)
        out["rss_hold_mb"] = round(held / 1024, 1)
        if res.get("connected"):
            out["kb_per_conn"] = round((held - total_base) / res["connected"], 2)
            for d in procs.values():
                if "rss_hold_mb" in d:
                    d["kb_per_conn"] = round((d["rss_hold_mb"] - d["rss_base_mb"]) * 1024
                                             / res["connected"], 2)
    return out


# ------------------------------------------------------------------ report

def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"runs": len(runs), "ok_runs": len(ok)}
    keys = {k for r in ok for k in r}
    for k in keys:
        vals = [r[k] for r in ok if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        if vals and len(vals) == len(ok):
            m = statistics.median(vals)
            out[k] = int(m) if all(isinstance(v, int) for v in vals) and m == int(m) else round(m, 3)
    procs: dict[str, dict[str, Any]] = {}
    for name in {n for r in ok for n in r.get("procs", {})}:
        per = [r["procs"][name] for r in ok if name in r.get("procs", {})]
        procs[name] = {k: round(statistics.median(p[k] for p in per if k in p), 3)
                       for k in per[0] if all(k in p for p in per)}
    out["procs"] = procs
    return out


def fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def report(scenario: str, summary: dict[str, dict[str, Any]], opts: dict[str, Any]) -> str:
    cols = COLUMNS[scenario]
    load = " ".join(f"--{k} {v}" for k, v in opts.items())
    lines = [f"\n== {scenario} ({load}); medians of successful runs"]
    rows = [["target", "runs"] + [c for c, _ in cols]]
    for name, s in summary.items():
        rows.append([name, f"{s['ok_runs']}/{s['runs']}"] + [fmt(s.get(k)) for _, k in cols])
    lines.append(table(rows))
    ms = summary.get("meshstream")
    if ms and ms.get("ok_runs"):
        metric, peer, bound, better = TARGETS[scenario]
        ratios = []
        for name, s in summary.items():
            if name != "meshstream" and s.get(metric) and ms.get(metric) is not None:
                ratios.append(f"{ms[metric] / s[metric]:.2f}x {name}")
        if ratios:
            lines.append(f"meshstream {metric} = " + ", ".join(ratios))
        if summary.get(peer, {}).get(metric) and ms.get(metric) is not None:
            r = ms[metric] / summary[peer][metric]
            ok = r >= bound if better == "higher" else r <= bound
            sign = ">=" if better == "higher" else "<="
            lost = ms.get("lost", 0) or 0
            lines.append(f"target {metric} {sign} {bound}x {peer}: {r:.2f}x -> {'PASS' if ok else 'MISS'}"
                         + (f"  (lost {lost}!)" if lost else ""))
        prows = [["meshstream process", "cpu_s", "cpu%", "rss_peak_MB", "base_MB"]
                 + (["hold_MB", "KB/conn"] if scenario == "idle" else [])]
        for name, d in sorted(ms["procs"].items()):
            row = [name, fmt(d.get("cpu_s")), fmt(round(100 * d.get("srv_util", 0), 1)),
                   fmt(d.get("rss_peak_mb")), fmt(d.get("rss_base_mb"))]
            if scenario == "idle":
                row += [fmt(d.get("rss_hold_mb")), fmt(d.get("kb_per_conn"))]
            prows.append(row)
        lines.append(table(prows))
    return "\n".join(lines)


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="fanout,chat,idle")
    ap.add_argument("--peers", default="raw_ws,nodesio",
                    help="comma list of raw_ws,nodesio,pysio, or 'none'")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smaller loads and 1 round")
    ap.add_argument("--harness", default=os.environ.get("MESHSTREAM_BENCH_HARNESS", str(DEFAULT_SOURCE)),
                    help="the shared harness to copy (default ../shared/bench)")
    ap.add_argument("--loadgen", choices=["auto", "node", "python"], default="auto")
    ap.add_argument("--set", action="append", default=[], metavar="SCENARIO.OPTION=VALUE",
                    help="override a load option, e.g. --set fanout.clients=500")
    ap.add_argument("--lg-timeout", type=int, default=180)
    ap.add_argument("--ready-timeout", type=float, default=60)
    ap.add_argument("--sample-ms", type=int, default=200)
    ap.add_argument("--pause", type=float, default=1.0)
    ap.add_argument("--quiet", action="store_true", help="no loadgen progress lines")
    ap.add_argument("--no-processor", dest="processor", action="store_false",
                    help="skip the processor micro-benchmark (bench.processor_bench)")
    args = ap.parse_args(argv)
    if args.quick and args.rounds == 2:
        args.rounds = 1

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by servers and loadgen

    source = Path(args.harness)
    node_ok = py_ok = False
    if source.is_dir() and (source / "loadgen.js").exists():
        node_ok, py_ok = prepare_harness(source, sys.executable)
    else:
        log(f"bench: no shared harness at {source}: meshstream alone, driven by bench/loadgen.py")
    if args.loadgen == "auto":
        args.loadgen = "node" if node_ok else "python"
    peers = [] if args.peers in ("", "none") else args.peers.split(",")
    if args.loadgen != "node" and peers:
        log("bench: peers need the shared harness and Node; measuring meshstream alone")
        peers = []
    hpy = str(HARNESS / ".venv" / "bin" / "python")
    known = {
        "raw_ws": Target("raw_ws", [hpy, "servers/raw_ws.py", "--port", "{port}"], HARNESS,
                         "meshstream", "/wsmesh"),
        "nodesio": Target("nodesio", ["node", "servers/nodesio.js", "--port", "{port}"], HARNESS,
                          "socketio-lite", "/socket.io/?EIO=4&transport=websocket"),
        "pysio": Target("pysio", [hpy, "servers/pysio.py", "--port", "{port}"], HARNESS,
                        "socketio-lite", "/socket.io/?EIO=4&transport=websocket"),
    }
    for p in peers:
        if p not in known:
            ap.error(f"unknown peer {p}")
    if not py_ok:
        peers = [p for p in peers if p not in ("raw_ws", "pysio")]
    # `make run` exactly as the issue says; the supervisor puts metrics on PORT+1000..
    meshstream = Target("meshstream", ["make", "-s", "--no-print-directory", "run", "PORT={port}",
                                       f"GATEWAYS={args.gateways}"], REPO, "meshstream", "/wsmesh",
                        listeners=args.gateways, metrics_offset=1000,
                        metrics_ports=args.gateways + 3,  # processor, gateways, 2 watchers
                        env={"MESHSTREAM_HOST": HOST})  # loopback only
    targets = [meshstream] + [known[p] for p in peers]

    loads = {s: dict(SCENARIOS[s], **(QUICK[s] if args.quick else {})) for s in SCENARIOS}
    for item in args.set:
        key, _, value = item.partition("=")
        scen, _, opt = key.partition(".")
        loads[scen][opt] = value
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = CACHE / "logs" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    log(f"bench: targets {', '.join(t.name for t in targets)}; loadgen {args.loadgen}; "
        f"{args.rounds} round(s); logs in {logdir}")

    results: dict[str, Any] = {"time": stamp, "argv": sys.argv[1:], "nproc": os.cpu_count(),
                               "loadgen": args.loadgen, "scenarios": {}}
    reports = []
    started = time.monotonic()
    for scenario in [s for s in args.scenarios.split(",") if s]:
        runs = []
        for rnd in range(1, args.rounds + 1):
            for target in targets:
                runs.append(run_one(args, scenario, target, rnd, logdir, loads[scenario]))
                time.sleep(args.pause)
        summary = {t.name: median_of([r for r in runs if r["target"] == t.name]) for t in targets}
        results["scenarios"][scenario] = {"load": loads[scenario], "summary": summary, "runs": runs}
        reports.append(report(scenario, summary, loads[scenario]))
        log(reports[-1])
    if args.processor:
        from bench import processor_bench

        log("\n== processor micro-benchmark (python -m bench.processor_bench)")
        pargs = ["--frames", "100000", "--repeat", "2"] if args.quick else []
        results["processor"] = processor_bench.main(pargs)
        reports.append("\n== processor alone (bench.processor_bench)\n"
                       + processor_bench.table(results["processor"]))
    path = CACHE / f"bench-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"\nmeshstream benchmark ({args.gateways} gateways, loadgen {args.loadgen}, "
          f"{args.rounds} round(s), {time.monotonic() - started:.0f} s)")
    print("\n".join(reports))
    print(f"\nraw runs: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
