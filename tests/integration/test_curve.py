"""CURVE on the internal sockets: a real `meshstream run` over loopback TCP with keys from
`meshstream keys`, and peers with wrong keys, no keys, or a key claiming too much."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from meshstream_zmq import keys
from meshstream_zmq import meshstream_pb2 as pb
from tests.conftest import ROOT, Client, Cluster, free_port
from tests.integration.support import free_block
from tests.integration.test_words_battle import wait_for_watchers

DEADLINE = 20.0


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def tcp_base() -> int:
    """A port P with P, P+1, P+2 free now (the processor binds all three)."""
    return free_block(3)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys") / "k"
    done = cli("keys", str(d), "--watcher", "rogue=dice-*")
    assert done.returncode == 0, done.stderr
    assert "processor host:" in done.stdout
    return d


@pytest.fixture(scope="module")
def curve(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Cluster]:
    base = tcp_base()
    c = Cluster(tmp_path_factory.mktemp("curve"), gateways=1, watchers=True,
                args=["--tcp", f"127.0.0.1:{base}", "--keys-dir", str(keys_dir),
                      "--time-scale", "0.05"], env={"MESHSTREAM_API_KEY": API_KEY})
    c.tcp_base = base  # type: ignore[attr-defined]
    yield c
    c.stop()


API_KEY = "api-key-of-the-curve-tests-0123456789"


def endpoint(c: Cluster, offset: int) -> str:
    return f"tcp://127.0.0.1:{c.tcp_base + offset}"  # type: ignore[attr-defined]


def log_text(c: Cluster) -> str:
    c.log.flush()
    return Path(c.log.name).read_text(errors="replace")


def wait_log(c: Cluster, needle: str, timeout: float = DEADLINE) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_text(c)
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never logged:\n{c.read_log()}")


def handshake(sock: zmq.Socket, url: str) -> int:
    """Connect and return the outcome of the first handshake (a zmq.EVENT_HANDSHAKE_* value)."""
    mon = sock.get_monitor_socket()
    try:
        sock.connect(url)
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if mon.poll(int((deadline - time.monotonic()) * 1000)):
                event = int(recv_monitor_message(mon)["event"])
                if event & (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                    return event
        raise AssertionError("no handshake outcome")
    finally:
        sock.disable_monitor()
        mon.close(linger=0)


def curve_client(sock: zmq.Socket, public: bytes, secret: bytes, keys_dir: Path) -> zmq.Socket:
    sock.curve_serverkey = keys.processor_public(str(keys_dir))
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.linger = 0
    return sock


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


# ------------------------------------------------------------------ the cluster works


async def test_words_battle_runs_over_curve(curve: Cluster) -> None:
    await wait_for_watchers(curve.url)  # lobby and games watchers took a join, over CURVE
    text = log_text(curve)
    assert "CURVE on every processor socket" in text
    assert "refused a CURVE key" not in text and "watcher hello refused" not in text


async def test_the_http_api_reaches_the_processor_with_the_api_watcher_key(curve: Cluster) -> None:
    """Every gateway's API watcher (`api.<gateway ID>`) connects with the shared `api` key."""
    member = await Client.connect(curve.url)
    await member.request({"action": "join-room", "target": "over-curve", "id": 1}, "client-joined-room")
    body = json.dumps({"room": "over-curve", "data": {"n": 1}}).encode()
    deadline = time.monotonic() + DEADLINE
    while True:  # 503 until the API watcher is welcomed
        status, answer = await asyncio.to_thread(api_publish, curve.port, body)
        if status != 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert status == 200, answer
    got = await member.expect("publish")
    assert (got["message_body"], got["offset"]) == ({"n": 1}, answer["offset"])
    assert "watcher hello refused" not in log_text(curve)
    await member.close()


def api_publish(port: int, body: bytes) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", "/api/publish", body=body, headers={
            "Authorization": f"apikey {API_KEY}", "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


# ------------------------------------------------------------------ watchers


def watcher_roundtrip(sock: zmq.Socket, hello: pb.WatcherHello) -> pb.WatcherOut:
    sock.send_multipart([b"watcher", pb.WatcherIn(hello=hello).SerializeToString()])
    assert sock.poll(int(DEADLINE * 1000)), "no answer to hello"
    return pb.WatcherOut.FromString(sock.recv_multipart()[-1])


async def test_a_watcher_key_claims_only_what_it_is_given(curve: Cluster, keys_dir: Path,
                                                          ctx: zmq.Context) -> None:
    pair = keys.watcher_pair(str(keys_dir), "rogue")  # claims.json: rogue may claim dice-*
    sock = curve_client(ctx.socket(zmq.DEALER), pair.public, pair.secret, keys_dir)
    sock.connect(endpoint(curve, 2))
    for hello, why in [(pb.WatcherHello(name="rogue", rooms=["mesh-global"]), "mesh-global"),
                       (pb.WatcherHello(name="rogue", prefixes=["d"]), "d*"),
                       (pb.WatcherHello(name="words-battle-lobby", rooms=["mesh-global"]),
                        "another watcher")]:
        out = watcher_roundtrip(sock, hello)
        assert out.WhichOneof("kind") == "reply", out
        assert out.reply.id == 0 and out.reply.error == "forbidden" and why in out.reply.message
    wait_log(curve, "watcher hello refused")
    # what it is given, it gets
    out = watcher_roundtrip(sock, pb.WatcherHello(name="rogue", prefixes=["dice-"]))
    assert out.WhichOneof("kind") == "welcome"
    sock.send_multipart([b"watcher", pb.WatcherIn(goodbye=pb.Heartbeat()).SerializeToString()])
    # the lobby still owns mesh-global: Words Battle joins still work
    await wait_for_watchers(curve.url)


async def test_a_watcher_key_takes_back_the_rooms_given_to_it(curve: Cluster, keys_dir: Path,
                                                             ctx: zmq.Context) -> None:
    """After a processor restart or failover a watcher lists the rooms a create_room gave
    it (`assigned`): not limited by its key's claims (as the command was not), but never
    one another live watcher claims."""
    pair = keys.watcher_pair(str(keys_dir), "rogue")  # claims.json: rogue may claim dice-*
    sock = curve_client(ctx.socket(zmq.DEALER), pair.public, pair.secret, keys_dir)
    sock.connect(endpoint(curve, 2))
    out = watcher_roundtrip(sock, pb.WatcherHello(name="rogue", assigned=["mesh-global"]))
    assert (out.reply.id, out.reply.error) == (0, "claim-conflict"), out
    out = watcher_roundtrip(sock, pb.WatcherHello(name="rogue", assigned=["game42"]))
    assert out.WhichOneof("kind") == "welcome", out
    sock.send_multipart([b"watcher", pb.WatcherIn(goodbye=pb.Heartbeat()).SerializeToString()])


async def test_an_unknown_watcher_key_is_refused_and_logged(curve: Cluster,
                                                            keys_dir: Path, ctx: zmq.Context) -> None:
    public, secret = zmq.curve_keypair()
    sock = curve_client(ctx.socket(zmq.DEALER), public, secret, keys_dir)
    assert handshake(sock, endpoint(curve, 2)) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    try:  # a refused DEALER has no peer to queue for: its hello goes nowhere
        sock.send_multipart([b"watcher", pb.WatcherIn(hello=pb.WatcherHello(
            name="intruder", rooms=["mesh-global"])).SerializeToString()], flags=zmq.NOBLOCK)
    except zmq.Again:
        pass
    text = wait_log(curve, keys.fingerprint(public))
    line = next(ln for ln in text.splitlines() if keys.fingerprint(public) in ln)
    assert "refused a CURVE key" in line and '"socket": "watchers"' in line
    assert public.decode() not in text and secret.decode() not in text  # a fingerprint, no key
    assert "intruder" not in text  # its hello never reached the processor


def test_a_gateway_key_cannot_speak_as_a_watcher(curve: Cluster, keys_dir: Path,
                                                 ctx: zmq.Context) -> None:
    pair = keys.gateway_pair(str(keys_dir))
    sock = curve_client(ctx.socket(zmq.DEALER), pair.public, pair.secret, keys_dir)
    assert handshake(sock, endpoint(curve, 2)) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    wait_log(curve, "a gateway key may not use this socket")


# ------------------------------------------------------------------ gateways and observers


def test_a_gateway_with_a_wrong_key_is_refused(curve: Cluster, keys_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    assert cli("keys", str(wrong)).returncode == 0
    shutil.copy(keys_dir / "processor.key", wrong / "processor.key")  # knows the server, not known
    rogue_fp = keys.fingerprint(keys.gateway_pair(str(wrong)).public)
    port = free_port()
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        gw = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "gateway", "--index", "7", "--port", str(port),
             "--host", "127.0.0.1", "--tcp", f"127.0.0.1:{curve.tcp_base}",  # type: ignore[attr-defined]
             "--keys-dir", str(wrong), "--metrics-port", "0"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=out)
    try:
        wait_log(curve, rogue_fp)  # the processor names the refused key
        # meanwhile, and for a few heartbeats more, it is never welcomed: never healthy
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            assert gw.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status != 200, "a gateway with a wrong key was welcomed"
            except OSError:
                pass  # 503, or not listening yet: both fine
            time.sleep(0.1)
        assert "gw7-" not in log_text(curve)  # its hello never arrived
    finally:
        gw.terminate()
        gw.wait(10)


async def test_a_plain_sub_cannot_read_the_processors_traffic(curve: Cluster, keys_dir: Path,
                                                              ctx: zmq.Context) -> None:
    plain = ctx.socket(zmq.SUB)
    plain.linger = 0
    plain.subscribe(b"")
    # no CURVE: a mechanism mismatch (reported with or without detail, as the timing goes)
    assert handshake(plain, endpoint(curve, 1)) in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                                    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    # an observer with a watcher key reads events and beats (docs/operations.md)
    pair = keys.watcher_pair(str(keys_dir), "rogue")
    observer = curve_client(ctx.socket(zmq.SUB), pair.public, pair.secret, keys_dir)
    observer.subscribe(b"")
    assert handshake(observer, endpoint(curve, 1)) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    client = await Client.connect(curve.url)  # traffic: a client-connected event and more
    try:
        topics: set[bytes] = set()
        deadline = time.monotonic() + DEADLINE
        while not {b"processor", b"event.client-connected"} <= topics:
            assert time.monotonic() < deadline, topics
            if observer.poll(100):
                topics.add(observer.recv_multipart()[0])
        assert not plain.poll(0), "a SUB without keys read the processor's traffic"
    finally:
        await client.close()


# ------------------------------------------------------------------ refusing to start


def test_processor_refuses_tcp_beyond_loopback_without_keys(tmp_path: Path) -> None:
    base = tcp_base()
    done = cli("processor", "--tcp", f"0.0.0.0:{base}", "--run-dir", str(tmp_path / "run"),
               "--metrics-port", "0")
    assert done.returncode != 0
    assert "refusing to bind the processor's sockets on TCP 0.0.0.0 without keys" in done.stderr
    assert "meshstream keys DIR" in done.stderr


def test_run_refuses_tcp_beyond_loopback_without_keys_before_starting_anything(tmp_path: Path) -> None:
    base = tcp_base()
    started = time.monotonic()
    done = cli("run", "--tcp", f"0.0.0.0:{base}", "--port", str(free_port()), "--gateways", "1",
               "--run-dir", str(tmp_path / "run"), "--metrics-port", "0")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("meshstream run: refusing to bind") and "--keys-dir" in done.stderr
    assert "started" not in done.stderr  # no child was started (the supervisor logs each)
    assert time.monotonic() - started < 15


def test_run_with_keys_refuses_a_watcher_without_its_key(tmp_path: Path, keys_dir: Path) -> None:
    partial = tmp_path / "k"
    shutil.copytree(keys_dir, partial)
    (partial / "watchers" / "words-battle-games.key_secret").unlink()
    done = cli("run", "--tcp", f"127.0.0.1:{tcp_base()}", "--keys-dir", str(partial),
               "--port", str(free_port()), "--gateways", "1", "--metrics-port", "0",
               "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2
    assert "no key for watcher 'words-battle-games'" in done.stderr
