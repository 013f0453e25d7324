"""The gateway's edge on real processes: client tokens (JWT), refresh-token, random client
IDs, the connection limits, the Origin list, bad characters in actions, and TLS.

Keys, tokens and certificates are made here; every cluster is `meshstream run` on free
ports with a private run directory.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.conftest import ROOT, Client, Cluster
from tests.integration.support import DEADLINE, close_code, join, module_cluster, sync, uid

SECRET = "integration-test-secret-" + "x" * 16
ORIGIN = "https://game.example"


def token(sub: str = "ann", ttl: float | None = 600.0, key: str = SECRET, **claims: Any) -> str:
    body: dict[str, Any] = {"sub": sub, **claims}
    if ttl is not None:
        body["exp"] = int(time.time() + ttl)
    return jwt.encode(body, key, algorithm="HS256")


async def connect(url: str, **kw: Any) -> Client:
    """A client that must be greeted (client-connected) first."""
    c = Client(await websockets.connect(url, max_size=2**24, **kw))
    hello = await c.expect("client-connected")
    c.id = hello["target"]
    c.inbox.append(hello)  # kept: tests look at the greeting
    return c


async def refused(url: str, **kw: Any) -> tuple[int | None, str, list[str]]:
    """Connect and read until the server closes: (code, reason, frames received before it)."""
    ws = await websockets.connect(url, **kw)
    frames: list[str] = []
    try:
        while True:
            frames.append(str(await asyncio.wait_for(ws.recv(), DEADLINE)))
    except ConnectionClosed:
        pass
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else ""), frames


# ------------------------------------------------------------------ clusters

@pytest.fixture(scope="module")
def jwt_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Tokens on (the secret from the environment), and an Origin list."""
    c = module_cluster(tmp_path_factory, env={"MESHSTREAM_JWT_SECRET": SECRET,
                                              "MESHSTREAM_ALLOWED_ORIGINS": ORIGIN})
    yield c
    c.stop()


@pytest.fixture(scope="module")
def open_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The defaults: no tokens, no Origin list."""
    c = module_cluster(tmp_path_factory)
    yield c
    c.stop()


# ------------------------------------------------------------------ tokens

async def test_a_token_in_the_query_names_the_user(jwt_cluster: Cluster) -> None:
    c = await connect(f"{jwt_cluster.url}?token={token('ann')}")
    try:
        hello = await c.expect("client-connected")
        body = hello["message_body"]
        assert (body["client"], body["user"], bool(body["session"])) == (c.id, "ann", True)
        await sync(c)  # and the processor knows the connection
    finally:
        await c.close()


async def test_a_bearer_token_in_the_header_names_the_user(jwt_cluster: Cluster) -> None:
    c = await connect(jwt_cluster.url, additional_headers={"Authorization": f"Bearer {token('bob')}"})
    try:
        assert (await c.expect("client-connected"))["message_body"]["user"] == "bob"
        room = uid()
        await join(c, room)
    finally:
        await c.close()


@pytest.mark.parametrize(("query", "reason"), [
    ("", "token-required"),
    ("?token=", "token-required"),
    ("?token=not.a.jwt", "bad-token"),
    (f"?token={token(key='another-secret-another-secret-xx')}", "bad-token"),
    (f"?token={token(nbf=int(time.time()) + 3600)}", "bad-token"),
    (f"?token={token(ttl=-5)}", "token-expired"),
    (f"?token={token(room='private-r')}", "bad-token"),  # a room pass, not a connection token
])
async def test_a_refused_token_is_closed_4003_before_any_frame(jwt_cluster: Cluster, query: str,
                                                               reason: str) -> None:
    code, why, frames = await refused(jwt_cluster.url + query)
    assert (code, why, frames) == (4003, reason, [])


async def test_a_connection_is_closed_when_its_token_expires(jwt_cluster: Cluster) -> None:
    exp = int(time.time()) + 2
    c = await connect(f"{jwt_cluster.url}?token={token(ttl=None, exp=exp)}")
    await sync(c)  # usable until then
    assert await close_code(c) == 4003
    assert c.ws.protocol.close_rcvd is not None and c.ws.protocol.close_rcvd.reason == "token-expired"
    assert time.time() >= exp  # not before its time


async def test_refresh_token_extends_the_connection(jwt_cluster: Cluster) -> None:
    exp = int(time.time()) + 2
    c = await connect(f"{jwt_cluster.url}?token={token(ttl=None, exp=exp)}")
    try:
        later = int(time.time()) + 600
        reply = await c.request({"action": "refresh-token", "id": "r1",
                                 "message_body": {"token": token(ttl=None, exp=later)}},
                                "token-refreshed")
        assert reply["message_body"] == {"user": "ann", "expires": later}
        assert reply["target"] == c.id
        # Past the old expiry and two expiry ticks: still connected and served.
        while time.time() < exp + 2.5:
            await asyncio.sleep(0.25)
        await sync(c)
        assert c.ws.close_code is None
    finally:
        await c.close()


@pytest.mark.parametrize(("new", "code"), [
    ("garbage", "bad-token"),
    (token("mallory"), "bad-token"),  # another user's token
    (token(ttl=-5), "token-expired"),
    (token(room="private-r"), "bad-token"),  # the user's own room pass
    (None, "bad-token"),
])
async def test_a_refused_refresh_keeps_the_connection(jwt_cluster: Cluster, new: str | None,
                                                      code: str) -> None:
    c = await connect(f"{jwt_cluster.url}?token={token()}")
    try:
        await c.send({"action": "refresh-token", "id": 5,
                      "message_body": {} if new is None else {"token": new}})
        err = await c.error(code)
        assert err["id"] == 5 and err["message_body"]["action"] == "refresh-token"
        await sync(c)  # still connected, still served
    finally:
        await c.close()


async def test_without_tokens_refresh_token_is_routed_like_any_action(open_cluster: Cluster) -> None:
    c = await connect(open_cluster.url)
    try:
        body = (await c.expect("client-connected"))["message_body"]
        assert body["client"] == c.id and "user" not in body  # no user
        await c.send({"action": "refresh-token", "id": 1, "message_body": {"token": "x"}})
        err = await c.next(lambda m: m.get("id") == 1)
        assert err["action"] == "error" and err["message_body"]["code"] == "missing-target"
    finally:
        await c.close()


# ------------------------------------------------------------------ client IDs, actions

async def test_client_ids_are_random_under_the_gateway_prefix(open_cluster: Cluster) -> None:
    clients = [await connect(open_cluster.url) for _ in range(8)]
    try:
        for c in clients:
            assert re.fullmatch(r"gw\d+-[0-9a-f]+\.[0-9a-f]{16}", c.id), c.id
        tails = sorted(int(c.id.rpartition(".")[2], 16) for c in clients)
        assert len(set(tails)) == 8
        assert all(b - a > 1000 for a, b in zip(tails, tails[1:], strict=False))
    finally:
        for c in clients:
            await c.close()


@pytest.mark.parametrize("action", ["say\u202ehi", "say\u2066", "\u200fsay", "say\x1b[31m",
                                    "say\nhi", "say\x85", "say\u2028"])
async def test_control_and_bidi_characters_in_an_action_are_bad_action(open_cluster: Cluster,
                                                                       action: str) -> None:
    c = await connect(open_cluster.url)
    try:
        await c.send({"action": action, "target": "r", "id": "bad"})
        err = await c.error("bad-action")
        assert err["id"] == "bad" and err["target"] == "r"
        await sync(c)
    finally:
        await c.close()


# ------------------------------------------------------------------ Origin

async def test_another_origin_gets_403_at_the_upgrade(jwt_cluster: Cluster) -> None:
    url = f"{jwt_cluster.url}?token={token()}"
    for origin in ("https://evil.example", "null", "http://game.example"):
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(url, origin=Origin(origin))
        assert info.value.response.status_code == 403
    ok = await connect(url, origin=Origin(ORIGIN))
    await ok.close()
    plain = await connect(url)  # no Origin: not a browser, allowed (docs/protocol.md)
    await plain.close()


# ------------------------------------------------------------------ connection limits

async def test_connection_limits_close_1013_before_any_frame(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    c = module_cluster(tmp_path_factory, gateways=1,
                       args=["--max-connections", "4", "--max-connections-per-ip", "2"])
    opened: list[Client] = []
    try:
        def url_from(addr: str) -> tuple[str, dict[str, Any]]:
            return c.url, {"local_addr": (addr, 0)}

        for addr in ("127.0.0.1", "127.0.0.1"):
            url, kw = url_from(addr)
            opened.append(await connect(url, **kw))
        url, kw = url_from("127.0.0.1")
        assert await refused(url, **kw) == (1013, "too-many-connections", [])  # per address
        for addr in ("127.0.0.2", "127.0.0.2"):  # another address has its own count
            url, kw = url_from(addr)
            opened.append(await connect(url, **kw))
        url, kw = url_from("127.0.0.3")
        assert await refused(url, **kw) == (1013, "too-many-connections", [])  # per gateway
        await opened.pop(0).close()

        deadline = time.monotonic() + DEADLINE
        while True:  # a place frees up once the gateway has seen the close
            url, kw = url_from("127.0.0.1")
            try:
                opened.append(await connect(url, **kw))
                break
            except ConnectionClosed:
                assert time.monotonic() < deadline, "the freed place was never given back"
                await asyncio.sleep(0.1)
    finally:
        for client in opened:
            await client.close()
        c.stop()


# ------------------------------------------------------------------ TLS

def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshstream test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory,
                tls_files: tuple[Path, Path]) -> Iterator[Cluster]:
    cert, key = tls_files
    trust = ssl.create_default_context(cafile=str(cert))
    base = tmp_path_factory.mktemp("cluster")
    c = Cluster(base, args=["--tls-cert", str(cert), "--tls-key", str(key)],
                env={"MESHSTREAM_JWT_SECRET": SECRET}, tls=trust)
    yield c
    c.stop()


async def test_wss_carries_a_chat_and_closes_cleanly(tls_cluster: Cluster) -> None:
    assert tls_cluster.tls is not None
    url = f"{tls_cluster.url}?token={token()}"
    a = await connect(url, ssl=tls_cluster.tls)
    b = await connect(url, ssl=tls_cluster.tls)
    room = uid()
    await join(a, room)
    await join(b, room)
    await a.send({"action": "say", "target": room, "message_body": {"text": "over TLS"}})
    got = await b.expect("say", target=room)
    assert got["message_body"] == {"text": "over TLS"} and got["sender"] == a.id
    for c in (a, b):  # the client closes: the server's close frame comes back, then TLS ends
        await asyncio.wait_for(c.ws.close(), DEADLINE)
        assert c.ws.protocol.close_rcvd is not None and c.ws.protocol.close_rcvd.code == 1000


async def test_wss_server_closes_complete_too(tls_cluster: Cluster) -> None:
    assert tls_cluster.tls is not None
    code, reason, frames = await refused(tls_cluster.url, ssl=tls_cluster.tls)
    assert (code, reason, frames) == (4003, "token-required", [])  # a close frame, not a cut link


def test_https_serves_healthz_and_the_page(tls_cluster: Cluster) -> None:
    for path, expected in (("/healthz", b"ok\n"), ("/", b"<")):
        with urllib.request.urlopen(f"https://127.0.0.1:{tls_cluster.port}{path}", timeout=5,
                                    context=tls_cluster.tls) as r:
            assert r.status == 200 and r.read().startswith(expected)


def test_a_tls_1_2_client_is_served_and_nothing_went_wrong(tls_cluster: Cluster,
                                                           tls_files: tuple[Path, Path]) -> None:
    """TLS 1.2 is the floor, and it works; the wss/https tests above used 1.3. After
    them all, no gateway logged an error or a traceback (a TLS close, say)."""
    tls12 = ssl.create_default_context(cafile=str(tls_files[0]))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with urllib.request.urlopen(f"https://127.0.0.1:{tls_cluster.port}/healthz", timeout=5,
                                context=tls12) as r:
        assert r.status == 200
    log = tls_cluster.read_log()
    assert "Traceback" not in log and '"level": "error"' not in log, log


@pytest.mark.parametrize("files", ["missing", "garbage"])
def test_a_gateway_with_unusable_tls_files_refuses_to_start(tmp_path: Path, files: str) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    if files == "garbage":
        cert.write_text("not a certificate\n")
        key.write_text("not a key\n")
    cmd = [sys.executable, "-m", "services.cli", "gateway", "--index", "1", "--port", "1",
           "--run-dir", str(tmp_path / "run"), "--metrics-port", "0",
           "--tls-cert", str(cert), "--tls-key", str(key)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    out = r.stdout + r.stderr
    assert "gateway cannot start" in out and "cannot load the TLS certificate" in out, out
    assert str(cert) in out
    assert json.dumps("not a key")[1:-1] not in out  # never the files' content


def test_run_says_it_is_up_over_https_and_wss(tls_cluster: Cluster) -> None:
    """The supervisor's own health probe speaks TLS when the gateways do."""
    deadline = time.monotonic() + 30
    while "meshstream is up" not in tls_cluster.read_log():
        assert time.monotonic() < deadline, tls_cluster.read_log()
        time.sleep(0.1)
    log = tls_cluster.read_log()
    assert f"meshstream is up: https://127.0.0.1:{tls_cluster.port}/" in log
    assert f"wss://127.0.0.1:{tls_cluster.port}/wsmesh" in log


@pytest.mark.parametrize("setting", ["tls", "jwt-public-key"])
def test_run_refuses_unusable_files_before_starting_any_child(tmp_path: Path, setting: str) -> None:
    """A file no gateway could use stops `meshstream run` at once (exit 2, the reason),
    instead of gateways crash-looping under the supervisor."""
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    extra = (["--tls-cert", str(junk), "--tls-key", str(junk)] if setting == "tls"
             else ["--jwt-public-key", str(junk)])
    cmd = [sys.executable, "-m", "services.cli", "run", "--port", "1", "--no-watchers",
           "--run-dir", str(tmp_path / "run"), "--metrics-port", "0", *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    expected = "cannot load the TLS certificate" if setting == "tls" else "is not a PEM public key"
    assert expected in r.stderr and str(junk) in r.stderr, r.stderr
    assert '"msg": "started"' not in r.stdout + r.stderr  # the supervisor started no child
