"""The admin view (docs/operations.md, "Admin page"): pure, no sockets, no clock reads.

The processor is the one process that hears from every other: gateways and watchers put
their `ProcessStats` in their heartbeats. `AdminView` keeps the latest figures of each,
turns the counters' deltas into per-second rates at each processor beat (a few minutes of
them, for the page's charts), and answers a gateway's `AdminQuery` with one JSON snapshot:
processes, gateways, watchers and their claims, one page of rooms with their members.

`access` is the page's door rule, used by the gateway for /admin and /admin/ws.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.core import Mesh

HISTORY = 360  # rate samples kept: 3 minutes at the default 0.5 s heartbeat
ROOMS_PAGE = 20  # rooms per page of the admin page
MEMBERS_SHOWN = 50  # members listed per room (the count is always exact)
SEARCH_MAX = 64  # a search or cursor is cut to the longest room name: a longer one matches nothing more
PROCESSOR = "processor"


def access(required: str, presented: str | None, peer: str) -> int:
    """The HTTP status for a request to /admin: with an admin token set, 200 for the
    right token (compared in constant time) else 401; without one, 200 for a loopback
    peer (127.0.0.0/8, ::1, or IPv4-mapped loopback) else 403."""
    if required:
        ok = presented is not None and hmac.compare_digest(presented.encode(), required.encode())
        return 200 if ok else 401
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return 403  # a Unix socket or something unknown: not provably local
    mapped = getattr(address, "ipv4_mapped", None)
    return 200 if (mapped or address).is_loopback else 403


@dataclass(frozen=True, slots=True)
class Serving:
    """The processor that answers the admin page: alone, or the primary or backup of a
    pair (docs/deploy.md, "A standby processor") with its term (takeovers so far)."""

    role: str = "alone"
    term: int = 0


ALONE = Serving()


@dataclass(slots=True)
class Seen:
    """The latest figures of one process, and what the last sample counted of them."""

    stats: pb.ProcessStats
    at: float  # when they arrived (monotonic)
    counted: tuple[int, int, int, int] = (0, 0, 0, 0)  # frames_in, frames_out, errors, drops
    cpu_at: tuple[float, float] | None = None  # (cpu_seconds, time) at the last sample
    cpu_percent: float = 0.0


@dataclass
class AdminView:
    """The figures of every process and their recent rates. `stale`: seconds after which
    a process that stopped reporting is no longer listed."""

    stale: float = 3.0
    history: int = HISTORY
    seen: dict[str, Seen] = field(default_factory=dict)
    # (time, messages/s, deliveries/s, errors/s, drops/s), oldest first
    rates: deque[tuple[float, float, float, float, float]] = field(default_factory=deque)
    last_sample: float | None = None

    def record(self, key: str, stats: pb.ProcessStats, now: float) -> None:
        """A heartbeat's figures: `key` is the gateway ID, the watcher's identity or PROCESSOR."""
        entry = self.seen.get(key)
        if entry is None or entry.stats.pid != stats.pid:
            self.seen[key] = Seen(stats, now)
        else:
            entry.stats, entry.at = stats, now

    def sample(self, now: float) -> None:
        """One point of the charts: the counters' growth since the last sample, per second.
        A counter that went down belongs to a restarted process: it counts from zero."""
        for key in [k for k, e in self.seen.items() if now - e.at > self.stale]:
            del self.seen[key]
        growth = [0, 0, 0, 0]
        for entry in self.seen.values():
            s = entry.stats
            totals = (s.frames_in, s.frames_out, s.errors, s.drops)
            for i, (total, before) in enumerate(zip(totals, entry.counted, strict=True)):
                growth[i] += total - before if total >= before else total
            entry.counted = totals
            if entry.cpu_at is not None and now > entry.cpu_at[1]:
                entry.cpu_percent = 100 * max(0.0, s.cpu_seconds - entry.cpu_at[0]) / (now - entry.cpu_at[1])
            entry.cpu_at = (s.cpu_seconds, now)
        if self.last_sample is not None and now > self.last_sample:
            dt = now - self.last_sample
            self.rates.append((now, *(g / dt for g in growth)))  # type: ignore[arg-type]
            while len(self.rates) > self.history:
                self.rates.popleft()
        self.last_sample = now

    def snapshot(self, mesh: Mesh, search: str, after: str, now: float, wall: float,
                 serving: Serving = ALONE) -> dict[str, Any]:
        """What the admin page shows, with one page of the rooms whose name contains `search`
        (after the cursor `after`, in code point order); `serving`: the answering processor."""
        search, after = search[:SEARCH_MAX], after[:SEARCH_MAX]
        watchers = mesh.watchers
        processes = []
        for key, e in sorted(self.seen.items(), key=lambda kv: (kv[1].stats.role, kv[0])):
            s = e.stats
            name = watchers[key].name if key in watchers else key
            processes.append({"name": name, "role": s.role, "pid": s.pid,
                              "uptime": max(0.0, wall - s.started_at), "restarts": s.restarts,
                              "cpu": round(e.cpu_percent, 1), "rss": s.rss_bytes})
        gateways = [{"id": g.id, "index": g.index, "clients": len(g.clients),
                     "connections": self.seen[g.id].stats.connections if g.id in self.seen else None}
                    for g in sorted(mesh.gateways.values(), key=lambda g: g.index)]
        claims = [{"id": w.id, "name": w.name, "alive": w.alive, "rooms": sorted(w.rooms),
                   "prefixes": list(w.prefixes), "assigned": sorted(w.assigned)[:MEMBERS_SHOWN],
                   "pending": len(w.unacked)}
                  for w in sorted(watchers.values(), key=lambda w: w.name)]
        matching = [n for n in mesh.rooms if search in n]
        page, cursor = Mesh._page(matching, ROOMS_PAGE, after)
        rooms = []
        for name in page:
            room = mesh.rooms[name]
            owner = next((w.name for w in watchers.values() if w.alive and w.claims(name)), "")
            rooms.append({"name": name, "count": len(room.members), "watcher": owner,
                          "members": list(room.members)[:MEMBERS_SHOWN]})
        return {
            "serving": {"role": serving.role, "term": serving.term},
            "processes": processes,
            "gateways": gateways,
            "watchers": claims,
            "clients": len(mesh.clients),
            "rooms": {"total": len(mesh.rooms), "matching": len(matching), "search": search,
                      "after": after, "items": rooms, "next": cursor},
            "rates": [[round(t - now, 2), *(round(r, 2) for r in rs)] for t, *rs in self.rates],
        }

    def answer(self, mesh: Mesh, query: pb.AdminQuery, now: float, wall: float,
               serving: Serving = ALONE) -> bytes:
        """The AdminAnswer JSON for a gateway's query."""
        return json.dumps(self.snapshot(mesh, query.search, query.after, now, wall, serving),
                          separators=(",", ":")).encode()
