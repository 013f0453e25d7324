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

# What a log line may copy of any one value: client-provided text (room names, actions,
# bodies, names) reaches log lines, and a 64 KiB frame must not become a 64 KiB line.
LOG_TEXT = 200  # characters of one string field (call sites with client text use `bounded`)
LOG_ITEMS = 10  # items of one list field (or dict)
LOG_MESSAGE = 500  # characters of the message itself
LOG_TRACE_LINE = 1000  # characters of one line of a traceback
LOG_TRACE = 20_000  # characters of a whole traceback


def bounded(value: Any, limit: int = LOG_TEXT) -> Any:
    """`value` made safe to copy into a log line: a string over `limit` characters is cut,
    with a marker saying how much was left out (`abc…[+1234 chars]`); a list or tuple keeps
    LOG_ITEMS items, each bounded; a dict's values are bounded. Anything else is returned
    as it is (numbers, bools, None)."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return f"{value[:limit]}…[+{len(value) - limit} chars]"
    if isinstance(value, bytes | bytearray):
        return bounded(bytes(value).decode("utf-8", "replace"), limit)
    if isinstance(value, list | tuple | set | frozenset):
        items = [bounded(v, limit) for v in list(value)[:LOG_ITEMS]]
        if len(value) > LOG_ITEMS:
            items.append(f"…[+{len(value) - LOG_ITEMS} items]")
        return items
    if isinstance(value, dict):
        shown = list(value.items())[:LOG_ITEMS]
        out = {bounded(str(k), limit): bounded(v, limit) for k, v in shown}
        if len(value) > LOG_ITEMS:
            out["…"] = f"+{len(value) - LOG_ITEMS} items"
        return out
    if isinstance(value, int | float | bool) or value is None:
        return value
    return bounded(str(value), limit)


def _bounded_trace(text: str) -> str:
    lines = [bounded(line, LOG_TRACE_LINE) for line in text.splitlines()]
    return bounded("\n".join(lines), LOG_TRACE)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: easy to grep, easy to ship.

    Every value is bounded (see `bounded`), whoever logged it: no line copies more than
    a few hundred characters of any string a client could have chosen.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "proc": _ROLE,
            "pid": os.getpid(),
            "msg": bounded(record.getMessage(), LOG_MESSAGE),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update({str(k)[:LOG_TEXT]: bounded(v) for k, v in fields.items()})
        if record.exc_info:
            entry["exc"] = _bounded_trace(self.formatException(record.exc_info))
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


class Throttle:
    """At most one log line per `interval` seconds for each kind of event a peer can cause
    at will (bad requests, failed frames): `due(kind, now)` is None while quiet, else how
    many of that kind were suppressed since the last line (0 for the first)."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def due(self, kind: str, now: float) -> int | None:
        last = self.last.get(kind)
        if last is not None and now - last < self.interval:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return None
        self.last[kind] = now
        return self.suppressed.pop(kind, 0)


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
PROCESSOR = Gauge("meshstream_processor", "1 for the processor this gateway talks to "
                  "(primary: --tcp, backup: --peer), 0 for the other (gateway)", ["processor"])
PROCESSOR_ACTIVE = Gauge("meshstream_processor_active", "1 while this processor serves: alone, "
                         "always; of a pair, the active one (processor)")
PAIR_TERM = Gauge("meshstream_pair_term", "takeovers in this processor pair so far, as this "
                  "processor knows (processor)")
CLOSES = Counter("meshstream_closes", "connections closed by the server", ["code"])
LOG_BEHIND = Gauge("meshstream_log_behind_entries", "with --log, a standby processor: entries "
                   "the log has stored that it has not applied yet (its lag)")
LOOP_STALL = Gauge("meshstream_processor_loop_max_seconds", "the processor's longest loop "
                   "iteration (inputs handled and output flushed) since it started (processor)")
GATEWAY_LAG = Gauge("meshstream_gateway_lag_bytes", "output the processor sent a gateway that "
                    "it has not yet applied (processor)", ["gateway"])

WATCHER_OVERFLOW = Counter("meshstream_watcher_overflow", "client frames refused (rate-limited) and "
                           "events dropped because a room's lane in an asyncio watcher was full "
                           "(meshstream_zmq/aio.py)", ["kind"])

WEBHOOK_EVENTS = Counter("meshstream_webhook_events", "webhook events by outcome: delivered, "
                         "overflow (the queue was full), expired (retried for 5 minutes) (webhooks)",
                         ["outcome"])
WEBHOOK_POSTS = Counter("meshstream_webhook_posts", "webhook POSTs by result: the HTTP status, "
                        "or error for no answer (webhooks)", ["status"])
WEBHOOK_QUEUE = Gauge("meshstream_webhook_queue", "webhook events waiting to be delivered (webhooks)")

STARTED_AT = time.time()  # this process's start (each child imports this module afresh)


def _total(metric: Counter | Gauge) -> float:
    """The sum of a metric over its labels, as Prometheus would scrape it."""
    return sum(s.value for m in metric.collect() for s in m.samples
               if not s.name.endswith("_created"))


def process_stats(role: str, restarts: int = 0) -> Any:
    """This process's figures for the admin page (a `ProcessStats`), read from its own
    metrics above and the OS: CPU time from os.times(), RSS from /proc (Linux; 0 elsewhere)."""
    from meshstream_zmq import meshstream_pb2 as pb

    times = os.times()
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = 0
    return pb.ProcessStats(role=role, pid=os.getpid(), started_at=STARTED_AT, restarts=restarts,
                           cpu_seconds=times.user + times.system, rss_bytes=rss,
                           connections=int(_total(CONNECTIONS)), frames_in=int(_total(FRAMES_IN)),
                           frames_out=int(_total(FRAMES_OUT)), errors=int(_total(ERRORS)),
                           drops=int(_total(DROPS)))
