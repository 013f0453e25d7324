"""The harnesses and the servers under test.

Two harnesses drive the same scenarios. The repository's own (the default): bench/node
(loadgen.js, several worker processes; `prepare_own` `npm ci`s it once) and bench/peers
(raw_ws: one `websockets` process; nodesio: Node socket.io). The shared one, an outside
cross-check: `prepare_harness` copies ../shared/bench (its loadgen.js and peer servers) to
bench-results/harness, `npm ci`s it and gives it a venv for the Python peers, once.
`Target` says how to start a server (meshstream by `make run`, or a peer), `Server` starts
one on a free port, waits until it is ready, samples its process tree (bench.sampling) and
stops it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import REPO, log
from bench.sampling import TreeSampler, alive, listening, tree

CACHE = REPO / "bench-results"  # git-ignored
HARNESS = CACHE / "harness"
DEFAULT_SOURCE = REPO.parent / "shared" / "bench"
HOST = "127.0.0.1"
PEERS = ("raw_ws", "nodesio", "pysio")
OWN = REPO / "bench" / "node"  # the own harness's Node packages and loadgen.js
OWN_PEERS = ("raw_ws", "nodesio")
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"


# ------------------------------------------------------------------ the harnesses

def save(results: dict[str, Any], name: str, where: Path = CACHE) -> Path:
    """`results` as <where>/<name>.json, its path recorded in them ("path")."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.json"
    path.write_text(json.dumps(results, indent=1))
    results["path"] = str(path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def npm_ci(where: Path) -> bool:
    """`npm ci` in `where` unless its node_modules matches its package-lock.json already."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        log("bench: no node/npm on PATH")
        return False
    lock = _digest(where / "package-lock.json")
    stamp = where / "node_modules" / ".meshstream-stamp"
    if stamp.exists() and stamp.read_text() == lock:
        return True
    log(f"bench: npm ci in {where} (once)")
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=where, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        log(f"bench: npm ci failed in {where} ({r.stderr.strip()[-300:]})")
        return False
    stamp.write_text(lock)
    return True


def prepare_own() -> bool:
    """The own harness's Node packages (bench/node): True when the Node loadgen can run."""
    return npm_ci(OWN)


def prepare_harness(source: Path, python: str) -> tuple[bool, bool]:
    """Copy the shared harness to HARNESS, `npm ci` it, give it a venv: (node ok, python peers ok)."""
    HARNESS.mkdir(parents=True, exist_ok=True)
    for src in sorted(source.rglob("*")):
        rel = src.relative_to(source)
        if rel.parts[0] in ("node_modules", ".venv", "results"):
            continue
        dest = HARNESS / rel
        if src.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif not dest.exists() or dest.read_bytes() != src.read_bytes():
            shutil.copy2(src, dest)
    node_ok = npm_ci(HARNESS)
    venv = HARNESS / ".venv"
    stamp = venv / ".meshstream-stamp"
    py_ok = stamp.exists()
    if not py_ok:
        log(f"bench: creating {venv} for the Python peers (once)")
        rc = subprocess.run([python, "-m", "venv", str(venv)], stdout=subprocess.DEVNULL).returncode
        if rc == 0:
            rc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "websockets", "uvloop",
                                 "python-socketio", "aiohttp", "pyzmq"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        py_ok = rc == 0
        if py_ok:
            stamp.write_text("ok")
        else:
            log("bench: venv for the Python peers failed; raw_ws and pysio are skipped")
    return node_ok, py_ok


# ------------------------------------------------------------------ targets

class Target:
    def __init__(self, name: str, cmd: list[str], cwd: Path, adapter: str, path: str,
                 listeners: int = 1, metrics_offset: int = 0, metrics_ports: int = 0,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.cmd, self.cwd, self.adapter, self.path = name, cmd, cwd, adapter, path
        self.listeners, self.metrics_offset, self.metrics_ports = listeners, metrics_offset, metrics_ports
        self.env = env or {}


def own_peer_targets() -> dict[str, Target]:
    """The own harness's peers, by name (OWN_PEERS): the same roles as the shared harness's."""
    return {
        "raw_ws": Target("raw_ws", [sys.executable, "-m", "bench.peers.rooms", "--port", "{port}"], REPO,
                         "meshstream", "/wsmesh"),
        "nodesio": Target("nodesio", ["node", "bench/peers/sio_rooms.js", "--port", "{port}"], REPO,
                          "socketio", SIO_PATH),
    }


def peer_targets() -> dict[str, Target]:
    """The shared harness's servers, by name (PEERS)."""
    hpy = str(HARNESS / ".venv" / "bin" / "python")
    sio = SIO_PATH
    return {
        "raw_ws": Target("raw_ws", [hpy, "servers/raw_ws.py", "--port", "{port}"], HARNESS,
                         "meshstream", "/wsmesh"),
        "nodesio": Target("nodesio", ["node", "servers/nodesio.js", "--port", "{port}"], HARNESS,
                          "socketio-lite", sio),
        "pysio": Target("pysio", [hpy, "servers/pysio.py", "--port", "{port}"], HARNESS,
                        "socketio-lite", sio),
    }


def meshstream_target(gateways: int, checkout: Path = REPO, name: str = "meshstream") -> Target:
    """`make run` exactly as the issue says; the supervisor puts metrics on PORT+1000..
    Another `checkout` (e.g. a git worktree of an older commit) is a second meshstream
    target, `name`d apart: an A/B of a change in one run."""
    return Target(name, ["make", "-s", "--no-print-directory", "run", "PORT={port}",
                         f"GATEWAYS={gateways}"], checkout, "meshstream", "/wsmesh",
                  listeners=gateways, metrics_offset=1000,
                  metrics_ports=gateways + 3,  # processor, gateways, 2 watchers
                  env=MESHSTREAM_BENCH_ENV)


# What the benchmark needs set explicitly, whatever the defaults become: loopback only; no
# rate limit (the fanout publisher sends far over 200 frames/s); no connection limits (idle
# holds 10,000 connections from one address on 2 gateways, spread unevenly by SO_REUSEPORT).
MESHSTREAM_BENCH_ENV = {"MESHSTREAM_HOST": HOST, "MESHSTREAM_RATE_LIMIT": "0",
                        "MESHSTREAM_MAX_CONNECTIONS": "0", "MESHSTREAM_MAX_CONNECTIONS_PER_IP": "0"}


# ------------------------------------------------------------------ a started server

def ws_upgrade_ok(port: int, path: str) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.settimeout(2)
            s.sendall((f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            return s.recv(64).startswith(b"HTTP/1.1 101")
    except OSError:
        return False


def free_port(also: tuple[int, ...] = ()) -> int:
    """A free port P (below the ephemeral range the loadgen's connections use) such that
    P + each offset in `also` is free too (meshstream's metrics ports)."""
    rnd = random.Random()
    for _ in range(500):
        port = rnd.randrange(20000, 30000)
        try:
            for off in (0, *also):
                with socket.socket() as s:
                    s.bind((HOST, port + off))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


class Server:
    """One started target: its process tree (in its own session), readiness, sampling, shutdown."""

    def __init__(self, target: Target, logpath: Path, sample_s: float) -> None:
        self.target = target
        self.port = free_port(tuple(target.metrics_offset + i for i in range(target.metrics_ports)))
        self.cmdline = [c.replace("{port}", str(self.port)) for c in target.cmd]
        self.logf = open(logpath, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmdline, cwd=target.cwd, stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env={**os.environ, **target.env})
        self.sampler = TreeSampler(self.proc.pid, sample_s)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target.name} exited with {self.proc.returncode} "
                                   f"(log: {self.logf.name})")
            if listening(self.port) >= self.target.listeners and ws_upgrade_ok(self.port, self.target.path):
                time.sleep(0.5)  # let late starters (watchers, the metrics threads) settle
                self.sampler.refresh()
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.target.name} not ready after {timeout:.0f}s (log: {self.logf.name})")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to its process group and every process of its tree, SIGKILL after `grace` s."""
        self.sampler.stop()
        pids = tree(self.proc.pid) | {self.proc.pid}
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)  # its own session and process group
            except ProcessLookupError:
                pass
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()
                if not any(alive(p) for p in pids):
                    break
                time.sleep(0.05)
            else:
                continue
            break
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.logf.close()

    def restarts(self) -> int:
        """Children the meshstream supervisor restarted during the run (read from its log)."""
        return Path(self.logf.name).read_text(errors="replace").count("child exited")
