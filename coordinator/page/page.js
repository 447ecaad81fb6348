"use strict";
// The live page: reads the coordinator's snapshot (built in for report.html, else polled
// from /api/snapshot every 2 s) and draws it with plain canvas: no library, no network.
// Every chart canvas gets data-points (how many values it drew), for people and tests.

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939", "#7f7f7f"];
const OTHER = "#c9d1da";
const ANOMALY = "#c0141e";
const AXIS = "#5a6b7d", GRID = "#e3e8ee";
const POLL_MS = 2000;
const TOP_KEYS = 8; // keys drawn per window chart; the rest is "other"
const SPAN = 3; // seconds each throughput point averages over

// -- formatting ---------------------------------------------------------------------------

const isNum = (n) => typeof n === "number" && Number.isFinite(n);
const fmt = (n, digits = 0) => !isNum(n) ? "-" :
  n.toLocaleString("en-US", {maximumFractionDigits: digits});
function compact(n) {
  if (!isNum(n)) return "-";
  const a = Math.abs(n);
  for (const [v, s] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (a >= v) return `${+(n / v).toFixed(a >= 10 * v ? 0 : 1)}${s}`;
  }
  return String(+n.toFixed(a >= 10 ? 0 : 2));
}
function human(s) {
  if (!isNum(s)) return "-";
  const a = Math.abs(s);
  if (a < 10) return `${s.toFixed(1)} s`;
  if (a < 120) return `${s.toFixed(0)} s`;
  if (a < 7200) return `${(s / 60).toFixed(1)} min`;
  if (a < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${fmt(s / 86400)} d`;
}
const iso = (t) => !isNum(t) ? "-" : new Date(t * 1000).toISOString().replace(/\.\d+Z$/, "Z");

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function legend(div, items) {
  div.replaceChildren();
  items.forEach(([name, color]) => {
    const s = el("span"); const sw = el("i");
    sw.style.background = color; s.append(sw, document.createTextNode(name));
    div.append(s);
  });
}

// -- canvas helpers -------------------------------------------------------------------------

// Size a canvas to its box's width (crisp on any pixel ratio); return the drawing context.
function setup(canvas, height, maxWidth) {
  const parent = canvas.parentElement;
  let avail = 960;
  if (parent) {
    const cs = getComputedStyle(parent);
    avail = parent.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  }
  const w = Math.max(280, Math.min(maxWidth || 4000, avail || 960));
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(height * dpr);
  canvas.style.width = `${w}px`; canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, height);
  ctx.font = "11px system-ui, sans-serif";
  return {ctx, w, h: height};
}

function niceStep(range, count) {
  const raw = Math.max(range, 1e-9) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
}

// The plot box with a y axis from 0 to a round number above max; returns y(v).
function yAxis(ctx, box, max, unit) {
  const step = niceStep(max > 0 ? max : 1, 4);
  const top = Math.max(step, Math.ceil((max > 0 ? max : 1) / step) * step);
  const y = (v) => box.b - ((box.b - box.t) * v) / top;
  ctx.textAlign = "right"; ctx.textBaseline = "middle"; ctx.lineWidth = 1;
  for (let v = 0; v <= top + step / 2; v += step) {
    ctx.strokeStyle = GRID; ctx.beginPath();
    ctx.moveTo(box.l, Math.round(y(v)) + 0.5); ctx.lineTo(box.r, Math.round(y(v)) + 0.5);
    ctx.stroke();
    ctx.fillStyle = AXIS; ctx.fillText(compact(v) + (unit || ""), box.l - 6, y(v));
  }
  return y;
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
                    21600, 43200, 86400, 172800, 604800];

// Time ticks (UTC) under the box for t0..t1 (epoch seconds); returns x(t).
function timeAxis(ctx, box, t0, t1) {
  const span = Math.max(t1 - t0, 1e-6);
  const x = (t) => box.l + ((box.r - box.l) * (t - t0)) / span;
  const fit = Math.max(2, Math.floor((box.r - box.l) / 90));
  const step = TIME_STEPS.find((s) => span / s <= fit) || TIME_STEPS[TIME_STEPS.length - 1];
  const label = (t) => {
    const s = iso(t);
    if (step >= 86400) return s.slice(0, 10);
    if (step >= 60) return (span > 86400 ? s.slice(5, 10) + " " : "") + s.slice(11, 16);
    return s.slice(11, 19);
  };
  ctx.fillStyle = AXIS; ctx.textAlign = "center"; ctx.textBaseline = "top";
  ctx.strokeStyle = AXIS;
  const right = ctx.canvas.width / (window.devicePixelRatio || 1);
  for (let t = Math.ceil(t0 / step) * step; t <= t1 + 1e-9; t += step) {
    const px = Math.round(x(t)) + 0.5, text = label(t);
    const half = ctx.measureText(text).width / 2;
    ctx.beginPath(); ctx.moveTo(px, box.b); ctx.lineTo(px, box.b + 4); ctx.stroke();
    ctx.fillText(text, Math.min(px, right - half - 1), box.b + 6);
  }
  ctx.strokeStyle = AXIS; ctx.beginPath();
  ctx.moveTo(box.l, box.b + 0.5); ctx.lineTo(box.r, box.b + 0.5); ctx.stroke();
  return x;
}

function emptyNote(ctx, box, text) {
  ctx.fillStyle = AXIS; ctx.textAlign = "center"; ctx.textBaseline = "middle";
  ctx.font = "13px system-ui, sans-serif";
  ctx.fillText(text, (box.l + box.r) / 2, (box.t + box.b) / 2);
  ctx.font = "11px system-ui, sans-serif";
}

// Line chart of series [{name, color, points: [[t, v], ...]}] over time; vertical dashed
// markers [{t, label}]. Returns the number of points drawn.
// With stacked, series share their times and are drawn as bands one above the other, so
// equal values (workers with the same load) never hide each other.
function lineChart(canvas, series, markers, height, stacked) {
  const {ctx, w, h} = setup(canvas, height || 230);
  const box = {l: 52, r: w - 14, t: 12, b: h - 24};
  const pts = series.flatMap((s) => s.points);
  const tops = stacked && series.length ? series[0].points.map((_, i) =>
    series.reduce((a, s) => a + ((s.points[i] || [0, 0])[1]), 0)) : [];
  const y = yAxis(ctx, box, Math.max(0, ...pts.map((p) => p[1]), ...tops));
  if (pts.length < 2) {
    emptyNote(ctx, box, "waiting for data");
    canvas._hover = null;
    return pts.length;
  }
  const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
  const x = timeAxis(ctx, box, t0, t1);
  ctx.setLineDash([4, 4]); ctx.strokeStyle = "#8a96a3"; ctx.fillStyle = "#8a96a3";
  ctx.textAlign = "left"; ctx.textBaseline = "top";
  (markers || []).filter((m) => m.t >= t0 && m.t <= t1).forEach((m) => {
    const px = Math.round(x(m.t)) + 0.5;
    ctx.beginPath(); ctx.moveTo(px, box.t); ctx.lineTo(px, box.b); ctx.stroke();
    ctx.fillText(m.label, px + 3, box.t);
  });
  ctx.setLineDash([]);
  ctx.lineWidth = 1.8; ctx.lineJoin = "round";
  if (stacked) {
    const below = series.length ? series[0].points.map(() => 0) : [];
    series.forEach((s) => {
      if (!s.points.length) return;
      const above = s.points.map(([, v], i) => below[i] + v);
      ctx.beginPath();
      s.points.forEach(([t], i) => (i ? ctx.lineTo(x(t), y(above[i])) : ctx.moveTo(x(t), y(above[i]))));
      for (let i = s.points.length - 1; i >= 0; i--) ctx.lineTo(x(s.points[i][0]), y(below[i]));
      ctx.closePath(); ctx.globalAlpha = 0.35; ctx.fillStyle = s.color; ctx.fill();
      ctx.globalAlpha = 1; ctx.strokeStyle = s.color; ctx.beginPath();
      s.points.forEach(([t], i) => (i ? ctx.lineTo(x(t), y(above[i])) : ctx.moveTo(x(t), y(above[i]))));
      ctx.stroke();
      above.forEach((v, i) => { below[i] = v; });
    });
  } else {
    series.forEach((s) => {
      if (!s.points.length) return;
      ctx.strokeStyle = s.color; ctx.beginPath();
      s.points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.stroke();
    });
  }
  canvas._hover = (mx) => {
    const t = t0 + ((mx - box.l) / (box.r - box.l)) * (t1 - t0);
    const lines = [];
    let at = null;
    series.forEach((s) => {
      if (!s.points.length) return;
      const p = s.points.reduce((a, b) => (Math.abs(b[0] - t) < Math.abs(a[0] - t) ? b : a));
      at = p[0]; lines.push(`${s.name}: ${fmt(p[1], 1)}`);
    });
    return at === null ? null : [iso(at).slice(11, 19) + " UTC", ...lines].join("\n");
  };
  return pts.length;
}

// Stacked bars, one per period: starts[i] (epoch s), width (s), stacks [{name, color,
// values}]. Returns the number of bars drawn.
function stackedBars(canvas, starts, width, stacks, height, marks, none) {
  const {ctx, w, h} = setup(canvas, height || 250);
  const box = {l: 52, r: w - 14, t: 12, b: h - 24};
  const totals = starts.map((_, i) => stacks.reduce((a, s) => a + s.values[i], 0));
  const y = yAxis(ctx, box, Math.max(0, ...totals));
  if (!starts.length) {
    emptyNote(ctx, box, none || "no window has closed yet");
    canvas._hover = null;
    return 0;
  }
  const t0 = starts[0], t1 = starts[starts.length - 1] + width;
  const x = timeAxis(ctx, box, t0, t1);
  const bw = Math.max(1, x(t0 + width) - x(t0) - (starts.length > 60 ? 0.5 : 2));
  starts.forEach((t, i) => {
    let acc = 0;
    stacks.forEach((s) => {
      const v = s.values[i];
      if (!v) return;
      ctx.fillStyle = s.color;
      ctx.fillRect(x(t) + 0.5, y(acc + v), bw, y(acc) - y(acc + v));
      acc += v;
    });
    const found = marks && marks.get(t);
    if (found) {  // anomalies of this period: a red mark above the bar
      const cx = x(t) + 0.5 + bw / 2, top = y(totals[i]) - 3;
      ctx.fillStyle = ANOMALY; ctx.beginPath();
      ctx.moveTo(cx - 5, top - 8); ctx.lineTo(cx + 5, top - 8); ctx.lineTo(cx, top);
      ctx.closePath(); ctx.fill();
    }
  });
  canvas._hover = (mx) => {
    const i = starts.findIndex((t) => mx >= x(t) && mx <= x(t + width));
    if (i < 0) return null;
    const rows = stacks.filter((s) => s.values[i]).map((s) => `${s.name}: ${fmt(s.values[i])}`);
    const found = (marks && marks.get(starts[i])) || [];
    return [`${iso(starts[i])} (+${human(width)})`, `total: ${fmt(totals[i])}`, ...rows,
            ...found.map((a) => `ANOMALY ${a}`)].join("\n");
  };
  return starts.length;
}

// Bars over categories (labels) with one value each.
function barChart(canvas, labels, values, colors, unit, height, none) {
  const {ctx, w, h} = setup(canvas, height || 150);
  const box = {l: 52, r: w - 14, t: 12, b: h - 24};
  const y = yAxis(ctx, box, Math.max(0, ...values), unit);
  if (!values.length) {
    emptyNote(ctx, box, none || "none yet");
    canvas._hover = null;
    return 0;
  }
  const slot = (box.r - box.l) / values.length;
  const bw = Math.max(1, Math.min(60, slot * 0.7));
  const every = Math.ceil(values.length / Math.max(1, Math.floor((box.r - box.l) / 50)));
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  values.forEach((v, i) => {
    const cx = box.l + slot * (i + 0.5);
    ctx.fillStyle = colors[i % colors.length];
    ctx.fillRect(cx - bw / 2, y(v), bw, box.b - y(v));
    if (i % every === 0) { ctx.fillStyle = AXIS; ctx.fillText(labels[i], cx, box.b + 6); }
  });
  ctx.strokeStyle = AXIS; ctx.beginPath();
  ctx.moveTo(box.l, box.b + 0.5); ctx.lineTo(box.r, box.b + 0.5); ctx.stroke();
  canvas._hover = (mx) => {
    const i = Math.floor((mx - box.l) / slot);
    return i >= 0 && i < values.length ? `${labels[i]}: ${fmt(values[i], 3)}${unit || ""}` : null;
  };
  return values.length;
}

// -- heatmaps ---------------------------------------------------------------------------------

const HEAT = [[255, 247, 188], [254, 196, 79], [254, 153, 41], [236, 112, 20], [204, 76, 2],
              [140, 45, 4], [80, 20, 40]];
function heatColor(f, alpha) {
  const p = Math.max(0, Math.min(1, f)) * (HEAT.length - 1);
  const i = Math.min(HEAT.length - 2, Math.floor(p)), r = p - i;
  const c = HEAT[i].map((v, k) => Math.round(v + (HEAT[i + 1][k] - v) * r));
  return `rgba(${c[0]},${c[1]},${c[2]},${alpha === undefined ? 1 : alpha})`;
}

function heatLegend(ctx, x, y, w, max, label) {
  for (let i = 0; i < w; i++) {
    ctx.fillStyle = heatColor(i / (w - 1));
    ctx.fillRect(x + i, y, 1, 10);
  }
  ctx.strokeStyle = "#aab4bf"; ctx.strokeRect(x + 0.5, y + 0.5, w - 1, 9);
  ctx.fillStyle = AXIS; ctx.textBaseline = "top";
  ctx.textAlign = "left"; ctx.fillText("0", x, y + 13);
  ctx.textAlign = "right"; ctx.fillText(compact(max), x + w, y + 13);
  ctx.textAlign = "left"; ctx.fillText(label, x + w + 10, y);
}

// The spec's GeoMatrix is (360, 180) indexed [lat + 90, lon + 180]; any 2-D matrix named
// geo-something, or of that shape, is drawn the same way as a world map.
function isGeo(m) {
  const [r, c] = m.shape;
  return m.shape.length === 2 && (/geo/i.test(m.id) || (r === 360 && c === 180));
}

function worldMap(canvas, m) {
  const {ctx, w, h} = setup(canvas, 0, 1080);
  const mapW = w - 34 - 26, mapH = mapW / 2;
  const height = Math.round(mapH + 60);
  const dpr = window.devicePixelRatio || 1;
  canvas.height = Math.round(height * dpr); canvas.style.height = `${height}px`;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.font = "11px system-ui, sans-serif";
  const L = 34, T = 8, k = mapW / 360;
  const X = (lon) => L + (lon + 180) * k, Y = (lat) => T + (90 - lat) * k;
  const land = new Path2D();
  (typeof WORLD_LAND === "undefined" ? [] : WORLD_LAND).forEach((ring) => {
    let lon = ring[0], lat = ring[1];
    land.moveTo(X(lon / 2), Y(lat / 2));
    for (let i = 2; i < ring.length; i += 2) {
      lon += ring[i]; lat += ring[i + 1];
      land.lineTo(X(lon / 2), Y(lat / 2));
    }
    land.closePath();
  });
  ctx.fillStyle = "#eef4f9"; ctx.fillRect(L, T, mapW, mapH);
  ctx.fillStyle = "#dfe3e0"; ctx.fill(land, "evenodd");
  // Counts, block x block degrees per cell.
  const b = m.block, max = Math.max(1e-9, m.max);
  let cells = 0, off = 0;
  m.data.forEach((row, r) => row.forEach((v, c) => {
    if (!v) return;
    const lat0 = r * b - 90, lon0 = c * b - 180;
    if (lat0 >= 90 || lon0 >= 180) { off += v; return; }
    cells += 1;
    ctx.fillStyle = heatColor(Math.sqrt(v / max), 0.85);
    ctx.fillRect(X(lon0), Y(Math.min(90, lat0 + b)), b * k + 0.3,
                 (Math.min(90, lat0 + b) - lat0) * k + 0.3);
  }));
  // Where the matrix has no cells: shaded.
  const lonEnd = m.shape[1] - 180, latEnd = m.shape[0] - 90;
  ctx.fillStyle = "rgba(120, 130, 140, 0.18)";
  if (lonEnd < 180) ctx.fillRect(X(Math.max(-180, lonEnd)), T, X(180) - X(Math.max(-180, lonEnd)), mapH);
  if (latEnd < 90) ctx.fillRect(L, T, mapW, Y(Math.max(-90, latEnd)) - T);
  ctx.strokeStyle = "rgba(40, 52, 64, 0.75)"; ctx.lineWidth = 0.8; ctx.stroke(land);
  // Graticule every 30 degrees, labels outside the map.
  ctx.strokeStyle = "rgba(90, 107, 125, 0.25)"; ctx.lineWidth = 1; ctx.setLineDash([3, 3]);
  ctx.fillStyle = AXIS;
  for (let lon = -180; lon <= 180; lon += 30) {
    ctx.beginPath(); ctx.moveTo(Math.round(X(lon)) + 0.5, T); ctx.lineTo(Math.round(X(lon)) + 0.5, T + mapH); ctx.stroke();
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    ctx.fillText(lon === 0 ? "0°" : `${Math.abs(lon)}°${lon < 0 ? "W" : "E"}`, X(lon), T + mapH + 4);
  }
  for (let lat = -90; lat <= 90; lat += 30) {
    ctx.beginPath(); ctx.moveTo(L, Math.round(Y(lat)) + 0.5); ctx.lineTo(L + mapW, Math.round(Y(lat)) + 0.5); ctx.stroke();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText(lat === 0 ? "0°" : `${Math.abs(lat)}°${lat < 0 ? "S" : "N"}`, L - 4, Y(lat));
  }
  ctx.setLineDash([]);
  ctx.strokeStyle = "#aab4bf"; ctx.strokeRect(L + 0.5, T + 0.5, mapW - 1, mapH - 1);
  if (lonEnd < 180) {
    ctx.fillStyle = "#4a5866"; ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    ctx.fillText(`outside the matrix: longitude ≥ ${lonEnd}°`, (X(Math.max(-180, lonEnd)) + X(180)) / 2, T + mapH - 6);
  }
  heatLegend(ctx, L, T + mapH + 24, 200, m.max,
             `events per ${b}°×${b}° cell (sqrt scale)` + (off ? `; ${fmt(off)} off the map` : ""));
  canvas._hover = (mx, my) => {
    const lon = (mx - L) / k - 180, lat = 90 - (my - T) / k;
    if (lon < -180 || lon >= 180 || lat < -90 || lat > 90) return null;
    const r = Math.floor((lat + 90) / b), c = Math.floor((lon + 180) / b);
    const v = m.data[r] && m.data[r][c];
    const cell = `lat ${r * b - 90}..${r * b - 90 + b}, lon ${c * b - 180}..${c * b - 180 + b}`;
    return v === undefined ? `${cell}\noutside the matrix` : `${cell}\n${fmt(v)} events`;
  };
  return cells;
}

// Any other 2-D matrix: rows down, columns across.
function heatmap(canvas, m) {
  const rows = m.data.length, cols = rows ? m.data[0].length : 0;
  const maxW = 760, maxH = 420;
  const cell = Math.max(0.5, Math.min(maxW / Math.max(1, cols), maxH / Math.max(1, rows), 24));
  const mapW = cols * cell, mapH = rows * cell;
  const {ctx} = setup(canvas, Math.round(mapH + 56), Math.round(mapW + 200));
  const L = 44, T = 6, max = Math.max(1e-9, m.max);
  ctx.fillStyle = "#fbfcfd"; ctx.fillRect(L, T, mapW, mapH);
  let cells = 0;
  m.data.forEach((row, r) => row.forEach((v, c) => {
    if (!v) return;
    cells += 1;
    ctx.fillStyle = heatColor(Math.sqrt(Math.abs(v) / max));
    ctx.fillRect(L + c * cell, T + r * cell, cell + 0.3, cell + 0.3);
  }));
  ctx.strokeStyle = "#aab4bf"; ctx.strokeRect(L + 0.5, T + 0.5, mapW - 1, mapH - 1);
  ctx.fillStyle = AXIS; ctx.textAlign = "right"; ctx.textBaseline = "top";
  ctx.fillText("0", L - 4, T); ctx.textBaseline = "bottom";
  ctx.fillText(String(m.shape[0]), L - 4, T + mapH);
  ctx.textAlign = "left"; ctx.textBaseline = "top"; ctx.fillText("0", L, T + mapH + 3);
  ctx.textAlign = "right"; ctx.fillText(String(m.shape.slice(1).reduce((a, b) => a * b, 1)), L + mapW, T + mapH + 3);
  heatLegend(ctx, L, T + mapH + 22, 160, m.max,
             `per ${m.block}×${m.block} block (sqrt scale); rows down, columns across`);
  canvas._hover = (mx, my) => {
    const r = Math.floor((my - T) / cell), c = Math.floor((mx - L) / cell);
    if (r < 0 || c < 0 || r >= rows || c >= cols) return null;
    return `rows ${r * m.block}..${(r + 1) * m.block - 1}, cols ${c * m.block}..${(c + 1) * m.block - 1}\n${fmt(m.data[r][c], 3)}`;
  };
  return cells;
}

// -- the page ----------------------------------------------------------------------------------

let last = null;
let live = false;
const polled = []; // [t, open sessions per worker] from live polls, when history lacks them

function cards(s) {
  const cp = s.checkpoint || {};
  const lag = Object.values(s.kafka_lag || {});
  const open = s.workers.reduce((a, w) => a + (w.open_sessions || 0), 0);
  const list = [
    ["events read", fmt(s.records_read)],
    ["events/s", fmt(s.events_per_s)],
    ["watermark (UTC)", iso(s.watermark).replace("T", " ").replace("Z", ""), null, false, "wide"],
    ["watermark lag", human(s.watermark_lag_s), s.event_time ? "behind the wall clock (event time)" : "behind the wall clock"],
    ["processed", fmt((s.ledger || {}).processed),
     s.ledger ? `read ${fmt(s.ledger.read)} = processed + late ${fmt(s.ledger.late)} + dead ${fmt(s.ledger.dead)}` +
       (s.ledger.in_flight ? ` + in flight ${fmt(s.ledger.in_flight)}` : "") +
       (s.ledger.held ? ` + held ${fmt(s.ledger.held)}` : "") +
       (s.ledger.unaccounted ? ` + UNACCOUNTED ${fmt(s.ledger.unaccounted)}` : "") : null,
     !!(s.ledger && s.ledger.unaccounted)],
    ["dead letters", fmt(s.dead_letters), null, s.dead_letters > 0],
    ["late events", fmt(s.late_events), null, s.late_events > 0],
    ["window rows", fmt(s.window_rows)],
    ["open sessions", fmt(open)],
    ["sessions ended", fmt(s.sessions_ended)],
    ["last checkpoint", cp.last_id === null || cp.last_id === undefined ?
      (cp.enabled === false ? "off" : "-") : `#${cp.last_id}, ${human(cp.age_s)} ago`,
     cp.duration_s !== null && cp.duration_s !== undefined ? `took ${cp.duration_s} s` : null],
    ["restarts", fmt(s.restarts), null, s.restarts > 0],
  ];
  if (lag.length) list.push(["Kafka lag", fmt(lag.reduce((a, b) => a + b, 0))]);
  const jumps = s.time_jumps || {};
  if (jumps.held || jumps.released || jumps.refused)
    list.push(["far-ahead times", `${fmt(jumps.held)} held`,
               `released ${fmt(jumps.released)}, refused ${fmt(jumps.refused)} (max_time_jump)`,
               jumps.held > 0 || jumps.refused > 0]);
  const warnings = s.warnings || [];
  if (warnings.length) {
    const w = warnings[warnings.length - 1];
    list.push([`warning, ${iso(w.time).slice(11, 19)} UTC`, w.message, w.message, true, "wide"]);
  }
  const div = document.getElementById("cards"); div.replaceChildren();
  list.forEach(([k, v, title, warn, wide]) => {
    const c = el("div", {class: "card" + (warn ? " warn" : "") + (wide ? " wide" : "")});
    if (title) c.title = title;
    c.append(el("b", {}, v), el("span", {}, k));
    div.append(c);
  });
}

function throughput(s) {
  // Workers report their counts when they ack, about once a tick, so a rate over one
  // 1-second sample jumps between 0 and twice the truth: average over SPAN seconds.
  const hist = s.history || [];
  const series = s.workers.map((w, j) => ({name: `worker ${w.worker}`, color: COLORS[j % COLORS.length], points: []}));
  let k = 0;
  for (let i = 1; i < hist.length; i++) {
    while (k < i - 1 && hist[i].t - hist[k + 1].t >= SPAN) k++;
    const dt = hist[i].t - hist[k].t;
    if (!(dt > 0)) continue;
    series.forEach((ser, j) => ser.points.push(
      [hist[i].t, Math.max(0, (hist[i].workers[j] - hist[k].workers[j]) / dt)]));
  }
  const markers = (s.checkpoints || []).map((c) => ({t: c.at, label: `#${c.id}`}));
  const canvas = document.getElementById("throughput");
  canvas.dataset.points = String(lineChart(canvas, series, markers));
  legend(document.getElementById("throughput-legend"), series.map((x) => [x.name, x.color]));
}

function workersTable(s) {
  const total = s.workers.reduce((a, w) => a + w.events_out, 0);
  const tbody = document.querySelector("#workers tbody"); tbody.replaceChildren();
  s.workers.forEach((w) => {
    const tr = el("tr");
    [w.state === "stalled" ? `${w.worker} (stalled: silent ${human(w.silent_s)})` : w.worker,
     `${w.key_groups[0]}-${w.key_groups[1]}`, fmt(w.events_in), fmt(w.events_out),
     total ? `${(100 * w.events_out / total).toFixed(1)} %` : "-", fmt(w.events_per_s),
     fmt(w.queue_depth), fmt(w.open_sessions)].forEach((v) => tr.append(el("td", {}, String(v))));
    tbody.append(tr);
  });
}

function sessions(s) {
  const canvas = document.getElementById("sessions");
  const note = document.getElementById("sessions-note");
  const hist = (s.history || []).filter((h) => Array.isArray(h.open_sessions));
  const points = hist.length >= 2 ? hist.map((h) => [h.t, h.open_sessions]) : polled;
  const colors = s.workers.map((_, j) => COLORS[j % COLORS.length]);
  let n;
  if (points.length >= 2) {
    const series = s.workers.map((w, j) => ({name: `worker ${w.worker}`, color: colors[j],
                                             points: points.map(([t, v]) => [t, v[j] || 0])}));
    n = lineChart(canvas, series, [], 170, true);
    note.textContent = hist.length >= 2 ? "over time" : "over time, since this page was opened";
  } else if (s.state !== "running" && s.workers.every((w) => !w.open_sessions)) {
    n = 0; // a finished run has ended every session: nothing to draw
    note.textContent = `none open at the end of the run (${fmt(s.sessions_ended)} sessions ended)`;
  } else {
    n = barChart(canvas, s.workers.map((w) => `worker ${w.worker}`),
                 s.workers.map((w) => w.open_sessions || 0), colors, "", 150);
    note.textContent = s.state === "running" ? "now" :
      `at the end of the run (${fmt(s.sessions_ended)} sessions ended)`;
  }
  canvas.hidden = n === 0 && points.length < 2 && s.state !== "running";
  canvas.dataset.points = String(n);
  legend(document.getElementById("sessions-legend"),
         s.workers.map((w, j) => [`worker ${w.worker}: ${fmt(w.open_sessions)}`, colors[j]]));
}

function windows(s) {
  const root = document.getElementById("windows"); root.replaceChildren();
  for (const [aid, periods] of Object.entries(s.windows || {})) {
    const sec = el("section", {class: "panel"});
    const newest = periods[periods.length - 1];
    const h2 = el("h2", {}, `Merged windows: ${aid} `);
    h2.append(el("small", {}, `counts per period, top ${TOP_KEYS} keys stacked` +
      (newest ? `; last period ${iso(newest.window_start)}: ${fmt(newest.total)} in ${fmt(newest.keys)} keys` : "")));
    const canvas = el("canvas", {class: "chart window-chart", "data-analyzer": aid});
    const leg = el("div", {class: "legend"});
    sec.append(h2, canvas, leg);
    root.append(sec);
    // The keys with the largest counts over the periods shown.
    const sums = new Map();
    periods.forEach((p) => p.top.forEach(([k, v]) => sums.set(k, (sums.get(k) || 0) + v)));
    const keys = [...sums.entries()].sort((a, b) => b[1] - a[1]).slice(0, TOP_KEYS).map((e) => e[0]);
    const stacks = keys.map((k, i) => ({name: k, color: COLORS[i % COLORS.length],
      values: periods.map((p) => { const f = p.top.find((x) => x[0] === k); return f ? f[1] : 0; })}));
    const other = periods.map((p, i) => Math.max(0, p.total - stacks.reduce((a, st) => a + st.values[i], 0)));
    if (other.some((v) => v > 0)) stacks.push({name: "other keys", color: OTHER, values: other});
    const starts = periods.map((p) => p.window_start);
    let width = Infinity;
    for (let i = 1; i < starts.length; i++) width = Math.min(width, starts[i] - starts[i - 1]);
    if (!isNum(width) || width <= 0) width = 60;
    const marks = new Map();
    (s.recent_anomalies || []).filter((a) => a.analyzer === aid && a.window_start !== undefined)
      .forEach((a) => {
        const list = marks.get(a.window_start) || [];
        list.push(`${a.key}: ${fmt(a.count)} (mean ${fmt(a.mean, 1)}, score ${fmt(a.score, 1)})`);
        marks.set(a.window_start, list);
      });
    canvas.dataset.anomalies = String(marks.size);
    const none = s.state === "running" || s.state === "starting" ? null :
      "no window rows: this analyzer counted nothing in the whole run";
    canvas.dataset.points = String(stackedBars(canvas, starts, width, stacks, 250, marks, none));
    legend(leg, stacks.map((st) => [`${st.name} (${compact(st.values.reduce((a, b) => a + b, 0))})`, st.color]));
  }
}

function anomalies(s) {
  const root = document.getElementById("anomalies");
  const rows = (s.recent_anomalies || []).slice().reverse();
  root.hidden = !rows.length && !Object.keys(s.anomalies || {}).length;
  const counts = Object.entries(s.anomalies || {}).map(([k, v]) => `${k}: ${fmt(v)}`).join(", ");
  document.getElementById("anomalies-note").textContent = counts ? `found so far: ${counts}` : "";
  const tbody = document.querySelector("#anomaly-table tbody"); tbody.replaceChildren();
  rows.slice(0, 20).forEach((a) => {
    const when = a.window_start !== undefined ? a.window_start : a.event_time;
    const tr = el("tr");
    [a.analyzer, iso(when).replace("T", " ").replace("Z", ""), String(a.key),
     fmt(a.count !== undefined ? a.count : a.value, 3), fmt(a.mean, 2), fmt(a.std, 2),
     fmt(a.score, 2)].forEach((v) => tr.append(el("td", {}, String(v))));
    tbody.append(tr);
  });
}

function matrices(s) {
  const root = document.getElementById("matrices"); root.replaceChildren();
  (s.matrices || []).forEach((m) => {
    const sec = el("section", {class: "panel"});
    const geo = isGeo(m) && m.data.length > 0;
    const h2 = el("h2", {}, `Matrix ${m.id} `);
    h2.append(el("small", {}, `${m.shape.join("×")}, sum ${fmt(m.sum)}` +
      (geo ? ", indexed [lat + 90, lon + 180], drawn as a world map" : "") +
      (m.block > 1 ? `, ${m.block}×${m.block} cells per block` : "")));
    sec.append(h2);
    root.append(sec);
    const canvas = el("canvas", {class: "heatmap", "data-matrix": m.id, "data-kind": geo ? "geo" : "grid"});
    canvas.dataset.sum = String(m.sum);
    if (!m.data.length || m.shape.length < 2 || !(m.max > 0) && !geo) {
      canvas.dataset.cells = "0";
      sec.append(canvas, el("p", {class: "note"}, m.sum === 0 ? "all cells are zero so far" : "not a 2-D matrix"));
      canvas.hidden = true;
      return;
    }
    sec.append(canvas);
    canvas.dataset.cells = String(geo ? worldMap(canvas, m) : heatmap(canvas, m));
  });
}

function checkpoints(s) {
  const list = s.checkpoints || [];
  const canvas = document.getElementById("checkpoint-chart");
  const n = barChart(canvas, list.map((c) => `#${c.id}`), list.map((c) => c.duration_s),
                     ["#5b8fc9"], " s", 130,
                     s.state === "running" ? "none yet" : "no checkpoint was taken");
  canvas.dataset.points = String(n);
  const cp = s.checkpoint || {};
  document.getElementById("checkpoints-note").textContent = cp.enabled === false ?
    "off in this config" : `duration of each, ${fmt(cp.taken)} taken by this process`;
  const tbody = document.querySelector("#checkpoints tbody"); tbody.replaceChildren();
  list.slice().reverse().forEach((c) => {
    const tr = el("tr");
    [c.id, iso(c.at).replace("T", " "), fmt(c.duration_s, 3), fmt(c.stall_s, 3),
     fmt(c.worker_write_s, 3), fmt(c.bytes / 1e6, 1)]
      .forEach((v) => tr.append(el("td", {}, String(v))));
    tbody.append(tr);
  });
}

function kafka(s) {
  const lag = Object.entries(s.kafka_lag || {}).sort();
  document.getElementById("kafka").hidden = !lag.length;
  const tbody = document.querySelector("#kafka-lag tbody"); tbody.replaceChildren();
  lag.forEach(([k, v]) => { const tr = el("tr"); tr.append(el("td", {}, k), el("td", {}, fmt(v))); tbody.append(tr); });
}

function render(s) {
  last = s;
  document.title = `${s.pipeline} ${s.state} - bspump-cluster`;
  document.getElementById("pipeline").textContent = s.pipeline;
  const state = document.getElementById("state");
  state.textContent = s.state; state.className = "state " + s.state;
  document.getElementById("mode").textContent = live ?
    `live, updated every ${POLL_MS / 1000} s` : `report: figures at ${iso(s.time).replace("T", " ")}`;
  cards(s);
  throughput(s);
  workersTable(s);
  sessions(s);
  windows(s);
  anomalies(s);
  matrices(s);
  checkpoints(s);
  kafka(s);
  document.getElementById("footer").textContent =
    `run ${s.run_id}, ${s.workers.length} workers, up ${human(s.uptime_s)}, snapshot ${iso(s.time)}`;
}

// A tooltip for every canvas that set _hover(x, y).
document.addEventListener("mousemove", (e) => {
  const tip = document.getElementById("tip");
  const c = e.target;
  const text = c instanceof HTMLCanvasElement && c._hover ?
    c._hover(e.offsetX, e.offsetY) : null;
  if (!text) { tip.hidden = true; return; }
  tip.textContent = text; tip.hidden = false;
  tip.style.left = `${e.clientX + 14}px`; tip.style.top = `${e.clientY + 12}px`;
});

let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => last && render(last), 150);
});

function embedded() {
  try {
    return JSON.parse(document.getElementById("snapshot").textContent);
  } catch (e) {
    return null; // the page as served: no snapshot built in
  }
}

const built = embedded();
if (built) {
  render(built);
} else {
  live = true;
  const poll = () => fetch("/api/snapshot", {cache: "no-store"})
    .then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.json(); })
    .then((s) => {
      polled.push([s.time, s.workers.map((w) => w.open_sessions || 0)]);
      if (polled.length > 600) polled.shift();
      render(s);
    })
    .catch(() => {
      const st = document.getElementById("state");
      st.textContent = "disconnected"; st.className = "state disconnected";
      document.getElementById("mode").textContent =
        "the coordinator does not answer (the run may have ended: see report.html)";
    })
    .finally(() => setTimeout(poll, POLL_MS));
  poll();
}
