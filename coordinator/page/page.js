"use strict";
// The live page: reads the coordinator's snapshot (built in for report.html, else polled
// from /api/snapshot every 2 s) and draws it with plain canvas: no library, no network.
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"];
const fmt = (n) => (n === null || n === undefined) ? "-" :
  (typeof n === "number" ? n.toLocaleString("en-US", {maximumFractionDigits: 1}) : String(n));
const iso = (t) => (t === null || t === undefined) ? "-" :
  new Date(t * 1000).toISOString().replace(".000", "");

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function lineChart(canvas, series, labels) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 40;
  ctx.clearRect(0, 0, w, h);
  const all = series.flat();
  const max = Math.max(1, ...all);
  ctx.strokeStyle = "#c8d1da"; ctx.fillStyle = "#5a6b7d"; ctx.font = "11px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = h - pad + (-(h - 2 * pad) * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 10, y); ctx.stroke();
    ctx.fillText(fmt((max * i) / 4), 2, y + 4);
  }
  series.forEach((points, s) => {
    if (points.length < 2) return;
    ctx.strokeStyle = COLORS[s % COLORS.length]; ctx.lineWidth = 2; ctx.beginPath();
    points.forEach((v, i) => {
      const x = pad + ((w - pad - 10) * i) / (points.length - 1);
      const y = h - pad - ((h - 2 * pad) * v) / max;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  });
  if (labels.length) {
    ctx.fillStyle = "#5a6b7d";
    ctx.fillText(labels[0], pad, h - 8);
    ctx.fillText(labels[labels.length - 1], w - 140, h - 8);
  }
}

function legend(names) {
  const div = el("div", {class: "legend"});
  names.forEach((n, i) => {
    const s = el("span"); const sw = el("i");
    sw.style.background = COLORS[i % COLORS.length]; s.append(sw, document.createTextNode(n));
    div.append(s);
  });
  return div;
}

function heatmap(canvas, m) {
  const rows = m.data.length, cols = rows ? m.data[0].length : 0;
  const ctx = canvas.getContext("2d");
  // A (lat, lon) matrix reads as a map: rows bottom-up.
  const cw = canvas.width / Math.max(1, rows), ch = canvas.height / Math.max(1, cols);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const max = Math.max(1e-9, m.max);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = m.data[r][c];
      if (!v) continue;
      const a = Math.sqrt(v / max);
      ctx.fillStyle = `rgba(214, 39, 40, ${Math.min(1, 0.08 + a)})`;
      ctx.fillRect(r * cw, canvas.height - (c + 1) * ch, Math.ceil(cw), Math.ceil(ch));
    }
  }
}

function render(s) {
  document.getElementById("pipeline").textContent = s.pipeline;
  const state = document.getElementById("state");
  state.textContent = s.state; state.className = "state " + s.state;
  const cards = document.getElementById("cards"); cards.replaceChildren();
  const cp = s.checkpoint;
  [["events read", fmt(s.records_read)], ["events/s", fmt(s.events_per_s)],
   ["watermark", iso(s.watermark)], ["watermark lag s", fmt(s.watermark_lag_s)],
   ["dead letters", fmt(s.dead_letters)], ["late events", fmt(s.late_events)],
   ["window rows", fmt(s.window_rows)], ["sessions ended", fmt(s.sessions_ended)],
   ["last checkpoint", cp.last_id === null ? "-" : `#${cp.last_id}, ${fmt(cp.age_s)} s ago`],
   ["restarts", fmt(s.restarts)]]
    .forEach(([k, v]) => { const c = el("div", {class: "card"}); c.append(el("b", {}, v), el("span", {}, k)); cards.append(c); });

  const hist = s.history || [];
  const series = s.workers.map((w) => []);
  const labels = [];
  for (let i = 1; i < hist.length; i++) {
    const dt = Math.max(1e-6, hist[i].t - hist[i - 1].t);
    s.workers.forEach((w, j) => series[j].push(Math.max(0, (hist[i].workers[j] - hist[i - 1].workers[j]) / dt)));
    labels.push(iso(hist[i].t).slice(11));
  }
  const tp = document.getElementById("throughput");
  lineChart(tp, series, labels);
  tp.dataset.points = String(series.reduce((a, b) => a + b.length, 0));
  const old = tp.nextElementSibling;
  if (old && old.classList.contains("legend")) old.remove();
  tp.after(legend(s.workers.map((w) => `worker ${w.worker}`)));

  const tbody = document.querySelector("#workers tbody"); tbody.replaceChildren();
  s.workers.forEach((w) => {
    const tr = el("tr");
    [w.worker, `${w.key_groups[0]}-${w.key_groups[1]}`, fmt(w.events_in), fmt(w.events_out),
     fmt(w.events_per_s), fmt(w.queue_depth), fmt(w.open_sessions)].forEach((v) => tr.append(el("td", {}, String(v))));
    tbody.append(tr);
  });

  const windows = document.getElementById("windows"); windows.replaceChildren();
  for (const [aid, periods] of Object.entries(s.windows || {})) {
    windows.append(el("h2", {}, `Merged windows: ${aid} (top keys per period)`));
    const keys = [];
    periods.forEach((p) => p.top.forEach(([k]) => { if (!keys.includes(k) && keys.length < 8) keys.push(k); }));
    const canvas = el("canvas", {width: 960, height: 220, class: "window-chart", "data-analyzer": aid});
    const ser = keys.map((k) => periods.map((p) => { const f = p.top.find((x) => x[0] === k); return f ? f[1] : 0; }));
    lineChart(canvas, ser, periods.length ? [iso(periods[0].window_start), iso(periods[periods.length - 1].window_start)] : []);
    canvas.dataset.points = String(periods.length);
    windows.append(canvas, legend(keys));
  }

  const mats = document.getElementById("matrices"); mats.replaceChildren();
  (s.matrices || []).forEach((m) => {
    mats.append(el("h2", {}, `Matrix ${m.id} ${m.shape.join("x")} (sum ${fmt(m.sum)}${m.block > 1 ? `, ${m.block}x${m.block} blocks` : ""})`));
    const rows = m.data.length, cols = rows ? m.data[0].length : 1;
    const scale = Math.max(1, Math.floor(720 / Math.max(rows, cols)));
    const canvas = el("canvas", {width: rows * scale, height: cols * scale, class: "heatmap", "data-matrix": m.id});
    heatmap(canvas, m);
    canvas.dataset.sum = String(m.sum);
    mats.append(canvas);
  });

  const cpb = document.querySelector("#checkpoints tbody"); cpb.replaceChildren();
  (s.checkpoints || []).slice().reverse().forEach((c) => {
    const tr = el("tr");
    [c.id, iso(c.at), fmt(c.duration_s), fmt(c.bytes / 1e6)].forEach((v) => tr.append(el("td", {}, String(v))));
    cpb.append(tr);
  });
  document.getElementById("footer").textContent =
    `run ${s.run_id}, up ${fmt(s.uptime_s)} s, snapshot ${iso(s.time)}`;
}

const embedded = JSON.parse(document.getElementById("snapshot").textContent);
if (embedded) {
  render(embedded);
} else {
  const poll = () => fetch("/api/snapshot").then((r) => r.json()).then(render)
    .catch((e) => { document.getElementById("state").textContent = "disconnected"; });
  poll();
  setInterval(poll, 2000);
}
