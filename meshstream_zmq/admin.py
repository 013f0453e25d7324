"""The admin view (docs/operations.md, "Admin page"): pure, no sockets, no clock reads.

The processor is the one process that hears from every other: gateways and watchers put
their `ProcessStats` in their heartbeats. `AdminView` keeps the latest figures of each,
turns the counters' deltas into per-second rates at each processor beat (a few minutes of
them, for the page's charts), and answers a gateway's `AdminQuery` with one JSON snapshot:
processes, gateways, watchers and their claims, one page of rooms with their members.

`access` is the page's door rule, `feed_origin` the extra check of its feed, and `Guesses`
the limit on wrong tokens, used by the gateway for /admin and /admin/ws.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import urllib.parse
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.core import Mesh

HISTORY = 360  # rate samples kept: 3 minutes at the default 0.5 s heartbeat
ROOMS_PAGE = 20  # rooms per page of the admin page
MEMBERS_SHOWN = 50  # members listed per room (the count is always exact)
SEARCH_MAX = 64  # a search or cursor is cut to the longest room name: a longer one matches nothing more
PROCESSOR = "processor"


# Headers a reverse proxy adds: a request with one came through a proxy, whose own address
# (often loopback) says nothing about the client's.
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
GUESSES = 10  # wrong admin tokens an address may present, refilled over GUESS_WINDOW; then 429
GUESS_WINDOW = 60.0  # seconds
GUESS_ADDRESSES = 4096  # addresses whose wrong tokens are remembered; the longest quiet is forgotten


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def loopback_host(host: str) -> bool:
    """A Host header (or an Origin's host[:port]) naming this machine: `localhost`,
    127.0.0.0/8 or `[::1]`, with any port or none. Nothing looser (no `x@127.0.0.1`,
    no `127.1`, no trailing dot)."""
    name, port = host, ""
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket or (port and port[0] != ":"):
            return False
        port = port[1:]
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return False
    return name.lower() == "localhost" or _loopback(name)


def access(required: str, presented: str | None, peer: str, host: str | None = None,
           proxied: bool = False) -> int:
    """The HTTP status for a request to /admin: with an admin token set, 200 for the
    right token (compared in constant time) else 401. Without one, 200 only for a request
    that is provably from this machine, else 403: a loopback peer (127.0.0.0/8, ::1, or
    IPv4-mapped loopback), a loopback `host` (the request's one Host header: a page on
    another site whose name an attacker rebinds to 127.0.0.1 sends its own name there),
    and not `proxied` (a proxy header: a proxy on this host makes every request loopback)."""
    if required:
        ok = presented is not None and hmac.compare_digest(presented.encode(), required.encode())
        return 200 if ok else 401
    if proxied or host is None or not loopback_host(host):
        return 403
    # not an IP address (a Unix socket, something unknown): not provably local
    return 200 if _loopback(peer.split("%", 1)[0]) else 403


def feed_origin(origins: list[str], host: str | None, allowed: frozenset[str] = frozenset()) -> bool:
    """Whether /admin/ws may answer a request with these `Origin` values: none (not a
    browser, which always sends one), or exactly one that is one of `allowed` (the
    `--allowed-origins`, lower case) or the page's own: http(s) with the request's Host.
    That Host passed `access`: loopback without an admin token; with one, the token is
    what keeps other sites out (the page keeps it in its own origin's storage)."""
    if not origins:
        return True
    if len(origins) != 1:
        return False
    origin = origins[0].strip().lower().rstrip("/")
    if origin in allowed:
        return True
    parts = urllib.parse.urlsplit(origin)
    return (parts.scheme in ("http", "https") and host is not None
            and parts.netloc == host.strip().lower())


class Guesses:
    """Wrong admin tokens per address: GUESSES of them, refilled evenly over GUESS_WINDOW
    seconds; with none left the door answers 429 (even to the right token) until one
    refills. At most `size` addresses are remembered (the one quiet longest goes first):
    an address forgotten starts afresh, which costs a guesser far more addresses than a
    token of 16 or more characters could ever need."""

    def __init__(self, limit: int = GUESSES, window: float = GUESS_WINDOW,
                 size: int = GUESS_ADDRESSES) -> None:
        self.limit = limit
        self.rate = limit / window  # guesses refilled per second
        self.size = size
        self.left: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (left, when)

    def _left(self, address: str, now: float) -> float:
        entry = self.left.get(address)
        if entry is None:
            return float(self.limit)
        left, when = entry
        return min(float(self.limit), left + (now - when) * self.rate)

    def limited(self, address: str, now: float) -> bool:
        """No guess left: answer 429 without looking at the token."""
        return self._left(address, now) < 1.0

    def failed(self, address: str, now: float) -> None:
        """A wrong token from `address`."""
        left = self._left(address, now) - 1.0
        self.left[address] = (left, now)
        self.left.move_to_end(address)
        while len(self.left) > self.size:
            self.left.popitem(last=False)

    def retry_after(self, address: str, now: float) -> int:
        """Seconds until `address` has a guess again (for Retry-After)."""
        return max(1, int((1.0 - self._left(address, now)) / self.rate + 0.999))


@dataclass(frozen=True, slots=True)
class Serving:
    """The processor that answers the admin page: alone, or the primary or backup of a
    pair (docs/deploy.md, "A standby processor") with its term (takeovers so far)."""

    role: str = "alone"
    term: int = 0
    log: bool = False  # on a log (--log): the standby follows it
    standby_behind: int | None = None  # its lag, entries, from its last PairBeat (None: unheard)


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
            "serving": {"role": serving.role, "term": serving.term, **(
                {"standby_behind": serving.standby_behind} if serving.log else {})},
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
