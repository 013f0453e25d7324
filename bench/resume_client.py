"""One worker process of the recovery benchmark (bench.resume_bench): a slice of the clients.

    python -m bench.resume_client --port P --rooms 0,2,4,... --per-room 4

Commands come on stdin, one JSON object a line (`connect`, `chat`, `stop`, `settle`,
`stats`, `quit`); answers and progress go to stdout, one JSON object a line. Every room's
members live in the same worker, so each worker knows, for its rooms, every message sent
and every frame received, and checks the recovery promises on its own:

- every room message's (room epoch, offset) follows the last one received by that client:
  offset + 1 is in order, a lower one is a duplicate, a higher one a gap (lost messages);
- a connection's frames come in increasing `seq`;
- a connection that drops is resumed (`?resume=<session>&seq=<epoch>:<last seq>`, backoff
  with full jitter); the time it took, and resumed:false (with its reason) are recorded;
- after a processor restart, a client that meets a new room epoch asks `history` with its
  old epoch and counts the `history-lost` error, or counts the resumed:false it gets on a
  reconnect; an offset gap in an unchanged epoch is a silent gap (the failure this checks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Bench:
    """What the worker's clients share: the options, the per-room records, the counters."""

    def __init__(self, o: argparse.Namespace) -> None:
        self.o = o
        self.url = f"ws://{o.host}:{o.port}/wsmesh"
        self.chatting = False
        self.closing = False
        self.sent: dict[str, set[tuple[int, int]]] = {}  # room -> (client idx, n) sent
        self.seen: dict[str, set[tuple[int, int]]] = {}  # room -> (client idx, n) received by anyone
        self.c: dict[str, int] = {k: 0 for k in (
            "received", "gaps", "dups", "seq_disorder", "resumed", "refused", "drops",
            "connect_failures", "silent_gaps", "history_lost", "history_other", "sent_refused")}
        self.reasons: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}  # after a processor restart: client -> outcome counts
        self.clients: list[Client] = []


class Client:
    def __init__(self, b: Bench, idx: int, room: str) -> None:
        self.b, self.idx, self.room = b, idx, room
        self.ws: Any = None
        self.id = ""
        self.session = ""
        self.proc_epoch = ""
        self.last_seq = 0
        self.room_epoch = ""
        self.last_offset = 0
        self.joined = asyncio.Event()
        self.up = asyncio.Event()  # connected (and resumed) now
        self.n = 0
        self.dropped_at: float | None = None
        # (dropped at, upgraded at, resumed at), monotonic: the upgrade apart from the answer
        self.resume_times: list[tuple[float, float, float]] = []
        self.opened_at = 0.0
        self.outcome = ""  # after a processor restart: history-lost | refused:<reason> | ...
        self.restarting = False  # the processor-restart check is on
        self.task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ connection

    async def open(self, resume: bool) -> dict[str, Any]:
        """Connect (resuming when asked); the client-connected body."""
        url = self.b.url
        if resume:
            url += f"?resume={self.session}&seq={self.proc_epoch}:{self.last_seq}"
        ws = await websockets.connect(url, max_size=None, compression=None, ping_interval=None,
                                      open_timeout=30, close_timeout=2)
        self.opened_at = time.monotonic()
        frame = await asyncio.wait_for(ws.recv(), 60)
        lines = str(frame).splitlines()
        first = json.loads(lines[0])
        if first.get("action") != "client-connected":
            await ws.close()
            raise RuntimeError(f"first frame {first.get('action')}")
        body = first.get("message_body") or {}
        self.ws = ws
        self.session = body.get("session", "")
        self.proc_epoch = str(body.get("epoch", ""))
        fresh = not body.get("resumed")
        if fresh:
            self.id = first.get("target") or body.get("client", "")
            self.last_seq = 0
        for line in lines[1:]:  # replay sharing the frame
            self.handle(line)
        return body

    async def run(self) -> None:
        """Read until the connection ends; reconnect (resume) unless the worker is closing."""
        while True:
            try:
                async for frame in self.ws:
                    for line in str(frame).splitlines():
                        self.handle(line)
            except ConnectionClosed:
                pass
            except Exception as exc:  # noqa: BLE001 - a broken read is a drop
                emit({"ev": "log", "msg": f"client {self.idx}: {exc!r}"})
            self.up.clear()
            if self.b.closing:
                return
            self.b.c["drops"] += 1
            self.dropped_at = time.monotonic()
            await self.reconnect()

    async def reconnect(self) -> None:
        o = self.b.o
        attempt = 0
        while not self.b.closing:
            # full jitter: uniform(0, min(cap, base * 2^attempt))
            await asyncio.sleep(random.uniform(0, min(o.backoff_cap, o.backoff * 2 ** attempt)))
            attempt += 1
            try:
                body = await self.open(resume=bool(self.session))
            except Exception:  # noqa: BLE001 - refused or reset: try again
                self.b.c["connect_failures"] += 1
                continue
            if body.get("resumed"):
                self.b.c["resumed"] += 1
                assert self.dropped_at is not None
                self.resume_times.append((self.dropped_at, self.opened_at, time.monotonic()))
                if self.restarting and not self.outcome:
                    self.outcome = "resumed-true"
            else:
                reason = str(body.get("reason", "none"))
                self.b.c["refused"] += 1
                self.b.reasons[reason] = self.b.reasons.get(reason, 0) + 1
                if self.restarting and not self.outcome:
                    self.outcome = f"resumed-false:{reason}"
                # a new identity: start the room over
                self.room_epoch, self.last_offset = "", 0
                self.joined.clear()
                await self.ws.send(json.dumps({"action": "join-room", "target": self.room,
                                               "message_body": {}}))
            self.up.set()
            return

    # ------------------------------------------------------------ frames

    def handle(self, line: str) -> None:
        try:
            m = json.loads(line)
        except ValueError:
            return
        seq = m.get("seq")
        offset = m.get("offset")
        if isinstance(seq, int):
            if offset is not None and isinstance(m.get("epoch"), str):
                pe = m["epoch"].rsplit(".", 1)[0]
                if pe != self.proc_epoch:  # the processor restarted under a live connection
                    self.proc_epoch, self.last_seq = pe, 0
            if seq <= self.last_seq:
                self.b.c["seq_disorder"] += 1
            self.last_seq = max(self.last_seq, seq)
        action = m.get("action")
        if offset is not None and m.get("target") == self.room:
            self.room_msg(m, int(offset), str(m.get("epoch", "")))
        elif action == "error":
            self.on_error(m)
        elif action == "history" and self.restarting and not self.outcome:
            self.outcome = "history-answered"  # history after an epoch change: not history-lost
            self.b.c["history_other"] += 1

    def room_msg(self, m: dict[str, Any], offset: int, epoch: str) -> None:
        b = self.b
        b.c["received"] += 1
        if m.get("action") == "client-joined-room" and (m.get("message_body") or {}).get(
                "client") == self.id and not self.joined.is_set():
            self.room_epoch, self.last_offset = epoch, offset  # its own join: the start
            self.joined.set()
            return
        if not self.room_epoch:
            return  # not a member yet (cannot happen) or starting over
        if epoch != self.room_epoch:
            if self.restarting:
                if not self.outcome:
                    self.outcome = "epoch-change"
                    asyncio.get_running_loop().create_task(self.ask_history())
            else:
                b.c["silent_gaps"] += 1  # an epoch change nobody expected
            self.room_epoch, self.last_offset = epoch, offset
            return
        if offset == self.last_offset + 1:
            self.last_offset = offset
        elif offset <= self.last_offset:
            b.c["dups"] += 1
        else:
            b.c["gaps"] += offset - self.last_offset - 1
            if self.restarting:
                b.c["silent_gaps"] += 1
            self.last_offset = offset
        if m.get("action") == "send-message":
            body = m.get("message_body") or {}
            c, n = body.get("c"), body.get("n")
            if isinstance(c, int) and isinstance(n, int):
                b.seen.setdefault(self.room, set()).add((c, n))

    def on_error(self, m: dict[str, Any]) -> None:
        body = m.get("message_body") or {}
        code = body.get("code") or body.get("error")
        if body.get("action") == "history" or m.get("target") == self.room and code == "history-lost":
            if code == "history-lost":
                self.b.c["history_lost"] += 1
                if self.outcome in ("", "epoch-change"):
                    self.outcome = "history-lost"
            else:
                self.b.c["history_other"] += 1
        else:
            self.b.c["sent_refused"] += 1

    async def ask_history(self) -> None:
        """After an epoch change: ask for what followed the last offset under the old epoch."""
        old = self.old_epoch
        try:
            await self.ws.send(json.dumps({"action": "history", "target": self.room, "message_body": {
                "since": self.old_offset, "limit": 10, "epoch": old}}))
        except ConnectionClosed:
            pass

    # ------------------------------------------------------------ chat

    async def chat(self) -> None:
        period = 1 / self.b.o.rate
        await asyncio.sleep(random.random() * period)
        while self.b.chatting:
            if self.up.is_set() and self.joined.is_set():
                n = self.n
                try:
                    await self.ws.send(json.dumps({"action": "send-message", "target": self.room,
                                                   "message_body": {"c": self.idx, "n": n}}))
                    self.n += 1
                    self.b.sent.setdefault(self.room, set()).add((self.idx, n))
                except ConnectionClosed:
                    pass
            await asyncio.sleep(period * random.uniform(0.9, 1.1))

    old_epoch = ""
    old_offset = 0


# ---------------------------------------------------------------- commands

async def connect_all(b: Bench) -> dict[str, Any]:
    t0 = time.monotonic()
    sem = asyncio.Semaphore(b.o.concurrency)
    failed = 0

    async def one(c: Client) -> None:
        nonlocal failed
        async with sem:
            for _ in range(5):
                try:
                    await c.open(resume=False)
                    break
                except Exception:  # noqa: BLE001 - counted, retried
                    failed += 1
                    await asyncio.sleep(0.2)
            else:
                return
            await c.ws.send(json.dumps({"action": "join-room", "target": c.room, "message_body": {}}))
            c.up.set()
            c.task = asyncio.create_task(c.run())

    await asyncio.gather(*(one(c) for c in b.clients))
    t1 = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.joined.wait() for c in b.clients if c.ws)), 120)
    except TimeoutError:
        pass
    return {"ev": "connected", "clients": len(b.clients), "open": sum(1 for c in b.clients if c.ws),
            "joined": sum(1 for c in b.clients if c.joined.is_set()), "connect_errors": failed,
            "connect_s": round(t1 - t0, 3), "join_s": round(time.monotonic() - t1, 3)}


def room_finals(b: Bench) -> dict[str, int]:
    finals: dict[str, int] = {}
    for c in b.clients:
        if c.room_epoch:
            finals[c.room] = max(finals.get(c.room, 0), c.last_offset)
    return finals


def settled(b: Bench) -> bool:
    finals = room_finals(b)
    if any(not c.up.is_set() or c.last_offset != finals.get(c.room, -1) for c in b.clients):
        return False
    return all(b.sent.get(r, set()) <= b.seen.get(r, set()) for r in b.sent)


async def settle(b: Bench, timeout: float, quiet: float) -> dict[str, Any]:
    """Wait until every member of every room is at the room's last offset and every message
    sent was seen (or nothing arrived for `quiet` seconds: what is missing then is lost)."""
    deadline = time.monotonic() + timeout
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        if settled(b):
            break
        if b.c["received"] != last_count:
            last_count, last_change = b.c["received"], time.monotonic()
        elif time.monotonic() - last_change > quiet and all(c.up.is_set() for c in b.clients):
            break
        await asyncio.sleep(0.1)
    return stats(b)


def stats(b: Bench) -> dict[str, Any]:
    finals = room_finals(b)
    tail = sum(finals.get(c.room, 0) - c.last_offset for c in b.clients if c.room_epoch)
    sent = sum(len(s) for s in b.sent.values())
    unrelayed = sum(len(s - b.seen.get(r, set())) for r, s in b.sent.items())
    times = [t for c in b.clients for t in c.resume_times]
    return {"ev": "stats", **b.c, "cpu_s": round(time.process_time(), 3), "tail_missing": tail,
            "lost": b.c["gaps"] + tail, "sent": sent,
            "unrelayed": unrelayed, "reasons": b.reasons, "resume_times": times,
            "up": sum(1 for c in b.clients if c.up.is_set()),
            "held_offsets": finals, "outcomes": outcome_counts(b)}


def outcome_counts(b: Bench) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in b.clients:
        if c.restarting:
            k = c.outcome or "none"
            out[k] = out.get(k, 0) + 1
    return out


async def restart_check(b: Bench, timeout: float) -> dict[str, Any]:
    """The processor is being restarted: every client records how it learns of the lost
    history (history-lost after an epoch change, or resumed:false on a reconnect)."""
    for c in b.clients:
        c.restarting = True
        c.old_epoch, c.old_offset = c.room_epoch, c.last_offset
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(c.outcome and c.outcome != "epoch-change" for c in b.clients):
            break
        await asyncio.sleep(0.2)
    return {"ev": "restart-checked", "outcomes": outcome_counts(b),
            "silent_gaps": b.c["silent_gaps"]}


async def main_async(o: argparse.Namespace) -> None:
    b = Bench(o)
    b.clients = [Client(b, r * o.per_room + j, f"rb-{r}") for r in o.rooms for j in range(o.per_room)]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    chats: list[asyncio.Task[None]] = []
    progress: asyncio.Task[None] | None = None

    async def report_progress() -> None:
        while True:
            await asyncio.sleep(0.5)
            emit({"ev": "progress", "up": sum(1 for c in b.clients if c.up.is_set()),
                  "drops": b.c["drops"], "resumed": b.c["resumed"], "refused": b.c["refused"],
                  "received": b.c["received"]})

    emit({"ev": "ready", "clients": len(b.clients)})
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        name = cmd["cmd"]
        if name == "connect":
            emit(await connect_all(b))
            progress = asyncio.create_task(report_progress())
        elif name == "chat":
            b.chatting = True
            chats = [asyncio.create_task(c.chat()) for c in b.clients]
            emit({"ev": "chatting"})
        elif name == "stop":
            b.chatting = False
            await asyncio.gather(*chats, return_exceptions=True)
            emit({"ev": "stopped"})
        elif name == "settle":
            emit(await settle(b, float(cmd.get("timeout", 60)), float(cmd.get("quiet", 5))))
        elif name == "stats":
            emit(stats(b))
        elif name == "restart-check":
            emit(await restart_check(b, float(cmd.get("timeout", 60))))
        elif name == "quit":
            break
    b.closing = True
    b.chatting = False
    if progress:
        progress.cancel()
    await asyncio.gather(*(c.ws.close() for c in b.clients if c.ws), return_exceptions=True)
    emit({"ev": "bye"})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.resume_client")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rooms", type=lambda s: [int(x) for x in s.split(",") if x], required=True)
    ap.add_argument("--per-room", type=int, default=4)
    ap.add_argument("--rate", type=float, default=0.1, help="messages/s per client")
    ap.add_argument("--backoff", type=float, default=0.5, help="first reconnect delay bound, s")
    ap.add_argument("--backoff-cap", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=100, help="connects in flight")
    o = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(main_async(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
