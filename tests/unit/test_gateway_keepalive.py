"""The gateway's shared keepalive: ping, wait, and close a connection whose pong is late.

Time is passed in (`now`), never waited for.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from websockets.protocol import State

from meshstream_zmq.config import Config
from services.gateway import PING_INTERVAL, PING_TIMEOUT, Connection, Gateway


class FakeProtocol:
    state = State.OPEN


class FakeWs:
    def __init__(self) -> None:
        self.protocol = FakeProtocol()
        self.pings: list[asyncio.Future[float]] = []
        self.closed: tuple[int, str] | None = None

    async def ping(self) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pings.append(fut)
        return fut

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_ping_then_close_when_the_pong_is_late(tmp_path: Path) -> None:
    gw = Gateway(Config(run_dir=str(tmp_path), metrics_port=0), 1)
    try:
        ws = FakeWs()
        conn = Connection(ws, "gw1-x.1", 10.0)  # type: ignore[arg-type]
        t = 1000.0
        await gw.ping(conn, t)
        assert len(ws.pings) == 1
        await gw.ping(conn, t + 1)  # waiting for the pong: no second ping, no close
        assert len(ws.pings) == 1 and not conn.closing
        ws.pings[0].set_result(0.001)  # pong
        await gw.ping(conn, t + 2)  # too early for the next ping
        assert len(ws.pings) == 1
        await gw.ping(conn, t + PING_INTERVAL)
        assert len(ws.pings) == 2
        await gw.ping(conn, t + PING_INTERVAL + PING_TIMEOUT)  # no pong this time
        await asyncio.sleep(0)
        assert conn.closing and ws.closed == (1011, "keepalive ping timeout")
    finally:
        gw.push.close(linger=0)
        gw.sub.close(linger=0)
