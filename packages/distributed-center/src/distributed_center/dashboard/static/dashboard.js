// The dashboard page: polls the JSON API every second and draws plain SVG.
// No framework, no charting library, nothing from a CDN (see docs/dashboard.md).
"use strict";

const WINDOW = 60; // seconds of task stream shown
const POLL = 1000; // ms between polls
const SVGNS = "http://www.w3.org/2000/svg";
const tasks = []; // rows [seq, worker, thread, prefix, key, start, stop, status, nbytes]
let taskCursor = 0;
let eventCursor = 0;
let clockOffset = 0; // server time - browser time

const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a"];
function colour(prefix, status) {
  if (status === "error") return "#d62728";
  let h = 0;
  for (const c of prefix) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return COLOURS[h % COLOURS.length];
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4))
                                   : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

async function getJSON(path) {
  const r = await fetch(path, {credentials: "same-origin", cache: "no-store"});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function renderWorkers(data) {
  document.getElementById("center").textContent = data.center.address;
  const t = data.totals;
  const totals = document.getElementById("totals");
  totals.replaceChildren(
    ...[["Workers", t.workers], ["Cores", t.ncores], ["Keys", t.keys],
        ["Managed", fmtBytes(t.managed)], ["Memory", fmtBytes(t.memory)],
        ["Running", t.executing], ["Completed", data.center.tasks_completed],
        ["Erred", data.center.tasks_erred]].map(([k, v]) => {
      const d = el("div"); d.append(el("b", {}, String(v)), k); return d;
    }));
  const body = document.querySelector("#workers tbody");
  body.replaceChildren(...data.workers.map((w) => {
    const tr = el("tr", {"data-address": w.address});
    const cells = [w.name === null ? "-" : String(w.name), w.address, w.ncores,
      fmtBytes(w.memory), fmtBytes(w.managed), fmtBytes(w.unmanaged),
      w.spilled === null ? "-" : fmtBytes(w.spilled), w.keys, w.executing,
      w.heartbeat_age === null ? "-" : w.heartbeat_age.toFixed(1) + " s ago"];
    cells.forEach((c, i) => tr.append(el("td", i >= 2 ? {class: "num"} : {}, String(c))));
    return tr;
  }));
}

function renderTaskStream(now) {
  const svg = document.getElementById("task-stream");
  const width = svg.clientWidth || 800;
  const start = now - WINDOW;
  while (tasks.length && tasks[0][6] < start) tasks.shift();
  const rows = [...new Set(tasks.map((t) => t[1] + " " + t[2]))].sort();
  const rowH = Math.max(8, Math.min(24, 180 / Math.max(rows.length, 1)));
  svg.setAttribute("height", Math.max(60, rows.length * rowH + 20));
  const nodes = [];
  const prefixes = new Map();
  for (const t of tasks) {
    const y = rows.indexOf(t[1] + " " + t[2]) * rowH + 2;
    const x = Math.max(0, (t[5] - start) / WINDOW * width);
    const w = Math.max(1, (t[6] - Math.max(t[5], start)) / WINDOW * width);
    const c = colour(t[3], t[7]);
    prefixes.set(t[3], c);
    const r = el("svg:rect", {x: x.toFixed(1), y: y.toFixed(1), width: w.toFixed(1),
      height: (rowH - 2).toFixed(1), fill: c, class: "task"});
    r.append(el("svg:title", {}, t[4] + " on " + t[1] + " (" + t[2] + "), " +
      ((t[6] - t[5]) * 1000).toFixed(1) + " ms"));
    nodes.push(r);
  }
  svg.replaceChildren(...nodes);
  document.getElementById("legend").replaceChildren(...[...prefixes].map(([p, c]) => {
    const s = el("span"); s.append(el("i", {style: "background:" + c}), p); return s;
  }));
}

function renderLine(id, samples, field, fmt) {
  const svg = document.getElementById(id);
  const width = svg.clientWidth || 300;
  const height = 120;
  if (!samples.length) { svg.replaceChildren(); return; }
  const last = samples[samples.length - 1].time;
  const t0 = Math.max(last - 300, samples[0].time); // the last 5 minutes, or since the start
  const span = Math.max(last - t0, 1);
  const pts = samples.filter((s) => s.time >= t0);
  const max = Math.max(1e-9, ...pts.map((s) => s[field]));
  const d = pts.map((s) => ((s.time - t0) / span * width).toFixed(1) + "," +
    (height - 4 - s[field] / max * (height - 20)).toFixed(1)).join(" ");
  svg.replaceChildren(
    el("svg:polyline", {points: d, fill: "none", stroke: "#1f77b4", "stroke-width": 2}),
    el("svg:text", {x: 4, y: 12, "font-size": 11}, "max " + fmt(max) + ", now " +
      fmt(pts[pts.length - 1][field])));
}

function renderEvents(events) {
  const ul = document.getElementById("events");
  for (const e of events) {
    const li = el("li", {class: e.kind},
      new Date(e.time * 1000).toLocaleTimeString() + "  " + e.kind + ": " + e.detail);
    ul.prepend(li);
  }
  while (ul.children.length > 200) ul.lastChild.remove();
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const [workers, stream, events, rates] = await Promise.all([
      getJSON("/api/v1/workers"),
      getJSON("/api/v1/task-stream?since=" + taskCursor),
      getJSON("/api/v1/events?since=" + eventCursor),
      getJSON("/api/v1/throughput"),
    ]);
    clockOffset = stream.now - Date.now() / 1000;
    taskCursor = stream.cursor;
    tasks.push(...stream.tasks);
    eventCursor = events.cursor;
    renderWorkers(workers);
    renderTaskStream(stream.now);
    renderLine("chart-tasks", rates.samples, "tasks_per_s", (v) => v.toFixed(1));
    renderLine("chart-bytes", rates.samples, "bytes_per_s", fmtBytes);
    renderLine("chart-memory", rates.samples, "memory", fmtBytes);
    renderEvents(events.events);
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "status";
  } catch (err) {
    status.textContent = "cannot reach the center's dashboard (" + err.message + "); retrying";
    status.className = "status error";
  }
  setTimeout(poll, POLL);
}

document.getElementById("window").textContent = WINDOW;
poll();
