"""The processor: one process that owns all state; a thin ZeroMQ loop around `Mesh`.

Sockets (see docs/design.md):
  PULL   inbound   <- gateways' PUSH   ["gateway", GatewayBatch]
  XPUB   outbound  -> gateways' SUB    ["<gateway ID>.", GatewayOut], ["processor", ProcessorBeat],
                                       ["event.<kind>", Event], ["room.<room>", client JSON]
                                       (the last only while an observer subscribes to it)
  ROUTER watchers  <-> watchers' DEALER ["watcher", WatcherIn] / ["<kind>", WatcherOut]

The loop drains everything readable, feeds the core, then sends one GatewayOut
per gateway touched (and every FLUSH_BROADCASTS room messages within a long
drain): a burst of client frames costs one ZeroMQ message per gateway, not one
per recipient.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import signal
import struct
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import zmq

from meshstream_zmq import links, new_epoch, protocol, snapshot
from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq import observability as obs
from meshstream_zmq.admin import ALONE, PROCESSOR, AdminView, Serving
from meshstream_zmq.auth import TokenKeyError, Tokens
from meshstream_zmq.commands import Answer
from meshstream_zmq.config import Config
from meshstream_zmq.core import Delivery, EventKind, Mesh, RoomPass, RoomView
from meshstream_zmq.errors import ErrorCode
from meshstream_zmq.journal import Fenced, LogConfig, LogThread, LogUnavailable
from meshstream_zmq.link import FLUSH_BROADCASTS, GatewayOutput, Peers
from meshstream_zmq.pair import Pair, State
from meshstream_zmq.wire import (
    BadCommand,
    columns_match,
    decode_command,
    fill_answer,
    fill_rooms,
    length_delimited,
    resume_positions,
)

log = logging.getLogger("meshstream.processor")

DRAIN = 2000  # messages read from one socket before looking at the others
ROLE_FILE = "processor.role"  # of a pair: "active" or "passive", written when it changes
PID_FILE = "processor.pid"
TAKEOVER_TRIES = 5  # a takeover fenced by an old writer still appending: read on, try again
PROBE = pb.WatcherOut(reply=pb.Reply(id=0)).SerializeToString()
BEAT_INPUT = length_delimited(2, pb.LogInput(beat=True).SerializeToString())  # a LogEntry.inputs field
RECOVERED_INPUT = length_delimited(2, pb.LogInput(recovered=True).SerializeToString())
ROOM_TOPIC = b"room."  # + a room's name: its room-wide messages, for observers (aio.py)
# A turn's inputs past this many bytes are sealed into a log entry at once, mid-drain (NATS
# bounds a message: max_payload, 1 MB by default). One input larger alone is an entry alone
# (a gateway's batch of frames is bounded, BATCH_BYTES; a hello lists every client).
LOG_ENTRY_BYTES = 512 << 10
EVENT_TOPICS = {k: f"event.{k.name.lower().replace('_', '-')}".encode() for k in EventKind}


class ZmqOutbox(GatewayOutput):
    """The core's Outbox: the gateway half (ops gathered, numbered and accounted per
    gateway) is meshstream_zmq/link.py's; this adds the sockets, events and watchers."""

    def __init__(self, pub: zmq.Socket, router: zmq.Socket, epoch: str, lag_age: float = 3.0) -> None:
        super().__init__(epoch, lag_age=lag_age)
        self.pub = pub
        self.router = router
        # An observer (the webhooks watcher) subscribed to room messages ("room.<prefix>"):
        # room-wide sends are published for it too; while none is, they cost nothing more.
        self.rooms_observed = False

    def broadcast(self, gateways: Iterable[str], room: str, frame: bytes,
                  exclude: Sequence[str] = ()) -> None:
        super().broadcast(gateways, room, frame, exclude)
        if self.rooms_observed:  # the XPUB filters by prefix: only observed rooms go out
            try:
                self.pub.send_multipart([ROOM_TOPIC + room.encode(), frame], flags=zmq.NOBLOCK)
            except zmq.Again:
                obs.DROPS.labels("event-hwm").inc()

    def event(self, seq: int, kind: EventKind, client: str, room: str, watcher: str,
              user: str = "") -> None:
        ev = pb.Event(kind=int(kind), client=client, room=room, seq=seq,  # type: ignore[arg-type]
                      user=user)
        try:
            self.pub.send_multipart([EVENT_TOPICS[kind], ev.SerializeToString()], flags=zmq.NOBLOCK)
        except zmq.Again:
            obs.DROPS.labels("event-hwm").inc()
        if watcher:
            self._to_watcher(watcher, b"event", pb.WatcherOut(event=ev).SerializeToString())

    def to_watcher(self, watcher: str, seq: int, client: str, action: str, target: str,
                   body: bytes, is_target_client: bool, request_id: bytes, user: str = "") -> Delivery:
        msg = pb.WatcherOut()
        f = msg.message
        f.seq = seq
        f.client, f.action, f.target, f.body = client, action, target, body
        f.is_target_client, f.request_id, f.user = is_target_client, request_id, user
        return self._to_watcher(watcher, b"message", msg.SerializeToString())

    def reply(self, watcher: str, command: int, error: ErrorCode | None = None, detail: str = "",
              rooms: Sequence[RoomView] = (), answer: Answer | None = None) -> None:
        msg = pb.WatcherOut()
        r = msg.reply
        r.id = command
        if error is not None:
            r.error, r.message = error.value, detail or error.message
        if answer is not None:
            fill_answer(r, answer)
        fill_rooms(r.rooms, rooms)
        self._to_watcher(watcher, b"reply", msg.SerializeToString())

    def welcome(self, watcher: str, rooms: Sequence[RoomView]) -> None:
        msg = pb.WatcherOut()
        msg.welcome.epoch = self.epoch
        fill_rooms(msg.welcome.rooms, rooms)
        self._to_watcher(watcher, b"welcome", msg.SerializeToString())

    def probe(self, watcher: str) -> Delivery:
        """Whether the watcher is still connected: a `Reply{id: 0}` (what heartbeats get,
        which watchers ignore) that fails with EHOSTUNREACH when its peer is gone."""
        return self._to_watcher(watcher, b"reply", PROBE)

    def _to_watcher(self, watcher: str, topic: bytes, payload: bytes) -> Delivery:
        try:
            self.router.send_multipart([bytes.fromhex(watcher), topic, payload], flags=zmq.NOBLOCK)
            return Delivery.SENT
        except zmq.ZMQError as exc:
            # ROUTER_MANDATORY: EHOSTUNREACH once the peer disconnected (it exited or was
            # SIGKILLed: noticed at once), EAGAIN while its queue is full (alive, not reading).
            if exc.errno == zmq.EHOSTUNREACH:
                obs.DROPS.labels("watcher-unreachable").inc()
                return Delivery.GONE
            obs.DROPS.labels("watcher-hwm").inc()
            return Delivery.FULL

    def flush(self, now: float) -> None:
        """One GatewayOut per gateway touched since the last flush. Never blocks: without
        XPUB_NODROP a subscriber whose pipe is full loses the message, it alone (it sees the
        seq gap and resyncs), and a gateway that stays behind is dropped (GatewayOutput)."""
        pub = self.pub
        for gateway, payload in self.take(now):
            pub.send_multipart([gateway.encode() + b".", payload], flags=zmq.NOBLOCK)


class Withheld:
    """Outputs that wait for their turn's log entry to be stored (docs/design.md, "The
    log"): a turn's sends are queued, sealed with its entry's number, and released in
    order once the log has that entry, so nothing caused by an input leaves before the
    input is in the log. `socket(s)` is what the outbox sends to instead of `s`."""

    def __init__(self, router: zmq.Socket) -> None:
        self.router = router
        self.turn: list[tuple[zmq.Socket, list[bytes]]] = []
        self.entries: deque[tuple[int, list[tuple[zmq.Socket, list[bytes]]]]] = deque()

    def socket(self, sock: zmq.Socket) -> _Queued:
        return _Queued(sock, self.turn)

    def seal(self, number: int) -> None:
        if self.turn:
            self.entries.append((number, self.turn[:]))
            self.turn.clear()

    def release(self, through: int) -> list[str]:
        """Send what entries up to `through` made; the watchers found gone meanwhile
        (their identities, hex): inputs of the next turn."""
        gone: list[str] = []
        while self.entries and self.entries[0][0] <= through:
            for sock, frames in self.entries.popleft()[1]:
                try:
                    sock.send_multipart(frames, flags=zmq.NOBLOCK)
                except zmq.ZMQError as exc:
                    if sock is self.router and exc.errno == zmq.EHOSTUNREACH:
                        obs.DROPS.labels("watcher-unreachable").inc()
                        gone.append(frames[0].hex())
                    else:
                        obs.DROPS.labels("watcher-hwm").inc()
        return gone


class _Queued:
    """A socket's stand-in that queues sends (Withheld); a replay's discards them."""

    def __init__(self, sock: zmq.Socket | None, turn: list[tuple[zmq.Socket, list[bytes]]]) -> None:
        self.sock = sock
        self.turn = turn

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        if self.sock is not None:
            self.turn.append((self.sock, frames))


DISCARD = _Queued(None, [])  # what a replay sends to: its outputs were sent when first made


class Processor:
    def __init__(self, config: Config, context: zmq.Context | None = None) -> None:
        self.config = config
        self.ctx = context or zmq.Context.instance()
        self.room_pass = room_pass(config)
        # Sockets, CURVE/ZAP, the run directory and the refusals to start: meshstream_zmq/links.py
        self.links = links.bind_processor(self.ctx, config)
        self.pull, self.pub, self.router = self.links.pull, self.links.pub, self.links.router
        self.peers = Peers()  # each gateway's link state, and the subscriptions seen
        # Of a primary/backup pair (meshstream_zmq/pair.py), this processor serves only while
        # active; alone, always.
        self.pair = Pair(config.backup, config.processor_silence, time.monotonic()) \
            if config.peer else None
        self.serving = self.pair is None
        self.peer_alive = True  # as last logged
        self.peer_behind = 0  # with a log, the standby's lag (its PairBeat's log_behind)
        self.switchover = False  # asked (SIGUSR2, `meshstream switchover`): hand over to the standby
        self.said_role = ""  # as last written to <run dir>/processor.role
        self.run_id = secrets.token_hex(8)  # this process (ProcessorBeat.run, Welcome.run)
        # The log (--log): every input recorded per turn, outputs withheld until stored.
        self.journal: LogThread | None = None
        self.withheld: Withheld | None = None
        self.recording: list[bytes] | None = None  # this turn's LogEntry.inputs fields, encoded
        self.recorded = 0  # their payloads' bytes (LOG_ENTRY_BYTES)
        # A standby (--log with --peer) follows the log, applying every entry as the writer
        # did, until it takes over (docs/design.md, "A standby on the log").
        self.following = False
        self.replaying = False  # applying a logged entry, not a live input
        self.applied = 0  # the log's sequence of the last entry applied (or written)
        self.behind = 0  # following: entries stored that are not applied yet
        self.heard: set[bytes] = set()  # our own XPUB's subscriptions, whatever the role
        # Snapshots (the writer's, every config.snapshot_every entries): the log's sequence
        # of this writer's takeover record (its entry n is at base + n), and of the last
        # snapshot taken (the next one trims the log below it).
        self.log_base = 0
        self.snapshot_number = 0  # this writer's entry number of the last snapshot taken
        self.snapshot_seq = 0
        self.poller = zmq.Poller()
        # Restarted from the log: gateways whose frames wait for their Resent, and those
        # owed every GatewayOut they have not applied (sent again on their subscription).
        self.recovering: set[str] = set()
        self.resend: set[str] = set()
        self.last_time = 0.0  # with a log, time is the wall clock, never going back
        self.running = True
        self.envelopes_in = 0  # counted here, published to the metric at each beat
        self.admin = AdminView(stale=config.peer_timeout)  # the figures /admin shows
        self.throttle = obs.Throttle()
        self.longest = 0.0  # seconds: the loop's longest stretch of work so far
        self.fresh_state()  # with a log, until its first entry gives the epoch and state
        if config.log_urls:
            self.recover()

    def fresh_state(self, epoch: str = "") -> None:
        """A new epoch and empty state: at start, and on becoming the active one of a pair
        (the gateways' and watchers' hellos then rebuild it); with a log, its epoch."""
        self.epoch = epoch or new_epoch()
        self.out = ZmqOutbox(self.pub, self.router, self.epoch, lag_age=self.config.peer_timeout)
        self.out.run = self.run_id
        self.out.logged = bool(self.config.log_urls)
        self.mesh = Mesh(self.out, gateway_timeout=self.config.peer_timeout,
                         watcher_timeout=self.config.peer_timeout, room_pass=self.room_pass,
                         max_rooms_per_client=self.config.max_rooms_per_client,
                         direct_messages=self.config.direct_messages, epoch=self.epoch,
                         resume_window=self.config.resume_window,
                         history_size=self.config.history_size,
                         history_bytes=self.config.history_bytes,
                         history_age=self.config.history_age,
                         direct_history=self.config.direct_history,
                         direct_history_bytes=self.config.direct_history_bytes,
                         direct_history_age=self.config.direct_history_age)
        self.acked: dict[str, int] = {}
        self.peers.state.clear()  # every gateway must say hello to this epoch
        obs.PROCESSOR_ACTIVE.set(1 if self.serving else 0)

    # ------------------------------------------------------------ the pair

    def pair_changed(self, state: State | None) -> None:
        assert self.pair is not None
        obs.PAIR_TERM.set(self.pair.term)
        if state is None:
            return
        if (state is State.ACTIVE) != self.serving:
            if self.journal is not None:  # the log keeps the state: take it over, or follow
                if state is State.ACTIVE:
                    self.take_over()
                else:
                    self.follow_again("the other processor of the pair is active")
                if self.serving != (state is State.ACTIVE):
                    return
            else:
                self.serving = state is State.ACTIVE
                self.fresh_state()  # active: a new epoch; passive: nothing kept
        log.warning("processor active" if self.serving else "processor passive: the other "
                    "processor of the pair serves", extra={"fields": {
                        "role": self.pair.role, "term": self.pair.term, "epoch": self.epoch}})

    def on_pair_beat(self, payload: bytes, now: float) -> None:
        assert self.pair is not None
        try:
            beat = pb.PairBeat.FromString(payload)
        except Exception:  # noqa: BLE001 - only the other processor can send here (CURVE)
            obs.DROPS.labels("bad-pair-beat").inc()
            return
        self.peer_behind = beat.log_behind
        self.pair_changed(self.pair.peer_beat(beat.state, beat.term, now, beat.handover))

    def passive(self, hello: bool, now: float) -> bool:
        """Not serving: whether a gateway's or watcher's message is dropped. A hello may
        make this processor active (its peer silent: meshstream_zmq/pair.py)."""
        assert self.pair is not None
        # With a log any message will do (gateways keep their link through a failover and
        # send heartbeats, not hellos): the log, not the hello, keeps it safe.
        if (hello or self.journal is not None) and self.pair.hello(now):
            self.pair_changed(State.ACTIVE)
            return False
        obs.DROPS.labels("passive").inc()
        return True

    # ------------------------------------------------------------ inputs

    def on_gateway(self, payload: bytes, now: float) -> None:
        try:
            batch = pb.GatewayBatch.FromString(payload)
        except Exception:  # noqa: BLE001 - not from a meshstream gateway: drop it, say so
            return self.bad_batch("undecodable GatewayBatch", len(payload))
        if not all(columns_match(item.frames) for item in batch.items):
            return self.bad_batch("ClientFrames columns of different lengths", len(payload))
        if not self.serving and not self.replaying and self.passive(
                any(item.HasField("hello") for item in batch.items), now):
            return None  # its frames stay unacknowledged: processor-restarted, once welcomed
        if self.recording is not None:
            self.recording.append(length_delimited(2, length_delimited(1, payload)))
            self.recorded += len(payload)
        gateway = batch.gateway
        mesh = self.mesh
        mesh.gateway_seen(gateway, now)
        known = mesh.knows_gateway(gateway)
        if known:
            self.out.received(gateway, batch.received)
        client_frame = mesh.client_frame
        empty = protocol.EMPTY_BODY
        last_seq = acked = self.acked.get(gateway, 0)  # the last client frame applied
        waiting = gateway in self.recovering  # for its Resent: frames would come out of order
        for item in batch.items:
            if known:
                # Hot path: reading `frames` of an item of another kind gives an empty
                # default, so runs of client frames need no WhichOneof.
                run = item.frames
                clients = run.client
                if clients:
                    if waiting:
                        continue  # sent again after its Resent
                    columns: tuple[Sequence[Any], ...] = (
                        clients, run.action, run.target, run.body, run.is_target_client,
                        run.request_id)
                    if run.first_seq <= last_seq:  # sent again: what was applied is skipped
                        done = last_seq - run.first_seq + 1
                        if done >= len(clients):
                            continue
                        columns = tuple(column[done:] for column in columns)
                    for client, action, target, body, to_client, request_id in zip(
                            *columns, strict=True):
                        try:
                            client_frame(client, action, target, body or empty, to_client, request_id)
                        except Exception:  # a bug: this frame fails, not the processor
                            self.failed("client frame", now, action=action)
                            self.out.deliver(gateway, protocol.error(
                                ErrorCode.INTERNAL_ERROR, action=action, target=target,
                                request_id=request_id), clients=(client,))
                    last_seq = run.first_seq + len(clients) - 1
                    continue
            kind = item.WhichOneof("kind")
            if kind == "resent":  # every frame it has not had acknowledged follows, again
                waiting = False
                self.recovering.discard(gateway)
                # and it listens to us: what it has not applied of ours, again (it skips
                # what it has; its SUB may have had them from the other of a pair)
                self.send_unsent(gateway)
                continue
            if not known and kind != "hello":
                # Not (or no longer) introduced to this processor, e.g. frames sent just
                # after a processor restart: left unacknowledged, so the gateway reports
                # them (processor-restarted) when it resyncs; its hello lists its clients.
                continue
            try:
                self.on_item(gateway, kind, item, now, batch)
            except Exception:  # a bug: this item fails, not the processor (and its epoch)
                self.failed(f"gateway {kind}", now)
            if kind == "hello":
                known = True
                last_seq = acked = 0  # its numbering is acknowledged afresh
                waiting = False
        if last_seq > acked:
            self.acked[gateway] = last_seq
        return None

    def on_item(self, gateway: str, kind: str | None, item: pb.GatewayItem, now: float,
                batch: pb.GatewayBatch | None = None) -> None:
        """One GatewayItem other than client frames, from a gateway the mesh knows (or its hello)."""
        mesh = self.mesh
        if kind == "connected":
            c = item.connected
            mesh.client_connected(c.client, now, c.user, c.session_hash)
        elif kind == "disconnected":
            mesh.client_disconnected(item.disconnected, gateway)
        elif kind == "away":
            mesh.client_away(item.away, now, gateway)
        elif kind == "heartbeat":
            if item.heartbeat.HasField("stats"):
                self.admin.record(gateway, item.heartbeat.stats, now)
        elif kind == "admin_query":
            serving = ALONE if self.pair is None else Serving(
                self.pair.role, self.pair.term, self.journal is not None,
                self.peer_behind if self.pair.peer_alive(now) else None)
            self.out.admin_answer(gateway, item.admin_query.id, self.admin.answer(
                mesh, item.admin_query, now, time.time(), serving))
        elif kind == "resume":
            r = item.resume
            mesh.resume(gateway, r.link, r.session_hash, r.new_session_hash, r.user,
                        resume_positions(r), now)
        elif kind == "resync":  # it missed GatewayOuts: the mesh's view of its clients
            log.warning("gateway resync", extra={"fields": {"gateway": gateway}})
            obs.DROPS.labels("gateway-resync").inc()
            self.peers.resync(gateway)
            mesh.gateway_sync(gateway)
        elif kind == "hello":
            hello = item.hello
            log.info("gateway hello", extra={"fields": {
                "gateway": gateway, "clients": len(hello.clients)}})
            self.out.forget(gateway)  # its numbering starts over with the welcome
            self.recovering.discard(gateway)  # what it had not had acknowledged, it answered
            mesh.gateway_listed(
                gateway, hello.index, [(c.client, c.rooms, c.user, c.session_hash) for c in hello.clients],
                [i.resume.new_session_hash for i in batch.items if i.HasField("resume")] if batch else [],
                now)
            self.acked.pop(gateway, None)
            if self.peers.hello(gateway):  # else a slow joiner: welcomed with its subscription
                self.out.welcome_gateway(gateway)
            else:
                self.out.hold(gateway)
            mesh.gateway_sync(gateway)

    def failed(self, what: str, now: float, **fields: object) -> None:
        """An exception in the core on one input: counted, logged (one line per few seconds
        with a traceback), and the processor goes on with its state and epoch."""
        obs.DROPS.labels("processor-error").inc()
        suppressed = self.throttle.due(what, now)
        if suppressed is not None:
            shown = {k: obs.bounded(v, 64) for k, v in fields.items()}
            log.exception("input failed", extra={"fields": {
                "input": what, "suppressed": suppressed, **shown}})

    def bad_batch(self, reason: str, size: int) -> None:
        """Only a peer that is not a meshstream gateway (or a bug) sends these: nothing in
        it is applied; its frames stay unacknowledged."""
        obs.DROPS.labels("bad-gateway-batch").inc()
        log.error("dropped a GatewayBatch", extra={"fields": {"reason": reason, "bytes": size}})

    def subscribed(self, msg: bytes) -> None:
        """Our XPUB's (un)subscription: kept whatever the role (a standby taking over
        applies what its own XPUB has, not what the old writer's had), applied if serving."""
        if msg[:1] == b"\x01":
            self.heard.add(msg[1:])
        else:
            self.heard.discard(msg[1:])
        if self.serving or self.journal is None:
            self.on_subscription(msg)

    def on_subscription(self, msg: bytes) -> None:
        if self.recording is not None:
            self.recording.append(length_delimited(2, length_delimited(3, msg)))
        if self.resend and msg[:1] == b"\x01" and msg.endswith(b"."):  # a gateway's, again
            owed = msg[1:-1].decode(errors="replace")
            if owed in self.resend:
                self.resend.discard(owed)
                self.send_unsent(owed)
        gateway = self.peers.subscription(msg)
        self.out.rooms_observed = any(t.startswith(ROOM_TOPIC) for t in self.peers.subscriptions)
        if gateway is not None:
            self.out.welcome_gateway(gateway)

    def send_unsent(self, gateway: str) -> None:
        """Every GatewayOut `gateway` has not said it applied, again (after a restart or a
        takeover: it skips a seq it has)."""
        for payload in self.out.unsent(gateway):
            self.out.pub.send_multipart([gateway.encode() + b".", payload], flags=zmq.NOBLOCK)

    def on_watcher(self, frames: list[bytes], now: float, user: str | None = None) -> None:
        """`user`: the ZAP User-Id of the sender's CURVE key (None without keys: trusted)."""
        identity = frames[0].hex()
        msg = pb.WatcherIn()
        try:
            msg.ParseFromString(frames[-1])
            kind = msg.WhichOneof("kind")
        except Exception:  # noqa: BLE001 - any decode failure is the watcher's error
            kind = None
        if len(frames) < 2 or kind is None:
            self.out.reply(identity, 0, ErrorCode.BAD_COMMAND, "undecodable WatcherIn")
            return
        if not self.serving and not self.replaying and self.passive(kind == "hello", now):
            return  # silence, even to commands: the watcher then tries the other processor
        if self.recording is not None:
            logged = pb.LoggedWatcherIn(identity=frames[0], payload=frames[-1], user=user or "",
                                        has_user=user is not None)
            self.recording.append(length_delimited(2, length_delimited(2, logged.SerializeToString())))
            self.recorded += len(frames[-1])
        if kind == "hello":
            h = msg.hello
            log.info("watcher hello", extra={"fields": {"name": h.name, "rooms": list(h.rooms),
                                                         "prefixes": list(h.prefixes)}})
            if user is not None and self.links.ring is not None:  # CURVE: claims per key
                refused = self.links.ring.check_hello(user, h.name, h.rooms, h.prefixes)
                if refused:
                    log.warning("watcher hello refused", extra={"fields": {
                        "key": user[:80], "reason": refused[:300]}})
                    self.out.reply(identity, 0, ErrorCode.FORBIDDEN, refused)
                    return
            # `assigned` rooms are claimed by name like `rooms`, but a key's claims do not
            # limit them (a create_room command gave them, and commands are not limited)
            self.mesh.watcher_hello(identity, h.name, list(h.rooms), list(h.prefixes), now,
                                    list(h.assigned))
        elif kind == "goodbye":  # frames up to `acked` were handled; later ones may not be
            log.info("watcher goodbye", extra={"fields": {
                "watcher": identity, "name": self.mesh.watcher_name(identity),
                "acked": msg.goodbye.acked}})
            self.mesh.watcher_goodbye(identity, msg.goodbye.acked)
        elif kind == "heartbeat":  # answered, so the watcher knows the processor is alive
            known = self.mesh.watcher_seen(identity, now, msg.heartbeat.acked)
            if known and msg.heartbeat.HasField("stats"):
                self.admin.record(identity, msg.heartbeat.stats, now)
            self.out.reply(identity, 0, None if known else ErrorCode.UNKNOWN_WATCHER)
        else:
            self.mesh.watcher_seen(identity, now)
            try:
                self.on_command(identity, msg.command)
            except Exception:  # a bug: this command fails, not the processor
                self.failed("watcher command", now, command=msg.command.WhichOneof("kind"))
                self.out.reply(identity, msg.command.id, ErrorCode.INTERNAL_ERROR)

    def watcher_gone(self, watcher: str) -> None:
        """A watcher found gone when something was sent to it (with a log: when released)."""
        if self.recording is not None:
            self.recording.append(length_delimited(2, length_delimited(4, watcher.encode())))
        log.warning("watcher disconnected", extra={"fields": {
            "watcher": watcher, "name": self.mesh.watcher_name(watcher)}})
        self.mesh.watcher_gone(watcher)

    def probe_watchers(self) -> None:
        """A watcher that exited or was SIGKILLed is gone within a heartbeat, not after the
        peer timeout: its pending frames are answered `watcher-restarted` at once. (A frame
        sent to it meanwhile finds it gone the same way: see Mesh._forward.)"""
        for watcher in self.mesh.live_watchers():
            if self.out.probe(watcher) is Delivery.GONE:
                self.watcher_gone(watcher)

    def on_command(self, watcher: str, cmd: pb.Command) -> None:
        try:
            command = decode_command(cmd)
        except BadCommand as exc:
            return self.out.reply(watcher, cmd.id, ErrorCode.BAD_COMMAND, str(exc))
        self.mesh.command(watcher, cmd.id, command, cmd.idempotency_key)
        return None

    # ------------------------------------------------------------ loop

    def beat(self, now: float) -> None:
        """Every heartbeat: to the other processor of a pair; then, serving, the core's."""
        if self.pair is not None:
            self.pair_beat(now)
        if self.serving:
            self.core_beat(now)

    def pair_beat(self, now: float) -> None:
        assert self.pair is not None and self.links.pair_pub is not None
        pair = pb.PairBeat(state=self.pair.state.value, term=self.pair.term,
                           backup=self.pair.backup, epoch=self.epoch, log_behind=self.behind,
                           handover=now < self.pair.yielding_until)
        try:
            self.links.pair_pub.send(pair.SerializeToString(), flags=zmq.NOBLOCK)
        except zmq.Again:
            obs.DROPS.labels("beat-hwm").inc()
        role = "active" if self.serving else "passive"
        if role != self.said_role:  # for `meshstream switchover` and operators: the file
            self.said_role = role
            with contextlib.suppress(OSError):
                (Path(self.config.resolved_run_dir) / ROLE_FILE).write_text(role + "\n")
        if self.pair.peer_alive(now) != self.peer_alive:
            self.peer_alive = not self.peer_alive
            log.warning("the other processor is back" if self.peer_alive else
                        "the other processor is silent", extra={"fields": {
                            "role": self.pair.role, "state": self.pair.state.value}})

    def core_beat(self, now: float) -> None:
        """The heartbeat's work in the core (logged: a replay does it at the same point)."""
        if self.recording is not None:
            self.recording.append(BEAT_INPUT)
        for gateway in self.mesh.expire(now):
            log.warning("gateway lost", extra={"fields": {"gateway": gateway}})
            self.acked.pop(gateway, None)
        for reason, dropped in self.mesh.take_drops().items():  # held messages over a budget
            obs.DROPS.labels(reason).inc(dropped)
        self.drop_stalled(self.out.stalled(now))
        for gateway in self.mesh.gateways:
            obs.GATEWAY_LAG.labels(gateway).set(self.out.lag(gateway))
        for gateway in [g for g in self.out.streams if not self.mesh.knows_gateway(g)]:
            self.out.forget(gateway)  # replaced in its slot, or lost: its numbering goes too
            with contextlib.suppress(KeyError):  # gateway IDs change at every start
                obs.GATEWAY_LAG.remove(gateway)
        for gateway in [g for g in self.peers.state if not self.mesh.knows_gateway(g)]:
            self.peers.dropped(gateway)
        self.probe_watchers()
        self.out.pub.send_multipart([b"processor", self.processor_beat().SerializeToString()],
                                    flags=zmq.NOBLOCK)  # XPUB without NODROP: never EAGAIN
        obs.CLIENTS.set(len(self.mesh.clients))
        obs.ROOMS.set(len(self.mesh.rooms))
        obs.ENVELOPES_IN.inc(self.envelopes_in)
        self.envelopes_in = 0
        self.admin.record(PROCESSOR, obs.process_stats(PROCESSOR, self.config.restarts), now)
        self.admin.sample(now)

    def processor_beat(self) -> pb.ProcessorBeat:
        """Every known gateway is listed: one missing from the map must say hello again."""
        return pb.ProcessorBeat(epoch=self.epoch, run=self.run_id, logged=self.journal is not None,
                                acked={g: self.acked.get(g, 0) for g in self.mesh.gateways})

    def drop_stalled(self, gateways: list[str]) -> None:
        """Gateways that stopped applying what they are sent (GatewayOutput.stalled): each
        is dropped alone, as if dead (its clients away), and sent nothing more; once it
        reads again, the beat no longer lists it and it says hello (a resync)."""
        for gateway in gateways:
            if self.mesh.knows_gateway(gateway):
                log.warning("gateway stalled: dropped", extra={"fields": {
                    "gateway": gateway, "unapplied_bytes": self.out.lag(gateway)}})
                obs.DROPS.labels("gateway-stalled").inc()
                self.mesh.drop_gateway(gateway)
                self.acked.pop(gateway, None)
            self.out.forget(gateway)

    def run(self) -> None:
        poller = self.poller
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        pair_sub = self.links.pair_sub
        if pair_sub is not None:
            poller.register(pair_sub, zmq.POLLIN)
        if self.journal is not None:
            poller.register(self.journal.fileno(), zmq.POLLIN)
        interval = self.config.heartbeat
        next_beat = self.clock()
        log.info("processor ready", extra={"fields": {
            "epoch": self.epoch, **self.config.endpoints.__dict__,
            **({} if self.pair is None else {"pair": self.pair.role, "peer": self.config.peer})}})
        pull, pub, router = self.pull, self.pub, self.router
        while self.running:
            now = self.clock()
            if self.switchover:
                self.switchover = False
                self.hand_over(now)
            if now >= next_beat:
                self.beat(now)
                self.flush(now)  # a turn of its own (so a replay of the log flushes here too)
                self.seal(now)
                next_beat = now + interval
                self.took(self.clock() - now)
            ready = dict(poller.poll(int(max(0.0, next_beat - now) * 1000)))
            now = self.clock()
            journal = self.journal
            if journal is not None and journal.fileno() in ready:
                if self.following:
                    self.follow(now)
                else:
                    self.stored(now)
            if pair_sub is not None and pair_sub in ready:
                for _ in range(DRAIN):
                    try:
                        self.on_pair_beat(pair_sub.recv(zmq.NOBLOCK), now)
                    except zmq.Again:
                        break
            if pub in ready:
                for _ in range(DRAIN):
                    try:
                        self.subscribed(pub.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            if pull in ready:
                # EVENTS before each read, not reading until EAGAIN: at low rates a wake-up
                # carries one batch, and an exception per wake-up costs more than getsockopt.
                received = 0
                while received < DRAIN and pull.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    try:
                        frames = pull.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:  # EVENTS promised a message not there (seen with CURVE)
                        break
                    self.on_gateway(frames[-1], now)
                    received += 1
                    if self.out.broadcasts >= FLUSH_BROADCASTS:
                        self.flush(now)
                    if self.recorded > LOG_ENTRY_BYTES:
                        self.flush(now)  # as at a turn's end: a replay flushes there too
                        self.seal(now)
                self.envelopes_in += received
            if router in ready:
                for _ in range(DRAIN):
                    try:
                        frames, user = self.links.recv_watcher(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.on_watcher(frames, now, user)
                    if self.recorded > LOG_ENTRY_BYTES:
                        self.flush(now)
                        self.seal(now)
            self.flush(now)
            self.seal(now)
            self.took(self.clock() - now)
        self.close()

    # ------------------------------------------------------------ the log

    def clock(self) -> float:
        """Seconds for the core: monotonic; with a log the wall clock, never going back (the
        log's entries carry it: a processor replaying them elsewhere has another monotonic)."""
        if self.journal is None:
            return time.monotonic()
        self.last_time = max(self.last_time, time.time())
        return self.last_time

    def seal(self, now: float) -> None:
        """The turn's inputs become one log entry; its outputs wait for it to be stored."""
        if self.journal is None or self.withheld is None:
            return
        if self.recording:
            entry = b"".join([b"\x09", struct.pack("<d", now), *self.recording])
            self.recording.clear()
            self.recorded = 0
            number = self.journal.append(entry)
            self.withheld.seal(number)
            every = self.config.snapshot_every
            if every and number - self.snapshot_number >= every:
                self.take_snapshot(number)
        elif self.withheld.turn:  # outputs of no input (none today): after all before them
            self.withheld.seal(self.journal.sent)

    def hand_over(self, now: float) -> None:
        """A planned switchover: everything appended stored and sent first (at most a
        peer timeout), then a last beat telling the gateways to turn to the other (they
        keep their frames meanwhile) and the standby to take over now; then follow."""
        if self.pair is None or self.journal is None or not self.serving:
            log.warning("switchover ignored: it needs an active processor of a pair on a log")
            return
        journal, started = self.journal, time.monotonic()
        self.flush(now)
        self.seal(now)
        while journal.through < journal.sent and time.monotonic() - started < self.config.peer_timeout:
            select.select([journal], [], [], 0.05)
            self.stored(now)
            if not self.serving or not self.running:
                return  # fenced meanwhile (someone else took over) or the log failed
        moving = self.processor_beat()
        moving.moving = True
        self.pub.send_multipart([b"processor", moving.SerializeToString()], flags=zmq.NOBLOCK)
        self.pair.step_down(yielding_until=self.clock() + 2 * self.config.processor_silence)
        self.pair_beat(self.clock())  # handover: the standby takes over at once
        log.warning("switchover: handing over to the standby", extra={"fields": {
            "entry": self.log_base + journal.sent, "seconds": round(time.monotonic() - started, 3)}})
        self.follow_again("switchover: the standby takes over")

    def take_snapshot(self, number: int) -> None:
        """The state after this writer's entry `number`, stored once that entry is (in the
        log's thread); the log is then trimmed below the previous snapshot's entry, so a
        standby a little behind still finds what it needs."""
        assert self.journal is not None
        started = time.monotonic()
        seq = self.log_base + number
        data = snapshot.dump(self.mesh, self.out, self.peers, snapshot.ProcessorFields(
            seq, self.last_time, self.acked, self.recovering, self.resend))
        self.journal.put_snapshot(number, data, trim_below=self.snapshot_seq)
        log.info("snapshot taken", extra={"fields": {
            "entry": seq, "bytes": len(data), "seconds": round(time.monotonic() - started, 3)}})
        self.snapshot_number, self.snapshot_seq = number, seq
        error, self.journal.snapshot_error = self.journal.snapshot_error, None
        if error is not None:  # the one before: the log is whole without it, only longer
            log.error("a snapshot was not stored", extra={"fields": {"reason": str(error)[:300]}})

    def stored(self, now: float) -> None:
        """The log stored more entries: their outputs go. A failure stops this processor
        emitting at once (it must not emit what the log does not have): another writer took
        the log over (Fenced) → of a pair, it follows the log as the standby; alone, or the
        log lost (LogUnavailable), it stops, and restarted reads the log again."""
        assert self.journal is not None and self.withheld is not None
        try:
            through = self.journal.stored_through()
        except Fenced as exc:
            if self.pair is not None:
                return self.follow_again(f"another processor took the log over ({str(exc)[:200]})")
            log.error("the log failed: stopping", extra={"fields": {"reason": str(exc)[:300]}})
            self.running = False
            return None
        except LogUnavailable as exc:
            log.error("the log failed: stopping", extra={"fields": {"reason": str(exc)[:300]}})
            self.running = False
            return None
        gone = self.withheld.release(through)
        for watcher in gone:
            if self.mesh.watcher_name(watcher):
                self.watcher_gone(watcher)
        if gone:
            self.flush(now)
            self.seal(now)
        return None

    def recover(self) -> None:
        """At start with --log: read the log and replay it (the same epoch and state as the
        processor that wrote it). Alone, take it over at once; of a pair, follow it until
        the pair makes this one active."""
        self.open_log()
        if self.pair is None:
            self.take_over()
            if not self.serving:
                raise Fenced("another processor keeps writing the log")
        else:
            self.start_following()

    def open_log(self) -> None:
        """A connection of our own to the log (a writer name of its own: Nats-Msg-Id), and
        the state of everything in it, from its first entry."""
        c = self.config
        self.journal = LogThread(
            LogConfig(c.log_urls, stream=c.log_stream, replicas=c.log_replicas,
                      creds=c.log_creds, tls_ca=c.log_tls_ca),
            writer=f"processor-{self.run_id}-{secrets.token_hex(4)}")
        last = self.journal.open()
        self.applied = 0
        self.peers = Peers()  # as the writer's were when it started: the log rebuilds them
        self.recovering, self.resend = set(), set()
        started = time.monotonic()
        self.snapshot_seq = 0
        if last:
            latest = self.journal.latest_snapshot()
            if latest is not None:
                self.load_snapshot(latest)
            entries = self.journal.read(self.applied + 1)
            for seq, data in entries:
                self.apply_entry(seq, data)
            log.info("log replayed", extra={"fields": {
                "snapshot": self.snapshot_seq, "entries": len(entries), "epoch": self.epoch,
                "seconds": round(time.monotonic() - started, 3)}})

    def load_snapshot(self, data: bytes) -> None:
        """The state of the latest snapshot (then the entries after it are replayed); one
        that cannot be read stops the start (BadSnapshot): never a partial state."""
        self.fresh_state()
        fields = snapshot.load(data, self.mesh, self.out, self.peers)
        self.epoch = self.out.epoch = self.mesh.epoch
        self.applied = self.snapshot_seq = fields.log_seq
        self.last_time = max(self.last_time, fields.last_time)
        self.acked, self.recovering, self.resend = fields.acked, fields.recovering, fields.resend
        self.out.rooms_observed = any(t.startswith(ROOM_TOPIC) for t in self.peers.subscriptions)
        self.out.pub = self.out.router = DISCARD  # type: ignore[assignment]

    def apply_entry(self, seq: int, data: bytes) -> None:
        """One entry of the log, applied as its writer applied it; its outputs discarded
        (they were sent when made)."""
        entry = pb.LogEntry.FromString(data)
        if seq != self.applied + 1:
            raise LogUnavailable(f"the log's stream {self.config.log_stream} has no entry "
                                 f"{self.applied + 1} (trimmed, and no snapshot covers it)")
        if entry.start:
            self.fresh_state(entry.start)
        elif self.applied == 0:
            raise LogUnavailable(f"the log's stream {self.config.log_stream} does not start "
                                 "with a start entry")
        self.out.pub = self.out.router = DISCARD  # type: ignore[assignment]
        self.replaying = True
        try:
            self.replay(entry)
        finally:
            self.replaying = False
        self.applied = seq

    def take_over(self) -> None:
        """Become the log's writer: read it to the end, then append a takeover record right
        after the last entry applied. If the old writer appended meanwhile, that fails
        (Fenced): read on, try again. From the record on, the old writer's appends fail: it
        stops emitting. Then serve, the same epoch, every input logged."""
        journal = self.journal
        assert journal is not None
        started = time.monotonic()
        if self.following:
            journal.unfollow()
            self.following = False
        record = b""
        for _ in range(TAKEOVER_TRIES):
            try:
                for seq, data in journal.read(self.applied + 1):
                    self.apply_entry(seq, data)
                record = self.takeover_record()
                journal.take_over(self.applied, record)
                break
            except Fenced:
                record = b""  # the old writer appended meanwhile: read that, try again
            except LogUnavailable as exc:
                log.error("cannot take the log over", extra={"fields": {"reason": str(exc)[:300]}})
                record = b""
                break
        if not record:
            if self.pair is None:
                return
            self.pair.step_down()
            return self.start_following()
        self.applied += 1
        self.log_base, self.snapshot_number = self.applied, 0
        self.serving, self.behind = True, 0
        obs.PROCESSOR_ACTIVE.set(1)
        obs.LOG_BEHIND.set(0)
        entry = pb.LogEntry.FromString(record)
        self.out.pub, self.out.router = self.pub, self.router
        self.replay(entry)  # what the record says, done (not logged again: it is stored)
        self.withheld = Withheld(self.router)  # from now on, outputs wait for their entry
        self.out.pub = self.withheld.socket(self.pub)  # type: ignore[assignment]
        self.out.router = self.withheld.socket(self.router)  # type: ignore[assignment]
        self.recording = []
        # its beat at once (not at the next heartbeat): gateways waiting turn to it now
        self.pub.send_multipart([b"processor", self.processor_beat().SerializeToString()],
                                flags=zmq.NOBLOCK)
        log.warning("took the log over", extra={"fields": {
            "epoch": self.epoch, "entry": self.applied, "gateways": len(self.mesh.gateways),
            "seconds": round(time.monotonic() - started, 3)}})
        return None

    def takeover_record(self) -> bytes:
        """The first entry this writer appends: the log's start (a new epoch) if it is
        empty, else `recovered`; with the subscriptions our own XPUB has (a standby's
        differ from the old writer's: gateways subscribe to both of a pair)."""
        ours, theirs = self.heard, self.peers.subscriptions
        subscriptions = [pb.LogInput(subscription=b"\x00" + t) for t in sorted(theirs - ours)]
        subscriptions += [pb.LogInput(subscription=b"\x01" + t) for t in sorted(ours)]
        if self.applied == 0:
            self.fresh_state()
            return pb.LogEntry(time=self.clock(), start=self.epoch,
                               inputs=subscriptions).SerializeToString()
        return pb.LogEntry(time=self.clock(), inputs=[pb.LogInput(recovered=True), *subscriptions]
                           ).SerializeToString()

    def start_following(self) -> None:
        assert self.journal is not None
        self.serving = False
        self.journal.follow(self.applied + 1)
        self.following = True
        obs.PROCESSOR_ACTIVE.set(0)

    def follow(self, now: float) -> None:
        """Entries the writer appended: applied as it applied them (a standby)."""
        assert self.journal is not None
        entries, behind = self.journal.followed()
        for seq, data in entries:
            if seq <= self.applied:
                continue  # read already (a catch-up before)
            if seq != self.applied + 1:
                return self.follow_again(f"a gap in the log: {self.applied + 1} to {seq - 1}")
            self.apply_entry(seq, data)
        self.behind = behind
        obs.LOG_BEHIND.set(behind)
        return None

    def follow_again(self, reason: str) -> None:
        """No longer the writer (fenced, or the pair made the other active): nothing this
        processor made and the log did not store is sent; its state is read from the log
        anew (a connection of its own), and it follows the log as the standby."""
        log.warning("processor passive: following the log", extra={"fields": {"reason": reason[:300]}})
        if self.pair is not None:
            self.pair.step_down()
        old = self.journal
        assert old is not None
        with contextlib.suppress(KeyError):
            self.poller.unregister(old.fileno())
        old.close(abandon=True)
        self.withheld, self.recording, self.recorded = None, None, 0
        self.serving, self.following = False, False
        try:
            self.open_log()
        except (LogUnavailable, Fenced, snapshot.BadSnapshot) as exc:
            log.error("the log failed: stopping", extra={"fields": {"reason": str(exc)[:300]}})
            self.running = False
            return
        assert self.journal is not None
        self.poller.register(self.journal.fileno(), zmq.POLLIN)
        self.start_following()

    def replay(self, entry: pb.LogEntry) -> None:
        """One logged turn, applied as the run loop applied it (its flushes included)."""
        now = entry.time
        self.last_time = max(self.last_time, now)
        for item in entry.inputs:
            kind = item.WhichOneof("kind")
            if kind == "gateway":
                self.on_gateway(item.gateway, now)
                if self.out.broadcasts >= FLUSH_BROADCASTS:
                    self.flush(now)
            elif kind == "watcher":
                w = item.watcher
                self.on_watcher([w.identity, w.payload], now, w.user if w.has_user else None)
            elif kind == "subscription":
                self.on_subscription(item.subscription)
            elif kind == "watcher_gone":
                self.watcher_gone(item.watcher_gone)
            elif kind == "beat":
                self.core_beat(now)
            elif kind == "recovered":
                self.recovered()
        self.flush(now)

    def recovered(self) -> None:
        """Serving on after a replay (logged, so that a later replay waits as this one did):
        every gateway's frames wait for its Resent, and it is owed its unapplied output."""
        if self.recording is not None:
            self.recording.append(RECOVERED_INPUT)
        self.recovering = set(self.mesh.gateways)
        self.resend = set(self.mesh.gateways)
        # A routing ID ZeroMQ made up (a leading 0 byte: the watcher set none) names nobody
        # now: this process's ROUTER hands out the same ones again in its own order. Such a
        # watcher is gone (its hello, on silence, brings it back); one with an ID of its own
        # (the SDK's: links.watcher_identity) goes on where it was.
        for watcher in self.mesh.live_watchers():
            if watcher.startswith("00"):
                self.mesh.watcher_gone(watcher)

    def took(self, seconds: float) -> None:
        """One stretch of work without a poll (a beat, or a drain and its flush): the
        longest is a metric, the loop's worst stall (everyone waits that long)."""
        if seconds > self.longest:
            self.longest = seconds
            obs.LOOP_STALL.set(seconds)

    def flush(self, now: float) -> None:
        self.out.flush(now)
        if self.out.over:  # past its byte bound: dropped now, not at the next beat
            self.drop_stalled(self.out.over)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        self.links.close()  # the sockets, and the ZAP thread if any


def room_pass(config: Config) -> RoomPass | None:
    """The core's check of a private-room token: auth.Tokens.room on the wall clock (tokens'
    exp and nbf are wall-clock times). None without a JWT key: no client joins a private
    room no watcher claims."""
    try:
        tokens = Tokens(config)
    except TokenKeyError as exc:
        raise SystemExit(f"processor cannot start: {exc}") from None
    if not tokens.enabled:
        return None

    def check(token: object, user: str, room: str) -> bool:
        return tokens.room(token, user, room, time.time())

    return check


def main(config: Config) -> None:
    obs.setup("processor", config.log_level)
    obs.serve_metrics(config.metrics_port)
    try:
        processor = Processor(config)
    except links.LinkError as exc:  # e.g. TCP beyond loopback without keys, a live instance
        log.error("refusing to start", extra={"fields": {"reason": str(exc)}})
        raise SystemExit(f"meshstream processor: {exc}") from None
    except (LogUnavailable, Fenced, snapshot.BadSnapshot) as exc:  # unreachable, not ours, unreadable
        log.error("refusing to start: the log", extra={"fields": {"reason": str(exc)[:300]}})
        raise SystemExit(2) from None
    obs.tune_gc()

    def stop(*_: object) -> None:
        processor.running = False

    def switchover(*_: object) -> None:
        processor.switchover = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR2, switchover)  # `meshstream switchover`
    pidfile = links.prepare_run_dir(config.resolved_run_dir) / PID_FILE
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        processor.run()
    finally:
        with contextlib.suppress(OSError):
            pidfile.unlink()
