"""`meshstream run` keeps its processor's log in a nats-server of its own (--log embedded,
the default; docs/operations.md, "The log"): a processor SIGKILL loses nothing, the log
server SIGKILLed is restarted and the processor comes back the same, and a clean stop
leaves no process and no run directory behind."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import Cluster
from tests.integration.support import DEADLINE, join, kill, sync, uid, wait_for
from tests.integration.test_log import processor_back, say
from tests.integration.test_resume import resume, tracked


@pytest.fixture
def one_box(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, gateways=1)  # default settings: the log is embedded
    try:
        yield c
    finally:
        c.stop()


def log_server(cluster: Cluster) -> psutil.Process | None:
    """The cluster's live nats-server (`ps` shows it as itself), if any."""
    for p in cluster.processes():
        try:
            if p.name() == "nats-server" and p.status() != psutil.STATUS_ZOMBIE:
                return p
        except psutil.Error:
            continue
    return None


def log_port(cluster: Cluster) -> int:
    conf = (Path(cluster.run_dir) / "log" / "nats-server.conf").read_text()
    match = re.search(r"^listen: 127\.0\.0\.1:(\d+)$", conf, re.M)
    assert match, conf
    return int(match[1])


async def history(client: object, room: str) -> list[int]:
    page = await client.request({"action": "history", "target": room, "id": uid("h")}, "history")  # type: ignore[attr-defined]
    return [m["message_body"].get("n") for m in page["message_body"]["messages"] if m["action"] == "chat"]


async def test_a_sigkilled_processor_keeps_its_epoch_and_an_away_clients_session(
        one_box: Cluster) -> None:
    cluster = one_box
    server = log_server(cluster)
    assert server is not None and server.net_connections("tcp")[0].laddr.ip == "127.0.0.1"
    room = uid("boxed")
    a, b, c = [await tracked(cluster.url) for _ in range(3)]
    for client in (a, b, c):
        await join(client, room)
    for n in range(3):
        await say(a, room, n)
    await sync(b)
    await sync(c)
    epoch = a.epoch
    c.lose()  # away, with its session
    await sync(a)
    await say(b, room, 3)  # missed by c
    old = kill(cluster, "processor")
    await processor_back(a)
    assert cluster.roles("processor")["processor"] != old

    assert await history(a, room) == [0, 1, 2, 3]
    back, hello = await resume(cluster.url, c)
    assert hello["message_body"]["resumed"] is True, hello
    assert hello["message_body"]["epoch"] == epoch
    missed = await back.next(lambda m: m.get("action") == "chat", timeout=DEADLINE)
    assert missed["message_body"] == {"n": 3}  # exactly what it missed, once (Tracked checks)
    await say(b, room, 4)  # numbered on: Tracked fails on a gap or a repeat
    for client in (a, back):
        await client.next(lambda m: m.get("action") == "chat" and m["message_body"] == {"n": 4})
    assert log_server(cluster).pid == server.pid  # type: ignore[union-attr]  # untouched
    for client in (a, b, back):
        await client.close()


async def test_the_log_server_sigkilled_is_restarted_and_the_processor_comes_back_the_same(
        one_box: Cluster) -> None:
    cluster = one_box
    room = uid("relogged")
    a, b = [await tracked(cluster.url) for _ in range(2)]
    for client in (a, b):
        await join(client, room)
    for n in range(3):
        await say(a, room, n)
    await sync(b)
    epoch = a.epoch
    server, port = log_server(cluster), log_port(cluster)
    assert server is not None
    server.kill()

    # the supervisor starts it again, on its port, on its store
    again = await wait_for(lambda: (s := log_server(cluster)) is not None and s.pid != server.pid and s,
                           what="the log server restarted")
    assert log_port(cluster) == port
    # Served again, as the same processor: it stopped meanwhile (an append went
    # unacknowledged: nothing the log does not have goes out) and came back from the log,
    # or, when every append it made while the server was down was acknowledged once its
    # client reconnected (within the acknowledgement timeout), it never had to.
    await processor_back(a)
    assert await history(a, room) == [0, 1, 2]
    await say(b, room, 3)  # answered: b has it
    await a.next(lambda m: m.get("action") == "chat" and m["message_body"] == {"n": 3})
    assert a.epoch == b.epoch == epoch  # numbered on (Tracked fails on a gap or a repeat)
    b.lose()
    back, hello = await resume(cluster.url, b)
    assert hello["message_body"]["resumed"] is True and hello["message_body"]["epoch"] == epoch, hello
    assert log_server(cluster).pid == again.pid  # type: ignore[union-attr]
    for client in (a, back):
        await client.close()


async def test_a_stalled_log_server_stops_the_processor_which_comes_back_the_same(
        one_box: Cluster) -> None:
    """SIGSTOPped: appends go unacknowledged, so the processor stops (nothing the log does
    not have goes out); once the server runs again, service resumes by itself."""
    cluster = one_box
    room = uid("stalled")
    a, b = [await tracked(cluster.url) for _ in range(2)]
    for client in (a, b):
        await join(client, room)
    await say(a, room, 0)
    await sync(b)
    epoch = a.epoch
    server = log_server(cluster)
    processor = cluster.roles("processor")["processor"]
    assert server is not None
    server.suspend()
    try:
        await wait_for(lambda: cluster.roles("processor").get("processor") != processor,
                       timeout=DEADLINE * 3, what="the processor to stop")
    finally:
        server.resume()
    await processor_back(a)
    assert await history(a, room) == [0]
    await say(b, room, 1)
    await a.next(lambda m: m.get("action") == "chat" and m["message_body"] == {"n": 1})
    assert a.epoch == b.epoch == epoch
    assert log_server(cluster).pid == server.pid  # type: ignore[union-attr]  # never restarted
    for client in (a, b):
        await client.close()


def test_a_clean_stop_leaves_no_log_server_and_no_run_directory(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, gateways=1)
    store = Path(cluster.run_dir) / "log"
    server = log_server(cluster)
    try:
        assert server is not None
        assert oct(store.stat().st_mode & 0o777) == "0o700"
        assert (store / "jetstream").is_dir()  # the processor's stream is in it
    finally:
        cluster.stop()  # fails on any process left behind
    assert not psutil.pid_exists(server.pid)
    assert not Path(cluster.run_dir).exists()
