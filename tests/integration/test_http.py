"""The HTTP side of the gateway port, and how the processes name themselves."""

from __future__ import annotations

import socket
import subprocess

import psutil
import pytest

from tests.conftest import Cluster
from tests.integration import support
from tests.integration.support import http_get, roles, title

shared_cluster, cluster = support.shared_cluster, support.cluster  # fixtures: one cluster per module


def test_healthz(cluster: Cluster) -> None:
    status, ctype, body = http_get(cluster, "/healthz")
    assert status == 200
    ok, processor = body.decode().splitlines()
    assert ok == "ok" and processor.startswith("processor: ipc://") and " epoch " in processor
    assert ctype.startswith("text/plain")
    # with a query string too (load balancers add cache busters)
    assert http_get(cluster, "/healthz?probe=1")[0] == 200


def test_web_page(cluster: Cluster) -> None:
    status, ctype, body = http_get(cluster, "/")
    assert status == 200
    assert ctype.startswith("text/html")
    assert b"<html" in body.lower() or b"<!doctype html" in body.lower()
    status, ctype, _ = http_get(cluster, "/index.html")
    assert status == 200 and ctype.startswith("text/html")


@pytest.mark.parametrize("path", ["/nope", "/wsmesh/extra", "/../pyproject.toml",
                                  "/%2e%2e/pyproject.toml", "/healthz/x"])
def test_unknown_path_is_404(cluster: Cluster, path: str) -> None:
    status, _, body = http_get(cluster, path)
    assert status == 404, body
    assert b"[project]" not in body


def test_plain_get_on_websocket_path_is_refused(cluster: Cluster) -> None:
    """GET /wsmesh without an Upgrade is not a WebSocket handshake: a 4xx, not a hang."""
    status, _, _ = http_get(cluster, "/wsmesh")
    assert 400 <= status < 500


def test_http_does_not_break_the_gateway(cluster: Cluster) -> None:
    """Garbage on the port closes that socket only; /healthz still answers."""
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        try:
            s.recv(1024)
        except OSError:
            pass
    assert http_get(cluster, "/healthz")[0] == 200


def test_process_titles(cluster: Cluster) -> None:
    """`ps` shows each process by role (what `make run` prints in ps/top); the one other
    process is multiprocess's resource tracker (docs/operations.md)."""
    procs = cluster.processes()
    helpers = [p for p in procs if "multiprocess.resource_tracker" in " ".join(p.cmdline())]
    assert len(helpers) <= 1
    titles = sorted(title(p) for p in procs if p not in helpers)
    assert titles == ["meshstream: gateway 1", "meshstream: gateway 2", "meshstream: processor"]
    assert sorted(roles(cluster)) == ["gateway 1", "gateway 2", "processor"]
    assert title(psutil.Process(cluster.proc.pid)) == "meshstream: supervisor"
    # and `ps` itself shows them so
    out = subprocess.run(["ps", "-o", "args=", "--sid", str(cluster.proc.pid)], capture_output=True,
                         text=True, check=True).stdout
    shown = {line.strip() for line in out.splitlines()}
    assert {"meshstream: supervisor", "meshstream: processor", "meshstream: gateway 1",
            "meshstream: gateway 2"} <= shown, shown
