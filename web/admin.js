// The admin page (docs/operations.md, "Admin page"): one WebSocket to /admin/ws, over which
// the gateway pushes the processor's snapshot every second. Charts are plain SVG polylines.
// Every name shown (rooms, clients, watchers) comes from clients or watchers: only ever
// set as text, never as HTML.
"use strict";
(() => {
  const TOKEN_KEY = "meshstream-admin-token";
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {  // keep it for this tab only, and out of the address bar
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  const $ = (id) => document.getElementById(id);
  const view = { search: "", after: "" };
  const cursors = [];  // the `after` of each earlier page, for "previous"
  let nextCursor = null;
  let socket = null;
  let backoff = 500;

  const fmtDuration = (s) => {
    s = Math.floor(s);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  };
  const fmtBytes = (n) => n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`;

  function rows(tableId, items, cells) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren(...items.map((item) => {
      const tr = document.createElement("tr");
      for (const [value, cls] of cells(item)) {
        const td = document.createElement("td");
        td.textContent = value;
        if (cls) td.className = cls;
        tr.append(td);
      }
      return tr;
    }));
  }

  const SVG = "http://www.w3.org/2000/svg";
  function chart(id, points, window) {
    // points: [secondsAgo (<= 0), value]; x spans the last `window` seconds
    const svg = $(id);
    const max = Math.max(1, ...points.map((p) => p[1]));
    const [w, h] = [300, 80];
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.map(([t, v]) =>
      `${(w * (1 + t / window)).toFixed(1)},${(h - 2 - (h - 12) * v / max).toFixed(1)}`).join(" "));
    const grid = document.createElementNS(SVG, "line");
    Object.entries({ x1: 0, x2: w, y1: 10, y2: 10 }).forEach(([k, v]) => grid.setAttribute(k, v));
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", 2);
    label.setAttribute("y", 8);
    label.textContent = `${max.toFixed(max < 10 ? 1 : 0)}/s`;
    svg.replaceChildren(grid, line, label);
    const last = points.length ? points[points.length - 1][1] : 0;
    svg.dataset.last = String(last);
    svg.dataset.peak = String(Math.max(0, ...points.map((p) => p[1])));
    return last;
  }

  function render(s) {
    const conns = s.gateways.reduce((n, g) => n + (g.connections || 0), 0);
    $("connections").textContent = conns;
    $("clients").textContent = s.clients;
    $("rooms-total").textContent = s.rooms.total;
    $("gateway-count").textContent = s.gateways.length;
    $("watcher-count").textContent = s.watchers.filter((w) => w.alive).length;
    const sv = s.serving;  // of a primary/backup pair, the one that serves (and answered)
    $("serving").textContent = sv.role === "alone" ? "one processor"
      : `served by the ${sv.role} processor, term ${sv.term}` + (!("standby_behind" in sv) ? ""
        : sv.standby_behind === null ? "; the standby is not heard"
        : `; the standby is ${sv.standby_behind} log entries behind`);
    const window = Math.max(60, ...s.rates.map((r) => -r[0]));
    ["messages", "deliveries", "errors", "drops"].forEach((name, i) => {
      const last = chart(`chart-${name}`, s.rates.map((r) => [r[0], r[i + 1]]), window);
      $(`rate-${name}`).textContent = last.toFixed(last < 10 ? 1 : 0);
    });
    rows("processes", s.processes, (p) => [[p.name], [p.role], [p.pid], [fmtDuration(p.uptime)],
      [p.restarts], [p.cpu.toFixed(1)], [fmtBytes(p.rss)]]);
    rows("gateways", s.gateways, (g) => [[g.id], [g.index], [g.connections ?? "–"], [g.clients]]);
    rows("watchers", s.watchers, (w) => [[w.alive ? w.name : `${w.name} (gone)`],
      [[...w.rooms, ...w.prefixes.map((p) => `${p}*`)].join(", ")], [w.assigned.join(", ")], [w.pending]]);
    const r = s.rooms;
    $("rooms-matching").textContent = r.search ? `${r.matching} of ${r.total} match` : `${r.total}`;
    rows("rooms", r.items, (room) => [[room.name], [room.count], [room.watcher || "–"],
      [room.members.join(" ") + (room.count > room.members.length ? " …" : ""), "who"]]);
    nextCursor = r.next;
    $("next").disabled = !nextCursor;
    $("prev").disabled = cursors.length === 0;
  }

  function ask() {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(view));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = token ? `?token=${encodeURIComponent(token)}` : "";
    socket = new WebSocket(`${scheme}://${location.host}/admin/ws${query}`);
    socket.onopen = () => { backoff = 500; $("status").textContent = "live"; $("status").className = "status live"; ask(); };
    socket.onmessage = (e) => render(JSON.parse(e.data));
    socket.onclose = () => {
      $("status").textContent = "disconnected, retrying…";
      $("status").className = "status down";
      setTimeout(connect, backoff);
      backoff = Math.min(10000, backoff * 2);
    };
  }

  $("search").addEventListener("input", (e) => {
    view.search = e.target.value;
    view.after = "";
    cursors.length = 0;
    ask();
  });
  $("search-form").addEventListener("submit", (e) => e.preventDefault());
  $("next").addEventListener("click", () => {
    if (!nextCursor) return;
    cursors.push(view.after);
    view.after = nextCursor;
    ask();
  });
  $("prev").addEventListener("click", () => {
    if (!cursors.length) return;
    view.after = cursors.pop();
    ask();
  });
  connect();
})();
