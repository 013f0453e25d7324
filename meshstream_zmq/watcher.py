"""The Python watcher SDK: room logic as a few decorated handlers plus `run()`.

    from meshstream_zmq.watcher import Watcher

    bot = Watcher("dice", prefixes=["dice-"])

    @bot.on("roll")
    def roll(msg):
        bot.send_room(msg.room, "rolled", {"by": msg.client, "value": random.randint(1, 6)})

    bot.run()

A watcher is one DEALER socket to the processor's ROUTER (docs/watchers.md). The
loop is single-threaded: handlers, timers and replies never race, and nothing
ever waits for the processor. Every command is sent at once and returns a
`CommandFuture`; the loop resolves it when the reply arrives and then runs the
callbacks given to `add_done_callback`:

    @bot.on("where")
    def where(msg):
        def answer(reply):
            if reply.error is None:
                bot.send_clients([msg.client], "rooms", {"rooms": [r.name for r in reply.result()]})
        bot.client_rooms(msg.client).add_done_callback(answer)

Queries (`query_rooms`, `query_room`, `client_rooms`) are only useful that way.
A failed command whose future has no callback goes to `on_command_error` (which
logs it). A command with no reply within `reply_timeout` seconds (the processor
died meanwhile) fails with the code `timeout`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import zmq

from . import links
from . import meshstream_pb2 as pb
from . import watcher_protocol as wp
from .config import Config
from .core import EventKind
from .errors import CloseCode, ErrorCode
from .observability import bounded, process_stats
from .watcher_protocol import TIMEOUT, CommandError, Event, Message, RoomState

__all__ = ["TIMEOUT", "CommandError", "CommandFuture", "Event", "Message", "RoomState", "Timer",
           "Watcher"]

log = logging.getLogger("meshstream.watcher")


T = TypeVar("T")


class CommandFuture(Generic[T]):
    """The outcome of one command, resolved by the watcher's loop when its reply arrives.

    `add_done_callback(fn)` calls `fn(future)` from the loop once it is resolved (on
    the next loop turn if it already is), never from inside the caller. Then
    `error` is the `CommandError` or None, and `result()` the answer (a query's
    rooms) or raises that error.
    """

    __slots__ = ("id", "deadline", "error", "_value", "_done", "_callbacks", "_convert",
                 "_watcher")

    def __init__(self, watcher: Watcher, cmd_id: int, deadline: float,
                 convert: Callable[[pb.Reply], T]) -> None:
        self.id = cmd_id
        self.deadline = deadline
        self.error: CommandError | None = None
        self._value: T | None = None
        self._done = False
        self._callbacks: list[Callable[[CommandFuture[T]], Any]] = []
        self._convert = convert
        self._watcher = watcher

    def done(self) -> bool:
        return self._done

    def result(self) -> T:
        if not self._done:
            raise RuntimeError(f"command {self.id} has no reply yet: use add_done_callback")
        if self.error is not None:
            raise self.error
        return self._value  # type: ignore[return-value]  # None is the value of plain commands

    def add_done_callback(self, fn: Callable[[CommandFuture[T]], Any]) -> None:
        if self._done:
            self._watcher.call_later(0, fn, self)
        else:
            self._callbacks.append(fn)

    @property
    def watched(self) -> bool:
        """Whether a callback will see the outcome (else an error goes to on_command_error)."""
        return bool(self._callbacks)

    def _resolve(self, reply: pb.Reply) -> None:
        if reply.error:
            self.error = CommandError(reply.error, reply.message)
        else:
            try:
                self._value = self._convert(reply)
            except Exception as exc:  # noqa: BLE001 - a reply that does not fit: the caller's error
                self.error = CommandError("bad-reply", str(exc))
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            self._watcher._guard(fn, self)


class Timer:
    """A pending call; `cancel()` is safe to call any number of times."""

    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when, self.fn, self.args, self.cancelled = when, fn, args, False

    def cancel(self) -> None:
        self.cancelled = True


class Watcher:
    def __init__(self, name: str, *, rooms: Iterable[str] = (), prefixes: Iterable[str] = (),
                 config: Config | None = None, endpoint: str | None = None,
                 context: zmq.Context | None = None, reply_timeout: float = 10.0) -> None:
        self.name = name
        self.rooms = list(rooms)
        # rooms a create_room(watcher=this) gave us and that we still run: taken again by
        # name in every hello (after a processor restart or failover)
        self.assigned: list[str] = []
        self.prefixes = list(prefixes)
        self.config = config or Config.from_env()
        # The processors' ROUTER endpoints: with a pair (--peer) two, tried in turn when the
        # one we talk to falls silent (docs/watchers.md, "A processor pair").
        self.endpoints = [endpoint] if endpoint else [ep.watchers for ep in self.config.processors]
        self.endpoint = self.endpoints[0]
        self.ctx = context or zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.handlers: dict[str, Callable[[Message], Any]] = {}
        self.event_handlers: dict[EventKind, list[Callable[[Event], Any]]] = {}
        self.welcome_handlers: list[Callable[[list[RoomState]], Any]] = []
        self.timers: list[tuple[float, int, Timer]] = []
        self.ids = itertools.count(1)
        self.timer_ids = itertools.count()
        self.reply_timeout = reply_timeout
        self.pending: dict[int, CommandFuture[Any]] = {}  # by id, so oldest first
        self.running = False
        self.welcomed = False
        self.epoch = ""
        self.handled = 0  # seq of the last client frame handled, acknowledged in heartbeats
        self.last_heard = 0.0  # when the processor last sent anything (monotonic)
        # The processor went silent (peer timeout) and has not welcomed us again: commands
        # fail at once with processor-unavailable instead of queueing for a processor that
        # would not apply them (see docs/watchers.md, "When the processor goes silent").
        self.silent = False

    # ------------------------------------------------------------ registration

    def on(self, action: str) -> Callable[[Callable[[Message], Any]], Callable[[Message], Any]]:
        """Handle client frames with this action ("*": any action without its own handler)."""
        def register(fn: Callable[[Message], Any]) -> Callable[[Message], Any]:
            self.handlers[action] = fn
            return fn
        return register

    def on_event(self, kind: EventKind) -> Callable[[Callable[[Event], Any]], Callable[[Event], Any]]:
        def register(fn: Callable[[Event], Any]) -> Callable[[Event], Any]:
            self.event_handlers.setdefault(kind, []).append(fn)
            return fn
        return register

    def on_welcome(self, fn: Callable[[list[RoomState]], Any]) -> Callable[[list[RoomState]], Any]:
        """Called after every (re)connection with the state of the claimed rooms."""
        self.welcome_handlers.append(fn)
        return fn

    def on_command_error(self, command: int, code: str, message: str) -> None:
        """Override to react to a failed command whose future has no callback; the default
        logs it."""
        log.warning("command failed", extra={"fields": {"id": command, "code": code,
                                                         "message": bounded(message)}})

    # ------------------------------------------------------------ commands

    def _send(self, payload: bytes) -> bool:
        assert self.sock is not None, "connect() or run() first"
        try:
            self.sock.send_multipart([wp.TOPIC, payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            log.error("processor not reachable; command dropped")
            return False
        return True

    def _command(self, op: wp.Op[T]) -> CommandFuture[T]:
        cmd_id = next(self.ids)
        future = CommandFuture(self, cmd_id, self.now() + self.reply_timeout, op.convert)
        if not self.silent and self._send(wp.command(cmd_id, op)):
            self.pending[cmd_id] = future
        else:  # failed, but only from the loop: callbacks are not added yet
            why = "the processor is silent" if self.silent else "the send queue is full"
            self.call_later(0, future._resolve, wp.not_sent(cmd_id, why))
        return future

    def send_room(self, room: str, action: str, body: Mapping[str, Any] | None = None, *,
                  sender: str = "", exclude: Iterable[str] = (), target: str = "") -> CommandFuture[None]:
        """Send to every member of `room` (minus `exclude`); the JSON is encoded once."""
        return self._command(wp.send_room(room, action, body, sender=sender, exclude=exclude,
                                          target=target))

    def send_clients(self, clients: Iterable[str], action: str,
                     body: Mapping[str, Any] | None = None, *, sender: str = "", target: str = "",
                     is_target_client: bool = False) -> CommandFuture[None]:
        return self._command(wp.send_clients(clients, action, body, sender=sender, target=target,
                                             is_target_client=is_target_client))

    def error(self, msg: Message, code: ErrorCode, detail: str = "") -> CommandFuture[None]:
        """Answer a client frame with an error frame (its id echoed)."""
        return self._command(wp.error(msg, code, detail))

    def join(self, client: str, room: str, request_id: bytes = b"") -> CommandFuture[None]:
        """Put `client` in `room`; in an unclaimed room the joiner's `client-joined-room`
        carries `request_id` (a client frame's `Message.request_id`)."""
        return self._command(wp.join(client, room, request_id))

    def remove(self, client: str, room: str) -> CommandFuture[None]:
        return self._command(wp.remove(client, room))

    def create_room(self, room: str, *, watcher: str = "",
                    settings: Mapping[str, str] | None = None) -> CommandFuture[None]:
        return self._command(wp.create_room(room, watcher=watcher, settings=settings))

    def delete_room(self, room: str) -> CommandFuture[None]:
        return self._command(wp.delete_room(room))

    def disconnect(self, client: str, code: int = CloseCode.DISCONNECTED,
                   reason: str = "") -> CommandFuture[None]:
        return self._command(wp.disconnect(client, code, reason))

    def settings(self, room: str, **values: str) -> CommandFuture[None]:
        return self._command(wp.settings(room, values))

    # Queries: the answer is the future's result (see the module docstring).

    def query_rooms(self) -> CommandFuture[list[RoomState]]:
        return self._command(wp.query_rooms())

    def query_room(self, room: str) -> CommandFuture[RoomState]:
        """Fails with `unknown-room` when there is no such room."""
        return self._command(wp.query_room(room))

    def client_rooms(self, client: str) -> CommandFuture[list[RoomState]]:
        """Fails with `unknown-client` when there is no such client."""
        return self._command(wp.client_rooms(client))

    # ------------------------------------------------------------ timers

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        timer = Timer(self.now() + max(0.0, delay), fn, args)
        heapq.heappush(self.timers, (timer.when, next(self.timer_ids), timer))
        return timer

    def _run_timers(self) -> None:
        now = self.now()
        while self.timers and self.timers[0][0] <= now:
            _, _, timer = heapq.heappop(self.timers)
            if not timer.cancelled:
                timer.cancelled = True
                self._guard(timer.fn, *timer.args)
        if len(self.timers) > 64 and sum(t.cancelled for _, _, t in self.timers) > len(self.timers) // 2:
            self.timers = [t for t in self.timers if not t[2].cancelled]  # cancelled ones don't pile up
            heapq.heapify(self.timers)

    # ------------------------------------------------------------ loop

    def connect(self) -> None:
        # A DEALER; with keys_dir a CURVE client with this watcher's own key (links.py)
        self.sock = links.watcher_socket(self.ctx, self.config, self.name, self.endpoint)
        self.last_heard = self.now()  # silence is counted from here
        self.hello()

    def hello(self) -> None:
        self.welcomed = False
        self._send(wp.hello(self.name, self.rooms, self.prefixes, self.assigned))

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A handler's exception is logged, never fatal: one bad frame must not stop a room."""
        try:
            return fn(*args)
        except Exception:
            log.exception("handler failed", extra={"fields": {"handler": getattr(fn, "__name__", "?")}})
            return _FAILED

    def dispatch(self, frames: list[bytes]) -> None:
        got = wp.decode(frames)
        if isinstance(got, Message):
            handler = self.handlers.get(got.action) or self.handlers.get("*")
            if handler is None:
                self.error(got, ErrorCode.UNKNOWN_ACTION)
            elif self._guard(handler, got) is _FAILED:
                self.error(got, ErrorCode.WATCHER_ERROR)
            self.handled = got.seq
        elif isinstance(got, Event):
            for fn in self.event_handlers.get(got.kind, ()):
                self._guard(fn, got)
        elif isinstance(got, wp.Welcome):
            self.welcomed = True
            self.silent = False
            self.last_heard = self.now()
            if got.epoch != self.epoch:
                self.handled = 0  # a new processor numbers its frames from 1 again
            self.epoch = got.epoch
            log.info("welcomed", extra={"fields": {"watcher": self.name, "epoch": self.epoch}})
            for welcome_fn in self.welcome_handlers:
                self._guard(welcome_fn, got.rooms)
        elif isinstance(got, pb.Reply):
            self._reply(got)
        else:
            log.error("undecodable message from processor")

    def _reply(self, r: pb.Reply) -> None:
        future = self.pending.pop(r.id, None) if r.id else None
        if r.error == ErrorCode.UNKNOWN_WATCHER.value:
            self.hello()  # the processor restarted and forgot us (the command was not applied)
        elif r.error and r.id == 0:  # hello refused: the loop says hello again later
            log.error("hello refused", extra={"fields": {"code": r.error, "message": r.message}})
        elif r.error and (future is None or not future.watched):
            self.on_command_error(r.id, r.error, r.message)
        if future is not None:
            future._resolve(r)

    def _expire(self) -> None:
        """Fail the commands whose reply is overdue (lost with a processor that died)."""
        now = self.now()
        while self.pending:
            future = next(iter(self.pending.values()))
            if future.deadline > now:
                break
            self._reply(wp.timed_out(future.id, self.reply_timeout))

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Serve until stop() (or `until()` is true)."""
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        self.running = True
        interval = self.config.heartbeat
        next_beat = self.now() + interval
        while self.running and not (until and until()):
            now = self.now()
            if now >= next_beat:
                self._expire()
                if now - self.last_heard > self.config.processor_silence:
                    if self.welcomed:
                        self._processor_silent(now)
                    if len(self.endpoints) > 1:
                        self._switch_processor()
                # Heartbeats once welcomed; until then, hello again now and then (the
                # processor may be starting, or a claim was refused).
                if self.welcomed:
                    stats = process_stats("watcher", self.config.restarts)  # for /admin
                    self._send(wp.heartbeat(self.handled, stats))
                    next_beat = now + interval
                else:
                    self.hello()
                    next_beat = now + (interval if len(self.endpoints) > 1 else max(2.0, interval))
            wake = min([next_beat] + [t[0] for t in self.timers[:1]])
            if self.sock.poll(int(max(0.0, wake - self.now()) * 1000)):
                for _ in range(1000):
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.last_heard = self.now()
                    self.dispatch(frames)
            self._run_timers()
        self.close()

    def _processor_silent(self, now: float) -> None:
        """Nothing from the processor (not even the answers to our heartbeats) for the peer
        timeout: it died or restarts. Say hello again every 2 s until welcomed (the DEALER
        reconnects by itself); commands meanwhile fail at once (processor-unavailable);
        those already sent get their reply, `unknown-watcher` from a new processor, or
        `timeout`."""
        log.warning("processor silent; saying hello again", extra={"fields": {
            "watcher": self.name, "silent_s": round(now - self.last_heard, 1)}})
        self.silent = True
        self.welcomed = False

    def _switch_processor(self) -> None:
        """Talk to the other processor of the pair: a new DEALER to it (what was queued for
        the silent one is dropped with the old socket), then hello."""
        self.endpoint = self.endpoints[(self.endpoints.index(self.endpoint) + 1) % len(self.endpoints)]
        log.warning("trying the other processor", extra={"fields": {
            "watcher": self.name, "endpoint": self.endpoint}})
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = links.watcher_socket(self.ctx, self.config, self.name, self.endpoint)
        self.last_heard = self.now()

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        if self.sock is not None:
            if self.welcomed:  # release the claims now rather than after the peer timeout;
                # the frames handled so far are done (only later ones get watcher-restarted)
                self._send(wp.goodbye(self.handled))
            self.sock.close(linger=100)
            self.sock = None


_FAILED = object()
