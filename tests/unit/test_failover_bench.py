"""bench.failover_bench's pure part: the takeover from a round's traffic, the frames' account,
the verdict over rounds and the table. No processes, no timing."""

from __future__ import annotations

from typing import Any

import pytest

from bench.failover_bench import Traffic, account, round_ok, summarize, table, takeover, window

KILLED, DEAD = 100.0, 100.01


def traffic() -> Traffic:
    """gw1 and gw2 send 1..4; 1 before the kill, 2..4 after. gw1's 2 is lost in the outage;
    its 3 reaches gw2 1.3 s after the kill; gw2's 3 reaches gw1 1.6 s after it, and a copy
    of gw2's 1 (sent before the kill) arrives late, which does not count."""
    t = Traffic()
    for sender in ("gw1", "gw2"):
        t.sent[(sender, 1)] = 99.5
        t.sent[(sender, 2)] = 100.2
        t.sent[(sender, 3)] = 101.0
        t.sent[(sender, 4)] = 101.5
    t.received = [("gw2", "gw1", 1, 99.51), ("gw1", "gw2", 1, 100.05), ("gw2", "gw1", 3, 101.3),
                  ("gw1", "gw2", 3, 101.6), ("gw2", "gw1", 4, 101.55), ("gw1", "gw2", 4, 101.7)]
    t.answers = {("gw1", 1): "echo", ("gw2", 1): "echo", ("gw1", 2): "processor-unavailable",
                 ("gw2", 2): "processor-restarted", ("gw1", 3): "echo", ("gw2", 3): "echo",
                 ("gw1", 4): "connection-lost"}  # ("gw2", 4): never answered
    return t


def test_takeover_counts_only_messages_sent_after_the_processor_died() -> None:
    took = takeover(traffic(), DEAD, KILLED)
    assert took == pytest.approx({"gw1": 1.3, "gw2": 1.6})


def test_takeover_is_none_for_a_sender_never_heard_again() -> None:
    t = traffic()
    t.received = [r for r in t.received if r[1] != "gw2"]
    assert takeover(t, DEAD, KILLED)["gw2"] is None


def test_takeover_on_the_wire_reads_the_socket_side_receipts() -> None:
    t = traffic()
    t.wire = [("gw2", "gw1", 2, 100.9), ("gw1", "gw2", 2, 101.0)]
    assert takeover(t, DEAD, KILLED, wire=True) == pytest.approx({"gw1": 0.9, "gw2": 1.0})


def test_every_frame_is_an_echo_an_error_or_unanswered() -> None:
    a = account(traffic())
    assert a["sent"] == 8 and a["echoes"] == 4
    assert a["error_codes"] == {"processor-restarted": 1, "processor-unavailable": 1}
    assert a["errors"] == 2
    assert a["unanswered"] == 2  # a connection lost first, and one that got nothing
    assert window(traffic(), KILLED) == {"gw1": [1.5, 1.5], "gw2": [1.5, 1.5]}  # rounded


def a_round(n: int, took: float | None, **kw: Any) -> dict[str, Any]:
    r = {"round": n, "killed": "primary" if n % 2 else "backup", "takeover_s": took,
         "active_s": 1.0, "sent": 300, "errors": 90, "error_codes": {"processor-unavailable": 90},
         "unanswered": 0, "reconnects": 0, "came_back": "passive"}
    r.update(kw)
    return r


def test_the_verdict_needs_median_and_max_within_the_target() -> None:
    rounds = [a_round(1, 1.2), a_round(2, 1.4), a_round(3, 1.3)]
    s = summarize(rounds, 2.0)
    assert (s["takeover_median_s"], s["takeover_max_s"]) == (1.3, 1.4)
    assert s["killed"] == {"primary": 2, "backup": 1}
    assert s["verdict"] == "PASS" and s["sent"] == 900 and s["failed_rounds"] == 0
    slow = summarize([*rounds, a_round(4, 2.5)], 2.0)
    assert slow["median_pass"] and not slow["max_pass"] and slow["verdict"] == "FAIL"


def test_a_broken_promise_fails_the_run_whatever_the_time() -> None:
    for bad in (a_round(2, 1.0, unanswered=1), a_round(2, 1.0, reconnects=1),
                a_round(2, 1.0, came_back="active"), a_round(2, 1.0, error_codes={"rate-limited": 1}),
                a_round(2, None), a_round(2, 1.0, error="timed out")):
        assert not round_ok(bad), bad
        assert summarize([a_round(1, 1.0), bad], 2.0)["verdict"] == "FAIL", bad
    assert round_ok(a_round(1, 1.0))


def test_the_table_has_a_row_per_round_and_says_pass_or_fail() -> None:
    rounds = [a_round(1, 1.2), a_round(2, None, error="no takeover within 30 s")]
    text = table(rounds, summarize(rounds, 1.0),
                 {"failover_timeout": 1.0, "interval": 0.02})
    lines = text.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["round", "killed"])
    assert lines[header + 1].split()[:3] == ["1", "primary", "1.20"]
    assert lines[header + 2].split()[:3] == ["2", "backup", "-"]
    assert "round 2: no takeover within 30 s" in text
    assert "median 1.20 s <= 1 s" not in text and "max - s > 1 s FAIL" not in text
    assert "(1/2 rounds measured)" in text and text.rstrip().endswith("verdict: FAIL")
