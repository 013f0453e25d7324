"""`make bench`'s rounds: each round runs the targets in an order rotated from the last, so
that no target always runs in the same place (the one run second measured 5-14 % more chat
CPU per message), and the order is kept in the results and shown in the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.harness import Target
from bench.report import median_of, report
from bench.run import round_order, run_rounds


def target(name: str) -> Target:
    return Target(name, ["true"], Path("."), "meshstream", "/wsmesh")


def test_the_order_rotates_by_one_place_per_round() -> None:
    assert [round_order("ABC", r) for r in (1, 2, 3, 4)] == [
        ["A", "B", "C"], ["B", "C", "A"], ["C", "A", "B"], ["A", "B", "C"]]
    assert [round_order("AB", r) for r in (1, 2, 3)] == [["A", "B"], ["B", "A"], ["A", "B"]]
    assert round_order(["A"], 5) == ["A"]


def test_over_as_many_rounds_as_targets_every_target_runs_once_in_every_place() -> None:
    names = ["meshstream", "baseline", "raw_ws", "nodesio"]
    orders = [round_order(names, r) for r in range(1, len(names) + 1)]
    for place in range(len(names)):
        assert sorted(o[place] for o in orders) == sorted(names)


def test_each_run_is_made_in_its_rounds_order_and_says_its_place() -> None:
    targets = [target("meshstream"), target("raw_ws"), target("nodesio")]
    made: list[tuple[str, int]] = []

    def one(t: Target, rnd: int) -> dict[str, Any]:
        made.append((t.name, rnd))
        return {"target": t.name, "round": rnd, "cpu_us_per_msg": 100.0}

    runs, orders = run_rounds(targets, 2, one)
    assert orders == [["meshstream", "raw_ws", "nodesio"], ["raw_ws", "nodesio", "meshstream"]]
    assert made == [(n, r) for r, o in enumerate(orders, 1) for n in o]
    assert [(r["target"], r["round"], r["place"]) for r in runs] == [
        ("meshstream", 1, 1), ("raw_ws", 1, 2), ("nodesio", 1, 3),
        ("raw_ws", 2, 1), ("nodesio", 2, 2), ("meshstream", 2, 3)]


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = dict.fromkeys(r["target"] for r in runs)
    return {n: median_of([r for r in runs if r["target"] == n]) for n in names}


def test_the_report_shows_each_rounds_order_and_says_when_the_rounds_do_not_balance_it() -> None:
    runs, orders = run_rounds([target("meshstream"), target("raw_ws"), target("nodesio")], 2,
                              lambda t, rnd: {"target": t.name, "round": rnd, "p99_ms": 5.0, "lost": 0})
    text = report("chat", summary(runs), {"rooms": 10}, orders=orders)
    assert ("order per round: r1 meshstream raw_ws nodesio; r2 raw_ws nodesio meshstream "
            "(unbalanced: 2 round(s); a multiple of 3 puts every target in every place)") in text
    balanced = report("chat", summary(runs), {"rooms": 10}, orders=[["a", "b"], ["b", "a"]])
    assert "order per round: r1 a b; r2 b a\n" in balanced + "\n"
    assert "unbalanced" not in balanced
