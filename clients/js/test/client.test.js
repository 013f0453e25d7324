// MeshClient against a real cluster (started by tests/integration/test_js_client.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { LOBBY, MeshClient, MeshError } from "../meshstream.js";
import { NEEDS_CLUSTER, URL_, client, next, restartGateways, token, uid } from "./support.js";

const skip = NEEDS_CLUSTER;
const isCode = (code) => (err) => err instanceof MeshError && err.code === code;

test("connect: the client ID, the token's user and a session to resume", { skip }, async () => {
  const c = new MeshClient(URL_, { token: token("ann") });
  const seen = c.once("connected");
  const detail = await c.connect();
  assert.equal(detail.outcome, "fresh");
  assert.equal(detail.user, "ann");
  assert.match(detail.clientId, /^gw\d+-/);
  assert.deepEqual(await seen, detail);
  assert.equal(c.clientId, detail.clientId);
  assert.equal(c.state, "open");
  assert.ok(c.resume.session, "client-connected carries a session");
  c.close();
  assert.equal(c.state, "closed");
  assert.throws(() => c.send({ action: "x" }), isCode("closed"));
});

test("join, publish and receive between two clients; direct messages", { skip }, async () => {
  const room = uid("room");
  const a = await client("ann");
  const b = await client("bob");
  const joined = await a.join(room);
  assert.equal(joined.action, "client-joined-room");
  assert.equal(joined.message_body.client, a.clientId);
  const aSeesB = next(a, (m) => m.action === "client-joined-room" && m.sender === b.clientId);
  await b.join(room);
  await aSeesB;

  const got = next(b, (m) => m.action === "chat");
  const own = await a.publish(room, "chat", { text: "hi" });
  assert.equal(own.sender, a.clientId, "the acknowledgement is your own copy");
  const msg = await got;
  assert.deepEqual([msg.target, msg.sender, msg.message_body.text], [room, a.clientId, "hi"]);
  assert.deepEqual([typeof msg.offset, typeof msg.epoch, msg.seq], ["number", "string", undefined]);

  const whisper = next(b, (m) => m.action === "whisper");
  a.sendTo(b.clientId, "whisper", { text: "psst" });
  const w = await whisper;
  assert.deepEqual([w.IsTargetClient, w.sender, w.message_body.text], [true, a.clientId, "psst"]);

  const left = next(b, (m) => m.action === "client-left-room" && m.sender === a.clientId);
  assert.equal((await a.leave(room)).action, "client-left-room");
  await left;
});

test("request() is rejected by the error reply carrying its id, or after its timeout", { skip }, async () => {
  const a = await client("ann");
  const b = await client("bob");
  const unclaimed = []; // error frames no request took go to "error"
  a.on("error", (e) => unclaimed.push(e));
  await assert.rejects(a.leave(uid("nowhere")), isCode("unknown-room"));
  const room = uid("bobs");
  await b.join(room);
  await assert.rejects(a.leave(room), (err) => {
    assert.ok(isCode("not-member")(err), err);
    assert.equal(err.frame.action, "error");
    return true;
  });
  await assert.rejects(a.join("x".repeat(65)), isCode("bad-room-name"));
  await assert.rejects(a.request({ action: "chat", target: LOBBY }), isCode("lobby-readonly"));
  // a direct message gets no reply: the request times out
  await assert.rejects(
    a.request({ action: "whisper", target: b.clientId, IsTargetClient: true }, { timeout: 200 }),
    isCode("timeout"));
  const rooms = await a.request({ action: "list-rooms", message_body: { limit: 5 } });
  assert.equal(rooms.action, "room-list");
  assert.deepEqual(unclaimed, []);
});

test("frames the server joins with \\n arrive one by one, in order", { skip }, async () => {
  const room = uid("burst");
  let raw = 0;
  let joined = 0;
  const Counting = class extends WebSocket {
    constructor(url) {
      super(url);
      this.addEventListener("message", (ev) => { raw++; if (String(ev.data).includes("\n")) joined++; });
    }
  };
  const a = await client("ann");
  const b = await client("bob", { WebSocket: Counting });
  await a.join(room);
  await b.join(room);
  const n = 300;
  const got = [];
  const all = new Promise((resolve) => {
    b.on("message", (m) => { if (m.action === "burst" && got.push(m.message_body.n) === n) resolve(); });
  });
  for (let i = 0; i < n; i++) a.send({ action: "burst", target: room, message_body: { n: i } });
  await all;
  assert.deepEqual(got, [...Array(n).keys()]);
  assert.ok(raw >= 1);
  process.stdout.write(`# ${n} frames in ${raw} WebSocket messages, ${joined} of them joined\n`);
});

test("a rolling gateway restart: both clients resume, nothing acknowledged is lost", { skip }, async () => {
  const room = uid("resume");
  const a = await client("ann");
  const b = await client("bob");
  const ids = [a.clientId, b.clientId];
  await a.join(room);
  await b.join(room);
  const events = { a: [], b: [] };
  for (const [name, c] of [["a", a], ["b", b]]) {
    for (const type of ["disconnected", "reconnecting", "resumed", "connected"]) {
      c.on(type, (d) => events[name].push([type, d]));
    }
  }
  const received = [];
  a.on("message", (m) => { if (m.action === "tick") received.push(m.message_body.n); });

  const acked = [];
  let stop = false;
  const load = (async () => {
    for (let n = 0; !stop; n++) {
      try {
        await b.publish(room, "tick", { n }, { timeout: 5000 });
        acked.push(n);
      } catch (err) {
        assert.ok(isCode("connection-lost")(err) || isCode("timeout")(err), err);
      }
      await new Promise((r) => setTimeout(r, 20)); // the chat's pace
    }
  })();
  await restartGateways();
  // the restart is over; b's publishes go on until both clients are back
  await Promise.all([a, b].map((c) => (c.state === "open" ? null : c.once("connected"))));
  stop = true;
  await load;
  const last = acked[acked.length - 1];
  if (!received.includes(last)) {
    await next(a, (m) => m.action === "tick" && m.message_body.n === last);
  }
  for (const [name, c] of [["a", a], ["b", b]]) {
    const kinds = events[name].map(([t]) => t);
    assert.ok(kinds.includes("resumed"), `${name}: ${JSON.stringify(events[name])}`);
    assert.ok(!events[name].some(([t, d]) => t === "connected" && d.outcome !== "resumed"), name);
    assert.ok(events[name].some(([t, d]) => t === "disconnected" && d.code === 1012 && d.willResume));
  }
  assert.deepEqual([a.clientId, b.clientId], ids, "the same client IDs");
  // every acknowledged tick arrived once, in order (unacknowledged ones may or may not have)
  assert.deepEqual(received.filter((n) => acked.includes(n)), acked);
  assert.equal(new Set(received).size, received.length, "no duplicates");
  assert.ok(acked.length > 5, acked.length);
});

test("token refresh: a new token from getToken before the old one expires", { skip }, async () => {
  let fresh;
  const c = await client("ann", {
    token: token("ann", 3), // refreshed a second before it expires
    getToken: async () => { fresh = token("ann", 600); return fresh; },
  });
  const firstExp = (await import("../meshstream.js")).tokenExpiry(token("ann", 3));
  const refreshed = await c.once("token-refreshed");
  assert.equal(refreshed.expires, JSON.parse(Buffer.from(fresh.split(".")[1], "base64url")).exp);
  let lost = null;
  c.on("disconnected", (d) => { lost = d; });
  // past the first token's exp (the server checks every second): still connected
  await new Promise((r) => setTimeout(r, Math.max(0, (firstExp + 1.5) * 1000 - Date.now())));
  assert.equal((await c.request({ action: "list-rooms" })).action, "room-list");
  assert.equal(lost, null);
  // another user's token is refused; the connection keeps its own
  await assert.rejects(c.refreshToken(token("eve")), isCode("bad-token"));
  assert.equal(c.state, "open");
});

test("a bad or missing token is refused with a clear error, and not retried", { skip }, async () => {
  for (const [tok, code] of [["not.a.jwt", "bad-token"], [undefined, "token-required"]]) {
    const c = new MeshClient(URL_, { token: tok, backoffMin: 50 });
    const reconnecting = [];
    c.on("reconnecting", (d) => reconnecting.push(d));
    await assert.rejects(c.connect(), (err) => isCode(code)(err) && err.closeCode === 4003);
    assert.equal(c.state, "closed");
    assert.deepEqual(reconnecting, []);
  }
});
