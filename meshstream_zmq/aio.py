"""The asyncio watcher SDK: room logic as coroutine handlers, commands you await.

    from meshstream_zmq.aio import AsyncWatcher, Message

    bot = AsyncWatcher("dice", prefixes=["dice-"])

    @bot.on("join-room")
    async def join(msg: Message) -> None:
        await bot.join(msg.client, msg.room)
        room = await bot.query_room(msg.room)          # CommandError on an error reply
        await bot.send_room(msg.room, "players", {"n": len(room.members)})

    asyncio.run(bot.run())

The Python SDK of the watcher protocol (one DEALER, CURVE with the watcher's key, hello,
heartbeats, failover to the other processor of a pair; docs/watchers.md), the frames built
and read by `meshstream_zmq.watcher_protocol`, in tasks:

- a receiving task reads the socket and resolves command replies at once, so a handler
  awaiting a reply never waits behind other frames;
- frames and events go to one queue per room (its *lane*): a room's are handled one at a
  time, in order; rooms run concurrently. A handler may name another lane for its frames
  (`@bot.on(action, lane=fn)`: the lobby's requests all come in `mesh-global`, but only
  those about the same room need to wait for each other). A lane holds at most
  `room_queue` items (1000):
  a client frame past that is answered `rate-limited`, an event past it is dropped; both
  are counted (`meshstream_watcher_overflow`) and logged, at most every 5 s;
- heartbeats come from a task of their own: a handler that awaits for ever stalls its
  room only (a handler that blocks the loop, e.g. with time.sleep, stalls everything:
  that is the caller's bug);
- timers: `bot.call_later(seconds, fn, *args)` on the loop's clock, `bot.now()`;
- `bot.rooms` is the set of rooms this watcher runs now (from the welcome's snapshot and
  the ROOM_CREATED / ROOM_DELETED events); the ones a `create_room(watcher=…)` gave it
  are listed in every hello, so they are taken again after a processor restart.

A frame is acknowledged (heartbeat `acked`) once its handler has returned and every
earlier frame's has too.

An *observer* (`observe=True`) also subscribes to the processor's outbound PUB: every
room's events come to `on_event` handlers, and with `observe_rooms=[prefix, …]` every
room-wide message of rooms with those prefixes to `on_room_message` handlers, in the
same lanes. An observer claims no rooms (else it would get its rooms' events twice).
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from . import LOBBY, links
from . import meshstream_pb2 as pb
from . import observability as obs
from . import watcher_protocol as wp
from .config import Config
from .core import EventKind
from .errors import CloseCode, ErrorCode
from .watcher_protocol import TIMEOUT, CommandError, Event, Message, RoomState

__all__ = ["TIMEOUT", "AsyncWatcher", "CommandError", "CommandFuture", "Event", "Message",
           "RoomMessage", "RoomState", "ROOM_QUEUE"]

log = logging.getLogger("meshstream.aio")

T = TypeVar("T")
ROOM_QUEUE = 1000  # items one room's lane holds before frames are refused and events dropped
EVENT_PREFIX = b"event."
ROOM_PREFIX = b"room."  # the outbound topic of a room's room-wide messages: b"room." + name

Handler = Callable[[Any], Awaitable[Any] | Any]
LaneOf = Callable[[Message], str]  # which lane a client frame waits in (default: its room)


@dataclass(slots=True)
class RoomMessage:
    """A room-wide message as the room's members got it (an observer's view): a client's
    relayed frame (`sender` its client ID) or a watcher's `send_room`."""

    room: str
    action: str
    sender: str
    body: dict[str, Any]


class CommandFuture(asyncio.Future[T]):
    """A command's outcome: await it for the answer (a query's rooms; None for the others),
    or `CommandError` (its `code` from docs/watchers.md, or `timeout`).

    The command is sent when the method is called, not when it is awaited. One that fails
    while nobody awaits it goes to `AsyncWatcher.on_command_error` (it logs)."""

    id: int = 0
    deadline: float = 0.0
    convert: Callable[[pb.Reply], Any]
    watched = False

    def add_done_callback(self, fn: Callable[[CommandFuture[T]], object], *,  # type: ignore[override]
                          context: Any = None) -> None:
        self.watched = True  # awaiting (a Task's wake-up), gather and wait_for all come here
        super().add_done_callback(fn, context=context)


class _Acks:
    """What a heartbeat acknowledges: the highest seq up to which every frame was handled
    (frames of different rooms finish in any order)."""

    def __init__(self) -> None:
        self.generation = 0  # raised per processor epoch: seq numbering starts again
        self.last = 0
        self.open: list[int] = []
        self.finished: set[int] = set()

    def reset(self) -> None:
        self.generation += 1
        self.last, self.open, self.finished = 0, [], set()

    def received(self, seq: int) -> None:
        heapq.heappush(self.open, seq)
        self.last = max(self.last, seq)

    def done(self, seq: int, generation: int) -> None:
        if generation != self.generation:
            return
        self.finished.add(seq)
        while self.open and self.open[0] in self.finished:
            self.finished.discard(heapq.heappop(self.open))

    @property
    def acked(self) -> int:
        return self.open[0] - 1 if self.open else self.last


@dataclass(slots=True)
class _Lane:
    queue: deque[tuple[int, Message | Event | RoomMessage]]
    task: asyncio.Task[None] | None = None


class AsyncWatcher:
    def __init__(self, name: str, *, rooms: Iterable[str] = (), prefixes: Iterable[str] = (),
                 config: Config | None = None, endpoint: str | None = None,
                 context: zmq.asyncio.Context | None = None, reply_timeout: float = 10.0,
                 room_queue: int = ROOM_QUEUE, observe: bool = False,
                 observe_rooms: Iterable[str] = (), key: str = "") -> None:
        self.name = name
        # With --keys-dir, the watcher key it connects with: its name, or a shared one whose
        # name is the part before the first "." (one "api" key for every gateway's api.<id>)
        self.key = key or name
        self.claims = list(rooms)  # exact rooms claimed in the hello
        self.prefixes = list(prefixes)
        self.rooms: set[str] = set()  # the rooms this watcher runs now (see the module docstring)
        self.config = config or Config.from_env()
        # With a processor pair two endpoints, tried in turn while the one we talk to is silent.
        self.endpoints = [endpoint] if endpoint else [ep.watchers for ep in self.config.processors]
        self.endpoint = self.endpoints[0]
        self.identity = links.watcher_identity()  # its routing ID, to either processor
        self.ctx = context or zmq.asyncio.Context.instance()
        self.reply_timeout = reply_timeout
        self.room_queue = room_queue
        self.observe = observe or bool(observe_rooms)
        self.observe_rooms = list(observe_rooms)
        self.handlers: dict[str, Handler] = {}
        self.lane_of: dict[str, LaneOf] = {}  # by action, as `handlers`
        self.event_handlers: dict[EventKind, list[Handler]] = {}
        self.room_message_handlers: list[Handler] = []
        self.welcome_handlers: list[Handler] = []
        self.sock: zmq.asyncio.Socket | None = None
        self.sub: zmq.asyncio.Socket | None = None
        self.pending: dict[int, CommandFuture[Any]] = {}  # by id, so oldest first
        self.ids = itertools.count(1)
        self.lanes: dict[str, _Lane] = {}
        self.acks = _Acks()
        self.welcomed = False
        self.silent = False  # the processor went silent: commands fail at once meanwhile
        self.epoch = ""
        self.last_heard = 0.0
        self._welcomed = asyncio.Event()
        self._stop = asyncio.Event()
        self._receiver: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._throttle = obs.Throttle()

    # ------------------------------------------------------------ registration

    def on(self, action: str, *, lane: LaneOf | None = None) -> Callable[[Handler], Handler]:
        """Handle client frames with this action ("*": any action without its own handler).
        A handler may be a coroutine function; it runs in the frame's room's lane, or in
        the one `lane(message)` names: frames with the same lane are handled one at a
        time, in order (a lane that cannot be told, because `lane` raises, is the room)."""
        def register(fn: Handler) -> Handler:
            self.handlers[action] = fn
            if lane is None:
                self.lane_of.pop(action, None)
            else:
                self.lane_of[action] = lane
            return fn
        return register

    def on_event(self, kind: EventKind) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.event_handlers.setdefault(kind, []).append(fn)
            return fn
        return register

    def on_room_message(self, fn: Handler) -> Handler:
        """(Observers) every room-wide message of the `observe_rooms` prefixes."""
        self.room_message_handlers.append(fn)
        return fn

    def on_welcome(self, fn: Handler) -> Handler:
        """Called after every (re)connection with the state of the claimed rooms, in a task
        of its own (it may await commands; frames keep coming meanwhile)."""
        self.welcome_handlers.append(fn)
        return fn

    def on_command_error(self, command: int, code: str, message: str) -> None:
        """Override to react to a failed command nobody awaited; the default logs it."""
        log.warning("command failed", extra={"fields": {"id": command, "code": code,
                                                         "message": obs.bounded(message)}})

    # ------------------------------------------------------------ commands

    def command(self, op: wp.Op[T]) -> CommandFuture[T]:
        """Send one command (`watcher_protocol`'s `Op`s); the methods below are this."""
        future: CommandFuture[T] = CommandFuture()
        future.id = cmd_id = next(self.ids)
        future.deadline = time.monotonic() + self.reply_timeout
        future.convert = op.convert
        if self.silent or self.sock is None:
            why = "the processor is silent" if self.silent else "the watcher is not started"
            asyncio.get_running_loop().call_soon(self._resolve, future, wp.not_sent(cmd_id, why))
        elif self._send(wp.command(cmd_id, op)):
            self.pending[cmd_id] = future
        else:
            asyncio.get_running_loop().call_soon(
                self._resolve, future, wp.not_sent(cmd_id, "the send queue is full"))
        return future

    def send_room(self, room: str, action: str, body: Mapping[str, Any] | None = None, *,
                  sender: str = "", exclude: Iterable[str] = (), target: str = "") -> CommandFuture[None]:
        """Send to every member of `room` (minus `exclude`); the JSON is encoded once."""
        return self.command(wp.send_room(room, action, body, sender=sender, exclude=exclude,
                                         target=target))

    def send_clients(self, clients: Iterable[str], action: str,
                     body: Mapping[str, Any] | None = None, *, sender: str = "", target: str = "",
                     is_target_client: bool = False) -> CommandFuture[None]:
        return self.command(wp.send_clients(clients, action, body, sender=sender, target=target,
                                            is_target_client=is_target_client))

    def error(self, msg: Message, code: ErrorCode | CommandError, detail: str = "") -> CommandFuture[None]:
        """Answer a client frame with an error frame (its id echoed); given a failed
        command's `CommandError`, with its code if clients know it, else `watcher-error`."""
        return self.command(wp.error(msg, code, detail))

    def join(self, client: str, room: str, request_id: bytes = b"") -> CommandFuture[None]:
        return self.command(wp.join(client, room, request_id))

    def remove(self, client: str, room: str) -> CommandFuture[None]:
        return self.command(wp.remove(client, room))

    def create_room(self, room: str, *, watcher: str = "",
                    settings: Mapping[str, str] | None = None) -> CommandFuture[None]:
        return self.command(wp.create_room(room, watcher=watcher, settings=settings))

    def delete_room(self, room: str) -> CommandFuture[None]:
        return self.command(wp.delete_room(room))

    def disconnect(self, client: str, code: int = CloseCode.DISCONNECTED,
                   reason: str = "") -> CommandFuture[None]:
        return self.command(wp.disconnect(client, code, reason))

    def settings(self, room: str, **values: str) -> CommandFuture[None]:
        return self.command(wp.settings(room, values))

    def query_rooms(self) -> CommandFuture[list[RoomState]]:
        return self.command(wp.query_rooms())

    def query_room(self, room: str) -> CommandFuture[RoomState]:
        """Fails with `unknown-room` when there is no such room."""
        return self.command(wp.query_room(room))

    def client_rooms(self, client: str) -> CommandFuture[list[RoomState]]:
        """Fails with `unknown-client` when there is no such client."""
        return self.command(wp.client_rooms(client))

    # ------------------------------------------------------------ timers

    def now(self) -> float:
        """The clock of `call_later` (the loop's, monotonic), in seconds."""
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        """Call `fn(*args)` in `delay` seconds (`cancel()` the handle to stop it). It runs on
        the loop, in no lane: between two awaits of any handler, so state it shares with
        handlers is consistent as long as they change it between awaits. A coroutine
        function runs in a task of its own; an exception is logged. After `close()` it
        does nothing."""
        return asyncio.get_running_loop().call_later(max(0.0, delay), self._timer, fn, args)

    def _timer(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if self.sock is None:
            return  # closed meanwhile
        if inspect.iscoroutinefunction(fn):
            self._spawn(self._call(fn, *args))
            return
        try:  # now, not in a task: a timer cancelled once due must not run later
            fn(*args)
        except Exception:
            log.exception("timer failed", extra={"fields": {"timer": getattr(fn, "__name__", "?")}})

    def _send(self, payload: bytes) -> bool:
        assert self.sock is not None
        sent: asyncio.Future[Any] = self.sock.send_multipart(  # type: ignore[assignment]
            [wp.TOPIC, payload], flags=zmq.NOBLOCK)
        if sent.exception() is not None:  # done at once with NOBLOCK: queued, or EAGAIN
            log.error("processor not reachable; command dropped")
            return False
        return True

    def _resolve(self, future: CommandFuture[Any], reply: pb.Reply) -> None:
        if future.done():  # cancelled by its caller (e.g. asyncio.wait_for)
            return
        error = wp.reply_error(reply)
        if error is None:
            try:
                future.set_result(future.convert(reply))
            except Exception as exc:  # noqa: BLE001 - a reply that does not fit
                future.set_exception(CommandError("bad-reply", str(exc)))
            return
        future.set_exception(error)
        if not future.watched:
            future.exception()  # retrieved: asyncio must not also log it
            self.on_command_error(future.id, error.code, error.message)

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Connect and say hello; returns at once (see `wait_welcomed`). Handlers, replies
        and heartbeats run in tasks until `close()`."""
        self._stop.clear()
        # A DEALER; with keys_dir a CURVE client with this watcher's own key (links.py)
        self.sock = links.watcher_socket(self.ctx, self.config, self.key, self.endpoint, self.identity)
        self.last_heard = time.monotonic()
        self._receiver = self._spawn(self._receive(self.sock))
        self._spawn(self._beat())
        if self.observe:
            self.sub = links.observer_socket(self.ctx, self.config, self.key,
                                             [ep.outbound for ep in self.config.processors])
            self.sub.subscribe(EVENT_PREFIX)
            for prefix in self.observe_rooms:
                self.sub.subscribe(ROOM_PREFIX + prefix.encode())
            self._spawn(self._observe(self.sub))
        self.hello()

    async def run(self) -> None:
        """Serve until `stop()`."""
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.close()

    async def wait_welcomed(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._welcomed.wait(), timeout)

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Stop every task; a welcomed watcher says goodbye (its claims are released now,
        the frames handled so far are done). Commands still waiting are cancelled."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.lanes.clear()
        for future in self.pending.values():
            future.cancel()
        self.pending.clear()
        if self.sock is not None:
            if self.welcomed:
                self._send(wp.goodbye(self.acks.acked))
            self.sock.close(linger=100)
            self.sock = None
        if self.sub is not None:
            self.sub.close(linger=0)
            self.sub = None
        self.welcomed = False
        self._welcomed.clear()

    def hello(self) -> None:
        self.welcomed = False
        self._welcomed.clear()
        self._send(wp.hello(self.name, self.claims, self.prefixes, self.assigned))

    @property
    def assigned(self) -> list[str]:
        """Rooms we run that no claim of the hello covers: a `create_room` gave them."""
        return sorted(r for r in self.rooms
                      if r not in self.claims and not any(r.startswith(p) for p in self.prefixes))

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ the tasks

    async def _receive(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            self.last_heard = time.monotonic()
            try:
                self.dispatch(frames)
            except Exception:  # a bug here must not stop the receiving
                log.exception("dispatch failed")

    async def _beat(self) -> None:
        """Heartbeats (once welcomed) or hellos, reply deadlines, and the processor's
        silence: nothing a handler does delays this task but blocking the loop itself."""
        interval = self.config.heartbeat
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                delay = self._tick(time.monotonic(), interval)
            except Exception:  # a bug here must not stop the heartbeats
                log.exception("heartbeat failed")
                delay = interval

    def _tick(self, now: float, interval: float) -> float:
        self._expire(now)
        if now - self.last_heard > self.config.processor_silence:
            if self.welcomed:
                log.warning("processor silent; saying hello again", extra={"fields": {
                    "watcher": self.name, "silent_s": round(now - self.last_heard, 1)}})
                self.silent = True
                self.welcomed = False
                self._welcomed.clear()
            if len(self.endpoints) > 1:
                self._switch_processor()
        if self.welcomed:
            stats = obs.process_stats("watcher", self.config.restarts)  # for /admin
            self._send(wp.heartbeat(self.acks.acked, stats))
            return interval
        self.hello()
        return interval if len(self.endpoints) > 1 else max(2.0, interval)

    def _expire(self, now: float) -> None:
        """Fail the commands whose reply is overdue (lost with a processor that died)."""
        while self.pending:
            future = next(iter(self.pending.values()))
            if future.deadline > now:
                break
            self._reply(wp.timed_out(future.id, self.reply_timeout))

    def _switch_processor(self) -> None:
        """Talk to the other processor of the pair: a new DEALER (what was queued for the
        silent one goes with the old socket), then hello (docs/watchers.md, "A processor pair")."""
        self.endpoint = self.endpoints[(self.endpoints.index(self.endpoint) + 1) % len(self.endpoints)]
        log.warning("trying the other processor", extra={"fields": {
            "watcher": self.name, "endpoint": self.endpoint}})
        if self._receiver is not None:
            self._receiver.cancel()
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = links.watcher_socket(self.ctx, self.config, self.key, self.endpoint, self.identity)
        self._receiver = self._spawn(self._receive(self.sock))
        self.last_heard = time.monotonic()

    async def _observe(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            topic, payload = (await sub.recv_multipart())[:2]
            try:
                if topic.startswith(EVENT_PREFIX):
                    e = pb.Event.FromString(payload)
                    self._enqueue(Event(EventKind(e.kind), e.client, e.room, e.seq, e.user))
                elif topic.startswith(ROOM_PREFIX):
                    frame = json.loads(payload)
                    body = frame.get("message_body")
                    self._enqueue(RoomMessage(topic[len(ROOM_PREFIX):].decode(), str(frame.get("action")),
                                              str(frame.get("sender", "")),
                                              body if isinstance(body, dict) else {}))
            except Exception:  # noqa: BLE001 - one bad message must not stop observing
                log.exception("undecodable observed message")

    # ------------------------------------------------------------ what comes in

    def dispatch(self, frames: list[bytes]) -> None:
        """One message from the processor (the receiving task's; tests feed it by hand)."""
        got = wp.decode(frames)
        if isinstance(got, pb.Reply):
            self._reply(got)
        elif isinstance(got, Message):
            self.acks.received(got.seq)
            self._enqueue(got)
        elif isinstance(got, Event):
            if self.observe:
                return  # an observer's events come from the outbound socket, all rooms
            self._enqueue(got)
        elif isinstance(got, wp.Welcome):
            self._welcome(got)
        else:
            log.error("undecodable message from processor")

    def _reply(self, r: pb.Reply) -> None:
        future = self.pending.pop(r.id, None) if r.id else None
        if r.error == ErrorCode.UNKNOWN_WATCHER.value:
            self.hello()  # the processor restarted and forgot us (the command was not applied)
        elif r.error and r.id == 0:  # hello refused: the heartbeat task says hello again later
            log.error("hello refused", extra={"fields": {"code": r.error, "message": r.message}})
        if future is not None:
            self._resolve(future, r)

    def _welcome(self, welcome: wp.Welcome) -> None:
        self.welcomed = True
        self.silent = False
        if welcome.epoch != self.epoch:
            self.acks.reset()  # a new processor numbers its frames from 1 again
        self.epoch = welcome.epoch
        self.rooms = {r.name for r in welcome.rooms}
        self._welcomed.set()
        log.info("welcomed", extra={"fields": {"watcher": self.name, "epoch": self.epoch}})
        for fn in self.welcome_handlers:
            self._spawn(self._call(fn, welcome.rooms))

    def _enqueue(self, item: Message | Event | RoomMessage) -> None:
        if isinstance(item, Event):
            if item.kind is EventKind.ROOM_CREATED and not self.observe:
                self.rooms.add(item.room)
            elif item.kind is EventKind.ROOM_DELETED and not self.observe:
                self.rooms.discard(item.room)
        room = self._lane(item)
        lane = self.lanes.get(room)
        if lane is None:
            lane = self.lanes[room] = _Lane(deque())
        if len(lane.queue) >= self.room_queue:
            self._overflow(room, item)
            return
        lane.queue.append((self.acks.generation, item))
        if lane.task is None:
            lane.task = self._spawn(self._drain(room, lane))

    def _lane(self, item: Message | Event | RoomMessage) -> str:
        room = item.room or LOBBY  # the lobby's watcher gets the room-less client events
        if not isinstance(item, Message):
            return room
        lane_of = self.lane_of.get(item.action if item.action in self.handlers else "*")
        if lane_of is None:
            return room
        try:
            return str(lane_of(item))
        except Exception:  # a bug in the lane function (a body it did not expect): the room's
            suppressed = self._throttle.due("lane", time.monotonic())
            if suppressed is not None:  # a client can cause it at will: at most every 5 s
                log.exception("lane failed", extra={"fields": {
                    "action": obs.bounded(item.action, 80), "suppressed": suppressed}})
            return room

    def _overflow(self, room: str, item: Message | Event | RoomMessage) -> None:
        kind = "message" if isinstance(item, Message) else "event"
        obs.WATCHER_OVERFLOW.labels(kind).inc()
        if isinstance(item, Message):
            self.error(item, ErrorCode.RATE_LIMITED,
                       f"the room's watcher has {self.room_queue} frames waiting; this one was not processed")
            self.acks.done(item.seq, self.acks.generation)
        suppressed = self._throttle.due(f"overflow-{kind}", time.monotonic())
        if suppressed is not None:
            log.warning("room queue full", extra={"fields": {
                "watcher": self.name, "room": obs.bounded(room, 80), "kind": kind,
                "limit": self.room_queue, "suppressed": suppressed}})

    async def _drain(self, room: str, lane: _Lane) -> None:
        """A room's lane: its items one at a time, in order; the task ends when it is empty."""
        try:
            while lane.queue:
                generation, item = lane.queue.popleft()
                if isinstance(item, Message):
                    await self._handle(item, generation)
                elif isinstance(item, Event):
                    for fn in self.event_handlers.get(item.kind, ()):
                        await self._call(fn, item)
                else:
                    for fn in self.room_message_handlers:
                        await self._call(fn, item)
        finally:
            if self.lanes.get(room) is lane:
                del self.lanes[room]

    async def _handle(self, msg: Message, generation: int) -> None:
        handler = self.handlers.get(msg.action) or self.handlers.get("*")
        if handler is None:
            self.error(msg, ErrorCode.UNKNOWN_ACTION)
        elif await self._call(handler, msg) is _FAILED:
            self.error(msg, ErrorCode.WATCHER_ERROR)
        self.acks.done(msg.seq, generation)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A handler's exception is logged, never fatal: one bad frame must not stop a room."""
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception:
            log.exception("handler failed", extra={"fields": {"handler": getattr(fn, "__name__", "?")}})
            return _FAILED


_FAILED = object()
