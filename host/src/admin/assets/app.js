// Switchyard's dashboard: a page per hash route, built with DOM calls only
// (every text from a producer or a plugin goes in as text, never as HTML).
"use strict";

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let timer = null;
let generation = 0; // counts route() calls
let previous = null; // the last overview, for rates
let overview = null;
let notice = null; // what a bulk action did, shown above the list it refreshed


function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const TOKEN_NEEDED = "Enter the admin token, or the read-only token, above to see the dashboard.";

function token() { return sessionStorage.getItem("switchyard-token") || ""; }

async function api(path, options) {
  const headers = { authorization: `Bearer ${token()}`, ...((options && options.headers) || {}) };
  const response = await fetch(path, { ...(options || {}), headers });
  if (response.status === 401) throw new Error(TOKEN_NEEDED);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function post(path, payload) {
  return api(path, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token()}` },
    body: JSON.stringify(payload),
  });
}

function ago(unixSeconds) {
  if (!unixSeconds) return "";
  const s = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined));
}

function message(text, error) {
  return el("div", { class: error ? "message error" : "message", role: "status" }, text);
}

function actionsAllowed() {
  return overview && overview.actions;
}

function setStatus() {
  if (!overview) return;
  const parts = [overview.redis_up ? "Redis up" : "Redis unreachable"];
  if (overview.dead_letters !== null) parts.push(`${overview.dead_letters} dead letters`);
  parts.push(overview.actions ? "actions enabled" : "read-only token: actions need the admin token");
  statusLine.textContent = parts.join(" · ");
  statusLine.className = overview.redis_up ? "status" : "status bad";
}

async function refreshOverview() {
  const next = await api("/api/overview");
  next.at = Date.now() / 1000;
  previous = overview;
  overview = next;
  setStatus();
  return next;
}

function rate(q, fields) {
  if (!previous) return "–";
  const before = previous.queues.find((p) => p.name === q.name);
  if (!before) return "–";
  const dt = overview.at - previous.at;
  if (dt <= 0) return "–";
  const delta = fields.reduce((n, f) => n + (q[f] - before[f]), 0);
  return (Math.max(0, delta) / dt).toFixed(1);
}

function queuesView() {
  const rows = overview.queues.map((q) =>
    el("tr", { "data-queue": q.name },
      el("td", {}, el("a", { href: `#/queue/${encodeURIComponent(q.name)}` }, q.name)),
      el("td", { class: "num" }, rate(q, ["succeeded"])),
      el("td", { class: "num" }, rate(q, ["retried", "failed", "rejected"])),
      el("td", { class: "num" }, q.backlog ?? "?"),
      el("td", { class: "num" }, q.pending ?? "?"),
      el("td", { class: "num" }, q.in_flight),
      el("td", { class: "num" }, q.concurrency_min === q.concurrency_max
        ? String(q.concurrency)
        : `${q.concurrency} (${q.concurrency_min}–${q.concurrency_max})`),
      el("td", { class: "num" }, q.succeeded),
      el("td", { class: "num" }, q.dead_lettered),
      el("td", {}, q.plugin ? el("code", {}, q.plugin.version) : el("span", { class: "bad" }, "not loaded"),
        q.plugin ? el("span", { class: "muted" }, ` ${q.plugin.contract}`) : null),
      el("td", { class: "muted" }, q.plugin ? ago(q.plugin.loaded_at) : ""),
      el("td", { class: "reason bad" }, q.last_refusal ? `${ago(q.last_refusal.at)}: ${q.last_refusal.reason}` : "")));
  return [
    el("h2", {}, "Queues"),
    el("table", { id: "queues" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Queue"), el("th", { class: "num" }, "Handled/s"), el("th", { class: "num" }, "Failed/s"),
        el("th", { class: "num" }, "Backlog"), el("th", { class: "num" }, "Pending"), el("th", { class: "num" }, "In flight"),
        el("th", { class: "num" }, "Concurrency"), el("th", { class: "num" }, "Handled"), el("th", { class: "num" }, "Dead-lettered"),
        el("th", {}, "Plugin"), el("th", {}, "Loaded"), el("th", {}, "Last reload refusal"))),
      el("tbody", {}, rows)),
    el("p", { class: "muted" }, "Rates over the last two seconds; updated every two seconds."),
    queuesCharts(),
    partitionsView(),
  ];
}

// Shown when the ingress is split: where a backlog is, and which
// partitions are retired (read until drained) or drained.
function partitionsView() {
  const parts = overview.partitions || [];
  if (parts.length < 2) return null;
  return [
    el("h2", {}, "Partitions"),
    el("table", { id: "partitions" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Partition"), el("th", {}, "Ingress stream"), el("th", {}, "State"),
        el("th", { class: "num" }, "Backlog"), el("th", { class: "num" }, "Pending"), el("th", { class: "num" }, "Dead letters"))),
      el("tbody", {}, parts.map((p) => el("tr", { "data-partition": p.id },
        el("td", {}, el("code", {}, p.id)),
        el("td", {}, el("code", {}, p.ingress)),
        el("td", { class: p.state === "active" ? "" : "muted" }, p.state),
        el("td", { class: "num" }, p.backlog ?? "?"),
        el("td", { class: "num" }, p.pending),
        el("td", { class: "num" }, p.dead_letters))))),
  ];
}

// Charts, drawn here as SVG from /api/history: the host keeps the samples
// (every 5 s for 5 minutes, every minute for an hour, dead letters per
// hour for a day), so nothing needs Prometheus.
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2457c5", "#1e7b34", "#b3261e", "#a86400", "#6b3fa0", "#00838f", "#c2185b", "#546e7a", "#7cb342", "#5d4037"];
let samples = null; // the last /api/history
let span = sessionStorage.getItem("switchyard-span") === "hour" ? "hour" : "minutes";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function number(v) {
  if (v === null || v === undefined) return "?";
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  if (Number.isInteger(v)) return String(v);
  return a >= 10 ? v.toFixed(0) : String(Number(v.toFixed(2)));
}

function clock(t, seconds) {
  const d = new Date(t * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return seconds ? `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}` : `${two(d.getHours())}:${two(d.getMinutes())}`;
}

// A line chart: `lines` are { name, color, points: [[t, value or null]] }
// over the window [now - seconds, now].
function lineChart(id, title, unit, lines, seconds, now) {
  const W = 410, H = 170, L = 48, R = 12, T = 12, B = 24;
  const x = (t) => L + ((t - (now - seconds)) / seconds) * (W - L - R);
  const values = lines.flatMap((l) => l.points.map((p) => p[1])).filter((v) => v !== null);
  const max = niceMax(Math.max(0, ...values));
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const fine = seconds <= 600;
  const grid = [0, max / 2, max].map((v) => [
    svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
    svg("text", { class: "tick", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, number(v)),
  ]);
  const ticks = [now - seconds, now - seconds / 2, now].map((t, i) =>
    svg("text", { class: "tick", x: x(t), y: H - 6, "text-anchor": ["start", "middle", "end"][i] }, clock(t, fine)));
  const drawn = lines.map((l) => {
    let d = "";
    let pen = false;
    for (const [t, v] of l.points) {
      if (v === null) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)} ${y(v).toFixed(1)}`;
      pen = true;
    }
    return svg("g", { class: "series", "data-series": l.name },
      svg("path", { class: "line", d, stroke: l.color }),
      l.points.filter((p) => p[1] !== null).map(([t, v]) =>
        svg("circle", { class: "hit", cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 5, fill: l.color },
          svg("title", {}, `${l.name} at ${clock(t, true)}: ${number(v)} ${unit}`))));
  });
  const empty = values.length === 0
    ? svg("text", { class: "empty", x: (L + W - R) / 2, y: H / 2, "text-anchor": "middle" }, "No data yet: a point every 5 s.")
    : null;
  const legend = el("ul", { class: "legend" }, lines.map((l) => {
    const last = l.points.length ? l.points[l.points.length - 1][1] : null;
    return el("li", { "data-series": l.name },
      el("span", { class: `swatch c${COLORS.indexOf(l.color)}` }),
      `${l.name} `, el("strong", {}, `${number(last)} ${unit}`));
  }));
  return el("figure", { class: "chart", id },
    el("figcaption", {}, title, el("span", { class: "muted" }, ` (${unit})`)),
    svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": title },
      grid, svg("line", { class: "axis", x1: L, x2: W - R, y1: y(0), y2: y(0) }), ticks, drawn, empty),
    legend);
}

// Dead letters per hour over the last day: a bar per hour, stacked by
// queue and reason class.
function deadChart(hours, now) {
  const W = 1270, H = 170, L = 48, R = 12, T = 12, B = 24;
  const hour = Math.floor(now / 3600) * 3600;
  const first = hour - 23 * 3600;
  hours = hours.filter((h) => h.hour >= first && h.hour <= hour);
  const keys = [...new Set(hours.flatMap((h) => h.counts.map((c) => `${c.queue} · ${c.class}`)))].sort();
  const color = (k) => COLORS[keys.indexOf(k) % COLORS.length];
  const totals = hours.map((h) => h.counts.reduce((n, c) => n + c.count, 0));
  const max = niceMax(Math.max(0, ...totals));
  const slot = (W - L - R) / 24;
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const bars = hours.map((h) => {
    let base = 0;
    const x = L + ((h.hour - first) / 3600) * slot + 2;
    return h.counts.slice().sort((a, b) => `${a.queue} · ${a.class}`.localeCompare(`${b.queue} · ${b.class}`)).map((c) => {
      const k = `${c.queue} · ${c.class}`;
      const top = y(base + c.count);
      const rect = svg("rect", { class: "bar", x: x.toFixed(1), y: top.toFixed(1), width: (slot - 4).toFixed(1), height: (y(base) - top).toFixed(1), fill: color(k), "data-series": k },
        svg("title", {}, `${clock(h.hour)}–${clock(h.hour + 3600)} ${k}: ${c.count} dead letters`));
      base += c.count;
      return rect;
    });
  });
  const grid = [0, max / 2, max].map((v) => [
    svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
    svg("text", { class: "tick", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, number(v)),
  ]);
  const ticks = [0, 6, 12, 18, 23].map((i) =>
    svg("text", { class: "tick", x: L + (i + 0.5) * slot, y: H - 6, "text-anchor": "middle" }, clock(first + i * 3600)));
  const sums = keys.map((k) => [k, hours.reduce((n, h) => n + h.counts.filter((c) => `${c.queue} · ${c.class}` === k).reduce((m, c) => m + c.count, 0), 0)]);
  const empty = keys.length === 0
    ? svg("text", { class: "empty", x: (L + W - R) / 2, y: H / 2, "text-anchor": "middle" }, "No dead letters in the last 24 h.")
    : null;
  return el("figure", { class: "chart wide", id: "chart-dead" },
    el("figcaption", {}, "Dead letters per hour", el("span", { class: "muted" }, " (by queue and reason class, last 24 h)")),
    svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "Dead letters per hour" },
      grid, svg("line", { class: "axis", x1: L, x2: W - R, y1: y(0), y2: y(0) }), ticks, bars, empty),
    el("ul", { class: "legend" }, sums.map(([k, n]) => el("li", { "data-series": k },
      el("span", { class: `swatch c${keys.indexOf(k) % COLORS.length}` }), `${k} `, el("strong", {}, `${n} in 24 h`)))));
}

function spanToggle(redraw) {
  const choose = (s) => { span = s; sessionStorage.setItem("switchyard-span", s); redraw(); };
  return el("div", { class: "span", role: "group", "aria-label": "chart window" },
    el("button", { id: "span-minutes", class: span === "minutes" ? "" : "secondary", onclick: () => choose("minutes") }, "Last 5 minutes"),
    el("button", { id: "span-hour", class: span === "hour" ? "" : "secondary", onclick: () => choose("hour") }, "Last hour"));
}

// A series' points in the window ending at `now`; a null where samples are
// missing (the host was busy or stopped), so the line breaks there.
function points(series, field, now) {
  const step = span === "hour" ? 60 : 5;
  const out = [];
  let last = null;
  for (const p of span === "hour" ? series.coarse : series.fine) {
    if (p.at < now - windowSeconds()) continue;
    if (last !== null && p.at - last > 2.5 * step) out.push([last + step, null]);
    out.push([p.at, p[field]]);
    last = p.at;
  }
  return out;
}

function windowSeconds() { return span === "hour" ? 3600 : 300; }

// The queues page's charts: a line per queue.
function queuesCharts() {
  if (!samples) return null;
  const now = samples.now; // the host's clock, which the points are on
  const names = Object.keys(samples.queues);
  const lines = (field) => names.map((n, i) => ({ name: n, color: COLORS[i % COLORS.length], points: points(samples.queues[n], field, now) }));
  const box = el("section", { id: "charts" });
  const draw = () => box.replaceChildren(
    el("div", { class: "chart-head" }, el("h2", {}, "Trends"), spanToggle(draw)),
    el("div", { class: "charts" },
      lineChart("chart-handled", "Handled", "msg/s", lines("handled"), windowSeconds(), now),
      lineChart("chart-failed", "Failed attempts", "msg/s", lines("failed"), windowSeconds(), now),
      lineChart("chart-backlog", "Backlog", "messages", lines("backlog"), windowSeconds(), now),
      lineChart("chart-pending", "Pending", "messages", lines("pending"), windowSeconds(), now),
      lineChart("chart-concurrency", "Concurrency", "handler slots", lines("concurrency"), windowSeconds(), now),
      deadChart(samples.dead_per_hour, now)));
  draw();
  return box;
}

// A queue's page: its own lines.
function queueCharts(name, h) {
  const now = h.now;
  const s = Object.hasOwn(h.queues, name) ? h.queues[name] : { fine: [], coarse: [] };
  const box = el("section", { id: "charts" });
  const draw = () => box.replaceChildren(
    el("div", { class: "chart-head" }, el("h3", {}, "Trends"), spanToggle(draw)),
    el("div", { class: "charts" },
      lineChart("chart-rates", "Handled and failed", "msg/s", [
        { name: "handled", color: COLORS[1], points: points(s, "handled", now) },
        { name: "failed", color: COLORS[2], points: points(s, "failed", now) }], windowSeconds(), now),
      lineChart("chart-waiting", "Backlog and pending", "messages", [
        { name: "backlog", color: COLORS[0], points: points(s, "backlog", now) },
        { name: "pending", color: COLORS[3], points: points(s, "pending", now) }], windowSeconds(), now),
      lineChart("chart-concurrency", "Concurrency", "handler slots", [
        { name: "slots", color: COLORS[4], points: points(s, "concurrency", now) }], windowSeconds(), now),
      deadChart(h.dead_per_hour, now)));
  draw();
  return box;
}

function deadTable(letters) {
  if (letters.length === 0) return el("p", { class: "muted", id: "no-dead" }, "No dead letters.");
  return el("table", { id: "dead-letters" },
    el("thead", {}, el("tr", {},
      el("th", {}, "ID"), el("th", {}, "Dead-lettered"), el("th", {}, "Queue"), el("th", {}, "Type"),
      el("th", {}, "Message id"), el("th", { class: "num" }, "Attempts"), el("th", {}, "Reason"))),
    el("tbody", {}, letters.map((d) => el("tr", { "data-id": d.id },
      el("td", {}, el("a", { href: `#/dead/${d.id}` }, d.id)),
      el("td", {}, d.at), el("td", {}, d.queue), el("td", {}, d.type), el("td", {}, d.message_id),
      el("td", { class: "num" }, d.attempts ?? ""), el("td", { class: "reason" }, d.reason)))));
}

async function queueView(name) {
  const q = await api(`/api/queues/${encodeURIComponent(name)}`);
  const h = await api(`/api/history?queue=${encodeURIComponent(name)}`);
  const retrying = q.retrying.length === 0
    ? el("p", { class: "muted" }, "No message is waiting for a retry.")
    : el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, "Entry"), el("th", {}, "First failure"), el("th", {}, "Failures, oldest first"))),
        el("tbody", {}, q.retrying.map((r) => el("tr", {},
          el("td", {}, r.entry),
          el("td", {}, (r.history && r.history.first) || ""),
          el("td", { class: "reason" }, ((r.history && r.history.errors) || []).map((e) => el("div", {}, e)))))));
  return [
    el("h2", {}, `Queue ${q.name}`),
    queueCharts(q.name, h),
    el("h3", {}, "Waiting for a retry"), retrying,
    el("h3", {}, "Recent dead letters"), deadTable(q.dead_letters),
    el("h3", {}, "Settings"),
        el("table", { id: "settings" }, el("tbody", {}, Object.entries(q.settings).map(([k, v]) =>
      el("tr", {}, el("td", {}, el("code", {}, k)), el("td", {}, v === "" ? el("span", { class: "muted" }, "(none)") : el("code", {}, v)))))),
  ];
}

function filterFromHash(query) {
  const p = new URLSearchParams(query);
  return { queue: p.get("queue") || "", reason: p.get("reason") || "", since: p.get("since") || "" };
}

async function deadView(query) {
  const filter = filterFromHash(query);
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(filter)) if (v) params.set(k, v);
  const list = await api(`/api/dead?${params}`);
    const out = el("div", { id: "outcome" }, notice ? message(notice) : null);
  notice = null;
  const input = (name, placeholder) => el("input", { name, placeholder, value: filter[name], "aria-label": placeholder });
  const form = el("form", {
    class: "filters",
    onsubmit: (e) => {
      e.preventDefault();
      const data = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v) data.set(k, v);
      location.hash = `#/dead?${data}`;
    },
  }, input("queue", "queue, or (router)"), input("reason", "reason contains"), input("since", "since, e.g. 1h"),
    el("button", { type: "submit", class: "secondary" }, "Filter"));
  const all = async (what) => {
    const verb = what === "replay" ? "Replay" : "Delete";
    if (!confirm(`${verb} every dead letter that matches (${list.dead_letters.length} shown)?`)) return;
    try {
      const r = await post(`/api/dead/${what}`, { all: true, filter });
            notice = what === "replay"
        ? `${r.results.filter((x) => x.result === "replayed").length} replayed`
        : `${r.deleted} deleted`;
      await route();

    } catch (e) { out.replaceChildren(message(e.message, true)); }
  };
  const allowed = actionsAllowed() && list.dead_letters.length > 0;
  return [
    el("h2", {}, "Dead letters"), form,
    el("div", { class: "actions" },
      el("button", { id: "replay-all", disabled: !allowed, onclick: () => all("replay") }, "Replay all that match"),
      el("button", { id: "delete-all", class: "danger", disabled: !allowed, onclick: () => all("delete") }, "Delete all that match")),
    out, deadTable(list.dead_letters),
    el("p", { class: "muted" }, `Newest first, at most ${list.limit}.`),
  ];
}

async function deadDetailView(id) {
  const d = await api(`/api/dead/${encodeURIComponent(id)}`);
  const out = el("div", { id: "outcome" });
  const act = async (what) => {
    try {
      const r = await post(`/api/dead/${what}`, { ids: [id] });
      const result = what === "replay" ? r.results[0] : null;
      out.replaceChildren(message(what === "replay"
        ? (result.result === "replayed" ? `Replayed to ${result.stream} as ${result.entry}.` : `Not replayed: ${result.reason || result.result}.`)
        : `${r.deleted} deleted.`, result && result.result !== "replayed"));
      for (const b of main.querySelectorAll(".actions button")) b.disabled = true;
    } catch (e) { out.replaceChildren(message(e.message, true)); }
  };
  const fields = (object) => el("dl", {}, Object.entries(object).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const messageFields = Object.fromEntries(Object.entries(d.message).filter(([k]) => k !== "body" || !d.body_pretty));
  return [
    el("h2", {}, `Dead letter ${d.id}`),
    el("div", { class: "actions" },
      el("button", { id: "replay", disabled: !actionsAllowed(), onclick: () => act("replay") }, "Replay"),
      el("button", { id: "delete", class: "danger", disabled: !actionsAllowed(), onclick: () => act("delete") }, "Delete")),
    out,
    el("h3", {}, "Record"), fields(d.record),
    el("h3", {}, "Failed attempts, oldest first"),
    d.errors.length ? el("ol", { id: "errors" }, d.errors.map((e) => el("li", {}, e))) : el("p", { class: "muted" }, "None recorded (rejected at once, or refused before the plugin ran)."),
    el("h3", {}, "Message"), fields(messageFields),
        ...(d.body_pretty ? [el("h3", {}, "Body"), el("pre", { id: "body" }, d.body_pretty)] : []),
  ];
}

function routesView() {
  return [
    el("h2", {}, "Routes"),
    el("table", { id: "routes" },
      el("thead", {}, el("tr", {}, el("th", {}, "Message type"), el("th", {}, "Queues"), el("th", {}, "Bodies"))),
      el("tbody", {}, overview.routes.map((r) => el("tr", {},
        el("td", {}, el("code", {}, r.type)),
        el("td", {}, r.queues.join(", ")),
        el("td", {}, r.validate ? "checked against the schema" : "any JSON"))))),
  ];
}

async function route() {
  clearInterval(timer);
  timer = null;
  // A refresh still under way when the page changes drops its result.
  const current = ++generation;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  for (const a of document.querySelectorAll("nav a")) a.classList.remove("active");
  if (!token()) {
    statusLine.textContent = "";
    show(message(TOKEN_NEEDED));
    return;
  }
  try {
    await refreshOverview();
    if (path === "/") {
      document.getElementById("nav-queues").classList.add("active");
      samples = await api("/api/history");
      show(...queuesView());
      timer = setInterval(async () => {
        try {
          await refreshOverview();
          if (generation !== current) return;
          const next = await api("/api/history");
          if (generation !== current) return;
          samples = next;
          show(...queuesView());
        } catch (e) { if (generation === current) statusLine.textContent = e.message; }
      }, 2000);
    } else if (path.startsWith("/queue/")) {
      document.getElementById("nav-queues").classList.add("active");
      const name = decodeURIComponent(path.slice(7));
      const page = await queueView(name);
      if (generation !== current) return;
      show(...page);
      timer = setInterval(async () => {
        try {
          const h = await api(`/api/history?queue=${encodeURIComponent(name)}`);
          if (generation !== current) return;
          const charts = document.getElementById("charts");
          if (charts) charts.replaceWith(queueCharts(name, h));
        } catch (e) { if (generation === current) statusLine.textContent = e.message; }
      }, 5000);
    } else if (path === "/dead") {
      document.getElementById("nav-dead").classList.add("active");
      show(...(await deadView(query || "")));
    } else if (path.startsWith("/dead/")) {
      document.getElementById("nav-dead").classList.add("active");
      show(...(await deadDetailView(path.slice(6))));
    } else if (path === "/routes") {
      document.getElementById("nav-routes").classList.add("active");
      show(...routesView());
    } else {
      show(message(`No page ${path}.`, true));
    }
  } catch (e) {
    show(message(e.message, true));
  }
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("switchyard-token", document.getElementById("token").value);
  document.getElementById("token").value = "";
  route();
});
window.addEventListener("hashchange", route);
route();
