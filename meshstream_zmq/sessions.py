"""Where each client is: the core's sessions part (centrifuge's hub).

Every client the processor knows is on one gateway, or away (on none) until its
resume window ends; a client that can resume has a session, known by the SHA-256 of
its secret. Sessions whose window passed are remembered a while, so a late resume is
told `expired` rather than `unknown-session`. The gateways are here too: their slot,
liveness, clients and the closes asked of them. It keeps; `Mesh` decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import LOBBY

if TYPE_CHECKING:
    from .meshstream_pb2 import ProcessorState

EXPIRED_KEPT = 65536  # hashes of sessions whose window passed, kept to answer `expired`


def gateway_of(client: str) -> str:
    """Client IDs are '<gateway ID>.<n>': the gateway is in the ID (the PUB prefix)."""
    return client.partition(".")[0]


@dataclass(slots=True, eq=False)
class ClientEntry:
    """What the mesh knows of one client: connected, or away (on no gateway) within its
    resume window."""

    id: str
    gateway: str  # "" while away
    rooms: set[str] = field(default_factory=set)  # the lobby included (kept by Mesh)
    user: str = ""  # its token's `sub` (the gateway verified it); empty: anonymous
    session: bytes = b""  # SHA-256 of its resume secret; empty: it cannot resume
    away_seq: int = 0  # the processor's seq when it went away (a resume without a position)


@dataclass(slots=True, eq=False)
class GatewayEntry:
    """What the mesh knows of one gateway process: its slot, liveness and clients."""

    id: str
    index: int
    last_seen: float
    clients: set[str] = field(default_factory=set)
    # clients it was asked to close and has not reported gone: sent again by a sync
    closing: dict[str, tuple[int, str]] = field(default_factory=dict)


class Sessions:
    """Clients, gateways and sessions. The dicts are never rebound (`Mesh` shares them)."""

    def __init__(self) -> None:
        self.clients: dict[str, ClientEntry] = {}
        self.gateways: dict[str, GatewayEntry] = {}
        self.sessions: dict[bytes, str] = {}  # session hash -> client
        self.away: dict[str, float] = {}  # away client -> end of its window (in that order)
        self.expired: dict[bytes, None] = {}  # hashes of sessions whose window passed

    # ------------------------------------------------------------ gateways

    def gateway(self, gateway: str, now: float, index: int | None = None) -> GatewayEntry:
        """The gateway, heard from at `now`, in slot `index` if given (a new one's slot is
        -1 until its hello)."""
        gw = self.gateways.get(gateway)
        if gw is None:
            gw = self.gateways[gateway] = GatewayEntry(gateway, -1, now)
        gw.last_seen = now
        if index is not None:
            gw.index = index
        return gw

    def seen(self, gateway: str, now: float) -> None:
        """A sign of life from `gateway`, if it is known."""
        gw = self.gateways.get(gateway)
        if gw is not None:
            gw.last_seen = now

    def drop_gateway(self, gateway: str) -> GatewayEntry | None:
        """Forget the gateway (its clients are still on it: `Mesh` makes them away)."""
        return self.gateways.pop(gateway, None)

    def silent(self, now: float, timeout: float) -> list[str]:
        """The gateways not heard from for more than `timeout` seconds."""
        return [g.id for g in self.gateways.values() if now - g.last_seen > timeout]

    def closing(self, client: str, code: int, reason: str) -> str:
        """Its gateway was asked to close `client` (asked again by a sync until it is
        gone); the gateway."""
        gateway = self.clients[client].gateway
        self.gateways[gateway].closing[client] = (code, reason)
        return gateway

    # ------------------------------------------------------------ clients

    def connect(self, gw: GatewayEntry, client: str, user: str, session: bytes) -> ClientEntry:
        """A new client on `gw` (in no room yet: `Mesh` puts it in the lobby)."""
        state = self.clients[client] = ClientEntry(client, gw.id, user=user, session=session)
        if session:
            self.sessions[session] = client
        gw.clients.add(client)
        return state

    def end(self, state: ClientEntry) -> None:
        """The client is gone for good (it left its rooms)."""
        client = state.id
        del self.clients[client]
        self.away.pop(client, None)
        if self.sessions.get(state.session) == client:
            del self.sessions[state.session]
        gw = self.gateways.get(state.gateway)
        if gw is not None:
            gw.clients.discard(client)
            gw.closing.pop(client, None)

    def detach(self, state: ClientEntry) -> None:
        """Take the client off its gateway (it stays a client)."""
        gw = self.gateways.get(state.gateway)
        if gw is not None:
            gw.clients.discard(state.id)
            gw.closing.pop(state.id, None)
        state.gateway = ""

    def go_away(self, state: ClientEntry, until: float, seq: int) -> None:
        """Off its gateway, until `until` (its window), having had up to seq `seq`."""
        self.detach(state)
        state.away_seq = seq
        self.away[state.id] = until

    def back(self, state: ClientEntry, gw: GatewayEntry) -> None:
        """An away client is on `gw` again."""
        self.away.pop(state.id, None)
        gw.clients.add(state.id)
        state.gateway = gw.id

    def set_session(self, state: ClientEntry, session: bytes) -> None:
        """The client's session is now `session` (a resume rotates it; a gateway's hello
        restores it)."""
        if self.sessions.get(state.session) == state.id:
            del self.sessions[state.session]
        state.session = session
        self.sessions[session] = state.id

    def due(self, now: float) -> ClientEntry | None:
        """An away client whose window has passed at `now`, oldest first; None if none."""
        if self.away:
            client, until = next(iter(self.away.items()))
            if until <= now:
                return self.clients[client]
        return None

    def remember_expired(self, session: bytes) -> None:
        if session:
            if len(self.expired) >= EXPIRED_KEPT:
                del self.expired[next(iter(self.expired))]
            self.expired[session] = None

    def check(self) -> None:
        """Assert what holds of clients, gateways and sessions (their rooms: `Mesh.check`)."""
        for client, state in self.clients.items():
            assert state.id == client and LOBBY in state.rooms, client
            if state.gateway:
                assert client in self.gateways[state.gateway].clients, client
                assert client not in self.away, client
            else:  # away: on no gateway, within its window
                assert client in self.away and state.session, client
            if state.session:
                assert self.sessions[state.session] == client, client
        for gw in self.gateways.values():
            assert all(self.clients[c].gateway == gw.id for c in gw.clients), gw.id
            assert set(gw.closing) <= gw.clients, (gw.id, gw.closing)
        for session, client in self.sessions.items():
            assert self.clients[client].session == session
        assert set(self.away) <= set(self.clients)
        assert len(self.expired) <= EXPIRED_KEPT

    def snapshot(self) -> dict[str, Any]:
        """Plain data, in the order the state holds it."""
        return {
            "clients": [{"id": s.id, "gateway": s.gateway, "rooms": sorted(s.rooms), "user": s.user,
                         "session": s.session, "away_seq": s.away_seq}
                        for s in self.clients.values()],
            "gateways": [{"id": g.id, "index": g.index, "last_seen": g.last_seen,
                          "clients": sorted(g.clients),
                          "closing": [[c, code, reason] for c, (code, reason) in g.closing.items()]}
                         for g in self.gateways.values()],
            "sessions": [[h, c] for h, c in self.sessions.items()],
            "away": [[c, until] for c, until in self.away.items()],
            "expired": list(self.expired),
        }

    def dump_into(self, msg: ProcessorState.Sessions) -> None:
        """The state into a snapshot (meshstream_zmq/snapshot.py), in its own order; a
        gateway's clients are not written (they are the clients on it)."""
        for s in self.clients.values():
            m = msg.clients.add(id=s.id, gateway=s.gateway, user=s.user, session=s.session,
                                away_seq=s.away_seq)
            m.rooms.extend(sorted(s.rooms))
        for g in self.gateways.values():
            m = msg.gateways.add(id=g.id, index=g.index, last_seen=g.last_seen)
            m.closing.extend(g.closing)
            m.closing_codes.extend(code for code, _ in g.closing.values())
            m.closing_reasons.extend(reason for _, reason in g.closing.values())
        msg.sessions.extend(self.sessions.values())
        msg.away.extend(self.away)
        msg.away_until.extend(self.away.values())
        msg.expired.extend(self.expired)

    def load_from(self, msg: ProcessorState.Sessions) -> None:
        """The state of a snapshot, in place of this one's (the tables are not rebound)."""
        for table in (self.clients, self.gateways, self.sessions, self.away, self.expired):
            table.clear()
        for g in msg.gateways:
            self.gateways[g.id] = GatewayEntry(g.id, g.index, g.last_seen, closing=dict(zip(
                g.closing, zip(g.closing_codes, g.closing_reasons, strict=True), strict=True)))
        for m in msg.clients:
            self.clients[m.id] = ClientEntry(m.id, m.gateway, set(m.rooms), m.user, m.session,
                                             m.away_seq)
            if m.gateway:
                self.gateways[m.gateway].clients.add(m.id)
        for client in msg.sessions:
            self.sessions[self.clients[client].session] = client
        self.away.update(zip(msg.away, msg.away_until, strict=True))
        self.expired.update(dict.fromkeys(msg.expired))
