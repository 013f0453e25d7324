#!/usr/bin/env node
// A meshstream watcher in Node.js: a dice bot for every room whose name starts
// with "dice-". Written from docs/watchers.md and proto/meshstream.proto only.
//
//   node dice.js [--endpoint URL | --tcp HOST:PORT] [--peer HOST:PORT] [--port N] [--name NAME]
//                [--keys-dir DIR] [--failover-timeout S]
//
// With --peer (a primary/backup processor pair) it talks to one processor at a time and
// moves to the other when its own falls silent (docs/watchers.md, "A processor pair").
//
// Client frames to a dice room (JSON over the WebSocket):
//   {"action":"join-room","target":"dice-1"}             -> joined, greeted by the bot
//   {"action":"roll","target":"dice-1","message_body":{"sides":20},"id":7}
//                                                         -> "rolled" to the whole room
//   {"action":"leave-room","target":"dice-1"}            -> removed
//   anything else                                         -> error "unknown-action"

import { randomInt } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import protobuf from "protobufjs";
import * as zmq from "zeromq";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROTO = path.resolve(HERE, "../../proto/meshstream.proto");

const HEARTBEAT_MS = 500; // docs: heartbeat every 0.5 s
const PEER_TIMEOUT_MS = 3000; // docs: 3 s of processor silence means it is gone
const FAILOVER_TIMEOUT_S = 2; // docs: --failover-timeout; a pair's silence rule is half of it
const HELLO_RETRY_MS = 2000; // after claim-conflict / bad-command, or an unanswered hello
const PENDING_TTL_MS = 30000; // forget commands whose reply never came (processor restart)
const BOT = "dice-bot";
const MIN_SIDES = 2;
const MAX_SIDES = 100;
const DEFAULT_SIDES = 6;

// ------------------------------------------------------------------ logging

function log(msg, fields = {}, level = "info") {
  const line = { ts: new Date().toISOString(), level, logger: `watcher.${opts?.name ?? "dice"}`, msg, ...fields };
  process.stderr.write(JSON.stringify(line) + "\n");
}

// ------------------------------------------------------------------ options

function usage() {
  process.stderr.write(
    "usage: node dice.js [--endpoint URL | --tcp HOST:PORT] [--peer HOST:PORT] [--port N]\n" +
      "                    [--name NAME] [--keys-dir DIR] [--failover-timeout S]\n" +
      "  --endpoint URL  watchers endpoint (else $MESHSTREAM_WATCHERS_ENDPOINT, else --tcp, else the\n" +
      "                  default of `make run`: ipc://$XDG_RUNTIME_DIR/meshstream-<uid>-<port>/watchers)\n" +
      "  --tcp HOST:PORT the processor's --tcp (else $MESHSTREAM_TCP): endpoint tcp://HOST:PORT+2\n" +
      "  --peer HOST:PORT the other processor of a pair, its --tcp (else $MESHSTREAM_PEER):\n" +
      "                  tcp://HOST:PORT+2 is tried whenever the current processor falls silent\n" +
      "  --failover-timeout S  the pair's failover timeout (else $MESHSTREAM_FAILOVER_TIMEOUT,\n" +
      "                  default 2): with --peer, silence for half of it means moving over\n" +
      "  --port N        server port used to build the default endpoint (default 8765)\n" +
      "  --name NAME     watcher name (default dice)\n" +
      "  --keys-dir DIR  CURVE keys from `meshstream keys DIR` (else $MESHSTREAM_KEYS_DIR):\n" +
      "                  DIR/processor.key and DIR/watchers/NAME.key_secret\n",
  );
}

function parseArgs(argv) {
  const out = {
    endpoint: "", tcp: "", peer: "", port: 8765, name: "dice", prefix: "dice-", keysDir: "",
    failoverTimeout: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const take = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case "--endpoint":
        out.endpoint = take();
        break;
      case "--tcp":
        out.tcp = take();
        break;
      case "--peer":
        out.peer = take();
        break;
      case "--failover-timeout":
        out.failoverTimeout = take();
        break;
      case "--port":
        out.port = Number.parseInt(take(), 10);
        if (!Number.isInteger(out.port) || out.port <= 0) throw new Error("--port needs a positive integer");
        break;
      case "--name":
        out.name = take();
        break;
      case "--keys-dir":
        out.keysDir = take();
        break;
      case "-h":
      case "--help":
        usage();
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${arg}`);
    }
  }
  const env = process.env;
  if (!out.endpoint) out.endpoint = env.MESHSTREAM_WATCHERS_ENDPOINT || "";
  if (!out.tcp) out.tcp = env.MESHSTREAM_TCP || "";
  if (!out.peer) out.peer = env.MESHSTREAM_PEER || "";
  if (!out.keysDir) out.keysDir = env.MESHSTREAM_KEYS_DIR || "";
  const failover = Number(out.failoverTimeout ?? (env.MESHSTREAM_FAILOVER_TIMEOUT || FAILOVER_TIMEOUT_S));
  if (!(failover > 0)) throw new Error("--failover-timeout needs a positive number of seconds");
  if (!out.endpoint && out.tcp) out.endpoint = routerEndpoint(out.tcp, "--tcp");
  if (!out.endpoint) {
    const uid = typeof process.getuid === "function" ? process.getuid() : os.userInfo().uid;
    const base = process.env.XDG_RUNTIME_DIR || "/tmp";
    out.endpoint = `ipc://${path.join(base, `meshstream-${uid}-${out.port}`, "watchers")}`;
  }
  // The processors' ROUTER endpoints, the primary first. With a pair, a processor silent for
  // half the failover timeout is left for the other one; alone, the peer timeout.
  out.endpoints = [out.endpoint, ...(out.peer ? [routerEndpoint(out.peer, "--peer")] : [])];
  out.silenceMs = out.peer ? (failover * 1000) / 2 : PEER_TIMEOUT_MS;
  return out;
}

/** A processor's --tcp HOST:PORT -> its watchers' ROUTER, tcp://HOST:PORT+2. */
function routerEndpoint(hostPort, flag) {
  const colon = hostPort.lastIndexOf(":");
  const port = Number.parseInt(hostPort.slice(colon + 1), 10);
  if (colon < 0 || !Number.isInteger(port) || port <= 0) throw new Error(`${flag} needs HOST:PORT`);
  return `tcp://${hostPort.slice(0, colon) || "127.0.0.1"}:${port + 2}`;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`dice.js: ${err.message}\n`);
  usage();
  process.exit(2);
}

// ------------------------------------------------------------------ protobuf

const root = await protobuf.load(PROTO);
const WatcherIn = root.lookupType("meshstream.v1.WatcherIn");
const WatcherOut = root.lookupType("meshstream.v1.WatcherOut");
const TO_OBJECT = { longs: Number, enums: String, defaults: true, arrays: true, objects: true, oneofs: true };

// ------------------------------------------------------------------ socket and sending

// CURVE (docs/watchers.md, "Keys (CURVE)"): the keys are the z85 text of the
// `public-key = "..."` / `secret-key = "..."` lines of the files `meshstream keys` writes.
function readKey(file, field) {
  const text = fs.readFileSync(file, "utf8");
  const m = text.match(new RegExp(`^\\s*${field}\\s*=\\s*"([^"]{40})"`, "m"));
  if (!m) throw new Error(`no ${field} in ${file}`);
  return m[1];
}

function curveOptions(keysDir, name) {
  if (!keysDir) return {};
  const own = path.join(keysDir, "watchers", `${name}.key_secret`);
  return {
    curveServerKey: readKey(path.join(keysDir, "processor.key"), "public-key"),
    curvePublicKey: readKey(own, "public-key"),
    curveSecretKey: readKey(own, "secret-key"),
  };
}

let curve;
try {
  curve = curveOptions(opts.keysDir, opts.name);
} catch (err) {
  process.stderr.write(`dice.js: cannot read CURVE keys: ${err.message}\n`);
  process.exit(2);
}
// One DEALER at a time, to the processor we talk to: {sock, endpoint, chain, queued}.
// zeromq v6 allows one send in flight per socket, so each link chains its sends.
let link = null;
let closing = false;

function connect(endpoint) {
  const sock = new zmq.Dealer({ linger: 0, ...curve });
  sock.connect(endpoint);
  link = { sock, endpoint, chain: Promise.resolve(), queued: 0 };
  lastHeard = Date.now(); // silence is counted from here
  receiveLoop(link).catch((err) => {
    log("receive loop failed", { error: String(err?.stack ?? err) }, "error");
    closing = true;
    clearInterval(heartbeatTimer);
    sock.close();
    process.exit(1);
  });
}

/** Its processor silent: close the DEALER (what was queued for it goes with it) and open
 * one to the other processor of the pair. The caller says hello there. */
function switchProcessor() {
  const old = link;
  const next = opts.endpoints[(opts.endpoints.indexOf(old.endpoint) + 1) % opts.endpoints.length];
  log("trying the other processor", { endpoint: next }, "warning");
  connect(next);
  old.sock.close();
}

function sendIn(obj) {
  if (closing) return;
  const err = WatcherIn.verify(obj);
  if (err) {
    log("not sent: invalid WatcherIn", { error: err }, "error");
    return;
  }
  const payload = WatcherIn.encode(WatcherIn.fromObject(obj)).finish();
  const to = link;
  to.queued++;
  to.chain = to.chain
    .then(() => (closing || to !== link ? undefined : to.sock.send(["watcher", payload])))
    .catch((e) => {
      if (!closing && to === link) log("send failed", { error: String(e) }, "error");
    })
    .finally(() => {
      to.queued--;
    });
}

// ------------------------------------------------------------------ hello / heartbeat

let helloSentAt = 0; // 0: no hello waiting for its answer
let registered = false;
let epoch = "";
let lastHeard = Date.now();
let processorSilent = false;
let helloRetry = null;

function hello(reason) {
  if (closing) return;
  if (helloRetry) {
    clearTimeout(helloRetry);
    helloRetry = null;
  }
  registered = false;
  helloSentAt = Date.now();
  log("hello", { reason, name: opts.name, prefixes: [opts.prefix], endpoint: link.endpoint });
  // The dice bot never uses create_room, so it has no `assigned` rooms to take back.
  sendIn({ hello: { name: opts.name, rooms: [], prefixes: [opts.prefix], assigned: [] } });
}

function heartbeat() {
  const now = Date.now();
  for (const [id, cmd] of pending) {
    if (now - cmd.at > PENDING_TTL_MS) pending.delete(id);
  }
  const pair = opts.endpoints.length > 1;
  if (now - lastHeard > opts.silenceMs) {
    // Nothing, not even the answers to our heartbeats: the processor died, restarts, or
    // (of a pair) is the passive one, which answers nothing.
    if (!processorSilent) log("processor silent", { silent_ms: now - lastHeard, endpoint: link.endpoint }, "warning");
    processorSilent = true;
    registered = false; // no commands until a welcome (see command())
    if (pair) {
      switchProcessor();
      hello("processor silent");
      return;
    }
  }
  // Refused hello: wait for the retry (a heartbeat would only earn "unknown-watcher").
  if (helloRetry) return;
  if (!registered) {
    // Until welcomed, nothing but hello: every heartbeat with a pair (the other one may be
    // taking over), else every 2 s (the DEALER reconnects by itself to a restarted processor).
    if (pair || now - helloSentAt >= HELLO_RETRY_MS) hello(processorSilent ? "processor silent" : "not welcomed yet");
    return;
  }
  // A DEALER with no peer queues what we send; don't pile heartbeats up behind a blocked send.
  if (link.queued === 0) sendIn({ heartbeat: {} });
}

// ------------------------------------------------------------------ commands

let nextId = 1;
const pending = new Map(); // id -> {op, at, onReply}

function command(op, fields, onReply) {
  if (!registered) {
    // A new processor would not apply it ("unknown-watcher"), a passive one drops it.
    log("command not sent: not welcomed", { op }, "warning");
    return 0;
  }
  const id = nextId++;
  pending.set(id, { op, at: Date.now(), onReply });
  sendIn({ command: { id, [op]: fields } });
  return id;
}

function jsonBody(obj) {
  return Buffer.from(JSON.stringify(obj), "utf8");
}

function sendRoom(room, action, body) {
  command("sendRoom", { room, message: { action, target: room, body: jsonBody(body), sender: BOT } });
}

/** An error frame to one client, as docs/watchers.md "Client frames a watcher should answer" says. */
function sendError(frame, code, message) {
  command("sendClients", {
    clients: [frame.client],
    message: {
      action: "error",
      target: frame.target,
      body: jsonBody({ code, message, action: frame.action }),
      sender: BOT,
      requestId: frame.requestId,
    },
  });
}

// ------------------------------------------------------------------ room state (rebuilt from snapshots)

const rooms = new Map(); // room -> Set(client)
// Joins we asked for and whose CLIENT_JOINED_ROOM we still await ("room\nclient"): only these
// are greeted. After a failover the new processor rebuilds the rooms from the gateways, and
// a membership rebuilt after our welcome comes as a CLIENT_JOINED_ROOM we never asked for.
const joining = new Set();

function members(room) {
  let set = rooms.get(room);
  if (!set) {
    set = new Set();
    rooms.set(room, set);
  }
  return set;
}

// ------------------------------------------------------------------ handlers

function parseBody(bytes) {
  if (!bytes || bytes.length === 0) return {};
  return JSON.parse(Buffer.from(bytes).toString("utf8"));
}

const actions = {
  // Commands are applied in the order they are sent, so the membership is updated
  // as soon as the command is sent: a "roll" right behind a "join-room" is accepted
  // (its send_room comes after the join), one right behind a "leave-room" is not.
  // The events (CLIENT_JOINED_ROOM / CLIENT_LEFT_ROOM) confirm it later.
  "join-room"(frame) {
    members(frame.target).add(frame.client);
    joining.add(`${frame.target}\n${frame.client}`);
    command("join", { client: frame.client, room: frame.target }, (reply) => {
      if (!reply.error) return;
      joining.delete(`${frame.target}\n${frame.client}`);
      if (reply.error !== "already-member") members(frame.target).delete(frame.client);
      sendError(frame, reply.error, `cannot join ${frame.target}: ${reply.error}`);
    });
  },

  "leave-room"(frame) {
    members(frame.target).delete(frame.client);
    command("remove", { client: frame.client, room: frame.target }, (reply) => {
      if (reply.error) sendError(frame, reply.error, `cannot leave ${frame.target}: ${reply.error}`);
    });
  },

  roll(frame) {
    if (!members(frame.target).has(frame.client)) {
      sendError(frame, "not-member", `join ${frame.target} before rolling`);
      return;
    }
    let body;
    try {
      body = parseBody(frame.body);
    } catch {
      body = null;
    }
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      sendError(frame, "bad-sides", "message_body must be an object like {\"sides\": 6}");
      return;
    }
    const sides = body.sides ?? DEFAULT_SIDES;
    if (!Number.isInteger(sides) || sides < MIN_SIDES || sides > MAX_SIDES) {
      sendError(frame, "bad-sides", `sides must be an integer from ${MIN_SIDES} to ${MAX_SIDES}`);
      return;
    }
    const value = randomInt(1, sides + 1);
    log("rolled", { room: frame.target, by: frame.client, sides, value });
    sendRoom(frame.target, "rolled", { by: frame.client, sides, value });
  },
};

function onMessage(frame) {
  log("client frame", { room: frame.target, client: frame.client, action: frame.action });
  const handler = Object.hasOwn(actions, frame.action) ? actions[frame.action] : null;
  if (!handler) {
    sendError(frame, "unknown-action", `the dice bot does not know "${frame.action}"`);
    return;
  }
  try {
    handler(frame);
  } catch (err) {
    log("handler failed", { action: frame.action, error: String(err?.stack ?? err) }, "error");
    sendError(frame, "watcher-error", "the dice bot failed on this request");
  }
}

function onEvent(ev) {
  switch (ev.kind) {
    case "ROOM_CREATED":
      members(ev.room);
      break;
    case "ROOM_DELETED":
      rooms.delete(ev.room);
      break;
    case "CLIENT_JOINED_ROOM":
      members(ev.room).add(ev.client);
      if (joining.delete(`${ev.room}\n${ev.client}`)) sendRoom(ev.room, "dice-joined", { client: ev.client });
      break;
    case "CLIENT_LEFT_ROOM":
      members(ev.room).delete(ev.client);
      break;
    default:
      break; // CLIENT_CONNECTED / CLIENT_DISCONNECTED only reach the lobby's watcher
  }
  log("event", { kind: ev.kind, room: ev.room, client: ev.client, seq: ev.seq });
}

function onWelcome(snap) {
  if (epoch && snap.epoch !== epoch) log("processor epoch changed", { old: epoch, epoch: snap.epoch });
  epoch = snap.epoch;
  helloSentAt = 0;
  registered = true;
  pending.clear(); // replies to commands sent before this hello will not come
  joining.clear();
  rooms.clear();
  for (const r of snap.rooms) rooms.set(r.name, new Set(r.members));
  log("welcome", {
    epoch, endpoint: link.endpoint,
    rooms: snap.rooms.map((r) => ({ name: r.name, members: r.members.length })),
  });
}

function onReply(reply) {
  if (reply.id === 0) {
    // hello / heartbeat answers
    if (!reply.error) return;
    if (reply.error === "unknown-watcher") {
      if (helloRetry) return; // a refused hello is retried by its timer
      // Several queued heartbeats may all get this answer: one hello is enough. Not welcomed,
      // the heartbeat timer says hello again anyway.
      if (registered) hello("unknown-watcher");
      return;
    }
    // claim-conflict / bad-command answer a hello: nothing was registered.
    log("hello refused", { error: reply.error, message: reply.message }, "error");
    helloSentAt = 0;
    registered = false;
    // With a pair, again at the next heartbeat: waiting longer than half the failover timeout
    // for an answer would count as the processor's silence.
    const retryMs = opts.endpoints.length > 1 ? HEARTBEAT_MS : HELLO_RETRY_MS;
    if (!helloRetry) helloRetry = setTimeout(() => hello(`retry after ${reply.error}`), retryMs);
    return;
  }
  const cmd = pending.get(reply.id);
  pending.delete(reply.id);
  if (reply.error === "unknown-watcher") {
    log("command refused: unknown watcher", { id: reply.id, op: cmd?.op }, "warning");
    if (registered) hello("unknown-watcher");
    return;
  }
  if (reply.error) {
    log("command failed", { id: reply.id, op: cmd?.op, error: reply.error, message: reply.message }, "warning");
  }
  if (cmd?.onReply) {
    try {
      cmd.onReply(reply);
    } catch (err) {
      log("reply handler failed", { id: reply.id, error: String(err?.stack ?? err) }, "error");
    }
  }
}

function dispatch(topic, payload) {
  let out;
  try {
    out = WatcherOut.toObject(WatcherOut.decode(payload), TO_OBJECT);
  } catch (err) {
    log("undecodable WatcherOut", { topic, error: String(err) }, "error");
    return;
  }
  lastHeard = Date.now();
  if (processorSilent) {
    processorSilent = false;
    log("processor back");
  }
  switch (out.kind) {
    case "welcome":
      onWelcome(out.welcome);
      break;
    case "event":
      onEvent(out.event);
      break;
    case "message":
      if (!registered) log("message before welcome", { room: out.message.target }, "warning");
      onMessage(out.message);
      break;
    case "reply":
      onReply(out.reply);
      break;
    default:
      log("unexpected WatcherOut", { topic }, "warning");
  }
}

// ------------------------------------------------------------------ run

async function receiveLoop(from) {
  try {
    for await (const frames of from.sock) {
      if (from !== link) break; // a socket we left for the other processor
      if (frames.length !== 2) {
        log("unexpected frame count", { frames: frames.length }, "warning");
        continue;
      }
      dispatch(frames[0].toString("ascii"), frames[1]);
    }
  } catch (err) {
    if (!closing && from === link) throw err;
  }
}

let heartbeatTimer = null;

function shutdown(signal) {
  if (closing) return;
  closing = true;
  log("stopping", { signal });
  clearInterval(heartbeatTimer);
  if (helloRetry) clearTimeout(helloRetry);
  link.sock.linger = 0;
  link.sock.close();
  log("stopped");
  process.exit(0);
}

process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

log("starting", {
  name: opts.name, prefixes: [opts.prefix], endpoints: opts.endpoints, zeromq: zmq.version,
  curve: Boolean(opts.keysDir), silence_ms: opts.silenceMs,
});
connect(opts.endpoints[0]);
hello("start");
heartbeatTimer = setInterval(heartbeat, HEARTBEAT_MS);
