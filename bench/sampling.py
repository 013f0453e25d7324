"""What the benchmarks read from /proc: process trees, CPU ticks, RSS, listening ports.

`TreeSampler` follows one process tree (a started target) in a thread: RSS summed and
per process every few hundred ms, CPU ticks on demand at the loadgen's phase marks;
`measure` turns those marks and samples into one run's CPU and memory figures.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str) -> list[str]:
    """The fields of a /proc stat line after the command name (which may hold spaces)."""
    with open(path) as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_ticks(pid: int, thread: int | None = None, reaped: bool = False) -> int:
    """utime+stime of a process (all its threads) or of one of its threads, in clock ticks;
    with `reaped`, plus the children it has waited for (cutime+cstime). Raises OSError when
    the process is gone."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = _stat_fields(path)
    return sum(int(x) for x in fields[11:15 if reaped else 13])


def tree_cpu(pids: set[int]) -> dict[int, int]:
    """Ticks (reaped children included) of every process in `pids` still there."""
    out = {}
    for p in pids:
        try:
            out[p] = cpu_ticks(p, reaped=True)
        except (OSError, IndexError, ValueError):
            pass
    return out


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        return _stat_fields(f"/proc/{pid}/stat")[0] != "Z"
    except (OSError, IndexError):
        return False


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(_stat_fields(f"/proc/{d}/stat")[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def tree(root: int) -> set[int]:
    """`root` and all its descendants still there."""
    kids, out, todo = children_map(), set(), [root]
    while todo:
        p = todo.pop()
        if p not in out and os.path.exists(f"/proc/{p}"):
            out.add(p)
            todo.extend(kids.get(p, []))
    return out


def proc_name(pid: int) -> str:
    """A short name: meshstream's setproctitle title, else `exe script`."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return f"pid {pid}"
    if not argv:
        return f"pid {pid}"
    if argv[0].startswith("meshstream: "):  # setproctitle
        return argv[0][len("meshstream: "):]
    exe = os.path.basename(argv[0])
    script = next((os.path.basename(a) for a in argv[1:] if a.endswith((".py", ".js"))), "")
    if exe in ("python", "python3") and "-m" in argv:
        script = argv[argv.index("-m") + 1]
    return f"{exe} {script}".strip()


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def listening(port: int) -> int:
    """How many sockets listen on `port` (SO_REUSEPORT gateways each have one)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


class TreeSampler:
    """RSS of a process tree every `interval` s in a thread; CPU ticks when asked."""

    def __init__(self, root: int, interval: float) -> None:
        self.root, self.interval = root, interval
        self.pids: set[int] = {root}
        self.names: dict[int, str] = {}
        self.rss: dict[int, int] = {}  # latest per pid
        self.peak: dict[int, int] = {}  # peak per pid
        self.samples: list[tuple[float, int, dict[int, int]]] = []  # (t, total kB, per pid)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def refresh(self) -> None:
        self.pids = tree(self.root)
        for p in self.pids:
            if p not in self.names or self.names[p].startswith(("python", "pid ")):
                self.names[p] = proc_name(p)  # again until setproctitle has named it

    def sample(self) -> None:
        per = {p: rss_kb(p) for p in self.pids}
        for p, kb in per.items():
            self.peak[p] = max(self.peak.get(p, 0), kb)
        self.rss = per
        self.samples.append((time.monotonic(), sum(per.values()), per))

    def cpu(self) -> dict[int, int]:
        return tree_cpu(self.pids)

    def start(self) -> None:
        def loop() -> None:
            last = 0.0
            while not self.stopping.wait(self.interval):
                if time.monotonic() - last > 1.0:
                    self.refresh()
                    last = time.monotonic()
                self.sample()

        self.sample()
        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread:
            self.thread.join(2)


Marks = dict[str, tuple[float, dict[int, int]]]  # phase -> (monotonic time, ticks per pid)


def measure(s: TreeSampler, base: dict[int, int], marks: Marks, res: dict[str, Any]) -> dict[str, Any]:
    """CPU and memory, summed over the sampled processes and per process: CPU between the
    loadgen's measure-start/measure-end marks (else the whole run), RSS at `base`, at peak,
    and while idle connections are held (hold-start..hold-end)."""
    a, b = ("measure-start", "measure-end") if "measure-start" in marks else ("start", "end")
    if b not in marks:
        b = "end"
    (t0, cpu0), (t1, cpu1) = marks[a], marks[b]
    wall = max(t1 - t0, 1e-9)
    hold: list[tuple[float, dict[int, int]]] = []
    if "hold-start" in marks:  # memory while the idle connections are held
        h0, h1 = marks["hold-start"][0], marks.get("hold-end", marks["end"])[0]
        hold = [(t, per) for t, _, per in s.samples if h0 <= t <= h1]
    procs: dict[str, dict[str, float]] = {}
    for pid in sorted(set(s.names) & (set(cpu1) | set(s.peak))):
        name = s.names[pid]
        d = procs.setdefault(name, {"cpu_s": 0.0, "rss_peak_mb": 0.0, "rss_base_mb": 0.0})
        d["cpu_s"] += max(0, cpu1.get(pid, 0) - cpu0.get(pid, 0)) / CLK_TCK
        d["rss_peak_mb"] += s.peak.get(pid, 0) / 1024
        d["rss_base_mb"] += base.get(pid, 0) / 1024
        if hold:
            d["rss_hold_mb"] = d.get("rss_hold_mb", 0.0) + max(per.get(pid, 0) for _, per in hold) / 1024
    cpu_total = sum(d["cpu_s"] for d in procs.values())
    for d in procs.values():
        d["srv_util"] = d["cpu_s"] / wall
        for k in list(d):
            d[k] = round(d[k], 3 if k.endswith("util") else 2)
    total_base = sum(base.values())
    out: dict[str, Any] = {
        "procs": procs,
        "cpu_s": round(sum(d["cpu_s"] for d in procs.values()), 2),
        "srv_util": round(sum(d["cpu_s"] for d in procs.values()) / wall, 2),
        "rss_base_mb": round(total_base / 1024, 1),
        "rss_peak_mb": round(max([kb for _, kb, _ in s.samples] + [total_base]) / 1024, 1),
    }
    if res.get("sent"):  # CPU per message the loadgen sent (read it for chat)
        out["cpu_us_per_msg"] = round(cpu_total * 1e6 / res["sent"], 1)
    if hold:
        held = max(sum(per.values()) for _, per in hold)
        out["rss_hold_mb"] = round(held / 1024, 1)
        if res.get("connected"):
            out["kb_per_conn"] = round((held - total_base) / res["connected"], 2)
            for d in procs.values():
                if "rss_hold_mb" in d:
                    d["kb_per_conn"] = round((d["rss_hold_mb"] - d["rss_base_mb"]) * 1024
                                             / res["connected"], 2)
    return out
