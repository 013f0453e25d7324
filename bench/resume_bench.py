"""The recovery benchmark (issue 10, item 7): a gateway SIGKILLed under chat load, then the
processor restarted; what the clients get back, how fast, and what history costs.

    python -m bench.resume_bench                          # 10,000 clients, 2,500 rooms
    python -m bench.resume_bench --clients 1000 --rooms 250 --fill 10
    make bench BENCH_ARGS="--scenarios resume"            # the same, from bench.run

It starts `meshstream run` itself (2 gateways, no watchers, free port, a private run
directory, rate and connection limits off) and drives it from --workers processes of
bench.resume_client (asyncio + uvloop + websockets; each holds whole rooms, so each
checks its rooms' every offset). Two runs with the same load:

1. --history-size 0: connect, chat for --fill seconds; the processor's RSS before and after;
2. the default history (--history-size 1000): the same, then SIGKILL gateway 1 under the
   chat load; its clients reconnect (backoff with full jitter) with
   `?resume=<session>&seq=<epoch>:<last seq>`, the chat goes on for --after seconds, stops,
   and every client's room stream is checked: messages lost (offset gaps + what it misses of
   the room's last offset), duplicates, seq out of order, resumed:false (must all be 0);
   the time from the kill until each client resumed (p50/p99/max) and until all had.
   Then the processor is SIGKILLed (the supervisor restarts it, a new epoch) and every
   client is counted by how it learns of it: a new room epoch then `history` -> history-lost,
   or resumed:false on a reconnect. A gap under an unchanged epoch is a silent gap (must be 0).

History's memory = (RSS growth over the chat with history) - (the same without), per room
and per held message (join notices + chat messages, all younger than --history-age here).
A table on stdout, every figure in bench-results/resume-<time>.json; a hard --deadline
stops everything, and every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import REPO, log, scenario_main
from bench.harness import CACHE, HOST, free_port, save, ws_upgrade_ok
from bench.sampling import alive, listening, tree

RESUME_DEFAULTS: dict[str, Any] = {"clients": 10000, "rooms": 2500, "rate": 0.1, "fill": 30.0,
                                   "after": 5.0, "workers": 2, "resume_window": 60.0}


class Deadline(Exception):
    pass


# ------------------------------------------------------------------ the cluster

def title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Cluster:
    """`meshstream run` with 2 gateways on a free port and a private run directory."""

    def __init__(self, logdir: Path, tag: str, history_size: int, resume_window: float,
                 gateways: int = 2) -> None:
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="msr-")  # 0700
        self.run_dir = os.path.join(self.tmp, "run")
        self.gateways = gateways
        self.cmd = [sys.executable, "-m", "services.cli", "run", "--port", str(self.port),
                    "--host", HOST, "--gateways", str(gateways), "--run-dir", self.run_dir,
                    "--no-watchers", "--metrics-port", "0", "--rate-limit", "0",
                    "--max-connections", "0", "--max-connections-per-ip", "0",
                    "--history-size", str(history_size), "--resume-window", str(resume_window)]
        self.logf = open(logdir / f"resume-{tag}.cluster.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.seen: set[int] = set()

    def wait_ready(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"meshstream run exited with {self.proc.returncode} ({self.logf.name})")
            if listening(self.port) >= self.gateways and ws_upgrade_ok(self.port, "/wsmesh"):
                time.sleep(0.5)
                return
            time.sleep(0.1)
        raise RuntimeError(f"meshstream run not ready after {timeout:.0f} s ({self.logf.name})")

    def child(self, name: str) -> int:
        """The pid of the child titled `meshstream: <name>` (0 if none now)."""
        for p in tree(self.proc.pid):
            self.seen.add(p)
            if title(p) == f"meshstream: {name}" and alive(p):
                return p
        return 0

    def wait_child(self, name: str, other_than: int, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid = self.child(name)
            if pid and pid != other_than:
                return pid
            time.sleep(0.05)
        return 0

    def stop(self) -> None:
        pids = tree(self.proc.pid) | self.seen | {self.proc.pid}
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            end = time.monotonic() + wait
            while time.monotonic() < end and any(alive(p) for p in pids):
                self.proc.poll()
                time.sleep(0.05)
            if not any(alive(p) for p in pids):
                break
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.logf.close()
        shutil.rmtree(self.tmp, ignore_errors=True)  # its private run directory, whatever is left


# ------------------------------------------------------------------ the worker processes

class Worker:
    def __init__(self, port: int, rooms: list[int], per_room: int, o: argparse.Namespace,
                 logdir: Path, tag: str, i: int) -> None:
        cmd = [sys.executable, "-m", "bench.resume_client", "--port", str(port), "--per-room",
               str(per_room), "--rooms", ",".join(map(str, rooms)), "--rate", str(o.rate),
               "--backoff", str(o.backoff), "--backoff-cap", str(o.backoff_cap)]
        self.err = open(logdir / f"resume-{tag}.worker{i}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, start_new_session=True)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.progress: dict[str, Any] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("ev") == "progress":
                self.progress = ev
            elif ev.get("ev") == "log":
                self.err.write(ev.get("msg", "") + "\n")
            else:
                self.events.put(ev)
        self.events.put({"ev": "eof"})

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, ev: str, until: float) -> dict[str, Any]:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                raise Deadline(f"worker: no {ev!r} in time")
            try:
                got = self.events.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if got.get("ev") == ev:
                return got
            if got.get("ev") == "eof":
                raise RuntimeError(f"worker exited (code {self.proc.poll()}) waiting for {ev!r}")

    def stop(self) -> None:
        try:
            self.send(cmd="quit")
            self.proc.wait(10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.err.close()


def ask_all(workers: list[Worker], ev: str, until: float, **cmd: Any) -> list[dict[str, Any]]:
    for w in workers:
        w.send(**cmd)
    return [w.wait(ev, until) for w in workers]


def total(results: list[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in results)


def merged(results: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        for k, v in (r.get(key) or {}).items():
            out[k] = out.get(k, 0) + v
    return out


def steady_rss(pid: int, n: int = 5, gap: float = 0.3) -> float:
    vals = []
    for _ in range(n):
        vals.append(rss_mb(pid))
        time.sleep(gap)
    return statistics.median(vals)


def quantile(v: list[float], p: float) -> float:
    v = sorted(v)
    return round(v[min(len(v) - 1, int(p * len(v)))], 3) if v else 0.0


# ------------------------------------------------------------------ one run

def one_run(o: argparse.Namespace, history_size: int, recover: bool, logdir: Path,
            until: float) -> dict[str, Any]:
    tag = f"h{history_size}"
    res: dict[str, Any] = {"history_size": history_size}
    cluster = Cluster(logdir, tag, history_size, o.resume_window)
    workers: list[Worker] = []
    per_room = o.clients // o.rooms
    try:
        cluster.wait_ready()
        proc_pid = cluster.child("processor")
        log(f"[resume {tag}] cluster up on port {cluster.port} ({' '.join(cluster.cmd[2:])})")
        workers = [Worker(cluster.port, list(range(i, o.rooms, o.workers)), per_room, o, logdir, tag, i)
                   for i in range(o.workers)]
        for w in workers:
            w.wait("ready", until)
        t0 = time.monotonic()
        got = ask_all(workers, "connected", until, cmd="connect")
        res["connect"] = {k: total(got, k) for k in ("clients", "open", "joined", "connect_errors")}
        res["connect"]["secs"] = round(time.monotonic() - t0, 2)
        log(f"[resume {tag}] connected {res['connect']}")
        if res["connect"]["joined"] < o.clients:
            raise RuntimeError(f"only {res['connect']['joined']}/{o.clients} clients joined")
        time.sleep(1.0)
        res["rss_connected_mb"] = rss0 = steady_rss(proc_pid)
        cpu0 = ask_all(workers, "stats", until, cmd="stats")
        t_chat = time.monotonic()
        ask_all(workers, "chatting", until, cmd="chat")
        log(f"[resume {tag}] chatting at {o.rate:g} msg/s per client "
            f"({o.rate * o.clients:.0f} msg/s, {o.rate * o.clients * per_room:.0f} deliveries/s) "
            f"for {o.fill:g} s")
        time.sleep(o.fill)
        res["rss_chat_mb"] = rss1 = steady_rss(proc_pid)
        snap = ask_all(workers, "stats", until, cmd="stats")
        # the load generator's own CPU: a worker near 100% would be the bottleneck
        res["worker_cpu_pct"] = [round(100 * (b["cpu_s"] - a["cpu_s"]) / (time.monotonic() - t_chat), 1)
                                 for a, b in zip(cpu0, snap, strict=True)]
        offsets = {r: v for s in snap for r, v in s["held_offsets"].items()}
        res["room_messages"] = sum(offsets.values())
        res["held_messages"] = sum(min(v, history_size) for v in offsets.values())
        res["rss_growth_mb"] = round(rss1 - rss0, 2)
        log(f"[resume {tag}] processor RSS {rss0:.1f} -> {rss1:.1f} MB; room messages "
            f"{res['room_messages']}, held {res['held_messages']}; load generator CPU "
            f"{res['worker_cpu_pct']} % per worker")
        if recover:
            res.update(kill_gateway(o, cluster, workers, until))
            res.update(restart_processor(o, cluster, workers, until, proc_pid))
        else:
            ask_all(workers, "stopped", until, cmd="stop")
    finally:
        for w in workers:
            w.stop()
        cluster.stop()
        res["child_restarts"] = Path(cluster.logf.name).read_text(errors="replace").count("child exited")
    return res


def kill_gateway(o: argparse.Namespace, cluster: Cluster, workers: list[Worker],
                 until: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pid = cluster.child("gateway 1")
    if not pid:
        raise RuntimeError("no gateway 1")
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    log(f"[resume] SIGKILLed gateway 1 (pid {pid}) under the chat load")
    # every client of gateway 1 drops, then resumes: wait until all are up again
    window_end = t_kill + o.resume_window
    t_all = None
    while time.monotonic() < min(until, window_end):
        prog = [w.progress for w in workers]
        if all(prog) and total(prog, "drops") > 0 and total(prog, "up") == o.clients \
                and total(prog, "drops") <= total(prog, "resumed") + total(prog, "refused"):
            t_all = time.monotonic()
            break
        time.sleep(0.05)
    new_gw = cluster.wait_child("gateway 1", pid, 10)
    out["gateway_restarted"] = bool(new_gw)
    log(f"[resume] all up again after {t_all - t_kill:.2f} s" if t_all else "[resume] NOT all up in time")
    time.sleep(o.after)
    ask_all(workers, "stopped", until, cmd="stop")
    got = ask_all(workers, "stats", until, cmd="settle", timeout=60, quiet=5)
    rows = [(d, u, r) for s in got for d, u, r in s["resume_times"] if d >= t_kill]
    times = [r - t_kill for d, u, r in rows]
    detect = [d - t_kill for d, u, r in rows]
    upgraded = [u - t_kill for d, u, r in rows]  # the WebSocket upgrade done
    answered = [r - u for d, u, r in rows]  # from the upgrade to client-connected resumed:true
    keys = ("drops", "resumed", "refused", "received", "gaps", "tail_missing", "lost", "dups",
            "seq_disorder", "silent_gaps", "sent", "unrelayed", "connect_failures")
    out["kill"] = {k: total(got, k) for k in keys}
    out["kill"]["reasons"] = merged(got, "reasons")
    # all resumed: the last client's own resume time (the progress poll above is coarser)
    out["kill"]["all_resumed_s"] = quantile(times, 1.0) if t_all and times else None
    out["kill"]["resume_s"] = {"n": len(times), "min": quantile(times, 0.0), "p50": quantile(times, 0.5),
                               "p99": quantile(times, 0.99), "max": quantile(times, 1.0)}
    out["kill"]["noticed_s"] = {"p50": quantile(detect, 0.5), "max": quantile(detect, 1.0)}
    out["kill"]["upgraded_s"] = {q: quantile(upgraded, p) for q, p in (("min", 0), ("p50", .5), ("max", 1))}
    out["kill"]["answer_s"] = {q: quantile(answered, p) for q, p in (("min", 0), ("p50", .5), ("max", 1))}
    log(f"[resume] kill: {json.dumps(out['kill'])}")
    return out


def restart_processor(o: argparse.Namespace, cluster: Cluster, workers: list[Worker],
                      until: float, proc_pid: int) -> dict[str, Any]:
    ask_all(workers, "chatting", until, cmd="chat")
    for w in workers:
        w.send(cmd="restart-check", timeout=o.restart_timeout)
    time.sleep(0.5)
    t_kill = time.monotonic()
    os.kill(proc_pid, signal.SIGKILL)
    log(f"[resume] SIGKILLed the processor (pid {proc_pid}); the supervisor restarts it")
    got = [w.wait("restart-checked", until) for w in workers]
    secs = time.monotonic() - t_kill
    ask_all(workers, "stopped", until, cmd="stop")
    out = {"outcomes": merged(got, "outcomes"), "silent_gaps": total(got, "silent_gaps"),
           "secs": round(secs, 2), "new_processor": bool(cluster.wait_child("processor", proc_pid, 5))}
    log(f"[resume] processor restart: {json.dumps(out)}")
    return {"processor_restart": out}


# ------------------------------------------------------------------ report

def summarize(o: argparse.Namespace, base: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    growth = full.get("rss_growth_mb", 0.0) - base.get("rss_growth_mb", 0.0)
    held = full.get("held_messages", 0)
    s: dict[str, Any] = {"history_mb": round(growth, 2),
                         "history_kb_per_room": round(growth * 1024 / o.rooms, 2),
                         "history_bytes_per_message": round(growth * 2**20 / held) if held else None}
    k = full.get("kill", {})
    s.update({f"kill_{x}": k.get(x) for x in ("drops", "resumed", "refused", "lost", "dups",
                                               "seq_disorder", "unrelayed", "all_resumed_s")})
    s.update({f"resume_{q}_s": k.get("resume_s", {}).get(q) for q in ("p50", "p99", "max")})
    pr = full.get("processor_restart", {})
    s["restart_outcomes"] = pr.get("outcomes")
    s["restart_silent_gaps"] = pr.get("silent_gaps")
    return s


def table(o: argparse.Namespace, base: dict[str, Any], full: dict[str, Any], s: dict[str, Any]) -> str:
    k = full.get("kill", {})
    pr = full.get("processor_restart", {})
    per_room = o.clients // o.rooms
    lines = [
        f"\n== resume ({o.clients} clients, {o.rooms} rooms of {per_room}, 2 gateways; chat "
        f"{o.rate:g} msg/s per client = {o.rate * o.clients:.0f} msg/s, "
        f"{o.rate * o.clients * per_room:.0f} deliveries/s)",
        f"gateway 1 SIGKILLed: {k.get('drops', '-')} clients dropped, {k.get('resumed', '-')} resumed, "
        f"resumed:false {k.get('refused', '-')} {k.get('reasons') or ''}",
        f"  time from the kill to resumed: p50 {s['resume_p50_s']} s, p99 {s['resume_p99_s']} s, "
        f"max {s['resume_max_s']} s; all resumed after {k.get('all_resumed_s')} s "
        f"(drop noticed: p50 {k.get('noticed_s', {}).get('p50')} s)",
        f"  of which: WebSocket upgrade done {k.get('upgraded_s')} s after the kill; then the "
        f"resume's answer {k.get('answer_s')} s after the upgrade",
        f"  lost {k.get('lost', '-')} (gaps {k.get('gaps', '-')}, tail {k.get('tail_missing', '-')}), "
        f"duplicates {k.get('dups', '-')}, seq out of order {k.get('seq_disorder', '-')}; "
        f"{k.get('received', '-')} room messages received; sent {k.get('sent', '-')}, "
        f"never relayed {k.get('unrelayed', '-')} (sent into the killed gateway)",
        f"history memory (processor RSS growth over {o.fill:g} s of chat, history {o.history_size} vs 0): "
        f"{full.get('rss_growth_mb')} - {base.get('rss_growth_mb')} = {s['history_mb']} MB for "
        f"{full.get('held_messages')} held messages in {o.rooms} rooms: "
        f"{s['history_kb_per_room']} KB per room, {s['history_bytes_per_message']} B per message",
        f"load generator CPU during the chat: {full.get('worker_cpu_pct')} % per worker process",
        f"processor SIGKILLed (new epoch): {pr.get('outcomes')}; silent gaps {pr.get('silent_gaps')}; "
        f"settled in {pr.get('secs')} s",
    ]
    return "\n".join(lines)


def run_scenario(o: argparse.Namespace) -> tuple[dict[str, Any], str]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the children
    if hard < o.clients + 1000:
        log(f"bench: RLIMIT_NOFILE is {hard}: a gateway may not hold {o.clients} connections")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = CACHE / "logs" / f"resume-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    until = time.monotonic() + o.deadline
    results: dict[str, Any] = {"time": stamp, "argv": sys.argv[1:], "nproc": os.cpu_count(),
                               "load": {k: getattr(o, k) for k in RESUME_DEFAULTS}}
    alarm = threading.Timer(o.deadline + 60, lambda: os._exit(3))  # the hard stop, whatever hangs
    alarm.daemon = True
    alarm.start()
    try:
        base = results["no_history"] = one_run(o, 0, False, logdir, until)
        full = results["history"] = one_run(o, o.history_size, True, logdir, until)
        results["summary"] = summarize(o, base, full)
        text = table(o, base, full, results["summary"])
    except (Deadline, RuntimeError) as exc:
        results["error"] = str(exc)
        text = f"\n== resume: FAILED: {exc} (logs in {logdir})"
    finally:
        alarm.cancel()
    save(results, f"resume-{stamp}")
    return results, text


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.resume_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = RESUME_DEFAULTS
    ap.add_argument("--clients", type=int, default=d["clients"])
    ap.add_argument("--rooms", type=int, default=d["rooms"])
    ap.add_argument("--rate", type=float, default=d["rate"], help="chat messages/s per client (0.1)")
    ap.add_argument("--fill", type=float, default=d["fill"], help="seconds of chat before the kill (30)")
    ap.add_argument("--after", type=float, default=d["after"], help="seconds of chat after all resumed")
    ap.add_argument("--workers", type=int, default=d["workers"], help="load generator processes (2)")
    ap.add_argument("--resume-window", type=float, default=d["resume_window"])
    ap.add_argument("--history-size", type=int, default=1000)
    ap.add_argument("--backoff", type=float, default=0.5, help="first reconnect delay bound, s (0.5)")
    ap.add_argument("--backoff-cap", type=float, default=5.0)
    ap.add_argument("--restart-timeout", type=float, default=60.0)
    ap.add_argument("--deadline", type=float, default=900.0, help="hard limit on the whole run, s")
    return ap


def main(argv: list[str] | None = None) -> int:
    return scenario_main(parser, run_scenario, lambda results: "error" not in results, argv)


if __name__ == "__main__":
    sys.exit(main())
