"""The processor on its log (--log, a real nats-server with JetStream; issue 17): SIGKILLed
and restarted by the supervisor, it replays the log and is the same processor: the same
epoch, every room's history, an away client's session (it resumes exactly), and the
connected clients carry on. A fresh core replaying the same log twice finds the same state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config
from meshstream_zmq.journal import LogConfig, LogThread
from services.processor import Processor
from tests.conftest import Cluster
from tests.integration.nats_server import nats_server
from tests.integration.support import DEADLINE, join, kill, sync, uid
from tests.integration.test_resume import Tracked, resume, tracked


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    (tmp_path / "cluster").mkdir()
    with nats_server(tmp_path / "js") as (url, _):
        c = Cluster(tmp_path / "cluster", gateways=1, args=["--log", url, "--resume-window", "120"])
        try:
            yield c, url
        finally:
            c.stop()


async def processor_back(c: Tracked) -> None:
    """Until a request is answered by a processor again (errors meanwhile)."""
    deadline = time.monotonic() + DEADLINE * 2
    while True:
        rid = uid("up")
        await c.send({"action": "list-rooms", "id": rid})
        reply = await c.next(lambda m, rid=rid: m.get("id") == rid, timeout=DEADLINE)
        if reply["action"] == "room-list":
            return
        assert time.monotonic() < deadline, "the processor did not come back"
        await asyncio.sleep(0.2)


async def say(c: Tracked, room: str, n: int) -> None:
    await c.request({"action": "chat", "target": room, "message_body": {"n": n}, "id": uid("say")}, "chat")


def replayed(url: str, tmp: Path) -> Processor:
    """A fresh processor core that read the whole log (its own private sockets)."""
    config = Config(log=url, run_dir=str(tmp), port=1)
    p = Processor(config)
    p.close()
    return p


async def test_a_processor_sigkilled_comes_back_from_its_log_the_same(
        logged: tuple[Cluster, str], tmp_path: Path) -> None:
    cluster, url = logged
    room = uid("logged")
    a, b, c = [await tracked(cluster.url) for _ in range(3)]
    for client in (a, b, c):
        await join(client, room)
    for n in range(5):
        await say(a, room, n)
    await sync(b)
    await sync(c)
    epoch = a.epoch
    c.lose()  # away, with its session
    await sync(a)
    await say(b, room, 5)  # missed by c
    old = cluster.roles("processor")["processor"]
    kill(cluster, "processor")
    await processor_back(a)
    assert cluster.roles("processor")["processor"] != old

    # the same processor: its epoch, the room's history, the away client's session
    page = await a.request({"action": "history", "target": room, "id": uid("h")}, "history")
    said = [m["message_body"].get("n") for m in page["message_body"]["messages"] if m["action"] == "chat"]
    assert said == [0, 1, 2, 3, 4, 5]
    back, hello = await resume(cluster.url, c)
    assert hello["message_body"]["resumed"] is True, hello
    assert hello["message_body"]["epoch"] == epoch
    missed = await back.next(lambda m: m.get("action") == "chat", timeout=DEADLINE)
    assert missed["message_body"] == {"n": 5}  # exactly what it missed, once (Tracked checks)
    await say(b, room, 6)  # and life goes on, numbered on
    got = await a.next(lambda m: m.get("action") == "chat" and m["message_body"] == {"n": 6})
    assert got["offset"] == page["message_body"]["messages"][-1]["offset"] + 1

    # replayed twice from the same log: the same state, whole and consistent
    one, two = replayed(url, tmp_path / "r1"), replayed(url, tmp_path / "r2")
    for p in (one, two):
        p.mesh.check()
        assert p.epoch == epoch
    assert one.mesh.snapshot()["rooms"] == two.mesh.snapshot()["rooms"]
    assert one.mesh.snapshot()["history"] == two.mesh.snapshot()["history"]
    assert set(one.mesh.rooms[room].members) == {a.id, b.id, back.id}
    for client in (a, b, back):
        await client.close()


def test_an_empty_log_gets_its_first_entry_and_a_new_epoch(tmp_path: Path) -> None:
    with nats_server(tmp_path / "js") as (url, _):
        p = replayed(url, tmp_path / "r")
        log = LogThread(LogConfig([url]), "reader")
        try:
            log.open()
            [(_, first)] = log.read()
        finally:
            log.close()
        assert pb.LogEntry.FromString(first).start == p.epoch
        assert replayed(url, tmp_path / "r2").epoch == p.epoch  # kept for good


def test_an_unreachable_log_stops_the_processor_with_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port

    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "processor", "--log", f"nats://127.0.0.1:{free_port()}",
         "--run-dir", str(tmp_path / "run"), "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-500:]
    assert "no NATS server" in done.stderr


@pytest.fixture
def steady(tmp_path: Path) -> Iterator[Cluster]:
    """Two gateways on a log, and a peer timeout long enough that the gateways keep
    forwarding through a processor restart (their frames wait in ZeroMQ meanwhile)."""
    (tmp_path / "cluster").mkdir()
    with nats_server(tmp_path / "js") as (url, _):
        c = Cluster(tmp_path / "cluster", gateways=2, args=["--log", url, "--peer-timeout", "15"])
        try:
            yield c
        finally:
            c.stop()


async def chat_through(url: str, fault: Callable[[], Awaitable[None]],
                       logs: Callable[[], str] = str) -> list[Tracked]:
    """Four clients (on every gateway behind `url`) in a room; one says 300 things, a steady
    chat; `fault` runs a third of the way in. Every client receives all of it once, in
    order, and no error; each request is answered; the epoch stays. The clients, open."""
    room = uid("steady")
    clients = [await tracked(url) for _ in range(4)]
    for c in clients:
        await join(c, room)
    for c in clients:
        await sync(c)
    sender, epoch, count = clients[0], clients[0].epoch, 300
    for n in range(count):
        await sender.send({"action": "chat", "target": room, "message_body": {"n": n}, "id": f"s{n}"})
        if n == count // 3:
            await fault()
        await asyncio.sleep(0.01)  # a steady chat, not a burst (the rate limit is 200/s)

    async def all_of(c: Tracked, own: bool) -> list[int]:
        got: list[int] = []
        while len(got) < count:
            m = await c.next(lambda m: m.get("action") in ("chat", "error"), timeout=DEADLINE * 2)
            assert m["action"] == "chat", (m, logs())  # no processor-restarted, messages-lost, …
            if own:
                assert m.get("id") == f"s{m['message_body']['n']}"  # each request answered
            got.append(m["message_body"]["n"])
        return got

    for c in clients:  # Tracked fails on a repeat or disorder within the room's stream
        assert await all_of(c, c is sender) == list(range(count)), c.id
    assert {c.epoch for c in clients} == {epoch}
    return clients


async def test_chat_through_a_processor_sigkill_loses_and_repeats_nothing(steady: Cluster) -> None:
    """Every frame a client sent is handled exactly once across a processor SIGKILL: the
    gateways send again what was not acknowledged, the restarted processor skips what its
    log has, every GatewayOut a gateway missed is sent again; nobody sees an error."""

    async def sigkill() -> None:
        kill(steady, "processor")

    for c in await chat_through(steady.url, sigkill):
        await c.close()


async def test_a_burst_larger_than_a_nats_message_is_stored_in_parts(
        logged: tuple[Cluster, str]) -> None:
    """Large frames from many clients at once, far more than NATS's 1 MB max_payload in one
    turn of the processor's loop: each is answered, by the same processor (it seals a turn's
    entry early past LOG_ENTRY_BYTES; the gateway sends a batch past BATCH_BYTES)."""
    cluster, _ = logged
    clients = [await tracked(cluster.url) for _ in range(40)]
    rooms = [uid("big") for _ in clients]
    for c, room in zip(clients, rooms, strict=True):
        await join(c, room)
    before = cluster.roles("processor")["processor"]
    body = {"text": "x" * 60_000}  # under the 64 KiB frame limit; 40 of them: 2.4 MB
    await asyncio.gather(*(c.send({"action": "chat", "target": room, "message_body": body,
                                   "id": f"big-{room}"})
                           for c, room in zip(clients, rooms, strict=True)))
    for c, room in zip(clients, rooms, strict=True):
        m = await c.next(lambda m: m.get("action") in ("chat", "error"), timeout=DEADLINE * 2)
        assert m["action"] == "chat" and m.get("id") == f"big-{room}", m.get("message_body", m)
    assert cluster.roles("processor")["processor"] == before  # never stopped
    for c in clients:
        await c.close()


async def stream_first(url: str, stream: str = "meshstream-0") -> int:
    """The first sequence the log's stream still holds."""
    import nats

    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.first_seq)
    finally:
        await nc.close()


@pytest.fixture
def snapshotting(tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    (tmp_path / "cluster").mkdir()
    with nats_server(tmp_path / "js") as (url, _):
        c = Cluster(tmp_path / "cluster", gateways=1,
                    args=["--log", url, "--snapshot-every", "100", "--resume-window", "120"])
        try:
            yield c, url
        finally:
            c.stop()


async def test_snapshots_bound_the_log_and_a_restart_starts_from_the_latest(
        snapshotting: tuple[Cluster, str], tmp_path: Path) -> None:
    """Every 100 entries a snapshot; the log is trimmed behind them; a SIGKILLed processor
    loads the latest and replays only what follows: the same epoch and history."""
    cluster, url = snapshotting
    room = uid("snap")
    a = await tracked(cluster.url)
    await join(a, room)
    epoch = a.epoch
    for n in range(250):  # each request a turn at least: hundreds of entries
        await say(a, room, n)
    deadline = time.monotonic() + DEADLINE
    while await stream_first(url) <= 1:  # trimmed once the second snapshot is stored
        assert time.monotonic() < deadline, "the log was never trimmed"
        await asyncio.sleep(0.1)  # polling the stream's state, with a deadline
    kill(cluster, "processor")
    await processor_back(a)
    said: list[int] = []
    since = 0
    while True:  # pages of history, oldest first
        page = await a.request({"action": "history", "target": room, "id": uid("h"),
                                "message_body": {"since": since}}, "history")
        messages = page["message_body"]["messages"]
        if not messages:
            break
        said += [m["message_body"]["n"] for m in messages if m["action"] == "chat"]
        since = messages[-1]["offset"]
    assert said == list(range(250)) and a.epoch == epoch
    p = replayed(url, tmp_path / "r")  # a fresh core from the snapshot and the tail
    p.mesh.check()
    assert p.epoch == epoch and p.snapshot_seq > 0
    await a.close()


def test_a_snapshot_that_cannot_be_read_stops_the_start_with_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    import nats

    from tests.conftest import ROOT, free_port

    with nats_server(tmp_path / "js") as (url, _):
        replayed(url, tmp_path / "r")  # the log's first entry

        async def damage() -> None:
            nc = await nats.connect(url)
            js = nc.jetstream()
            store = await js.create_object_store("meshstream-0-snapshots")
            await store.put("latest", b"\x08\x01not a snapshot")
            await nc.close()
        asyncio.run(damage())
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "processor", "--log", url,
             "--run-dir", str(tmp_path / "run"), "--port", str(free_port())],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-500:]
    assert "snapshot" in done.stderr and "refusing to start" in done.stderr
