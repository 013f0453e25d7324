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
  per flush; frames for one connection become one `\\n`-joined payload per flush,
  except a resume's replay: written paced (`Backlog`: a few frames per message while
  the transport holds at most `pace` bytes, on again at `drained()`), frames that come
  meanwhile queued behind it;
- **the processor link** (`Link`): hello until welcomed, sequence numbers on
  client frames, the processor's acknowledgements and epoch; frames it may have
  lost are answered `processor-restarted`, never left unanswered;
- **policy**: the per-connection rate limit, the send-queue bound, keepalive, failed
  resumes per source address (`ResumeFailures`);
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

import hashlib
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
SESSION_BYTES = 24  # a session secret: 24 random bytes from `secrets`, URL-safe base64 (32 chars)
RESUME_TIMEOUT = 10.0  # a resume the processor has not answered by then: closed 1013, retry
HELD_FRAMES = 100  # frames a client may send while its resume is answered; one more: 1008
RESUMED_ELSEWHERE = 4002  # the processor's close of a connection whose session resumed elsewhere
PROCESSOR_UNAVAILABLE = "processor-unavailable"  # the reason of a 1013 close of a held resume
PACED_MESSAGE = 65536  # a paced write (a replay) joins frames up to this size; a bigger one goes alone
RESUME_FAILURES = 10.0  # failed resumes (unknown-session, expired) a source address may have per second ...
RESUME_FAILURE_BURST = 100  # ... and at once; past it its resumes are closed 1013 unasked
RESUME_FAILURE_ADDRESSES = 4096  # source addresses with failed resumes tracked (the oldest forgotten first)
TOO_MANY_FAILED_RESUMES = "too-many-failed-resumes"  # the reason of that 1013 close
GUESSES = ("unknown-session", "expired")  # the answers to a resume that count as failed
RETAINED = 65536  # connected/disconnected/away items kept from refused batches, at most
KEPT_BATCH_BYTES = 16 << 20  # batches kept for a logged processor while it is unreachable, at most
# Client frames' bodies in one batch, at most: past it the batch goes at once, within the
# tick (a processor with --log stores each batch in one log entry: NATS bounds a message).
BATCH_BYTES = 256 << 10
WAIT_TIMEOUTS = 10  # peer timeouts a gateway waits for a silent processor on a log (Link.WAIT)
# GatewayOuts past a missing one, held while a processor on a log sends the missing again
# (after a restart or a takeover), for up to two heartbeats; past that, a gap.
EARLY_OUTS = 4096

# The adapter's token check: a token (None: none given) -> who, or why not.
Verifier = Callable[[str | None], Identity | TokenError]


def new_session() -> tuple[str, bytes]:
    """A resume secret for a client and the SHA-256 the processor keeps instead of it."""
    secret = secrets.token_urlsafe(SESSION_BYTES)
    return secret, hashlib.sha256(secret.encode()).digest()


def session_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Resume(NamedTuple):
    """What a connection opened with `?resume=<secret>&positions=<epoch>:<offset>,…` asks
    for: the session, and the client's positions per stream (docs/protocol.md, Positions)."""

    secret: str
    positions: tuple[tuple[str, int], ...] = ()  # (stream epoch, offset of its last message)


MAX_RESUME_POSITIONS = 1000  # positions a resume may name; past them the rest are ignored
MAX_EPOCH = 64  # characters of an epoch in a resume; a longer one is not ours: ignored


def parse_position(text: str) -> tuple[str, int] | None:
    """`<epoch>:<offset>` -> (epoch, offset), or None when malformed (no epoch, an epoch
    over MAX_EPOCH characters, an offset not ASCII digits or above protocol.MAX_POSITION)."""
    epoch, _, n = text.rpartition(":")
    # isdigit() alone takes "²" (int() refuses it) and "٣" (any script's digits)
    if (epoch and len(epoch) <= MAX_EPOCH and n.isascii() and n.isdigit() and len(n) <= 32
            and int(n) <= protocol.MAX_POSITION):
        return epoch, int(n)
    return None


def parse_resume(secret: str | None, positions: str | None = None) -> Resume | None:
    """`?resume=` and `?positions=` as given (None: absent) -> a Resume, or None for a
    fresh connect.

    A malformed position is ignored (as if that stream were not named: its replay is
    then best effort, from when the client went away), as are those past
    MAX_RESUME_POSITIONS. An empty or over-long secret is not a session of ours: the
    resume is still asked for, and the processor answers unknown-session.
    """
    if secret is None:
        return None
    named: list[tuple[str, int]] = []
    for text in (positions or "").split(",", MAX_RESUME_POSITIONS)[:MAX_RESUME_POSITIONS]:
        position = parse_position(text)
        if position is not None:
            named.append(position)
    return Resume(secret[:256], tuple(named))


class Link(Enum):
    """The gateway's link to the processor (every transition: LINK)."""

    HELLO = "hello"  # hello sent (again every heartbeat); client frames are refused
    UP = "up"  # welcomed by this processor epoch; client frames are forwarded
    RESYNC = "resync"  # up, but GatewayOuts were lost: a Resync asked, its sync awaited
    # A processor on a log fell silent: it (restarted) or its standby (taken over) comes back
    # with the same state and epoch. Frames are taken and kept for it, bounded; its beat
    # brings the link up again and what it did not acknowledge is sent again.
    WAIT = "wait"


# Every legal transition of the link, h11-style: (state, event) -> state. Events: the
# processor's `welcome`; its `silence` (no beat for peer_timeout); a beat that shows it
# `forgot` us (a new epoch, or our ID missing); a `gap` in the GatewayOut seqs; the
# `sync` answering a Resync. Anything else raises (a bug, not a state to limp on in).
LINK: dict[tuple[Link, str], Link] = {
    (Link.HELLO, "welcome"): Link.UP,
    (Link.UP, "welcome"): Link.UP,  # the answer to a second hello: its numbering starts over
    (Link.RESYNC, "welcome"): Link.UP,
    (Link.HELLO, "silence"): Link.HELLO,
    (Link.UP, "silence"): Link.HELLO,
    (Link.RESYNC, "silence"): Link.HELLO,
    (Link.UP, "forgot"): Link.HELLO,
    (Link.RESYNC, "forgot"): Link.HELLO,
    (Link.UP, "gap"): Link.RESYNC,
    (Link.RESYNC, "gap"): Link.RESYNC,  # asked again: the sync may be among the lost
    (Link.RESYNC, "sync"): Link.UP,
    (Link.UP, "sync"): Link.UP,  # the answer to a Resync a hello overtook: still in order
    (Link.UP, "wait"): Link.WAIT,  # silent, but on a log (ProcessorBeat.logged)
    (Link.WAIT, "wait"): Link.WAIT,
    (Link.WAIT, "beat"): Link.UP,  # back (the same epoch, us in its acknowledgements)
    (Link.WAIT, "silence"): Link.HELLO,  # waited WAIT_TIMEOUTS peer timeouts: given up
    (Link.WAIT, "forgot"): Link.HELLO,
    (Link.WAIT, "welcome"): Link.UP,
    (Link.WAIT, "gap"): Link.RESYNC,
    (Link.WAIT, "sync"): Link.WAIT,
}
UP = (Link.UP, Link.RESYNC, Link.WAIT)  # client frames are taken


class Connection:
    """What the gateway keeps per client: small on purpose (thousands of these).

    `link` is the adapter's handle for the connection (its protocol object); the
    core never looks inside it, it only hands it back through the outbox.
    """

    __slots__ = ("link", "id", "rooms", "pending", "tokens", "stamp", "closing", "ping_at",
                 "awaiting_pong", "user", "expires", "peer", "session_hash", "held", "away_on_close",
                 "backlog")

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
        self.session_hash = b""  # SHA-256 of its current resume secret
        # While a resume is being answered: the client's frames, queued (None: live)
        self.held: list[str | bytes] | None = None
        # Closed by us without cause (keepalive timeout, gateway restart): reported away
        self.away_on_close = False
        # While a resume's replay is written paced: what waits for the transport to drain
        # (None: nothing waits, frames are written as they come)
        self.backlog: Backlog | None = None


class Backlog:
    """Frames waiting for a connection's transport to drain: a resume's greeting and replay,
    then whatever came for the connection meanwhile, in order. Only what came behind the
    replay counts against the send queue: the replay is bounded by the processor's history."""

    __slots__ = ("frames", "size", "replay", "pumping")

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = deque(frames)
        self.size = sum(map(len, frames))  # bytes in `frames`
        self.replay = self.size  # bytes of the replay not yet written (at the head of `frames`)
        self.pumping = False  # being written (a drain reported meanwhile changes nothing)

    def behind(self) -> int:
        """Bytes queued behind the replay."""
        return self.size - self.replay


class ResumeFailures:
    """Failed resumes (answered `unknown-session` or `expired`) per source address, a token
    bucket each: resume secrets cannot be tried at the pace of a gateway's connections.

    An address is tracked from its first failure until its bucket is full again, at most
    `addresses` of them (past that the oldest is forgotten: it starts full again). The time
    is passed in; a rate of 0 turns it off.
    """

    def __init__(self, rate: float, burst: int, addresses: int = RESUME_FAILURE_ADDRESSES) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.addresses = addresses
        self.buckets: dict[str, list[float]] = {}  # address -> [tokens, when last refilled]

    def _refilled(self, peer: str, now: float) -> list[float] | None:
        bucket = self.buckets.get(peer)
        if bucket is not None and now > bucket[1]:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        return bucket

    def allowed(self, peer: str, now: float) -> bool:
        """May a resume from `peer` be asked for at `now` (one more failure is in its budget)?"""
        bucket = self._refilled(peer, now)
        if bucket is None:
            return True
        if bucket[0] >= self.burst:
            del self.buckets[peer]
            return True
        return bucket[0] >= 1

    def failed(self, peer: str, when: float) -> None:
        """A resume from `peer`, asked for at `when`, was refused unknown-session or expired."""
        if self.rate <= 0:
            return
        bucket = self._refilled(peer, when)
        if bucket is None:
            if len(self.buckets) >= self.addresses:
                del self.buckets[next(iter(self.buckets))]
            bucket = self.buckets[peer] = [self.burst, when]
        bucket[0] -= 1  # concurrent resumes may all fail: a debt, paid back at `rate`

    def check(self) -> None:
        assert len(self.buckets) <= self.addresses, "failed resumes: too many addresses"
        assert all(tokens < self.burst for tokens, _ in self.buckets.values()), "a full bucket kept"


class Waiting(NamedTuple):
    """A connection held while the processor answers its resume."""

    conn: Connection
    secret: str  # the new secret, in force if the resume succeeds
    deadline: float
    request: pb.ResumeRequest  # as sent: sent again after each hello until answered


class Unacked(NamedTuple):
    """A client frame forwarded to the processor and not yet acknowledged by it (whole:
    a processor restarted from its log is sent it again)."""

    seq: int
    client: str
    action: str
    target: str
    request_id: bytes
    body: bytes = b""
    is_target_client: bool = False


class GatewayOutbox(Protocol):
    """What the core asks of the I/O around it."""

    def wake(self) -> None:
        """Something is queued: call `flush()` at the end of this tick."""

    def push_batch(self, batch: bytes) -> bool:
        """Send an encoded GatewayBatch to the processor; False if it was not taken."""

    def write(self, link: Any, payload: bytes) -> int:
        """Send one text frame; return the bytes still buffered for the client (-1: not open).

        Once a write leaves more than the core's `pace` bytes buffered, the adapter reports
        `drained(conn)` when the buffer has gone down again (asyncio: `resume_writing` with
        the transport's high-water mark at `pace`)."""

    def close(self, link: Any, code: int, reason: str) -> None:
        """Start the closing handshake with this code and reason."""

    def ping(self, link: Any) -> None:
        """Send a keepalive ping; its pong is reported with `pong()`."""

    def switch_processor(self) -> None:
        """Talk to the other processor of the pair from now on (only called with a pair)."""

    def notice(self, level: str, message: str, fields: dict[str, object]) -> None:
        """Something an operator should see in the log ("info", "warning" or "error")."""

    def admin_answer(self, query: int, answer: bytes) -> None:
        """The processor's JSON answer to `admin_query(query, ...)` (the admin page)."""


class Gateway:
    """One gateway's state. Inputs are method calls; outputs go to `out`."""

    def __init__(self, gateway_id: str, index: int, out: GatewayOutbox, *, send_queue: int,
                 rate_limit: float = 0.0, rate_burst: int = 0, peer_timeout: float = 3.0,
                 max_connections: int = 0, max_connections_per_ip: int = 0,
                 allowed_origins: str = "", verify: Verifier | None = None,
                 pair: bool = False, resume_failures: float = RESUME_FAILURES,
                 resume_failure_burst: int = RESUME_FAILURE_BURST) -> None:
        """`peer_timeout`: the processor's silence after which frames are refused (and, with
        a `pair` of processors, the other one is tried). `resume_failures` per second (and
        `resume_failure_burst` at once) per source address: failed resumes allowed."""
        self.id = gateway_id
        self.index = index
        self.out = out
        self.send_queue = send_queue
        self.rate_limit = rate_limit
        self.burst = float(rate_burst or 2 * rate_limit)
        self.peer_timeout = peer_timeout
        self.pair = pair
        self.max_connections = max_connections
        self.max_per_peer = max_connections_per_ip
        self.per_peer: Counter[str] = Counter()  # connections per source address (when limited)
        self.origins = frozenset(o.strip().rstrip("/").lower()
                                 for o in allowed_origins.split(",") if o.strip())
        self.verify = verify  # None: tokens are off, every connection is anonymous
        self.failed_resumes = ResumeFailures(resume_failures, resume_failure_burst)
        self.expiries: list[tuple[float, str]] = []  # heap of (exp, client); stale ones skipped
        self.conns: dict[str, Connection] = {}
        self.waiting: dict[str, Waiting] = {}  # resumes being answered, by link name
        # link names of held connections that ended: clean?, their address, when they asked
        self.orphans: dict[str, tuple[bool, str, float]] = {}
        self.resumes = 0  # link names for ResumeRequests
        self.rooms: dict[str, set[Connection]] = {}  # the membership mirror
        # the processor link
        self.link = Link.HELLO
        self.processor_epoch = ""
        self.processor_run = ""  # the processor process (with a log its epoch outlives it)
        self.last_beat: float | None = None
        self.in_seq = 0  # last client frame numbered
        self.out_seq = 0  # last GatewayOut seen (0: none since the welcome)
        self.unacked: deque[Unacked] = deque()
        self.retained: list[pb.GatewayItem] = []  # from refused batches: sent first next time
        # A processor with a log (ProcessorBeat.logged) that is unreachable is restarting
        # and will be back with its state: batches wait for it whole, in order, their
        # frames unanswered (bounded: past KEPT_BATCH_BYTES the oldest are refused).
        self.processor_logged = False
        self.kept: deque[tuple[bytes, int]] = deque()  # (a batch, the last frame seq numbered then)
        self.kept_bytes = 0
        self.pushed_seq = 0  # frames up to this one were handed to ZeroMQ (the rest: kept)
        self.waiting_since = 0.0  # Link.WAIT since
        self.early: dict[int, pb.GatewayOut] = {}  # by seq: past a missing one (EARLY_OUTS)
        self.early_beats = 0  # heartbeats the missing one has been awaited
        self.stopping: tuple[int, str] | None = None  # close_all's code and reason, once called
        self.resync_from: set[str] | None = None  # while a Resync is unanswered: the clients then
        # this tick's output
        self.batch = pb.GatewayBatch(gateway=gateway_id)
        self.batch_bytes = 0  # client frames' bodies and targets in it (BATCH_BYTES)
        self.open_frames: pb.ClientFrames | None = None  # the batch's last item, if frames
        self.dirty: list[Connection] = []
        self.paced: set[Connection] = set()  # connections with a backlog (Connection.backlog)
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
        return self.link in UP

    def _move(self, event: str) -> Link:
        """Take the link's transition for `event` (LINK); the state it left."""
        before = self.link
        self.link = LINK[(before, event)]
        return before

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
                peer: str = "", resume: Resume | None = None) -> Connection | None:
        """A WebSocket handshake completed: a new client, greeted with its ID; or refused;
        or, with `resume`, a connection held until the processor answers (`resume_result`).

        A refused connection is closed before any other frame: 1013
        `too-many-connections` over a connection limit, else 4003 with the token's
        TokenError (token-required, bad-token, token-expired) when tokens are on, else,
        for a resume from an address past its failed resumes (`ResumeFailures`), 1013
        `too-many-failed-resumes` without asking the processor.
        """
        if (self.max_connections and len(self.conns) + len(self.waiting) >= self.max_connections) or (
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
        if resume is not None and not self.failed_resumes.allowed(peer, now):
            self.drops["failed-resumes"] += 1
            self._refuse(link, CloseCode.TRY_AGAIN_LATER, TOO_MANY_FAILED_RESUMES)
            return None
        conn = Connection(link, "", self.burst, now, user, expires, peer)
        try:
            if resume is not None:
                self._hold(conn, now, resume)
            else:
                self._greet(conn, {})
        except Exception:  # a bug: nothing of it stays, no slot is taken (the adapter answers 500)
            if self.conns.get(conn.id) is conn:
                del self.conns[conn.id]
            if conn.held is not None:
                self.waiting.pop(conn.id[1:], None)
            raise
        if self.max_per_peer:
            self.per_peer[peer] += 1
        return conn

    def _greet(self, conn: Connection, extra: dict[str, Any]) -> None:
        """`conn` becomes a new client: an ID, a session, announced and greeted."""
        client_id = f"{self.id}.{secrets.token_hex(CLIENT_ID_BYTES)}"
        while client_id in self.conns:  # pragma: no cover - 1 in 2**64
            client_id = f"{self.id}.{secrets.token_hex(CLIENT_ID_BYTES)}"
        conn.id = client_id
        self.conns[client_id] = conn
        if conn.expires is not None:
            self._expire_at(conn, conn.expires)
        secret, conn.session_hash = new_session()
        connected = self._item().connected
        connected.client = client_id
        connected.user = conn.user
        connected.session_hash = conn.session_hash
        self._queue(conn, self._greeting(conn, secret, self.processor_epoch, extra))

    def _greeting(self, conn: Connection, secret: str, epoch: str, extra: dict[str, Any]) -> bytes:
        body: dict[str, Any] = {"client": conn.id, "user": conn.user} if conn.user else {"client": conn.id}
        body["session"] = secret
        body["epoch"] = epoch
        body.update(extra)
        return protocol.encode("client-connected", conn.id, protocol.encode_body(body))

    def _hold(self, conn: Connection, now: float, resume: Resume) -> None:
        """Ask the processor for the session; nothing goes to the client until it answers."""
        self.resumes += 1
        name = str(self.resumes)
        conn.id = "~" + name  # not a client ID: a held connection is in no room and not in conns
        conn.held = []
        secret, new_hash = new_session()
        request = pb.ResumeRequest(
            link=name, session_hash=session_hash(resume.secret), new_session_hash=new_hash,
            user=conn.user, positions=[pb.Position(epoch=e, offset=n) for e, n in resume.positions])
        self.waiting[name] = Waiting(conn, secret, now + RESUME_TIMEOUT, request)
        self._item().resume.CopyFrom(request)

    def resume_result(self, result: pb.ResumeResult) -> None:
        """The processor's answer to a held connection: resumed, or a new client."""
        waiting = self.waiting.pop(result.link, None)
        if waiting is None:  # the connection ended before the answer: report the client
            orphan = self.orphans.pop(result.link, None)
            if orphan is None:
                return
            clean, peer, asked = orphan
            if result.client:
                if clean:
                    self._item().disconnected = result.client
                else:
                    self._item().away = result.client
            elif (result.reason or "unknown-session") in GUESSES:
                self.failed_resumes.failed(peer, asked)
            return
        conn = waiting.conn
        held, conn.held = conn.held or [], None
        if not result.client:
            reason = result.reason or "unknown-session"
            if reason in GUESSES:
                self.failed_resumes.failed(conn.peer, waiting.deadline - RESUME_TIMEOUT)
            self._greet(conn, {"resumed": False, "reason": reason})
        else:
            old = self.conns.get(result.client)
            if old is not None:  # its previous connection, here and not noticed dead yet
                self._release(old)
                self.close(old, RESUMED_ELSEWHERE, "resumed elsewhere")
            conn.id = result.client
            self.conns[conn.id] = conn
            if conn.expires is not None:
                self._expire_at(conn, conn.expires)
            conn.session_hash = session_hash(waiting.secret)
            for room in result.rooms:
                if room != LOBBY:
                    conn.rooms.add(room)
                    self.rooms.setdefault(room, set()).add(conn)
            greeting = self._greeting(conn, waiting.secret, result.epoch or self.processor_epoch,
                                      {"resumed": True})
            # Written paced, as ordinary messages (a replay may be far larger than any
            # client's message limit); what comes for it meanwhile waits behind, in order.
            self.frames_out += 1 + len(result.replay)
            if not conn.closing:
                conn.backlog = Backlog([greeting, *result.replay])
                self._pump(conn)
        if self.stopping is not None:  # the greeting (its new secret) first, then the close
            self._write_dirty()
            self.close(conn, *self.stopping, away=True)
            return
        for message in held:
            if conn.closing:
                break
            self.client_frame(conn, message, conn.stamp)

    def resume_deadlines(self, now: float) -> None:
        """Held connections whose resume is unanswered after RESUME_TIMEOUT: closed 1013, so
        that the client tries again (its session is still the old one unless the answer
        was merely late: then it gets unknown-session and starts afresh)."""
        for waiting in list(self.waiting.values()):
            if now >= waiting.deadline:
                self.close(waiting.conn, CloseCode.TRY_AGAIN_LATER, PROCESSOR_UNAVAILABLE, away=True)

    def _refuse(self, link: Any, code: int, reason: str) -> None:
        self.closes[code] += 1
        self.out.close(link, code, reason)

    def disconnect(self, conn: Connection, clean: bool = True) -> None:
        """The connection is gone. It leaves at once (`disconnected`) when it ended `clean`
        (the client started the closing handshake, or the WebSocket layer closed it for a
        fault of the client's: 1007, 1009) or we closed it for cause (`close` without
        `away`); otherwise (lost, keepalive timeout, gateway restart) it is `away`: the
        processor keeps it, rooms and all, for the resume window."""
        away = not clean and (not conn.closing or conn.away_on_close)
        self._unpace(conn)
        if conn.held is not None:
            name = conn.id[1:]
            waiting = self.waiting.pop(name, None)
            if waiting is not None:
                self._release_peer(conn)
                # the answer may still come: then reported (or counted, a failed resume)
                self.orphans[name] = (not away, conn.peer, waiting.deadline - RESUME_TIMEOUT)
                if len(self.orphans) > 4096:
                    del self.orphans[next(iter(self.orphans))]
            return
        if self._release(conn):
            if away:
                self._item().away = conn.id
            else:
                self._item().disconnected = conn.id
            self._wake()

    def _release(self, conn: Connection) -> bool:
        """Forget a live connection (its rooms, its slot); False if it was not ours any more."""
        if self.conns.get(conn.id) is not conn:
            return False
        for room in list(conn.rooms):
            self._forget_room(conn, room)
        del self.conns[conn.id]
        self._release_peer(conn)
        return True

    def _release_peer(self, conn: Connection) -> None:
        if self.max_per_peer:
            left = self.per_peer[conn.peer] - 1
            if left > 0:
                self.per_peer[conn.peer] = left
            else:
                del self.per_peer[conn.peer]

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
        if conn.held is not None:  # its resume is being answered: queued, bounded
            if len(conn.held) >= HELD_FRAMES:
                self.close(conn, CloseCode.POLICY, "flood: too many frames before the resume")
            elif not conn.closing:
                conn.held.append(message)
            return None
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
        if not self.up:
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
        body = b"" if parsed.body == protocol.EMPTY_BODY else parsed.body
        run.body.append(body)
        run.is_target_client.append(parsed.is_target_client)
        run.request_id.append(parsed.request_id)
        self.unacked.append(Unacked(self.in_seq, conn.id, parsed.action, parsed.target,
                                    parsed.request_id, body, parsed.is_target_client))
        self.batch_bytes += len(body) + len(parsed.target)
        if self.batch_bytes > BATCH_BYTES:
            self._send_batch()
        else:
            self._wake()
        return None

    def pong(self, conn: Connection) -> None:
        conn.awaiting_pong = False

    def close(self, conn: Connection, code: int, reason: str, away: bool = False) -> None:
        """Close a client (once); it leaves when the adapter reports `disconnect` — at once
        when closed for cause, or, with `away` (no fault of the client's), after the
        resume window unless it resumes."""
        if conn.closing:
            return
        conn.closing = True
        conn.away_on_close = away
        self._unpace(conn)  # what waited for it is never written
        self.closes[code] += 1
        self.out.close(conn.link, code, reason)

    def close_all(self, code: int, reason: str) -> None:
        """The gateway stops: every connection closed, reported away (they may resume). A
        connection whose resume is being answered is closed once answered, after its
        greeting: the processor may already have rotated its session, and a client that
        never saw the new secret could not resume again."""
        self.stopping = (code, reason)
        for conn in list(self.conns.values()):
            self.close(conn, code, reason, away=True)

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

    def heartbeat(self, now: float, stats: pb.ProcessStats | None = None) -> None:
        """Every heartbeat interval: a heartbeat when up (carrying `stats`, this process's
        figures for the admin page), hello otherwise."""
        if self.last_beat is None:
            self.last_beat = now  # silence is counted from the first heartbeat on
        if now - self.last_beat > self.peer_timeout:
            if self.link is Link.UP and self.processor_logged:
                self._move("wait")
                self.waiting_since = now
                self.out.notice("warning", "processor silent: keeping frames for it", {"gateway": self.id})
            elif self.link is Link.WAIT and now - self.waiting_since <= WAIT_TIMEOUTS * self.peer_timeout:
                self._move("wait")
            elif self._move("silence") in UP:
                self.out.notice("warning", "processor silent", {"gateway": self.id})
            if self.pair:  # try the other processor (and, silent too, this one again)
                self.last_beat = now
                self.out.switch_processor()
                self.out.notice("warning", "trying the other processor", {"gateway": self.id})
        if self.early:
            self.early_beats += 1
            if self.early_beats > 2:  # not sent again: lost
                self._gap(self.out_seq + 1, min(self.early))
                self.out_seq = min(self.early) - 1
                self._apply_early()
        if self.link is Link.WAIT:  # a heartbeat alone, to the processor tried: it may take over
            beat = pb.GatewayBatch(gateway=self.id, received=self.out_seq)
            beat.items.add().heartbeat.SetInParent()
            self.out.push_batch(beat.SerializeToString())
        elif self.up:
            beat = self._item().heartbeat
            beat.SetInParent()
            if stats is not None:
                beat.stats.CopyFrom(stats)
            self._wake()
        else:
            self._hello()

    def admin_query(self, query: int, search: str, after: str) -> None:
        """Ask the processor for the admin snapshot (answered through `out.admin_answer`)."""
        if self.up:
            q = self._item().admin_query
            q.id, q.search, q.after = query, search, after

    def processor_beat(self, beat: pb.ProcessorBeat, now: float, other: bool = False) -> None:
        """The processor's beat; `other`: from the pair's processor we are not talking to
        (heeded only while waiting for a processor on a log: it has taken over)."""
        if other:
            if self.link is not Link.WAIT or beat.epoch != self.processor_epoch \
                    or self.id not in beat.acked or not beat.logged or beat.run == self.processor_run:
                return  # (the run we waited for, paused: a beat it made before, released late)
            self.out.switch_processor()
            self.out.notice("warning", "the other processor took over", {"gateway": self.id})
        self.last_beat = now
        if not self.up:
            return
        if beat.epoch != self.processor_epoch or self.id not in beat.acked:
            # A new processor, or one that forgot us: resync before accepting frames.
            self.out.notice("warning", "processor changed; resyncing",
                            {"gateway": self.id, "epoch": beat.epoch})
            self._move("forgot")
            self._abandon_unacked()
            self._hello()
            return
        acked = beat.acked[self.id]
        unacked = self.unacked
        while unacked and unacked[0].seq <= acked:
            unacked.popleft()
        self.processor_logged = beat.logged
        if beat.moving and beat.logged and self.pair and self.link is Link.UP:
            # a switchover: its standby takes over now; frames wait for it (Link.WAIT)
            self._move("wait")
            self.waiting_since = now
            self.out.switch_processor()
            self.out.notice("warning", "processor hands over: turning to the other", {"gateway": self.id})
            return
        if self.link is Link.WAIT:
            self._move("beat")
            self.out.notice("info", "processor back: the same state", {"gateway": self.id})
        if beat.run != self.processor_run:
            if self.processor_run and beat.run:
                # The same epoch from another process: a processor restarted from its log
                # (--log). What it did not acknowledge it may never have had: sent again.
                self.out.notice("warning", "processor restarted from its log (or its standby took over)",
                                {"gateway": self.id, "epoch": beat.epoch})
                self._resend()
            self.processor_run = beat.run

    def processor_out(self, out: pb.GatewayOut) -> None:
        """One GatewayOut: deliveries, membership changes, closes, the welcome. Of an epoch
        on a log, a GatewayOut is the same whichever processor sends it (the log made both):
        one sent again is skipped, one past a missing one held a while for it."""
        if (out.seq != self.out_seq + 1 and self.up and out.epoch == self.processor_epoch
                and not any(op.HasField("welcome") for op in out.ops)):  # a welcome starts over
            if out.seq <= self.out_seq or out.seq in self.early:  # sent again (from the log)
                self.drops["duplicate-out"] += 1
                return
            if self.processor_logged and len(self.early) < EARLY_OUTS:
                if not self.early:
                    self.early_beats = 0
                self.early[out.seq] = out
                return
            self._gap(self.out_seq + 1, out.seq)
        self._apply_out(out)
        if self.early:
            self._apply_early()

    def _apply_early(self) -> None:
        early = self.early
        while self.out_seq + 1 in early:
            self._apply_out(early.pop(self.out_seq + 1))
        if early and min(early) <= self.out_seq:
            for seq in [q for q in early if q <= self.out_seq]:
                del early[seq]
        self.early_beats = 0

    def _apply_out(self, out: pb.GatewayOut) -> None:
        self.out_seq = out.seq
        conns = self.conns
        dirty = self.dirty
        for op in out.ops:
            kind = op.WhichOneof("kind")
            if kind == "deliver":
                d = op.deliver
                frame = d.frame
                if d.room:
                    if self.link is Link.RESYNC:  # the mirror may be stale (a `left` lost) until
                        continue  # the sync: not trusted with a room (the clients were told)
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
                if self.processor_epoch and not self.up:
                    # Back after a hello: frames sent before it may never have been processed,
                    # and GatewayOuts may have been lost meanwhile (the welcome's numbering
                    # starts over, so no gap shows it).
                    self._abandon_unacked()
                    if op.welcome.epoch == self.processor_epoch:
                        lost = protocol.error(ErrorCode.MESSAGES_LOST)
                        for conn in conns.values():
                            self._queue(conn, lost)
                self._welcomed(op.welcome.epoch)
                self.processor_run = op.welcome.run
                self.processor_logged = op.welcome.logged
            elif kind == "sync":
                if self.up:  # else a hello overtook it: the welcome starts afresh
                    self._synced(op.sync)
            elif kind == "resumed":
                self.resume_result(op.resumed)
            elif kind == "admin":
                self.out.admin_answer(op.admin.id, op.admin.json)
        if dirty:
            self._wake()

    def _welcomed(self, epoch: str) -> None:
        if self.processor_epoch and epoch != self.processor_epoch:
            self._abandon_unacked()
        self.processor_epoch = epoch
        self._move("welcome")
        self.resync_from = None
        self.out.notice("info", "welcomed by processor", {"gateway": self.id, "epoch": epoch})

    def _gap(self, expected: int, got: int) -> None:
        """GatewayOuts were lost (our SUB pipe overflowed: we were not reading): clients may
        have missed messages (told `messages-lost`), and the mirror may be stale (a `left`
        or a `close` missed): the processor is asked for its view (a Resync, answered by a
        GatewayOp sync in order)."""
        self.out.notice("error", "messages lost; resyncing", {"expected": expected, "got": got})
        self.drops["processor-gap"] += 1
        frame = protocol.error(ErrorCode.MESSAGES_LOST)
        for conn in self.conns.values():
            self._queue(conn, frame)
        if self._move("gap") is Link.UP:
            self.resync_from = set(self.conns)  # a connection made after the Resync is not in the answer
        # (again while resyncing: the answer may be among the lost; a later one is harmless)
        self._item().resync.SetInParent()
        for waiting in self.waiting.values():  # its answer may be among the lost: asked again
            self._item().resume.CopyFrom(waiting.request)

    def _synced(self, sync: pb.GatewaySync) -> None:
        """The processor's view of our clients: the mirror made to match it; the closes it
        asked for done; a connection it does not know (older than the Resync) closed 1012,
        so that the client starts over or resumes."""
        self._move("sync")
        listed = {c.client: c.rooms for c in sync.clients}
        conns = self.conns
        older = self.resync_from or set()
        self.resync_from = None
        for conn in list(conns.values()):
            rooms = listed.get(conn.id)
            if rooms is None:
                if conn.id in older:
                    self.close(conn, CloseCode.SERVICE_RESTART, "resynced", away=True)
                continue
            want = set(rooms)
            want.discard(LOBBY)
            for room in conn.rooms - want:
                self._forget_room(conn, room)
            for room in want - conn.rooms:
                conn.rooms.add(room)
                self.rooms.setdefault(room, set()).add(conn)
        for close in sync.close:
            asked = conns.get(close.client)
            if asked is not None:
                self.close(asked, close.code, close.reason)

    def _resend(self) -> None:
        """Every frame handed to ZeroMQ and not yet acknowledged, again, after a Resent
        (with its own seq: the processor skips those it has applied, and waits for this
        before any other); ahead of the batches kept meanwhile (they hold the later ones)."""
        batch = pb.GatewayBatch(gateway=self.id, received=self.out_seq)
        batch.items.add().resent.SetInParent()
        run = None
        for u in self.unacked:
            if u.seq > self.pushed_seq:
                break
            if run is None or u.seq != run.first_seq + len(run.client):  # runs are consecutive
                run = batch.items.add().frames
                run.first_seq = u.seq
            run.client.append(u.client)
            run.action.append(u.action)
            run.target.append(u.target)
            run.body.append(u.body)
            run.is_target_client.append(u.is_target_client)
            run.request_id.append(u.request_id)
        self.drops["resent"] += sum(len(i.frames.client) for i in batch.items)
        data = batch.SerializeToString()
        self.kept.appendleft((data, self.pushed_seq))
        self.kept_bytes += len(data)
        self._keep(b"")

    def _abandon_unacked(self) -> None:
        """Frames a (new or forgetful) processor never acknowledged may be lost: say so."""
        for u in self.unacked:
            conn = self.conns.get(u.client)
            if conn is not None:
                self._reply_error(conn, ErrorCode.PROCESSOR_RESTARTED, u.action, u.target, u.request_id)
        self.unacked.clear()

    def _hello(self) -> None:
        """(Re)introduce this gateway with every client and its rooms (the resync)."""
        self.resync_from = None
        for kept, _ in self.kept:  # their frames are answered as unacknowledged ones are; what
            for item in pb.GatewayBatch.FromString(kept).items:  # they said goes on (_refused)
                if item.WhichOneof("kind") in ("connected", "disconnected", "away", "resume", "resync"):
                    self.retained.append(item)
        self.kept.clear()
        self.kept_bytes = 0
        item = self._item()
        item.hello.index = self.index
        for conn in self.conns.values():
            c = item.hello.clients.add()
            c.client = conn.id
            c.user = conn.user
            c.rooms.extend(conn.rooms)
            c.session_hash = conn.session_hash
        # A processor that did not know us ignored our resume requests: ask again, after
        # the hello (a duplicate answer finds its link answered already and is dropped).
        for waiting in self.waiting.values():
            self._item().resume.CopyFrom(waiting.request)
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
        self._send_batch()
        if self.dirty:
            self._write_dirty()

    def _send_batch(self) -> None:
        """This tick's batch so far to the processor (with what waits before it)."""
        self.batch_bytes = 0
        if self.batch.items:
            batch, self.batch = self.batch, pb.GatewayBatch(gateway=self.id)
            self.open_frames = None
            if self.retained:  # what a refused batch said of its clients goes first
                retained, self.retained = self.retained, []
                batch = pb.GatewayBatch(gateway=self.id, items=[*retained, *batch.items])
            batch.received = self.out_seq
            if self.kept or self.processor_logged:
                self._keep(batch.SerializeToString())
            elif self.out.push_batch(batch.SerializeToString()):
                self.pushed_seq = self.in_seq
            else:
                self._refused(batch)
        elif self.kept:
            self._keep(b"")  # try again what waits

    def _keep(self, batch: bytes) -> None:
        """Send what waits for a logged processor, then `batch`, in order, as far as it
        takes them; keep the rest (the oldest past KEPT_BATCH_BYTES refused: answered)."""
        kept = self.kept
        if batch:
            kept.append((batch, self.in_seq))
            self.kept_bytes += len(batch)
        while kept and self.link is not Link.WAIT and self.out.push_batch(kept[0][0]):
            data, last = kept.popleft()
            self.kept_bytes -= len(data)
            self.pushed_seq = max(self.pushed_seq, last)
        while self.kept_bytes > KEPT_BATCH_BYTES and kept:
            oldest, _ = kept.popleft()
            self.kept_bytes -= len(oldest)
            self._refused(pb.GatewayBatch.FromString(oldest))

    def _refused(self, batch: pb.GatewayBatch) -> None:
        """The processor is unreachable: every client frame in the batch gets an error and
        counts as a drop. What it said of clients (connected, disconnected, away), a resume
        request and a Resync are kept and sent first with the next batch (the processor must
        learn of each, or it would miss a client or keep a ghost, leave a resume unanswered
        or a gap unrepaired: neither is asked again; bounded: the oldest go past RETAINED).
        A hello, a heartbeat and an admin query are not kept: the next heartbeat sends them
        anew."""
        refused = set()
        conns = self.conns
        for item in batch.items:
            if item.WhichOneof("kind") in ("connected", "disconnected", "away", "resume", "resync"):
                self.retained.append(item)
                continue
            run = item.frames
            for i, (client, action, target, request_id) in enumerate(
                    zip(run.client, run.action, run.target, run.request_id, strict=True)):
                refused.add(run.first_seq + i)
                conn = conns.get(client)
                if conn is not None:
                    self._reply_error(conn, ErrorCode.PROCESSOR_UNAVAILABLE, action, target, request_id)
        if len(self.retained) > RETAINED:
            self.drops["retained-items"] += len(self.retained) - RETAINED
            del self.retained[:-RETAINED]
        if refused:
            self.drops["processor-unreachable"] += len(refused)
            self.unacked = deque(u for u in self.unacked if u.seq not in refused)
        if self.dirty:
            self._write_dirty()

    def _write_dirty(self) -> None:
        """One payload per connection with frames: its frames joined with "\\n" (but behind
        a replay still being written, they wait their turn: `_pump`).

        Members of a room receive the same frames in the same order, so consecutive
        connections usually have equal queues: the payload is then built once and the
        same bytes object handed to each write.
        """
        dirty, self.dirty = self.dirty, []
        self.woken = False
        if self.paced:  # rare (resumes being replayed): the loop below stays as it was
            dirty = [conn for conn in dirty if conn.backlog is None or self._behind(conn)]
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

    @property
    def pace(self) -> int:
        """Bytes a transport may hold before a paced write waits for `drained()`."""
        return self.send_queue // 2

    def drained(self, conn: Connection) -> None:
        """The adapter: `conn`'s transport, left above `pace` bytes by a write, has drained."""
        if conn.backlog is not None and not conn.closing:
            self._pump(conn)

    def _pump(self, conn: Connection) -> None:
        """Write `conn`'s backlog, a few frames per message (at most PACED_MESSAGE bytes, or
        one bigger frame alone), while its transport holds at most `pace` bytes; the rest
        waits for `drained()`. Once it is all written, frames go straight out again."""
        backlog = conn.backlog
        if backlog is None or backlog.pumping:  # a drain reported from inside our own write
            return
        backlog.pumping = True
        frames, out, link, pace = backlog.frames, self.out, conn.link, self.pace
        while frames:
            group = [frames.popleft()]
            taken = len(group[0])
            while frames and taken + len(group) + len(frames[0]) <= PACED_MESSAGE:
                taken += len(frames[0])
                group.append(frames.popleft())
            backlog.size -= taken
            backlog.replay = max(0, backlog.replay - taken)
            buffered = out.write(link, group[0] if len(group) == 1 else b"\n".join(group))
            if buffered < 0 or conn.closing:
                break
            if buffered > pace and frames:
                backlog.pumping = False
                self.paced.add(conn)
                return
        self._unpace(conn)

    def _behind(self, conn: Connection) -> bool:
        """A paced connection's frames of this tick: queued behind its replay, up to the
        send queue (more: closed as a slow consumer, like any other). False: not written now."""
        backlog = conn.backlog
        assert backlog is not None
        frames, conn.pending = conn.pending, []
        self.frames_out += len(frames)
        backlog.frames.extend(frames)
        backlog.size += sum(map(len, frames))
        if backlog.behind() > self.send_queue:
            self.close(conn, CloseCode.SLOW_CONSUMER, "slow consumer: send queue full")
        return False

    def _unpace(self, conn: Connection) -> None:
        """Nothing waits for `conn` any more: its frames go straight out (or nowhere)."""
        if conn.backlog is not None:
            conn.backlog = None
            self.paced.discard(conn)

    # ------------------------------------------------------------ keepalive

    def keepalive(self, now: float) -> None:
        """Every KEEPALIVE_TICK: ping a slice of the connections, close those whose pong is late.

        One timer for the whole gateway instead of a task per connection; the pings
        are spread over the interval.
        """
        if self.waiting:
            self.resume_deadlines(now)
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
                self.close(conn, CloseCode.INTERNAL_ERROR, "keepalive ping timeout",  # as websockets'
                           away=True)  # no fault of the client's: its network, maybe
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
        for conn in self.conns.values():
            assert conn.held is None, f"{conn.id} live and held"
            backlog = conn.backlog
            if backlog is not None:  # only while a paced write waits for the transport
                assert backlog.frames and not backlog.pumping and not conn.closing, f"{conn.id}'s backlog"
                assert backlog.size == sum(map(len, backlog.frames)) and 0 <= backlog.replay <= backlog.size
                assert backlog.behind() <= self.send_queue, f"{conn.id} over its send queue"
        assert self.paced == {c for c in self.conns.values() if c.backlog is not None}, "paced"
        self.failed_resumes.check()
        for name, waiting in self.waiting.items():
            assert waiting.conn.held is not None and waiting.conn.id == "~" + name, "held connection"
            assert len(waiting.conn.held) <= HELD_FRAMES and not waiting.conn.rooms
        if self.max_per_peer:
            assert self.per_peer == Counter(
                [c.peer for c in self.conns.values()] + [w.conn.peer for w in self.waiting.values()]
            ), "per-peer counts"
        for conn in self.conns.values():
            if conn.expires is not None and not conn.closing:
                assert (conn.expires, conn.id) in self.expiries, f"{conn.id}'s expiry not scheduled"
        seqs = [u.seq for u in self.unacked]
        assert seqs == sorted(set(seqs)), "unacknowledged frames out of order"
        assert all(s <= self.in_seq for s in seqs)
        if not self.up:
            assert self.open_frames is None, "frames accepted while the processor link is down"
