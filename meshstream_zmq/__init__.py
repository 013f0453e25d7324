"""meshstream: real-time rooms over WebSockets, routed through ZeroMQ.

The package holds what every process shares: the pure routing core
(`core`), the client JSON protocol (`protocol`), the internal protobuf
schema (`meshstream_pb2`, generated from `proto/`), configuration and
endpoints (`config`), and the watcher SDK (`aio`).
"""

import secrets
import time

LOBBY = "mesh-global"
SERVER_SENDER = "meshstream"


def new_epoch() -> str:
    """Unique per process start: time plus randomness (pids repeat across restarts)."""
    return f"{int(time.time() * 1000):x}{secrets.token_hex(2)}"
