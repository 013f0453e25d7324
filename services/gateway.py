"""A gateway: terminates WebSockets and speaks ZeroMQ to the processor.

Many gateways share one port (SO_REUSEPORT). Each one:
  - validates client JSON itself (bad frames never reach the processor);
  - PUSHes `GatewayBatch`es (one per event-loop tick) to the processor;
  - SUBscribes to "<gateway ID>." (every client ID starts with it) and "processor";
  - mirrors its own clients' room memberships, so a room broadcast arrives once
    per gateway and fans out here; frames for one connection in one tick are
    joined with "\\n" into one WebSocket frame.
The event loop never blocks on ZeroMQ: every send is NOBLOCK with a policy for
EAGAIN, and the SUB socket is read from the loop's reader callback.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from itertools import islice
from pathlib import Path

import zmq
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event, State

from meshstream_zmq import LOBBY, new_epoch
from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq import observability as obs
from meshstream_zmq import protocol as proto
from meshstream_zmq.config import Config
from meshstream_zmq.errors import CloseCode, ErrorCode

log = logging.getLogger("meshstream.gateway")

DRAIN = 1000
PATH = "/wsmesh"
PING_INTERVAL = 20.0  # keepalive: every connection is pinged this often ...
PING_TIMEOUT = 20.0  # ... and closed (1011) when the pong is this late
KEEPALIVE_TICK = 1.0  # the pings are spread: 1/20 of the connections each second


class Connection:
    """What the gateway keeps per client: small on purpose (thousands of these)."""

    __slots__ = ("ws", "id", "rooms", "pending", "tokens", "stamp", "closing", "pong", "ping_at")

    def __init__(self, ws: ServerConnection, client_id: str, burst: float) -> None:
        self.ws = ws
        self.id = client_id
        self.rooms: set[str] = set()
        self.pending: list[bytes] = []
        self.tokens = burst
        self.stamp = 0.0
        self.closing = False
        self.pong: Awaitable[float] | None = None  # the last keepalive ping's pong
        self.ping_at = 0.0


_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class ClientConnection(ServerConnection):
    """A client's WebSocket: each complete text (or binary) frame goes to `on_message` as
    soon as it is parsed, inside `data_received` — no queue, no task switch per frame.

    Anything else websockets assembles itself, as usual, and the handler reads it with
    `recv`: fragmented messages, text that is not valid UTF-8 (websockets then closes
    with 1007). While such a message is on its way (`backlog`), later frames take the
    same path, so every frame is still handled in the order it arrived.
    """

    on_message: Callable[[str | bytes], None] | None = None
    backlog = 0  # messages handed to websockets' assembler and not yet read by the handler
    assembling = False  # inside a fragmented message

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode in _DATA:
            on_message = self.on_message
            if on_message is not None and event.fin and not self.backlog and not self.assembling:
                if event.opcode is Opcode.BINARY:
                    return self.hand_over(on_message, bytes(event.data))
                if event.opcode is Opcode.TEXT:
                    try:
                        text = str(event.data, "utf-8")
                    except UnicodeDecodeError:
                        pass  # websockets' own path closes with 1007
                    else:
                        return self.hand_over(on_message, text)
            self.assembling = not event.fin
            if event.fin:
                self.backlog += 1
        super().process_event(event)
        return None

    def hand_over(self, on_message: Callable[[str | bytes], None], message: str | bytes) -> None:
        # Called from data_received, where an exception would escape into the event
        # loop: a bug handling one frame closes that connection (1011), as a handler
        # task that raised would.
        try:
            on_message(message)
        except Exception:
            log.exception("client frame failed")
            self.loop.create_task(self.close(CloseCode.INTERNAL_ERROR, "internal error"))


class Gateway:
    def __init__(self, config: Config, index: int, context: zmq.Context | None = None) -> None:
        self.config = config
        self.index = index
        self.id = f"gw{index}-{new_epoch()}"
        self.topic = self.id.encode() + b"."
        self.ctx = context or zmq.Context.instance()
        self.conns: dict[str, Connection] = {}
        self.rooms: dict[str, set[Connection]] = {}
        self.next_client = 0
        self.batch = pb.GatewayBatch(gateway=self.id)
        self.open_frames: pb.ClientFrames | None = None  # the batch's last item, if frames
        self.seq = 0
        self.unacked: deque[tuple[int, str, str, str, bytes]] = deque()
        self.dirty: list[Connection] = []
        self.scheduled = False
        self.welcomed = False
        self.processor_epoch = ""
        self.last_beat = 0.0
        self.out_seq = 0
        self.burst = float(config.rate_burst or 2 * config.rate_limit)
        self.ready = asyncio.Event()
        self.frames_in = 0
        self.frames_out = 0
        self.web_dir = Path(config.resolved_web_dir)

        ep = config.endpoints
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.IMMEDIATE, 1)  # no processor connected: EAGAIN, not a silent queue
        self.push.setsockopt(zmq.SNDHWM, 50_000)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(ep.inbound)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, self.topic)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"processor")
        self.sub.connect(ep.outbound)

    # ------------------------------------------------------------ processor link

    def schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """End of tick: one batch to the processor, one write per dirty connection."""
        self.scheduled = False
        if self.batch.items:
            batch, self.batch = self.batch, pb.GatewayBatch(gateway=self.id)
            self.open_frames = None
            try:
                self.push.send_multipart([b"gateway", batch.SerializeToString()], flags=zmq.NOBLOCK)
            except zmq.Again:
                self.refuse(batch)
        if self.dirty:
            self.write_dirty()

    def refuse(self, batch: pb.GatewayBatch) -> None:
        """The processor is unreachable: every client frame in the batch gets an error."""
        obs.DROPS.labels("processor-unreachable").inc()
        refused = set()
        for item in batch.items:
            run = item.frames
            for i, (client, action, target, request_id) in enumerate(
                    zip(run.client, run.action, run.target, run.request_id, strict=True)):
                refused.add(run.first_seq + i)
                self.reply_error(client, ErrorCode.PROCESSOR_UNAVAILABLE, action, target, request_id)
        if refused:
            self.unacked = deque(u for u in self.unacked if u[0] not in refused)
        self.write_dirty()

    def item(self) -> pb.GatewayItem:
        """A new item at the end of the batch (ending any run of frames: order matters)."""
        self.open_frames = None
        return self.batch.items.add()

    def hello(self) -> None:
        """(Re)introduce this gateway with every client and its rooms (the resync)."""
        item = self.item()
        item.hello.index = self.index
        for conn in self.conns.values():
            c = item.hello.clients.add()
            c.client = conn.id
            c.rooms.extend(conn.rooms)
        self.schedule()

    def on_sub_readable(self) -> None:
        # EVENTS before each read instead of reading until EAGAIN: at low rates most
        # wake-ups carry one message, and an exception per wake-up costs more than a
        # getsockopt. Reading until EVENTS has no POLLIN also re-arms the edge-triggered FD.
        sub = self.sub
        for _ in range(DRAIN):
            if not sub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                break
            topic = sub.recv(zmq.NOBLOCK)
            payload = sub.recv(zmq.NOBLOCK)  # [topic, payload]: parts arrive together
            if topic == b"processor":
                self.on_beat(pb.ProcessorBeat.FromString(payload))
            else:
                self.on_out(pb.GatewayOut.FromString(payload))
        else:  # more than DRAIN waiting: let the clients' callbacks run, then go on
            asyncio.get_running_loop().call_soon(self.on_sub_readable)
        if self.dirty:
            self.write_dirty()

    def on_beat(self, beat: pb.ProcessorBeat) -> None:
        self.last_beat = time.monotonic()
        if not self.welcomed:
            return
        if beat.epoch != self.processor_epoch or self.id not in beat.acked:
            # A new processor, or one that forgot us: resync before accepting frames.
            log.warning("processor changed; resyncing", extra={"fields": {
                "gateway": self.id, "epoch": beat.epoch}})
            self.welcomed = False
            # Frames it never acknowledged may be lost (a processor that does not know us
            # ignores our frames): say so now rather than leave them unanswered.
            for _, client, action, target, request_id in self.unacked:
                self.reply_error(client, ErrorCode.PROCESSOR_RESTARTED, action, target, request_id)
            self.unacked.clear()
            self.hello()
            return
        acked = beat.acked[self.id]
        unacked = self.unacked
        while unacked and unacked[0][0] <= acked:
            unacked.popleft()

    def on_welcome(self, epoch: str) -> None:
        if self.processor_epoch and epoch != self.processor_epoch:
            # Frames the old processor never acknowledged may be lost: say so.
            for _, client, action, target, request_id in self.unacked:
                self.reply_error(client, ErrorCode.PROCESSOR_RESTARTED, action, target, request_id)
            self.unacked.clear()
        self.processor_epoch = epoch
        self.welcomed = True
        self.out_seq = 0
        self.ready.set()
        log.info("welcomed by processor", extra={"fields": {"gateway": self.id, "epoch": epoch}})

    def on_out(self, out: pb.GatewayOut) -> None:
        if out.epoch == self.processor_epoch and self.out_seq and out.seq != self.out_seq + 1:
            log.error("messages lost", extra={"fields": {"expected": self.out_seq + 1,
                                                          "got": out.seq}})
            frame = proto.error(ErrorCode.MESSAGES_LOST)
            for conn in self.conns.values():
                self.queue(conn, frame)
        self.out_seq = out.seq
        conns = self.conns
        for op in out.ops:
            kind = op.WhichOneof("kind")
            if kind == "deliver":
                d = op.deliver
                frame = d.frame
                if d.room:
                    members = conns.values() if d.room == LOBBY else self.rooms.get(d.room, ())
                    dirty = self.dirty  # self.queue() inlined: this loop runs per recipient
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
                            self.queue(target, frame)
            elif kind == "joined":
                member = conns.get(op.joined.client)
                if member is not None:
                    member.rooms.add(op.joined.room)
                    self.rooms.setdefault(op.joined.room, set()).add(member)
            elif kind == "left":
                member = conns.get(op.left.client)
                if member is not None:
                    self.forget_room(member, op.left.room)
            elif kind == "close":
                member = conns.get(op.close.client)
                if member is not None:
                    self.close(member, op.close.code, op.close.reason)
            elif kind == "welcome":
                self.on_welcome(op.welcome.epoch)

    def forget_room(self, conn: Connection, room: str) -> None:
        conn.rooms.discard(room)
        members = self.rooms.get(room)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.rooms[room]

    # ------------------------------------------------------------ clients

    def queue(self, conn: Connection, frame: bytes) -> None:
        if not conn.pending:
            self.dirty.append(conn)
        conn.pending.append(frame)

    def write_dirty(self) -> None:
        """One WebSocket frame per dirty connection, written straight to its transport.

        Members of a room receive the same frames in the same order, so consecutive
        connections usually have equal pending lists: the frame (header + "\\n"-joined
        payload) is then built once and the same bytes written to each. Server frames
        are unmasked and uncompressed (compression=None), so the bytes do not depend
        on the connection; the websockets protocol object is bypassed only for these
        complete text frames (its own control frames still go through it).
        """
        dirty, self.dirty = self.dirty, []
        limit = self.config.send_queue
        n = 0
        prev: list[bytes] | None = None
        wire = b""
        for conn in dirty:
            pending = conn.pending
            n += len(pending)
            conn.pending = []
            ws = conn.ws
            if conn.closing or ws.protocol.state is not State.OPEN:
                continue
            if pending != prev:  # identical frames compare by identity first: cheap
                wire = _text_frame(pending[0] if len(pending) == 1 else b"\n".join(pending))
                prev = pending
            transport = ws.transport
            transport.write(wire)
            if transport.get_write_buffer_size() > limit:
                self.close(conn, CloseCode.SLOW_CONSUMER, "slow consumer: send queue full")
        self.frames_out += n

    def reply_error(self, client: str, code: ErrorCode, action: str = "", target: str = "",
                    request_id: bytes = b"") -> None:
        conn = self.conns.get(client)
        if conn is not None:
            self.queue(conn, proto.error(code, action=action, target=target, request_id=request_id))
            obs.ERRORS.labels(code.value).inc()
            self.schedule()  # written at the end of this tick, not at the next heartbeat

    def close(self, conn: Connection, code: int, reason: str) -> None:
        if conn.closing:
            return
        conn.closing = True
        obs.CLOSES.labels(str(code)).inc()
        asyncio.get_running_loop().create_task(conn.ws.close(code, reason))

    def rate_ok(self, conn: Connection) -> bool:
        """Token bucket; past twice the burst in debt the connection is closed (flood)."""
        rate = self.config.rate_limit
        if rate <= 0:
            return True
        now = time.monotonic()
        conn.tokens = min(self.burst, conn.tokens + (now - conn.stamp) * rate)
        conn.stamp = now
        conn.tokens -= 1
        if conn.tokens >= 0:
            return True
        if conn.tokens < -self.burst:
            self.close(conn, CloseCode.POLICY, "flood: rate limit exceeded")
        return False

    def on_client_frame(self, conn: Connection, message: str | bytes) -> None:
        self.frames_in += 1
        # Every frame counts against the rate limit (binary ones too), and a refused
        # frame's error still carries its id (parsed first for that).
        parsed = None if isinstance(message, bytes) else proto.parse(message)
        if not self.rate_ok(conn):
            if parsed is None:
                return self.reply_error(conn.id, ErrorCode.RATE_LIMITED)
            return self.reply_error(conn.id, ErrorCode.RATE_LIMITED, parsed.action, parsed.target,
                                    parsed.request_id)
        if parsed is None:
            return self.reply_error(conn.id, ErrorCode.BINARY_FRAME)
        if isinstance(parsed, proto.Rejected):
            return self.reply_error(conn.id, parsed.code, parsed.action, parsed.target,
                                    parsed.request_id)
        if not self.welcomed:
            return self.reply_error(conn.id, ErrorCode.PROCESSOR_UNAVAILABLE, parsed.action,
                                    parsed.target, parsed.request_id)
        self.seq += 1
        run = self.open_frames
        if run is None:  # a new run of frames (any other item ends the previous one)
            run = self.open_frames = self.batch.items.add().frames
            run.first_seq = self.seq
        run.client.append(conn.id)
        run.action.append(parsed.action)
        run.target.append(parsed.target)
        run.body.append(b"" if parsed.body == proto.EMPTY_BODY else parsed.body)
        run.is_target_client.append(parsed.is_target_client)
        run.request_id.append(parsed.request_id)
        self.unacked.append((self.seq, conn.id, parsed.action, parsed.target, parsed.request_id))
        self.schedule()
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self.next_client += 1
        client_id = f"{self.id}.{self.next_client}"
        conn = Connection(ws, client_id, self.burst)
        conn.stamp = time.monotonic()
        self.conns[client_id] = conn
        self.item().connected = client_id
        body = proto.encode_body({"client": client_id})
        self.queue(conn, proto.encode("client-connected", client_id, body))
        self.schedule()
        assert isinstance(ws, ClientConnection)
        ws.on_message = partial(self.on_client_frame, conn)
        try:
            async for message in ws:  # only what websockets assembled (see ClientConnection)
                ws.backlog -= 1
                self.on_client_frame(conn, message)
        except ConnectionClosed:
            pass
        finally:
            for room in list(conn.rooms):
                self.forget_room(conn, room)
            del self.conns[client_id]
            self.item().disconnected = client_id
            self.schedule()

    # ------------------------------------------------------------ HTTP

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == PATH:
            if not self.welcomed:
                return _response(503, b"processor unavailable\n", "text/plain")
            return None
        if path == "/healthz":
            ok = self.welcomed
            return _response(200 if ok else 503, b"ok\n" if ok else b"processor unavailable\n",
                             "text/plain")
        name = "index.html" if path == "/" else path.lstrip("/")
        file = (self.web_dir / name).resolve()
        if file.parent == self.web_dir.resolve() and file.is_file():
            ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype.endswith("javascript"):
                ctype += "; charset=utf-8"
            return _response(200, file.read_bytes(), ctype)
        return _response(404, b"not found\n", "text/plain")

    # ------------------------------------------------------------ run

    async def heartbeat(self) -> None:
        interval = self.config.heartbeat
        while True:
            now = time.monotonic()
            if self.welcomed and now - self.last_beat > self.config.peer_timeout:
                log.warning("processor silent", extra={"fields": {"gateway": self.id}})
                self.welcomed = False
            if self.welcomed:
                self.item().heartbeat.SetInParent()
                self.schedule()
            else:
                self.hello()
            obs.CONNECTIONS.set(len(self.conns))
            obs.FRAMES_IN.inc(self.frames_in)
            obs.FRAMES_OUT.inc(self.frames_out)
            self.frames_in = self.frames_out = 0
            await asyncio.sleep(interval)

    async def keepalive(self) -> None:
        """Ping every connection each PING_INTERVAL; close one whose pong is PING_TIMEOUT late.

        One task for the whole gateway instead of websockets' task per connection
        (about 2 KB each); the pings are spread over the interval, a slice per tick.
        """
        offset = 0
        while True:
            await asyncio.sleep(KEEPALIVE_TICK)
            conns = self.conns
            share = -(-len(conns) * KEEPALIVE_TICK // PING_INTERVAL)  # ceil
            if offset >= len(conns):
                offset = 0
            batch = list(islice(conns.values(), offset, offset + int(share)))
            offset += len(batch)
            now = time.monotonic()
            for conn in batch:
                try:
                    await self.ping(conn, now)
                except Exception:  # one bad connection must not end every connection's keepalive
                    log.exception("keepalive ping failed", extra={"fields": {"client": conn.id}})

    async def ping(self, conn: Connection, now: float) -> None:
        ws = conn.ws
        if conn.closing or ws.protocol.state is not State.OPEN:
            return
        pong = conn.pong
        if pong is not None and not pong.done():  # type: ignore[attr-defined]
            if now - conn.ping_at >= PING_TIMEOUT:
                self.close(conn, CloseCode.INTERNAL_ERROR, "keepalive ping timeout")  # as websockets' own
            return
        if now - conn.ping_at < PING_INTERVAL * 0.9:  # slices shift as connections come and go
            return
        try:
            conn.pong = await ws.ping()
            conn.ping_at = now
        except Exception:  # noqa: BLE001 - closing meanwhile: the handler cleans up
            conn.pong = None

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sub.getsockopt(zmq.FD), self.on_sub_readable)
        beats = loop.create_task(self.heartbeat())
        loop.call_soon(self.on_sub_readable)
        # Wait until the processor knows us and our subscription is live, unless told to
        # stop first (SIGTERM before the welcome must not hang until the supervisor's SIGKILL).
        waits = [loop.create_task(self.ready.wait()), loop.create_task(stop.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        if stop.is_set():
            beats.cancel()
            loop.remove_reader(self.sub.getsockopt(zmq.FD))
            self.push.close(linger=0)
            self.sub.close(linger=0)
            return
        async with serve(self.handler, self.config.host, self.config.port, reuse_port=True,
                         create_connection=ClientConnection,
                         process_request=self.process_request, max_size=self.config.max_frame,
                         compression=None, ping_interval=None,  # see keepalive()
                         close_timeout=2) as server:
            pinger = loop.create_task(self.keepalive())
            log.info("gateway ready", extra={"fields": {
                "gateway": self.id, "port": self.config.port}})
            await stop.wait()
            server.close(close_connections=False)
            for conn in list(self.conns.values()):
                self.close(conn, CloseCode.GOING_AWAY, "gateway shutting down")
            await asyncio.wait_for(server.wait_closed(), 3)
            pinger.cancel()
        beats.cancel()
        loop.remove_reader(self.sub.getsockopt(zmq.FD))
        self.push.close(linger=0)
        self.sub.close(linger=0)


def _text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented RFC 6455 text frame (what a server sends)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 0x10000:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def _response(status: int, body: bytes, ctype: str) -> Response:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "")
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-cache")])
    return Response(status, reason, headers, body)


async def amain(config: Config, index: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Gateway(config, index).run(stop)


def main(config: Config, index: int) -> None:
    obs.setup(f"gateway {index}", config.log_level)
    obs.serve_metrics(config.metrics_port)
    obs.tune_gc()
    try:
        import uvloop

        uvloop.run(amain(config, index))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(amain(config, index))


