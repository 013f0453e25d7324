"""The watchers bundled with meshstream, by name (`meshstream watcher NAME`)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable
from typing import Protocol

from meshstream_zmq import observability as obs
from meshstream_zmq.config import Config

# name -> "module:function" building the watcher from a Config
BUNDLED: dict[str, str] = {
    "echo": "services.echo:build",
    "words-battle-lobby": "services.words_battle.watchers:build_lobby",
    "words-battle-games": "services.words_battle.watchers:build_games",
    "webhooks": "services.webhooks:build",
}
DEFAULT = ["words-battle-lobby", "words-battle-games"]  # what `make run` starts

log = logging.getLogger("meshstream.watchers")


class AsyncService(Protocol):
    """A watcher (meshstream_zmq/aio.py's `AsyncWatcher`), or a service around one."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


def bundled(config: Config) -> list[str]:
    """The watchers `make run` starts, by name (each runs as `meshstream: watcher NAME`):
    the Words Battle pair, and the webhooks when a webhook URL is configured."""
    return list(DEFAULT) + (["webhooks"] if config.webhook_url else [])


def load(name: str) -> Callable[[Config], AsyncService]:
    module, _, func = BUNDLED[name].partition(":")
    build: Callable[[Config], AsyncService] = getattr(importlib.import_module(module), func)
    return build


async def _serve(service: AsyncService) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    await service.run()


def run_watcher(name: str, config: Config) -> int:
    if name not in BUNDLED:
        raise SystemExit(f"unknown watcher {name!r}; known: {', '.join(BUNDLED)}")
    obs.setup(f"watcher {name}", config.log_level)
    obs.serve_metrics(config.metrics_port)
    asyncio.run(_serve(load(name)(config)))
    return 0
