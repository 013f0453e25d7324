"""The smallest useful watcher: rooms named "echo-…" where a bot answers every frame.

It is the Python twin of examples/node-watcher (which runs "dice-…" rooms) and
the example in docs/watchers.md.
"""

from __future__ import annotations

from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind
from meshstream_zmq.watcher import Event, Message, Watcher


def build(config: Config) -> Watcher:
    bot = Watcher("echo", prefixes=["echo-"], config=config)

    @bot.on("join-room")
    def join(msg: Message) -> None:
        bot.join(msg.client, msg.room)

    @bot.on_event(EventKind.CLIENT_JOINED_ROOM)
    def greet(ev: Event) -> None:
        bot.send_room(ev.room, "echo-joined", {"client": ev.client}, sender="echo-bot")

    @bot.on("leave-room")
    def leave(msg: Message) -> None:
        bot.remove(msg.client, msg.room)

    @bot.on("*")
    def echo(msg: Message) -> None:
        bot.send_room(msg.room, "echo", {"action": msg.action, "from": msg.client, **msg.body},
                      sender="echo-bot")

    return bot
