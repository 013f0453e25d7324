"""A client frame is handled inside websockets' data_received (ClientConnection): a bug
there must close that one connection (1011), not escape into the event loop."""

from __future__ import annotations

import asyncio

from services.gateway import ClientConnection


class StubConnection:
    """What `hand_over` touches of a ClientConnection: its loop and `close`."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[tuple[int, str]] = self.loop.create_future()

    async def close(self, code: int, reason: str) -> None:
        self.closed.set_result((code, reason))


async def test_a_handler_that_raises_closes_that_connection_with_1011() -> None:
    conn = StubConnection()

    def broken(message: str | bytes) -> None:
        raise RuntimeError("a bug")

    ClientConnection.hand_over(conn, broken, "{}")  # type: ignore[arg-type]
    assert await asyncio.wait_for(conn.closed, 5) == (1011, "internal error")


async def test_a_handled_frame_leaves_the_connection_open() -> None:
    conn = StubConnection()
    seen: list[str | bytes] = []
    ClientConnection.hand_over(conn, seen.append, "{}")  # type: ignore[arg-type]
    assert seen == ["{}"] and not conn.closed.done()
