"""An asyncio client for meshstream's WebSocket protocol (docs/protocol.md, docs/clients.md).

    async with await Client.connect("ws://localhost:8765/wsmesh", token=get_token) as c:
        await c.join("room1")
        await c.request("chat", "room1", {"text": "hi"})   # resolved by its own copy
        async for event in c:
            ...

What it does for you: a token on the upgrade (a string, or a callable asked again on
every reconnect and before the token expires, for the `refresh-token` action);
requests whose reply carries their `id` (an `error` reply raises `RequestError`, no
reply `TimeoutError`); frames the server joined with "\\n" split apart; and, when the
connection is lost, reconnection with exponential backoff and jitter that resumes the
session (`?resume=<secret>&positions=…`, its positions per room and for its direct
messages): same client ID, same rooms, every missed message once (a frame whose `offset`
is not above the last one of its stream's epoch is dropped). A refused resume
starts a new client and says so (`Connected.refused`). After a close that means "do not
come back" (a clean close, a close for cause, `resumed elsewhere`, a token refused) it
stops and says why.

The pure parts (`split_frames`, `Session`, `backoff`, `should_reconnect`,
`token_expiry`, `refresh_delay`) hold no socket and no clock, and are tested as such;
`Client` is the thin asyncio layer around them, on websockets' public asyncio API.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import itertools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

log = logging.getLogger("meshstream.client")

Frame = dict[str, Any]
TokenSource = str | Callable[[], str | Awaitable[str]]

# Close codes after which the session is kept, or the server asks to come back later:
# the client reconnects (resuming). Any other code ends the client: 1000 (a clean close),
# 1007/1008/1009/4000 (closed for cause: the session left with it), 4001 (a watcher
# disconnected it), 4002 (another connection resumed the session), 4003 (token refused).
RECONNECT_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
# HTTP statuses of a refused upgrade worth retrying: the processor is unreachable (503).
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_FRAME = 2**24


# ------------------------------------------------------------------ errors


class ClientError(Exception):
    """Base of every error this module raises."""


class RequestError(ClientError):
    """The server answered a request with an `error` frame (docs/protocol.md, Errors)."""

    def __init__(self, frame: Frame) -> None:
        body = frame.get("message_body") or {}
        self.code: str = str(body.get("code", ""))
        self.message: str = str(body.get("message", ""))
        self.frame = frame
        super().__init__(f"{self.code}: {self.message}")


class ConnectError(ClientError):
    """A connection was refused: an HTTP status (`status`), or a close before
    `client-connected` (`code` and `reason`, e.g. 4003 `bad-token`)."""

    def __init__(self, message: str, *, status: int = 0, code: int = 0, reason: str = "") -> None:
        self.status, self.code, self.reason = status, code, reason
        super().__init__(message)


class ConnectionLost(ClientError):
    """The connection a request was sent on was lost before its reply: it may or may not
    have been processed (replies are not replayed on resume)."""


class ClientClosed(ClientError):
    """The client is closed (by `close()`, or by the server for good: see `closed_by`)."""


# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class Connected:
    """A new client identity: the first connection, or a resume that was refused
    (`refused` holds the server's reason; rooms are gone: rejoin them)."""

    client: str
    user: str | None = None
    refused: str = ""


@dataclass(frozen=True, slots=True)
class Resumed:
    """The session was resumed: same client ID and rooms; missed messages follow."""

    client: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended; `reconnecting` says whether the client comes back."""

    code: int
    reason: str
    reconnecting: bool


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The next connection attempt (1, 2, …) starts in `delay` seconds."""

    attempt: int
    delay: float


@dataclass(frozen=True, slots=True)
class Message:
    """A frame from the server that is not the reply to one of your requests."""

    frame: Frame

    @property
    def action(self) -> str:
        return str(self.frame.get("action", ""))

    @property
    def body(self) -> Frame:
        body = self.frame.get("message_body")
        return body if isinstance(body, dict) else {}


@dataclass(frozen=True, slots=True)
class ServerError:
    """An `error` frame that answers no pending request (a frame sent with `send`, or the
    server's own, e.g. `messages-lost`), or a token refresh that failed."""

    code: str
    message: str
    frame: Frame


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    """The connection's token was replaced; `expires` is its new `exp` (None: none)."""

    expires: float | None


Event = Connected | Resumed | Disconnected | Reconnecting | Message | ServerError | TokenRefreshed


# ------------------------------------------------------------------ the pure parts


def split_frames(text: str) -> list[Frame]:
    """The JSON objects in one server text frame (several are joined by "\\n"; split on
    \\r?\\n). Raises ValueError on a line that is not a JSON object."""
    frames = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("a server frame line is not a JSON object")
        frames.append(obj)
    return frames


def backoff(attempt: int, base: float = 0.5, cap: float = 10.0,
            rand: Callable[[], float] = random.random) -> float:
    """Seconds before reconnect attempt `attempt` (0, 1, …): `base` doubling up to `cap`,
    ±50 % jitter so that the clients of one lost gateway do not all come back at once."""
    return min(cap, base * 2 ** min(max(0, attempt), 30)) * (0.5 + rand())


def should_reconnect(code: int) -> bool:
    """Whether a connection closed with `code` (1006: no close frame) is worth coming back to."""
    return code in RECONNECT_CODES


Outcome = Literal["fresh", "resumed", "refused"]


POSITIONS_BYTES = 6000  # of positions in a resume URL at most (a request line: 8 KiB)
MAX_POSITIONS = 1000  # streams whose position is kept (the least recently active forgotten)


@dataclass
class Session:
    """What resuming needs (docs/protocol.md, "Sessions and resume", "Positions"): the
    secret and the processor's epoch from `client-connected`, and per stream (named by its
    epoch: a room's, or the processor's for this client's direct messages) the offset of
    the last message received."""

    secret: str = ""
    epoch: str = ""  # the processor's: also the epoch of this client's direct messages
    # stream epoch -> offset of its last message received, the least recently active first
    positions: dict[str, int] = field(default_factory=dict)
    client: str = ""

    def accept(self, frame: Frame) -> bool:
        """False for a frame already received (its `offset` not above the last of its
        epoch's), else True, remembering its position. Frames without a position (replies,
        errors) always pass. A frame of another processor (its epoch's part before the
        first "." is not ours: a restart, or a standby took over) starts them all over."""
        offset, epoch = frame.get("offset"), frame.get("epoch")
        if not isinstance(offset, int) or isinstance(offset, bool) or not isinstance(epoch, str):
            return True
        processor = epoch.partition(".")[0]
        if processor != self.epoch:  # another processor took over: what we had of the old is gone
            self.epoch, self.positions = processor, {processor: 0}
        positions = self.positions
        last = positions.pop(epoch, None)  # put back last: the most recently active
        if last is not None and offset <= last:
            positions[epoch] = last
            return False
        if frame.get("action") == "client-left-room" and frame.get("sender") == self.client:
            return True  # we left that room: nothing more of it to resume
        positions[epoch] = offset
        if len(positions) > MAX_POSITIONS:
            del positions[next(iter(positions))]
        return True

    def connected(self, frame: Frame) -> Outcome:
        """A `client-connected` frame: a fresh client, the session resumed, or a resume
        refused (a new client: its positions start over)."""
        body = frame.get("message_body")
        body = body if isinstance(body, dict) else {}
        secret, epoch = body.get("session"), body.get("epoch")
        self.secret = secret if isinstance(secret, str) else ""
        self.client = str(frame.get("target", ""))
        if body.get("resumed") is True:
            return "resumed"  # the positions stand: the replay continues after them
        self.epoch = str(epoch) if epoch is not None else ""
        self.positions = {self.epoch: 0} if self.epoch else {}  # no direct message yet
        return "refused" if body.get("resumed") is False else "fresh"

    def url(self, base: str) -> str:
        """`base` with ?resume=<secret>&positions=<epoch>:<offset>,… (just `base` without a
        session): the direct messages' first, then the most recently active, within
        POSITIONS_BYTES (a stream left out is replayed from when the session went away)."""
        if not self.secret:
            return base
        parts = urlsplit(base)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k not in ("resume", "positions", "seq")]
        query.append(("resume", self.secret))
        order = sorted(reversed(self.positions.items()), key=lambda p: p[0] != self.epoch)
        named, size = [], 0
        for epoch, offset in order:
            text = f"{epoch}:{offset}"
            size += len(text) + 1
            if size > POSITIONS_BYTES:
                break
            named.append(text)
        if named:
            query.append(("positions", ",".join(named)))
        return urlunsplit(parts._replace(query=urlencode(query, safe=":,")))


def token_expiry(token: str) -> float | None:
    """A JWT's `exp` claim, read without checking the signature (the server checks it;
    the client only needs to know when to refresh). None when absent or unreadable."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


def refresh_delay(expires: float, now: float, lead: float = 60.0) -> float:
    """Seconds from `now` until a token expiring at `expires` should be refreshed: a fifth
    of its remaining life ahead of expiry (at least 1 s, at most `lead`), never negative."""
    left = expires - now
    return max(0.0, left - min(lead, max(1.0, left / 5)))


# ------------------------------------------------------------------ the client


@dataclass
class _Options:
    url: str
    token: TokenSource | None
    request_timeout: float
    open_timeout: float
    backoff_base: float
    backoff_max: float
    reconnect: bool
    queue_size: int
    headers: dict[str, str] = field(default_factory=dict)
    connect_kwargs: dict[str, Any] = field(default_factory=dict)


class Client:
    """A connected meshstream client. Make one with `await Client.connect(url, ...)`.

    Events (`Event`) are read with `async for event in client` (a bounded queue: while
    it is full the client stops reading, so read it, or pass `queue_size=0` to keep
    none) and/or given to callbacks registered with `on(callback)`.
    """

    def __init__(self, options: _Options) -> None:
        self._o = options
        self.session = Session()
        self.user: str | None = None
        self._ws: ClientConnection | None = None
        self._up = asyncio.Event()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._callbacks: list[Callable[[Event], Any]] = []
        self._handlers: set[asyncio.Future[Any]] = set()  # callbacks' coroutines still running
        # Unbounded, but the reader waits (stops reading) while it holds queue_size events.
        self._queue: asyncio.Queue[Event | None] | None = (
            asyncio.Queue() if options.queue_size else None)
        self._room = asyncio.Event()
        self._room.set()
        self._done = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._closing = False
        self.closed_by: Disconnected | None = None
        self._token = ""

    @classmethod
    async def connect(cls, url: str, *, token: TokenSource | None = None,
                      request_timeout: float = 10.0, open_timeout: float = 15.0,
                      reconnect: bool = True, backoff_base: float = 0.5,
                      backoff_max: float = 10.0, queue_size: int = 10_000,
                      on_event: Callable[[Event], Any] | None = None,
                      **connect_kwargs: Any) -> Client:
        """Connect to `url` (ws://HOST:PORT/wsmesh) and wait for `client-connected`.

        `token`: a JWT, or a callable (sync or async) returning one, called on every
        connection and before the token's `exp` to refresh it. Raises `ConnectError` when
        the server refuses the connection (e.g. code 4003, reason `bad-token`), OSError or
        TimeoutError when it cannot be reached. `connect_kwargs` go to
        `websockets.connect` (e.g. `ssl=`, `origin=`).
        """
        headers = dict(connect_kwargs.pop("additional_headers", None) or {})
        client = cls(_Options(url, token, request_timeout, open_timeout, backoff_base,
                              backoff_max, reconnect, queue_size, headers, connect_kwargs))
        if on_event is not None:
            client.on(on_event)
        ws = await client._open()
        client._runner = asyncio.create_task(client._run(ws))
        return client

    # -------------------------------------------------------------- public API

    @property
    def id(self) -> str:
        """The client ID (it changes only when a resume is refused)."""
        return self.session.client

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def on(self, callback: Callable[[Event], Any]) -> None:
        """Call `callback(event)` for every event (a coroutine function is scheduled)."""
        self._callbacks.append(callback)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        if self._queue is None:
            raise ClientError("no event queue (queue_size=0): use on(callback)")
        while True:
            event = await self._queue.get()
            if self._queue.qsize() < self._o.queue_size:
                self._room.set()
            if event is None:
                self._queue.put_nowait(None)  # every iterator ends
                return
            yield event

    async def send(self, action: str, target: str = "", body: Frame | None = None, *,
                   direct: bool = False) -> None:
        """Send a frame with no `id` (errors it causes come as `ServerError` events).
        `direct`: `target` is a client ID. Waits while the client is reconnecting."""
        await self._send(_frame(action, target, body, direct))

    async def send_to(self, client: str, action: str, body: Frame | None = None) -> None:
        """A direct message to the client `client`."""
        await self.send(action, client, body, direct=True)

    async def request(self, action: str, target: str = "", body: Frame | None = None, *,
                      direct: bool = False, timeout: float | None = None) -> Frame:
        """Send a frame with a fresh `id` and return the frame that carries it back.

        Raises `RequestError` when that frame is an `error`, `TimeoutError` when none comes
        within `timeout` (default `request_timeout`), `ConnectionLost` when the connection
        drops first. A relay's reply is your own copy of it; a direct message has none.
        """
        rid = next(self._ids)
        frame = _frame(action, target, body, direct)
        frame["id"] = rid
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        deadline = timeout if timeout is not None else self._o.request_timeout
        try:
            async with asyncio.timeout(deadline):
                await self._send(frame, future, rid)
                reply = await future
        finally:
            self._pending.pop(rid, None)
        if reply.get("action") == "error":
            raise RequestError(reply)
        return reply

    async def join(self, room: str, token: str | None = None, **kw: Any) -> Frame:
        """Join `room` (`token`: a room pass, for a `private-` room); its `client-joined-room`."""
        return await self.request("join-room", room, {"token": token} if token else None, **kw)

    async def leave(self, room: str, **kw: Any) -> Frame:
        """Leave `room`; its `client-left-room`."""
        return await self.request("leave-room", room, **kw)

    async def refresh_token(self, token: str | None = None) -> float | None:
        """Replace the connection's token now (`token`, or a new one from the token
        callable); returns its expiry. Raises `RequestError` (`bad-token`, `token-expired`)."""
        new = token if token is not None else await self._new_token()
        reply = await self.request("refresh-token", "", {"token": new})
        self._token = new
        expires = (reply.get("message_body") or {}).get("expires")
        return float(expires) if isinstance(expires, (int, float)) else None

    async def close(self) -> None:
        """Close cleanly (code 1000): the server removes the client from its rooms at once."""
        self._closing = True
        self._room.set()
        if self._ws is not None:
            await self._ws.close()
        elif self._runner is not None:
            self._runner.cancel()  # between connections: waiting to reconnect
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        self._finish()

    async def wait_closed(self) -> Disconnected | None:
        """Until the client stops for good; the close that stopped it (None: `close()`)."""
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._runner)
        return self.closed_by

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -------------------------------------------------------------- connection

    async def _new_token(self) -> str:
        source = self._o.token
        if source is None:
            raise ClientError("no token source")
        if isinstance(source, str):
            return source
        value = source()
        return await value if inspect.isawaitable(value) else value

    async def _open(self) -> ClientConnection:
        """One connection, up to its `client-connected` (a resume when there is a session)."""
        headers = dict(self._o.headers)
        if self._o.token is not None:
            self._token = await self._new_token()
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            ws = await websockets.connect(self.session.url(self._o.url), max_size=MAX_FRAME,
                                          open_timeout=self._o.open_timeout,
                                          additional_headers=headers, **self._o.connect_kwargs)
        except InvalidStatus as e:
            status = e.response.status_code
            raise ConnectError(f"upgrade refused: HTTP {status}", status=status) from e
        try:
            async with asyncio.timeout(self._o.open_timeout):
                first = split_frames(str(await ws.recv()))
        except ConnectionClosed as e:
            code, reason = ws.close_code or 1006, ws.close_reason or ""
            raise ConnectError(f"closed before client-connected: {code} {reason}",
                               code=code, reason=reason) from e
        except BaseException:
            await ws.close()
            raise
        hello = first[0] if first else {}
        if hello.get("action") != "client-connected":
            await ws.close()
            raise ConnectError("the server did not start with client-connected")
        self._ws = ws
        self._greeted(hello)
        self._up.set()
        for frame in first[1:]:
            self._dispatch(frame)
        return ws

    def _greeted(self, hello: Frame) -> None:
        outcome = self.session.connected(hello)
        body = hello.get("message_body") or {}
        user = body.get("user")
        self.user = user if isinstance(user, str) else None
        if outcome == "resumed":
            self._emit(Resumed(self.session.client))
        elif outcome == "refused":
            reason = body.get("reason")
            self._emit(Connected(self.session.client, self.user,
                                 reason if isinstance(reason, str) and reason else "refused"))
        else:
            self._emit(Connected(self.session.client, self.user))
        self._schedule_refresh()

    async def _run(self, ws: ClientConnection) -> None:
        """Read the connection; when it ends, reconnect (resuming) or stop for good."""
        try:
            while True:
                code, reason = await self._read(ws)
                self._lost()
                again = self._o.reconnect and not self._closing and should_reconnect(code)
                event = Disconnected(code, reason, again)
                self._emit(event)
                if not again:
                    self.closed_by = None if self._closing else event
                    return
                opened = await self._reconnect(event)
                if opened is None:
                    return
                ws = opened
        finally:
            self._finish()

    async def _read(self, ws: ClientConnection) -> tuple[int, str]:
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue  # the server sends text only
                try:
                    frames = split_frames(raw)
                except ValueError:
                    continue  # not the server's: never raised by a meshstream gateway
                for frame in frames:
                    self._dispatch(frame)
                if (self._queue is not None and not self._closing
                        and self._queue.qsize() >= self._o.queue_size):
                    self._room.clear()  # read on when the application has caught up
                    await self._room.wait()
        except ConnectionClosed:
            pass
        return ws.close_code or 1006, ws.close_reason or ""

    async def _reconnect(self, why: Disconnected) -> ClientConnection | None:
        """Attempt after attempt with backoff; None when the client is to stop."""
        attempt = 0
        while not self._closing:
            delay = backoff(attempt, self._o.backoff_base, self._o.backoff_max)
            if attempt == 0 and why.code == 1012:
                delay = 0.0  # the gateway is restarting: resume at once, on another
            attempt += 1
            self._emit(Reconnecting(attempt, delay))
            await asyncio.sleep(delay)
            if self._closing:
                return None
            try:
                return await self._open()
            except ConnectError as e:
                if e.status in RETRY_STATUSES or (e.code and should_reconnect(e.code)):
                    continue
                self.closed_by = Disconnected(e.code or e.status, e.reason, False)
                self._emit(self.closed_by)
                return None
            except (OSError, TimeoutError, InvalidHandshake):
                continue
        return None

    def _lost(self) -> None:
        self._up.clear()
        self._ws = None
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost("the connection was lost before the reply"))
        self._pending.clear()

    def _finish(self) -> None:
        if self._done.is_set():
            return
        self._done.set()
        self._closing = True
        self._lost()
        if self._queue is not None:
            self._queue.put_nowait(None)

    async def _send(self, frame: Frame, future: asyncio.Future[Frame] | None = None,
                    rid: int = 0) -> None:
        text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
        while True:
            if self._done.is_set() or self._closing:
                raise ClientClosed("the client is closed")
            ws = self._ws
            if ws is None or not self._up.is_set():
                await self._until_up_or_done()
                continue
            if future is not None:
                self._pending[rid] = future
            try:
                await ws.send(text)
            except ConnectionClosed:
                self._pending.pop(rid, None)
                if future is not None:
                    raise ConnectionLost("the connection was lost while sending") from None
                continue  # not sent: send it on the next connection
            return

    async def _until_up_or_done(self) -> None:
        waits = {asyncio.ensure_future(self._up.wait()), asyncio.ensure_future(self._done.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # -------------------------------------------------------------- frames and events

    def _dispatch(self, frame: Frame) -> None:
        if not self.session.accept(frame):
            return  # already received (a replay overlapping what came before the loss)
        rid = frame.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            future = self._pending.pop(rid, None)
            if future is not None and not future.done():
                future.set_result(frame)
                return
        if frame.get("action") == "error":
            body = frame.get("message_body") or {}
            self._emit(ServerError(str(body.get("code", "")), str(body.get("message", "")), frame))
        else:
            self._emit(Message(frame))

    def _emit(self, event: Event) -> None:
        """To every callback, then the queue. A callback that raises (or whose coroutine
        does) is logged and the others, and the reader, go on: one bad handler must not
        stop the connection."""
        for callback in self._callbacks:
            try:
                result = callback(event)
            except Exception:
                log.exception("an event callback raised")
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._handlers.add(task)
                task.add_done_callback(self._handler_done)
        if self._queue is not None:
            self._queue.put_nowait(event)

    def _handler_done(self, task: asyncio.Future[Any]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("an event callback raised", exc_info=task.exception())

    # -------------------------------------------------------------- token refresh

    def _schedule_refresh(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        if self._o.token is None or isinstance(self._o.token, str):
            return
        expires = token_expiry(self._token)
        if expires is not None:
            self._refresher = asyncio.create_task(self._refresh_at(expires))

    async def _refresh_at(self, expires: float) -> None:
        while True:
            await asyncio.sleep(refresh_delay(expires, time.time()))
            try:
                new_expiry = await self.refresh_token()
            except RequestError as e:
                self._emit(ServerError(e.code, e.message, e.frame))
                return
            except (ClientError, TimeoutError):
                return  # the connection went: the next one brings a new token
            self._emit(TokenRefreshed(new_expiry))
            if new_expiry is None:
                return
            expires = new_expiry


def _frame(action: str, target: str, body: Frame | None, direct: bool) -> Frame:
    frame: Frame = {"action": action, "target": target}
    if body:
        frame["message_body"] = body
    if direct:
        frame["IsTargetClient"] = True
    return frame
