"""The page's connection recovery bookkeeping (web/protocol.js `Resume`, `backoff`), run in
Node: the session and position it resumes with, the closes it resumes after, duplicate
frames dropped, and a refused resume starting over. The page itself runs in Chromium in
tests/browser."""

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
import { Resume, backoff, Session, NO_RESUME_CODES } from "%s/protocol.js";

const r = new Resume();
// an older server: no session, never resume, the URL is left alone
assert.equal(r.connected({ client: "gw1-a.1" }), "fresh");
assert.equal(r.shouldResume(1006), false);
assert.equal(r.url("ws://h:1/wsmesh"), "ws://h:1/wsmesh");

// a fresh connect with a session: remember it; seq from every frame carrying one
assert.equal(r.connected({ client: "gw1-a.2", session: "s3cr/t+", epoch: "E1" }), "fresh");
assert.equal(r.accept({ action: "send-message" }), true);  // no seq: handled, nothing kept
assert.equal(r.accept({ action: "send-message", seq: 5, offset: 1, epoch: "E1.1" }), true);
assert.equal(r.accept({ action: "know-yourself", seq: 7 }), true);
assert.equal(r.accept({ action: "send-message", seq: 7 }), false, "a repeat is dropped");
assert.equal(r.accept({ action: "send-message", seq: 6 }), false, "an older one too");
assert.equal(r.lastSeq, 7);
const u = new URL(r.url("ws://h:1/wsmesh?x=1"));
assert.equal(u.searchParams.get("resume"), "s3cr/t+");
assert.equal(u.searchParams.get("seq"), "E1:7");
assert.equal(u.searchParams.get("x"), "1");

// which closes are resumed: lost connections and restarts, not clean or for-cause closes
for (const code of [1006, 1011, 1012, 1013, 1001]) assert.equal(r.shouldResume(code), true, code);
for (const code of [1000, 1007, 1008, 1009, 4000, 4001, 4002, 4003]) {
  assert.equal(r.shouldResume(code), false, code);
  assert.ok(NO_RESUME_CODES.has(code));
}

// resumed: a new secret, the position kept (the replay continues from it)
assert.equal(r.connected({ client: "gw1-a.2", session: "new", epoch: "E1", resumed: true }), "resumed");
assert.equal(r.session, "new");
assert.equal(r.lastSeq, 7);
assert.equal(r.accept({ action: "send-message", seq: 8 }), true);

// refused: a new identity, a new position
assert.equal(r.connected({ client: "gw2-b.1", session: "other", epoch: "E2", resumed: false,
                           reason: "history-lost" }), "refused");
assert.equal(r.lastSeq, 0);
assert.equal(r.epoch, "E2");
assert.equal(r.accept({ action: "send-message", seq: 1 }), true, "seqs of a new epoch count");
r.reset();
assert.equal(r.shouldResume(1006), false);

// backoff: 0.5 s doubling to 10 s, +-50 %%
assert.equal(backoff(0, () => 0.5), 500);
assert.equal(backoff(1, () => 0.5), 1000);
assert.equal(backoff(9, () => 0.5), 10000);
assert.equal(backoff(0, () => 0), 250);
assert.ok(backoff(9, () => 0.999999) < 15000);

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


def test_resume_bookkeeping(tmp_path: Path) -> None:
    script = tmp_path / "resume.test.mjs"
    script.write_text(SCRIPT % WEB.as_posix())
    run = subprocess.run([str(NODE), str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr or run.stdout
