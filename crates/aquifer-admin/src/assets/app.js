// The aquifer dashboard: a live table, two charts, warnings and events,
// fed by the server-sent event stream; buttons call the JSON API with the
// bearer token the operator typed (kept in this tab's sessionStorage only).
"use strict";

// The server puts a <base> at the page's own path: every URL is relative to it.
const url = (path) => new URL(path, document.baseURI).pathname;
const $ = (sel) => document.querySelector(sel);
const HISTORY = 300; // samples kept for the charts: five minutes at one a second

const rows = new Map(); // "cluster/pool" -> row elements
const history = { active: [], waiting: [], wait: [] };
let previous = null; // the last snapshot's wait totals, for per-second means

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// A duration given in seconds, as a person reads it: "850 µs", "3.8 ms",
// "218 ms", "1.5 s", "2.5 min" (as the server's own messages write them).
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const [n, unit] =
    seconds >= 120 ? [seconds / 60, "min"] : seconds >= 1 ? [seconds, "s"] : seconds >= 0.001 ? [seconds * 1e3, "ms"] : [seconds * 1e6, "µs"];
  const text = n >= 100 ? n.toFixed(0) : n.toFixed(1);
  return text.replace(/\.0$/, "") + " " + unit;
}

// A size in bytes, as a person reads it: "850 B", "12.3 kB", "10.7 MB".
function bytes(n) {
  const [v, unit] = n >= 1e9 ? [n / 1e9, "GB"] : n >= 1e6 ? [n / 1e6, "MB"] : n >= 1e3 ? [n / 1e3, "kB"] : [n, "B"];
  return (unit === "B" ? String(v) : v.toFixed(1).replace(/\.0$/, "")) + " " + unit;
}

// The event fields that are durations (in seconds); every other number is
// a count or an id.
const SECONDS = new Set(["took", "retry_in", "waited", "held"]);

function clock(iso) {
  const t = new Date(iso);
  return isNaN(t) ? iso : t.toLocaleTimeString();
}

function notice(text) {
  $("#notice").textContent = text || "";
}

// --- the token -----------------------------------------------------------

$("#token").value = sessionStorage.getItem("aquifer-token") || "";
$("#auth").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("aquifer-token", $("#token").value.trim());
  notice("token set for this tab");
});

async function act(method, path, what) {
  const token = sessionStorage.getItem("aquifer-token") || $("#token").value.trim();
  const res = await fetch(url(path), {
    method,
    headers: token ? { Authorization: "Bearer " + token } : {},
  }).catch((e) => ({ ok: false, status: 0, json: async () => ({ error: { message: String(e) } }) }));
  if (res.ok) {
    notice(what + ": done");
    refresh();
    return;
  }
  const body = await res.json().catch(() => ({}));
  const msg = (body.error && body.error.message) || "HTTP " + res.status;
  notice(what + " failed: " + msg);
}

// --- the table -----------------------------------------------------------

function buttons(cell, p) {
  const target = "api/pools/" + encodeURIComponent(p.name) + "/";
  const q = "?cluster=" + encodeURIComponent(p.cluster);
  const who = p.cluster + "/" + p.name;
  const add = (label, action, run, cls) => {
    const b = el("button", label, cls);
    b.dataset.action = action;
    b.type = "button";
    b.addEventListener("click", run);
    cell.append(b);
  };
  cell.replaceChildren();
  if (p.state === "closed") return;
  if (p.frozen) add("unfreeze", "unfreeze", () => act("POST", target + "unfreeze" + q, "unfreeze " + who));
  else add("freeze", "freeze", () => act("POST", target + "freeze" + q, "freeze " + who));
  // A multiplexer's connections carry running requests: no clear.
  if (!p.multiplexer) add("clear", "clear", () => act("POST", target + "clear" + q, "clear " + who));
  const what = p.multiplexer ? "multiplexer" : "pool";
  add("remove", "remove", () => {
    if (confirm("Remove " + what + " " + who + "? Connections out are waited for, then it closes.")) {
      act("DELETE", "api/pools/" + encodeURIComponent(p.name) + q, "remove " + who);
    }
  }, "danger");
}

function row(p) {
  const key = p.cluster + "/" + p.name;
  let r = rows.get(key);
  if (!r) {
    const tr = el("tr");
    tr.dataset.pool = key;
    const cells = {};
    for (const name of ["cluster", "pool", "state", "role", "size", "idle", "active", "waiting", "pending", "p99", "errors", "server", "actions"]) {
      cells[name] = el("td", undefined, "col-" + name);
      tr.append(cells[name]);
    }
    r = { tr, cells, shown: "" };
    rows.set(key, r);
    $("#pools tbody").append(tr);
  }
  const s = p.status, m = p.metrics, c = r.cells;
  c.cluster.textContent = p.cluster;
  c.pool.textContent = p.name;
  c.state.textContent = p.state + (p.banned_for ? " " + duration(Math.ceil(p.banned_for)) : "");
  c.state.className = "col-state state " + p.state;
  // In a cluster that watches roles: what the server says it is, whether
  // writes go there, and on hover what that rests on and since when.
  const role = p.role;
  let label = "–";
  if (role) {
    label = role.role.replace("_", "-");
    if (role.writes_here) label += " · writes";
    else if (role.role === "standby") {
      // How far behind, and out of the read rotation when it is.
      if (role.lag_bytes) label += " · " + bytes(role.lag_bytes) + " behind";
      else if (role.lag) label += " · " + duration(role.lag) + " behind";
      if (!role.in_rotation) label += " · no reads";
    }
  }
  c.role.textContent = label;
  c.role.className = "col-role" + (role ? " role " + role.role : "");
  c.role.title = role
    ? role.evidence +
      (role.cause ? "; checked at once after: " + role.cause : "") +
      (role.out_of_rotation && role.role === "standby" ? "; no reads: " + role.out_of_rotation : "") +
      (role.changed_at ? "; changed at " + clock(role.changed_at) : "")
    : "";
  // A multiplexer: its adaptive limit, busy connections, and the
  // requests on them.
  const mux = p.multiplexer;
  const limit = mux && mux.limit;
  c.size.textContent = s.size + "/" + (limit ? limit.limit + " (max " + s.max + ")" : s.max);
  c.size.title = limit
    ? "adaptive limit " + limit.limit + ": " + limit.reason + (limit.settled ? ", settled" : "") +
      (limit.measured.length
        ? "; measured: " + limit.measured.map((m) => m.connections + " → " + m.throughput + "/s").join(", ")
        : "")
    : "";
  c.idle.textContent = s.idle;
  c.active.textContent = mux ? s.borrowed + " · " + mux.in_flight + " req" : s.borrowed;
  c.active.title = mux ? "requests on each connection: " + (mux.per_connection.join(", ") || "none") : "";
  c.waiting.textContent = s.waiting;
  c.pending.textContent = s.pending;
  // No waits yet: no p99 to show.
  c.p99.textContent = m.wait_time.count ? duration(m.wait_time.p99) : "–";
  c.errors.textContent = m.create_failures + m.timeouts + m.validation_failures + m.destroy_failures;
  c.server.textContent = p.server || "";
  c.server.title = p.server || "";
  // Rebuild the buttons only when they change, so a click is never lost
  // to a redraw.
  const shown = p.state + "/" + p.frozen;
  if (r.shown !== shown) {
    buttons(c.actions, p);
    r.shown = shown;
  }
  return key;
}

function table(pools) {
  const seen = new Set(pools.map(row));
  for (const [key, r] of rows) {
    if (!seen.has(key)) {
      r.tr.remove();
      rows.delete(key);
    }
  }
}

// --- the charts ----------------------------------------------------------

function push(series, v) {
  series.push(v);
  if (series.length > HISTORY) series.shift();
}

function chart(canvas, lines) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  canvas.width = w * ratio;
  canvas.height = h * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, h);
  const top = Math.max(1, ...lines.flatMap((l) => l.points));
  const pad = { l: 34, r: 6, t: 6, b: 16 };
  const x = (i) => pad.l + ((w - pad.l - pad.r) * i) / (HISTORY - 1);
  const y = (v) => h - pad.b - ((h - pad.t - pad.b) * v) / top;
  g.strokeStyle = "#d8dee6";
  g.fillStyle = "#6b7785";
  g.font = "11px system-ui, sans-serif";
  for (const v of [0, top / 2, top]) {
    g.beginPath();
    g.moveTo(pad.l, y(v));
    g.lineTo(w - pad.r, y(v));
    g.stroke();
    g.fillText(v >= 10 ? v.toFixed(0) : v.toFixed(1), 2, y(v) + 4);
  }
  g.fillText("5 min", pad.l, h - 3);
  let legend = pad.l + 40;
  for (const l of lines) {
    const off = HISTORY - l.points.length;
    g.strokeStyle = l.color;
    g.lineWidth = 1.5;
    g.beginPath();
    l.points.forEach((v, i) => (i ? g.lineTo(x(off + i), y(v)) : g.moveTo(x(off + i), y(v))));
    g.stroke();
    g.fillStyle = l.color;
    g.fillText(l.label, legend, h - 3);
    legend += g.measureText(l.label).width + 14;
  }
  canvas.dataset.samples = String(lines[0].points.length);
  canvas.dataset.last = JSON.stringify(lines.map((l) => l.points[l.points.length - 1] ?? null));
}

function charts(pools) {
  let active = 0, waiting = 0, count = 0, total = 0;
  for (const p of pools) {
    active += p.status.borrowed;
    waiting += p.status.waiting;
    count += p.metrics.wait_time.count;
    total += p.metrics.wait_time.total;
  }
  push(history.active, active);
  push(history.waiting, waiting);
  const mean = previous && count > previous.count ? ((total - previous.total) / (count - previous.count)) * 1000 : 0;
  push(history.wait, Math.max(0, mean));
  previous = { count, total };
  drawCharts();
}

function drawCharts() {
  chart($("#chart-conns"), [
    { label: "active", color: "#2b6cb0", points: history.active },
    { label: "waiting", color: "#c53030", points: history.waiting },
  ]);
  chart($("#chart-wait"), [{ label: "mean wait", color: "#b7791f", points: history.wait }]);
}

// --- lists ---------------------------------------------------------------

function line(list, at, text, max) {
  const li = el("li");
  li.append(el("time", clock(at)), document.createTextNode(text));
  list.prepend(li);
  while (list.children.length > max) list.lastChild.remove();
}

function warning(w, cluster) {
  line($("#warnings"), w.at, cluster + (w.pool ? "/" + w.pool : "") + ": " + w.message, 200);
}

function describe(ev) {
  const { event, ...rest } = ev;
  const parts = Object.entries(rest).map(([k, v]) => k.replace(/_/g, " ") + "=" + (SECONDS.has(k) ? duration(v) : v));
  return event.replace(/_/g, " ") + (parts.length ? " (" + parts.join(", ") + ")" : "");
}

// --- data ----------------------------------------------------------------

async function refresh() {
  try {
    const res = await fetch(url("api/pools"));
    if (res.ok) table(await res.json());
  } catch (_) {
    // the event stream reports the outage
  }
}

// The server's last five minutes, so that the charts start full rather
// than empty; the live snapshots carry on from there.
async function backfill() {
  const res = await fetch(url("api/history"));
  if (!res.ok) return;
  const samples = await res.json();
  if (!samples.length) return;
  history.active.length = 0;
  history.waiting.length = 0;
  history.wait.length = 0;
  let prev = null;
  for (const s of samples) {
    push(history.active, s.active);
    push(history.waiting, s.waiting);
    const mean = prev && s.wait_count > prev.wait_count ? ((s.wait_total - prev.wait_total) / (s.wait_count - prev.wait_count)) * 1000 : 0;
    push(history.wait, Math.max(0, mean));
    prev = s;
  }
  previous = { count: prev.wait_count, total: prev.wait_total };
  drawCharts();
}

// Each replica set's reads: served by replicas, fallen back to the
// primary, and the waits for read-your-writes tokens.
function reads(sets) {
  for (const { cluster, reads: r } of sets) {
    const span = document.querySelector('#clusters .reads[data-cluster="' + CSS.escape(cluster) + '"]');
    if (!span) continue;
    span.textContent =
      " · reads: " + r.replica_reads + " on replicas, " + r.fallbacks + " on the primary, " +
      r.token_waits + " token waits (" + duration(r.token_wait_time) + ")";
  }
}

async function start() {
  try {
    await backfill();
    const clusters = await (await fetch(url("api/clusters"))).json();
    const box = $("#clusters");
    box.replaceChildren();
    for (const c of clusters) {
      const d = el("div", undefined, "cluster");
      d.append(el("b", c.name), document.createTextNode(c.kind === "cluster" ? "cluster, mode " + c.mode : "single pool"));
      // A replica set's reads, filled in by each snapshot.
      const r = el("span", undefined, "reads");
      r.dataset.cluster = c.name;
      d.append(r);
      box.append(d);
    }
    const warnings = await (await fetch(url("api/warnings"))).json();
    $("#warnings").replaceChildren();
    for (const w of warnings) warning(w, w.cluster);
  } catch (_) {
    // retried on the next (re)connect
  }
}

function connect() {
  const live = $("#live");
  const events = new EventSource(url("api/events"));
  events.addEventListener("open", () => {
    live.textContent = "live";
    live.className = "badge on";
    start();
  });
  events.addEventListener("error", () => {
    live.textContent = "reconnecting…";
    live.className = "badge off";
  });
  events.addEventListener("snapshot", (e) => {
    const s = JSON.parse(e.data);
    table(s.pools);
    charts(s.pools);
    reads(s.reads || []);
  });
  events.addEventListener("warning", (e) => {
    const w = JSON.parse(e.data);
    warning(w.warning, w.cluster);
  });
  events.addEventListener("pool", (e) => {
    const p = JSON.parse(e.data);
    line($("#events"), p.at, p.cluster + "/" + p.pool + ": " + describe(p.event), 100);
  });
  events.addEventListener("action", (e) => {
    const a = JSON.parse(e.data);
    line($("#events"), new Date().toISOString(), "operator: " + a.action + " " + (a.pools || []).join(", "), 100);
    refresh();
  });
}

connect();
