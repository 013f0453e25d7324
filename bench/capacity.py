"""Capacity: per-gateway-process and processor figures, and the plan they give (docs/performance.md).

    python -m bench.capacity                      # ~1.5 min on 2 cores
    python -m bench.capacity --quick              # smaller loads (a smoke test)
    python -m bench.capacity --transport curve    # CURVE over loopback TCP, as between hosts
    make bench BENCH_ARGS="--scenarios capacity"  # the same, from bench.run (only when named)

--transport says what the gateway-processor links run over, in both measurements: ipc
(the default: the run directory), tcp (the processor's --tcp on loopback ports) or curve
(that, with --keys-dir made by `meshstream keys` in a temporary directory).

Two measurements, each bounded in time, each stopping every process it started:

  gateway    `make run GATEWAYS=1` driven by the loadgen (bench/node's loadgen.js, bench.run's
             default, else bench/loadgen.py) while /proc is sampled; the one gateway process's
             CPU-seconds between the loadgen's measure marks give
               fan-out  deliveries per gateway CPU-second (fanout: 1 room x --fanout-clients
                        receivers, so almost all of its work is writing deliveries);
               ingest   client frames per gateway CPU-second (chat: rooms of 4 at --chat-rate
                        msg/s per client; the delivery cost measured by fanout is subtracted);
               memory   KB per held connection, gateway process alone (idle: --idle-conns joined).
  processor  bench.processor_bench at the `processor` level (decode + route + encode, one core,
             no sockets) and the `zmq` level (a real processor process, its routing thread) with
             1, 2, 4, 8, 16 fake gateways and rooms of 16 spread round-robin over them, so every
             room message is one Deliver per gateway (min(16, G)). A least-squares line through
             microseconds per room message gives base + per-gateway cost x G.

The plan (`plan()`): for room size S and message rate M (room messages/s over all rooms),
deliveries = M*S, gateway cores = M*S / fan-out rate + M / ingest rate, processor core =
M * (base + per-gateway * min(S, G)) where G is the number of gateway processes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import log, processor_bench
from bench.harness import CACHE, Target, meshstream_target, prepare_own

GATEWAY_COUNTS = (1, 2, 4, 8, 16)
CORE_BUDGET = 0.7  # plan each core to 70%: headroom for bursts, GC and the box being shared
HOST_CORES = 8  # a gateway host in the tables: 8 cores, one gateway process per core (--gateways 8)
WIRE_BYTES = 250  # a delivery of a 100-byte body on the wire: JSON frame + WebSocket + TCP/IP share
LINK_BYTES_S = 117e6  # 1 Gbit/s of payload


def _gateway_cpu(res: dict[str, Any]) -> float:
    return sum(d["cpu_s"] for name, d in res.get("procs", {}).items() if "gateway" in name)


def _proc_stat(res: dict[str, Any], key: str, part: str) -> float:
    return sum(d.get(key, 0.0) for name, d in res.get("procs", {}).items() if part in name)


def measure_gateway(args: argparse.Namespace) -> dict[str, Any]:
    """One gateway process under fanout, chat and idle loads (bench.run's run_one each time)."""
    node_ok = prepare_own()
    rargs = argparse.Namespace(loadgen="node" if node_ok else "python", harness="own", lg_workers=0,
                               lg_timeout=120, sample_ms=200, ready_timeout=60, quiet=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logdir = CACHE / "logs" / f"capacity-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    target = meshstream_target(1)
    keys_tmp = tempfile.mkdtemp(prefix="mscapacity-")
    try:
        fields = processor_bench.transport_fields(args.transport, keys_tmp)
        target.env = dict(target.env, **{f"MESHSTREAM_{k.upper()}": v for k, v in fields.items()})
        return _gateway_runs(args, rargs, target, logdir)
    finally:
        shutil.rmtree(keys_tmp, ignore_errors=True)


def _gateway_runs(args: argparse.Namespace, rargs: argparse.Namespace, target: Target,
                  logdir: Path) -> dict[str, Any]:
    from bench import run

    chat = {"rate": args.chat_rate, "duration": args.chat_duration}
    loads = {
        "fanout": {"rooms": 1, "clients": args.fanout_clients, "messages": args.fanout_messages},
        "chat2": dict(chat, rooms=args.chat_clients // 2, clients=2),
        "chat8": dict(chat, rooms=args.chat_clients // 8, clients=8),
        "idle": {"conns": args.idle_conns, "rooms": 100, "hold": 3},
    }
    runs = {s: run.run_one(rargs, s.rstrip("28"), target, i, logdir, opts)  # i: apart in the logs
            for i, (s, opts) in enumerate(loads.items(), start=1)}
    for s, r in runs.items():
        if "error" in r:
            raise RuntimeError(f"capacity: the {s} run failed: {r['error']} (logs in {logdir})")
    fan, c2, c8, idle = runs["fanout"], runs["chat2"], runs["chat8"], runs["idle"]
    fan_cpu = _gateway_cpu(fan)
    # chat: gateway CPU = a * frames in + b * deliveries out, two room sizes -> a and b
    (f2, d2, u2), (f8, d8, u8) = [(r["sent"], r["received"], _gateway_cpu(r)) for r in (c2, c8)]
    b = (u8 * f2 - u2 * f8) / (d8 * f2 - d2 * f8)
    a = (u2 - b * d2) / f2
    return {
        "loadgen": rargs.loadgen, "transport": args.transport, "loads": loads, "logs": str(logdir),
        "fanout_deliveries": fan["received"], "fanout_gateway_cpu_s": round(fan_cpu, 2),
        "fanout_deliveries_per_s": fan.get("deliveries_per_s"),
        "fanout_deliveries_per_core": round(fan["received"] / fan_cpu) if fan_cpu else None,
        "chat": {s: {"frames": r["sent"], "deliveries": r["received"], "lost": r.get("lost"),
                     "gateway_cpu_s": round(_gateway_cpu(r), 2),
                     "processor_cpu_s": round(_proc_stat(r, "cpu_s", "processor"), 2),
                     "p99_ms": r.get("p99_ms")} for s, r in (("rooms of 2", c2), ("rooms of 8", c8))},
        # one delivery written on its own (chat) / one client frame taken in, per gateway CPU-s
        "deliveries_per_core": round(1 / b) if b > 0 else None,
        "ingest_frames_per_core": round(1 / a) if a > 0 else None,
        "idle_connected": idle.get("connected"),
        "gateway_kb_per_conn": round(_proc_stat(idle, "kb_per_conn", "gateway"), 2),
        "processor_kb_per_conn": round(_proc_stat(idle, "kb_per_conn", "processor"), 2),
        "all_kb_per_conn": idle.get("kb_per_conn"),
    }


def measure_processor(args: argparse.Namespace) -> dict[str, Any]:
    """bench.processor_bench per gateway count; a line through microseconds per room message."""
    points = []
    for g in args.gateway_counts:
        argv = ["--modes", args.processor_modes, "--gateways", str(g), "--room-size", "16",
                "--clients", "1600", "--frames", str(args.frames), "--repeat", str(args.repeat),
                "--transport", args.transport, "--json"]
        log(f"\n== capacity: processor, {g} gateway(s) (python -m bench.processor_bench "
            f"{' '.join(argv)})")
        s = processor_bench.main(argv)
        by = {r["mode"]: r for r in s["results"]}
        point: dict[str, Any] = {"gateways": g, "delivers_per_msg": min(16, g)}
        for mode, r in by.items():
            rate = processor_bench._per_cpu(r) if mode == "processor" else \
                r.get("envelopes_per_main_cpu_s") or 0
            point[mode] = {"envelopes_per_cpu_s": rate, "us_per_msg": round(1e6 / rate, 2) if rate else None}
            if mode == "zmq":
                whole = r.get("envelopes_per_cpu_s") or 0
                point[mode]["whole_process_per_cpu_s"] = whole
                point[mode]["whole_us_per_msg"] = round(1e6 / whole, 2) if whole else None
        points.append(point)
    fits = {}
    for mode, key in [(m, k) for m in args.processor_modes.split(",")
                      for k in ("us_per_msg", "whole_us_per_msg")]:
        xy = [(p["delivers_per_msg"], p[mode][key]) for p in points
              if mode in p and p[mode].get(key)]
        if len(xy) >= 2:
            fits[f"{mode}.{key}"] = fit(xy)
    return {"transport": args.transport, "points": points, "fits": fits}


def fit(xy: list[tuple[float, float]]) -> dict[str, float]:
    """Least squares y = base + per_gateway * x."""
    n = len(xy)
    mx, my = sum(x for x, _ in xy) / n, sum(y for _, y in xy) / n
    sxx = sum((x - mx) ** 2 for x, _ in xy)
    slope = sum((x - mx) * (y - my) for x, y in xy) / sxx if sxx else 0.0
    return {"base_us": round(my - slope * mx, 2), "per_gateway_us": round(slope, 2)}


# ------------------------------------------------------------------ the plan

WORKLOADS = [  # (name, room size S, room messages/s M over all rooms)
    ("chat, rooms of 4", 4, 10_000), ("chat, rooms of 4", 4, 50_000),
    ("rooms of 100", 100, 1_000), ("rooms of 100", 100, 5_000),
    ("broadcast, 1,000 members", 1000, 100), ("broadcast, 1,000 members", 1000, 1_000),
]


def plan_row(size: int, rate: float, deliv_core: float, ingest_core: float, base_us: float,
             per_gw_us: float) -> dict[str, Any]:
    """Room messages of `size` members at `rate`/s: gateway cores, hosts and the processor's core."""
    deliveries = rate * size
    gw_cores = deliveries / deliv_core + rate / ingest_core
    by_cores = math.ceil(gw_cores / CORE_BUDGET / HOST_CORES)
    by_nic = math.ceil(deliveries * WIRE_BYTES / (LINK_BYTES_S * CORE_BUDGET))
    hosts = max(1, by_cores, by_nic)
    gw_procs = max(1, min(hosts * HOST_CORES, math.ceil(gw_cores / CORE_BUDGET)))
    span = min(size, gw_procs)  # gateway processes holding members of one room
    proc_core = rate * (base_us + per_gw_us * span) / 1e6
    return {"S": size, "M": rate, "deliveries_per_s": deliveries, "gateway_cores": round(gw_cores, 2),
            "gateway_procs": gw_procs, "gateway_hosts": hosts, "span": span,
            "hosts_for": "NIC" if by_nic > by_cores else "cores",
            "processor_core": round(proc_core, 3),
            "host_mb_s": round(deliveries * WIRE_BYTES / hosts / 1e6, 1)}


def max_feed(size: int, deliv_core: float, ingest_core: float, base_us: float,
             per_gw_us: float) -> dict[str, Any]:
    """The largest rate one processor core (at CORE_BUDGET) routes for rooms of `size`, and the
    gateway processes and hosts that rate needs: how many gateway hosts one processor feeds."""
    lo, hi = 1.0, 100_000_000.0
    for _ in range(80):
        mid = (lo + hi) / 2
        row = plan_row(size, mid, deliv_core, ingest_core, base_us, per_gw_us)
        lo, hi = (mid, hi) if row["processor_core"] <= CORE_BUDGET else (lo, mid)
    row = plan_row(size, round(lo), deliv_core, ingest_core, base_us, per_gw_us)
    return row


def plan(gw: dict[str, Any], proc: dict[str, Any], mode: str = "zmq") -> dict[str, Any]:
    key = f"{mode}.us_per_msg" if f"{mode}.us_per_msg" in proc["fits"] else "processor.us_per_msg"
    f = proc["fits"][key]
    args = (gw["deliveries_per_core"] or gw["fanout_deliveries_per_core"],
            gw["ingest_frames_per_core"] or 10_000, f["base_us"], f["per_gateway_us"])
    c2 = gw["chat"]["rooms of 2"]  # the real processor at chat rates: small batches, dearer
    chat_us = 1e6 * c2["processor_cpu_s"] / max(1, c2["frames"])
    rows = [dict(plan_row(s, m, *args), name=n) for n, s, m in WORKLOADS]
    for r in rows:
        r["processor_core_chat"] = round(r["M"] * chat_us / 1e6, 3)
    return {"fit": key, "chat_us_per_msg": round(chat_us, 1), "rows": rows,
            "max": [dict(max_feed(s, *args), name=n) for n, s in
                    [("chat, rooms of 4", 4), ("rooms of 100", 100), ("broadcast, 1,000", 1000)]]}


def report(result: dict[str, Any]) -> str:
    lines = []
    gw = result.get("gateway")
    if gw:
        lines += ["== capacity: one gateway process (make run GATEWAYS=1, loadgen "
                  f"{gw['loadgen']}, processor links over {gw.get('transport', 'ipc')}), "
                  "per CPU-second of that process",
                  f"deliveries   {gw['deliveries_per_core'] or 0:>10,} chat-shaped (each written on its own)",
                  f"ingest       {gw['ingest_frames_per_core'] or 0:>10,} client frames taken in "
                  "(from chat in rooms of 2 and of 8: CPU = a x frames + b x deliveries)",
                  f"broadcast    {gw['fanout_deliveries_per_core'] or 0:>10,} deliveries, fanout (1 room, "
                  f"{gw['fanout_deliveries']:,} in {gw['fanout_gateway_cpu_s']} CPU-s, "
                  f"{gw['fanout_deliveries_per_s']:,}/s wall; several frames per socket write)",
                  f"memory       {gw['gateway_kb_per_conn']:>10} KB per held connection in the gateway "
                  f"({gw['processor_kb_per_conn']} KB in the processor, {gw['all_kb_per_conn']} all "
                  f"processes; {gw['idle_connected']:,} joined)"]
        for name, c in gw["chat"].items():
            lines.append(f"  chat {name}: {c['frames']:,} frames, {c['deliveries']:,} deliveries "
                         f"(lost {c['lost']}), gateway {c['gateway_cpu_s']} CPU-s, processor "
                         f"{c['processor_cpu_s']} CPU-s, p99 {c['p99_ms']} ms")
    proc = result.get("processor")
    if proc:
        modes = [m for m in ("processor", "zmq") if m in proc["points"][0]]
        lines += ["", "== capacity: processor, rooms of 16 over G gateways (one Deliver per gateway; "
                  f"zmq level over {proc.get('transport', 'ipc')})",
                  f"{'G':>3s} " + " ".join(f"{m + ' env/CPU-s':>20s} {'us/msg':>7s}" for m in modes)]
        for p in proc["points"]:
            lines.append(f"{p['gateways']:>3d} " + " ".join(
                f"{p[m]['envelopes_per_cpu_s']:>20,} {p[m]['us_per_msg'] or 0:>7.2f}" for m in modes))
        for k, f in proc["fits"].items():
            lines.append(f"fit {k}: {f['base_us']} us + {f['per_gateway_us']} us x G per room message")
    pl = result.get("plan")
    if pl:
        lines += ["", f"== capacity plan ({pl['fit']}; cores at {CORE_BUDGET:.0%}, {HOST_CORES}-core "
                  f"gateway hosts, {WIRE_BYTES} B per delivery, 1 Gbit/s NICs at {CORE_BUDGET:.0%})",
                  f"{'workload':26s} {'S':>5s} {'M msg/s':>10s} {'deliv/s':>11s} {'gw cores':>8s} "
                  f"{'hosts':>5s} {'(for)':>5s} {'proc core':>9s} {'MB/s/host':>9s} "
                  f"{'proc core at chat batches':>26s}"]
        for r in pl["rows"] + [dict(r, name="max: " + r["name"]) for r in pl["max"]]:
            lines.append(f"{r['name']:26s} {r['S']:>5d} {r['M']:>10,} {r['deliveries_per_s']:>11,.0f} "
                         f"{r['gateway_cores']:>8.1f} {r['gateway_hosts']:>5d} {r['hosts_for']:>5s} "
                         f"{r['processor_core']:>9.2f} {r['host_mb_s']:>9.1f} "
                         f"{r.get('processor_core_chat', '-'):>26}")
        lines.append(f"proc core: the fit (GatewayBatches of 64, as under saturation); at chat batches: "
                     f"{pl['chat_us_per_msg']} us per message, the processor's CPU in the chat run "
                     "(rooms of 2), an upper bound at low rates")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="gateway,processor", help="comma list of gateway,processor")
    ap.add_argument("--quick", action="store_true", help="smaller loads, one run per level")
    ap.add_argument("--fanout-clients", type=int, default=1000)
    ap.add_argument("--fanout-messages", type=int, default=3000)
    ap.add_argument("--chat-clients", type=int, default=1000)
    ap.add_argument("--chat-rate", type=float, default=8, help="messages/s per chat client")
    ap.add_argument("--chat-duration", type=float, default=8)
    ap.add_argument("--idle-conns", type=int, default=5000)
    ap.add_argument("--gateway-counts", type=lambda s: [int(x) for x in s.split(",")],
                    default=list(GATEWAY_COUNTS))
    ap.add_argument("--processor-modes", default="processor,zmq")
    ap.add_argument("--transport", choices=processor_bench.TRANSPORTS, default="ipc",
                    help="gateway-processor links: IPC, loopback TCP, or CURVE over loopback TCP")
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    return ap


def run_scenario(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.quick:
        args.fanout_clients = min(args.fanout_clients, 300)
        args.fanout_messages = min(args.fanout_messages, 1000)
        args.chat_duration, args.idle_conns = min(args.chat_duration, 4), min(args.idle_conns, 2000)
        args.frames, args.repeat = min(args.frames, 30_000), 1
    result: dict[str, Any] = {"time": time.strftime("%Y%m%d-%H%M%S"), "nproc": os.cpu_count(),
                              "transport": args.transport}
    parts = args.parts.split(",")
    if "gateway" in parts:
        result["gateway"] = measure_gateway(args)
    if "processor" in parts:
        result["processor"] = measure_processor(args)
    if "gateway" in parts and "processor" in parts:
        result["plan"] = plan(result["gateway"], result["processor"])
    return result, report(result)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result, text = run_scenario(args)
    path = CACHE / f"capacity-{result['time']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(text)
    print(f"\nraw figures: {path}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
