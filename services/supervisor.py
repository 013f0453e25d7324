"""`meshstream run`: start every service, restart the ones that die, stop them all cleanly.

Children are separate interpreters (subprocesses running `meshstream <role>`), so
a crash in one never corrupts another, and `ps` shows each by its title. They are
told to die with the supervisor (PR_SET_PDEATHSIG), so even a SIGKILLed
supervisor leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

from meshstream_zmq import observability as obs
from meshstream_zmq.config import Config

log = logging.getLogger("meshstream.supervisor")

STOP_GRACE = 4.0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - not Linux
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    crashes: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(self.argv, env=env, preexec_fn=_die_with_parent)
        self.started = time.monotonic()
        log.info("started", extra={"fields": {"child": self.name, "pid": self.proc.pid}})

    def backoff(self) -> float:
        """Restart at once, unless it keeps crashing: then wait up to 5 s."""
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < 30] + [now]
        return min(5.0, 0.25 * 2 ** (len(self.crashes) - 1)) if len(self.crashes) > 1 else 0.0


def children(config: Config, watchers: list[tuple[str, list[str]]]) -> list[Child]:
    cli = [sys.executable, "-m", "services.cli"]
    metrics = config.metrics_port
    out = [Child("processor", [*cli, "processor", "--metrics-port", str(metrics)])]
    for i in range(1, config.gateways + 1):
        out.append(Child(f"gateway {i}", [*cli, "gateway", "--index", str(i),
                                         "--metrics-port", str(metrics + i if metrics else 0)]))
    for j, (name, args) in enumerate(watchers, start=1):
        port = metrics + config.gateways + j if metrics else 0
        out.append(Child(name, [*cli, "watcher", *args, "--metrics-port", str(port)]))
    return out


def child_env(config: Config) -> dict[str, str]:
    """Children read their shared settings from MESHSTREAM_* variables."""
    env = dict(os.environ)
    values = {
        "port": config.port, "host": config.host, "run_dir": config.resolved_run_dir,
        "tcp": config.tcp, "inbound": config.inbound, "outbound": config.outbound,
        "watchers_endpoint": config.watchers_endpoint, "max_frame": config.max_frame,
        "send_queue": config.send_queue, "rate_limit": config.rate_limit,
        "rate_burst": config.rate_burst, "heartbeat": config.heartbeat,
        "peer_timeout": config.peer_timeout, "time_scale": config.time_scale,
        "web_dir": config.web_dir, "log_level": config.log_level,
    }
    for key, value in values.items():
        env[f"MESHSTREAM_{key.upper()}"] = str(value)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), env.get("PYTHONPATH", "")] if p)
    return env


def wait_healthy(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def run(config: Config, watchers: list[tuple[str, list[str]]] | None = None) -> int:
    obs.setup("supervisor", config.log_level)
    env = child_env(config)
    kids = children(config, watchers or [])
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for kid in kids:
        kid.start(env)
    announced = False
    restart_at: dict[str, float] = {}
    while not stopping:
        if not announced and wait_healthy(config.port, 0.2):
            announced = True
            host = "localhost" if config.host in ("0.0.0.0", "", "::") else config.host
            print(f"meshstream is up: http://{host}:{config.port}/  "
                  f"(WebSocket: ws://{host}:{config.port}/wsmesh, "
                  f"{config.gateways} gateways)", flush=True)
        now = time.monotonic()
        for kid in kids:
            if kid.proc is None or kid.proc.poll() is None:
                if kid.proc is None and now >= restart_at.get(kid.name, 0) and not stopping:
                    kid.start(env)
                continue
            code = kid.proc.returncode
            log.warning("child exited; restarting", extra={"fields": {
                "child": kid.name, "code": code, "restarts": kid.restarts + 1}})
            kid.restarts += 1
            kid.proc = None
            restart_at[kid.name] = now + kid.backoff()
        time.sleep(0.05 if announced else 0)
    return shutdown(kids)


def shutdown(kids: list[Child]) -> int:
    """SIGTERM everyone, wait, then SIGKILL what is left: never leave a process behind."""
    live = [k.proc for k in kids if k.proc is not None and k.proc.poll() is None]
    for proc in reversed(live):  # watchers and gateways first, the processor last
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for proc in live:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.info("stopped", extra={"fields": {"children": len(live)}})
    return 0
