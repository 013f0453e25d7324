"""The watchers bundled with meshstream, by name (see `meshstream watcher NAME`)."""

from __future__ import annotations

from meshstream_zmq.config import Config

BUNDLED: dict[str, str] = {}


def bundled(config: Config) -> list[tuple[str, list[str]]]:
    """(process name, `meshstream watcher` arguments) for each watcher `make run` starts."""
    return [(f"watcher {name}", [name]) for name in BUNDLED]


def run_watcher(name: str, config: Config) -> int:
    if name not in BUNDLED:
        raise SystemExit(f"unknown watcher {name!r}; known: {', '.join(BUNDLED) or 'none'}")
    return 0
