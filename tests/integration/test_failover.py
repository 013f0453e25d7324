"""A primary/backup processor pair on one machine (loopback TCP): the standby takes over when
the active processor is SIGKILLed, clients keep their connections and rooms, a Words Battle
game goes on, every frame sent during the switch is answered, and the old primary comes
back as the standby. (Across hosts, with CURVE and cut links: tests/integration/test_multihost.py.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.protocol import State

from tests.conftest import ROOT, Client, _die_with_the_tests
from tests.integration.support import gateway_index
from tests.integration.test_words_battle import is_, start_long_game, to_room

OUTAGE = ("processor-unavailable", "processor-restarted", "watcher-unavailable",
          "watcher-restarted", "unknown-room")
DEADLINE = 30.0  # for anything to happen (2 shared cores, 6 interpreters); never a measure


def free_block(n: int = 4) -> int:
    """A port P with P..P+n-1 free on loopback (a processor's --tcp takes four)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n >= 65536:
            continue
        try:
            held = []
            for p in range(base, base + n):
                t = socket.socket()
                held.append(t)
                t.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for t in held:
                t.close()
        return base
    raise AssertionError("no block of free ports")


class Proc:
    """A meshstream command in its own process group, logging to a file."""

    def __init__(self, tmp: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.log = tmp / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *args], cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_the_tests)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


class Pair:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {"primary": free_block(), "backup": free_block()}
        self.ws_port = free_block(1)
        self.procs: dict[str, Proc] = {}
        self.url = f"ws://127.0.0.1:{self.ws_port}/wsmesh"

    def processor(self, which: str, name: str | None = None) -> Proc:
        other = "backup" if which == "primary" else "primary"
        args = ["processor", "--tcp", f"127.0.0.1:{self.ports[which]}",
                "--peer", f"127.0.0.1:{self.ports[other]}", "--run-dir",
                str(self.tmp / f"{name or which}-run"), "--metrics-port", "0"]
        p = Proc(self.tmp, name or which, args + (["--backup"] if which == "backup" else []))
        self.procs[name or which] = p
        return p

    def gateways(self) -> Proc:
        p = Proc(self.tmp, "gateways", [
            "run", "--no-processor", "--gateways", "2", "--port", str(self.ws_port),
            "--host", "127.0.0.1", "--run-dir", str(self.tmp / "gw-run"), "--metrics-port", "0",
            "--tcp", f"127.0.0.1:{self.ports['primary']}",
            "--peer", f"127.0.0.1:{self.ports['backup']}", "--time-scale", "0.2"])
        self.procs["gateways"] = p
        return p

    def healthz(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ws_port}/healthz", timeout=2) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()
        except OSError:
            return 0, ""

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.text()[-3000:]}" for p in self.procs.values())

    async def until(self, cond, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not cond():
            assert time.monotonic() < deadline, f"timed out: {what}\n{self.logs()}"
            await asyncio.sleep(0.05)  # polling a log or /healthz, with a deadline

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.kill(signal.SIGTERM if p.proc.poll() is None else signal.SIGKILL)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    made = Pair(tmp_path)
    try:
        yield made
    finally:
        made.stop()


def serving(proc: Proc) -> bool:
    lines = [line for line in proc.text().splitlines()
             if '"processor active"' in line or '"processor passive' in line]
    return bool(lines) and '"processor active"' in lines[-1]


async def test_the_standby_takes_over_from_a_sigkilled_processor(pair: Pair) -> None:
    primary = pair.processor("primary")
    backup = pair.processor("backup")
    pair.gateways()
    await pair.until(lambda: pair.healthz()[0] == 200, "the gateways healthy")
    assert "processor: primary tcp://127.0.0.1:" in pair.healthz()[1]
    assert serving(primary) and not serving(backup)

    clients: dict[int, Client] = {}
    while len(clients) < 2:  # one player on each gateway process
        c = await Client.connect(pair.url)
        if gateway_index(c) in clients:
            await c.close()
        else:
            clients[gateway_index(c)] = c
    a, b = clients.values()
    try:
        room = "failover1"
        await start_long_game(pair, a, b, room)  # type: ignore[arg-type]

        primary.kill()
        killed = time.monotonic()
        # chat until the game's echo comes back: every attempt gets an answer, never silence
        n = 0
        while True:
            assert time.monotonic() - killed < DEADLINE, f"no takeover\n{pair.logs()}"
            n += 1
            text = f"still here {n}"
            await a.send({**to_room("send-message", room, {"message": text}), "id": f"m{n}"})
            echoed = is_("send-message", room, a.id, message=text)
            mine = f"m{n}"  # errors for earlier frames (sent before the switch) wait in the inbox
            reply = await a.next(lambda m, echoed=echoed, mine=mine: echoed(m) or (
                m["action"] == "error" and m.get("id") == mine))
            if reply["action"] == "send-message":
                if "useravatar" in reply["message_body"]:
                    break  # the game's own echo: the games watcher runs the room again
                # relayed (the room not yet claimed again): the games watcher's hello is still on its way
                await asyncio.sleep(0.05)
                continue
            assert reply["message_body"]["code"] in OUTAGE , reply
            await asyncio.sleep(0.05)  # a client's pace, under the default rate limit
        took = time.monotonic() - killed
        assert reply["message_body"]["useravatar"] == "al"  # alice's, in the same game
        late = [m for m in a.inbox if m["action"] == "error"]  # frames sent before the switch
        assert all(m["message_body"]["code"] in OUTAGE for m in late), late
        await b.next(is_("send-message", room, a.id, message=text))
        assert a.ws.state is State.OPEN and b.ws.state is State.OPEN
        assert serving(backup)
        status, body = pair.healthz()
        assert status == 200 and "processor: backup tcp://127.0.0.1:" in body, body
        print(f"failover: the game answered again {took:.2f} s after the SIGKILL")

        # the old primary comes back: it finds the backup active and becomes the standby
        again = pair.processor("primary", "primary-again")
        await pair.until(lambda: '"processor passive' in again.text(), "the primary passive")
        assert serving(backup) and "processor: backup" in pair.healthz()[1]
        await a.send(to_room("send-message", room, {"message": "after"}))
        await b.next(is_("send-message", room, a.id, message="after"))
    finally:
        for c in (a, b):
            await c.close()
