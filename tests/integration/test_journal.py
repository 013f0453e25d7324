"""The processor's log on a real nats-server with JetStream (meshstream_zmq/journal.py,
issue 17): pipelined appends stored in order and read back whole; one writer, fenced by a
takeover; the log unreachable is an error, not a hang; a thread for the processor's loop."""

from __future__ import annotations

import asyncio
import select
from pathlib import Path

import pytest

from meshstream_zmq.journal import Fenced, JetStreamLog, LogConfig, LogThread, LogUnavailable
from tests.conftest import free_port
from tests.integration.nats_server import nats_server


@pytest.fixture
def nats_url(tmp_path: Path):  # type: ignore[no-untyped-def]
    with nats_server(tmp_path / "js") as (url, _):
        yield url


async def test_pipelined_appends_are_stored_in_order_and_read_back_whole(nats_url: str) -> None:
    log = JetStreamLog(LogConfig([nats_url]), "w1")
    assert await log.open() == 0
    entries = [b"entry %d " % n + b"x" * (n % 700) for n in range(1, 2001)]
    seqs = await asyncio.gather(*[log.append(e) for e in entries])  # all in flight at once
    assert seqs == list(range(1, 2001))
    again = JetStreamLog(LogConfig([nats_url]), "reader")
    assert await again.open() == 2000  # a new process finds where the log ends
    assert [data async for _, data in again.read()] == entries
    assert [seq async for seq, _ in again.read(1990)] == list(range(1990, 2001))
    await log.close()
    await again.close()


async def test_a_takeover_fences_the_old_writer_at_its_next_append(nats_url: str) -> None:
    old = JetStreamLog(LogConfig([nats_url]), "primary")
    await old.open()
    for n in range(3):
        await old.append(b"old %d" % n)
    standby = JetStreamLog(LogConfig([nats_url]), "standby")
    await standby.open()
    applied = max([seq async for seq, _ in standby.read()])  # it tailed the log up to here
    assert await standby.take_over(applied, b"takeover") == 4
    with pytest.raises(Fenced):  # paused or partitioned, the old writer cannot append any more
        await old.append(b"late")
    assert await standby.append(b"new") == 5
    late = JetStreamLog(LogConfig([nats_url]), "late")
    await late.open()
    assert [d async for _, d in late.read()] == [b"old 0", b"old 1", b"old 2", b"takeover", b"new"]
    with pytest.raises(Fenced):  # a takeover behind the log must read the rest first
        await late.take_over(3, b"too early")
    for log in (old, standby, late):
        await log.close()


async def test_an_unreachable_log_is_an_error_at_once() -> None:
    log = JetStreamLog(LogConfig([f"nats://127.0.0.1:{free_port()}"], timeout=0.5), "w")
    with pytest.raises(LogUnavailable, match="no NATS server"):
        await log.open()


def test_the_thread_tells_a_loop_without_asyncio_what_is_stored(nats_url: str) -> None:
    log = LogThread(LogConfig([nats_url]), "processor")
    try:
        assert log.open() == 0
        numbers = [log.append(b"e%d" % n) for n in range(500)]
        assert numbers == list(range(1, 501))
        while log.stored_through() < 500:  # woken by its file descriptor, as a poller would be
            select.select([log], [], [], 5)
        assert [d for _, d in log.read()] == [b"e%d" % n for n in range(500)]
        fence = LogThread(LogConfig([nats_url]), "standby")
        fence.open()
        fence.take_over(500, b"takeover")
        log.append(b"late")
        with pytest.raises(Fenced):
            while True:
                select.select([log], [], [], 5)
                log.stored_through()
        fence.close()
    finally:
        log.close()
