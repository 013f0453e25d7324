"""`meshstream webhooks` against a real cluster and a real HTTP receiver run by the test,
which checks every signature, fails, stalls and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, Client, Cluster, _die_with_the_tests, free_port
from tests.integration.support import join, uid, wait_for

SECRET = b"test-webhook-secret-0123456789"


class Receiver:
    """A backend's webhook endpoint on 127.0.0.1: each request's answer is the next of
    `script` ("500", "stall": read it and never answer; past the script, 200)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.script: list[str] = []
        self.accepted: list[dict[str, Any]] = []  # the events of the bodies answered 200
        self.answers: list[str] = []
        self.bad_signatures = 0
        self.stalled: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:  # keep-alive: several requests per connection
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in head.decode().split("\r\n")[1:] if line)}
                body = await reader.readexactly(int(headers["content-length"]))
                expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(headers.get("x-meshstream-signature", ""), expected):
                    self.bad_signatures += 1
                answer = self.script.pop(0) if self.script else "200"
                self.answers.append(answer)
                if answer == "stall":
                    self.stalled.append(writer)
                    await asyncio.Event().wait()  # until the sender gives up on it
                if answer == "200":
                    self.accepted.extend(json.loads(body)["events"])
                status = b"200 OK" if answer == "200" else b"500 Internal Server Error"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()

    def events(self, room: str) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for e in self.accepted:
            if e.get("room") != room:
                continue
            if e["name"] == "room_message":
                if e["action"] == "say":
                    out.append(("say", e["sender"], e["data"]["n"]))
            else:
                out.append((e["name"], e.get("client")))
        return out


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", receiver.port)
    try:
        yield receiver
    finally:
        for writer in receiver.stalled:
            writer.close()
        server.close()


@contextlib.contextmanager
def webhooks(cluster: Cluster, tmp: Path, url: str) -> Any:
    secret = tmp / "webhook.secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    cmd = [sys.executable, "-m", "services.cli", "webhooks", "--run-dir", cluster.run_dir,
           "--port", str(cluster.port), "--metrics-port", "0", "--url", url,
           "--secret", str(secret), "--rooms", "hook-", "--timeout", "1"]
    log = open(tmp / "webhooks.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_the_tests)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def test_every_event_arrives_signed_and_in_order_through_failures_and_a_stall(
        cluster: Cluster, connect, tmp_path: Path) -> None:
    async with receiving() as receiver:
        with webhooks(cluster, tmp_path, f"http://127.0.0.1:{receiver.port}/hook"):
            a: Client = await connect()
            b: Client = await connect()
            # The observer's subscription takes a moment: wait until a probe room is heard.
            while True:
                probe = uid("hook-probe-")
                await join(a, probe)
                await a.request({"action": "leave-room", "target": probe, "id": uid()},
                                "client-left-room")
                with contextlib.suppress(AssertionError):
                    await wait_for(lambda p=probe: receiver.events(p), timeout=1)
                    break
            # From now on the backend fails twice, stalls once, then comes back.
            receiver.script = ["500", "500", "stall"]
            room, other = uid("hook-"), uid("other-")
            await join(a, room)
            await join(b, room)
            await join(a, other)
            for n in range(10):
                await a.send({"action": "say", "target": room, "message_body": {"n": n}})
                await b.send({"action": "say", "target": room, "message_body": {"n": 100 + n}})
                await a.send({"action": "say", "target": other, "message_body": {"n": n}})
            await b.expect("say", message_body={"n": 9})  # a's last frame was relayed
            await a.request({"action": "leave-room", "target": room, "id": uid()}, "client-left-room")
            await b.request({"action": "leave-room", "target": room, "id": uid()}, "client-left-room")

            def complete() -> bool:
                return receiver.events(room)[-1:] == [("room_vacated", None)]
            await wait_for(complete, timeout=60, what="every event, after the failures")

    assert "stall" in receiver.answers  # it stalled once, and the POST was tried again
    assert receiver.answers.count("500") == 2 and receiver.bad_signatures == 0
    events = receiver.events(room)
    assert events[0] == ("room_occupied", None)
    assert events[-1] == ("room_vacated", None)
    assert sorted(events[1:3]) == sorted([("member_added", a.id), ("member_added", b.id)])
    says = [e for e in events if e[0] == "say"]
    assert [e[2] for e in says if e[1] == a.id] == list(range(10))  # in order, each once
    assert [e[2] for e in says if e[1] == b.id] == [100 + n for n in range(10)]
    assert sorted(events[-3:-1]) == sorted([("member_removed", a.id), ("member_removed", b.id)])
    assert len(events) == 1 + 2 + 20 + 2 + 1
    # rooms outside --rooms: their members are told, their messages are not
    assert ("member_added", a.id) in receiver.events(other)
    assert not [e for e in receiver.events(other) if e[0] == "say"]
