"""The `raw_ws` peer: rooms in one Python process on `websockets` + uvloop, no pipeline.

It speaks the part of meshstream's protocol the benchmark uses, on ws://HOST:PORT/wsmesh:

    client: {"action": "join-room", "target": ROOM, "message_body": {}}
    server: {"action": "client-joined-room", "target": ROOM, "sender": ID}      (to the joiner)
    client: {"action": "send-message", "target": ROOM, "message_body": {...}}
    server: the same object with "sender": ID, to every member (the sender too)
    client: {"action": "leave-room", "target": ROOM}

A frame may hold several JSON objects split by newlines; anything else is ignored. What a
single Python process can do when a message costs one decode, one encode and one broadcast:
the bound meshstream's pipeline is compared with.

    python -m bench.peers.rooms --port 9000 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import signal
import sys
from typing import Any

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

PATH = "/wsmesh"
encode = json.JSONEncoder(separators=(",", ":")).encode


class Rooms:
    """Room name -> its member connections."""

    def __init__(self) -> None:
        self.members: dict[str, set[ServerConnection]] = {}

    def join(self, room: str, ws: ServerConnection) -> None:
        self.members.setdefault(room, set()).add(ws)

    def leave(self, room: str, ws: ServerConnection) -> None:
        members = self.members.get(room)
        if members is not None:
            members.discard(ws)
            if not members:
                del self.members[room]


def messages(frame: str | bytes) -> list[dict[str, Any]]:
    """The well-formed requests in a frame (objects with a string action and target)."""
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    out = []
    for line in text.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and all(isinstance(msg.get(k), str) for k in ("action", "target")):
            out.append(msg)
    return out


def only_wsmesh(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?", 1)[0] != PATH:
        return connection.respond(404, "Not Found\n")
    return None


async def serve_rooms(host: str, port: int) -> None:
    rooms, ids = Rooms(), itertools.count(1)

    async def handler(ws: ServerConnection) -> None:
        me, joined = str(next(ids)), set()
        try:
            async for frame in ws:
                for msg in messages(frame):
                    action, room = msg["action"], msg["target"]
                    if action == "send-message":
                        msg["sender"] = me
                        broadcast(rooms.members.get(room, ()), encode(msg))
                    elif action == "join-room":
                        rooms.join(room, ws)
                        joined.add(room)
                        await ws.send(encode({"action": "client-joined-room", "target": room, "sender": me}))
                    elif action == "leave-room":
                        rooms.leave(room, ws)
                        joined.discard(room)
        except ConnectionClosed:
            pass
        finally:
            for room in joined:
                rooms.leave(room, ws)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, host, port, compression=None, process_request=only_wsmesh, backlog=2048,
                     max_size=1 << 20, ping_interval=None):
        print(f"raw_ws listening on {host}:{port}", file=sys.stderr, flush=True)
        await stop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.peers.rooms", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # websockets' "skipped broadcast" warnings, in the server log
    uvloop.run(serve_rooms(args.host, args.port))


if __name__ == "__main__":
    main()
