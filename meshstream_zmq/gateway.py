"""The gateway's pure core: everything a gateway decides, with no socket and no clock.

The gateway service (services/gateway.py) is a thin adapter around a `Gateway`:
it turns WebSocket events and ZeroMQ messages into method calls (the time passed
in) and carries out what the core asks of its `GatewayOutbox`. The core owns:

- **connections**: one small `Connection` record per client, its rooms and the
  frames queued for it in this tick;
- **the membership mirror**: which of its clients are in which room, kept from the
  processor's `joined`/`left` ops, so a room message arrives once per gateway and
  fans out here;
- **batching**: client frames and connects/disconnects become one `GatewayBatch`
  per flush; frames for one connection become one `\\n`-joined payload per flush;
- **the processor link** (`Link`): hello until welcomed, sequence numbers on
  client frames, the processor's acknowledgements and epoch; frames it may have
  lost are answered `processor-restarted`, never left unanswered;
- **policy**: the per-connection rate limit, the send-queue bound, keepalive;
- **admission**: the Origin check at the upgrade, the connection limits (per gateway
  and per source address), the client's token (`verify`, a port the adapter gives:
  the core handles no crypto and reads no clock), its expiry (`expire_tokens(wall)`)
  and `refresh-token`.

Flow of one client frame: `client_frame()` validates it and appends a row to the
open `ClientFrames` run → `flush()` hands the encoded batch to `out.push()`.
Flow of a room message: `processor_out()` queues the frame on every local member →
`flush()` calls `out.write()` once per member with the joined payload (the same
bytes object for members with the same queue, so the adapter can frame it once).
"""

from __future__ import annotations

import heapq
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable
from enum import Enum
from itertools import islice
from typing import Any, NamedTuple, Protocol

from . import LOBBY, protocol
from . import meshstream_pb2 as pb
from .auth import Identity, TokenError
from .errors import CloseCode, ErrorCode

PING_INTERVAL = 20.0  # keepalive: every connection is pinged this often ...
PING_TIMEOUT = 20.0  # ... and closed (1011) when the pong is this late
KEEPALIVE_TICK = 1.0  # the pings are spread: 1/20 of the connections each tick
CLIENT_ID_BYTES = 8  # a client ID's random part: 64 bits from `secrets`, in hex
REFRESH_TOKEN = "refresh-token"  # handled here when tokens are on, never forwarded
TOO_MANY_CONNECTIONS = "too-many-connections"  # the reason of close code 1013

# The adapter's token check: a token (None: none given) -> who, or why not.
Verifier = Callable[[str | None], Identity | TokenError]


class Link(Enum):
    """The gateway's link to the processor."""

    HELLO = "hello"  # hello sent (again every heartbeat); client frames are refused
    UP = "up"  # welcomed by this processor epoch; client frames are forwarded


class Connection:
    """What the gateway keeps per client: small on purpose (thousands of these).

    `link` is the adapter's handle for the connection (its protocol object); the
    core never looks inside it, it only hands it back through the outbox.
    """

    __slots__ = ("link", "id", "rooms", "pending", "tokens", "stamp", "closing", "ping_at",
                 "awaiting_pong", "user", "expires", "peer")

    def __init__(self, link: Any, client_id: str, burst: float, now: float, user: str = "",
                 expires: float | None = None, peer: str = "") -> None:
        self.link = link
        self.id = client_id
        self.user = user  # its token's `sub` ("" when tokens are off)
        self.expires = expires  # its token's `exp` (wall-clock seconds; None: never)
        self.peer = peer  # its source address, counted when there is a per-address limit
        self.rooms: set[str] = set()
        self.pending: list[bytes] = []  # frames for this client in this tick
        self.tokens = burst
        self.stamp = now
        self.closing = False
        self.ping_at = now  # the first ping is due one interval after connecting
        self.awaiting_pong = False


class Unacked(NamedTuple):
    """A client frame forwarded to the processor and not yet acknowledged by it."""

    seq: int
    client: str
    action: str
    target: str
    request_id: bytes


class GatewayOutbox(Protocol):
    """What the core asks of the I/O around it."""

    def wake(self) -> None:
        """Something is queued: call `flush()` at the end of this tick."""

    def push_batch(self, batch: bytes) -> bool:
        """Send an encoded GatewayBatch to the processor; False if it was not taken."""

    def write(self, link: Any, payload: bytes) -> int:
        """Send one text frame; return the bytes still buffered for the client (-1: not open)."""

    def close(self, link: Any, code: int, reason: str) -> None:
        """Start the closing handshake with this code and reason."""

    def ping(self, link: Any) -> None:
        """Send a keepalive ping; its pong is reported with `pong()`."""

    def notice(self, level: str, message: str, fields: dict[str, object]) -> None:
        """Something an operator should see in the log ("info", "warning" or "error")."""


class Gateway:
    """One gateway's state. Inputs are method calls; outputs go to `out`."""

    def __init__(self, gateway_id: str, index: int, out: GatewayOutbox, *, send_queue: int,
                 rate_limit: float = 0.0, rate_burst: int = 0, peer_timeout: float = 3.0,
                 max_connections: int = 0, max_connections_per_ip: int = 0,
                 allowed_origins: str = "", verify: Verifier | None = None) -> None:
        self.id = gateway_id
        self.index = index
        self.out = out
        self.send_queue = send_queue
        self.rate_limit = rate_limit
        self.burst = float(rate_burst or 2 * rate_limit)
        self.peer_timeout = peer_timeout
        self.max_connections = max_connections
        self.max_per_peer = max_connections_per_ip
        self.per_peer: Counter[str] = Counter()  # connections per source address (when limited)
        self.origins = frozenset(o.strip().rstrip("/").lower()
                                 for o in allowed_origins.split(",") if o.strip())
        self.verify = verify  # None: tokens are off, every connection is anonymous
        self.expiries: list[tuple[float, str]] = []  # heap of (exp, client); stale ones skipped
        self.conns: dict[str, Connection] = {}
        self.rooms: dict[str, set[Connection]] = {}  # the membership mirror
        # the processor link
        self.link = Link.HELLO
        self.processor_epoch = ""
        self.last_beat: float | None = None
        self.in_seq = 0  # last client frame numbered
        self.out_seq = 0  # last GatewayOut seen (0: none since the welcome)
        self.unacked: deque[Unacked] = deque()
        # this tick's output
        self.batch = pb.GatewayBatch(gateway=gateway_id)
        self.open_frames: pb.ClientFrames | None = None  # the batch's last item, if frames
        self.dirty: list[Connection] = []
        self.woken = False
        self.keepalive_offset = 0
        # counters, exported by the adapter
        self.frames_in = 0
        self.frames_out = 0
        self.errors: Counter[str] = Counter()
        self.closes: Counter[int] = Counter()
        self.drops: Counter[str] = Counter()

    @property
    def up(self) -> bool:
        return self.link is Link.UP

    # ------------------------------------------------------------ clients

    def origin_allowed(self, origins: list[str]) -> bool:
        """The Origin check of an upgrade (`origins`: its Origin header values).

        With no `allowed_origins` every upgrade passes. Otherwise exactly one Origin,
        one of the allowed values (compared as browsers write them: case aside), or
        none at all: browsers always send Origin on a WebSocket upgrade, so a request
        without one is no page's cross-site request; and a client that is not a browser
        could send any Origin it likes, so refusing it would protect nothing.
        """
        if not self.origins or not origins:
            return True
        return len(origins) == 1 and origins[0].strip().lower() in self.origins

    def connect(self, link: Any, now: float, token: str | None = None,
                peer: str = "") -> Connection | None:
        """A WebSocket handshake completed: a new client, greeted with its ID; or refused.

        A refused connection is closed before any other frame: 1013
        `too-many-connections` over a connection limit, else 4003 with the token's
        TokenError (token-required, bad-token, token-expired) when tokens are on.
        """
        if (self.max_connections and len(self.conns) >= self.max_connections) or (
                self.max_per_peer and self.per_peer[peer] >= self.max_per_peer):
            self._refuse(link, CloseCode.TRY_AGAIN_LATER, TOO_MANY_CONNECTIONS)
            return None
        user, expires = "", None
        if self.verify is not None:
            identity = self.verify(token)
            if isinstance(identity, TokenError):
                self._refuse(link, CloseCode.TOKEN, identity.value)
                return None
            user, expires = identity.user, identity.expires
        client_id = f"{self.id}.{secrets.token_hex(CLIENT_ID_BYTES)}"
        while client_id in self.conns:  # pragma: no cover - 1 in 2**64
            client_id = f"{self.id}.{secrets.token_hex(CLIENT_ID_BYTES)}"
        conn = self.conns[client_id] = Connection(link, client_id, self.burst, now, user, expires, peer)
        if self.max_per_peer:
            self.per_peer[peer] += 1
        if expires is not None:
            self._expire_at(conn, expires)
        connected = self._item().connected
        connected.client = client_id
        connected.user = user
        body = {"client": client_id, "user": user} if user else {"client": client_id}
        self._queue(conn, protocol.encode("client-connected", client_id, protocol.encode_body(body)))
        return conn

    def _refuse(self, link: Any, code: int, reason: str) -> None:
        self.closes[code] += 1
        self.out.close(link, code, reason)

    def disconnect(self, conn: Connection) -> None:
        """The connection is gone (closed either way, or lost)."""
        for room in list(conn.rooms):
            self._forget_room(conn, room)
        if self.conns.pop(conn.id, None) is not None:
            if self.max_per_peer:
                left = self.per_peer[conn.peer] - 1
                if left > 0:
                    self.per_peer[conn.peer] = left
                else:
                    del self.per_peer[conn.peer]
            self._item().disconnected = conn.id
            self._wake()

    # ------------------------------------------------------------ tokens

    def expire_tokens(self, wall: float) -> None:
        """Every second or so (wall-clock time): close connections whose token has expired."""
        heap = self.expiries
        while heap and heap[0][0] <= wall:
            exp, client = heapq.heappop(heap)
            conn = self.conns.get(client)
            if conn is not None and conn.expires == exp:  # else gone, or refreshed since
                self.close(conn, CloseCode.TOKEN, TokenError.EXPIRED.value)

    def _expire_at(self, conn: Connection, expires: float) -> None:
        heap = self.expiries
        heapq.heappush(heap, (expires, conn.id))
        if len(heap) > 2 * len(self.conns) + 64:  # refreshes leave stale entries: drop them
            self.expiries = [(c.expires, c.id) for c in self.conns.values() if c.expires is not None]
            heapq.heapify(self.expiries)

    def _refresh(self, conn: Connection, parsed: protocol.Inbound) -> None:
        """`refresh-token`: a valid token for the same user replaces the connection's."""
        assert self.verify is not None
        token = protocol.decode_body(parsed.body).get("token")
        identity = self.verify(token) if isinstance(token, str) and token else TokenError.BAD
        if isinstance(identity, TokenError) or identity.user != conn.user:
            code = ErrorCode.TOKEN_EXPIRED if identity is TokenError.EXPIRED else ErrorCode.BAD_TOKEN
            return self._reply_error(conn, code, parsed.action, parsed.target, parsed.request_id)
        conn.expires = identity.expires
        body: dict[str, Any] = {"user": identity.user}
        if identity.expires is not None:
            self._expire_at(conn, identity.expires)
            exp = identity.expires
            body["expires"] = int(exp) if exp.is_integer() else exp
        self._queue(conn, protocol.encode("token-refreshed", conn.id, protocol.encode_body(body),
                                          request_id=parsed.request_id))
        return None

    def client_frame(self, conn: Connection, message: str | bytes, now: float) -> None:
        """A complete message from a client: refused with an error, or forwarded."""
        self.frames_in += 1
        # Every frame counts against the rate limit (binary ones too), and a refused
        # frame's error still carries its id (parsed first for that).
        parsed = None if isinstance(message, bytes) else protocol.parse(message)
        if not self._rate_ok(conn, now):
            if parsed is None:
                return self._reply_error(conn, ErrorCode.RATE_LIMITED)
            return self._reply_error(conn, ErrorCode.RATE_LIMITED, parsed.action, parsed.target,
                                     parsed.request_id)
        if parsed is None:
            return self._reply_error(conn, ErrorCode.BINARY_FRAME)
        if isinstance(parsed, protocol.Rejected):
            return self._reply_error(conn, parsed.code, parsed.action, parsed.target,
                                     parsed.request_id)
        if self.verify is not None and parsed.action == REFRESH_TOKEN:
            return self._refresh(conn, parsed)
        if self.link is not Link.UP:
            return self._reply_error(conn, ErrorCode.PROCESSOR_UNAVAILABLE, parsed.action,
                                     parsed.target, parsed.request_id)
        self.in_seq += 1
        run = self.open_frames
        if run is None:  # a new run of frames (any other item ends the previous one)
            run = self.open_frames = self.batch.items.add().frames
            run.first_seq = self.in_seq
        run.client.append(conn.id)
        run.action.append(parsed.action)
        run.target.append(parsed.target)
        run.body.append(b"" if parsed.body == protocol.EMPTY_BODY else parsed.body)
        run.is_target_client.append(parsed.is_target_client)
        run.request_id.append(parsed.request_id)
        self.unacked.append(Unacked(self.in_seq, conn.id, parsed.action, parsed.target,
                                    parsed.request_id))
        self._wake()
        return None

    def pong(self, conn: Connection) -> None:
        conn.awaiting_pong = False

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Close a client (once); it leaves when the adapter reports `disconnect`."""
        if conn.closing:
            return
        conn.closing = True
        self.closes[code] += 1
        self.out.close(conn.link, code, reason)

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.conns.values()):
            self.close(conn, code, reason)

    def _rate_ok(self, conn: Connection, now: float) -> bool:
        """Token bucket; past twice the burst in debt the connection is closed (flood)."""
        rate = self.rate_limit
        if rate <= 0:
            return True
        conn.tokens = min(self.burst, conn.tokens + (now - conn.stamp) * rate)
        conn.stamp = now
        conn.tokens -= 1
        if conn.tokens >= 0:
            return True
        if conn.tokens < -self.burst:
            self.close(conn, CloseCode.POLICY, "flood: rate limit exceeded")
        return False

    def _reply_error(self, conn: Connection, code: ErrorCode, action: str = "", target: str = "",
                     request_id: bytes = b"") -> None:
        self._queue(conn, protocol.error(code, action=action, target=target, request_id=request_id))
        self.errors[code.value] += 1

    def _queue(self, conn: Connection, frame: bytes) -> None:
        if not conn.pending:
            self.dirty.append(conn)
        conn.pending.append(frame)
        self._wake()

    def _forget_room(self, conn: Connection, room: str) -> None:
        conn.rooms.discard(room)
        members = self.rooms.get(room)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.rooms[room]

    # ------------------------------------------------------------ processor link

    def heartbeat(self, now: float) -> None:
        """Every heartbeat interval: a heartbeat when up, hello otherwise."""
        if self.last_beat is None:
            self.last_beat = now  # silence is counted from the first heartbeat on
        if self.link is Link.UP and now - self.last_beat > self.peer_timeout:
            self.out.notice("warning", "processor silent", {"gateway": self.id})
            self.link = Link.HELLO
        if self.link is Link.UP:
            self._item().heartbeat.SetInParent()
            self._wake()
        else:
            self._hello()

    def processor_beat(self, beat: pb.ProcessorBeat, now: float) -> None:
        self.last_beat = now
        if self.link is not Link.UP:
            return
        if beat.epoch != self.processor_epoch or self.id not in beat.acked:
            # A new processor, or one that forgot us: resync before accepting frames.
            self.out.notice("warning", "processor changed; resyncing",
                            {"gateway": self.id, "epoch": beat.epoch})
            self.link = Link.HELLO
            self._abandon_unacked()
            self._hello()
            return
        acked = beat.acked[self.id]
        unacked = self.unacked
        while unacked and unacked[0].seq <= acked:
            unacked.popleft()

    def processor_out(self, out: pb.GatewayOut) -> None:
        """One GatewayOut: deliveries, membership changes, closes, the welcome."""
        if out.epoch == self.processor_epoch and self.out_seq and out.seq != self.out_seq + 1:
            self.out.notice("error", "messages lost", {"expected": self.out_seq + 1, "got": out.seq})
            frame = protocol.error(ErrorCode.MESSAGES_LOST)
            for conn in self.conns.values():
                self._queue(conn, frame)
        self.out_seq = out.seq
        conns = self.conns
        dirty = self.dirty
        for op in out.ops:
            kind = op.WhichOneof("kind")
            if kind == "deliver":
                d = op.deliver
                frame = d.frame
                if d.room:
                    members: Iterable[Connection] = (
                        conns.values() if d.room == LOBBY else self.rooms.get(d.room, ()))
                    # _queue() inlined: this loop runs once per recipient
                    if d.exclude:
                        skip = set(d.exclude)
                        for conn in members:
                            if conn.id not in skip:
                                pending = conn.pending
                                if not pending:
                                    dirty.append(conn)
                                pending.append(frame)
                    else:
                        for conn in members:
                            pending = conn.pending
                            if not pending:
                                dirty.append(conn)
                            pending.append(frame)
                else:
                    for client in d.clients:
                        target = conns.get(client)
                        if target is not None:
                            self._queue(target, frame)
            elif kind == "joined":
                member = conns.get(op.joined.client)
                if member is not None:
                    member.rooms.add(op.joined.room)
                    self.rooms.setdefault(op.joined.room, set()).add(member)
            elif kind == "left":
                member = conns.get(op.left.client)
                if member is not None:
                    self._forget_room(member, op.left.room)
            elif kind == "close":
                member = conns.get(op.close.client)
                if member is not None:
                    self.close(member, op.close.code, op.close.reason)
            elif kind == "welcome":
                self._welcomed(op.welcome.epoch)
        if dirty:
            self._wake()

    def _welcomed(self, epoch: str) -> None:
        if self.processor_epoch and epoch != self.processor_epoch:
            self._abandon_unacked()
        self.processor_epoch = epoch
        self.link = Link.UP
        self.out_seq = 0
        self.out.notice("info", "welcomed by processor", {"gateway": self.id, "epoch": epoch})

    def _abandon_unacked(self) -> None:
        """Frames a (new or forgetful) processor never acknowledged may be lost: say so."""
        for u in self.unacked:
            conn = self.conns.get(u.client)
            if conn is not None:
                self._reply_error(conn, ErrorCode.PROCESSOR_RESTARTED, u.action, u.target, u.request_id)
        self.unacked.clear()

    def _hello(self) -> None:
        """(Re)introduce this gateway with every client and its rooms (the resync)."""
        item = self._item()
        item.hello.index = self.index
        for conn in self.conns.values():
            c = item.hello.clients.add()
            c.client = conn.id
            c.user = conn.user
            c.rooms.extend(conn.rooms)
        self._wake()

    def _item(self) -> pb.GatewayItem:
        """A new item at the end of the batch (ending any run of frames: order matters)."""
        self.open_frames = None
        self._wake()
        return self.batch.items.add()

    # ------------------------------------------------------------ output

    def _wake(self) -> None:
        if not self.woken:
            self.woken = True
            self.out.wake()

    def flush(self) -> None:
        """End of tick: one batch to the processor, one write per connection with frames."""
        self.woken = False
        if self.batch.items:
            batch, self.batch = self.batch, pb.GatewayBatch(gateway=self.id)
            self.open_frames = None
            if not self.out.push_batch(batch.SerializeToString()):
                self._refused(batch)
        if self.dirty:
            self._write_dirty()

    def _refused(self, batch: pb.GatewayBatch) -> None:
        """The processor is unreachable: every client frame in the batch gets an error."""
        self.drops["processor-unreachable"] += 1
        refused = set()
        conns = self.conns
        for item in batch.items:
            run = item.frames
            for i, (client, action, target, request_id) in enumerate(
                    zip(run.client, run.action, run.target, run.request_id, strict=True)):
                refused.add(run.first_seq + i)
                conn = conns.get(client)
                if conn is not None:
                    self._reply_error(conn, ErrorCode.PROCESSOR_UNAVAILABLE, action, target, request_id)
        if refused:
            self.unacked = deque(u for u in self.unacked if u.seq not in refused)
        if self.dirty:
            self._write_dirty()

    def _write_dirty(self) -> None:
        """One payload per connection with frames: its frames joined with "\\n".

        Members of a room receive the same frames in the same order, so consecutive
        connections usually have equal queues: the payload is then built once and the
        same bytes object handed to each write.
        """
        dirty, self.dirty = self.dirty, []
        self.woken = False
        out = self.out
        limit = self.send_queue
        n = 0
        prev: list[bytes] | None = None
        payload = b""
        for conn in dirty:
            pending = conn.pending
            n += len(pending)
            conn.pending = []
            if conn.closing:
                continue
            if pending != prev:  # identical frames compare by identity first: cheap
                payload = pending[0] if len(pending) == 1 else b"\n".join(pending)
                prev = pending
            if out.write(conn.link, payload) > limit:
                self.close(conn, CloseCode.SLOW_CONSUMER, "slow consumer: send queue full")
        self.frames_out += n

    # ------------------------------------------------------------ keepalive

    def keepalive(self, now: float) -> None:
        """Every KEEPALIVE_TICK: ping a slice of the connections, close those whose pong is late.

        One timer for the whole gateway instead of a task per connection; the pings
        are spread over the interval.
        """
        conns = self.conns
        share = -(-len(conns) * KEEPALIVE_TICK // PING_INTERVAL)  # ceil
        if self.keepalive_offset >= len(conns):
            self.keepalive_offset = 0
        batch = list(islice(conns.values(), self.keepalive_offset, self.keepalive_offset + int(share)))
        self.keepalive_offset += len(batch)
        for conn in batch:
            self.keepalive_one(conn, now)

    def keepalive_one(self, conn: Connection, now: float) -> None:
        if conn.closing:
            return
        if conn.awaiting_pong:
            if now - conn.ping_at >= PING_TIMEOUT:
                self.close(conn, CloseCode.INTERNAL_ERROR, "keepalive ping timeout")  # as websockets'
            return
        if now - conn.ping_at < PING_INTERVAL * 0.9:  # slices shift as connections come and go
            return
        conn.ping_at = now
        conn.awaiting_pong = True
        self.out.ping(conn.link)

    # ------------------------------------------------------------ invariants

    def check(self) -> None:
        """The core's invariants (tests call this after every step)."""
        for room, members in self.rooms.items():
            assert members, f"empty room {room} kept"
            for conn in members:
                assert self.conns.get(conn.id) is conn, f"{conn.id} in {room} but not connected"
                assert room in conn.rooms, f"{conn.id} listed in {room} but does not know it"
        for conn in self.conns.values():
            for room in conn.rooms:
                assert conn in self.rooms.get(room, ()), f"{conn.id} thinks it is in {room}"
            assert bool(conn.pending) == (conn in self.dirty), f"{conn.id} pending but not dirty"
        if self.max_per_peer:
            assert self.per_peer == Counter(c.peer for c in self.conns.values()), "per-peer counts"
        for conn in self.conns.values():
            if conn.expires is not None and not conn.closing:
                assert (conn.expires, conn.id) in self.expiries, f"{conn.id}'s expiry not scheduled"
        seqs = [u.seq for u in self.unacked]
        assert seqs == sorted(set(seqs)), "unacknowledged frames out of order"
        assert all(s <= self.in_seq for s in seqs)
        if self.link is not Link.UP:
            assert self.open_frames is None, "frames accepted while the processor link is down"
