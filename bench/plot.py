"""One PNG per scenario: meshstream beside its peers, a panel per figure that matters.

Each panel is a bar per target (the median of its successful runs) with every run as a dot,
so round-to-round noise shows. matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# scenario -> the panels: (title, result key, "higher" or "lower" is better)
PANELS: dict[str, list[tuple[str, str, str]]] = {
    "fanout": [("deliveries/s", "deliveries_per_s", "higher"), ("latency p50 (ms)", "p50_ms", "lower"),
               ("latency p99 (ms)", "p99_ms", "lower"), ("server CPU (s)", "cpu_s", "lower"),
               ("peak RSS (MB)", "rss_peak_mb", "lower")],
    "chat": [("latency p50 (ms)", "p50_ms", "lower"), ("latency p99 (ms)", "p99_ms", "lower"),
             ("CPU per message (us)", "cpu_us_per_msg", "lower"), ("lost", "lost", "lower"),
             ("peak RSS (MB)", "rss_peak_mb", "lower")],
    "idle": [("KB per connection", "kb_per_conn", "lower"), ("RSS holding (MB)", "rss_hold_mb", "lower"),
             ("connect (s)", "connect_s", "lower"), ("server CPU (s)", "cpu_s", "lower")],
}
COLORS = {"meshstream": "#1f6fb4", "baseline": "#7fa7d0", "raw_ws": "#e08a1e", "nodesio": "#3a9a4a",
          "pysio": "#a05ab8"}


def label(value: float | None) -> str:
    """A bar's figure, short: 339,628 -> 340k, 0.0712 -> 0.0712, None -> -."""
    if value is None:
        return "-"
    return f"{value / 1000:,.0f}k" if abs(value) >= 10000 else f"{value:.4g}"


def panel_values(key: str, summary: dict[str, dict[str, Any]],
                 runs: list[dict[str, Any]]) -> tuple[list[str], list[float | None], list[list[float]]]:
    """The targets in order, the median of `key` for each (None when missing) and each run's value."""
    names = list(summary)
    medians = [summary[n].get(key) for n in names]
    points = [[r[key] for r in runs if r.get("target") == n and "error" not in r
               and isinstance(r.get(key), (int, float))] for n in names]
    return names, medians, points


def plot_scenario(scenario: str, summary: dict[str, dict[str, Any]], runs: list[dict[str, Any]],
                  load: dict[str, Any], path: Path) -> Path:
    """Write `path` (a PNG) for one scenario's summary (report.median_of per target) and runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PANELS[scenario] if any(s.get(p[1]) is not None for s in summary.values())]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.2 * max(1, len(panels)), 3.6), squeeze=False)
    for ax, (title, key, better) in zip(axes[0], panels, strict=False):
        names, medians, points = panel_values(key, summary, runs)
        xs = range(len(names))
        ax.bar(xs, [m or 0 for m in medians], color=[COLORS.get(n, "#888888") for n in names], width=0.6)
        for x, pts in zip(xs, points, strict=True):
            ax.plot([x] * len(pts), pts, "o", color="black", markersize=3, alpha=0.7)
        for x, m in zip(xs, medians, strict=True):
            ax.annotate(label(m), (x, m or 0), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs), names, rotation=20, fontsize=8)
        ax.set_title(f"{title}\n({better} is better)", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_ylim(bottom=0)
    loadtext = " ".join(f"{k}={v}" for k, v in load.items())
    fig.suptitle(f"{scenario}: {loadtext} (bars: medians, dots: runs)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
