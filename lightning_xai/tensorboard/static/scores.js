// The XAI tab's score charts: one probe sample's scores over evaluations, and the probe's means with the baselines.

import { PALETTE, lineChart } from "./charts.js";

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
