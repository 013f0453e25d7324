"""Structured logs and Prometheus metrics, shared by every process."""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
from typing import Any

from prometheus_client import Counter, Gauge, start_http_server

_ROLE = "meshstream"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: easy to grep, easy to ship."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "proc": _ROLE,
            "pid": os.getpid(),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(role: str, level: str = "info") -> logging.Logger:
    """Name the process (ps/top show it), and log JSON lines to stderr."""
    global _ROLE
    _ROLE = role
    try:
        import setproctitle

        setproctitle.setproctitle(f"meshstream: {role}")
    except ImportError:  # pragma: no cover - setproctitle is a dependency
        pass
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # websockets logs every connection at INFO: too chatty for thousands of clients.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))
    return logging.getLogger("meshstream")


def tune_gc() -> None:
    """Fewer, later garbage collections: state is long-lived (connections, rooms), and a
    full collection over it is a latency spike. Start-up objects are frozen out of it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def log(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})


def serve_metrics(port: int) -> None:
    """Prometheus on 127.0.0.1:port; a taken port costs the metrics, never the process."""
    if port:
        try:
            start_http_server(port, addr="127.0.0.1")
        except OSError as exc:
            logging.getLogger("meshstream").error(
                "metrics port unavailable; running without metrics",
                extra={"fields": {"port": port, "error": str(exc)}})


# One registry per process; every metric is labelled by the process role implicitly
# (each process serves its own endpoint).
CONNECTIONS = Gauge("meshstream_connections", "open WebSocket connections (gateway)")
CLIENTS = Gauge("meshstream_clients", "known clients (processor)")
ROOMS = Gauge("meshstream_rooms", "rooms, the lobby included (processor)")
FRAMES_IN = Counter("meshstream_frames_in", "client frames received")
FRAMES_OUT = Counter("meshstream_frames_out", "client frames delivered (per recipient)")
ENVELOPES_IN = Counter("meshstream_envelopes_in", "ZeroMQ messages received")
ENVELOPES_OUT = Counter("meshstream_envelopes_out", "ZeroMQ messages sent")
ERRORS = Counter("meshstream_errors", "error frames sent to clients", ["code"])
DROPS = Counter("meshstream_drops", "messages that could not be sent", ["reason"])
QUEUE_BYTES = Gauge("meshstream_send_queue_bytes", "bytes waiting in WebSocket write buffers")
CLOSES = Counter("meshstream_closes", "connections closed by the server", ["code"])
