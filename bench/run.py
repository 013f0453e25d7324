"""`make bench`: meshstream (`make run GATEWAYS=2`) measured side by side with its peers.

    python -m bench.run                                  # fanout, chat, idle; peers raw_ws,nodesio; 2 rounds
    python -m bench.run --scenarios chat --rounds 3
    python -m bench.run --peers raw_ws,nodesio,pysio     # python-socketio too (slow)
    python -m bench.run --quick                          # smaller loads, 1 round (a smoke test)
    python -m bench.run --harness shared                 # ../shared/bench's loadgen and peers instead
    python -m bench.run --peers none                     # meshstream alone
    python -m bench.run --scenarios resume               # recovery: a gateway SIGKILLed under chat
                                                         # load, 10,000 clients (only when asked;
                                                         # bench.resume_bench, --set resume.clients=1000)
    python -m bench.run --scenarios capacity             # per gateway process and processor figures and
                                                         # the capacity plan (bench.capacity; only when asked)
    python -m bench.run --scenarios failover             # the active processor of a pair SIGKILLed
                                                         # (bench.failover_bench; only when asked)
    python -m bench.run --scenarios stuck-gateway        # chat through 2 gateways while a third stops
                                                         # reading (bench.stuck_gateway_bench; when asked)
    python -m bench.run --scenarios handshakes           # header-stuffed handshakes, gateway memory per
                                                         # round (bench.handshake_bench; when asked)
    python -m bench.run --scenarios api                  # publishes through the HTTP API, single and
                                                         # batched, beside a watcher (bench.api_bench)
    python -m bench.run --scenarios link                 # both link ends' Python per chat message, in
                                                         # one process, no sockets (bench.link_bench)
    python -m bench.run --scenarios log                  # chat with --log off vs a nats-server, and a
                                                         # processor restart with 100k held (bench.log_bench)

The default harness is the repository's own (`--harness own`, bench.harness): bench/node's
loadgen.js, whose clients live in several worker processes (`--lg-workers`), drives
meshstream and the peers of bench/peers (raw_ws: one `websockets` process; nodesio: Node
socket.io); bench/node is `npm ci`-ed once. `--harness shared` uses ../shared/bench
(`--shared-dir`) instead, as an outside cross-check: copied to bench-results/harness
(git-ignored), `npm ci`-ed and given a venv for its Python peers, once. Either way every
target is driven by the same loadgen.js and every round runs each target once because the
machine is noisy, in an order rotated from round to round (A B C, B C A, C A B; A B, B A for
two: `round_order`): the target run second in a round measured 5-14 % more chat CPU per
message and up to 1.5x less fanout than when run first, so no target always runs in the same
place; rounds a multiple of the targets' count balance it. Without Node, meshstream alone is
driven by bench/loadgen.py, a small Python load generator speaking the same protocol (slow:
a smoke test, not a figure).

For every run the driver samples each server process from /proc (summed and per
process): CPU (utime+stime) between the loadgen's measure-start/measure-end markers,
peak RSS, and for `idle` the RSS while the connections are held. It prints per-target
medians, meshstream's ratios to the peers and to the issue's targets, and a per-process
table; every raw run is kept in bench-results/bench-<time>.json and each scenario is plotted
to bench-results/<scenario>-<time>.png (bench.plot; `--out` moves both). Beside the chat figures
it prints the pipeline floor (bench.pipeline_floor): the CPU per message of a bare
PUSH -> PULL -> PUB -> SUB round trip between two Python processes, the least a chat
message can cost meshstream's two hops. See docs/performance.md.

Modules: bench.harness (the harnesses, starting and stopping servers), bench.sampling
(/proc), bench.report (medians, tables, JSON), bench.plot (the PNGs); this one wires them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bench import REPO, log
from bench.harness import (
    CACHE,
    DEFAULT_SOURCE,
    HARNESS,
    HOST,
    OWN,
    OWN_PEERS,
    PEERS,
    Server,
    Target,
    meshstream_target,
    own_peer_targets,
    peer_targets,
    prepare_harness,
    prepare_own,
)
from bench.report import median_of, report, run_summary, write_results
from bench.sampling import Marks, measure

SCENARIOS: dict[str, dict[str, Any]] = {  # the loads
    "fanout": {"rooms": 1, "clients": 1000, "messages": 600},
    "chat": {"rooms": 250, "clients": 4, "rate": 2, "duration": 10},
    "idle": {"conns": 10000, "rooms": 100, "hold": 5},
    # meshstream alone, only when named in --scenarios (bench.resume_bench: its own cluster and
    # load generator; the defaults are the 10,000 clients in 2,500 rooms)
    "resume": {},
    "capacity": {},  # bench.capacity, only when named: one gateway, the processor over 1..16 gateways
    "failover": {},  # bench.failover_bench, only when named: a processor pair, the active one killed
    "stuck-gateway": {},  # bench.stuck_gateway_bench, only when named: a gateway that stops reading
    "handshakes": {},  # bench.handshake_bench, only when named: heads that never end, RSS per round
    "api": {},  # bench.api_bench, only when named: the HTTP API's publishes per gateway CPU-second
    "link": {},  # bench.link_bench, only when named: both link ends' Python per chat message
    "log": {},  # bench.log_bench, only when named: the processor's log's cost, and its restart
}
QUICK: dict[str, dict[str, Any]] = {
    "fanout": {"clients": 200, "messages": 300},
    "chat": {"rooms": 100, "duration": 4},
    "idle": {"conns": 2000, "hold": 3},
    "resume": {"clients": 1000, "rooms": 250, "fill": 10},
    "capacity": {"quick": True},
    "failover": {"quick": True},
    "stuck-gateway": {"quick": True},
    "handshakes": {"quick": True},
    "api": {"quick": True},
    "link": {"quick": True},
    "log": {"quick": True},
}


# ------------------------------------------------------------------ the rounds

T = TypeVar("T")


def round_order(targets: Sequence[T], rnd: int) -> list[T]:
    """Round `rnd`'s (from 1) order: the targets rotated by one place per round (A B C,
    B C A, C A B; A B, B A), since the place in a round moves the figures (the module
    docstring), and a fixed order would always favour the same target."""
    k = (rnd - 1) % len(targets) if targets else 0
    return [*targets[k:], *targets[:k]]


def run_rounds(targets: Sequence[Target], rounds: int,
               one: Callable[[Target, int], dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """`one(target, round)` for every target in every round, in `round_order`: the runs,
    each marked with its `place` in its round (from 1), and each round's order by name."""
    runs: list[dict[str, Any]] = []
    orders: list[list[str]] = []
    for rnd in range(1, rounds + 1):
        order = round_order(targets, rnd)
        orders.append([t.name for t in order])
        for place, target in enumerate(order, 1):
            runs.append({**one(target, rnd), "place": place})
    return runs, orders


# ------------------------------------------------------------------ one run

def loadgen_cmd(args: argparse.Namespace, scenario: str, target: Target, port: int,
                opts: dict[str, Any]) -> list[str]:
    if args.loadgen == "node" and args.harness == "own":
        cmd = ["node", str(OWN / "loadgen.js")]
        if args.lg_workers:
            cmd += ["--workers", str(args.lg_workers)]
    elif args.loadgen == "node":
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
    """Start `target`, drive it with the loadgen while sampling it, stop it: one run's figures."""
    tag = f"[{scenario} r{rnd} {target.name}]"
    res: dict[str, Any] = {"target": target.name, "round": rnd}
    srv = Server(target, logdir / f"{scenario}-{target.name}-r{rnd}.server.log", args.sample_ms / 1000)
    smp = srv.sampler
    try:
        log(f"{tag} starting: {' '.join(srv.cmdline)}")
        srv.wait_ready(args.ready_timeout)
        smp.sample()
        base = dict(smp.rss)
        smp.start()
        cmd = loadgen_cmd(args, scenario, target, srv.port, opts)
        log(f"{tag} ready ({len(smp.pids)} processes); loadgen {' '.join(cmd[2:])}")
        marks: Marks = {"start": (time.monotonic(), smp.cpu())}
        shared_lg = args.loadgen == "node" and args.harness == "shared"
        lg = subprocess.Popen(cmd, cwd=HARNESS if shared_lg else REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lg_log = open(logdir / f"{scenario}-{target.name}-r{rnd}.loadgen.log", "w")  # noqa: SIM115

        def watch() -> None:
            assert lg.stderr is not None
            last = 0.0
            for line in lg.stderr:
                lg_log.write(line)
                if line.startswith("@@phase"):
                    smp.refresh()
                    marks[line.split()[1]] = (time.monotonic(), smp.cpu())
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
        marks["end"] = (time.monotonic(), smp.cpu())
        smp.stopping.set()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"loadgen printed no result (exit {lg.returncode}); see {lg_log.name}")
        res.update(json.loads(lines[-1]))
        res.update(measure(smp, base, marks, res))
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, not fatal
        res["error"] = str(exc)
        log(f"{tag} ERROR {exc}")
    finally:
        srv.stop()
    restarts = srv.restarts()
    if restarts:  # a crashed child makes the run suspect: say so
        res["restarts"] = restarts
        log(f"{tag} WARNING: {restarts} child restart(s) during the run, see {srv.logf.name}")
    log(f"{tag} -> {run_summary(scenario, res)}")
    return res


def plot(scenario: str, summary: dict[str, Any], runs: list[dict[str, Any]], load: dict[str, Any],
         path: Path) -> Path | None:
    """bench.plot's PNG for one scenario; None (and a note) without matplotlib."""
    try:
        from bench.plot import plot_scenario
        return plot_scenario(scenario, summary, runs, load, path)
    except ImportError:
        log("bench: no matplotlib (pip install -e '.[dev]'): no plot")
        return None


def pipeline_floor(quick: bool, repeat: int, chat: dict[str, Any]) -> dict[str, Any] | None:
    """bench.pipeline_floor in a process of its own (its CPU is measured from /proc), at the
    rate the chat load sends messages (2,000 msg/s for the issue's load), so that the two
    per-message figures compare."""
    try:
        rate = float(chat["rooms"]) * float(chat["clients"]) * float(chat["rate"])
    except (KeyError, ValueError):
        rate = 2000.0
    cmd = [sys.executable, "-m", "bench.pipeline_floor", "--json", "--rate", f"{rate:g}",
           "--duration", "3" if quick else "4", "--repeat", str(max(1, repeat))]
    log(f"\n== pipeline floor ({' '.join(cmd[1:])})")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=30 + 15 * max(1, repeat))
    except subprocess.TimeoutExpired:
        proc.terminate()  # it stops its echo process and removes its directory
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log("bench: the pipeline floor timed out")
        return None
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        log(f"bench: the pipeline floor failed (exit {proc.returncode})")
        return None
    floor: dict[str, Any] = json.loads(lines[-1])
    return floor


# Scenarios with a module of their own (its own cluster or pair, meshstream alone, no peers
# and no rounds): the name in --scenarios -> the module's name under bench/.
OWN_MODULES = {"resume": "resume_bench", "capacity": "capacity", "failover": "failover_bench",
               "stuck-gateway": "stuck_gateway_bench", "handshakes": "handshake_bench",
               "api": "api_bench", "link": "link_bench", "log": "log_bench"}


def module_scenario(name: str, opts: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """bench.<module> with `opts` (--set NAME.OPTION=VALUE) as its flags."""
    module = importlib.import_module(f"bench.{OWN_MODULES[name]}")
    argv: list[str] = []
    for k, v in opts.items():
        flag = f"--{k.replace('_', '-')}"
        argv += [flag] if v is True else [flag, str(v)]
    log(f"\n== {name} (python -m {module.__name__} {' '.join(argv)})")
    result: tuple[dict[str, Any], str] = module.run_scenario(module.parser().parse_args(argv))
    return result


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="fanout,chat,idle",
                    help="comma list of fanout,chat,idle,resume,capacity,failover,stuck-gateway,"
                         "handshakes,api,link,log (all but the first three: only when named)")
    ap.add_argument("--baseline", metavar="DIR",
                    help="another meshstream checkout (e.g. `git worktree add /tmp/base HEAD~3`), "
                         "run as target 'baseline' beside this one: an A/B in one run")
    ap.add_argument("--peers", default="raw_ws,nodesio",
                    help="comma list of raw_ws,nodesio,pysio, or 'none'")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smaller loads and 1 round")
    ap.add_argument("--harness", choices=["own", "shared"],
                    default=os.environ.get("MESHSTREAM_BENCH_HARNESS", "own"),
                    help="own: bench/node's loadgen and bench/peers (default); shared: ../shared/bench's")
    ap.add_argument("--shared-dir", default=str(DEFAULT_SOURCE),
                    help="the shared harness to copy for --harness shared (default ../shared/bench)")
    ap.add_argument("--loadgen", choices=["auto", "node", "python"], default="auto")
    ap.add_argument("--lg-workers", type=int, default=0,
                    help="the own loadgen's worker processes (default: one per core, at least 2)")
    ap.add_argument("--out", default=str(CACHE), help="where results, plots and logs go (bench-results)")
    ap.add_argument("--no-plots", dest="plots", action="store_false", help="no PNG per scenario")
    ap.add_argument("--set", action="append", default=[], metavar="SCENARIO.OPTION=VALUE",
                    help="override a load option, e.g. --set fanout.clients=500")
    ap.add_argument("--lg-timeout", type=int, default=180)
    ap.add_argument("--ready-timeout", type=float, default=60)
    ap.add_argument("--sample-ms", type=int, default=200)
    ap.add_argument("--pause", type=float, default=1.0)
    ap.add_argument("--quiet", action="store_true", help="no loadgen progress lines")
    ap.add_argument("--no-processor", dest="processor", action="store_false",
                    help="skip the processor micro-benchmark (bench.processor_bench)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip the pipeline floor (bench.pipeline_floor)")
    args = ap.parse_args(argv)
    if args.quick and args.rounds == 2:
        args.rounds = 1

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by servers and loadgen

    node_ok = py_ok = False
    peers = [] if args.peers in ("", "none") else args.peers.split(",")
    for p in peers:
        if p not in (OWN_PEERS if args.harness == "own" else PEERS):
            ap.error(f"unknown peer {p} for the {args.harness} harness")
    if args.harness == "own":
        node_ok = py_ok = prepare_own()
        if not node_ok:
            log("bench: the own harness needs Node and `npm ci` in bench/node; meshstream alone, "
                "driven by bench/loadgen.py")
    elif (Path(args.shared_dir) / "loadgen.js").exists():
        node_ok, py_ok = prepare_harness(Path(args.shared_dir), sys.executable)
    else:
        log(f"bench: no shared harness at {args.shared_dir}: meshstream alone, driven by bench/loadgen.py")
    if args.loadgen == "auto":
        args.loadgen = "node" if node_ok else "python"
    if args.loadgen != "node" and peers:
        log("bench: peers need the Node loadgen; measuring meshstream alone")
        peers = []
    if not py_ok:
        peers = [p for p in peers if p not in ("raw_ws", "pysio")]
    known = own_peer_targets() if args.harness == "own" else peer_targets()
    targets = [meshstream_target(args.gateways)] + [known[p] for p in peers]
    if args.baseline:
        targets.insert(1, meshstream_target(args.gateways, Path(args.baseline).resolve(), "baseline"))

    loads = {s: dict(SCENARIOS[s], **(QUICK[s] if args.quick else {})) for s in SCENARIOS}
    for item in args.set:
        key, _, value = item.partition("=")
        scen, _, opt = key.partition(".")
        loads[scen][opt] = value
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out)
    logdir = out_dir / "logs" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    log(f"bench: targets {', '.join(t.name for t in targets)}; {args.harness} harness, "
        f"loadgen {args.loadgen}; {args.rounds} round(s); logs in {logdir}")

    # `make run` (the meshstream target) names no --log: the figures say which log they ran on
    meshstream_log = os.environ.get("MESHSTREAM_LOG") or "embedded (meshstream run's default)"
    results: dict[str, Any] = {"time": stamp, "argv": sys.argv[1:], "nproc": os.cpu_count(),
                               "harness": args.harness, "loadgen": args.loadgen,
                               "meshstream_log": meshstream_log, "scenarios": {}}
    reports = []
    floor: dict[str, Any] | None = None
    started = time.monotonic()
    for scenario in [s for s in args.scenarios.split(",") if s]:
        if scenario in OWN_MODULES:
            results["scenarios"][scenario], text = module_scenario(scenario, loads[scenario])
            reports.append(text)
            log(text)
            continue
        def one(target: Target, rnd: int, scenario: str = scenario) -> dict[str, Any]:
            res = run_one(args, scenario, target, rnd, logdir, loads[scenario])
            time.sleep(args.pause)
            return res

        runs, orders = run_rounds(targets, args.rounds, one)
        if scenario == "chat" and args.floor:  # measured next to the chat runs: the box drifts
            floor = results["pipeline_floor"] = pipeline_floor(args.quick, args.rounds, loads["chat"])
        summary = {t.name: median_of([r for r in runs if r["target"] == t.name]) for t in targets}
        results["scenarios"][scenario] = {"load": loads[scenario], "summary": summary, "runs": runs,
                                          "orders": orders}
        reports.append(report(scenario, summary, loads[scenario], floor, orders))
        log(reports[-1])
        if args.plots:
            png = plot(scenario, summary, runs, loads[scenario], out_dir / f"{scenario}-{stamp}.png")
            if png:
                reports.append(f"plot: {png}")
    if args.floor and "pipeline_floor" not in results:
        floor = results["pipeline_floor"] = pipeline_floor(args.quick, args.rounds, loads["chat"])
        if floor:
            from bench.pipeline_floor import describe

            reports.append("\n== " + describe(floor))
    if args.processor:
        from bench import processor_bench

        log("\n== processor micro-benchmark (python -m bench.processor_bench)")
        pargs = ["--frames", "100000", "--repeat", "2"] if args.quick else []
        results["processor"] = processor_bench.main(pargs)
        reports.append("\n== processor alone (bench.processor_bench)\n"
                       + processor_bench.table(results["processor"]))
    path = out_dir / f"bench-{stamp}.json"
    write_results(path, results)
    print(f"\nmeshstream benchmark ({args.gateways} gateways, loadgen {args.loadgen}, "
          f"{args.rounds} round(s), {time.monotonic() - started:.0f} s; --log {meshstream_log}"
          " unless a scenario names one)")
    print("\n".join(reports))
    print(f"\nraw runs: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
