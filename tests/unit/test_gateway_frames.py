"""The gateway's per-connection adapter (services/gateway.py `ClientProtocol`), fed by
websockets' own sans-I/O *client*: real handshakes and frames, bytes in and out,
with an in-memory transport in place of the socket."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from websockets.client import ClientProtocol as WsClient
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config
from services.gateway import (
    ClientProtocol,
    GatewayServer,
    StartupError,
    request_token,
    text_frame,
    tls_context,
)


class Transport:
    """Records writes; closing is recorded, not performed."""

    def __init__(self, peer: str = "127.0.0.1") -> None:
        self.written = bytearray()
        self.closed = False
        self.eof = False
        self.peer = peer
        self.buffered = 0  # what get_write_buffer_size says
        self.high = 0  # the high-water mark asked for
        self.paused = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high or 0

    def is_reading(self) -> bool:
        return not self.paused

    def pause_reading(self) -> None:
        self.paused = True

    def get_extra_info(self, name: str) -> object:
        return (self.peer, 50000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Peer:
    """A WebSocket client speaking to one ClientProtocol through memory."""

    def __init__(self, server: GatewayServer, path: str = "/wsmesh",
                 headers: dict[str, str] | None = None, peer: str = "127.0.0.1") -> None:
        self.server = server
        self.proto = ClientProtocol(server)
        self.transport = Transport(peer)
        self.proto.connection_made(self.transport)  # type: ignore[arg-type]
        self.ws = WsClient(parse_uri("ws://localhost" + path))
        request = self.ws.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        self.send(self.ws.send_request(request))
        self.ws.receive_data(bytes(self.transport.written))  # the 101 (the greeting waits for a flush)
        self.transport.written.clear()
        self.early = [e for e in self.ws.events_received() if isinstance(e, Frame)]  # a prompt close

    def send(self, _: object = None) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.proto.data_received(data)

    def receive(self) -> list[Frame]:
        self.server.core.flush()
        data, self.transport.written = bytes(self.transport.written), bytearray()
        self.ws.receive_data(data)
        return [e for e in self.ws.events_received() if isinstance(e, Frame)]

    @property
    def client(self) -> str:
        assert self.proto.conn is not None
        return self.proto.conn.id

    def texts(self) -> list[str]:
        return [line for f in self.receive() if f.opcode is Opcode.TEXT
                for line in f.data.decode().split("\n")]


def make_server(config: Config) -> GatewayServer:
    srv = GatewayServer(config, 1)
    epoch = pb.Welcome(epoch="e1")
    srv.core.processor_out(pb.GatewayOut(seq=1, epoch="e1", ops=[pb.GatewayOp(welcome=epoch)]))
    return srv


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    srv = make_server(Config(run_dir=str(tmp_path), metrics_port=0))
    yield srv
    srv.push.close(linger=0)
    srv.sub.close(linger=0)


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    """A gateway with tokens (HS256), an Origin list and a per-address limit of 2."""
    srv = make_server(Config(run_dir=str(tmp_path), metrics_port=0, jwt_secret=SECRET,
                             allowed_origins="https://game.example", max_connections_per_ip=2))
    yield srv
    srv.push.close(linger=0)
    srv.sub.close(linger=0)


SECRET = "k" * 32


def token(sub: str = "ann", **claims: object) -> str:
    return jwt.encode({"sub": sub, **claims}, SECRET, algorithm="HS256")


async def test_the_handshake_then_the_greeting(server: GatewayServer) -> None:
    peer = Peer(server)
    assert peer.ws.state is State.OPEN
    assert '"action":"client-connected"' in peer.texts()[0]
    assert len(server.core.conns) == 1


async def test_whole_and_fragmented_text_messages_reach_the_core(server: GatewayServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | bytes] = []
    monkeypatch.setattr(server.core, "client_frame", lambda conn, msg, now: seen.append(msg))
    peer = Peer(server)
    peer.send(peer.ws.send_text(b'{"action":"a"}'))
    peer.send(peer.ws.send_text(b'{"action":', fin=False))
    peer.send(peer.ws.send_continuation("\u00e9".encode()[:1], fin=False))  # split inside a character
    peer.send(peer.ws.send_continuation("\u00e9".encode()[1:] + b'"}', fin=True))
    peer.send(peer.ws.send_binary(b"\x01\x02"))
    assert seen == ['{"action":"a"}', '{"action":\u00e9"}', b"\x01\x02"]


async def test_invalid_utf8_closes_with_1007(server: GatewayServer) -> None:
    peer = Peer(server)
    peer.texts()
    peer.send(peer.ws.send_text(b'{"action":"\xff"}'))
    peer.receive()
    assert peer.ws.close_rcvd is not None and peer.ws.close_rcvd.code == 1007


async def test_a_frame_over_the_limit_closes_with_1009(server: GatewayServer) -> None:
    peer = Peer(server)
    peer.send(peer.ws.send_text(b"x" * (server.config.max_frame + 1)))
    peer.receive()
    assert peer.ws.close_rcvd is not None and peer.ws.close_rcvd.code == 1009


async def test_a_handler_that_raises_closes_only_that_connection_with_1011(
        server: GatewayServer, monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = Peer(server), Peer(server)
    bad_conn = bad.proto.conn

    def client_frame(conn: object, message: str | bytes, now: float) -> None:
        if conn is bad_conn:
            raise RuntimeError("a bug")

    monkeypatch.setattr(server.core, "client_frame", client_frame)
    bad.send(bad.ws.send_text(b'{"action":"a"}'))
    good.send(good.ws.send_text(b'{"action":"a"}'))
    bad.receive()
    assert bad.ws.close_rcvd is not None
    assert (bad.ws.close_rcvd.code, bad.ws.close_rcvd.reason) == (1011, "internal error")
    good.receive()
    assert good.ws.state is State.OPEN


async def test_pings_are_answered_and_pongs_reach_the_core(server: GatewayServer) -> None:
    peer = Peer(server)
    peer.texts()
    peer.send(peer.ws.send_ping(b"hi"))
    assert [(f.opcode, f.data) for f in peer.receive()] == [(Opcode.PONG, b"hi")]
    conn = peer.proto.conn
    assert conn is not None
    server.core.keepalive_one(conn, conn.ping_at + 1e6)
    assert [f.opcode for f in peer.receive()] == [Opcode.PING] and conn.awaiting_pong
    peer.send()  # the client's automatic pong
    assert not conn.awaiting_pong


async def test_a_client_close_ends_the_connection_and_the_client(server: GatewayServer) -> None:
    peer = Peer(server)
    peer.send(peer.ws.send_close(1000, "bye"))
    peer.receive()
    assert peer.transport.eof  # the server half-closes after echoing the close
    peer.proto.connection_lost(None)
    assert not server.core.conns


async def test_plain_http_is_answered_and_not_upgraded(server: GatewayServer) -> None:
    proto = ClientProtocol(server)
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\nok\nprocessor: " in transport.written
    assert transport.eof and not server.core.conns
    proto.connection_lost(None)


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_fan_out_frames_are_what_send_text_would_write(n: int) -> None:
    ws = ServerProtocol(state=State.OPEN)
    payload = b"x" * n
    ws.send_text(payload)
    assert ws.data_to_send() == [text_frame(payload)]


async def test_the_idle_open_deadline_is_cancelled_by_the_handshake(server: GatewayServer) -> None:
    peer = Peer(server)
    assert peer.proto.timer is None
    lonely = ClientProtocol(server)
    lonely.connection_made(Transport())  # type: ignore[arg-type]
    assert isinstance(lonely.timer, asyncio.TimerHandle)
    lonely.connection_lost(None)
    assert lonely.timer is None


# ------------------------------------------------------------------ sessions: resume, clean and unclean ends

def reported(server: GatewayServer) -> list[tuple[str, str]]:
    """What the core will tell the processor at the next flush: (kind, client) for leaves."""
    out = []
    for item in server.core.batch.items:
        kind = item.WhichOneof("kind")
        if kind in ("disconnected", "away"):
            out.append((kind, getattr(item, kind)))
    return out


async def test_a_resume_is_held_silent_then_answered(server: GatewayServer) -> None:
    peer = Peer(server, "/wsmesh?resume=old%2Bsecret&positions=e1:41,e1.2:7,e1.5%3A0&seq=e1:99")
    [item] = [i for i in server.core.batch.items if i.WhichOneof("kind") == "resume"]
    assert item.resume.session_hash == hashlib.sha256(b"old+secret").digest()
    assert [(p.epoch, p.offset) for p in item.resume.positions] == [("e1", 41), ("e1.2", 7), ("e1.5", 0)]
    peer.send(peer.ws.send_text(b'{"action":"send-room","target":"r"}'))
    assert peer.receive() == [] and not server.core.conns
    result = pb.ResumeResult(link=item.resume.link, client="gw2-x.00", rooms=["r"], epoch="e1",
                             replay=[b'{"missed":1}'])
    server.core.processor_out(pb.GatewayOut(seq=2, epoch="e1", ops=[pb.GatewayOp(resumed=result)]))
    greeting, missed, answer = (json.loads(t) for t in peer.texts())
    assert greeting["message_body"]["resumed"] is True and greeting["target"] == "gw2-x.00"
    assert missed == {"missed": 1}
    # the frame held meanwhile went on after the replay (here: no processor to take it)
    assert (answer["action"], answer["message_body"]["code"]) == ("error", "processor-unavailable")


async def test_a_replay_waits_for_the_transport_to_drain(server: GatewayServer) -> None:
    peer = Peer(server, "/wsmesh?resume=s")
    assert peer.transport.high == server.core.pace  # paused past it: resume_writing follows
    [item] = [i for i in server.core.batch.items if i.WhichOneof("kind") == "resume"]
    big = [b'{"n":%d,"p":"%s"}' % (n, b"x" * 70_000) for n in range(3)]
    result = pb.ResumeResult(link=item.resume.link, client="gw2-x.00", epoch="e1", replay=big)
    peer.transport.buffered = server.core.pace + 1  # the client reads nothing
    server.core.processor_out(pb.GatewayOut(seq=2, epoch="e1", ops=[pb.GatewayOp(resumed=result)]))
    assert [json.loads(t)["action"] for t in peer.texts()] == ["client-connected"]
    peer.proto.resume_writing()  # it read a little: one more
    assert [json.loads(t)["n"] for t in peer.texts()] == [0]
    peer.transport.buffered = 0
    peer.proto.resume_writing()  # all of it
    assert [json.loads(t)["n"] for t in peer.texts()] == [1, 2]


async def test_a_resume_with_a_refused_token_is_never_asked_for(secure: GatewayServer) -> None:
    peer = Peer(secure, "/wsmesh?resume=s&token=nope")
    assert closed_with(peer) == (4003, "bad-token")
    assert not [i for i in secure.core.batch.items if i.WhichOneof("kind") == "resume"]


async def test_a_lost_connection_is_away_a_client_close_is_a_leave(server: GatewayServer) -> None:
    lost, closer = Peer(server), Peer(server)
    ids = lost.client, closer.client
    lost.texts(), closer.texts()
    closer.send(closer.ws.send_close(1000, "bye"))
    closer.receive()
    closer.proto.connection_lost(None)
    lost.proto.connection_lost(ConnectionResetError())  # no close frame: the network went
    assert reported(server) == [("disconnected", ids[1]), ("away", ids[0])]


async def test_a_restart_close_is_away_and_a_1009_is_a_leave(server: GatewayServer) -> None:
    restarted = Peer(server)
    restarted.texts()
    rid = restarted.client
    server.core.close_all(1012, "gateway restarting")
    restarted.receive()
    assert restarted.ws.close_rcvd is not None and restarted.ws.close_rcvd.code == 1012
    restarted.send()  # the client's echo
    restarted.proto.connection_lost(None)
    big = Peer(server)
    bid = big.client
    big.send(big.ws.send_text(b"x" * (server.config.max_frame + 1)))
    big.proto.connection_lost(None)
    assert reported(server) == [("away", rid), ("disconnected", bid)]


# ------------------------------------------------------------------ the edge: tokens, origins, limits

def closed_with(peer: Peer) -> tuple[int, str] | None:
    assert [f.opcode for f in peer.early + peer.receive()] == [Opcode.CLOSE]
    rcvd = peer.ws.close_rcvd
    return None if rcvd is None else (rcvd.code, rcvd.reason)


@pytest.mark.parametrize(("path", "headers", "expected"), [
    ("/wsmesh?token=abc", {}, "abc"),
    ("/wsmesh?x=1&token=a%2Bb&token=second", {}, "a+b"),
    ("/wsmesh", {"Authorization": "Bearer abc"}, "abc"),
    ("/wsmesh", {"Authorization": "bearer   abc "}, "abc"),
    ("/wsmesh?token=query", {"Authorization": "Bearer header"}, "header"),  # the header wins
    ("/wsmesh?token=query", {"Authorization": "Basic dXNlcjpwdw=="}, "query"),  # not ours
    ("/wsmesh?token=", {}, ""),
    ("/wsmesh?tokens=abc", {}, None),
    ("/wsmesh", {}, None),
])
def test_the_token_is_read_from_the_header_else_the_query(path: str, headers: dict[str, str],
                                                          expected: str | None) -> None:
    ws = WsClient(parse_uri("ws://localhost" + path))
    request = ws.connect()
    for name, value in headers.items():
        request.headers[name] = value
    assert request_token(request) == expected


async def test_a_good_token_greets_the_user(secure: GatewayServer) -> None:
    peer = Peer(secure, f"/wsmesh?token={token()}")
    greeting = json.loads(peer.texts()[0])
    assert greeting["action"] == "client-connected" and greeting["message_body"]["user"] == "ann"
    peer = Peer(secure, "/wsmesh", {"Authorization": f"Bearer {token('bob')}"})
    assert json.loads(peer.texts()[0])["message_body"]["user"] == "bob"


@pytest.mark.parametrize(("path", "reason"), [
    ("/wsmesh", "token-required"),
    ("/wsmesh?token=nope", "bad-token"),
    (f"/wsmesh?token={token(exp=1)}", "token-expired"),
])
async def test_a_refused_token_is_a_4003_close_and_nothing_else(secure: GatewayServer, path: str,
                                                               reason: str) -> None:
    peer = Peer(secure, path)
    assert peer.ws.state is State.CLOSING  # the upgrade succeeded, then the close at once
    frames = peer.early + peer.receive()
    assert [f.opcode for f in frames] == [Opcode.CLOSE]
    assert peer.ws.close_rcvd is not None
    assert (peer.ws.close_rcvd.code, peer.ws.close_rcvd.reason) == (4003, reason)
    assert not secure.core.conns and peer.proto.conn is None


async def test_another_origin_gets_403_and_the_allowed_one_upgrades(secure: GatewayServer) -> None:
    good = f"/wsmesh?token={token()}"
    refused = Peer(secure, good, {"Origin": "https://evil.example"})
    assert refused.ws.state is not State.OPEN
    assert refused.ws.handshake_exc is not None and "403" in str(refused.ws.handshake_exc)
    assert Peer(secure, good, {"Origin": "https://game.example"}).ws.state is State.OPEN
    assert Peer(secure, good).ws.state is State.OPEN  # no Origin: not a browser
    assert len(secure.core.conns) == 2


async def test_the_per_address_limit_closes_1013(secure: GatewayServer) -> None:
    good = f"/wsmesh?token={token()}"
    first = [Peer(secure, good, peer="10.1.1.1") for _ in range(2)]
    third = Peer(secure, good, peer="10.1.1.1")
    assert closed_with(third) == (1013, "too-many-connections")
    assert Peer(secure, good, peer="10.1.1.2").ws.state is State.OPEN
    first[0].proto.connection_lost(None)
    assert Peer(secure, good, peer="10.1.1.1").ws.state is State.OPEN


@pytest.mark.parametrize(("cert", "key", "message"), [
    ("missing.pem", "missing.key", "cannot load the TLS certificate"),
    ("cert.pem", "", "--tls-cert and --tls-key go together"),
    ("garbage.pem", "garbage.pem", "cannot load the TLS certificate"),
])
async def test_unusable_tls_files_stop_the_gateway_with_a_clear_message(
        tmp_path: Path, cert: str, key: str, message: str) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    config = Config(run_dir=str(tmp_path), metrics_port=0, tls_cert=str(tmp_path / cert),
                    tls_key=str(tmp_path / key) if key else "")
    with pytest.raises(StartupError, match=message):
        GatewayServer(config, 1)


async def test_an_unreadable_jwt_public_key_stops_the_gateway(tmp_path: Path) -> None:
    config = Config(run_dir=str(tmp_path), metrics_port=0, jwt_public_key=str(tmp_path / "none.pem"))
    with pytest.raises(StartupError, match="cannot read --jwt-public-key"):
        GatewayServer(config, 1)


def test_the_tls_context_is_a_server_one_with_tls_1_2_at_least(tmp_path: Path) -> None:
    from tests.integration.test_gateway_security import self_signed

    cert, key = self_signed(tmp_path)
    ctx = tls_context(Config(tls_cert=str(cert), tls_key=str(key)))
    assert ctx is not None and ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.protocol is ssl.PROTOCOL_TLS_SERVER
    assert tls_context(Config()) is None
