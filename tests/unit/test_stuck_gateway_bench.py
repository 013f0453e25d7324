"""bench.stuck_gateway_bench's pure part: the account of a run's deliveries (every message
once, in order, to every member of its room), the verdict over rounds, the table, and what
it reads from the processor (its metrics page, its log). No processes, no timing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.stuck_gateway_bench import Tally, account, dropped_at, metric, run_ok, summarize, table

OPTS = {"rounds": 2, "clients": 4, "rooms": 2, "rate": 2.0, "duration": 30.0, "stuck": 0.0,
        "stuck_members": 4, "size": 100}


def tally() -> Tally:
    """Clients 0, 1 in room a, 2, 3 in room b; each sent 3 messages (n 0..2), and every
    member got every message of its room (its own included), in order, 1 ms each."""
    t = Tally()
    t.rooms = {0: "a", 1: "a", 2: "b", 3: "b"}
    for sender, room in t.rooms.items():
        t.sent[sender] = 3
        for receiver in [c for c, r in t.rooms.items() if r == room]:
            for n in range(3):
                t.receive(receiver, sender, n, 1.0)
    return t


def test_a_clean_run_owes_every_member_every_message_of_its_room() -> None:
    a = account(tally())
    assert (a["sent"], a["expected"], a["delivered"]) == (12, 24, 24)
    assert a["lost"] == a["dups"] == a["disorder"] == a["strays"] == a["receivers_losing"] == 0
    assert a["p50_ms"] == a["p99_ms"] == 1.0


def test_missing_repeated_late_and_foreign_messages_are_each_counted() -> None:
    t = tally()
    t.got[(1, 0)] = [0, 2]  # 1 missed 0's n=1
    t.got[(0, 1)] = [0, 1, 1, 2]  # a second copy
    t.got[(2, 3)] = [1, 0, 2]  # 0 after 1
    t.got[(3, 3)] = []  # 3 got none of its own copies
    t.receive(0, 2, 0, 5.0)  # 0 (room a) got a message of room b
    a = account(t)
    assert a["lost"] == 1 + 3 and a["receivers_losing"] == 2
    assert a["dups"] == 1 and a["disorder"] == 1 and a["strays"] == 1


def a_run(rnd: int, kind: str, p99: float, **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"round": rnd, "kind": kind, "sent": 6000, "delivered": 24000, "p50_ms": 1.0,
                         "p99_ms": p99, "max_ms": p99 * 2, "lost": 0, "dups": 0, "disorder": 0,
                         "strays": 0, "errors": 0, "disconnects": 0, "loop_max_ms": 6.0,
                         "rss_peak_mb": 48.0, "restarts": 0}
    if kind == "stuck":
        r.update(dropped=True, dropped_after_s=3.2, stalled_drops=1)
    r.update(kw)
    return r


def rounds(**stuck: Any) -> list[dict[str, Any]]:
    return [a_run(1, "reference", 5.0), a_run(1, "stuck", 6.0, **stuck),
            a_run(2, "stuck", 7.0), a_run(2, "reference", 6.0)]


def test_the_verdict_compares_the_medians_with_the_targets() -> None:
    s = summarize(rounds(), wanted=2)
    assert (s["p99_ms_reference"], s["p99_ms_stuck"], s["p99_ratio"]) == (5.5, 6.5, 1.18)
    assert s["dropped"] == 2 and s["dropped_after_s_stuck"] == 3.2
    assert s["verdict"] == "PASS" and s["failed_runs"] == 0
    slow = summarize([a_run(1, "reference", 4.0), a_run(1, "stuck", 6.1)])
    assert slow["p99_ratio"] == 1.52 and not slow["p99_pass"] and slow["verdict"] == "MISS"
    stalled = summarize(rounds(loop_max_ms=80.0) + [a_run(3, "stuck", 6.0, loop_max_ms=60.0)])
    assert stalled["loop_max_ms_stuck"] == 60.0 and not stalled["stall_pass"]
    assert stalled["verdict"] == "MISS"


@pytest.mark.parametrize("bad", [{"lost": 1}, {"dups": 2}, {"disorder": 1}, {"strays": 1},
                                 {"errors": 1}, {"disconnects": 1}, {"restarts": 1},
                                 {"dropped": False}, {"error": "the stuck gateway exited"},
                                 {"loop_max_ms": None, "sent": 0}])
def test_a_broken_promise_in_a_stuck_run_fails_the_verdict(bad: dict[str, Any]) -> None:
    assert not run_ok(a_run(1, "stuck", 6.0, **bad))
    assert summarize(rounds(**bad), wanted=2)["verdict"] == "MISS"


def test_fewer_measured_runs_than_asked_fail_and_a_reference_need_not_drop() -> None:
    assert summarize(rounds(), wanted=3)["verdict"] == "MISS"
    assert run_ok(a_run(1, "reference", 5.0))  # no `dropped` there: nothing to drop
    assert summarize([a_run(1, "reference", 5.0, lost=1), a_run(1, "stuck", 5.0)])["verdict"] == "MISS"


def test_a_processor_without_the_metric_is_not_a_pass() -> None:
    s = summarize([a_run(1, "reference", 5.0, loop_max_ms=None), a_run(1, "stuck", 5.0, loop_max_ms=None)])
    assert s["loop_max_ms_stuck"] is None and not s["stall_pass"] and s["verdict"] == "MISS"


def test_the_table_has_a_row_per_run_and_a_verdict_line_per_target() -> None:
    rs = [*rounds(), {"round": 3, "kind": "stuck", "error": "BenchError: no processor"}]
    text = table(rs, summarize(rs, wanted=2), OPTS)
    lines = text.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["round", "kind"])
    assert lines[header + 1].split()[:3] == ["1", "reference", "6000"]
    assert lines[header + 2].split()[:2] == ["1", "stuck"] and "True" in lines[header + 2]
    assert "round 3 stuck: BenchError: no processor" in text
    assert "1.18x <= 1.5x PASS" in text and "< 50 ms PASS" in text
    assert "dropped by the processor: 2/2 runs" in text
    assert text.rstrip().endswith("verdict: MISS")  # the failed run


PAGE = """# HELP meshstream_processor_loop_max_seconds the processor's longest loop iteration
# TYPE meshstream_processor_loop_max_seconds gauge
meshstream_processor_loop_max_seconds 0.00637
# HELP meshstream_drops_total messages that could not be sent
# TYPE meshstream_drops_total counter
meshstream_drops_total{reason="event-hwm"} 0.0
meshstream_drops_total{reason="gateway-stalled"} 1.0
"""


def test_the_processor_metrics_are_read_by_name_and_label() -> None:
    assert metric(PAGE, "meshstream_processor_loop_max_seconds") == pytest.approx(0.00637)
    assert metric(PAGE, "meshstream_drops_total", (("reason", "gateway-stalled"),)) == 1.0
    assert metric(PAGE, "meshstream_drops_total", (("reason", "beat-hwm"),)) is None


def test_the_drop_time_is_read_from_the_processors_log_line_for_that_gateway() -> None:
    line = {"ts": 1796637097.846, "level": "warning", "proc": "processor",
            "msg": "gateway stalled: dropped", "gateway": "gw99-stuck18608", "unapplied_bytes": 193101}
    text = "\n".join(['{"ts": 1.0, "msg": "processor ready"}', json.dumps(line)])
    assert dropped_at(text, "gw99-stuck18608") == 1796637097.846
    assert dropped_at(text, "gw99-stuck1") is None  # another gateway's
    assert dropped_at('{"ts": 2.0, "msg": "gateway lost", "gateway": "gw99-stuck18608"}',
                      "gw99-stuck18608") is None
