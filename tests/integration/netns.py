"""Hosts for tests: one network namespace per host, joined by veth links on a bridge.

Each host's veth is plugged into a bridge in a hub namespace; the root namespace (the
tests, as the users' machine) has one more veth into the bridge, so it reaches every host
at the address `Net.addr` gives it, on a private /24 no route of this machine covers.
Processes started in a host (`Deployment`) run in their own process group and die with
the tests. Needs root (`ip netns`): `network()` skips with the reason otherwise, and
removes every namespace, link and process it made afterwards, also when the test fails,
then asserts nothing is left.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, _die_with_the_tests

ROOT_ADDR = 254  # the root namespace's last byte on the test network
UP = 45.0  # default deadline for processes in hosts to come up (2 cores, several interpreters)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def cannot_make_namespaces() -> str:
    """Why this machine cannot run the test ('' if it can): root, `ip`, and a probe namespace."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns add)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    probe = f"msprobe{os.getpid()}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return ""


def subnet() -> str:
    """A private /24 no route of this machine covers (10.200-249.x.0), as 'a.b.c.'."""
    routes = ip("-4", "route", "show", "table", "all").stdout
    pid = os.getpid()
    for n in range(250):
        prefix = f"10.{200 + (pid + n) % 50}.{(pid // 50 + n) % 250}."
        if prefix not in routes and not prefix.startswith("10.200.0."):
            return prefix
    raise AssertionError("no free private /24 for the test network")


@dataclass
class Net:
    """The namespaces and links of one test run, named after its PID; host n of `hosts`
    (from 1) has the address prefix + n, the root namespace prefix + 254."""

    tag: str
    prefix: str  # 'a.b.c.'
    hosts: Sequence[str]
    namespaces: list[str] = field(default_factory=list)
    root_link: str = ""

    def ns(self, host: str) -> str:
        return f"{self.tag}{host}"

    def addr(self, host: str) -> str:
        return self.prefix + str(ROOT_ADDR if host == "root" else list(self.hosts).index(host) + 1)

    def build(self) -> None:
        hub = f"{self.tag}hub"
        self.namespaces.append(hub)
        ip("netns", "add", hub)
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "link", "set", "br0", "up")
        for n, host in enumerate((*self.hosts, "root")):
            here, there = f"{self.tag}{n}a", f"{self.tag}{n}b"  # <= 15 characters
            if host == "root":
                self.root_link = here
            ip("link", "add", here, "type", "veth", "peer", "name", there)
            ip("link", "set", there, "netns", hub)
            ip("-n", hub, "link", "set", there, "master", "br0", "up")
            if host == "root":
                ip("addr", "add", f"{self.addr('root')}/24", "dev", here)
                ip("link", "set", here, "up")
                continue
            ns = self.ns(host)
            self.namespaces.append(ns)
            ip("netns", "add", ns)
            ip("link", "set", here, "netns", ns)
            ip("-n", ns, "link", "set", "lo", "up")  # the supervisor probes 127.0.0.1/healthz
            ip("-n", ns, "link", "set", here, "name", "eth0")
            ip("-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")

    def remove(self) -> list[str]:
        """Delete every link and namespace made (deleting a namespace deletes the veths in
        it, and with them their peers); returns what could not be deleted."""
        failed = []
        if self.root_link and ip("link", "show", self.root_link, check=False).returncode == 0:
            if ip("link", "del", self.root_link, check=False).returncode != 0:
                failed.append(self.root_link)
        for ns in reversed(self.namespaces):
            if ip("netns", "del", ns, check=False).returncode != 0:
                failed.append(ns)
        return failed

    def leftovers(self) -> list[str]:
        names = ip("netns", "list").stdout + ip("link", "show").stdout
        return [line for line in names.splitlines() if self.tag in line]

    def processes(self) -> list[str]:
        """The PIDs still running in a namespace of this run (they would keep it alive)."""
        return [f"{ns}: {pid}" for ns in self.namespaces
                for pid in ip("netns", "pids", ns, check=False).stdout.split()]


@contextmanager
def network(hosts: Sequence[str]) -> Iterator[Net]:
    """The namespaces of `hosts`, built; skips the test when this machine cannot; every
    namespace and link removed after, asserted gone."""
    reason = cannot_make_namespaces()
    if reason:
        pytest.skip(reason)
    made = Net(tag=f"ms{os.getpid()}", prefix=subnet(), hosts=hosts)
    try:
        made.build()
        yield made
    finally:
        deadline = time.monotonic() + 5  # a process group SIGKILLed a moment ago is dying
        while (stray := made.processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        failed = made.remove()
        assert not stray, f"processes left in the namespaces: {stray}"
        assert not failed, f"could not delete {failed}"
        assert not made.leftovers(), made.leftovers()


@dataclass
class Host:
    """A process started in a namespace (its own process group), logging to a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stopped: bool = False  # stopped on purpose: no longer expected to run

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.stopped = True
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # the supervisor's children share its process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Deployment:
    """The processes of one test, each in a host of `net`; `stop` ends them all."""

    def __init__(self, net: Net, tmp: Path) -> None:
        self.net = net
        self.tmp = tmp
        self.hosts: list[Host] = []

    def spawn(self, host: str, name: str, argv: list[str]) -> Host:
        """`argv` run in `host`'s namespace, its output in <tmp>/<name>.log (appended: a
        restart under the same name keeps the earlier run's lines)."""
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.net.ns(host), *argv], cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_the_tests)
        h = Host(name, proc, log)
        self.hosts.append(h)
        return h

    def start(self, host: str, name: str, args: list[str]) -> Host:
        """`meshstream ARGS` in `host`."""
        return self.spawn(host, name, [sys.executable, "-m", "services.cli", *args])

    def logs(self) -> str:
        return "\n".join(f"--- {h.name}\n{h.text()[-3000:]}" for h in self.hosts)

    def stop(self) -> None:
        for h in reversed(self.hosts):
            h.stop()


@contextmanager
def deployed(net: Net, tmp: Path) -> Iterator[Deployment]:
    d = Deployment(net, tmp)
    try:
        yield d
    finally:
        d.stop()


def healthz(addr: str, port: int) -> int:
    """A gateway's /healthz status (0: nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://{addr}:{port}/healthz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


async def until(cond: Callable[[], object], what: str, deployment: Deployment,
                timeout: float = UP) -> None:
    """Until `cond()` holds; fails at `timeout` or when a process not stopped on purpose
    exited, with every process's log."""
    deadline = time.monotonic() + timeout
    while not cond():
        for h in deployment.hosts:
            assert h.stopped or h.proc.poll() is None, f"{h.name} exited\n{deployment.logs()}"
        assert time.monotonic() < deadline, f"timed out: {what}\n{deployment.logs()}"
        await asyncio.sleep(0.1)  # polling /healthz or a log file, with a deadline
