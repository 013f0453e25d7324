"""The smallest useful watcher: rooms named "echo-…" where a bot answers every frame.

It is the Python twin of examples/node-watcher (which runs "dice-…" rooms) and
the example in docs/watchers.md.
"""

from __future__ import annotations

from meshstream_zmq.aio import AsyncWatcher, CommandError, Event, Message
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind


def build(config: Config) -> AsyncWatcher:
    bot = AsyncWatcher("echo", prefixes=["echo-"], config=config)

    @bot.on("join-room")
    async def join(msg: Message) -> None:
        try:
            await bot.join(msg.client, msg.room)
        except CommandError as exc:  # e.g. already-member: the client is told, with its id
            bot.error(msg, exc)

    @bot.on_event(EventKind.CLIENT_JOINED_ROOM)
    async def greet(ev: Event) -> None:
        await bot.send_room(ev.room, "echo-joined", {"client": ev.client}, sender="echo-bot")

    @bot.on("leave-room")
    async def leave(msg: Message) -> None:
        try:
            await bot.remove(msg.client, msg.room)
        except CommandError as exc:
            bot.error(msg, exc)

    @bot.on("*")
    async def echo(msg: Message) -> None:
        await bot.send_room(msg.room, "echo", {"action": msg.action, "from": msg.client, **msg.body},
                            sender="echo-bot")

    return bot
