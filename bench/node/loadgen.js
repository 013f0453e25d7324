#!/usr/bin/env node
// meshstream's own load generator: the clients live in several worker processes, so that the
// generator, not the server, is rarely the limit.
//
//   node bench/node/loadgen.js --scenario fanout|chat|idle --adapter meshstream|socketio
//                              --ports 8765[,8766] [--workers N] [--option value ...]  (OPTIONS below)
//
// The primary process splits the clients over --workers child processes (default: the number of
// cores, at least 2), tells them when to connect, join and start, merges their counts and latency
// histograms, prints progress and "@@phase <name> <ms>" markers (bench.run samples the server at
// them) to stderr, and ONE JSON result line to stdout. Every phase is bounded; it always exits.
//
// Scenarios (the same loads as bench.run's):
//   fanout  --rooms R x --clients C receivers plus one publisher per room (a member too), which
//           sends --messages M messages keeping --window W of its own in flight
//   chat    --rooms R x --clients C, each client sends --rate r msg/s into its room for --duration s
//   idle    --conns N over --rooms R: connect, join, hold --hold s
// Latency = receive time - the sender's timestamp in the message (one host clock).
'use strict';
const { fork } = require('child_process');
const os = require('os');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

const OPTIONS = {
  scenario: 'fanout', adapter: 'meshstream', host: '127.0.0.1', ports: '', path: '',
  workers: Math.max(2, os.cpus().length), rooms: null, clients: null, conns: 5000,
  messages: 2000, size: 100, window: 64, rate: 2, duration: 10, hold: 5,
  'connect-concurrency': 64, 'connect-timeout': 10, 'join-fallback-ms': 1000,
  'settle-ms': 300, 'idle-timeout': 10, timeout: 300, drain: 10,
};
const PER_SCENARIO = { fanout: { rooms: 1, clients: 500 }, chat: { rooms: 250, clients: 4 }, idle: { rooms: 100 } };
const PATHS = { meshstream: '/wsmesh', socketio: '/socket.io/?EIO=4&transport=websocket' };

function parseArgs(argv) {
  const o = { ...OPTIONS };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([\w-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m || !(m[1] in OPTIONS)) throw new Error(`unknown argument ${argv[i]}`);
    o[m[1]] = m[2] !== undefined ? m[2] : argv[++i];
  }
  if (!PER_SCENARIO[o.scenario]) throw new Error(`unknown scenario ${o.scenario}`);
  if (!PATHS[o.adapter]) throw new Error(`unknown adapter ${o.adapter}`);
  for (const [k, v] of Object.entries(PER_SCENARIO[o.scenario])) if (o[k] == null) o[k] = v;
  for (const k of Object.keys(o)) if (typeof o[k] === 'string' && /^-?\d+(\.\d+)?$/.test(o[k])) o[k] = Number(o[k]);
  o.ports = String(o.ports).split(',').filter(Boolean).map(Number);
  if (!o.ports.length) throw new Error('--ports is required');
  o.path = o.path || PATHS[o.adapter];
  o.workers = Math.max(1, o.workers | 0);
  return o;
}

const now = () => performance.timeOrigin + performance.now(); // ms since the epoch, the same clock in every process
const log = (...a) => process.stderr.write(a.join(' ') + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ latency histogram
// 10 us buckets below 2 s, 1 ms buckets up to 600 s; mergeable across processes (sparse pairs).
class Hist {
  constructor() { this.fine = new Uint32Array(200000); this.coarse = new Uint32Array(600000); this.n = 0; this.max = 0; }
  add(ms) {
    if (!(ms > 0)) ms = 0;
    this.n++; if (ms > this.max) this.max = ms;
    if (ms < 2000) this.fine[(ms * 100) | 0]++; else this.coarse[Math.min(599999, ms | 0)]++;
  }
  dump() {
    const sparse = (a) => { const out = []; a.forEach((c, i) => { if (c) out.push(i, c); }); return out; };
    return { fine: sparse(this.fine), coarse: sparse(this.coarse), n: this.n, max: this.max };
  }
  merge(d) {
    for (let i = 0; i < d.fine.length; i += 2) this.fine[d.fine[i]] += d.fine[i + 1];
    for (let i = 0; i < d.coarse.length; i += 2) this.coarse[d.coarse[i]] += d.coarse[i + 1];
    this.n += d.n; this.max = Math.max(this.max, d.max);
  }
  pct(p) {
    if (!this.n) return null;
    const want = Math.ceil((p / 100) * this.n);
    let acc = 0;
    for (let i = 0; i < this.fine.length; i++) if ((acc += this.fine[i]) >= want) return Math.min((i + 1) / 100, this.max);
    for (let i = 2000; i < this.coarse.length; i++) if ((acc += this.coarse[i]) >= want) return Math.min(i + 1, this.max);
    return this.max;
  }
  summary() {
    const r = (x) => (x == null ? null : Math.round(x * 1000) / 1000);
    return { p50_ms: r(this.pct(50)), p90_ms: r(this.pct(90)), p99_ms: r(this.pct(99)), max_ms: r(this.n ? this.max : null) };
  }
}

// ------------------------------------------------------------------ clients (in the workers)
// Both adapters: connect(), join(room) -> Promise<confirmed>, publish(n), `open`, ondeliver(t).
// The hot path reads the timestamp with a regex; JSON.parse only when the shape is unexpected.
const RE_T = /"t"\s*:\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)/;
const sane = (t) => Math.abs(now() - t) < 3.6e6;

class Client {
  constructor(O, room, port) {
    this.O = O; this.room = room; this.port = port; this.open = false; this.ondeliver = null; this.joinWait = null;
    this.pad = 'x'.repeat(O.size);
  }
  connect() {
    const { O } = this;
    const ws = new WebSocket(`ws://${O.host}:${this.port}${O.path}`, {
      perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: O['connect-timeout'] * 1000, maxPayload: 64 << 20,
    });
    this.ws = ws;
    ws.on('message', (data) => this.frame(data.toString()));
    ws.on('close', () => { this.open = false; });
    return new Promise((resolve, reject) => {
      ws.once('open', () => { this.open = true; ws.on('error', () => {}); resolve(this.opened()); });
      ws.once('error', reject);
    });
  }
  opened() { return this; }
  deliver(s, t0) {
    const m = RE_T.exec(s);
    if (m && sane(+m[1])) { if (this.ondeliver) this.ondeliver(+m[1]); return; }
    let v; try { v = JSON.parse(t0 === undefined ? s : s.slice(t0)); } catch { return; }
    const body = Array.isArray(v) ? v[1] : v && v.message_body;
    if (body && typeof body.t === 'number' && this.ondeliver) this.ondeliver(body.t);
  }
  send(text) { if (this.open) this.ws.send(text); }
  close() { try { this.ws.terminate(); } catch { /* already closed */ } }
}

// meshstream's protocol (docs/protocol.md); the peer raw_ws speaks it too.
class MeshClient extends Client {
  frame(s) {
    if (s.indexOf('\n') < 0) return this.line(s);
    for (const line of s.split(/\r?\n/)) if (line) this.line(line); // several JSON objects per frame
  }
  line(s) {
    if (this.joinWait && s.indexOf(`"${this.room}"`) >= 0) this.joinWait(true);
    if (s.indexOf('"send-message"') >= 0) this.deliver(s);
  }
  join() {
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), this.O['join-fallback-ms']);
      const done = (ok) => { clearTimeout(timer); this.joinWait = null; resolve(ok); };
      this.joinWait = done;
      this.send(`{"action":"join-room","target":"${this.room}","message_body":{}}`);
    });
  }
  publish(n) {
    this.send(`{"action":"send-message","target":"${this.room}","message_body":{"t":${now()},"n":${n},"pad":"${this.pad}"}}`);
  }
}

// socket.io (Engine.IO v4 / Socket.IO v5 frames on the websocket transport, as socket.io-client
// sends them): "0{..}" open -> "40"; "40{..}" connected; "2" ping -> "3"; "42[..]" event; "43<id>" ack.
class SioClient extends Client {
  opened() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('socket.io connect timeout')), this.O['connect-timeout'] * 1000);
      this.connected = () => { clearTimeout(timer); this.connected = null; resolve(this); };
    });
  }
  frame(s) {
    if (s.startsWith('42["send-message"')) return this.deliver(s, 2);
    if (s.startsWith('43')) { if (this.joinWait) this.joinWait(true); return; }
    if (s === '2') return this.send('3');
    if (s.startsWith('40') && this.connected) return this.connected();
    if (s.startsWith('0')) return this.send('40');
    if (s.startsWith('41') || s === '1') this.close();
  }
  join() {
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), 10000);
      const done = (ok) => { clearTimeout(timer); this.joinWait = null; resolve(ok); };
      this.joinWait = done;
      this.send(`420${JSON.stringify(['join', this.room])}`);
    });
  }
  publish(n) {
    this.send(`42["send-message",{"room":"${this.room}","t":${now()},"n":${n},"pad":"${this.pad}"}]`);
  }
}

// ------------------------------------------------------------------ a worker process
function worker(O) {
  const Adapter = O.adapter === 'socketio' ? SioClient : MeshClient;
  let clients = [];
  const hist = new Hist();
  let received = 0, sent = 0, expected = 0, tLast = 0, stop = false;
  const send = (m) => process.send(m);
  const loadStats = (cpu0, elu0) => {
    const cpu = process.cpuUsage(cpu0);
    return { lg_cpu_s: (cpu.user + cpu.system) / 1e6, lg_elu: performance.eventLoopUtilization(elu0).utilization };
  };

  async function connect(specs) {
    const t0 = now();
    let failed = 0, next = 0;
    const all = specs.map((s, i) => new Adapter(O, s.room, O.ports[(s.index ?? i) % O.ports.length]));
    all.forEach((c, i) => { c.pub = specs[i].pub; });
    const lane = async () => {
      while (next < all.length) {
        const c = all[next++];
        try { await c.connect(); } catch { failed++; c.close(); }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.ceil(O['connect-concurrency'] / O.workers)) }, lane));
    clients = all.filter((c) => c.open);
    const connectS = (now() - t0) / 1000;
    const t1 = now();
    const confirmed = (await Promise.all(clients.map((c) => c.join()))).filter(Boolean).length;
    const members = {}, pubs = {};
    for (const c of clients) { members[c.room] = (members[c.room] || 0) + 1; if (c.pub) pubs[c.room] = (pubs[c.room] || 0) + 1; }
    send({ op: 'ready', connected: clients.length, failed, connect_s: connectS, joins_confirmed: confirmed,
      join_s: (now() - t1) / 1000, members, pubs });
  }

  async function fanout(pubs) {
    for (const c of clients) expected += O.messages * (pubs[c.room] || 0);
    const cpu0 = process.cpuUsage(), elu0 = performance.eventLoopUtilization();
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      send({ op: 'done', sent, expected, received, t_last: tLast, hist: hist.dump(), ...loadStats(cpu0, elu0),
        disconnects: clients.filter((c) => !c.open).length });
    };
    const pump = (p) => { while (p.inflight < O.window && p.n < O.messages) { p.publish(p.n++); p.inflight++; sent++; } };
    for (const c of clients) {
      c.ondeliver = (t) => {
        const tn = now();
        received++; tLast = tn; hist.add(tn - t);
        if (c.pub) { c.inflight--; pump(c); }
        if (received >= expected) finish();
      };
    }
    const publishers = clients.filter((c) => c.pub);
    for (const p of publishers) { p.n = 0; p.inflight = 0; pump(p); }
    if (received >= expected) finish();
    let last = -1, lastChange = now();
    while (!done && !stop) {
      await sleep(250);
      if (received !== last) { last = received; lastChange = now(); } else if (now() - lastChange > O['idle-timeout'] * 1000) break;
    }
    finish();
  }

  async function chat() {
    const members = {};
    for (const c of clients) members[c.room] = (members[c.room] || 0) + 1;
    for (const c of clients) c.ondeliver = (t) => { const tn = now(); received++; tLast = tn; hist.add(tn - t); };
    const cpu0 = process.cpuUsage(), elu0 = performance.eventLoopUtilization();
    const period = 1000 / O.rate, timers = [];
    let sending = true;
    for (const c of clients) {
      let n = 0;
      const fire = () => { if (sending && c.open) { c.publish(n++); sent++; expected += members[c.room]; } };
      timers.push(setTimeout(() => { fire(); timers.push(setInterval(fire, period)); }, Math.random() * period));
    }
    await sleep(O.duration * 1000);
    sending = false;
    for (const t of timers) { clearTimeout(t); clearInterval(t); }
    const drainEnd = now() + O.drain * 1000;
    while (received < expected && now() < drainEnd && !stop) await sleep(20);
    send({ op: 'done', sent, expected, received, t_last: tLast, hist: hist.dump(), ...loadStats(cpu0, elu0),
      disconnects: clients.filter((c) => !c.open).length });
  }

  const progress = setInterval(() => send({ op: 'progress', sent, received, expected }), 1000);
  process.on('message', (m) => {
    if (m.op === 'connect') connect(m.specs).catch((e) => send({ op: 'error', error: String(e) }));
    else if (m.op === 'start' && O.scenario === 'fanout') fanout(m.pubs);
    else if (m.op === 'start' && O.scenario === 'chat') chat();
    else if (m.op === 'count') send({ op: 'open', still_open: clients.filter((c) => c.open).length });
    else if (m.op === 'stop') stop = true;
    else if (m.op === 'exit') { clearInterval(progress); for (const c of clients) c.close(); setTimeout(() => process.exit(0), 100); }
  });
  process.on('disconnect', () => process.exit(0)); // the primary is gone
}

// ------------------------------------------------------------------ the primary process
async function primary(O) {
  const phase = (name) => log(`@@phase ${name} ${Date.now()}`);
  const specs = [];                 // every client: its room, whether it publishes, and its worker
  if (O.scenario === 'fanout') {
    for (let r = 0; r < O.rooms; r++) for (let j = 0; j <= O.clients; j++) specs.push({ room: `room-${r}`, pub: j === 0 });
  } else if (O.scenario === 'chat') {
    for (let r = 0; r < O.rooms; r++) for (let j = 0; j < O.clients; j++) specs.push({ room: `room-${r}`, pub: false });
  } else {
    for (let i = 0; i < O.conns; i++) specs.push({ room: `room-${i % O.rooms}`, pub: false });
  }
  // fanout and idle: clients dealt round-robin; chat: a room's clients stay in one worker (its
  // expected deliveries are then counted where they are sent)
  const nw = Math.min(O.workers, specs.length);
  const parts = Array.from({ length: nw }, () => []);
  specs.forEach((s, i) => {
    const w = O.scenario === 'chat' ? Number(s.room.slice(5)) % nw : i % nw;
    parts[w].push({ ...s, index: i });
  });
  const args = process.argv.slice(2);
  const workers = parts.map(() => fork(__filename, args, { env: { ...process.env, MESHSTREAM_LOADGEN_WORKER: '1' } }));
  const inbox = workers.map(() => []);
  const waiters = workers.map(() => null);
  const progress = workers.map(() => ({ sent: 0, received: 0, expected: 0 }));
  workers.forEach((w, i) => {
    w.on('message', (m) => {
      if (m.op === 'progress') { progress[i] = m; return; }
      if (waiters[i]) { const r = waiters[i]; waiters[i] = null; r(m); } else inbox[i].push(m);
    });
    w.on('exit', (code) => { if (waiters[i]) waiters[i]({ op: 'error', error: `worker ${i} exited ${code}` }); });
  });
  const next = (i) => (inbox[i].length ? Promise.resolve(inbox[i].shift()) : new Promise((r) => { waiters[i] = r; }));
  const all = async (op) => {
    const got = await Promise.all(workers.map((_, i) => next(i)));
    const bad = got.find((m) => m.op !== op);
    if (bad) throw new Error(bad.error || `unexpected ${bad.op}`);
    return got;
  };
  const sum = (rs, k) => rs.reduce((s, r) => s + r[k], 0);
  const total = (k) => progress.reduce((s, p) => s + p[k], 0);
  const result = { workers: nw };

  phase('connect-start');
  const t0 = now();
  workers.forEach((w, i) => w.send({ op: 'connect', specs: parts[i] }));
  const ticker = setInterval(() => log(`${O.scenario}: ${Math.round((now() - t0) / 1000)} s, sent ${total('sent')} `
    + `received ${total('received')}/${total('expected')}`), 1000);
  const ready = await all('ready');
  phase('connect-end');
  const connected = sum(ready, 'connected');
  log(`connected ${connected}/${specs.length} in ${((now() - t0) / 1000).toFixed(2)} s over ${nw} workers`);
  Object.assign(result, {
    connected, connect_failed: sum(ready, 'failed'), connect_s: +Math.max(...ready.map((r) => r.connect_s)).toFixed(3),
    joins_confirmed: sum(ready, 'joins_confirmed'), join_s: +Math.max(...ready.map((r) => r.join_s)).toFixed(3),
  });
  result.connect_rate = Math.round(connected / Math.max(result.connect_s, 1e-3));

  if (O.scenario === 'idle') {
    phase('hold-start');
    await sleep(O.hold * 1000);
    phase('hold-end');
    workers.forEach((w) => w.send({ op: 'count' }));
    result.still_open = sum(await all('open'), 'still_open');
    Object.assign(result, { conns: O.conns, rooms: O.rooms, hold_s: O.hold });
  } else {
    const pubs = {};
    for (const r of ready) for (const [room, n] of Object.entries(r.pubs)) pubs[room] = (pubs[room] || 0) + n;
    await sleep(O['settle-ms']);
    phase('measure-start');
    const tStart = now();
    workers.forEach((w) => w.send({ op: 'start', pubs }));
    const done = await all('done');
    phase('measure-end');
    const hist = new Hist();
    for (const d of done) hist.merge(d.hist);
    const received = sum(done, 'received'), expected = sum(done, 'expected');
    const wall = Math.max(1e-3, (Math.max(...done.map((d) => d.t_last)) || now()) - tStart) / 1000;
    Object.assign(result, {
      rooms: O.rooms, clients_per_room: O.clients, sent: sum(done, 'sent'), expected, received,
      lost: expected - received, wall_s: +wall.toFixed(3), deliveries_per_s: Math.round(received / wall),
      ...hist.summary(), disconnects: sum(done, 'disconnects'), lg_cpu_s: +sum(done, 'lg_cpu_s').toFixed(3),
      lg_elu: +Math.max(...done.map((d) => d.lg_elu)).toFixed(3), // the busiest worker
    }, O.scenario === 'fanout' ? { messages: O.messages, window: O.window } : { rate: O.rate, duration: O.duration });
  }
  clearInterval(ticker);
  workers.forEach((w) => w.send({ op: 'exit' }));
  return result;
}

function main() {
  let O;
  try { O = parseArgs(process.argv.slice(2)); } catch (e) { log(String(e.message)); process.exit(2); }
  if (process.env.MESHSTREAM_LOADGEN_WORKER) return worker(O);
  log(`loadgen ${O.scenario} adapter=${O.adapter} ports=${O.ports.join(',')} workers=${O.workers}`);
  const head = { scenario: O.scenario, adapter: O.adapter, ports: O.ports };
  const hardStop = setTimeout(() => { log('loadgen: --timeout reached'); out({ error: 'timeout' }); }, (O.timeout + 30) * 1000);
  const out = (r) => { clearTimeout(hardStop); process.stdout.write(JSON.stringify({ ...head, ...r }) + '\n'); setTimeout(() => process.exit(0), 300); };
  primary(O).then(out, (e) => { log('error:', e && e.stack || e); out({ error: String(e && e.message || e) }); });
}

main();
