"""bench.api_bench's pure part: the account of a run's deliveries (every message once to
every member), its CPU figures, the medians over rounds and the table. No processes, no
timing."""

from __future__ import annotations

from typing import Any

import pytest

from bench.api_bench import KINDS, Tally, account, rates, run_ok, summarize, table
from bench.sampling import CLK_TCK

OPTS = {"rounds": 2, "members": 2, "rate": 400.0, "duration": 10.0, "senders": 4, "batch": 100,
        "size": 100}


def tally() -> Tally:
    """Two members, three publishes (n 0..2), each delivered once to each, 2 ms each."""
    t = Tally(members=2, sent=3)
    for member in range(2):
        for n in range(3):
            t.receive(member, n, 2.0)
    return t


def test_a_clean_run_owes_every_member_every_message_once() -> None:
    a = account(tally())
    assert (a["sent"], a["expected"], a["delivered"]) == (3, 6, 6)
    assert a["lost"] == a["dups"] == a["failed"] == 0
    assert a["p50_ms"] == a["p99_ms"] == 2.0


def test_missing_and_repeated_messages_and_failed_calls_are_counted() -> None:
    t = tally()
    t.got[0] = [0, 2]  # member 0 missed n=1
    t.got[1] = [0, 1, 1, 2]  # member 1 got n=1 twice
    t.failed["503 processor-unavailable"] += 1
    a = account(t)
    assert (a["lost"], a["dups"], a["failed"]) == (1, 1, 1)
    assert a["failed_why"] == {"503 processor-unavailable": 1}
    assert not run_ok(a)


def test_publishes_per_cpu_second_come_from_the_ticks() -> None:
    r = rates(4000, 10.0, gateway_ticks=2 * CLK_TCK, processor_ticks=4 * CLK_TCK)
    assert (r["rate"], r["gateway_cpu_s"], r["per_gateway_cpu_s"], r["per_processor_cpu_s"]) == (
        400.0, 2.0, 2000, 1000)
    assert rates(10, 1.0, 0, 0)["per_gateway_cpu_s"] is None  # not measurable: no tick


def a_run(rnd: int, kind: str, per_gw: float, **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"round": rnd, "kind": kind, "sent": 4000, "delivered": 80000, "lost": 0,
                         "dups": 0, "failed": 0, "rate": 400.0, "gateway_cpu_s": 4000 / per_gw,
                         "per_gateway_cpu_s": per_gw, "per_processor_cpu_s": 5000,
                         "p50_ms": 2.0, "p99_ms": 9.0}
    r.update(kw)
    return r


def rounds(**single: Any) -> list[dict[str, Any]]:
    return [a_run(1, "single", 1000, **single), a_run(1, "batch", 8000), a_run(1, "watcher", 4000),
            a_run(2, "watcher", 6000), a_run(2, "batch", 10000), a_run(2, "single", 1500)]


def test_the_summary_is_the_medians_per_kind_and_the_api_cost_beside_the_watcher() -> None:
    s = summarize(rounds(), wanted=2)
    assert (s["per_gateway_cpu_s_single"], s["per_gateway_cpu_s_batch"],
            s["per_gateway_cpu_s_watcher"]) == (1250, 9000, 5000)
    assert s["api_us_single"] == round(1e6 / 1250 - 1e6 / 5000, 1) == 600.0
    assert s["api_us_batch"] == -88.9  # batched fan-out is cheaper than the watcher's paced one
    assert s["verdict"] == "PASS" and s["failed_runs"] == 0
    assert all(s[f"measured_{k}"] == 2 for k in KINDS)


@pytest.mark.parametrize("bad", [{"lost": 1}, {"dups": 1}, {"failed": 2},
                                 {"error": "BenchError: the API never reached the processor"}])
def test_a_run_that_broke_a_promise_fails_the_bench(bad: dict[str, Any]) -> None:
    s = summarize(rounds(**bad), wanted=2)
    assert s["failed_runs"] == 1 and s["verdict"] == "MISS"


def test_too_few_runs_or_a_restarted_child_fail_the_bench() -> None:
    assert summarize(rounds()[:3], wanted=2)["verdict"] == "MISS"
    assert summarize(rounds(), wanted=2, restarts=1)["verdict"] == "MISS"
    assert summarize([], wanted=1)["verdict"] == "MISS"


def test_the_table_shows_every_run_and_the_verdict() -> None:
    runs = rounds() + [{"round": 3, "kind": "single", "error": "TimeoutError: "}]
    text = table(runs, summarize(runs, wanted=2), {**OPTS, "rounds": 3})
    assert "2 members in one room; 400 publishes/s for 10 s from 4 senders" in text
    assert "/api/batch of 100" in text
    assert "round 3 single: TimeoutError" in text
    assert "1250 publishes per gateway CPU-second" in text
    assert "beyond the watcher's: +600 µs" in text and "-88.9 µs" in text
    assert text.rstrip().endswith("verdict: MISS")
