"""`make bench BENCH_ARGS="--scenarios stuck-gateway"` in its smallest form (bench.run's
wiring of bench.stuck_gateway_bench, --quick, 6 s of chat): real clusters, the real stuck
gateway process; every message reaches the healthy clients and the processor drops the
stuck gateway. No timing is asserted (the figures are the benchmark's business)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import run, stuck_gateway_bench


def test_the_quick_stuck_gateway_scenario_measures_both_kinds_and_the_drop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stuck_gateway_bench, "CACHE", tmp_path)  # its JSON and logs go here
    results, text = run.module_scenario("stuck-gateway", {"quick": True, "duration": 6, "pause": 0.5})
    reference, stuck = results["rounds"]
    assert (reference["kind"], stuck["kind"]) == ("reference", "stuck"), results["rounds"]
    for r in (reference, stuck):
        assert "error" not in r, r
        assert r["sent"] > 0 and r["delivered"] == r["expected"], r
        assert r["lost"] == r["dups"] == r["disorder"] == r["errors"] == r["disconnects"] == 0, r
        assert r["restarts"] == 0 and isinstance(r["loop_max_ms"], float), r
    assert reference["stalled_drops"] == 0
    assert stuck["dropped"] is True and stuck["stalled_drops"] == 1, stuck
    assert "== stuck-gateway" in text and "dropped by the processor: 1/1 runs" in text
    saved = json.loads(Path(results["path"]).read_text())
    assert saved["rounds"] == results["rounds"] and Path(saved["logs"]).parent == tmp_path / "logs"
