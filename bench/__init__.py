"""meshstream's own benchmarks: `make bench` (bench.run) and the processor micro-benchmark.

    harness.py         the harnesses (own, shared) and the servers under test: prepare, start, stop
    node/loadgen.js    the own load generator: clients in several worker processes (`npm ci` there)
    peers/             the own peers: rooms.py (raw_ws, one websockets process), sio_rooms.js (nodesio)
    plot.py            a matplotlib PNG per scenario
    sampling.py        /proc: process trees, CPU ticks, RSS, listening ports
    report.py          medians, ratios, tables, the JSON results file
    run.py             `python -m bench.run` (`make bench`): wires the above
    pipeline_floor.py  the bare PUSH -> PULL -> PUB -> SUB round trip's CPU per message
    processor_bench.py the processor alone, envelopes per second
    loadgen.py         a small Python load generator, when Node is missing
    resume_bench.py    recovery: a gateway SIGKILLed under chat load (`--scenarios resume`)
    resume_client.py   its worker processes, which hold the clients and check every offset
    capacity.py        per-core rates of a gateway and the processor (`--scenarios capacity`)
    failover_bench.py  a processor pair's active one SIGKILLed under chat (`--scenarios failover`)
    stuck_gateway_bench.py  chat through 2 gateways while a third stops reading (`--scenarios stuck-gateway`)
    api_bench.py       HTTP API publishes beside a watcher, per gateway CPU-second (`--scenarios api`)
    link_bench.py      both link ends' Python per chat message, in one process (`--scenarios link`)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def log(*args: object) -> None:
    """Progress goes to stderr; stdout is kept for the final report."""
    print(*args, file=sys.stderr, flush=True)


def scenario_main(parser: Callable[[], argparse.ArgumentParser],
                  run_scenario: Callable[[argparse.Namespace], tuple[dict[str, Any], str]],
                  passed: Callable[[dict[str, Any]], bool], argv: list[str] | None = None) -> int:
    """`python -m bench.<scenario>`: run it, print its report and where its raw file is;
    exit 0 when `passed(results)`."""
    results, text = run_scenario(parser().parse_args(argv))
    print(text)
    path = Path(results["path"])
    print(f"\nraw: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0 if passed(results) else 1
