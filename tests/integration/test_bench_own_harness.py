"""`make bench` with the repository's own harness, in its smallest form: meshstream and both
peers (raw_ws, nodesio) driven by bench/node's multi-process loadgen, the side-by-side table
printed and a PNG written. Needs Node (bench/node is `npm ci`-ed on first use)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_bench_report import table_rows

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="node/npm are not installed (CI has Node 20)")


def test_quick_bench_prints_the_table_and_writes_a_plot(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MESHSTREAM_BENCH_HARNESS"}
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--scenarios", "chat", "--quick", "--set", "chat.rooms=5",
         "--set", "chat.duration=1", "--lg-workers", "2", "--no-processor", "--no-floor",
         "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "own harness, loadgen node" in run.stderr
    assert "chat: 1 s" in run.stderr or "connected 20/20" in run.stderr  # the loadgen's progress
    rows = table_rows(run.stdout)
    for target in ("meshstream", "raw_ws", "nodesio"):
        assert rows[target][1] == "1/1", run.stdout
    assert "target p99_ms <= 2.5x raw_ws" in run.stdout
    [results] = tmp_path.glob("bench-*.json")
    data = json.loads(results.read_text())
    assert data["harness"] == "own"
    for r in data["scenarios"]["chat"]["runs"]:
        assert r["workers"] == 2 and r["sent"] > 0 and r["lost"] == 0, r
    [png] = tmp_path.glob("chat-*.png")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"plot: {png}" in run.stdout
