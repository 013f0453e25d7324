"""A gateway: terminates WebSockets and speaks ZeroMQ to the processor.

A thin adapter around the pure `meshstream_zmq.gateway.Gateway` core, which makes
every decision (batching, the membership mirror, fan-out, the processor link, rate
limits, keepalive). This module only moves bytes and calls:

- each TCP connection is a `ClientProtocol` (an `asyncio.Protocol`) driving
  websockets' sans-I/O `ServerProtocol` through its public API: bytes in with
  `receive_data`, `events_received` out, `data_to_send` written to the transport;
- `GatewayServer` owns the ZeroMQ sockets (PUSH to the processor, SUB for its own
  topic and the processor's beats), the listening socket (SO_REUSEPORT: many
  gateways share one port; TLS with `--tls-cert`/`--tls-key`), the heartbeat and
  keepalive timers, static HTTP, and carries out what the core asks through its
  `GatewayOutbox` methods. It reads the client's token from the upgrade request
  (`Authorization: Bearer`, else `?token=`) and gives the core the verifier
  (`auth.Tokens` with the wall clock) and the time.

The event loop never blocks on ZeroMQ: every send is NOBLOCK with a policy for
EAGAIN, and the SUB socket is read from the loop's reader callback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import http
import json
import logging
import mimetypes
import os
import re
import signal
import ssl
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, cast

import zmq
from websockets.datastructures import Headers
from websockets.exceptions import RequestLineTooLong, SecurityError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from meshstream_zmq import api, links, new_epoch
from meshstream_zmq import keys as keyfiles
from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq import observability as obs
from meshstream_zmq.admin import PROXY_HEADERS, Guesses, feed_origin
from meshstream_zmq.admin import access as admin_access
from meshstream_zmq.aio import AsyncWatcher, CommandError
from meshstream_zmq.auth import TokenKeyError, Tokens
from meshstream_zmq.config import Config
from meshstream_zmq.errors import CloseCode, ErrorCode
from meshstream_zmq.gateway import KEEPALIVE_TICK, Connection, Gateway, Link, Resume, parse_resume
from meshstream_zmq.watcher_protocol import Op

log = logging.getLogger("meshstream.gateway")
WS_LOG = logging.getLogger("websockets.server")  # one logger for every ServerProtocol

DRAIN = 1000  # SUB messages read before letting the clients' callbacks run
PATH = "/wsmesh"
PAIR_ROLES = ("primary", "backup")  # config.processors' order: --tcp, then --peer
CLIENT_DIR = (Path(__file__).resolve().parent.parent / "clients" / "js").resolve()
ADMIN_DIR = (Path(__file__).resolve().parent.parent / "web").resolve()  # admin.html/.js/.css
OPENAPI_FILE = Path(__file__).resolve().parent.parent / "docs" / "api.openapi.json"
ADMIN_WS = "/admin/ws"
ADMIN_PUSH = 1.0  # seconds between two snapshots pushed to the admin page's viewers
ADMIN_VIEWERS = 16  # admin WebSockets per gateway; more are refused (503)
OPEN_TIMEOUT = 10.0  # a connection that has not completed its handshake by then is dropped
CLOSE_TIMEOUT = 2.0  # a closing handshake the client does not finish by then: the TCP link is cut
PING_DATA = b"meshstream"
# Request-head bytes held at once for all the connections still in their handshake (each
# at most --max-header-bytes); past it a connection's head is refused 503 (docs/security.md).
HANDSHAKE_BYTES = 64 * 2**20
TARGET = re.compile(r"/[\x21-\x7e]*")  # a request target we serve: a path (and query), printable ASCII
BAD_HTTP = frozenset({400, 405, 414, 431, 505})  # answers to a malformed or refused request: counted
HTTP_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")  # what websockets reads; another HTTP/ version: 505


class StartupError(Exception):
    """A setting the gateway cannot start with (a missing certificate, key or key file)."""


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server-side TLS context of `--tls-cert`/`--tls-key` (TLS 1.2 or later), or None."""
    if not config.tls_cert and not config.tls_key:
        return None
    if not (config.tls_cert and config.tls_key):
        raise StartupError("--tls-cert and --tls-key go together: give both or neither")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise StartupError(f"cannot load the TLS certificate {config.tls_cert!r} and key "
                           f"{config.tls_key!r}: {exc.strerror or exc}") from None
    return ctx


def client_tokens(config: Config) -> Tokens:
    try:
        return Tokens(config)
    except TokenKeyError as exc:
        raise StartupError(str(exc)) from None


def request_token(request: Request) -> str | None:
    """The connection token of an upgrade: `Authorization: Bearer T`, else `?token=T`
    (browsers cannot set headers). The header wins when both are given."""
    for value in request.headers.get_all("Authorization"):
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    query = request.path.partition("?")[2]
    if "token=" in query:  # the request line is at most 8 KiB (websockets' limit)
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if key == "token":
                return value
    return None


def request_resume(request: Request) -> Resume | None:
    """`/wsmesh?resume=<secret>&positions=…`: the session to resume, or None (a new client).
    A `seq=` (the one position before 2026-12) is ignored."""
    query = request.path.partition("?")[2]
    if "resume=" not in query:
        return None
    params: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        params.setdefault(key, value)  # the first of each wins, as for the token
    return parse_resume(params.get("resume"), params.get("positions"))


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented RFC 6455 text frame: what `ServerProtocol.send_text`
    writes for this payload with no extensions (tests/unit/test_gateway_wire.py checks
    it byte for byte). Built once for every member of a room with the same queue."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 0x10000:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class ClientProtocol(asyncio.Protocol):
    """One client's TCP connection: bytes to websockets' ServerProtocol, its events to the core.

    After every call into `ws` the bytes it produced are written at once
    (`send_data`), so `ws` never holds output across callbacks; fan-out frames
    from the core are then written after them, while `ws` is OPEN, as the
    complete text frames `ws.send_text` would have produced (see `text_frame`).

    `ws` is made only once the request head is complete: until then its bytes are held
    in `head` (at most `--max-header-bytes`, and HANDSHAKE_BYTES for all connections of
    the gateway). A ServerProtocol sits in a reference cycle (its parser is a generator
    of its own), which only the cyclic collector frees, and the gateway's collector runs
    rarely (`obs.tune_gc`): a handshake that never finished must leave nothing behind
    that waits for it; a plain buffer goes as soon as its connection does.
    """

    __slots__ = ("server", "transport", "head", "ws", "conn", "fragments", "timer", "viewing", "api",
                 "served")

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.head: bytearray | None = bytearray()  # the request head until `ws` has it, then None
        self.ws: ServerProtocol  # made by `head_received`
        self.conn: Connection | None = None
        self.fragments: list[bytes] | None = None  # a fragmented message being assembled
        self.timer: asyncio.TimerHandle | None = None  # the open or the close deadline
        self.viewing = False  # an admin page's WebSocket (/admin/ws), not a client
        # A server API request (/api/, never given to websockets): its head (None: being
        # refused), the body's length (-1: complete, being answered) and the body so far
        # (once complete: the bytes that came after it, the next request's).
        self.api: tuple[api.Head | None, int, bytearray] | None = None
        self.served = 0  # API requests answered on this connection (kept alive: api_answered)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        # Paused past the core's pace, so that resume_writing tells it when a paced write
        # (a resume's replay) may go on.
        self.transport.set_write_buffer_limits(high=self.server.core.pace)
        self.timer = self.server.loop.call_later(OPEN_TIMEOUT, self.abort)

    def data_received(self, data: bytes) -> None:
        if self.head is not None:
            self.head_received(data)
            return
        if self.api is not None:
            self.api_body(data)
            return
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if type(event) is Frame:
                self.frame(event)
        self.send_data()

    def head_received(self, data: bytes) -> None:
        """Bytes of the request head: held until its blank line, then given to a new `ws`
        alone (what follows it is read only if the connection was upgraded: a pipelined
        request never reaches websockets). Past `--max-header-bytes`: 431; past the
        gateway's HANDSHAKE_BYTES: 503."""
        head, server, transport = self.head, self.server, self.transport
        assert head is not None and transport is not None
        if not transport.is_reading():  # refused: nothing more is read
            return
        seen = len(head)
        head += data
        ends = [i + n for i, n in ((head.find(b"\n\r\n", max(0, seen - 3)), 3),
                                   (head.find(b"\n\n", max(0, seen - 1)), 2)) if i >= 0]
        end = min(ends, default=-1)  # just past the blank line, or -1: not yet
        limit = server.config.max_header_bytes
        if end > limit or (end < 0 and len(head) > limit):
            status = 431
        elif end < 0:
            if server.handshake_bytes + len(data) <= HANDSHAKE_BYTES:
                server.handshake_bytes += len(data)  # held, and counted, until the head is whole
                return
            status = 503
        else:
            status = 0
        server.handshake_bytes -= seen
        if status:
            head.clear()
            self.refuse(status, b"request head too large\n" if status == 431
                        else b"too many handshakes under way: try again later\n")
            return
        self.head = None
        if server.api_watcher is not None and api.is_api(bytes(head[:end])):  # the API's own
            self.api_head(bytes(head[:end]), head[end:])
            return
        self.ws = ws = ServerProtocol(max_size=server.config.max_frame, logger=WS_LOG)
        ws.receive_data(bytes(head[:end]))
        request = next((e for e in ws.events_received() if isinstance(e, Request)), None)
        if request is not None:
            self.request(request)
        elif isinstance(ws.handshake_exc, SecurityError):  # a line over 8 KiB, > 128 headers:
            # websockets answers 414 or 431 itself
            server.bad_http(414 if isinstance(ws.handshake_exc, RequestLineTooLong) else 431,
                            "", self.address())
        else:  # a request websockets cannot read: it only closes, we say why first
            version = bytes(head[:end]).split(b"\n", 1)[0].rstrip().rpartition(b" ")[2]
            status = 505 if version.startswith(b"HTTP/") and version not in HTTP_VERSIONS else 400
            transport.write(_response(status, b"bad request\n", "text/plain").serialize())
            server.bad_http(status, "", self.address())
        self.send_data()
        if len(head) > end and (self.conn is not None or self.viewing):
            self.data_received(bytes(head[end:]))  # frames sent right after the upgrade

    def eof_received(self) -> None:
        if self.head is not None or self.api is not None:  # no complete request (or an API
            return  # request being answered, which closes the connection itself)
        self.ws.receive_eof()
        self.send_data()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.head is not None:  # it never completed its handshake: no `ws`, no client
            self.server.handshake_bytes -= len(self.head)
            self.head.clear()
            return
        if self.api is not None:  # an API request: an answer on its way finds it closed
            self.api = None
            return
        self.ws.receive_eof()
        if self.conn is not None:
            ws = self.ws
            # Clean: the client started the closing handshake, or websockets closed it for a
            # fault of the client's (1007, 1009, a protocol error) - the core did not close it.
            clean = bool(ws.close_rcvd_then_sent) or (
                ws.close_sent is not None and not ws.close_rcvd_then_sent and not self.conn.closing)
            self.server.disconnected(self.conn, clean)
            self.conn = None
        if self.viewing:
            self.server.viewers.pop(self, None)

    # ------------------------------------------------------------ from the client

    def request(self, request: Request) -> None:
        """A whole request head: answered over HTTP (then the connection is closed), or
        upgraded to a client of the core or an admin viewer. A bug on the way answers 500
        and closes this connection, and the core keeps nothing of it (Gateway.connect)."""
        ws = self.ws
        peer = self.address()
        try:
            response = self.server.http_response(request, peer)
            if response is None:
                response = ws.accept(request)
            elif request.method == "HEAD":  # a GET's headers, Content-Length too, no body
                response = dataclasses.replace(response, body=b"")
            if response.status_code in BAD_HTTP:
                self.server.bad_http(response.status_code, request.path, peer)
            ws.send_response(response)
            if ws.state is State.OPEN:
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
                if request.path.split("?", 1)[0] == ADMIN_WS:  # not a client: the core never sees it
                    self.viewing = True
                    self.server.viewers[self] = ("", "")
                    return
                # None: refused, and already being closed (1013 or 4003) before any other frame;
                # the token is checked before a resume is asked for
                self.conn = self.server.core.connect(self, time.monotonic(), request_token(request),
                                                     peer, resume=request_resume(request))
        except Exception:
            ws.data_to_send()  # what `ws` has ready (a 101) is not sent
            self.refuse(500, b"internal error\n", request.path)

    def refuse(self, status: int, body: bytes, path: str = "") -> None:
        """Answer without `ws` (a head over a limit, or after a bug): the response, then the
        connection half-closed and no longer read; CLOSE_TIMEOUT later the link is cut. Not
        read, what the client still sends cannot delay or lose the answer (a close with
        unread data would reset the connection and could drop the response)."""
        self.server.bad_http(status, path, self.address())
        self.answer(_response(status, body, "text/plain"))

    def answer(self, response: Response) -> None:
        """Write a response without `ws`, and end the connection as `refuse` says."""
        transport = self.transport
        assert transport is not None
        if transport.is_closing():  # gone while its answer was being made
            return
        transport.write(response.serialize())
        transport.pause_reading()
        if transport.can_write_eof():
            transport.write_eof()
        else:  # TLS: close_notify, after the response
            transport.close()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(CLOSE_TIMEOUT, self.abort)

    def api_head(self, raw: bytes, rest: bytes | bytearray) -> None:
        """A server API request's head (docs/api.md): its key checked before its body is
        read (a guesser never makes us hold a body), then the body awaited."""
        server = self.server
        self.api = (None, -1, bytearray())
        h = api.head(raw)
        if isinstance(h, api.Failure):
            return self.api_answer(h.status, h.json())
        if h.path == api.OPENAPI and h.method in ("GET", "HEAD"):
            response = _response(200, openapi_document(), "application/json")
            return self.answer(dataclasses.replace(response, body=b"") if h.method == "HEAD"
                               else response)
        peer, now = self.address(), time.monotonic()
        if server.api_guesses.limited(peer, now):
            return self.api_answer(429, api.Failure.of(ErrorCode.RATE_LIMITED,
                                                       "too many wrong API keys: try again later").json(),
                                   [("Retry-After", str(server.api_guesses.retry_after(peer, now)))])
        ok = api.authorized(h, server.config.api_key)
        if not ok:
            if ok is False:  # a guess (no key at all is not one)
                server.api_guesses.failed(peer, now)
                server.client_fault("wrong api key", peer, path=h.path[:80])
            return self.api_answer(401, api.Failure.of(ErrorCode.BAD_API_KEY).json(),
                                   [("WWW-Authenticate", api.SCHEME)])
        length = api.body_length(h, server.config.api_max_body)
        if isinstance(length, api.Failure):
            return self.api_answer(length.status, length.json())
        self.api = (h, length, bytearray())
        self.api_body(rest)
        return None

    def api_body(self, data: bytes | bytearray) -> None:
        """Body bytes of an API request; once all are here, it is answered, and nothing more
        is read until then (bytes already here past the body wait for the answer: the next
        request of a kept connection is read after it, api_answered)."""
        assert self.api is not None and self.transport is not None
        h, length, body = self.api
        if h is None or length < 0:  # refused, or complete: what follows is not read
            return
        body += data  # past `length`: at most the one read that completed it
        if len(body) < length:
            return
        self.api = (h, -1, body[length:])
        self.transport.pause_reading()
        if self.timer is not None:  # complete in time: the processor's answer has its own
            self.timer.cancel()
            self.timer = None
        self.server.loop.create_task(self.server.api_request(self, h, bytes(body[:length])))

    def api_answered(self, h: api.Head, status: int, document: dict[str, Any]) -> None:
        """The answer to a whole API request (docs/api.md, "Connections"). HTTP/1.1
        keep-alive: the connection then waits for the next request as a new one would, for
        --api-idle-timeout s, unless the client asked to close, this was its MAX_REQUESTS-th
        request, the answer is a 500 or the gateway is stopping (then it closes)."""
        transport = self.transport
        assert transport is not None
        if transport.is_closing() or self.api is None:  # gone while its answer was being made
            return
        self.served += 1
        left = api.MAX_REQUESTS - self.served
        if status == 500 or left <= 0 or self.server.stopping or not api.keep_alive(h):
            return self.api_answer(status, document, head_only=h.method == "HEAD")
        idle = self.server.config.api_idle_timeout
        response = _response(status, api.encode(document), "application/json",
                             [("Keep-Alive", f"timeout={int(idle)}, max={left}")], connection="keep-alive")
        if h.method == "HEAD":  # a GET's headers, Content-Length too, no body
            response = dataclasses.replace(response, body=b"")
        transport.write(response.serialize())
        rest = self.api[2]
        self.api, self.head = None, bytearray()  # as a new connection: the next head
        self.timer = self.server.loop.call_later(idle, self.idle)
        transport.resume_reading()
        if rest:
            self.head_received(bytes(rest))
        return None

    def idle(self) -> None:
        """A kept API connection without a whole next request in time: closed."""
        self.timer = None
        if self.transport is not None:
            self.transport.close()

    def api_answer(self, status: int, document: dict[str, Any],
                   headers: list[tuple[str, str]] | None = None, head_only: bool = False) -> None:
        response = _response(status, api.encode(document), "application/json", headers)
        self.answer(dataclasses.replace(response, body=b"") if head_only else response)

    def address(self) -> str:
        """The client's IP address ("" if unknown)."""
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if peer else ""

    def frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.PONG:
            if self.conn is not None:
                self.server.core.pong(self.conn)
            return
        if opcode is not Opcode.TEXT and opcode is not Opcode.BINARY and opcode is not Opcode.CONT:
            return  # PING is answered and CLOSE echoed by `ws` itself
        if self.viewing:
            if opcode is Opcode.TEXT and frame.fin:
                self.server.admin_view(self, frame.data)
            return
        if self.conn is None or self.ws.state is not State.OPEN:
            return
        if opcode is not Opcode.CONT and frame.fin:  # a whole message in one frame: the usual case
            text = opcode is Opcode.TEXT
            data: bytes = frame.data if type(frame.data) is bytes else bytes(frame.data)
        else:  # `ws` checks the sequence of fragments and the total size
            if opcode is not Opcode.CONT:
                self.fragments = [b"t" if opcode is Opcode.TEXT else b"b"]
            fragments = self.fragments
            assert fragments is not None
            fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            self.fragments = None
            text = fragments[0] == b"t"
            data = b"".join(fragments[1:])
        message: str | bytes
        if text:
            try:
                message = str(data, "utf-8")
            except UnicodeDecodeError as exc:
                self.ws.fail(1007, f"{exc.reason} at position {exc.start}")
                return
        else:
            message = data
        try:
            self.server.core.client_frame(self.conn, message, time.monotonic())
        except Exception:
            # A bug handling one frame closes that connection (1011), not the gateway.
            log.exception("client frame failed")
            self.server.core.close(self.conn, CloseCode.INTERNAL_ERROR, "internal error")

    # ------------------------------------------------------------ to the client

    def resume_writing(self) -> None:
        """The transport has drained (below a quarter of the core's pace): a replay goes on."""
        if self.conn is not None:
            self.server.core.drained(self.conn)

    def send_data(self) -> None:
        transport = self.transport
        assert transport is not None
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            else:  # end of stream: half-close (the client closes), or close under TLS
                if transport.can_write_eof():
                    try:
                        transport.write_eof()
                    except Exception:  # noqa: BLE001 - already closing
                        pass
                else:
                    transport.close()
                if self.timer is None:
                    self.timer = self.server.loop.call_later(CLOSE_TIMEOUT, self.abort)

    def close(self, code: int, reason: str) -> None:
        ws = self.ws
        if ws.state is State.OPEN:
            ws.send_close(code, reason)
            self.send_data()
            if self.timer is None:
                self.timer = self.server.loop.call_later(CLOSE_TIMEOUT, self.abort)

    def ping(self) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_ping(PING_DATA)
            self.send_data()

    def send_admin(self, snapshot: bytes) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_text(snapshot)
            self.send_data()

    def abort(self) -> None:
        """No handshake in time, or a close the client did not finish: cut the TCP link."""
        self.timer = None
        if self.transport is not None:
            self.transport.abort()


class GatewayServer:
    """The gateway process: ZeroMQ, the listening socket and timers around the core.

    It is the core's `GatewayOutbox` too.
    """

    def __init__(self, config: Config, index: int, context: zmq.Context | None = None) -> None:
        self.config = config
        self.index = index
        self.loop = asyncio.get_running_loop()
        self.tls = tls_context(config)  # first: a bad setting stops us before any socket
        tokens = client_tokens(config)
        self.core = Gateway(f"gw{index}-{new_epoch()}", index, self, send_queue=config.send_queue,
                            rate_limit=config.rate_limit, rate_burst=config.rate_burst,
                            peer_timeout=config.processor_silence, pair=bool(config.peer),
                            max_connections=config.max_connections,
                            max_connections_per_ip=config.max_connections_per_ip,
                            allowed_origins=config.allowed_origins,
                            verify=(lambda token: tokens.connection(token, time.time()))
                            if tokens.enabled else None)
        self.id = self.core.id
        self.ready = asyncio.Event()  # welcomed: accept WebSockets
        self.drained = asyncio.Event()  # stopping, and every client has gone
        self.stopping = False
        self.close_code = CloseCode.SERVICE_RESTART  # for every client when stopping (run)
        # What plain GETs may read: the page (--web-dir) at /, the JavaScript client
        # library (clients/js) at /client/. Only files directly in these directories, read
        # once here (never from disk in the event loop): changes need a gateway restart.
        self.static = static_files({"/client/": CLIENT_DIR, "/": Path(config.resolved_web_dir)})
        self.last_payload = b""
        self.last_wire = b""
        # The admin page's viewers, each with the rooms view it asked for (search, cursor),
        # and the questions asked of the processor: query ID -> that view.
        self.viewers: dict[ClientProtocol, tuple[str, str]] = {}
        self.admin_queries: dict[int, tuple[str, str]] = {}
        self.admin_seq = 0
        self.guesses = Guesses()  # wrong admin tokens per address
        self.api_guesses = Guesses()  # wrong server API keys per address
        # The server API's channel to the processor (docs/api.md): a watcher claiming no rooms.
        self.api_watcher = (AsyncWatcher(f"api.{self.id}", config=config, key=keyfiles.API)
                            if config.api_key else None)
        self.handshake_bytes = 0  # request-head bytes held by connections in their handshake
        self.throttle = obs.Throttle()  # log lines caused by clients' bad requests

        ctx = context or zmq.Context.instance()
        # PUSH to the processor, SUB for its own topic and the beats (CURVE with keys_dir): links.py
        # One pair of sockets per processor (two with a standby: both connected from the start,
        # so a failover only changes which one is used).
        self.processors = [links.gateway_sockets(ctx, config, self.id, ep)
                           for ep in config.processors]
        self.current = 0
        self.push, self.sub = self.processors[0]
        obs.PROCESSOR.labels("primary").set(1)

    # ------------------------------------------------------------ the core's outbox

    def wake(self) -> None:
        self.loop.call_soon(self.core.flush)

    def push_batch(self, batch: bytes) -> bool:
        try:
            self.push.send_multipart([b"gateway", batch], flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def write(self, link: Any, payload: bytes) -> int:
        if link.ws.state is not State.OPEN:
            return -1
        if payload is not self.last_payload:
            self.last_wire = text_frame(payload)
            self.last_payload = payload
        transport = link.transport
        transport.write(self.last_wire)
        return int(transport.get_write_buffer_size())

    def close(self, link: Any, code: int, reason: str) -> None:
        link.close(code, reason)

    def ping(self, link: Any) -> None:
        link.ping()

    def notice(self, level: str, message: str, fields: dict[str, object]) -> None:
        log.log(logging.getLevelName(level.upper()), message, extra={"fields": fields})

    def admin_answer(self, query: int, answer: bytes) -> None:
        view = self.admin_queries.pop(query, None)
        for viewer, wanted in list(self.viewers.items()):
            if wanted == view:
                viewer.send_admin(answer)

    # ------------------------------------------------------------ the admin page

    def admin_view(self, viewer: ClientProtocol, data: bytes | bytearray | memoryview) -> None:
        """A viewer's `{"search": S, "after": C}`: the rooms it wants to see. Anything else
        is ignored (docs/operations.md); strings are cut to 64 characters by the processor."""
        try:
            asked = json.loads(bytes(data))
        except ValueError:
            return
        if isinstance(asked, dict):
            search, after = asked.get("search", ""), asked.get("after", "")
            if isinstance(search, str) and isinstance(after, str):
                self.viewers[viewer] = (search[:64], after[:64])
                self.ask_admin({(search[:64], after[:64])})

    def ask_admin(self, views: set[tuple[str, str]]) -> None:
        """One processor query per distinct view, whatever the number of viewers."""
        for view in views:
            self.admin_seq += 1
            self.admin_queries[self.admin_seq] = view
            self.core.admin_query(self.admin_seq, *view)
        for old in [q for q in self.admin_queries if q <= self.admin_seq - 4 * ADMIN_VIEWERS]:
            del self.admin_queries[old]  # unanswered (the processor was away)
        self.core.flush()

    async def admin_push(self) -> None:
        while True:
            await asyncio.sleep(ADMIN_PUSH)
            if self.viewers:
                self.ask_admin(set(self.viewers.values()))

    def admin_response(self, request: Request, path: str, peer: str) -> Response | None:
        """/admin (the page) and /admin/ws (its live feed), behind `access` (admin.py), with
        wrong tokens limited per address (`Guesses`: then 429 until one refills)."""
        headers = request.headers
        hosts = headers.get_all("Host")
        host = hosts[0] if len(hosts) == 1 else None  # none, or two: nobody's in particular
        now = time.monotonic()
        if self.guesses.limited(peer, now):
            return _response(429, b"too many wrong admin tokens: try again later\n", "text/plain",
                             [("Retry-After", str(self.guesses.retry_after(peer, now)))])
        presented = request_token(request)
        status = admin_access(self.config.admin_token, presented, peer, host,
                              proxied=any(name in headers for name in PROXY_HEADERS))
        if status == 401:
            if presented:  # a guess (a browser without a token is shown the form)
                self.guesses.failed(peer, now)
                self.client_fault("wrong admin token", peer)
            return _response(401, ADMIN_LOGIN, "text/html; charset=utf-8")
        if status != 200:
            return _response(403, b"without --admin-token the admin page answers this machine only "
                                  b"(a loopback address and Host, not through a proxy)\n",
                             "text/plain")
        if path == ADMIN_WS:
            # A page on another site must not read it with the operator's browser.
            if not feed_origin(headers.get_all("Origin"), host, self.core.origins):
                return _response(403, b"origin not allowed\n", "text/plain")
            if len(self.viewers) >= ADMIN_VIEWERS:
                return _response(503, b"too many admin viewers\n", "text/plain")
            return None
        if path == "/admin":
            return _response(200, admin_page(), "text/html; charset=utf-8")
        return _response(404, b"not found\n", "text/plain")

    # ------------------------------------------------------------ from the adapters

    def disconnected(self, conn: Connection, clean: bool = True) -> None:
        self.core.disconnect(conn, clean)
        if self.stopping and not self.core.conns and not self.core.waiting:
            self.drained.set()

    def switch_processor(self) -> None:
        obs.PROCESSOR.labels(PAIR_ROLES[self.current]).set(0)
        self.current = (self.current + 1) % len(self.processors)
        self.push, self.sub = self.processors[self.current]
        obs.PROCESSOR.labels(PAIR_ROLES[self.current]).set(1)

    def on_other_readable(self, sub: Any) -> None:
        """The processor we are not talking to: what it sends (an active one that has not
        yet found out about the other) is not for us, and dropped; but while waiting for a
        processor on a log (Link.WAIT) its beat may say it took over, and then its
        GatewayOuts are ours (of the same epoch they are the same from either)."""
        if sub is self.sub:
            return self.on_sub_readable()
        core = self.core
        for _ in range(DRAIN):
            if not sub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                break
            try:
                topic, payload = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:  # EVENTS promised a message not there (seen with CURVE)
                break
            if core.link is not Link.WAIT:
                continue
            if topic == b"processor":
                core.processor_beat(pb.ProcessorBeat.FromString(payload), time.monotonic(), other=True)
                if sub is self.sub:  # it took over: what follows is read as ours
                    self.loop.call_soon(self.on_sub_readable)
                    return None
            else:
                core.processor_out(pb.GatewayOut.FromString(payload))
        else:
            self.loop.call_soon(self.on_other_readable, sub)
        if core.dirty:
            core.flush()
        return None

    def on_sub_readable(self) -> None:
        # EVENTS before each read instead of reading until EAGAIN: at low rates most
        # wake-ups carry one message, and an exception per wake-up costs more than a
        # getsockopt. Reading until EVENTS has no POLLIN also re-arms the edge-triggered FD.
        sub = self.sub
        core = self.core
        for _ in range(DRAIN):
            if not sub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                break
            try:
                topic, payload = sub.recv_multipart(zmq.NOBLOCK)  # parts arrive together
            except zmq.Again:  # EVENTS promised a message not there (seen with CURVE)
                break
            if topic == b"processor":
                core.processor_beat(pb.ProcessorBeat.FromString(payload), time.monotonic())
            else:
                core.processor_out(pb.GatewayOut.FromString(payload))
        else:  # more than DRAIN waiting: let the clients' callbacks run, then go on
            self.loop.call_soon(self.on_sub_readable)
        if core.dirty:
            core.flush()
        if core.up and not self.ready.is_set():
            self.ready.set()

    # ------------------------------------------------------------ the server API

    async def api_request(self, link: ClientProtocol, h: api.Head, body: bytes) -> None:
        """A whole API request with the right key: its plan's commands sent together (the
        processor applies them in that order), their replies awaited, the answer written."""
        try:
            plan = api.route(h.method, h.path, h.query, body)
            if isinstance(plan, api.Failure):
                status, document = plan.status, plan.json()
            elif self.api_watcher is None or not self.api_watcher.welcomed:
                failure = api.Failure.of(ErrorCode.PROCESSOR_UNAVAILABLE,
                                         "the server API is not connected to the processor")
                status, document = failure.status, failure.json()
            else:
                watcher = self.api_watcher
                futures = [watcher.command(Op(fields, _reply)) for fields in plan.commands]
                outcomes: list[api.Outcome] = []
                for future in futures:
                    try:
                        outcomes.append(await future)
                    except CommandError as exc:
                        outcomes.append(api.Failure.of_reply(exc.code, exc.message))
                status, document = plan.answer(outcomes)
        except Exception:  # a bug answers 500 and closes this connection, nothing more
            self.bad_http(500, h.path, link.address())
            failure = api.Failure.of(ErrorCode.INTERNAL_ERROR)
            status, document = failure.status, failure.json()
        link.api_answered(h, status, document)

    # ------------------------------------------------------------ HTTP

    def http_response(self, request: Request, peer: str = "") -> Response | None:
        """The response to a plain HTTP request, or None to upgrade to a WebSocket. Only
        a path (`*`, `foo`, an absolute URL, a control character: 400); GET and HEAD
        only, but for the WebSocket paths, which websockets checks (405)."""
        if not TARGET.fullmatch(request.path):
            return _response(400, b"bad request target\n", "text/plain")
        path = request.path.split("?", 1)[0]
        if path not in (PATH, ADMIN_WS) and request.method not in ("GET", "HEAD"):
            return _response(405, b"method not allowed\n", "text/plain", [("Allow", "GET, HEAD")])
        if path == "/admin" or path.startswith("/admin/"):
            return self.admin_response(request, path, peer)
        if path == PATH:
            if not self.core.up:
                return _response(503, b"processor unavailable\n", "text/plain")
            if not self.core.origin_allowed(request.headers.get_all("Origin")):
                return _response(403, b"origin not allowed\n", "text/plain")
            return None
        if path == "/healthz":
            return self.health()
        return self.static_file(path)

    def bad_http(self, status: int, path: str, peer: str) -> None:
        """A request answered `status` for a fault of its own (400, 405, 414, 431, 505), for
        the gateway's handshake budget (503), or for a bug (500): counted in
        `meshstream_drops{reason}` and logged rate-limited (a bug with its traceback)."""
        reason = {500: "http-error", 503: "handshake-bytes"}.get(status, "bad-http")
        obs.DROPS.labels(reason).inc()
        self.client_fault("http request failed" if status == 500 else "bad http request", peer,
                          status=status, path=path[:80], exc_info=status == 500)

    def client_fault(self, message: str, peer: str, exc_info: bool = False, **fields: object) -> None:
        """A log line a client can cause at will: at most one per kind per Throttle interval,
        with the count of those left out since the last."""
        suppressed = self.throttle.due(message, time.monotonic())
        if suppressed is not None:
            log.log(logging.ERROR if exc_info else logging.WARNING, message, exc_info=exc_info,
                    extra={"fields": {"peer": peer, **fields, "suppressed": suppressed}})

    def health(self) -> Response:
        """200 "ok" while a processor serves this gateway, else 503; the second line names
        the processor it talks to (with a pair: primary or backup) and its epoch."""
        ok = self.core.up
        ep = self.config.processors[self.current]
        which = f"{PAIR_ROLES[self.current]} {ep.inbound}" if self.config.peer else ep.inbound
        body = (f"{'ok' if ok else 'processor unavailable'}\n"
                f"processor: {which} epoch {self.core.processor_epoch or '-'}\n")
        return _response(200 if ok else 503, body.encode(), "text/plain")

    def static_file(self, path: str) -> Response:
        """A file directly in one of the static directories (as read at start), or 404."""
        found = self.static.get(path)
        if found is None:
            return _response(404, b"not found\n", "text/plain")
        return _response(200, *found)

    # ------------------------------------------------------------ run

    def mark_ready(self) -> None:
        """Write this process's PID to the ready file, if the run directory exists."""
        target = ready_file(self.config.resolved_run_dir, self.index)
        if not target.parent.is_dir():
            return
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        try:
            tmp.write_text(f"{os.getpid()}\n")
            os.replace(tmp, target)
        except OSError as exc:
            log.warning("cannot write the ready file", extra={"fields": {"path": str(target),
                                                                          "error": str(exc)}})

    async def heartbeat(self) -> None:
        core = self.core
        reported = (0, 0)
        while True:
            core.heartbeat(time.monotonic(), obs.process_stats("gateway", self.config.restarts))
            obs.CONNECTIONS.set(len(core.conns))
            obs.FRAMES_IN.inc(core.frames_in - reported[0])
            obs.FRAMES_OUT.inc(core.frames_out - reported[1])
            reported = (core.frames_in, core.frames_out)
            for code, n in core.errors.items():
                obs.ERRORS.labels(code).inc(n)
            for close_code, n in core.closes.items():
                obs.CLOSES.labels(str(close_code)).inc(n)
            for reason, n in core.drops.items():
                obs.DROPS.labels(reason).inc(n)
            core.errors.clear()
            core.closes.clear()
            core.drops.clear()
            await asyncio.sleep(self.config.heartbeat)

    async def keepalive(self) -> None:
        core = self.core
        while True:
            await asyncio.sleep(KEEPALIVE_TICK)
            core.keepalive(time.monotonic())
            if core.expiries:
                core.expire_tokens(time.time())  # tokens expire in wall-clock time

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop`; then close every client with `close_code` (SIGTERM: 1012, a
        restart: resume on another gateway; SIGINT: 1001, stopped for good) and report them
        away to the processor, which keeps their sessions for the resume window."""
        loop = self.loop
        fds = [sub.getsockopt(zmq.FD) for _, sub in self.processors]
        for fd, (_, sub) in zip(fds, self.processors, strict=True):
            loop.add_reader(fd, self.on_other_readable, sub)
        beats = loop.create_task(self.heartbeat())
        admin = loop.create_task(self.admin_push())
        if self.api_watcher is not None:
            await self.api_watcher.start()
        loop.call_soon(self.on_sub_readable)
        try:
            # Wait until the processor knows us and our subscription is live, unless told to
            # stop first (SIGTERM before the welcome must not hang until the supervisor's SIGKILL).
            waits = [loop.create_task(self.ready.wait()), loop.create_task(stop.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
            if stop.is_set():
                return
            tls: dict[str, Any] = {} if self.tls is None else {
                "ssl": self.tls, "ssl_handshake_timeout": OPEN_TIMEOUT}
            server = await loop.create_server(lambda: ClientProtocol(self), self.config.host,
                                              self.config.port, reuse_port=True, backlog=4096, **tls)
            pinger = loop.create_task(self.keepalive())
            log.info("gateway ready", extra={"fields": {"gateway": self.id, "port": self.config.port,
                                                        "tls": self.tls is not None}})
            self.mark_ready()
            await stop.wait()
            server.close()
            self.stopping = True
            for viewer in list(self.viewers):
                viewer.close(1001, "gateway shutting down")
            if self.core.conns or self.core.waiting:
                code = self.close_code
                reason = ("gateway restarting" if code == CloseCode.SERVICE_RESTART
                          else "gateway shutting down")
                self.core.close_all(code, reason)
                try:
                    await asyncio.wait_for(self.drained.wait(), 3)
                except TimeoutError:
                    pass
            self.core.flush()  # the last `away` reports
            pinger.cancel()
        finally:
            beats.cancel()
            admin.cancel()
            if self.api_watcher is not None:
                await self.api_watcher.close()
            for fd in fds:
                loop.remove_reader(fd)
            for push, sub in self.processors:
                push.close(linger=500 if push is self.push else 0)  # the last batch, never a hang
                sub.close(linger=0)


def ready_file(run_dir: str, index: int) -> Path:
    """Where gateway `index` writes its PID once welcomed and listening: the supervisor's
    rolling restart waits for the replacement's PID there (a shared port's /healthz cannot
    tell one gateway from another)."""
    return Path(run_dir) / f"gateway-{index}.ready"


def _response(status: int, body: bytes, ctype: str,
              extra: list[tuple[str, str]] | None = None, connection: str = "close") -> Response:
    """A plain HTTP response. `Connection: close`: every answer but an upgrade and a kept
    server API connection's (ClientProtocol.api_answered) ends its connection (`ws`
    half-closes it), so a pipelined request is never read."""
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-cache"), ("Connection", connection), *(extra or [])])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


# The answer to /admin without the right token: the page asks for it, keeps it for the
# tab (sessionStorage), and comes back with ?token= (the page then drops it from the URL).
ADMIN_LOGIN = b"""<!doctype html><meta charset="utf-8"><title>meshstream admin</title>
<form id="f"><label>Admin token <input id="t" type="password" autofocus></label>
<button>Open</button></form><script>
const saved = sessionStorage.getItem("meshstream-admin-token");
const go = (t) => { sessionStorage.setItem("meshstream-admin-token", t);
  location.replace("/admin?token=" + encodeURIComponent(t)); };
if (saved && !location.search.includes("token=")) go(saved);
document.getElementById("f").onsubmit = (e) => {
  e.preventDefault(); go(document.getElementById("t").value); };
</script>
"""


def _reply(reply: pb.Reply) -> pb.Reply:
    return reply  # the API reads the whole reply (api.Plan.answer)


MAX_STATIC_FILE = 8 << 20  # bytes of one static file served at most (a bigger one: 404, logged)
MAX_STATIC_FILES = 1000  # files served from one static directory at most


def static_files(roots: dict[str, Path]) -> dict[str, tuple[bytes, str]]:
    """URL path -> (content, content type) of the regular files directly in each root
    (`prefix` + name; the prefix itself is its index.html), read once; a symlink only if it
    stays in its root. A file over MAX_STATIC_FILE, past MAX_STATIC_FILES, or unreadable is
    left out with a warning."""
    served: dict[str, tuple[bytes, str]] = {}
    for prefix, root in roots.items():
        try:
            root = root.resolve()
            files = sorted(f for f in root.iterdir() if f.resolve().parent == root and f.is_file())
        except OSError as exc:
            log.warning("static directory unreadable",
                        extra={"fields": {"dir": str(root), "error": str(exc)}})
            continue
        for n, file in enumerate(files):
            try:
                if n >= MAX_STATIC_FILES or file.stat().st_size > MAX_STATIC_FILE:
                    raise OSError("over the static files' bounds")
                content = file.read_bytes()
            except OSError as exc:
                log.warning("static file not served",
                            extra={"fields": {"file": str(file), "error": str(exc)}})
                continue
            ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype.endswith("javascript"):
                ctype += "; charset=utf-8"
            served[prefix + file.name] = (content, ctype)
            if file.name == "index.html":
                served[prefix] = served[prefix + file.name]
    return served


@functools.cache
def openapi_document() -> bytes:
    """docs/api.openapi.json, read once per process."""
    return OPENAPI_FILE.read_bytes()


@functools.cache
def admin_page() -> bytes:
    """web/admin.html with admin.css and admin.js inlined: one document behind one check.
    Built once per process (not three file reads in the event loop per request)."""
    html = (ADMIN_DIR / "admin.html").read_text()
    css = (ADMIN_DIR / "admin.css").read_text()
    js = (ADMIN_DIR / "admin.js").read_text()
    html = html.replace('<link rel="stylesheet" href="admin.css">', f"<style>\n{css}</style>")
    html = html.replace('<script src="admin.js"></script>', f"<script>\n{js}</script>")
    return html.encode()


async def amain(config: Config, index: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    server = GatewayServer(config, index)
    codes = {signal.SIGTERM: CloseCode.SERVICE_RESTART, signal.SIGINT: CloseCode.GOING_AWAY}

    def stopped(sig: signal.Signals) -> None:
        if not stop.is_set():
            server.close_code = codes[sig]  # the first signal chooses
            stop.set()

    for sig in codes:
        loop.add_signal_handler(sig, stopped, sig)
    await server.run(stop)


def main(config: Config, index: int) -> None:
    obs.setup(f"gateway {index}", config.log_level)
    try:
        tls_context(config)  # checked before anything starts (and again by GatewayServer)
        client_tokens(config)
    except StartupError as exc:
        log.error("gateway cannot start: %s", exc)
        sys.exit(2)
    obs.serve_metrics(config.metrics_port)
    obs.tune_gc()
    try:
        import uvloop

        uvloop.run(amain(config, index))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(amain(config, index))
