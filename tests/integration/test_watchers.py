"""Watchers over the real ROUTER/DEALER link: the bundled Python echo watcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, Client, Cluster


@pytest.fixture
def echo(cluster: Cluster) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "watcher", "echo",
                             "--run-dir", cluster.run_dir, "--port", str(cluster.port),
                             "--metrics-port", "0"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    yield proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


async def join_claimed(c: Client, prefix: str) -> dict:
    """Until the watcher's hello lands, rooms are unclaimed (built-in join): try fresh names."""
    deadline = time.monotonic() + 20
    n = 0
    while time.monotonic() < deadline:
        n += 1
        await c.send({"action": "join-room", "target": f"{prefix}{n}"})
        msg = await c.next(lambda m: m["action"] in ("echo-joined", "client-joined-room"))
        if msg["action"] == "echo-joined":
            return msg
    raise AssertionError("the watcher never claimed its rooms")


async def test_echo_watcher_answers_its_rooms(cluster: Cluster, echo, connect) -> None:
    a = await connect()
    joined = await join_claimed(a, "echo-")
    room = joined["target"]
    assert joined["sender"] == "echo-bot" and joined["message_body"]["client"] == a.id
    await a.send({"action": "shout", "target": room, "message_body": {"x": 1}})
    got = await a.expect("echo", target=room)
    assert got["message_body"] == {"action": "shout", "from": a.id, "x": 1}
    # the built-in relay does not run in a claimed room
    assert not [m for m in a.inbox if m["action"] == "shout"]
