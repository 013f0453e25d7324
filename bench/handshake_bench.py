"""The header-stuffing benchmark (issue 20, item 5): handshakes that send a megabyte of
headers and never finish, round after round; the gateways' memory must stay bounded and
must not rise from one round to the next.

    python -m bench.handshake_bench                       # the issue's load: 6 rounds of 800
    python -m bench.handshake_bench --max-header-bytes 2000000   # heads held, not refused
    python -m bench.handshake_bench --quick               # 3 rounds of 200, held 2 s
    make bench BENCH_ARGS="--scenarios handshakes"        # the same, from bench.run

`make run GATEWAYS=2` on a free port (bench.harness.meshstream_target). Each round opens
--conns connections at once; each sends a request line and --lines header lines of
--line-bytes (120 x 8,000 B: about 1 MB) without the blank line that ends a head, and
holds the connection --hold seconds (12: past the gateway's 10 s handshake deadline) or
until answered. With the defaults a gateway answers 431 once a head passes
--max-header-bytes (16 KiB); with a larger one it holds heads up to HANDSHAKE_BYTES
(64 MiB) per gateway and answers 503 past it. After each round (every connection gone,
--settle seconds) each gateway's RSS is read from /proc.

The verdict: every round's RSS per gateway under its RSS at start + 64 MiB + --slack MB,
and the last round's no more than --rise MB above the first's (before the fix each round
left 280-410 MB behind: websockets' ServerProtocol, kept in a reference cycle, held each
dropped head until a full collection). A table on stdout, every figure in
bench-results/handshakes-<time>.json; the cluster is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from typing import Any

from bench import log, scenario_main
from bench.harness import CACHE, HOST, Server, meshstream_target, save
from bench.sampling import proc_name, rss_kb, tree

DEFAULTS: dict[str, Any] = {"rounds": 6, "conns": 800, "lines": 120, "line_bytes": 8000,
                            "hold": 12.0, "settle": 1.0, "gateways": 2, "max_header_bytes": 0}
QUICK = {"rounds": 3, "conns": 200, "hold": 2.0}
HANDSHAKE_MIB = 64  # services.gateway.HANDSHAKE_BYTES, per gateway


async def stuff(port: int, lines: int, hold: float, line_bytes: int = 8000) -> int | None:
    """One handshake that never completes: a request line, then `lines` header lines of
    `line_bytes` each and no blank line. Held until answered or `hold` seconds after the
    last line went out (or could not: the gateway stopped reading). Returns the status the
    gateway answered with, or None (no answer: held, dropped or reset)."""
    reader, writer = await asyncio.open_connection(HOST, port)

    async def send() -> None:
        try:
            writer.write(f"GET /wsmesh HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode())
            for i in range(lines):
                writer.write(b"X-Pad-%d: " % i + b"a" * line_bytes + b"\r\n")
                await writer.drain()
        except OSError:
            pass

    answer = asyncio.ensure_future(reader.readline())
    sending = asyncio.ensure_future(send())
    try:
        await asyncio.wait({answer, sending}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            await asyncio.wait({answer}, timeout=hold)
        if answer.done() and answer.exception() is None:
            status = answer.result().split(b" ", 2)
            if status[0].startswith(b"HTTP/") and len(status) > 1 and status[1].isdigit():
                return int(status[1])
        return None
    finally:
        answer.cancel()
        sending.cancel()
        writer.close()


def gateway_rss(root: int) -> dict[str, int]:
    """RSS (bytes) of each `gateway N` process under `root`."""
    return {name: rss_kb(pid) * 1024 for pid in tree(root)
            if (name := proc_name(pid)).startswith("gateway ")}


async def rounds(o: argparse.Namespace, server: Server) -> list[dict[str, Any]]:
    out = []
    for n in range(o.rounds):
        started = time.monotonic()
        answers = await asyncio.gather(*(stuff(server.port, o.lines, o.hold, o.line_bytes)
                                         for _ in range(o.conns)), return_exceptions=True)
        await asyncio.sleep(o.settle)
        seen = Counter("refused" if isinstance(a, BaseException) else str(a) for a in answers)
        rss = gateway_rss(server.proc.pid)
        out.append({"round": n + 1, "seconds": round(time.monotonic() - started, 1),
                    "answers": dict(seen), "rss": rss})
        log(f"round {n + 1}: {dict(seen)} rss MB { {k: v >> 20 for k, v in rss.items()} }")
    return out


def verdict(start: dict[str, int], done: list[dict[str, Any]], slack: int, rise: int) -> str:
    if not done or not start:
        return "FAIL (no figures)"
    for name, before in start.items():
        bound = before + (HANDSHAKE_MIB << 20) + (slack << 20)
        figures = [r["rss"].get(name, 0) for r in done]
        if max(figures) > bound:
            return f"FAIL ({name}: {max(figures) >> 20} MB over the bound {bound >> 20} MB)"
        if figures[-1] - figures[0] > rise << 20:
            return f"FAIL ({name}: rose {(figures[-1] - figures[0]) >> 20} MB from round 1)"
    return "PASS"


def run_scenario(o: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if o.quick:
        for k, v in QUICK.items():
            if getattr(o, k) == DEFAULTS[k]:
                setattr(o, k, v)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    CACHE.mkdir(exist_ok=True)
    target = meshstream_target(o.gateways)
    if o.max_header_bytes:
        target.env = {**target.env, "MESHSTREAM_MAX_HEADER_BYTES": str(o.max_header_bytes)}
    server = Server(target, CACHE / f"handshakes-{stamp}.log", 0.5)
    load = {k: getattr(o, k) for k in DEFAULTS}
    results: dict[str, Any] = {"time": stamp, "argv": sys.argv[1:], "nproc": os.cpu_count(), "load": load}
    try:
        server.wait_ready(60)
        results["start"] = gateway_rss(server.proc.pid)
        results["rounds"] = asyncio.run(rounds(o, server))
    finally:
        server.stop()
    results["verdict"] = verdict(results.get("start", {}), results.get("rounds", []), o.slack, o.rise)
    names = sorted(results.get("start", {}))
    lines = [f"header-stuffed handshakes: {o.conns} per round x {o.lines} x {o.line_bytes} B, "
             f"{o.gateways} gateways" + (f", --max-header-bytes {o.max_header_bytes}"
                                          if o.max_header_bytes else ""),
             "round  answers" + "".join(f"  {n} MB" for n in names),
             "start  -      " + "".join(f"  {results['start'][n] >> 20:>10}" for n in names)]
    for r in results.get("rounds", []):
        lines.append(f"{r['round']:>5}  {r['answers']}" + "".join(
            f"  {r['rss'].get(n, 0) >> 20:>10}" for n in names))
    lines.append(f"verdict: {results['verdict']}")
    save(results, f"handshakes-{stamp}")
    return results, "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.handshake_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DEFAULTS
    ap.add_argument("--rounds", type=int, default=d["rounds"], help="rounds (6)")
    ap.add_argument("--conns", type=int, default=d["conns"], help="connections per round (800)")
    ap.add_argument("--lines", type=int, default=d["lines"], help="header lines per connection (120)")
    ap.add_argument("--line-bytes", type=int, default=d["line_bytes"], help="bytes per header line (8000)")
    ap.add_argument("--hold", type=float, default=d["hold"],
                    help="seconds a connection is held after its last line (12: past the 10 s deadline)")
    ap.add_argument("--settle", type=float, default=d["settle"], help="seconds before RSS is read")
    ap.add_argument("--gateways", type=int, default=d["gateways"], help="gateway processes (2)")
    ap.add_argument("--max-header-bytes", type=int, default=d["max_header_bytes"],
                    help="the gateways' --max-header-bytes (0: their default, 16384)")
    ap.add_argument("--slack", type=int, default=100, help="MB allowed over start + 64 MiB (100)")
    ap.add_argument("--rise", type=int, default=32, help="MB the last round may rise over the first (32)")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 200, held 2 s")
    return ap


def main(argv: list[str] | None = None) -> int:
    return scenario_main(parser, run_scenario, lambda results: results["verdict"] == "PASS", argv)


if __name__ == "__main__":
    sys.exit(main())
