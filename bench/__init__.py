"""meshstream's own benchmarks: `make bench` (bench.run) and the processor micro-benchmark.

    harness.py         the shared harness and the servers under test: prepare, start, stop
    sampling.py        /proc: process trees, CPU ticks, RSS, listening ports
    report.py          medians, ratios, tables, the JSON results file
    run.py             `python -m bench.run` (`make bench`): wires the above
    pipeline_floor.py  the bare PUSH -> PULL -> PUB -> SUB round trip's CPU per message
    processor_bench.py the processor alone, envelopes per second
    loadgen.py         a small Python load generator, when the harness or Node is missing
    resume_bench.py    recovery: a gateway SIGKILLed under chat load (`--scenarios resume`)
    resume_client.py   its worker processes, which hold the clients and check every offset
    capacity.py        per-core rates of a gateway and the processor (`--scenarios capacity`)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def log(*args: object) -> None:
    """Progress goes to stderr; stdout is kept for the final report."""
    print(*args, file=sys.stderr, flush=True)
