"""`make bench`'s figures: medians, the side-by-side table and the PNG per scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.peers.rooms import messages
from bench.plot import PANELS, label, panel_values, plot_scenario
from bench.report import median_of, report

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def runs_of(scenario: str) -> list[dict[str, Any]]:
    """Two rounds of meshstream and raw_ws, and one failed nodesio run."""
    keys = [k for _, k, _ in PANELS[scenario]]
    out: list[dict[str, Any]] = []
    for rnd, scale in ((1, 1.0), (2, 1.2)):
        out.append({"target": "meshstream", "round": rnd, **{k: 10 * scale for k in keys}, "lost": 0})
        out.append({"target": "raw_ws", "round": rnd, **{k: 4 * scale for k in keys}, "lost": 0})
    out.append({"target": "nodesio", "round": 1, "error": "nodesio not ready after 60s"})
    return out


def table_rows(text: str) -> dict[str, list[str]]:
    """The side-by-side table's rows (its `target runs ...` header and the lines under it), by target."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["target", "runs"])
    rows = {}
    for ln in lines[start:start + 4]:
        cells = ln.split()
        if cells and cells[0] in ("target", "meshstream", "raw_ws", "nodesio", "pysio"):
            rows[cells[0]] = cells
    return rows


def summary_of(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t: median_of([r for r in runs if r["target"] == t]) for t in ("meshstream", "raw_ws", "nodesio")}


def test_medians_skip_failed_runs() -> None:
    s = summary_of(runs_of("chat"))
    assert s["meshstream"]["ok_runs"] == 2 and s["meshstream"]["p99_ms"] == 11.0
    assert s["nodesio"] == {"runs": 1, "ok_runs": 0, "procs": {}}


def test_panel_values_are_medians_and_every_successful_run() -> None:
    runs = runs_of("fanout")
    names, medians, points = panel_values("deliveries_per_s", summary_of(runs), runs)
    assert names == ["meshstream", "raw_ws", "nodesio"]
    assert medians == [11.0, 4.4, None]
    assert points == [[10.0, 12.0], [4.0, 4.8], []]


def test_bar_labels_are_short() -> None:
    assert [label(v) for v in (339628, 9999.0, 0.07123, 2, None)] == ["340k", "9999", "0.07123", "2", "-"]


@pytest.mark.parametrize("scenario", ["fanout", "chat", "idle"])
def test_each_scenario_plots_to_a_png(tmp_path: Path, scenario: str) -> None:
    runs = runs_of(scenario)
    want = tmp_path / "out" / f"{scenario}.png"
    path = plot_scenario(scenario, summary_of(runs), runs, {"rooms": 10}, want)
    data = path.read_bytes()
    assert path == want
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_the_table_sets_meshstream_beside_its_peers_and_the_target() -> None:
    text = report("chat", summary_of(runs_of("chat")), {"rooms": 10, "duration": 1})
    rows = table_rows(text)
    assert "p99ms" in rows["target"]
    assert rows["meshstream"][1] == "2/2" and rows["nodesio"][1] == "0/1"
    assert "target p99_ms <= 2.5x raw_ws: 2.50x -> PASS" in text


def test_the_python_peer_takes_only_well_formed_requests() -> None:
    frame = '{"action":"join-room","target":"a"}\nnot json\n[1]\n{"action":7,"target":"b"}\n{"action":"x"}'
    assert messages(frame) == [{"action": "join-room", "target": "a"}]
    assert messages(b'{"action":"send-message","target":"r","message_body":{}}')[0]["target"] == "r"
