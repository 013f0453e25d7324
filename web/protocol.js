// Words Battle's game protocol (docs/words-battle.md) and game state, free of any DOM or
// socket code. The wire itself (framing, request ids, reconnects, resume) is the client
// library's: clients/js/meshstream.js, used by app.js.

export const LOBBY = "mesh-global";
export const BOT = "bot-of-the-room";
export const DEFAULT_DURATION = 60;
export const DEFAULT_PLAYER_LIMIT = 3;
export const GUEST_NAME = "Guest";
export const ROOM_NAME_RE = /^[A-Za-z0-9]{1,10}$/;
const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

// ------------------------------------------------------------------ helpers

/** Build one outgoing envelope (the server stamps `sender` itself). */
export function envelope(action, target, body) {
  const msg = { action, target };
  if (body !== undefined) msg.message_body = body;
  return msg;
}

export function randomRoomName(len = 10, rand = Math.random) {
  let s = "";
  const cryptoObj = typeof globalThis !== "undefined" ? globalThis.crypto : undefined;
  if (rand === Math.random && cryptoObj && cryptoObj.getRandomValues) {
    const buf = new Uint32Array(len);
    cryptoObj.getRandomValues(buf);
    for (let i = 0; i < len; i++) s += ALNUM[buf[i] % ALNUM.length];
    return s;
  }
  for (let i = 0; i < len; i++) s += ALNUM[Math.floor(rand() * ALNUM.length)];
  return s;
}

/** Player name: 4–9 characters; empty means "Guest". Returns {ok, name, error}. */
export function checkPlayerName(raw) {
  const name = String(raw ?? "").trim().replace(/\s+/g, " ");
  if (!name) return { ok: true, name: GUEST_NAME };
  const len = [...name].length;
  if (len < 4 || len > 9) return { ok: false, name, error: "Name must be 4–9 characters (or leave it empty to play as Guest)." };
  return { ok: true, name };
}

/** Friend room name: up to 10 letters or digits. Returns {ok, room, error}. */
export function checkRoomName(raw) {
  const room = String(raw ?? "").trim();
  if (!room) return { ok: false, room, error: "Enter a room name to play with a friend." };
  if (!ROOM_NAME_RE.test(room)) return { ok: false, room, error: "Room names are up to 10 letters or digits." };
  return { ok: true, room };
}

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export function escapeHtml(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ESC[c]);
}

/**
 * Bot HTML: keep only <b>, <i>, <br>, <span> without attributes (open/close,
 * <br/> allowed); everything else is escaped and so shown as text.
 */
export function sanitizeBotHtml(input) {
  const s = String(input ?? "");
  const re = /<(\/?)(b|i|span)>|<br\s*\/?>|<\/br>/gi;
  let out = "";
  let last = 0;
  let m;
  while ((m = re.exec(s)) !== null) {
    out += escapeHtml(s.slice(last, m.index));
    if (m[2]) out += `<${m[1]}${m[2].toLowerCase()}>`;
    else out += "<br>";
    last = re.lastIndex;
  }
  out += escapeHtml(s.slice(last));
  return out;
}

/** Plain text of bot HTML (for toasts, titles). */
export function botHtmlToText(input) {
  return String(input ?? "")
    .replace(/<br\s*\/?>/gi, "\n")
    .replace(/<\/?(b|i|span)>/gi, "");
}

function toInt(v, fallback) {
  const n = parseInt(v, 10);
  return Number.isFinite(n) ? n : fallback;
}

function normPlayer(p) {
  if (!p || typeof p !== "object") return null;
  return {
    slug: String(p.slug ?? ""),
    name: String(p.name ?? ""),
    color: String(p.color ?? ""),
    score: toInt(p.score, 0),
  };
}

/**
 * Apply `clientstats` to the last client list, walking by index as the
 * original client did (a stat whose slug names another listed player updates
 * that player instead). Never grows the list.
 */
export function applyClientStats(players, stats) {
  const next = players.map((p) => ({ ...p }));
  if (!Array.isArray(stats)) return next;
  const n = Math.min(stats.length, next.length);
  for (let i = 0; i < n; i++) {
    const st = normPlayer(stats[i]);
    if (!st) continue;
    let target = next[i];
    if (st.slug && target.slug !== st.slug) {
      const bySlug = next.find((p) => p.slug === st.slug);
      if (bySlug) target = bySlug;
    }
    target.score = st.score;
    if (st.color) target.color = st.color;
    if (st.name) target.name = st.name;
  }
  return next;
}

/** Best effort: read the player limit and game duration from a room-setting-applied text. */
export function parseSettingsText(text) {
  const t = botHtmlToText(text);
  const res = {};
  let m = t.match(/(\d+)\s*(?:s\b|secs?\b|seconds?\b)/i) || t.match(/duration\D{0,20}?(\d+)/i);
  if (m) res.duration = toInt(m[1], undefined);
  m = t.match(/(\d+)\s*(?:players?|clients?|people)\b/i) || t.match(/limit\D{0,20}?(\d+)/i);
  if (m) res.limit = toInt(m[1], undefined);
  return res;
}

// ------------------------------------------------------------------ session

/**
 * One browser session. `send(obj)` puts an envelope on the socket, `emit(type,
 * data)` tells the UI what happened. The UI reads `session.state` to render.
 *
 * state.screen: "lobby" | "room" | "end"
 * state.phase (in a room): "joining" | "waiting" | "chat" | "turn" | "over"
 */
export class Session {
  constructor({ send, emit, now } = {}) {
    this.send = send || (() => {});
    this.emit = emit || (() => {});
    this.now = now || (() => Date.now());
    this.clientId = "";
    this.playerName = "";
    this.resetRoom();
  }

  resetRoom() {
    this.state = {
      screen: "lobby",
      room: "",
      random: false,
      phase: "",
      maker: false,
      players: [],
      letter: "",
      turn: null, // {slug, name, color, score}
      turnDeadline: 0, // ms epoch, 0 = no turn timer
      turnSeconds: 0,
      gameDeadline: 0,
      gameStarted: false,
      duration: DEFAULT_DURATION,
      playerLimit: DEFAULT_PLAYER_LIMIT,
      pendingSettings: null,
      botMessage: "",
      result: null, // {message, ranking, words}
      nameSent: false,
    };
  }

  get inRoom() {
    return this.state.screen === "room" && !!this.state.room;
  }

  /** "mine" | "other" | "chat" | "" */
  get turnMode() {
    const s = this.state;
    if (s.screen !== "room") return "";
    if (s.phase === "turn" && s.turn) return s.turn.slug && s.turn.slug === this.clientId ? "mine" : "other";
    if (s.phase === "chat") return "chat";
    return "";
  }

  // ---------------------------------------------------------------- commands

  joinFriend(playerName, room) {
    this.resetRoom();
    this.playerName = playerName;
    Object.assign(this.state, { screen: "room", room, random: false, phase: "joining" });
    this.send(envelope("join-room", LOBBY, { roomname: room, playerlimit: DEFAULT_PLAYER_LIMIT, setplayername: playerName }));
    this.emit("change");
  }

  joinRandom(playerName, room = randomRoomName()) {
    this.resetRoom();
    this.playerName = playerName;
    Object.assign(this.state, { screen: "room", room, random: true, phase: "joining", playerLimit: 2 });
    this.send(envelope("join-random-room", LOBBY, { roomname: room }));
    this.emit("change");
  }

  leave({ silent = false } = {}) {
    const room = this.state.room;
    if (room && (this.state.screen === "room" || this.state.screen === "end")) {
      this.send(envelope("leave-room", room, { message: room }));
    }
    this.resetRoom();
    if (!silent) this.emit("change");
  }

  /** The single room input: a word on my turn, chat otherwise. Returns the action used. */
  submit(text) {
    const s = this.state;
    const value = String(text ?? "").trim();
    if (!value || !this.inRoom) return null;
    if (this.turnMode === "mine") {
      this.send(envelope("attempt-word", s.room, { message: value.toLowerCase() }));
      return "attempt-word";
    }
    this.send(envelope("send-message", s.room, { message: value }));
    return "send-message";
  }

  applySettings(limit, duration) {
    const s = this.state;
    if (!this.inRoom) return;
    const l = toInt(limit, s.playerLimit);
    const d = toInt(duration, s.duration);
    s.pendingSettings = { limit: l, duration: d };
    this.send(envelope("room-settings", s.room, { game_duration: String(d), player_limit: String(l) }));
  }

  startGame() {
    const s = this.state;
    if (!this.inRoom) return;
    this.send(envelope("start-the-game", s.room, { message: s.room }));
  }

  /** The socket closed: whatever room we were in is gone for this client ID. */
  disconnected() {
    const wasInRoom = this.state.screen === "room";
    this.clientId = "";
    if (wasInRoom) {
      this.resetRoom();
      this.emit("toast", { kind: "error", text: "Connection lost — you left the room." });
    }
    this.emit("change");
  }

  /**
   * A resume was refused (`reason`, e.g. the window passed): the old client ID, its rooms
   * and its game are gone; back to the lobby with a notice. The client-connected that
   * said so gives the new identity.
   */
  resumeRefused(reason) {
    const wasInRoom = this.state.screen !== "lobby";
    this.clientId = "";
    this.resetRoom();
    const why = reason ? ` (${reason})` : "";
    this.emit("toast", {
      kind: "error",
      text: wasInRoom ? `Reconnected, but the game was lost${why} — you are back in the lobby.`
        : `Reconnected as a new player${why}.`,
    });
    this.emit("change");
  }

  // ---------------------------------------------------------------- incoming

  handle(msg) {
    const a = msg.action;
    const body = msg.message_body || {};
    const s = this.state;
    const forRoom = !!s.room && msg.target === s.room && s.screen === "room";

    switch (a) {
      case "client-connected": {
        const id = String(body.client || msg.target || "");
        if (id) this.clientId = id;
        this.emit("identity", this.clientId);
        break;
      }
      case "found-random-room-notify": {
        if (s.screen === "room" && s.random && body.roomname) {
          s.room = String(body.roomname);
          this.emit("change");
        }
        break;
      }
      case "know-yourself": {
        const id = String(body.sender || (msg.IsTargetClient ? msg.target : "") || "");
        if (id) {
          this.clientId = id;
          this.emit("identity", id);
        }
        if (s.screen === "room" && s.room && !s.nameSent) {
          s.nameSent = true;
          if (s.phase === "joining") s.phase = "waiting";
          this.send(envelope("set-client-name", s.room, { setname: this.playerName || GUEST_NAME }));
          this.emit("change");
        }
        break;
      }
      case "is-room-maker": {
        // Sent to the room maker only; a friend room's maker sets it up and starts it.
        if (s.screen !== "room") break;
        s.maker = !s.random;
        this.emit("change");
        break;
      }
      case "fail-join-room-notify": {
        if (s.screen !== "room") break;
        if (msg.target && msg.target !== s.room && msg.target !== this.clientId && !msg.IsTargetClient) break;
        const reason = botHtmlToText(body.message || "Could not join the room.");
        const room = s.room;
        this.resetRoom();
        this.emit("toast", { kind: "error", text: room ? `${room}: ${reason}` : reason });
        this.emit("change");
        break;
      }
      case "join-room-notify": {
        if (!forRoom) break;
        if (s.phase === "joining") s.phase = "waiting";
        const who = String(msg.sender || "");
        const known = s.players.find((p) => p.slug === who);
        const label = who && who === this.clientId ? "You" : known ? known.name : "A new player";
        let text = String(body.newmessage || "");
        if (!text) text = `${label} joined the room`;
        else if (who && text.includes(who)) text = text.split(who).join(label);
        this.emit("system", { text });
        this.emit("change");
        break;
      }
      case "client-list-notify": {
        if (!forRoom) break;
        const list = Array.isArray(body.clientsinroomessage) ? body.clientsinroomessage.map(normPlayer).filter(Boolean) : [];
        s.players = list;
        if (s.turn) {
          const t = list.find((p) => p.slug === s.turn.slug);
          if (t) s.turn = { ...t };
        }
        if (s.phase === "joining") s.phase = "waiting";
        this.emit("change");
        break;
      }
      case "room-setting-applied": {
        if (!forRoom) break;
        const text = String(body.message || "Room settings applied");
        const parsed = parseSettingsText(text);
        const pend = s.pendingSettings;
        s.duration = parsed.duration ?? pend?.duration ?? s.duration;
        s.playerLimit = parsed.limit ?? pend?.limit ?? s.playerLimit;
        s.pendingSettings = null;
        this.emit("bot", { html: sanitizeBotHtml(text), kind: "settings" });
        this.emit("change");
        break;
      }
      case "room-bot-greetings": {
        if (!forRoom) break;
        s.gameStarted = true;
        s.phase = s.phase === "turn" ? "turn" : "chat";
        s.gameDeadline = this.now() + s.duration * 1000;
        s.maker = false; // settings/start no longer apply
        this.emit("system", { text: "The game has started!" });
        this.emit("change");
        break;
      }
      case "send-message": {
        if (!forRoom) break;
        const sender = String(msg.sender || "");
        if (sender === BOT || !body.color && !body.useravatar && sender === "") {
          this.emit("bot", { html: sanitizeBotHtml(body.message) });
        } else {
          const p = s.players.find((x) => x.slug === sender);
          this.emit("chat", {
            sender,
            name: p ? p.name : "",
            avatar: String(body.useravatar || (p ? p.name.slice(0, 2) : "") || "?"),
            color: String(body.color || (p ? p.color : "") || ""),
            text: String(body.message ?? ""),
            mine: !!sender && sender === this.clientId,
          });
        }
        break;
      }
      case "message-by-bot": {
        if (!forRoom) break;
        if (!s.gameStarted) {
          s.gameStarted = true;
          s.gameDeadline = this.now() + s.duration * 1000;
          s.maker = false;
        }
        const timer = toInt(body.timer, 0);
        s.turnSeconds = timer;
        s.turnDeadline = timer > 0 ? this.now() + timer * 1000 : 0;
        if (Array.isArray(body.clientstats)) s.players = applyClientStats(s.players, body.clientstats);
        s.letter = typeof body.letter === "string" ? body.letter : "";
        const t = normPlayer(body.whichclientturn);
        if (t && t.slug) {
          s.turn = t;
          s.phase = "turn";
        } else {
          s.turn = null;
          s.phase = "chat";
        }
        s.botMessage = String(body.message ?? "");
        if (s.botMessage) this.emit("bot", { html: sanitizeBotHtml(s.botMessage), kind: "turn" });
        this.emit("turn", { mode: this.turnMode });
        this.emit("change");
        break;
      }
      case "room-bot-end-game": {
        if (!forRoom) break;
        const ranking = (Array.isArray(body.client_list) ? body.client_list : s.players)
          .map(normPlayer)
          .filter(Boolean)
          .sort((x, y) => y.score - x.score);
        const words = Array.isArray(body.word_list) ? body.word_list.map((w) => String(w)) : [];
        s.result = { message: String(body.message ?? ""), ranking, words };
        s.phase = "over";
        s.screen = "end";
        s.turn = null;
        s.turnDeadline = 0;
        s.gameDeadline = 0;
        this.emit("change");
        break;
      }
      case "error": {
        const code = body.code ? String(body.code) : "";
        const text = String(body.message || body.error || "Server error");
        this.emit("toast", { kind: "error", text: code ? `${text} (${code})` : text });
        break;
      }
      default:
        break; // unknown actions are ignored
    }
  }
}
