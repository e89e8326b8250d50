// Sluice's built-in dashboard. Polls /dashboard/data, keeps ten minutes of readings in memory
// and draws line charts on canvas. Counter rates come from two readings, like Prometheus' rate().
"use strict";

const POLL_MS = 2000;
const SHOW_ERRORS = 25;
const KEEP_MS = 10 * 60 * 1000;
const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f778ba", "#a371f7", "#f85149", "#39c5cf", "#e3b341"];
const history = []; // {t, data}
let token = sessionStorage.getItem("sluice-admin-token") || "";

const $ = (sel) => document.querySelector(sel);
const fmt = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });
const num = (v) => (v === null || v === undefined ? "–" : fmt.format(v));

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${fmt.format(n)} ${units[i]}`;
}

function setStatus(state, text) {
  const el = $("#status");
  el.dataset.state = state;
  el.textContent = text;
}

// Rate of a counter between the two newest readings that have it (events per second).
function rate(pick) {
  if (history.length < 2) return null;
  const a = history[history.length - 2], b = history[history.length - 1];
  const dt = (b.t - a.t) / 1000;
  if (dt <= 0) return null;
  return Math.max(0, (pick(b.data) - pick(a.data)) / dt);
}

// One series per key: points [t, value] built from consecutive readings.
function seriesOf(keys, value, asRate) {
  return keys.map((key, i) => {
    const points = [];
    for (let n = asRate ? 1 : 0; n < history.length; n++) {
      const cur = history[n];
      const v = value(cur.data, key);
      if (v === null || v === undefined) continue;
      if (asRate) {
        const prev = history[n - 1];
        const before = value(prev.data, key);
        const dt = (cur.t - prev.t) / 1000;
        if (before === null || before === undefined || dt <= 0) continue;
        points.push([cur.t, Math.max(0, (v - before) / dt)]);
      } else {
        points.push([cur.t, v]);
      }
    }
    return { name: key, color: COLORS[i % COLORS.length], points };
  });
}

function drawChart(id, series) {
  const canvas = document.getElementById(`chart-${id}`);
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const style = getComputedStyle(document.documentElement);
  const fontPx = parseFloat(style.fontSize) * 0.75;
  ctx.font = `${fontPx}px system-ui, sans-serif`;
  const now = Date.now();
  // The window grows with the history, from one minute to ten, so a fresh page is not a sliver.
  const span = Math.min(KEEP_MS, Math.max(60000, history.length ? now - history[0].t : 0));
  const t0 = now - span;
  let max = 0;
  for (const s of series) for (const [, v] of s.points) max = Math.max(max, v);
  max = niceMax(max);
  const ticks = [0, 1, 2, 3, 4].map((i) => (max * i) / 4);
  const left = Math.max(...ticks.map((v) => ctx.measureText(fmt.format(v)).width)) + 8, bottom = fontPx + 6, top = 4;
  const x = (t) => left + ((t - t0) / span) * (w - left - 4);
  const y = (v) => top + (1 - v / max) * (h - top - bottom);
  ctx.strokeStyle = "#2a3642";
  ctx.fillStyle = "#8b98a5";
  ctx.lineWidth = 1;
  for (const v of ticks) {
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(w - 4, yy); ctx.stroke();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText(fmt.format(v), left - 4, yy);
  }
  ctx.textAlign = "center"; ctx.textBaseline = "bottom";
  const step = span / 5;
  for (let k = 5; k >= 0; k--) {
    const ago = Math.round((k * step) / 1000);
    const label = !k ? "now" : ago >= 60 ? `-${fmt.format(ago / 60)}m` : `-${ago}s`;
    ctx.textAlign = k === 5 ? "left" : k === 0 ? "right" : "center";
    ctx.fillText(label, k === 5 ? left : x(now - k * step), h);
  }
  ctx.lineWidth = 2;
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.beginPath();
    s.points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.stroke();
  }
  const legend = document.getElementById(`legend-${id}`);
  legend.replaceChildren(...series.map((s) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.color;
    const last = s.points.length ? s.points[s.points.length - 1][1] : null;
    span.append(swatch, `${s.name} ${num(last)}`);
    return span;
  }));
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function render(d) {
  const total = (f) => d.destinations.reduce((n, x) => n + f(x), 0);
  const set = (key, text) => ($(`[data-metric="${key}"]`).textContent = text);
  set("received_total", num(d.received.total));
  set("ingest_rate", num(rate((x) => x.received.total)));
  set("rejected_total", num(d.rejected.total));
  set("delivered_total", num(total((x) => x.delivered)));
  set("dead_lettered_total", num(total((x) => x.dead_lettered)));
  const used = d.log.size_bytes / Math.max(1, d.log.budget_bytes);
  set("log_used", `${fmt.format(used * 100)}%`);
  set("log_bytes", `${bytes(d.log.size_bytes)} of ${bytes(d.log.budget_bytes)}`);

  const failing = d.destinations.filter((x) => x.failing_since_ms);
  if (d.log.refusing_appends || d.log.write_error) setStatus("bad", "ingest refused: log full or unwritable");
  else if (failing.length) setStatus("warn", `${failing.length} destination(s) failing`);
  else if (used >= 0.9) setStatus("warn", "log near its budget");
  else setStatus("ok", "healthy");
  $("#updated").textContent = `updated ${new Date(d.at_ms).toLocaleTimeString()}`;

  const sources = Object.keys(d.received.by_source);
  drawChart("ingest", seriesOf(sources, (data, k) => data.received.by_source[k] ?? 0, true));
  const ids = d.destinations.filter((x) => x.enabled).map((x) => x.id);
  const dest = (data, k) => data.destinations.find((x) => x.id === k);
  drawChart("delivered", seriesOf(ids, (data, k) => dest(data, k)?.delivered, true));
  drawChart("lag", seriesOf(ids, (data, k) => dest(data, k)?.lag_events, false));
  drawChart("dead", seriesOf(ids, (data, k) => dest(data, k)?.dead_lettered, false));

  $("#destinations tbody").replaceChildren(...d.destinations.map((x) => {
    const tr = document.createElement("tr");
    tr.dataset.destination = x.id;
    const state = !x.enabled ? ["disabled", "state-off"]
      : x.failing_since_ms ? [`failing since ${new Date(x.failing_since_ms).toLocaleTimeString()}`, "state-bad"]
      : ["delivering", "state-ok"];
    tr.append(cell(x.id), cell(state[0], state[1]), cell(num(x.delivered), "num"), cell(num(x.lag_events), "num"),
      cell(num(x.lag_seconds), "num"), cell(num(x.retries), "num"), cell(num(x.dead_lettered), "num"),
      cell(num(x.transform_failed), "num"));
    return tr;
  }));

  $("#errors tbody").replaceChildren(...d.errors.slice(0, SHOW_ERRORS).map((e) => {
    const tr = document.createElement("tr");
    tr.append(cell(new Date(e.at_ms).toLocaleTimeString()), cell(e.kind, "kind"), cell(e.subject), cell(e.reason, "reason"));
    return tr;
  }));
  $("#no-errors").hidden = d.errors.length > 0;
}

async function poll() {
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const r = await fetch("/dashboard/data", { headers, cache: "no-store" });
    if (r.status === 401) {
      $("#login").hidden = false;
      setStatus("warn", "token needed");
      return;
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const data = await r.json();
    $("#login").hidden = true;
    const t = Date.now();
    history.push({ t, data });
    while (history.length && history[0].t < t - KEEP_MS) history.shift();
    render(data);
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    setStatus("bad", `Sluice does not answer (${e.message})`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("sluice-admin-token", token);
});
window.addEventListener("resize", () => history.length && render(history[history.length - 1].data));
poll();
