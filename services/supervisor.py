"""`meshstream run`: start every service, restart the ones that die, stop them all cleanly.

Children are started with `multiprocess` (the dill-based fork of multiprocessing) in
its *spawn* context: each is a fresh interpreter (no inherited event loop, socket or
lock), so a crash in one never corrupts another. Each is handed the whole `Config`,
pickled by the spawn machinery, so every setting — present or future — reaches every
child as the supervisor holds it; only `metrics_port` differs per child. `ps` shows
each by its title. Each child's first act is to ask the kernel for SIGTERM when the
supervisor dies (PR_SET_PDEATHSIG), so even a SIGKILLed supervisor leaves nothing
behind.

With `--log embedded` (the default of `meshstream run` with a processor) the first child
is the processor's log, a nats-server (services/embedded_log.py): started and ready before
the others, a processor started only while it accepts connections, stopped last.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import ssl
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import multiprocess
from multiprocess.connection import wait

from meshstream_zmq import observability as obs
from meshstream_zmq.config import Config
from services import embedded_log

log = logging.getLogger("meshstream.supervisor")

STOP_GRACE = 4.0
PR_SET_PDEATHSIG = 1
PID_FILE = "supervisor.pid"  # in the run directory: `meshstream restart-gateways` signals it
RESTART_STATUS = "restart-gateways"  # in the run directory: "<n> ok|failed <why>" after each
READY_TIMEOUT = 30.0  # a restarted gateway not welcomed by then stops the rolling restart
POLL = 0.05  # how often a rolling restart looks for the replacement's ready file


# A fresh interpreter per child, its arguments pickled with dill. Spawning also starts
# multiprocess's resource tracker (one small helper process, shown in `ps` as
# `python -c from multiprocess.resource_tracker import main...`): it would clean up
# named semaphores or shared memory a child leaked, and exits with the supervisor.
SPAWN = multiprocess.get_context("spawn")


def role_title(role: str, arg: int | str) -> str:
    """'processor', 'gateway 2', 'watcher echo': what `ps` shows after 'meshstream: '
    ('log': the embedded nats-server, which `ps` shows as itself)."""
    return role if arg == "" else f"{role} {arg}"


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when the supervisor dies; exit now if it already has."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:  # it died before prctl: no signal will come
        raise SystemExit(0)


def child_main(role: str, arg: int | str, config: Config, parent: int) -> None:
    """Every child's entry, in a fresh interpreter: the role's own `main` with the whole Config."""
    _die_with_parent(parent)
    try:
        import setproctitle

        setproctitle.setproctitle(f"meshstream: {role_title(role, arg)}")  # before the imports
    except ImportError:  # pragma: no cover - setproctitle is a dependency
        pass
    if role == "processor":
        from services import processor

        processor.main(config)
    elif role == "gateway":
        from services import gateway

        gateway.main(config, int(arg))
    elif role == "watcher":
        from services.watchers import run_watcher

        sys.exit(run_watcher(str(arg), config))
    else:
        raise SystemExit(f"unknown role {role!r}")


Entry = Callable[[str, int | str, Config, int], None]


@dataclass
class Child:
    role: str  # processor | gateway | watcher
    arg: int | str  # gateway index, watcher name ("" for the processor)
    config: Config  # everything this child needs, handed over whole
    entry: Entry = child_main  # module-level, so spawn pickles it by reference
    proc: Any = None  # a `Process` while it runs
    restarts: int = 0
    restart_at: float = 0.0
    crashes: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return role_title(self.role, self.arg)

    def start(self) -> None:
        self.proc = SPAWN.Process(target=self.entry, name=f"meshstream: {self.name}", daemon=True,
                                  args=(self.role, self.arg,
                                        replace(self.config, restarts=self.restarts), os.getpid()))
        self.proc.start()
        log.info("started", extra={"fields": {"child": self.name, "pid": self.proc.pid}})

    def reap(self, now: float) -> None:
        """It exited: log it, release it, and schedule its restart."""
        log.warning("child exited; restarting", extra={"fields": {
            "child": self.name, "code": self.proc.exitcode, "restarts": self.restarts + 1}})
        self.proc.close()
        self.proc = None
        self.restarts += 1
        self.restart_at = now + self.backoff(now)

    def backoff(self, now: float) -> float:
        """Restart at once, unless it keeps crashing: then wait up to 5 s."""
        self.crashes = [t for t in self.crashes if now - t < 30] + [now]
        return min(5.0, 0.25 * 2 ** (len(self.crashes) - 1)) if len(self.crashes) > 1 else 0.0


@dataclass
class LogServer(Child):
    """`--log embedded`: nats-server on `port` (chosen at start, kept for its restarts)."""

    port: int = 0

    def start(self) -> None:
        self.proc = embedded_log.start(self.config.run_dir, self.port, os.getpid())
        log.info("started", extra={"fields": {"child": self.name, "pid": self.proc.pid,
                                              "port": self.port}})

    def wait_ready(self) -> str:
        """Until it accepts connections: "" then, or why not."""
        deadline = time.monotonic() + embedded_log.READY_TIMEOUT
        while not embedded_log.accepting(self.port):
            if self.proc.exitcode is not None:
                return (f"nats-server exited ({self.proc.exitcode}): "
                        f"{embedded_log.last_words(self.config.run_dir)}")
            if time.monotonic() > deadline:
                return f"nats-server took no connection on port {self.port} in " \
                       f"{embedded_log.READY_TIMEOUT:g} s"
            time.sleep(0.02)
        return ""


def children(config: Config, watchers: list[str], processor: bool = True,
             first_index: int = 1) -> list[Child]:
    """The processor (unless a gateway host's `--no-processor`), gateways K..K+N-1
    (K: `--first-index`) and the named watchers, each with its own metrics port
    (processor: the base, the i-th gateway base+i, watcher j: base+N+j; 0 keeps metrics off)."""
    config = replace(config, run_dir=config.resolved_run_dir)  # resolved once, for all
    base = config.metrics_port

    def port(offset: int) -> int:
        return base + offset if base else 0

    out: list[Child] = []
    if processor and config.log == "embedded":  # the processor's log, on a port of its own
        server = LogServer("log", "", config, port=embedded_log.free_port())
        config = replace(config, log=embedded_log.url(server.port))
        out.append(server)
    out += [Child("processor", "", config)] if processor else []
    out += [Child("gateway", first_index + i - 1, replace(config, metrics_port=port(i)))
            for i in range(1, config.gateways + 1)]
    out += [Child("watcher", name, replace(config, metrics_port=port(config.gateways + j)))
            for j, name in enumerate(watchers, start=1)]
    return out


def healthy(port: int, tls: bool = False) -> bool:
    """A gateway answers /healthz on this host (over TLS when it serves TLS: the certificate
    names the public host, not 127.0.0.1, so it is not verified for this local probe)."""
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    scheme = "https" if tls else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/healthz", timeout=1,
                                    context=context) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class RollingRestart:
    """Restart the gateways one at a time: SIGTERM one (its clients are closed 1012 and
    resume on the others), start its replacement at once, wait until the replacement
    writes its PID to its ready file (welcomed by the processor and listening), then the
    next. Driven by `step(now)` from the supervisor's loop; `poll` says when to call again."""

    def __init__(self, run_dir: str, kids: list[Child], generation: int) -> None:
        self.run_dir = run_dir
        self.todo = [k for k in kids if k.role == "gateway"]
        self.generation = generation
        self.current: Child | None = None
        self.phase = ""  # "stopping" | "starting"
        self.deadline = 0.0
        self.done = False
        log.info("rolling restart of the gateways", extra={"fields": {"gateways": len(self.todo)}})

    def step(self, now: float) -> None:
        kid = self.current
        if kid is None:
            if not self.todo:
                return self.finish("ok")
            kid = self.current = self.todo.pop(0)
            self.phase = "stopping"
            self.deadline = now + STOP_GRACE + 3.0
            if kid.proc is not None and kid.proc.exitcode is None:
                log.info("restarting", extra={"fields": {"child": kid.name}})
                kid.proc.terminate()
        if self.phase == "stopping":
            if kid.proc is not None and kid.proc.exitcode is None:
                if now >= self.deadline:
                    kid.proc.kill()
                return None
            if kid.proc is not None:  # exited as asked: no crash, restarted at once
                kid.proc.close()
                kid.proc = None
            if kid.restart_at <= now:
                kid.restart_at = now
                kid.start()
                self.phase = "starting"
                self.deadline = now + READY_TIMEOUT
            return None
        # starting: a replacement that crashes is restarted by the loop as usual
        if kid.proc is not None and self.ready_pid(kid) == kid.proc.pid:
            log.info("restarted and welcomed", extra={"fields": {"child": kid.name}})
            self.current = None
            return self.step(now)
        if now >= self.deadline:
            return self.finish(f"failed {kid.name} was not welcomed in {READY_TIMEOUT:g} s")
        return None

    def ready_pid(self, kid: Child) -> int:
        from services.gateway import ready_file

        try:
            return int(ready_file(self.run_dir, int(kid.arg)).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def finish(self, outcome: str) -> None:
        self.done = True
        level = logging.INFO if outcome == "ok" else logging.ERROR
        log.log(level, "rolling restart done", extra={"fields": {"outcome": outcome}})
        write_status(self.run_dir, self.generation, outcome)


def write_status(run_dir: str, generation: int, outcome: str) -> None:
    path = os.path.join(run_dir, RESTART_STATUS)
    try:
        with open(path + ".tmp", "w") as f:
            f.write(f"{generation} {outcome}\n")
        os.replace(path + ".tmp", path)
    except OSError as exc:
        log.error("cannot write the restart status", extra={"fields": {"error": str(exc)}})


def read_status(run_dir: str) -> tuple[int, str]:
    """(generation, outcome) of the last rolling restart; (0, "") if none."""
    try:
        with open(os.path.join(run_dir, RESTART_STATUS)) as f:
            n, _, outcome = f.read().strip().partition(" ")
        return int(n), outcome
    except (OSError, ValueError):
        return 0, ""


def write_pid(run_dir: str) -> str | None:
    """<run dir>/supervisor.pid (the directory made 0700 if missing); its path, or None."""
    path = os.path.join(run_dir, PID_FILE)
    try:
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(path + ".tmp", path)
    except OSError as exc:
        log.warning("cannot write the supervisor's pid file", extra={"fields": {"error": str(exc)}})
        return None
    return path


def run(config: Config, watchers: list[str] | None = None, processor: bool = True,
        first_index: int = 1) -> int:
    obs.setup("supervisor", config.log_level)
    kids = children(config, watchers or [], processor, first_index)
    server = next((k for k in kids if isinstance(k, LogServer)), None)
    run_dir = config.resolved_run_dir
    stopping = False
    restart_asked = False
    rolling: RollingRestart | None = None

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    def restart_gateways(*_: object) -> None:
        nonlocal restart_asked
        restart_asked = True

    # A signal writes to this pipe, so waiting on children's sentinels wakes at once.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, restart_gateways)
    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    pid_file = write_pid(run_dir)
    try:
        if server is not None:  # first, and ready: without it a processor exits at once
            server.start()
            why = server.wait_ready()
            if why:
                print(f"meshstream run: the embedded log (--log embedded): {why}",
                      file=sys.stderr, flush=True)
                return 2
        for kid in kids:
            if kid.proc is None:
                kid.start()
        announced = False
        while not stopping:
            now = time.monotonic()
            if restart_asked and rolling is None:
                restart_asked = False
                rolling = RollingRestart(run_dir, kids, read_status(run_dir)[0] + 1)
            if rolling is not None:
                rolling.step(now)
                if rolling.done:
                    rolling = None
            busy = rolling.current if rolling is not None else None
            for kid in kids:
                if kid is busy and rolling is not None and rolling.phase == "stopping":
                    continue  # the rolling restart reaps and starts it
                if kid.proc is None:
                    if now >= kid.restart_at and kid.role == "processor" and server is not None \
                            and not embedded_log.accepting(server.port):
                        kid.restart_at = now + POLL  # its log first (being restarted too)
                    elif now >= kid.restart_at:
                        kid.start()
                elif kid.proc.exitcode is not None:
                    kid.reap(now)
            if not announced and config.gateways and healthy(config.port, bool(config.tls_cert)):
                announced = True
                host = "localhost" if config.host in ("0.0.0.0", "", "::") else config.host
                s = "s" if config.tls_cert else ""
                print(f"meshstream is up: http{s}://{host}:{config.port}/  "
                      f"(WebSocket: ws{s}://{host}:{config.port}/wsmesh, "
                      f"{config.gateways} gateways)", flush=True)
            due = [kid.restart_at - now for kid in kids if kid.proc is None]
            if not announced and config.gateways:
                due.append(0.1)  # poll /healthz until it answers
            if rolling is not None or restart_asked:
                due.append(POLL)  # watch the replacement's ready file
            timeout = min(due, default=None)
            # wakes when a child exits (its sentinel), a signal arrives, or a restart is due
            wait([wake_r, *(kid.proc.sentinel for kid in kids if kid.proc is not None)],
                 None if timeout is None else max(0.0, timeout))
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
    finally:
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
        if rolling is not None:
            rolling.finish("failed stopped")
        shutdown(kids)
        if pid_file is not None:
            try:
                os.unlink(pid_file)
            except OSError:
                pass
        clean_run_dir(run_dir, embedded=server is not None)
    return 0


def clean_run_dir(run_dir: str, embedded: bool = False) -> None:
    """Once every child is gone: what they left in the run directory (ready files, the
    restart status, IPC sockets; `embedded`: the embedded log's store, settings and log),
    and the directory itself if nothing else is in it."""
    root = Path(run_dir)
    if embedded:
        shutil.rmtree(root / embedded_log.DIR, ignore_errors=True)
    left = [*root.glob("gateway-*.ready"), root / RESTART_STATUS]
    left += [root / name for name in ("inbound", "outbound", "watchers")
             if (root / name).is_socket()]
    for path in left:
        with contextlib.suppress(OSError):
            path.unlink()
    with contextlib.suppress(OSError):
        root.rmdir()  # refused while anything else is in it: left as it is


def shutdown(kids: list[Child]) -> int:
    """SIGTERM everyone, wait, then SIGKILL what is left: never leave a process behind.
    The embedded log last, once the processor (its writer) is gone."""
    servers: list[Child] = [k for k in kids if isinstance(k, LogServer)]
    stopped = terminate([k for k in kids if k not in servers]) + terminate(servers)
    log.info("stopped", extra={"fields": {"children": stopped}})
    return 0


def terminate(kids: list[Child]) -> int:
    """Stop these children (SIGKILL after STOP_GRACE); how many were running."""
    live = [k.proc for k in kids if k.proc is not None and k.proc.exitcode is None]
    gateways = {k.proc for k in kids if k.role == "gateway"}
    for proc in reversed(live):  # watchers and gateways first, the processor last
        if proc in gateways:  # SIGINT: stopped for good, its clients are closed 1001, not 1012
            os.kill(proc.pid, signal.SIGINT)
        else:
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for proc in live:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    return len(live)
