"""The Words Battle page's game side of connection recovery (web/protocol.js `Session`), run
in Node: a refused resume takes the page back to the lobby with a notice. The wire side
(frames, backoff, resume bookkeeping) is the client library's and is tested with it
(clients/js/test/, tests/integration/test_js_client.py); the page itself runs in Chromium
in tests/browser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

SCRIPT = """
import assert from "node:assert/strict";
import { Session } from "%s/protocol.js";

// a refused resume takes the page back to the lobby, with a notice
const events = [];
const s = new Session({ emit: (type, data) => events.push([type, data]) });
s.joinFriend("alice", "room1");
s.clientId = "gw1-a.2";
s.resumeRefused("expired");
assert.equal(s.state.screen, "lobby");
assert.equal(s.clientId, "");
const toast = events.find(([t]) => t === "toast");
assert.ok(toast && toast[1].text.includes("expired"), JSON.stringify(events));
console.log("ok");
"""


def test_a_refused_resume_goes_back_to_the_lobby(tmp_path: Path) -> None:
    script = tmp_path / "resume.test.mjs"
    script.write_text(SCRIPT % WEB.as_posix())
    run = subprocess.run([str(NODE), str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr or run.stdout
