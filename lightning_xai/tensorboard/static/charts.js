// Small SVG charts for the XAI tab: lines over evaluations with a marker, signed bars, deletion/insertion curves.

import { fmt } from "./colormap.js";

const SVG = "http://www.w3.org/2000/svg";
export const PALETTE = [
  "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
];

function el(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

/**
 * Lines over evaluations. series: [{name, values: [number|null per evaluation], color, dash?}]; x: the steps.
 * A series with ``dash`` (an SVG dash pattern) is a reference (a baseline map's score), drawn dashed.
 * marker: the index of the evaluation shown. Returns an <svg> with a title, axes labels and a legend.
 */
export function lineChart({ title, x, series, marker, width = 360, height = 180 }) {
  const svg = el("svg", { width, height: height + 18 * Math.ceil(series.length / 3), class: "chart" });
  const pad = { left: 46, right: 10, top: 20, bottom: 24 };
  el("text", { x: pad.left, y: 13, class: "chart-title" }, svg).textContent = title;
  const values = series.flatMap((s) => s.values.filter((v) => v !== null && Number.isFinite(v)));
  if (!values.length || !x.length) {
    el("text", { x: pad.left, y: height / 2, class: "chart-empty" }, svg).textContent = "no values";
    return svg;
  }
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (low === high) {
    low -= 0.5;
    high += 0.5;
  }
  const x0 = Math.min(...x);
  const x1 = Math.max(...x) === x0 ? x0 + 1 : Math.max(...x);
  const px = (v) => pad.left + ((v - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const py = (v) => pad.top + (1 - (v - low) / (high - low)) * (height - pad.top - pad.bottom);
  el("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom, class: "axis" }, svg);
  el("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom, class: "axis" }, svg);
  for (const v of [low, high]) {
    el("text", { x: pad.left - 4, y: py(v) + 4, class: "tick", "text-anchor": "end" }, svg).textContent = fmt(v);
  }
  el("text", { x: pad.left, y: height - 6, class: "tick" }, svg).textContent = `step ${x0}`;
  el("text", { x: width - pad.right, y: height - 6, class: "tick", "text-anchor": "end" }, svg).textContent =
    `step ${Math.max(...x)}`;
  if (marker !== null && marker !== undefined && x[marker] !== undefined) {
    el("line", { x1: px(x[marker]), x2: px(x[marker]), y1: pad.top, y2: height - pad.bottom, class: "marker" }, svg);
  }
  series.forEach((s, k) => {
    const points = s.values
      .map((v, i) => (v === null || !Number.isFinite(v) ? null : `${px(x[i]).toFixed(1)},${py(v).toFixed(1)}`))
      .filter((p) => p !== null);
    const line = { points: points.join(" "), fill: "none", stroke: s.color, "stroke-width": 2 };
    if (s.dash) Object.assign(line, { "stroke-dasharray": s.dash, class: "baseline", "data-name": s.name });
    el("polyline", line, svg);
    if (marker !== null && marker !== undefined && Number.isFinite(s.values[marker])) {
      el("circle", { cx: px(x[marker]), cy: py(s.values[marker]), r: 3.5, fill: s.color }, svg);
    }
    const lx = pad.left + (k % 3) * 105;
    const ly = height + 4 + 18 * Math.floor(k / 3);
    if (s.dash) el("line", { x1: lx, x2: lx + 10, y1: ly + 5, y2: ly + 5, stroke: s.color, "stroke-width": 2, "stroke-dasharray": "3 2" }, svg);
    else el("rect", { x: lx, y: ly, width: 10, height: 10, fill: s.color }, svg);
    el("text", { x: lx + 14, y: ly + 9, class: "legend" }, svg).textContent = s.name;
  });
  return svg;
}

/** Horizontal bars of signed values, largest |value| first: red positive, blue negative. */
export function barChart({ title, names, values, topK = 10, width = 360 }) {
  const order = names.map((_, i) => i).sort((a, b) => Math.abs(values[b]) - Math.abs(values[a])).slice(0, topK);
  const row = 18;
  const height = 24 + row * order.length + 20;
  const svg = el("svg", { width, height, class: "chart bars" });
  el("text", { x: 4, y: 13, class: "chart-title" }, svg).textContent = title;
  const labelWidth = 120;
  const top = Math.max(1e-12, ...order.map((i) => Math.abs(values[i])));
  const mid = labelWidth + (width - labelWidth - 50) / 2;
  const half = (width - labelWidth - 50) / 2;
  el("line", { x1: mid, x2: mid, y1: 20, y2: 24 + row * order.length, class: "axis" }, svg);
  order.forEach((i, k) => {
    const y = 24 + row * k;
    const v = values[i];
    const w = (Math.abs(v) / top) * half;
    el("text", { x: labelWidth - 6, y: y + 12, class: "tick", "text-anchor": "end" }, svg).textContent = names[i];
    el("rect", { x: v >= 0 ? mid : mid - w, y: y + 2, width: Math.max(w, 0.5), height: row - 5,
                 fill: v >= 0 ? "#c0392b" : "#2166ac" }, svg);  // prettier-ignore
    el("text", { x: width - 4, y: y + 12, class: "tick", "text-anchor": "end" }, svg).textContent = fmt(v);
  });
  const ly = 24 + row * order.length + 14;
  el("rect", { x: labelWidth, y: ly - 9, width: 10, height: 10, fill: "#c0392b" }, svg);
  el("text", { x: labelWidth + 14, y: ly, class: "legend" }, svg).textContent = "positive (for the target)";
  el("rect", { x: labelWidth + 170, y: ly - 9, width: 10, height: 10, fill: "#2166ac" }, svg);
  el("text", { x: labelWidth + 184, y: ly, class: "legend" }, svg).textContent = "negative";
  return svg;
}

/**
 * Curves over the fraction of positions removed or inserted (x from 0 to 1, point k of n + 1 at k / n), the model's
 * score on y (at least 0 to 1). series: [{name, values: [number|null per point], color, dash?, data?}]; a series'
 * ``data`` become data-* attributes of its line. Returns an <svg> with a title, labelled axes and a legend in
 * ``columns`` columns.
 */
export function curveChart({ title, xLabel, series, yLabel = "model score (target p)", columns = 2, width = 380 }) {
  const height = 200;
  const rows = Math.ceil(series.length / columns);
  const svg = el("svg", { width, height: height + 18 * rows, class: "chart curve-chart" });
  const pad = { left: 52, right: 12, top: 20, bottom: 36 };
  el("text", { x: 4, y: 13, class: "chart-title" }, svg).textContent = title;
  const values = series.flatMap((s) => s.values.filter((v) => v !== null && Number.isFinite(v)));
  const low = Math.min(0, ...values);
  const high = Math.max(1, ...values);
  const px = (t) => pad.left + t * (width - pad.left - pad.right);
  const py = (v) => pad.top + (1 - (v - low) / (high - low)) * (height - pad.top - pad.bottom);
  const bottom = height - pad.bottom;
  el("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: bottom, class: "axis" }, svg);
  el("line", { x1: pad.left, x2: width - pad.right, y1: bottom, y2: bottom, class: "axis" }, svg);
  for (const v of [low, (low + high) / 2, high]) {
    el("text", { x: pad.left - 4, y: py(v) + 4, class: "tick", "text-anchor": "end" }, svg).textContent = fmt(v);
  }
  for (const t of [0, 0.5, 1]) {
    el("text", { x: px(t), y: bottom + 13, class: "tick", "text-anchor": "middle" }, svg).textContent = String(t);
  }
  el("text", { x: px(0.5), y: bottom + 28, class: "axis-label", "text-anchor": "middle" }, svg).textContent = xLabel;
  const middle = (pad.top + bottom) / 2;
  el("text", { x: 12, y: middle, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 12 ${middle})` },
    svg).textContent = yLabel;  // prettier-ignore
  if (!values.length) {
    el("text", { x: pad.left + 8, y: middle, class: "chart-empty" }, svg).textContent = "no values";
  }
  series.forEach((s, k) => {
    const n = Math.max(1, s.values.length - 1);
    const points = s.values
      .map((v, j) => (v === null || !Number.isFinite(v) ? null : `${px(j / n).toFixed(1)},${py(v).toFixed(1)}`))
      .filter((p) => p !== null);
    const line = { points: points.join(" "), fill: "none", stroke: s.color, "stroke-width": 2, class: "curve" };
    if (s.dash) line["stroke-dasharray"] = s.dash;
    for (const [key, value] of Object.entries(s.data || {})) line[`data-${key}`] = value;
    el("polyline", line, svg);
    const lx = 8 + (k % columns) * ((width - 8) / columns);
    const ly = height + 4 + 18 * Math.floor(k / columns);
    const key = { x1: lx, x2: lx + 14, y1: ly + 5, y2: ly + 5, stroke: s.color, "stroke-width": 2 };
    el("line", s.dash ? { ...key, "stroke-dasharray": s.dash } : key, svg);
    el("text", { x: lx + 18, y: ly + 9, class: "legend" }, svg).textContent = s.name;
  });
  return svg;
}
