// pico dashboard: polls the broker's JSON API once a second and draws the run.
//
// Data: GET /api/runs (the run list, every 5 s) and GET /api/runs/RUN?rounds_after=R&events_after=E
// (members and ledger in full; only new rounds and events). Charts are hand-drawn on canvas.
// Everything that comes from the broker is put on the page as text (textContent), never as
// HTML: device names and event details come from members. Operator actions send the token
// (from the Unlock field or the #token=… link the broker printed) as a Bearer header.
"use strict";

const POLL_MS = 1000;
const RUNS_MS = 5000;
const REFETCH_ROUNDS = 10;     // re-read the last rounds: their val_loss arrives after the commit
const MAX_EVENTS = 300;
const TPS_WINDOW_S = 600;      // per-member tokens/s history kept by this page
const COLORS = ["#2a6fdb", "#d2553d", "#1f8a4c", "#8a56c9", "#c77800", "#0f8f9c", "#b8417a", "#5b6b2f"];

const state = {
  run: null,              // selected run id
  runs: [],
  view: null,             // latest run view
  rounds: new Map(),      // round -> stats
  events: [],             // newest last
  lastEvent: 0,
  tps: new Map(),         // member id -> [[time, tokens/s]]
  token: sessionStorage.getItem("pico-token") || "",
  operator: false,
  polling: false,
  timer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

// ---- formatting ---------------------------------------------------------------------------
function fmtNum(v, digits = 3) {
  if (v === null || v === undefined || !isFinite(v)) return "—";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (a >= 100) return v.toFixed(0);
  return Number(v.toPrecision(digits)).toString();
}
function fmtBytes(v) {
  if (v === null || v === undefined || !isFinite(v)) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (i === 0 ? v.toFixed(0) : v.toPrecision(3)) + " " + units[i];
}
function fmtSecs(v) {
  if (v === null || v === undefined || !isFinite(v)) return "—";
  if (v < 1) return (v * 1000).toFixed(0) + " ms";
  if (v < 120) return v.toFixed(1) + " s";
  if (v < 7200) return (v / 60).toFixed(1) + " min";
  return (v / 3600).toFixed(1) + " h";
}
function fmtTime(t) {
  const d = new Date(t * 1000);
  return d.toTimeString().slice(0, 8);
}

// ---- charts -------------------------------------------------------------------------------
// series: [{name, color, kind: "line"|"bar", points: [[x, y], ...], stack?: group}]
// opts: {xFmt, yFmt, logY, xIsRound}
function drawChart(canvas, series, opts) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (w === 0 || h === 0) return;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 52, r: 10, t: 8, b: 22 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  // Stacked bars: each stack's top is the sum of its parts.
  const stacks = new Map();
  let xs = [], ys = [], n = 0;
  for (const s of series) {
    for (const [x, y] of s.points) {
      if (!isFinite(x) || !isFinite(y)) continue;
      if (opts.logY && y <= 0) continue;
      n++;
      xs.push(x);
      if (s.stack) {
        const top = (stacks.get(x) || 0) + y;
        stacks.set(x, top);
        ys.push(top);
      } else ys.push(y);
      if (s.kind === "bar" && !s.stack && !opts.logY) ys.push(0);
    }
  }
  canvas.dataset.points = String(n);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b6f76";
  if (n === 0) {
    ctx.fillText("no data yet", pad.l + 8, pad.t + 16);
    return;
  }
  const hasBars = series.some((s) => s.kind === "bar");
  if (stacks.size > 0 && !opts.logY) ys.push(0);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (hasBars) { x0 -= 0.5; x1 += 0.5; }
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  const ty = opts.logY ? (v) => Math.log10(v) : (v) => v;
  y0 = ty(y0); y1 = ty(y1);
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const m = (y1 - y0) * 0.06;
  y1 += m; if (!(stacks.size > 0 || hasBars) || opts.logY) y0 -= m;
  if (!opts.logY && y0 < 0 && Math.min(...ys) >= 0) y0 = 0;  // no negative axis for data that cannot be
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * pw;
  const Y = (y) => pad.t + ph - ((ty(y) - y0) / (y1 - y0)) * ph;
  // Grid and axis labels.
  ctx.strokeStyle = "#e2e2de";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + ((y1 - y0) * i) / 4;
    const py = pad.t + ph - (ph * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, py); ctx.lineTo(pad.l + pw, py); ctx.stroke();
    ctx.fillText(opts.yFmt(opts.logY ? Math.pow(10, yv) : yv), pad.l - 4, py + 4);
  }
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + ((x1 - x0) * i) / 4;
    ctx.textAlign = i === 0 ? "left" : i === 4 ? "right" : "center";  // the end labels stay inside
    ctx.fillText(opts.xFmt(xv), pad.l + (pw * i) / 4, h - 6);
  }
  // Bars (stacked ones on top of each other), then lines.
  const barW = Math.max(1, Math.min(24, (pw / Math.max(1, x1 - x0)) * 0.7));
  const base = new Map();
  for (const s of series.filter((s) => s.kind === "bar")) {
    ctx.fillStyle = s.color;
    for (const [x, y] of s.points) {
      if (!isFinite(x) || !isFinite(y) || (opts.logY && y <= 0)) continue;
      const b = s.stack ? base.get(x) || 0 : 0;
      const yTop = Y(b + y), yBot = opts.logY && b === 0 ? pad.t + ph : Y(b);
      ctx.fillRect(X(x) - barW / 2, yTop, barW, Math.max(1, yBot - yTop));
      if (s.stack) base.set(x, b + y);
    }
  }
  for (const s of series.filter((s) => s.kind !== "bar")) {
    ctx.strokeStyle = s.color;
    ctx.fillStyle = s.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    const pts = s.points.filter(([x, y]) => isFinite(x) && isFinite(y) && (!opts.logY || y > 0));
    for (const [x, y] of pts) {
      if (!started) { ctx.moveTo(X(x), Y(y)); started = true; } else ctx.lineTo(X(x), Y(y));
    }
    ctx.stroke();
    if (pts.length < 40 || s.dots) for (const [x, y] of pts) { ctx.beginPath(); ctx.arc(X(x), Y(y), 2.5, 0, 7); ctx.fill(); }
  }
}

function legend(id, series) {
  const box = $(id);
  box.textContent = "";
  for (const s of series) {
    const item = el("span", s.name);
    const sw = el("i");
    sw.style.background = s.color;
    item.prepend(sw);
    box.append(item);
  }
}

// ---- rendering ----------------------------------------------------------------------------
function card(k, v, cls) {
  const c = el("div", null, "card");
  c.append(el("div", k, "k"), el("div", v, "v" + (cls ? " " + cls : "")));
  return c;
}

function renderRuns() {
  const nav = $("runs");
  nav.textContent = "";
  for (const r of state.runs) {
    const a = el("a", r.run_id + (r.status === "finished" ? " ✓" : ""));
    a.href = "#run=" + encodeURIComponent(r.run_id);
    if (r.run_id === state.run) a.className = "current";
    a.addEventListener("click", (e) => { e.preventDefault(); selectRun(r.run_id); });
    nav.append(a);
  }
}

function sortedRounds() {
  return [...state.rounds.values()].sort((a, b) => a.round - b.round);
}

function renderSummary(v, rounds) {
  const box = $("summary");
  box.textContent = "";
  const last = rounds.length ? rounds[rounds.length - 1] : null;
  let val = null;
  for (let i = rounds.length - 1; i >= 0; i--) if (rounds[i].val_loss !== null) { val = rounds[i].val_loss; break; }
  let bytes = 0, ddp = 0;
  for (const r of rounds) if (r.ddp_bytes > 0) { bytes += r.bytes; ddp += r.ddp_bytes; }
  const phase = v.phase + (v.paused && v.phase !== "paused" ? " (pausing)" : "");
  box.append(
    card("state", phase, v.paused ? "paused" : v.status === "finished" ? "finished" : ""),
    card("algorithm", v.algorithm || "diloco"),
    card("round", v.round + (v.attempt > 1 ? " (attempt " + v.attempt + ")" : "")),
    card("members", v.active_members + (v.min_members > 1 ? " / min " + v.min_members : "")),
    card("tokens", fmtNum(v.tokens)),
    card("tokens/s", fmtNum(v.tokens_per_s)),
    card("loss", fmtNum(last ? last.loss : null, 4)),
    card("val loss", fmtNum(val, 4)),
    card("sent", fmtBytes(v.bytes_sent)),
    card("bytes vs ddp", ddp > 0 ? (bytes / ddp).toPrecision(2) + "×" : "—"),
  );
  $("pause").disabled = v.paused || v.status !== "active";
  $("resume").disabled = !v.paused || v.status !== "active";
  document.title = "pico · " + v.run_id + " · round " + v.round;
}

function renderCharts(v, rounds) {
  const lossS = [
    { name: "loss", color: COLORS[0], kind: "line", points: rounds.map((r) => [r.run_tokens, r.loss]) },
    { name: "val loss", color: COLORS[1], kind: "line", dots: true,
      points: rounds.filter((r) => r.val_loss !== null).map((r) => [r.run_tokens, r.val_loss]) },
  ];
  legend("legend-loss", lossS);
  drawChart($("chart-loss"), lossS, { xFmt: fmtNum, yFmt: (y) => y.toFixed(2) });

  const now = Date.now() / 1000;
  const tpsS = [{ name: "run (tokens ÷ round time)", color: "#1d1f21", kind: "line", dots: true,
    points: rounds.filter((r) => r.round_s > 0).map((r) => [r.committed_at - now, r.tokens / r.round_s]) }];
  let i = 1;
  for (const m of v.members) {
    if (m.status !== "active") continue;
    const hist = state.tps.get(m.member_id) || [];
    tpsS.push({ name: "member " + m.member_id, color: COLORS[i++ % COLORS.length], kind: "line",
      points: hist.map(([t, y]) => [t - now, y]) });
  }
  legend("legend-tps", tpsS);
  drawChart($("chart-tps"), tpsS, { xFmt: (x) => (x > -1 ? "now" : fmtSecs(-x) + " ago"), yFmt: fmtNum });

  const recent = rounds.slice(-60);
  const timeS = [
    { name: "compute", color: COLORS[0], kind: "bar", stack: 1, points: recent.map((r) => [r.round, r.compute_s]) },
    { name: "communication", color: COLORS[2], kind: "bar", stack: 1, points: recent.map((r) => [r.round, r.comm_s]) },
    { name: "waiting", color: COLORS[4], kind: "bar", stack: 1, points: recent.map((r) => [r.round, r.wait_s]) },
  ];
  legend("legend-time", timeS);
  drawChart($("chart-time"), timeS, { xFmt: (x) => Math.round(x), yFmt: fmtSecs });

  const bytesS = [
    { name: "sent", color: COLORS[0], kind: "bar", points: recent.map((r) => [r.round, r.bytes]) },
    { name: "ddp would send", color: COLORS[1], kind: "line", dots: true,
      points: recent.filter((r) => r.ddp_bytes > 0).map((r) => [r.round, r.ddp_bytes]) },
  ];
  legend("legend-bytes", bytesS);
  drawChart($("chart-bytes"), bytesS, { xFmt: (x) => Math.round(x), yFmt: fmtBytes, logY: true });
}

function renderMembers(v) {
  const body = $("members").querySelector("tbody");
  body.textContent = "";
  for (const m of v.members) {
    const tr = el("tr", null, m.status === "active" ? "" : "former");
    tr.dataset.member = m.member_id;
    const cells = [
      m.member_id, null, m.device, m.slot, m.status + (m.ready ? " · ready" : m.base_round === null && m.status === "active" ? " · syncing" : ""),
      m.step, fmtNum(m.tokens), m.status === "active" ? fmtNum(m.tokens_per_s) : "—", fmtNum(m.loss, 4),
      m.status === "active" ? fmtSecs(m.heartbeat_age_s) + " ago" : "—", m.link, m.rounds_rejected,
    ];
    cells.forEach((c, k) => {
      if (k === 1) { const td = el("td", m.public_key.slice(0, 8) + "…", "key"); td.title = m.public_key; tr.append(td); }
      else tr.append(el("td", c));
    });
    const act = el("td", null, "operator-only");
    if (m.status === "active" && v.status === "active") {
      const b = el("button", "Evict", "danger");
      b.type = "button";
      b.addEventListener("click", () => evict(m.member_id, b));
      act.append(b);
    }
    tr.append(act);
    body.append(tr);
  }
}

function renderLedger(v) {
  const body = $("ledger").querySelector("tbody");
  body.textContent = "";
  for (const r of v.ledger) {
    const tr = el("tr");
    const key = el("td", r.public_key.slice(0, 8) + "…", "key");
    key.title = r.public_key;
    tr.append(key, el("td", fmtNum(r.tokens)), el("td", r.inner_steps), el("td", r.rounds_accepted),
      el("td", r.rounds_rejected), el("td", fmtSecs(r.compute_seconds)), el("td", fmtBytes(r.bytes_sent)));
    body.append(tr);
  }
}

function renderEvents() {
  const list = $("events");
  list.textContent = "";
  for (let i = state.events.length - 1; i >= 0; i--) {
    const e = state.events[i];
    const li = el("li", null, e.kind);
    li.dataset.kind = e.kind;
    const t = el("time", fmtTime(e.time));
    t.dateTime = new Date(e.time * 1000).toISOString();
    li.append(t, el("span", e.kind.replace("_", " "), "kind"), el("span", e.detail, "detail"));
    list.append(li);
  }
}

function render() {
  const v = state.view;
  if (!v) return;
  const rounds = sortedRounds();
  renderRuns();
  renderSummary(v, rounds);
  renderCharts(v, rounds);
  renderMembers(v);
  renderLedger(v);
  renderEvents();
  $("footer").textContent = "run " + v.run_id + " · dataset " + v.dataset_hash.slice(0, 12) + "… · " +
    (v.private ? "private" : "public") + " · " + fmtNum(v.model_params) + " parameters · updated " + fmtTime(Date.now() / 1000);
}

// ---- data ---------------------------------------------------------------------------------
function setConn(ok, text) {
  const c = $("conn");
  c.textContent = text;
  c.className = "conn" + (ok ? "" : " down");
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) {
    let msg = r.status + "";
    try { msg += " " + (await r.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r.json();
}

async function loadRuns() {
  try {
    const j = await getJSON("/api/runs");
    state.runs = j.runs;
    if (!state.run || !state.runs.some((r) => r.run_id === state.run)) {
      const active = state.runs.filter((r) => r.status === "active");
      const pick = active.length ? active[active.length - 1] : state.runs[state.runs.length - 1];
      if (pick) selectRun(pick.run_id);
    }
    renderRuns();
    if (!state.runs.length) setConn(true, "no runs on this broker yet");
  } catch (e) {
    setConn(false, "broker unreachable (" + e.message + "), retrying");
  }
}

async function poll() {
  if (!state.run || state.polling) return;  // one request at a time, however slow the broker
  state.polling = true;
  try {
    await pollOnce();
  } finally {
    state.polling = false;
  }
}

async function pollOnce() {
  const run = state.run;
  const last = state.rounds.size ? Math.max(...state.rounds.keys()) : -1;
  const url = "/api/runs/" + encodeURIComponent(run) + "?rounds_after=" + Math.max(-1, last - REFETCH_ROUNDS) +
    "&events_after=" + state.lastEvent;
  try {
    const v = await getJSON(url);
    if (run !== state.run) return;  // the user switched runs meanwhile
    for (const r of v.rounds) state.rounds.set(r.round, r);
    for (const e of v.events) { state.events.push(e); state.lastEvent = Math.max(state.lastEvent, e.id); }
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
    const now = Date.now() / 1000;
    for (const m of v.members) {
      if (m.status !== "active" || m.tokens_per_s === null) continue;
      const h = state.tps.get(m.member_id) || [];
      h.push([now, m.tokens_per_s]);
      while (h.length && h[0][0] < now - TPS_WINDOW_S) h.shift();
      state.tps.set(m.member_id, h);
    }
    state.view = v;
    setConn(true, "live · " + fmtTime(now));
    render();
  } catch (e) {
    setConn(false, "lost the broker (" + e.message + "), retrying");
  }
}

function selectRun(id) {
  if (state.run === id) return;
  state.run = id;
  state.view = null;
  state.rounds = new Map();
  state.events = [];
  state.lastEvent = 0;
  state.tps = new Map();
  history.replaceState(null, "", "#run=" + encodeURIComponent(id));
  renderRuns();
  poll();
}

// ---- operator -----------------------------------------------------------------------------
async function checkToken() {
  state.operator = false;
  if (state.token) {
    try {
      const r = await fetch("/api/operator", { headers: { Authorization: "Bearer " + state.token } });
      state.operator = r.ok;
    } catch (_) { /* offline: stay read-only */ }
  }
  document.body.classList.toggle("is-operator", state.operator);
  const role = $("role");
  role.textContent = state.operator ? "operator" : state.token ? "read-only (token refused)" : "read-only";
  role.className = "role" + (state.operator ? " operator" : "");
  $("auth").hidden = state.operator;
}

async function act(path, what) {
  const msg = $("action-msg");
  msg.textContent = what + "…";
  try {
    const r = await fetch(path, { method: "POST", headers: { Authorization: "Bearer " + state.token } });
    const j = await r.json().catch(() => ({}));
    msg.textContent = r.ok ? what + ": done" : what + " refused: " + (j.error || r.status);
  } catch (e) {
    msg.textContent = what + " failed: " + e.message;
  }
  poll();
}

// Evicting needs a second click within 3 s (no modal dialog: it would stop the page's updates).
function evict(id, button) {
  if (button.dataset.armed === "1") {
    act("/api/runs/" + encodeURIComponent(state.run) + "/members/" + id + "/evict", "evict member " + id);
    return;
  }
  button.dataset.armed = "1";
  button.textContent = "Confirm evict";
  setTimeout(() => { button.dataset.armed = ""; button.textContent = "Evict"; }, 3000);
}

function start() {
  // #run=ID&token=T (the link the broker prints): keep the token for this tab, drop it from the URL.
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    state.token = hash.get("token");
    sessionStorage.setItem("pico-token", state.token);
  }
  if (hash.get("run")) state.run = null, selectRun(hash.get("run"));
  history.replaceState(null, "", state.run ? "#run=" + encodeURIComponent(state.run) : location.pathname);
  $("auth").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("pico-token", state.token);
    $("token").value = "";
    checkToken();
  });
  $("pause").addEventListener("click", () => act("/api/runs/" + encodeURIComponent(state.run) + "/pause", "pause"));
  $("resume").addEventListener("click", () => act("/api/runs/" + encodeURIComponent(state.run) + "/resume", "resume"));
  window.addEventListener("resize", render);
  checkToken();
  loadRuns();
  setInterval(loadRuns, RUNS_MS);
  state.timer = setInterval(poll, POLL_MS);
}

start();
