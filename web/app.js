// Words Battle browser client: the connection (through the client library) and DOM rendering.
// The game's protocol and state live in protocol.js.

import { MeshClient } from "/client/meshstream.js";
import {
  Session,
  checkPlayerName,
  checkRoomName,
  escapeHtml,
  sanitizeBotHtml,
  BOT,
  LOBBY,
} from "./protocol.js";

const $ = (sel) => document.querySelector(sel);
const el = {
  status: $("#status"),
  statusText: $("#status-text"),
  lobby: $("#lobby-screen"),
  room: $("#room-screen"),
  end: $("#end-screen"),
  lobbyForm: $("#lobby-form"),
  playerName: $("#player-name"),
  roomName: $("#room-name"),
  playFriend: $("#play-friend"),
  playRandom: $("#play-random"),
  lobbyError: $("#lobby-error"),
  roomTitle: $("#room-title"),
  roomKind: $("#room-kind"),
  share: $("#share"),
  shareLink: $("#share-link"),
  copyLink: $("#copy-link"),
  leave: $("#leave-room"),
  letter: $("#current-letter"),
  ring: $("#timer-ring"),
  timer: $("#timer"),
  turnLabel: $("#turn-label"),
  turnName: $("#turn-name"),
  gameTimer: $("#game-timer"),
  players: $("#players"),
  playerCount: $("#player-count"),
  maker: $("#maker-controls"),
  settingsForm: $("#settings-form"),
  settingLimit: $("#setting-limit"),
  settingDuration: $("#setting-duration"),
  start: $("#start-game"),
  waitingNote: $("#waiting-note"),
  chatLog: $("#chat-log"),
  wordForm: $("#word-form"),
  wordInput: $("#word-input"),
  sendWord: $("#send-word"),
  inputMode: $("#input-mode"),
  endTitle: $("#end-title"),
  endMessage: $("#end-message"),
  inviteNote: $("#invite-note"),
  ranking: $("#ranking"),
  wordList: $("#word-list"),
  wordCount: $("#word-count"),
  playAgain: $("#play-again"),
  toasts: $("#toasts"),
};

const params = new URLSearchParams(location.search);
const WS_URL = params.get("ws") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/wsmesh`;
const MAX_CHAT = 400;
const RING_LEN = 2 * Math.PI * 54;

// ------------------------------------------------------------------ connection

// The client library (clients/js/meshstream.js, served at /client/) owns the wire: framing,
// reconnects with backoff, and session resume (docs/protocol.md, "Sessions and resume").
// Resumed, the page carries on: same client ID, same room, the missed frames arrive first
// and are handled as usual. Refused (the window passed, the server restarted), it starts
// over in the lobby. Only lobby commands typed while disconnected survive a fresh
// connection: room frames would name a room the new client is not in.

let client = null;
let reconnectAt = 0; // when the library tries again (0: not waiting)
let reconnectResume = false; // that try resumes the session

function send(obj) {
  try {
    client.send(obj);
  } catch (err) {
    console.error("send", err); // closed for good: the status says so
  }
}

function setStatus(state, text) {
  el.status.dataset.state = state;
  el.statusText.textContent = text;
}

function start() {
  client = new MeshClient(WS_URL, {
    keepQueued: (frame, outcome) => outcome === "resumed" || frame.target === LOBBY,
  });
  setStatus("connecting", "Connecting…");
  client.on("connected", (d) => {
    reconnectAt = 0;
    document.body.dataset.connection = d.outcome;
    setStatus("connected", d.outcome === "resumed" ? "Connected · resumed" : "Connected");
    if (d.outcome === "refused") session.resumeRefused(d.reason || "");
  });
  client.on("message", (msg) => {
    try {
      session.handle(msg);
    } catch (err) {
      console.error("handling", msg, err);
    }
  });
  client.on("disconnected", (d) => {
    if (d.willResume) {
      // Lost (network, gateway restart or crash): keep the client ID, room and game on
      // screen and resume them on the next connection.
      document.body.dataset.connection = "resuming";
      return;
    }
    session.disconnected();
    delete document.body.dataset.clientId;
    document.body.dataset.connection = "closed";
    if (d.code === 1008 || d.code === 1009 || d.code >= 4000) {
      toast(`Connection closed by server${d.reason ? `: ${d.reason}` : ""} (${d.code})`, "error");
    }
  });
  client.on("reconnecting", (d) => {
    reconnectAt = Date.now() + d.delay;
    reconnectResume = d.resume;
    tickStatus();
  });
  client.on("closed", () => {
    reconnectAt = 0;
    setStatus("closed", "Disconnected · click to reconnect");
  });
  client.connect().catch((err) => console.error("connect", err));
}

/** The countdown to the next try (the timers below call it every tick). */
function tickStatus() {
  if (!reconnectAt) return;
  const secs = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
  if (!secs) setStatus("connecting", reconnectResume ? "Reconnecting to your game…" : "Reconnecting…");
  else setStatus("closed", reconnectResume ? `Connection lost · reconnecting in ${secs}s`
    : `Disconnected · retrying in ${secs}s`);
}

el.status.addEventListener("click", () => {
  if (el.status.dataset.state !== "closed") return;
  if (client.state === "closed") start();
  else if (reconnectAt) client.reconnectNow();
});

// ------------------------------------------------------------------ session

const session = new Session({
  send,
  emit(type, data) {
    switch (type) {
      case "change":
        render();
        break;
      case "identity":
        if (data) document.body.dataset.clientId = data;
        break;
      case "toast":
        toast(data.text, data.kind);
        break;
      case "chat":
        addChat(data);
        break;
      case "bot":
        addBot(data.html, data.kind);
        break;
      case "system":
        addSystem(data.text);
        break;
      case "turn":
        if (data.mode === "mine") {
          el.wordInput.focus({ preventScroll: true });
          if (navigator.vibrate) try { navigator.vibrate(60); } catch (_) { /* ignore */ }
        }
        break;
      default:
        break;
    }
  },
});
// for tests and the console: the game state, the library client and its resume bookkeeping
window.meshstream = { session, get client() { return client; }, get resume() { return client?.resume; } };

// ------------------------------------------------------------------ rendering

let lastScreen = "";

function showScreen(name) {
  el.lobby.hidden = name !== "lobby";
  el.room.hidden = name !== "room";
  el.end.hidden = name !== "end";
  document.body.dataset.screen = name;
  if (name !== lastScreen) {
    if (name === "room") {
      el.chatLog.replaceChildren();
      addSystem(session.state.random ? "Looking for an opponent…" : `Joining room ${session.state.room}…`);
    }
    if (name === "lobby") {
      el.lobbyError.hidden = true;
      if (lastScreen) {
        el.inviteNote.hidden = true;
        el.playerName.focus({ preventScroll: true });
      }
    }
    lastScreen = name;
  }
}

function shareUrl(room) {
  const u = new URL(location.href);
  u.search = "";
  u.hash = "";
  if (params.get("ws")) u.searchParams.set("ws", params.get("ws"));
  u.searchParams.set("room", room);
  return u.toString();
}

function render() {
  const s = session.state;
  showScreen(s.screen);
  const mode = session.turnMode;
  document.body.dataset.turn = mode;
  if (session.clientId) document.body.dataset.clientId = session.clientId;

  if (s.screen === "room") renderRoom(s, mode);
  if (s.screen === "end") renderEnd(s);
  tick();
}

function renderRoom(s, mode) {
  el.roomTitle.textContent = s.room;
  el.roomKind.textContent = s.random ? "random match" : "friends";
  el.share.hidden = s.random;
  if (!s.random) el.shareLink.value = shareUrl(s.room);

  // players
  const rows = s.players.map((p) => {
    const li = document.createElement("li");
    li.className = "player";
    li.dataset.slug = p.slug;
    li.dataset.testid = "player";
    if (s.turn && s.turn.slug === p.slug) li.classList.add("is-turn");
    if (p.slug === session.clientId) li.classList.add("is-me");
    li.style.setProperty("--pc", cssColor(p.color));
    li.innerHTML =
      `<span class="avatar">${escapeHtml(initials(p.name))}</span>` +
      `<span class="pname"><span class="name">${escapeHtml(p.name || "…")}</span>` +
      `${p.slug === session.clientId ? '<span class="you">you</span>' : ""}</span>` +
      `<span class="score" data-testid="score">${p.score}</span>`;
    return li;
  });
  el.players.replaceChildren(...rows);
  el.playerCount.textContent = s.players.length ? `${s.players.length}/${s.playerLimit}` : "";

  // board
  el.letter.textContent = s.letter || "";
  el.letter.dataset.letter = s.letter || "";
  if (mode === "mine") {
    el.turnLabel.textContent = "Your turn!";
    el.turnName.textContent = s.turn.name;
  } else if (mode === "other") {
    el.turnLabel.textContent = "Turn:";
    el.turnName.textContent = s.turn.name;
  } else if (mode === "chat") {
    el.turnLabel.textContent = "Chat phase · everyone may talk";
    el.turnName.textContent = "";
  } else {
    el.turnLabel.textContent = s.phase === "joining" ? "Joining…" : "Waiting for the game to start";
    el.turnName.textContent = "";
  }
  el.turnName.style.color = s.turn ? cssColor(s.turn.color) : "";

  // maker controls
  el.maker.hidden = !(s.maker && !s.gameStarted);
  if (!el.maker.hidden && document.activeElement !== el.settingLimit && document.activeElement !== el.settingDuration) {
    el.settingLimit.value = s.playerLimit;
    el.settingDuration.value = s.duration;
  }
  const waiting = !s.gameStarted && !s.maker;
  el.waitingNote.hidden = !waiting;
  if (waiting) {
    el.waitingNote.textContent = s.phase === "joining"
      ? (s.random ? "Looking for an opponent…" : "Joining…")
      : s.random
        ? "The game starts as soon as your opponent is ready."
        : "Waiting for the room maker to start the game.";
  }

  // composer
  const mine = mode === "mine";
  el.inputMode.textContent = mine ? "Word" : "Chat";
  el.inputMode.dataset.mode = mine ? "word" : "chat";
  el.sendWord.textContent = mine ? "Play" : "Send";
  el.wordInput.placeholder = mine
    ? (s.letter ? `Your word starting with “${s.letter.toUpperCase()}”…` : "Your word…")
    : mode === "other"
      ? `${s.turn.name} is playing — chat meanwhile…`
      : "Say something…";
  el.wordForm.dataset.mode = mine ? "word" : "chat";
}

function renderEnd(s) {
  const r = s.result || { ranking: [], words: [], message: "" };
  const top = r.ranking.filter((p) => r.ranking.length && p.score === r.ranking[0].score);
  const me = top.some((p) => p.slug === session.clientId);
  el.endTitle.textContent = !r.ranking.length
    ? "Game over"
    : top.length > 1
      ? "It's a tie!"
      : me
        ? "You win!"
        : `${top[0].name || "Someone"} wins!`;
  el.endMessage.innerHTML = sanitizeBotHtml(r.message);
  let rank = 0;
  let prev = null;
  const items = r.ranking.map((p, i) => {
    if (prev === null || p.score !== prev) rank = i + 1;
    prev = p.score;
    const li = document.createElement("li");
    li.dataset.slug = p.slug;
    li.dataset.rank = String(rank);
    li.className = "rank-row";
    if (rank === 1) li.classList.add("is-winner");
    if (p.slug === session.clientId) li.classList.add("is-me");
    li.style.setProperty("--pc", cssColor(p.color));
    li.innerHTML =
      `<span class="rank rank-${Math.min(rank, 4)}">${rank}</span>` +
      `<span class="avatar">${escapeHtml(initials(p.name))}</span>` +
      `<span class="name">${escapeHtml(p.name)}${p.slug === session.clientId ? ' <span class="you">you</span>' : ""}</span>` +
      `<span class="score">${p.score}</span>`;
    return li;
  });
  el.ranking.replaceChildren(...items);
  el.wordList.replaceChildren(
    ...r.words.map((w) => {
      const li = document.createElement("li");
      li.textContent = w;
      return li;
    }),
  );
  if (!r.words.length) {
    const li = document.createElement("li");
    li.className = "muted empty";
    li.textContent = "No words this time.";
    el.wordList.append(li);
  }
  el.wordCount.textContent = r.words.length ? `(${r.words.length})` : "";
}

// ------------------------------------------------------------------ timers

function tick() {
  tickStatus();
  const s = session.state;
  if (s.screen !== "room") return;
  const now = Date.now();
  if (s.turnDeadline) {
    const left = Math.max(0, (s.turnDeadline - now) / 1000);
    el.timer.textContent = String(Math.ceil(left));
    const frac = s.turnSeconds > 0 ? Math.min(1, left / s.turnSeconds) : 0;
    el.ring.style.strokeDasharray = `${RING_LEN}`;
    el.ring.style.strokeDashoffset = `${RING_LEN * (1 - frac)}`;
    el.ring.classList.toggle("is-low", left <= 3);
    el.timer.classList.toggle("is-low", left <= 3);
  } else {
    el.timer.textContent = "";
    el.ring.style.strokeDasharray = `${RING_LEN}`;
    el.ring.style.strokeDashoffset = `${RING_LEN}`;
    el.ring.classList.remove("is-low");
    el.timer.classList.remove("is-low");
  }
  if (s.gameDeadline) {
    const left = Math.max(0, Math.ceil((s.gameDeadline - now) / 1000));
    el.gameTimer.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  } else {
    el.gameTimer.textContent = `${Math.floor(s.duration / 60)}:${String(s.duration % 60).padStart(2, "0")}`;
  }
}
setInterval(tick, 250);

// ------------------------------------------------------------------ chat log

function nearBottom() {
  const c = el.chatLog;
  return c.scrollHeight - c.scrollTop - c.clientHeight < 80;
}

function appendLog(li) {
  const stick = nearBottom();
  el.chatLog.append(li);
  while (el.chatLog.childElementCount > MAX_CHAT) el.chatLog.firstElementChild.remove();
  if (stick || li.classList.contains("is-mine")) el.chatLog.scrollTop = el.chatLog.scrollHeight;
}

function addChat({ sender, name, avatar, color, text, mine }) {
  const li = document.createElement("li");
  li.className = "msg msg-chat";
  if (mine) li.classList.add("is-mine");
  li.dataset.sender = sender;
  li.style.setProperty("--pc", cssColor(color));
  li.innerHTML =
    `<span class="avatar">${escapeHtml(avatar.slice(0, 2))}</span>` +
    `<div class="bubble"><span class="who">${escapeHtml(name || avatar)}</span>` +
    `<span class="text"></span></div>`;
  li.querySelector(".text").textContent = text;
  appendLog(li);
}

function addBot(html, kind = "") {
  if (!html) return;
  const li = document.createElement("li");
  li.className = `msg msg-bot${kind ? ` msg-${kind}` : ""}`;
  li.dataset.sender = BOT;
  li.innerHTML = `<span class="avatar bot-avatar" aria-hidden="true">${BOT_SVG}</span><div class="bubble">${html}</div>`;
  appendLog(li);
}

function addSystem(text) {
  const li = document.createElement("li");
  li.className = "msg msg-system";
  li.textContent = text;
  appendLog(li);
}

// ------------------------------------------------------------------ toasts

function toast(text, kind = "info") {
  const div = document.createElement("div");
  div.className = `toast toast-${kind}`;
  div.setAttribute("role", kind === "error" ? "alert" : "status");
  div.textContent = text;
  el.toasts.append(div);
  while (el.toasts.childElementCount > 4) el.toasts.firstElementChild.remove();
  setTimeout(() => div.classList.add("is-leaving"), 4200);
  setTimeout(() => div.remove(), 4600);
  div.addEventListener("click", () => div.remove());
}

// ------------------------------------------------------------------ helpers

const BOT_SVG =
  '<svg viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">' +
  '<rect x="4" y="8" width="16" height="12" rx="3"/><path d="M12 4v4"/><circle cx="12" cy="3" r="1"/>' +
  '<circle cx="9" cy="14" r="1.2" fill="currentColor"/><circle cx="15" cy="14" r="1.2" fill="currentColor"/><path d="M2 13v3M22 13v3"/></svg>';

const COLORS = {
  yellow: "#facc15",
  red: "#f87171",
  orange: "#fb923c",
  blue: "#60a5fa",
  purple: "#c084fc",
  pink: "#f472b6",
  white: "#f8fafc",
  green: "#4ade80",
};

function cssColor(c) {
  const key = String(c || "").toLowerCase().trim();
  if (COLORS[key]) return COLORS[key];
  if (/^#[0-9a-f]{3,8}$/i.test(key) || /^[a-z]{3,20}$/.test(key)) return key;
  return "#94a3b8";
}

function initials(name) {
  return String(name || "?").slice(0, 2);
}

function lobbyError(text) {
  el.lobbyError.textContent = text;
  el.lobbyError.hidden = !text;
}

function readName() {
  const r = checkPlayerName(el.playerName.value);
  if (!r.ok) {
    lobbyError(r.error);
    el.playerName.focus();
    return null;
  }
  try { localStorage.setItem("wb-name", el.playerName.value.trim()); } catch (_) { /* private mode */ }
  return r.name;
}

function setRoomParam(room) {
  const u = new URL(location.href);
  if (room) u.searchParams.set("room", room);
  else u.searchParams.delete("room");
  history.replaceState(null, "", u);
}

// ------------------------------------------------------------------ events

el.lobbyForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  lobbyError("");
  const name = readName();
  if (!name) return;
  const r = checkRoomName(el.roomName.value);
  if (!r.ok) {
    lobbyError(r.error);
    el.roomName.focus();
    return;
  }
  session.joinFriend(name, r.room);
  setRoomParam(r.room);
});

el.playerName.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !el.roomName.value.trim()) {
    ev.preventDefault();
    el.roomName.focus();
  }
});

el.roomName.addEventListener("input", () => {
  const clean = el.roomName.value.replace(/[^A-Za-z0-9]/g, "").slice(0, 10);
  if (clean !== el.roomName.value) el.roomName.value = clean;
});

el.playRandom.addEventListener("click", () => {
  lobbyError("");
  const name = readName();
  if (!name) return;
  session.joinRandom(name);
  setRoomParam("");
});

el.leave.addEventListener("click", () => {
  session.leave();
  setRoomParam("");
});

el.playAgain.addEventListener("click", () => {
  session.leave();
  setRoomParam("");
});

el.settingsForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const limit = Math.max(2, Math.min(10, parseInt(el.settingLimit.value, 10) || 3));
  const duration = Math.max(10, Math.min(3600, parseInt(el.settingDuration.value, 10) || 60));
  el.settingLimit.value = limit;
  el.settingDuration.value = duration;
  session.applySettings(limit, duration);
});

el.start.addEventListener("click", () => session.startGame());

el.wordForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const used = session.submit(el.wordInput.value);
  if (used) el.wordInput.value = "";
  el.wordInput.focus({ preventScroll: true });
});

el.copyLink.addEventListener("click", async () => {
  const link = el.shareLink.value;
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(link);
      ok = true;
    }
  } catch (_) { /* fall back */ }
  if (!ok) {
    const ta = document.createElement("textarea");
    ta.value = link;
    ta.setAttribute("readonly", "");
    ta.style.cssText = "position:fixed;top:0;left:-9999px;opacity:0";
    document.body.append(ta);
    ta.select();
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    ta.remove();
  }
  el.copyLink.textContent = ok ? "Copied!" : "Select & copy";
  setTimeout(() => { el.copyLink.textContent = "Copy link"; }, 1500);
});

el.shareLink.addEventListener("focus", () => el.shareLink.select());

window.addEventListener("pagehide", () => {
  if (session.state.room && session.state.screen !== "lobby") session.leave({ silent: true });
});

// ------------------------------------------------------------------ start

(function init() {
  try {
    const saved = localStorage.getItem("wb-name");
    if (saved) el.playerName.value = saved;
  } catch (_) { /* ignore */ }
  const room = (params.get("room") || "").replace(/[^A-Za-z0-9]/g, "").slice(0, 10);
  if (room) {
    el.roomName.value = room;
    el.inviteNote.textContent = `You're invited to room “${room}”. Pick a name and press “Play with a friend”.`;
    el.inviteNote.hidden = false;
    const nameParam = params.get("name");
    if (nameParam !== null) {
      el.playerName.value = nameParam;
      const r = checkPlayerName(nameParam);
      if (r.ok) session.joinFriend(r.name, room); // queued until the socket opens
    } else {
      el.playerName.focus();
    }
  }
  render();
  start();
})();
