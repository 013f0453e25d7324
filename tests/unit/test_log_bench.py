"""bench.log_bench's pure part: CPU per message by part of the cluster, the loadgen's
counts, the medians, ratios and verdict over rounds, the report, and the processor's "log
replayed" line read from a cluster's log. No processes, no timing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.log_bench import cluster, cpu_per_message, delivery, replayed, report, summarize


def a_run(rnd: int, kind: str, processor_s: float, p99: float, **kw: Any) -> dict[str, Any]:
    """One chat run as bench.run.run_one records it: 10,000 messages sent, 40,000 owed."""
    procs = {"supervisor": {"cpu_s": 0.1}, "processor": {"cpu_s": processor_s},
             "gateway 1": {"cpu_s": 1.0}, "gateway 2": {"cpu_s": 1.5}}
    if kind == "log":
        procs["nats-server"] = {"cpu_s": 0.5}
    total = sum(d["cpu_s"] for d in procs.values())
    r: dict[str, Any] = {"round": rnd, "kind": kind, "target": kind, "sent": 10000, "expected": 40000,
                         "received": 40000, "p50_ms": 1.0, "p99_ms": p99, "procs": procs,
                         "cpu_us_per_msg": round(total * 1e6 / 10000, 1)}
    r.update(kw)
    return r


def test_cpu_per_message_is_split_into_processor_gateways_and_nats() -> None:
    assert cpu_per_message(a_run(1, "log", 2.0, 5.0)) == {
        "processor": 200.0, "gateways": 250.0, "nats": 50.0, "total": 510.0}
    off = cpu_per_message(a_run(1, "off", 2.0, 5.0))
    assert off["nats"] is None and off["total"] == 460.0
    assert cpu_per_message({"error": "not ready"})["processor"] is None


def test_the_loadgens_counts_say_lost_and_extra_deliveries() -> None:
    assert delivery({"expected": 10, "received": 10}) == {"lost": 0, "extra": 0}
    assert delivery({"expected": 10, "received": 7}) == {"lost": 3, "extra": 0}
    assert delivery({"expected": 10, "received": 12}) == {"lost": 0, "extra": 2}


def runs(**log: Any) -> list[dict[str, Any]]:
    return [a_run(1, "off", 2.0, 5.0), a_run(1, "log", 2.2, 5.5, **log),
            a_run(2, "log", 2.4, 5.9), a_run(2, "off", 2.2, 5.2)]


def test_the_verdict_compares_the_medians_of_each_kind() -> None:
    s = summarize(runs(), wanted=2)
    assert (s["off"]["processor_us"], s["log"]["processor_us"]) == (210.0, 230.0)
    assert s["ratios"]["processor"] == round(230 / 210, 3) and s["ratios"]["gateways"] == 1.0
    assert s["ratios"]["total"] == round(540 / 470, 3)  # the nats-server's CPU counts
    assert s["p99_delta_ms"] == 0.6 and s["verdict"] == "PASS"
    costly = summarize([a_run(1, "off", 2.0, 5.0), a_run(1, "log", 4.0, 5.0)])
    assert costly["ratios"]["total"] > 1.25 and not costly["cpu_pass"] and costly["verdict"] == "MISS"
    slow = summarize([a_run(1, "off", 2.0, 5.0), a_run(1, "log", 2.0, 6.5)])
    assert slow["p99_delta_ms"] == 1.5 and not slow["p99_pass"] and slow["verdict"] == "MISS"


@pytest.mark.parametrize("bad", [{"received": 39999}, {"received": 40001}, {"restarts": 1},
                                 {"error": "nats-server did not start"}])
def test_a_loss_a_duplicate_a_restart_or_a_failed_run_is_a_miss(bad: dict[str, Any]) -> None:
    s = summarize(runs(**bad))
    assert s["verdict"] == "MISS"


def test_too_few_measured_rounds_is_a_miss() -> None:
    assert summarize(runs(), wanted=3)["verdict"] == "MISS"


def test_the_report_shows_every_run_the_ratios_and_the_restart() -> None:
    rs = runs(error="loadgen printed no result")
    restart = {"rooms": 100, "fill": 1000, "held": 100000, "held_after": 100000, "fill_s": 20.1,
               "answered_s": 4.2, "answer": "history", "same_epoch": True, "errors": 0,
               "disconnects": 0, "replayed": {"entries": 5000, "seconds": 3.1}}
    text = report(rs, summarize(rs), restart, {"rooms": 250, "clients": 4, "rate": 2, "duration": 10})
    assert "ERROR loadgen printed no result" in text and "-> MISS" in text
    assert "log / off: processor" in text and "goal <= 1.25x" in text
    assert "answered after 4.20 s" in text and "5000 entries in 3.10 s" in text and "100000 messages" in text
    assert "restart: ERROR boom" in report(rs, summarize(rs), {"error": "boom"}, {})


def test_the_replay_line_is_read_after_the_kill() -> None:
    line = {"ts": 200.0, "level": "info", "proc": "processor", "msg": "log replayed",
            "entries": 4200, "epoch": "e1", "seconds": 2.5}
    text = "\n".join(['meshstream is up: "log replayed"', json.dumps({**line, "ts": 100.0, "entries": 1}),
                      json.dumps(line)])
    assert replayed(text, 150.0) == {"entries": 4200, "seconds": 2.5, "epoch": "e1", "ts": 200.0}
    assert replayed(text) is not None and replayed(text)["entries"] == 1  # type: ignore[index]
    assert replayed(text, 300.0) is None


def test_both_clusters_name_their_log_explicitly() -> None:
    off, on = cluster("off").cmd, cluster("log").cmd
    assert off[off.index("--log") + 1] == "off"
    assert on[on.index("--serve") + 1] == "--" and "--log" not in on  # the launcher adds its URL
