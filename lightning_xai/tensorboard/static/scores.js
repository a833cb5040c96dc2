// The XAI tab's score charts: one probe sample's deletion and insertion curves and its scores over evaluations, and
// the probe's means with the baselines.

import { PALETTE, curveChart, lineChart } from "./charts.js";
import { decodeHalf, fmt } from "./colormap.js";

/** The reference maps of AttributionMonitor(baselines=True), drawn dashed. */
const BASELINE_STYLE = { baseline_random: "#757575", baseline_edges: "#000000" };

/** Where a score is undefined it is null; a record of an older format has no field at all. */
const valueAt = (table, tag, metric, i = null) => {
  const per = table && table[tag];
  if (!per || !(metric in per)) return null;
  return i === null ? per[metric] : per[metric][i];
};

function named(chart, metric) {
  chart.dataset.metric = metric;
  return chart;
}

/**
 * Sample i's own scores (each metric, and stability) over every evaluation: a line per explainer of the shown
 * evaluation, the shown evaluation (index) marked. Returns the charts (none without per-sample scores).
 */
export function sampleScoreCharts(records, record, index, i) {
  const x = records.map((r) => r.step);
  const tags = record.maps.map((m) => m.tag);
  const metrics = [...new Set(records.flatMap((r) => Object.values(r.samples || {}).flatMap(Object.keys)))].sort();
  return metrics.map((metric) => {
    const series = tags.map((tag, k) => ({
      name: tag,
      color: PALETTE[k % PALETTE.length],
      values: records.map((r) => valueAt(r.samples, tag, metric, i)),
    }));
    return named(lineChart({ title: `${metric} of sample ${i}`, x, series, marker: index }), metric);
  });
}

/**
 * The probe's mean scores over evaluations, a line per explainer and a dashed one per baseline map, the shown
 * evaluation marked; then the shown evaluation's mean deletion and insertion curves.
 */
export function probeScoreCharts(records, record, index) {
  const x = records.map((r) => r.step);
  const tags = record.maps.map((m) => m.tag);
  const metrics = [...new Set(records.flatMap((r) => Object.values(r.scores).flatMap(Object.keys)))].sort();
  const baselines = [...new Set(records.flatMap((r) => Object.keys(r.baselines || {})))].sort();
  const charts = metrics.map((metric) => {
    const series = tags.map((tag, k) => ({
      name: tag,
      color: PALETTE[k % PALETTE.length],
      values: records.map((r) => valueAt(r.scores, tag, metric)),
    }));
    for (const name of baselines) {
      const values = records.map((r) => valueAt(r.baselines, name, metric));
      if (values.some((v) => v !== null)) series.push({ name, color: BASELINE_STYLE[name] || "#757575", dash: "5 3", values });
    }
    return named(lineChart({ title: metric, x, series, marker: index }), metric);
  });
  for (const kind of ["deletion", "insertion"]) {
    const series = tags
      .filter((tag) => record.curves[tag] && record.curves[tag][kind])
      .map((tag, k) => ({ name: tag, color: PALETTE[k % PALETTE.length], values: record.curves[tag][kind] }));
    if (!series.length) continue;
    const steps = series[0].values.map((_, j) => j);
    const title = `${kind} curve at this evaluation, probe mean (x: ${kind === "deletion" ? "removal" : "insertion"} step)`;
    charts.push(lineChart({ title, x: steps, series, marker: null }));
  }
  return charts;
}

/** Each sample's curves in an evaluation's file (format.py ``sample_curves``): {tag: {kind: Float32Array [B × n]}}. */
export function decodeSampleCurves(buffer, record) {
  const out = {};
  for (const c of record.sample_curves || []) {
    out[c.tag] = out[c.tag] || {};
    out[c.tag][c.kind] = decodeHalf(buffer, c.offset, c.shape[0] * c.shape[1]);
  }
  return out;
}

/** The trapezoid area under a curve sampled at equal steps over [0, 1] (the metrics' AUC). */
function area(values) {
  let sum = 0;
  for (let j = 1; j < values.length; j++) sum += (values[j - 1] + values[j]) / 2;
  return sum / Math.max(1, values.length - 1);
}

/**
 * Sample i's deletion and insertion curves at the shown evaluations: shown = [{record, curves, label}], the first
 * drawn solid, a second (compare mode) dashed; a line per explainer, coloured as in the score charts (tags).
 * Returns a chart per kind of curve that some shown evaluation has (none without DeletionAUC/InsertionAUC).
 */
export function sampleCurveCharts(shown, tags, i) {
  const charts = [];
  for (const kind of ["deletion", "insertion"]) {
    const xLabel = `fraction of features ${kind === "deletion" ? "removed" : "inserted"}`;
    const series = [];
    shown.forEach(({ record, curves, label }, n) => {
      for (const entry of record.sample_curves || []) {
        if (entry.kind !== kind || !curves[entry.tag] || !curves[entry.tag][kind]) continue;
        const points = entry.shape[1];
        const values = Array.from(curves[entry.tag][kind].subarray(i * points, (i + 1) * points));
        const k = tags.indexOf(entry.tag);
        series.push({
          name: `${entry.tag}${shown.length > 1 ? ` · ${label}` : ""} · AUC ${fmt(area(values))}`,
          color: PALETTE[(k < 0 ? tags.length : k) % PALETTE.length],
          dash: n ? "5 3" : null,
          values,
          data: { tag: entry.tag, evaluation: String(record.evaluation) },
        });
      }
    });
    if (!series.length) continue;
    const compared = shown.length > 1 ? `${shown[0].label} vs ${shown[1].label} (dashed)` : shown[0].label;
    const title = `${kind} curve of sample ${i}: ${compared}`;
    const chart = curveChart({ title, xLabel, series, columns: shown.length > 1 ? 1 : 2 });
    chart.dataset.kind = kind;
    charts.push(chart);
  }
  return charts;
}
