// The pure core: frames split, backoff, resume bookkeeping, token expiry. No server needed.
import assert from "node:assert/strict";
import { test } from "node:test";

import { MeshClient, MeshError, RECONNECT_CODES, Resume, backoff, parseFrame, refreshDelay, tokenExpiry }
  from "../meshstream.js";

test("parseFrame splits \\n-joined frames and skips what is not a frame", () => {
  const text = '{"action":"a","seq":1}\r\n{"action":"b","message_body":null}\n\nnot json\n[1]\n{"x":1}\n{"action":"c"}';
  const frames = parseFrame(text);
  assert.deepEqual(frames.map((f) => f.action), ["a", "b", "c"]);
  assert.deepEqual(frames[1].message_body, {}, "a null body reads as {}");
  assert.deepEqual(parseFrame(new Uint8Array(3)), [], "binary data is not a frame");
});

test("backoff doubles from min to max with ±50 % jitter", () => {
  const mid = () => 0.5;
  assert.equal(backoff(0, { rand: mid }), 500);
  assert.equal(backoff(1, { rand: mid }), 1000);
  assert.equal(backoff(9, { rand: mid }), 10000);
  assert.equal(backoff(0, { rand: () => 0 }), 250);
  assert.ok(backoff(9, { rand: () => 0.999999 }) < 15000);
  assert.equal(backoff(2, { min: 100, max: 300, rand: mid }), 300);
});

test("Resume keeps the session and positions, and says which closes to resume", () => {
  const r = new Resume();
  // a server without sessions: never resume, the URL is left alone
  assert.equal(r.connected({ client: "gw1-a.1" }), "fresh");
  assert.equal(r.shouldResume(1006), false);
  assert.equal(r.url("ws://h:1/wsmesh"), "ws://h:1/wsmesh");

  assert.equal(r.connected({ client: "gw1-a.2", session: "s3cr/t+", epoch: "E1" }), "fresh");
  assert.equal(r.accept({ action: "chat" }), true, "no position: accepted, nothing kept");
  assert.equal(r.accept({ action: "chat", target: "r", offset: 5, epoch: "E1.2" }), true);
  assert.equal(r.accept({ action: "chat", target: "r", offset: 7, epoch: "E1.2" }), true);
  assert.equal(r.accept({ action: "chat", target: "r", offset: 7, epoch: "E1.2" }), false, "a repeat is dropped");
  assert.equal(r.accept({ action: "chat", target: "r", offset: 6, epoch: "E1.2" }), false, "an older one too");
  assert.equal(r.accept({ action: "chat", target: "q", offset: 1, epoch: "E1.3" }), true, "each room its own");
  // a direct message, even one whose target is a room (as watchers send): its epoch says
  assert.equal(r.accept({ action: "w", target: "r", offset: 1, epoch: "E1" }), true);
  assert.equal(r.accept({ action: "w", target: "gw1-a.2", IsTargetClient: true, offset: 1, epoch: "E1" }), false);
  assert.equal(r.accept({ action: "chat", target: "r", offset: 8, epoch: "E1.2" }), true);
  const u = new URL(r.url("ws://h:1/wsmesh?x=1&seq=old"));
  assert.equal(u.searchParams.get("resume"), "s3cr/t+");
  assert.equal(u.searchParams.get("positions"), "E1:1,E1.2:8,E1.3:1", "direct first, then the most recent");
  assert.equal(u.searchParams.get("seq"), null);
  assert.equal(u.searchParams.get("x"), "1");

  for (const code of [1001, 1006, 1011, 1012, 1013, 1014]) {
    assert.equal(r.shouldResume(code), true, code);
    assert.ok(RECONNECT_CODES.has(code));
  }
  for (const code of [1000, 1005, 1007, 1008, 1009, 4000, 4001, 4002, 4003]) {
    assert.equal(r.shouldResume(code), false, code);
    assert.ok(!RECONNECT_CODES.has(code));
  }

  // resumed: a new secret, the positions kept
  assert.equal(r.connected({ client: "gw1-a.2", session: "new", epoch: "E1", resumed: true }), "resumed");
  assert.equal(r.session, "new");
  assert.deepEqual([r.positions.get("E1"), r.positions.get("E1.2")], [1, 8]);
  // we leave a room: its position goes
  assert.equal(r.accept({ action: "client-left-room", target: "q", sender: "gw1-a.2", offset: 2, epoch: "E1.3" }), true);
  assert.equal(r.positions.has("E1.3"), false);
  // refused: a new identity, new positions
  assert.equal(r.connected({ client: "gw2-b.1", session: "o", epoch: "E2", resumed: false, reason: "expired" }),
    "refused");
  assert.deepEqual([[...r.positions], r.epoch], [[["E2", 0]], "E2"]);
  r.reset();
  assert.equal(r.shouldResume(1006), false);
});

test("Resume: a room made again, or another processor, is a stream of its own", () => {
  const r = new Resume();
  r.connected({ client: "gw1-a.1", session: "s", epoch: "P1" });
  assert.equal(r.accept({ action: "chat", target: "r", epoch: "P1.3", offset: 40 }), true);
  assert.equal(r.accept({ action: "chat", target: "r", epoch: "P1.3", offset: 12 }), false, "ours: a repeat");
  assert.equal(r.accept({ action: "chat", target: "r", epoch: "P1.9", offset: 1 }), true, "the room made again");
  assert.equal(new URL(r.url("ws://h/wsmesh")).searchParams.get("positions"), "P1:0,P1.9:1,P1.3:40");
  assert.equal(r.accept({ action: "chat", target: "r", epoch: "P2.1", offset: 1 }), true, "a room of P2");
  assert.equal(r.epoch, "P2", "another processor: the old one's positions are gone with it");
  assert.equal(r.accept({ action: "whisper", IsTargetClient: true, epoch: "P2", offset: 13 }), true);
  assert.equal(r.accept({ action: "whisper", IsTargetClient: true, epoch: "P2", offset: 13 }), false);
  assert.equal(new URL(r.url("ws://h/wsmesh")).searchParams.get("positions"), "P2:13,P2.1:1");
});

test("refreshDelay: a fifth of the token's remaining life ahead, 1 s to `lead` ahead", () => {
  assert.equal(refreshDelay(100000, 0), 80000);
  assert.equal(refreshDelay(3600000, 0), 3540000, "at most a minute ahead");
  assert.equal(refreshDelay(3000, 0), 2000, "at least a second ahead");
  assert.equal(refreshDelay(500, 0), 0, "never negative");
  assert.equal(refreshDelay(100000, 0, 5000), 95000);
});

test("tokenExpiry reads a JWT's exp without verifying it", () => {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  assert.equal(tokenExpiry(`${part({ alg: "HS256" })}.${part({ sub: "ann", exp: 1700000000 })}.sig`), 1700000000);
  assert.equal(tokenExpiry(`${part({ alg: "HS256" })}.${part({ sub: "ann" })}.sig`), null);
  assert.equal(tokenExpiry("not a jwt"), null);
  assert.equal(tokenExpiry(undefined), null);
});

test("without a WebSocket the client says so", async () => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined; // Node 20 without --experimental-websocket
  try {
    const c = new MeshClient("ws://127.0.0.1:9/wsmesh");
    await assert.rejects(c.connect(), (err) => err instanceof MeshError && err.code === "no-websocket");
    assert.equal(c.state, "closed");
  } finally {
    globalThis.WebSocket = saved;
  }
});
