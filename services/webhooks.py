"""Webhooks: room and member events (and chosen rooms' messages) POSTed to a backend.

    meshstream webhooks --url https://backend.example/meshstream --secret FILE [--rooms chat-,game-]

An observer on the asyncio watcher SDK (meshstream_zmq/aio.py): it claims no room, and
takes every room's events, and the room-wide messages of the `--rooms` prefixes, from
the processor's outbound socket. Each becomes one JSON event (`webhook_event`) in a
bounded queue; one sender POSTs them in order, batched (Pusher's shape):

    {"time_ms": 1700000000000, "events": [{"name": "member_added", "room": "chat-1",
                                            "client": "gw1-….3", "user": "alice"}, …]}

signed `X-Meshstream-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>`.
A batch that gets no 2xx answer is sent again after 0.5 s, 1 s, 2 s … (at most 30 s
apart) until 5 minutes have passed since its first try; then its events are dropped
(counted, logged). Events are never reordered: the next batch waits for this one. A
full queue (10,000 events) drops new events, counted and logged at most every 5 s.
docs/operations.md, "Webhooks", says the same for operators.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx

from meshstream_zmq import LOBBY
from meshstream_zmq import observability as obs
from meshstream_zmq.aio import AsyncWatcher, Event, RoomMessage
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind

log = logging.getLogger("meshstream.webhooks")

NAME = "webhooks"  # the watcher's name (and, with --keys-dir, its key's)
SIGNATURE = "X-Meshstream-Signature"
QUEUE_LIMIT = 10_000  # events waiting; more are dropped (counted)
BATCH = 100  # events per POST at most
MIN_SECRET = 16  # characters

_NAMES = {
    EventKind.ROOM_CREATED: "room_occupied",
    EventKind.ROOM_DELETED: "room_vacated",
    EventKind.CLIENT_JOINED_ROOM: "member_added",
    EventKind.CLIENT_LEFT_ROOM: "member_removed",
    EventKind.CLIENT_AWAY: "client_away",
    EventKind.CLIENT_BACK: "client_back",
}


def webhook_event(item: Event | RoomMessage) -> dict[str, Any] | None:
    """What the backend is told of one event or message (None: nothing)."""
    if isinstance(item, RoomMessage):
        return {"name": "room_message", "room": item.room, "action": item.action,
                "sender": item.sender, "data": item.body}
    name = _NAMES.get(item.kind)
    if name is None:
        return None
    if item.kind in (EventKind.CLIENT_AWAY, EventKind.CLIENT_BACK):
        # one per room of the client, and one for the lobby: the backend hears it once
        if item.room not in ("", LOBBY):
            return None
        return {"name": name, "client": item.client, "user": item.user}
    if item.room == LOBBY:
        return None  # every client is in the lobby; its joins are connections, not members
    if item.kind in (EventKind.ROOM_CREATED, EventKind.ROOM_DELETED):
        return {"name": name, "room": item.room}
    return {"name": name, "room": item.room, "client": item.client, "user": item.user}


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Backoff:
    """When to try a failed batch again, and when to give it up."""

    first: float = 0.5
    cap: float = 30.0
    give_up_after: float = 300.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.first * 2 ** (failures - 1))


def read_secret(path: str) -> bytes:
    """The secret in `path` (surrounding white space dropped); SystemExit if unusable."""
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise SystemExit(f"webhook secret file {path[:200]!r}: {exc.strerror}") from None
    if len(secret) < MIN_SECRET:
        raise SystemExit(f"webhook secret file {path[:200]!r}: the secret must be at least "
                         f"{MIN_SECRET} characters (e.g. `openssl rand -hex 32 > FILE`)")
    return secret


class Webhooks:
    """The queue and its one sender, fed by the observer's handlers."""

    def __init__(self, config: Config, *, url: str, secret: bytes, rooms: list[str],
                 queue_limit: int = QUEUE_LIMIT, backoff: Backoff | None = None) -> None:
        self.url = url
        self.secret = secret
        self.timeout = config.webhook_timeout
        self.queue_limit = queue_limit
        self.backoff = backoff or Backoff()
        self.queue: deque[dict[str, Any]] = deque()
        self.wake = asyncio.Event()
        self.throttle = obs.Throttle()
        self.bot = AsyncWatcher(NAME, config=config, observe=True, observe_rooms=rooms)
        for kind in _NAMES:
            self.bot.on_event(kind)(self.add)
        self.bot.on_room_message(self.add)

    def add(self, item: Event | RoomMessage) -> None:
        event = webhook_event(item)
        if event is None:
            return
        if len(self.queue) >= self.queue_limit:
            obs.WEBHOOK_EVENTS.labels("overflow").inc()
            self._warn("overflow", "webhook queue full; event dropped", limit=self.queue_limit)
            return
        self.queue.append(event)
        obs.WEBHOOK_QUEUE.set(len(self.queue))
        self.wake.set()

    def _warn(self, kind: str, msg: str, **fields: Any) -> None:
        suppressed = self.throttle.due(kind, time.monotonic())
        if suppressed is not None:
            log.warning(msg, extra={"fields": {**fields, "suppressed": suppressed}})

    async def send(self) -> None:
        """The sender: one batch at a time, each until delivered or given up."""
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.queue:
                    n = min(BATCH, len(self.queue))
                    batch = [self.queue[i] for i in range(n)]
                    outcome = "delivered" if await self._deliver(http, batch) else "expired"
                    for _ in range(n):
                        self.queue.popleft()
                    obs.WEBHOOK_EVENTS.labels(outcome).inc(n)
                    obs.WEBHOOK_QUEUE.set(len(self.queue))

    async def _deliver(self, http: httpx.AsyncClient, events: list[dict[str, Any]]) -> bool:
        body = json.dumps({"time_ms": int(time.time() * 1000), "events": events},
                          separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE: sign(self.secret, body)}
        started, failures = time.monotonic(), 0
        while True:
            try:
                answer = await http.post(self.url, content=body, headers=headers)
                status = str(answer.status_code)
                if 200 <= answer.status_code < 300:
                    obs.WEBHOOK_POSTS.labels(status).inc()
                    return True
            except httpx.HTTPError as exc:
                status = "error"
                self._warn("post-error", "webhook POST failed", error=type(exc).__name__)
            obs.WEBHOOK_POSTS.labels(status).inc()
            failures += 1
            delay = self.backoff.delay(failures)
            if time.monotonic() - started + delay > self.backoff.give_up_after:
                log.error("webhook batch given up", extra={"fields": {
                    "events": len(events), "tries": failures, "last": status}})
                return False
            self._warn("retry", "webhook POST not accepted; retrying", status=status,
                       delay_s=delay, events=len(events))
            await asyncio.sleep(delay)

    async def run(self) -> None:
        sender = asyncio.ensure_future(self.send())
        try:
            await self.bot.run()
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    def stop(self) -> None:
        self.bot.stop()


def build(config: Config) -> Webhooks:
    """`meshstream webhooks` (services/watchers.py runs it)."""
    if not config.webhook_url or not config.webhook_secret_file:
        raise SystemExit("webhooks need --url and --secret (MESHSTREAM_WEBHOOK_URL, "
                         "MESHSTREAM_WEBHOOK_SECRET_FILE)")
    rooms = [p.strip() for p in config.webhook_rooms.split(",") if p.strip()]
    return Webhooks(config, url=config.webhook_url, secret=read_secret(config.webhook_secret_file),
                    rooms=rooms)
