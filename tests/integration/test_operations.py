"""Operations: services alone over TCP, independent instances, metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Client, Cluster, free_port


def _spawn(*args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "services.cli", *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


@pytest.fixture
def tcp_services(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """processor, one gateway and the echo watcher as separate commands, over TCP."""
    ws_port = free_port()
    base = free_port()
    while ws_port in range(base, base + 3):  # the processor takes base, base+1, base+2
        base = free_port()
    tcp = f"127.0.0.1:{base}"
    log = tmp_path / "services.log"
    procs = [_spawn("processor", "--tcp", tcp, "--metrics-port", "0", log=log),
             _spawn("gateway", "--index", "1", "--tcp", tcp, "--port", str(ws_port),
                    "--host", "127.0.0.1", "--metrics-port", "0", log=log),
             _spawn("watcher", "echo", "--tcp", tcp, "--metrics-port", "0", log=log)]
    try:
        yield base, ws_port, log
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _wait_http(url: str, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return bytes(resp.read())
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")


async def test_services_run_alone_over_tcp(tcp_services: tuple[int, int, Path]) -> None:
    _, ws_port, log = tcp_services
    _wait_http(f"http://127.0.0.1:{ws_port}/healthz")
    a = await Client.connect(f"ws://127.0.0.1:{ws_port}/wsmesh")
    b = await Client.connect(f"ws://127.0.0.1:{ws_port}/wsmesh")
    # one after the other: two connections' frames may reach the gateway in either order
    await a.request({"action": "join-room", "target": "t1", "id": 1}, "client-joined-room")
    await b.send({"action": "join-room", "target": "t1"})
    await a.expect("client-joined-room", sender=b.id)
    await b.send({"action": "say", "target": "t1", "message_body": {"n": 1}})
    got = await a.expect("say")
    assert got["sender"] == b.id and got["message_body"] == {"n": 1}
    # the echo watcher, over TCP as well, owns "echo-" rooms
    deadline = time.monotonic() + 20
    while True:
        room = f"echo-{int(time.monotonic() * 1000)}"
        await a.send({"action": "join-room", "target": room})
        # before its hello: an ordinary room; while a loaded box keeps it silent past the
        # peer timeout: watcher-unavailable until its next heartbeat brings it back
        try:
            msg = await a.next(lambda m, room=room: m["action"] in ("echo-joined", "client-joined-room")
                               or (m["action"] == "error" and m.get("target") == room))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{log.read_text()[-4000:]}") from None
        if msg["action"] == "echo-joined":
            break
        assert time.monotonic() < deadline, \
            f"echo watcher never claimed its rooms over TCP; last: {msg}; log:\n{log.read_text()[-4000:]}"
    for c in (a, b):
        await c.close()


async def test_two_instances_do_not_interfere(cluster_factory) -> None:
    one: Cluster = cluster_factory(gateways=1)
    two: Cluster = cluster_factory(gateways=1)
    assert one.run_dir != two.run_dir
    a = await Client.connect(one.url)
    b = await Client.connect(two.url)
    await a.send({"action": "join-room", "target": "same"})
    await b.send({"action": "join-room", "target": "same"})
    await a.expect("client-joined-room", sender=a.id)
    await b.expect("client-joined-room", sender=b.id)
    members = await a.request({"action": "list-members", "target": "same", "id": 1}, "member-list")
    assert members["message_body"]["members"] == [a.id]
    await a.close()
    await b.close()


async def test_every_process_exposes_metrics(cluster_factory) -> None:
    base = free_port()
    c: Cluster = cluster_factory(gateways=1, args=["--metrics-port", str(base)])
    client = await Client.connect(c.url)
    await client.send({"action": "join-room", "target": "m1"})
    await client.expect("client-joined-room")
    processor = _wait_http(f"http://127.0.0.1:{base}/metrics").decode()
    gateway = _wait_http(f"http://127.0.0.1:{base + 1}/metrics").decode()
    assert "meshstream_rooms" in processor and "meshstream_clients" in processor
    assert "meshstream_connections" in gateway and "meshstream_frames_in_total" in gateway
    await client.close()


# ------------------------------------------------------------------ the IPC run directory


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


async def test_ipc_sockets_are_private(cluster: Cluster) -> None:
    run = Path(cluster.run_dir)
    assert run.stat().st_mode & 0o777 == 0o700
    for name in ("inbound", "outbound", "watchers"):
        assert (run / name).is_socket() and (run / name).stat().st_mode & 0o777 == 0o600, name


def test_a_run_dir_of_another_mode_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o755)  # as if another user (or a careless one) made it: others could reach the sockets
    done = _cli("processor", "--run-dir", str(run), "--metrics-port", "0")
    assert done.returncode != 0
    assert f"run directory {run} is mode 0755, not 0700: refusing to use it" in done.stderr
    assert not list(run.iterdir())  # no socket was made there
    done = _cli("run", "--run-dir", str(run), "--port", str(free_port()), "--gateways", "1",
                "--metrics-port", "0", "--no-watchers")
    assert done.returncode == 2 and "mode 0755, not 0700" in done.stderr


async def test_a_second_instance_refuses_and_the_first_keeps_working(cluster: Cluster) -> None:
    a = await Client.connect(cluster.url)
    done = _cli("run", "--port", str(cluster.port), "--run-dir", cluster.run_dir, "--gateways", "1",
                "--metrics-port", "0", "--no-watchers", "--host", "127.0.0.1")
    assert done.returncode == 2
    assert "another meshstream processor is already running on" in done.stderr
    assert f"(port {cluster.port})" in done.stderr
    done = _cli("processor", "--run-dir", cluster.run_dir, "--metrics-port", "0")
    assert done.returncode != 0 and "already running" in done.stderr
    # the first instance's sockets are still there, and it still works
    for name in ("inbound", "outbound", "watchers"):
        assert (Path(cluster.run_dir) / name).is_socket()
    b = await Client.connect(cluster.url)
    await a.send({"action": "join-room", "target": "still"})
    await a.expect("client-joined-room", sender=a.id)  # a is in before b joins (they may sit
    await b.send({"action": "join-room", "target": "still"})  # on different gateways)
    await a.expect("client-joined-room", sender=b.id)
    await b.send({"action": "say", "target": "still", "message_body": {"n": 2}})
    assert (await a.expect("say"))["sender"] == b.id
    for c in (a, b):
        await c.close()


def test_stale_sockets_of_a_killed_processor_are_cleaned_up(tmp_path: Path) -> None:
    run = tmp_path / "c0" / "run"
    run.mkdir(mode=0o700, parents=True)
    for name in ("inbound", "outbound", "watchers"):  # bound, never listened: nothing answers
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(run / name))
        s.close()
    c = Cluster(tmp_path / "c0", gateways=1)  # its run dir is tmp/run: the one above
    try:
        assert c.healthy()
    finally:
        c.stop()
