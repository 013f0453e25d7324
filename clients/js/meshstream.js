// meshstream client: the client protocol of docs/protocol.md in one ES module, for
// browsers and Node (no build step, no runtime dependency).
//
// Two layers, as the server's own code: a pure core (`parseFrame`, `backoff`, `Resume`,
// `tokenExpiry`) that turns frames and close codes into decisions without a socket or a
// clock, and `MeshClient`, the thin I/O layer that owns the WebSocket, the timers and the
// requests in flight. docs/clients.md is the guide.

export const LOBBY = "mesh-global";

/**
 * Close codes after which the client comes back (docs/protocol.md, "Closing codes"), resuming
 * its session: the gateway stopped (1001) or is restarting (1012), the connection was lost
 * (1006: no close frame), a keepalive timeout (1011), try again later (1013, 1014). Any
 * other close ends the client: a clean close (1000), a close for cause (1007, 1008, 1009,
 * 4000, 4001), resumed elsewhere (4002: another tab took the session), a token (4003).
 */
export const RECONNECT_CODES = new Set([1001, 1006, 1011, 1012, 1013, 1014]);

/** An error reply, a refused connection or a request that timed out: `code` is stable. */
export class MeshError extends Error {
  /**
   * @param {string} code  a docs/protocol.md error code, a close reason, or one of the
   *   library's own: "timeout", "connection-lost", "closed", "no-websocket"
   * @param {string} [message]
   * @param {{frame?: object, closeCode?: number}} [detail]
   */
  constructor(code, message, { frame, closeCode } = {}) {
    super(message || code);
    this.name = "MeshError";
    this.code = code;
    this.frame = frame;
    this.closeCode = closeCode;
  }
}

// ------------------------------------------------------------------ the pure core

/**
 * Split one WebSocket text message into frames: the server may join several JSON objects
 * with "\n" (split on \r?\n). Lines that are not JSON objects with a string `action` are
 * skipped; an absent or null `message_body` becomes {}.
 */
export function parseFrame(text) {
  const out = [];
  if (typeof text !== "string") return out;
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    let msg;
    try {
      msg = JSON.parse(line);
    } catch (_) {
      continue;
    }
    if (msg && typeof msg === "object" && !Array.isArray(msg) && typeof msg.action === "string") {
      if (!msg.message_body || typeof msg.message_body !== "object") msg.message_body = {};
      out.push(msg);
    }
  }
  return out;
}

/** Reconnect delay in ms: `min` doubling per attempt up to `max`, ±50 % jitter (`rand` in [0, 1)). */
export function backoff(attempt, { min = 500, max = 10000, rand = Math.random } = {}) {
  const base = Math.min(max, min * 2 ** Math.min(Math.max(0, attempt), 30));
  return base * (0.5 + rand());
}

/**
 * ms from `now` until a token expiring at `expires` (both ms) is refreshed: a fifth of its
 * remaining life ahead of expiry, at least 1 s and at most `lead` ms ahead; never negative.
 */
export function refreshDelay(expires, now, lead = 60000) {
  const left = expires - now;
  return Math.max(0, left - Math.min(lead, Math.max(1000, left / 5)));
}

/** A JWT's `exp` in seconds since the epoch, or null (no exp, or not a JWT). Not verified. */
export function tokenExpiry(token) {
  if (typeof token !== "string") return null;
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = typeof atob === "function" ? atob(b64) : Buffer.from(b64, "base64").toString("binary");
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp : null;
  } catch (_) {
    return null;
  }
}

/** Bytes of positions in a resume URL at most (a request line is at most 8 KiB). */
const POSITIONS_BYTES = 6000;
/** Streams whose position is kept (the least recently active forgotten first). */
const MAX_POSITIONS = 1000;

/**
 * What a client needs to resume its session (docs/protocol.md, "Sessions and resume",
 * "Positions"): the secret and processor epoch from client-connected, and per stream (named
 * by its epoch: a room's, or the processor's for this client's direct messages) the offset of
 * the last message received.
 */
export class Resume {
  constructor() {
    this.session = ""; // the resume secret; "" from a server without sessions: never resume
    this.epoch = ""; // the processor's: also the epoch of this client's direct messages
    this.positions = new Map(); // stream epoch -> offset of its last message, least recent first
    this.client = "";
  }

  /** Whether a connection that closed with `code` should be resumed. */
  shouldResume(code) {
    return !!this.session && RECONNECT_CODES.has(code);
  }

  /**
   * The URL to resume with: `base` plus ?resume=<secret>&positions=<epoch>:<offset>,… (the
   * direct messages' first, then the most recently active, within POSITIONS_BYTES; a stream
   * left out is replayed from when the session went away).
   */
  url(base) {
    if (!this.session) return base;
    const u = new URL(base);
    for (const k of ["resume", "positions", "seq"]) u.searchParams.delete(k);
    let query = u.search ? u.search.slice(1) + "&" : "";
    query += "resume=" + encodeURIComponent(this.session);
    const order = [...this.positions].reverse();
    order.sort((a, b) => (a[0] === this.epoch ? 0 : 1) - (b[0] === this.epoch ? 0 : 1));
    const named = [];
    let size = 0;
    for (const [epoch, offset] of order) {
      const text = `${encodeURIComponent(epoch)}:${offset}`;
      size += text.length + 1;
      if (size > POSITIONS_BYTES) break;
      named.push(text);
    }
    if (named.length) query += "&positions=" + named.join(",");
    u.search = "?" + query;
    return u.toString();
  }

  /**
   * False for a frame already received (its `offset` not above the last of its epoch's), else
   * true, keeping its position. Frames without one (replies, errors) always pass. A frame of
   * another processor (its epoch's part before the first "." is not ours: a restart, or a
   * standby took over) starts them all over.
   */
  accept(msg) {
    const offset = msg.offset;
    const epoch = msg.epoch;
    if (typeof offset !== "number" || !Number.isFinite(offset) || typeof epoch !== "string") return true;
    const processor = epoch.split(".")[0];
    if (processor !== this.epoch) {
      // another processor took over (a restart, a failover): what we had of the old one is gone
      this.epoch = processor;
      this.positions = new Map([[processor, 0]]);
    }
    const last = this.positions.get(epoch);
    if (last !== undefined && offset <= last) return false;
    this.positions.delete(epoch); // set again last: the most recently active
    if (msg.action === "client-left-room" && msg.sender === this.client) return true; // we left it
    this.positions.set(epoch, offset);
    if (this.positions.size > MAX_POSITIONS) this.positions.delete(this.positions.keys().next().value);
    return true;
  }

  /** client-connected's body: "fresh", "resumed" (same client, replay follows) or "refused". */
  connected(body) {
    const b = body && typeof body === "object" ? body : {};
    this.session = typeof b.session === "string" ? b.session : "";
    if (typeof b.client === "string") this.client = b.client;
    if (b.resumed === true) return "resumed"; // the positions stand: the replay continues after them
    this.epoch = typeof b.epoch === "string" || typeof b.epoch === "number" ? String(b.epoch) : "";
    this.positions = new Map(this.epoch ? [[this.epoch, 0]] : []); // a new client: no message yet
    return b.resumed === false ? "refused" : "fresh";
  }

  /** Forget the session (after a close that ends it). */
  reset() {
    this.session = "";
    this.epoch = "";
    this.positions = new Map();
    this.client = "";
  }
}

// ------------------------------------------------------------------ the client

const MAX_OUTBOX = 1000;

/**
 * One logical connection to a meshstream server that survives lost WebSockets: it
 * reconnects with backoff and resumes its session (same client ID, rooms, missed frames).
 *
 * Events (`on(type, fn)`; `fn` gets one detail object):
 *   message        every frame from the server (replies included), once, in order
 *   error          an error frame no pending request() took
 *   connected      {clientId, user, outcome: "fresh"|"resumed"|"refused", reason?, previousClientId?}
 *   resumed        {clientId}: the same client, its rooms kept; missed frames follow
 *   disconnected   {code, reason, willReconnect, willResume}
 *   reconnecting   {attempt, delay, resume}
 *   closed         {code, reason, error?}: for good (close(), or a code that means "don't")
 *   token-refreshed {expires}
 */
export class MeshClient {
  /**
   * @param {string} url  ws://host:port/wsmesh (or wss://)
   * @param {object} [options]  see meshstream.d.ts (`MeshClientOptions`)
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = {
      token: undefined,
      getToken: undefined,
      refreshLead: 60000,
      requestTimeout: 10000,
      reconnect: true,
      backoffMin: 500,
      backoffMax: 10000,
      keepQueued: (_frame, outcome) => outcome !== "refused",
      WebSocket: undefined,
      ...options,
    };
    this.resume = new Resume();
    this.clientId = "";
    this.user = undefined;
    /** "idle" | "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "idle";
    this.token = this.options.token;
    this._listeners = new Map();
    this._pending = new Map();
    this._nextId = 1;
    this._outbox = [];
    this._ws = null;
    this._attempt = 0;
    this._reconnectTimer = null;
    this._refreshTimer = null;
    this._ready = null; // {promise, resolve, reject} of the first connect()
  }

  // ---------------------------------------------------------------- events

  /** Listen to `type`; returns a function that stops listening. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /** A promise of the next `type` event (whose detail passes `filter`, if given). */
  once(type, filter = () => true) {
    return new Promise((resolve) => {
      const stop = this.on(type, (detail) => {
        if (!filter(detail)) return;
        stop();
        resolve(detail);
      });
    });
  }

  _emit(type, detail) {
    for (const fn of [...(this._listeners.get(type) || [])]) {
      try {
        fn(detail);
      } catch (err) {
        console.error(`meshstream: a "${type}" listener threw`, err);
      }
    }
  }

  // ---------------------------------------------------------------- connecting

  /**
   * Open the connection; resolves with the first `connected` detail, rejects with a
   * MeshError when the client gives up (a refused token: code "bad-token", …) or close().
   */
  connect() {
    if (this._ready) return this._ready.promise;
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    this._ready = { promise, resolve, reject, settled: false };
    this.state = "connecting";
    this._open();
    return promise;
  }

  async _open() {
    this._reconnectTimer = null;
    const Socket = this.options.WebSocket || globalThis.WebSocket;
    if (!Socket) {
      this._finish(1006, "", new MeshError("no-websocket",
        "no WebSocket: pass options.WebSocket (e.g. the `ws` package) or run Node 22+"));
      return;
    }
    const resuming = this.state === "reconnecting" && !!this.resume.session;
    try {
      if (this.options.getToken && (this._attempt > 0 || this.token === undefined)) {
        this.token = await this.options.getToken();
      }
    } catch (err) {
      this._emit("error", new MeshError("token-unavailable", String(err?.message || err)));
      this._schedule();
      return;
    }
    if (this.state === "closed") return;
    const u = new URL(resuming ? this.resume.url(this.url) : this.url);
    if (this.token) u.searchParams.set("token", this.token);
    let ws;
    try {
      ws = new Socket(u.toString());
    } catch (err) {
      this._finish(1006, "", new MeshError("bad-url", String(err?.message || err)));
      return;
    }
    this._ws = ws;
    this._resuming = resuming;
    ws.onmessage = (ev) => {
      if (this._ws === ws) this._receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (this._ws === ws) this._closed(ev.code, ev.reason || "");
    };
    ws.onerror = () => { /* a close follows */ };
  }

  _receive(data) {
    if (typeof data !== "string") return; // the server sends text frames only
    for (const msg of parseFrame(data)) {
      if (!this.resume.accept(msg)) continue; // already received (a repeat after a resume)
      if (msg.action === "client-connected" && msg.sender === "meshstream" && !msg.id) {
        this._connected(msg);
      }
      this._settle(msg);
      this._emit("message", msg);
    }
  }

  _connected(msg) {
    const body = msg.message_body;
    const previousClientId = this.clientId;
    const outcome = this.resume.connected(body);
    this.clientId = String(body.client || msg.target || "");
    this.user = typeof body.user === "string" ? body.user : undefined;
    this.state = "open";
    this._attempt = 0;
    const detail = { clientId: this.clientId, user: this.user, outcome };
    if (outcome === "refused") {
      detail.reason = typeof body.reason === "string" ? body.reason : "";
      detail.previousClientId = previousClientId;
    }
    this._emit("connected", detail);
    if (outcome === "resumed") this._emit("resumed", { clientId: this.clientId });
    if (this._ready && !this._ready.settled) {
      this._ready.settled = true;
      this._ready.resolve(detail);
    }
    const queued = this._outbox.splice(0);
    for (const frame of queued) {
      if (this.options.keepQueued(frame, outcome)) this._write(frame);
      else this._fail(frame.id, new MeshError("connection-lost", "the session was lost before it was sent"));
    }
    this._scheduleRefresh();
  }

  _closed(code, reason) {
    this._ws = null;
    clearTimeout(this._refreshTimer);
    const wasOpen = this.state === "open";
    // Requests sent on this connection: their replies may never come (a resume replays
    // messages, not replies). Those still in the outbox wait for the next connection.
    for (const [id, p] of [...this._pending]) {
      if (p.sent) this._fail(id, new MeshError("connection-lost", `connection closed (${code})`, { closeCode: code }));
    }
    if (this.state === "closed") return;
    if (!this.options.reconnect || !RECONNECT_CODES.has(code)) {
      const error = code === 1000 ? undefined
        : new MeshError(reason || "closed", `connection closed: ${code} ${reason}`.trim(), { closeCode: code });
      this._emit("disconnected", { code, reason, willReconnect: false, willResume: false });
      this._finish(code, reason, error);
      return;
    }
    const willResume = this.resume.shouldResume(code);
    if (!willResume && this.resume.session) this.resume.reset();
    if (wasOpen || this.state !== "reconnecting") {
      this._emit("disconnected", { code, reason, willReconnect: true, willResume });
    }
    this._schedule(code);
  }

  _schedule(code) {
    this.state = "reconnecting";
    // a gateway restarting (1012) asks to come back at once, on another gateway
    const delay = code === 1012 && this._attempt === 0 ? 0
      : backoff(this._attempt, { min: this.options.backoffMin, max: this.options.backoffMax });
    this._attempt++;
    this._emit("reconnecting", { attempt: this._attempt, delay, resume: !!this.resume.session });
    this._reconnectTimer = setTimeout(() => this._open(), delay);
  }

  _finish(code, reason, error) {
    this.state = "closed";
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._refreshTimer);
    this.resume.reset();
    this._outbox.length = 0;
    for (const id of [...this._pending.keys()]) {
      this._fail(id, error || new MeshError("closed", "the client is closed", { closeCode: code }));
    }
    if (this._ready && !this._ready.settled) {
      this._ready.settled = true;
      this._ready.reject(error || new MeshError("closed", `connection closed (${code})`, { closeCode: code }));
    }
    this._emit("closed", { code, reason, error });
  }

  /** Close for good (a clean close: the server ends the session at once). */
  close(code = 1000, reason = "") {
    if (this.state === "closed") return;
    const ws = this._ws;
    this._ws = null;
    this._finish(code, reason);
    if (ws) {
      try {
        ws.close(code, reason);
      } catch (_) { /* already closing */ }
    }
  }

  /** Reconnect now instead of waiting for the backoff (e.g. a "retry" button). */
  reconnectNow() {
    if (this.state !== "reconnecting" || !this._reconnectTimer) return;
    clearTimeout(this._reconnectTimer);
    this._open();
  }

  // ---------------------------------------------------------------- sending

  /**
   * Send one frame. While the connection is being made or resumed it waits (up to 1000
   * frames) and goes when the server has answered; `keepQueued` decides after a refused
   * resume.
   */
  send(frame) {
    if (this.state === "closed") throw new MeshError("closed", "the client is closed");
    if (this.state === "open" && this._ws) {
      this._write(frame);
    } else if (this._outbox.length < MAX_OUTBOX) {
      this._outbox.push(frame);
    } else {
      throw new MeshError("outbox-full", "too many frames waiting for the connection");
    }
  }

  _write(frame) {
    this._ws.send(JSON.stringify(frame));
    const p = frame.id === undefined ? undefined : this._pending.get(frame.id);
    if (p) p.sent = true;
  }

  /**
   * Send `frame` with a fresh request `id`; resolves with the first reply carrying it,
   * rejects with a MeshError: the error frame's code, "timeout" after `timeout` ms, or
   * "connection-lost" when the connection drops first.
   */
  request(frame, { timeout = this.options.requestTimeout } = {}) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new MeshError("timeout", `no reply to ${frame.action} within ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer, sent: false });
      try {
        this.send({ ...frame, id });
      } catch (err) {
        this._fail(id, err);
      }
    });
  }

  _settle(msg) {
    const p = msg.id === undefined || msg.id === null ? undefined : this._pending.get(msg.id);
    if (!p) {
      if (msg.action === "error") this._emit("error", errorOf(msg));
      return;
    }
    this._pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.action === "error") p.reject(errorOf(msg));
    else p.resolve(msg);
  }

  _fail(id, err) {
    const p = this._pending.get(id);
    if (!p) return;
    this._pending.delete(id);
    clearTimeout(p.timer);
    p.reject(err);
  }

  /** Join `room` (body: e.g. {token} for a private room); resolves with client-joined-room. */
  join(room, body, options) {
    return this.request({ action: "join-room", target: room, ...(body ? { message_body: body } : {}) }, options);
  }

  /** Leave `room`; resolves with client-left-room. */
  leave(room, options) {
    return this.request({ action: "leave-room", target: room }, options);
  }

  /** Relay `action` to every member of `room`; resolves with your own copy (the acknowledgement). */
  publish(room, action, body = {}, options) {
    return this.request({ action, target: room, message_body: body }, options);
  }

  /** A direct message to one client (no reply: the server answers only errors). */
  sendTo(clientId, action, body = {}) {
    this.send({ action, target: clientId, message_body: body, IsTargetClient: true });
  }

  // ---------------------------------------------------------------- tokens

  /**
   * Replace the connection's token (`refresh-token`); resolves with the reply's body
   * ({user, expires?}). Without an argument asks `getToken` for one.
   */
  async refreshToken(token) {
    const next = token ?? (this.options.getToken ? await this.options.getToken() : undefined);
    if (typeof next !== "string") throw new MeshError("token-unavailable", "no token to refresh with");
    const reply = await this.request({ action: "refresh-token", message_body: { token: next } });
    this.token = next;
    this._scheduleRefresh();
    this._emit("token-refreshed", { expires: reply.message_body.expires });
    return reply.message_body;
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const exp = tokenExpiry(this.token);
    if (exp === null || !this.options.getToken || this.state !== "open") return;
    const delay = refreshDelay(exp * 1000, Date.now(), this.options.refreshLead);
    this._refreshTimer = setTimeout(() => {
      this.refreshToken().catch((err) => this._emit("error", err));
    }, delay);
  }
}

function errorOf(msg) {
  const b = msg.message_body || {};
  const code = typeof b.code === "string" ? b.code : "error";
  return new MeshError(code, typeof b.message === "string" ? b.message : code, { frame: msg });
}
