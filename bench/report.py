"""What `make bench` prints and keeps: per-target medians, meshstream's ratios to its peers
and to the issue's targets, each round's order of the targets, a per-process table, the
pipeline floor beside the chat figures, and every raw run in bench-results/bench-<time>.json."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

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
             ("cpu_s", "cpu_s"), ("us/msg", "cpu_us_per_msg"), ("srv%", "srv_util"),
             ("lgELU", "lg_elu"), ("rssMB", "rss_peak_mb")],
    "idle": [("conns", "conns"), ("ok", "connected"), ("joined", "joins_confirmed"),
             ("open", "still_open"), ("conn_s", "connect_s"), ("join_s", "join_s"),
             ("baseMB", "rss_base_mb"), ("holdMB", "rss_hold_mb"), ("KB/conn", "kb_per_conn"),
             ("cpu_s", "cpu_s")],
}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric field present in every successful run, and per process."""
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


def run_summary(scenario: str, res: dict[str, Any]) -> str:
    """One run's figures on one line (the driver's progress)."""
    return ", ".join(f"{c}={fmt(res.get(k))}" for c, k in COLUMNS[scenario] if k in res)


def floor_lines(summary: dict[str, dict[str, Any]], floor: dict[str, Any] | None) -> list[str]:
    """meshstream's CPU per chat message against the pipeline floor plus the websocket work
    (raw_ws's whole CPU per chat message stands for the latter)."""
    if not floor:
        return []
    f = floor["median_cpu_us_per_msg"]
    lines = [f"pipeline floor {f:.0f} us CPU/msg (bare PUSH->PULL->PUB->SUB round trip, "
             f"2 processes, {floor['rate']} msg/s; python -m bench.pipeline_floor)"]
    ms = summary.get("meshstream", {}).get("cpu_us_per_msg")
    raw = summary.get("raw_ws", {}).get("cpu_us_per_msg")
    parts = [f"meshstream {ms:.0f} us" if ms else "meshstream -", f"raw_ws {raw:.0f} us" if raw else ""]
    line = "chat CPU per message sent: " + ", ".join(p for p in parts if p)
    if ms:
        line += f"; meshstream / floor = {ms / f:.2f}x"
    lines.append(line)
    if ms and raw:
        adj = f + raw
        lines.append(f"floor + raw_ws = {adj:.0f} us ({adj / raw:.2f}x raw_ws): meshstream / "
                     f"(floor + raw_ws) = {ms / adj:.2f}x, {ms - adj:+.0f} us per message beyond it")
    return lines


def order_line(orders: list[list[str]]) -> str:
    """Each round's order of the targets (bench.run.round_order), and whether the rounds
    balance it: every target in every place equally often."""
    places = max(map(len, orders), default=0)
    line = "order per round: " + "; ".join(f"r{i} {' '.join(o)}" for i, o in enumerate(orders, 1))
    if places > 1 and len(orders) % places:
        line += (f" (unbalanced: {len(orders)} round(s); a multiple of {places} puts every target "
                 "in every place)")
    return line


def report(scenario: str, summary: dict[str, dict[str, Any]], opts: dict[str, Any],
           floor: dict[str, Any] | None = None, orders: list[list[str]] | None = None) -> str:
    cols = COLUMNS[scenario]
    load = " ".join(f"--{k} {v}" for k, v in opts.items())
    lines = [f"\n== {scenario} ({load}); medians of successful runs"]
    rows = [["target", "runs"] + [c for c, _ in cols]]
    for name, s in summary.items():
        rows.append([name, f"{s['ok_runs']}/{s['runs']}"] + [fmt(s.get(k)) for _, k in cols])
    lines.append(table(rows))
    if orders:
        lines.append(order_line(orders))
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
    if scenario == "chat":
        lines.extend(floor_lines(summary, floor))
    if ms and ms.get("ok_runs"):
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


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=1))
