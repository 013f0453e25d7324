"""The JavaScript client library (clients/js) against a real cluster: `node --test` runs its
tests (clients/js/test/) with the cluster's URL, HS256 secret and run directory in the
environment; node's output is shown when they fail."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.conftest import ROOT, Cluster

NODE = shutil.which("node")
TESTS = ROOT / "clients" / "js" / "test"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (CI has Node 20)")


def websocket_flag() -> list[str]:
    """Node 20's global WebSocket is behind --experimental-websocket; Node 22 has it."""
    version = subprocess.run([str(NODE), "--version"], capture_output=True, text=True).stdout
    return ["--experimental-websocket"] if int(version.lstrip("v").split(".")[0]) < 22 else []


def test_the_js_client_library(cluster_factory: Callable[..., Cluster]) -> None:
    secret = secrets.token_hex(32)
    cluster = cluster_factory(args=["--jwt-secret", secret])
    env = {**os.environ, "MESHSTREAM_TEST_URL": cluster.url, "MESHSTREAM_TEST_JWT_SECRET": secret,
           "MESHSTREAM_TEST_RUN_DIR": cluster.run_dir, "MESHSTREAM_TEST_PYTHON": sys.executable,
           "MESHSTREAM_TEST_ROOT": str(ROOT), "PYTHONPATH": str(ROOT)}
    files = sorted(str(p) for p in TESTS.glob("*.test.js"))
    # one file at a time: the resume test restarts the gateways every file is connected to
    run = subprocess.run([str(NODE), *websocket_flag(), "--test", "--test-concurrency=1", *files],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:] + "\n" + cluster.read_log()
    assert "# fail 0" in run.stdout and "# skipped 0" in run.stdout, run.stdout[-4000:]
