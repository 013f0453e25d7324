"""The watchers bundled with meshstream, by name (`meshstream watcher NAME`)."""

from __future__ import annotations

import importlib
import logging
import signal
from collections.abc import Callable

from meshstream_zmq import observability as obs
from meshstream_zmq.config import Config
from meshstream_zmq.watcher import Watcher

# name -> "module:function" building the Watcher from a Config
BUNDLED: dict[str, str] = {
    "echo": "services.echo:build",
    "words-battle-lobby": "services.words_battle.watchers:build_lobby",
    "words-battle-games": "services.words_battle.watchers:build_games",
}
DEFAULT = ["words-battle-lobby", "words-battle-games"]  # what `make run` starts

log = logging.getLogger("meshstream.watchers")


def bundled(config: Config) -> list[str]:
    """The watchers `make run` starts, by name (each runs as `meshstream: watcher NAME`)."""
    return list(DEFAULT)


def load(name: str) -> Callable[[Config], Watcher]:
    module, _, func = BUNDLED[name].partition(":")
    build: Callable[[Config], Watcher] = getattr(importlib.import_module(module), func)
    return build


def run_watcher(name: str, config: Config) -> int:
    if name not in BUNDLED:
        raise SystemExit(f"unknown watcher {name!r}; known: {', '.join(BUNDLED)}")
    obs.setup(f"watcher {name}", config.log_level)
    obs.serve_metrics(config.metrics_port)
    watcher = load(name)(config)
    signal.signal(signal.SIGTERM, lambda *_: watcher.stop())
    signal.signal(signal.SIGINT, lambda *_: watcher.stop())
    watcher.run()
    return 0
