"""bench.link_bench, tiny: both link ends and the real processor in one process deliver every
chat message to every member of its room, and the figure (µs of Python per message) comes
out of `make bench BENCH_ARGS="--scenarios link"` as well as `python -m bench.link_bench`."""

from __future__ import annotations

import json
from pathlib import Path

from bench import link_bench
from bench.run import module_scenario

TINY = ["--clients", "40", "--messages", "300", "--repeat", "2"]


def test_the_link_bench_measures_chat_through_both_link_ends(tmp_path: Path) -> None:
    results, text = link_bench.run_scenario(link_bench.parser().parse_args([*TINY, "--out", str(tmp_path)]))
    assert results["verdict"] == "PASS" and results["notices"] == []
    assert results["deliveries"] == results["deliveries_owed"] == 2 * 300 * 4  # the sender's copy too
    runs = results["runs_us_per_msg"]
    assert len(runs) == 2 and results["us_per_msg"] == min(runs) > 0
    assert f"{results['us_per_msg']:.1f} us of Python per chat message (best of 2 x 300" in text
    assert json.loads(Path(results["path"]).read_text())["us_per_msg"] == results["us_per_msg"]
    assert Path(results["path"]).parent == tmp_path


def test_make_bench_runs_it_as_the_link_scenario(tmp_path: Path) -> None:
    results, text = module_scenario("link", {"clients": 8, "room_size": 2, "gateways": 3, "messages": 50,
                                             "repeat": 1, "out": str(tmp_path)})
    assert results["load"] == {"clients": 8, "room_size": 2, "gateways": 3, "messages": 50, "repeat": 1}
    assert results["deliveries"] == results["deliveries_owed"] == 50 * 2
    assert "3 gateway cores + the processor" in text and "-> PASS" in text

