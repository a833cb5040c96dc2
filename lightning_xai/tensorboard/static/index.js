// The XAI tab (lightning_xai): the probe, one sample's explanations, a slider across every evaluation, comparisons
// and scores. A plain ES module loaded by TensorBoard in an iframe whose base URL is the plugin's route prefix, so
// fetch("./runs") reaches the backend. No build step and nothing from outside the package.

// What the tab needs to open is requested as soon as this module runs, while its two helper modules load: the
// runs and the first run's evaluations in one request, the style sheet, and the helpers (dynamic imports of our own
// files, so that they are fetched beside the data, not before it).
const overview = fetch("./overview").then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))));
overview.catch(() => null); // reported by render()
const helpers = Promise.all([import("./static/colormap.js"), import("./static/charts.js"), import("./static/scores.js")]);
helpers.catch(() => null);
document.head.append(Object.assign(document.createElement("link"), { rel: "stylesheet", href: "./static/style.css" }));

let DIVERGING, SEQUENTIAL, decodeHalf, fmt, lutIndex, PALETTE, barChart, lineChart;
let sampleScoreCharts, probeScoreCharts, decodeSampleCurves, sampleCurveCharts;
const CURVES = Symbol("each sample's curves"); // the key of an evaluation's curves beside its maps (keyed by tag)

const SIZE = 176; // displayed side of the sample's pictures, in CSS pixels
const THUMB = 72;

const state = {
  runs: [],
  run: null,
  records: [],
  index: 0,
  sample: 0,
  opacity: 0.7,
  topK: 8,
  compare: { mode: "explainers", a: null, b: null, other: 0 },
  maps: new Map(), // run + file → Promise<{tag: Float32Array}>
  probes: new Map(), // run + file → Promise<Uint8Array>
  drawn: 0, // sequence number of the last requested draw
};

function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const $ = (id) => document.getElementById(id);

async function getJson(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function dataUrl(file, record) {
  const query = new URLSearchParams({ run: state.run, file, t: String(record.wall_time) });
  return `./data?${query}`;
}

function loadMaps(record) {
  const key = `${state.run}\n${record.file}\n${record.wall_time}`;
  if (!state.maps.has(key)) {
    const promise = fetch(dataUrl(record.file, record))
      .then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(`maps: HTTP ${r.status}`))))
      .then((buffer) => {
        const out = {};
        for (const m of record.maps) {
          const count = m.shape.reduce((a, b) => a * b, 1);
          out[m.tag] = decodeHalf(buffer, m.offset, count);
        }
        out[CURVES] = decodeSampleCurves(buffer, record);
        return out;
      });
    promise.catch(() => state.maps.delete(key));
    state.maps.set(key, promise);
  }
  return state.maps.get(key);
}

function loadProbe(record) {
  const file = record.probe.file;
  if (!file) return Promise.resolve(null);
  const key = `${state.run}\n${file}`;
  if (!state.probes.has(key)) {
    const promise = fetch(dataUrl(file, record))
      .then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(`probe: HTTP ${r.status}`))))
      .then((buffer) => new Uint8Array(buffer));
    promise.catch(() => state.probes.delete(key));
    state.probes.set(key, promise);
  }
  return state.probes.get(key);
}

// ---- pictures ----

function canvas(width, height, attributes = {}) {
  const c = h("canvas", attributes);
  c.width = width;
  c.height = height;
  return c;
}

const scratch = new Map(); // w×h → a canvas to put pixels on before they are enlarged (reused by every paint)

/** Paint an RGBA buffer of w×h onto a display canvas, enlarged without smoothing. */
function paint(target, rgba, w, hgt) {
  const size = `${w}x${hgt}`;
  if (!scratch.has(size)) scratch.set(size, canvas(w, hgt));
  const source = scratch.get(size);
  source.getContext("2d").putImageData(new ImageData(rgba, w, hgt), 0, 0);
  const context = target.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.clearRect(0, 0, target.width, target.height);
  context.drawImage(source, 0, 0, target.width, target.height);
}

function inputRGBA(pixels, shape, sample) {
  const [, ih, iw] = shape;
  const rgba = new Uint8ClampedArray(ih * iw * 4);
  const base = sample * ih * iw * 3;
  for (let p = 0; p < ih * iw; p++) {
    rgba[p * 4] = pixels[base + p * 3];
    rgba[p * 4 + 1] = pixels[base + p * 3 + 1];
    rgba[p * 4 + 2] = pixels[base + p * 3 + 2];
    rgba[p * 4 + 3] = 255;
  }
  return rgba;
}

function sampleValues(values, shape, sample) {
  const size = shape.slice(1).reduce((a, b) => a * b, 1);
  return values.subarray(sample * size, (sample + 1) * size);
}

function heatRGBA(values, signed) {
  const lut = signed ? DIVERGING : SEQUENTIAL;
  const rgba = new Uint8ClampedArray(values.length * 4);
  for (let p = 0; p < values.length; p++) {
    const k = lutIndex(values[p], signed) * 3;
    rgba[p * 4] = lut[k];
    rgba[p * 4 + 1] = lut[k + 1];
    rgba[p * 4 + 2] = lut[k + 2];
    rgba[p * 4 + 3] = 255;
  }
  return rgba;
}

/** The heatmap blended over the input at the input's resolution; opacity × |value| per pixel. */
function overlayRGBA(input, ih, iw, values, mh, mw, signed, opacity) {
  const lut = signed ? DIVERGING : SEQUENTIAL;
  const rgba = new Uint8ClampedArray(ih * iw * 4);
  for (let y = 0; y < ih; y++) {
    const my = Math.min(mh - 1, Math.floor((y * mh) / ih));
    for (let x = 0; x < iw; x++) {
      const v = values[my * mw + Math.min(mw - 1, Math.floor((x * mw) / iw))];
      const alpha = opacity * Math.min(1, Math.abs(v));
      const k = lutIndex(v, signed) * 3;
      const p = (y * iw + x) * 4;
      for (let c = 0; c < 3; c++) rgba[p + c] = input[p + c] * (1 - alpha) + lut[k + c] * alpha;
      rgba[p + 3] = 255;
    }
  }
  return rgba;
}

function colourBar(signed, scale) {
  const bar = canvas(14, SIZE, { class: "colourbar" });
  const context = bar.getContext("2d");
  const lut = signed ? DIVERGING : SEQUENTIAL;
  for (let y = 0; y < SIZE; y++) {
    const k = Math.round((1 - y / (SIZE - 1)) * 255) * 3;
    context.fillStyle = `rgb(${lut[k]},${lut[k + 1]},${lut[k + 2]})`;
    context.fillRect(0, y, 14, 1);
  }
  if (!scale) {
    return h("div", { class: "colourbar-box", title: "this map is zero everywhere" }, bar,
      h("div", { class: "colourbar-labels" }, h("span", {}, "all"), h("span", {}, "zero"), h("span", {}, "")));  // prettier-ignore
  }
  const labels = h("div", { class: "colourbar-labels" },
    h("span", {}, `${signed ? "+" : ""}${fmt(scale)}`), h("span", {}, signed ? "0" : ""),
    h("span", {}, signed ? `−${fmt(scale)}` : "0"));  // prettier-ignore
  const title = signed ? "signed: diverging, clipped at ±p99 of |a|" : "magnitude: sequential, clipped at p99";
  return h("div", { class: "colourbar-box", title }, bar, labels);
}

// ---- layout ----

function skeleton() {
  document.body.append(
    h("div", { id: "xai" },
      h("header", {},
        h("label", {}, "Run ", h("select", { id: "run" })),
        h("label", { class: "grow" }, "Evaluation ",
          h("input", { id: "evaluation", type: "range", min: "0", max: "0", value: "0" }),
          h("span", { id: "evaluation-label" })),
        h("label", {}, "Overlay opacity ",
          h("input", { id: "opacity", type: "range", min: "0", max: "100", value: String(state.opacity * 100) })),
        h("button", { id: "reload", type: "button" }, "Reload")),
      h("div", { id: "notice" }),
      h("main", {},
        h("section", { id: "probe" }, h("h2", {}, "Probe"), h("div", { id: "grid" })),
        h("section", { id: "sample" }, h("h2", { id: "sample-title" }), h("div", { id: "explainers" }))),
      h("section", { id: "compare" }, h("h2", {}, "Compare"), h("div", { id: "compare-controls" }),
        h("div", { id: "compare-view" })),
      h("section", { id: "sample-scores" }, h("h2", { id: "sample-scores-title" }, "This sample's scores"),
        h("div", { id: "sample-curve-charts" }), h("div", { id: "sample-score-charts" })),
      h("section", { id: "scores" }, h("h2", {}, "Scores over evaluations (means over the probe)"),
        h("div", { id: "score-charts" }))),
  );  // prettier-ignore
  $("run").addEventListener("change", () => selectRun($("run").value));
  $("evaluation").addEventListener("input", () => {
    state.index = Number($("evaluation").value);
    draw();
  });
  $("opacity").addEventListener("input", () => {
    state.opacity = Number($("opacity").value) / 100;
    draw();
  });
  $("reload").addEventListener("click", () => selectRun(state.run, true));
}

export async function render() {
  document.body.dataset.moduleStartMs = String(performance.now());
  let first;
  try {
    let scores;
    [[{ DIVERGING, SEQUENTIAL, decodeHalf, fmt, lutIndex }, { PALETTE, barChart, lineChart }, scores], first] =
      await Promise.all([helpers, overview.catch((err) => ({ error: err }))]);
    ({ sampleScoreCharts, probeScoreCharts, decodeSampleCurves, sampleCurveCharts } = scores);
  } catch (err) {
    document.body.textContent = `The XAI tab could not load its modules: ${err.message}`;
    return;
  }
  skeleton();
  if (first.error) return notice(`Could not list runs: ${first.error.message}`, true);
  state.runs = first.runs;
  if (!state.runs.length) {
    return notice("No run holds XAI-tab data yet. Train with lightning_xai's AttributionMonitor and a TensorBoardLogger.");
  }
  for (const run of state.runs) $("run").append(h("option", { value: run.run }, `${run.run} (${run.evaluations})`));
  await selectRun(first.run, false, first.records);
}

function selectRun(run, keep = false, records = null) {
  return loadRun(run, keep, records).catch((err) => notice(`Could not read run ${run}: ${err.message}`, true));
}

function notice(text, error = false) {
  $("notice").textContent = text;
  $("notice").className = error ? "error" : "";
}

async function loadRun(run, keep, records = null) {
  const atEnd = state.index >= state.records.length - 1;
  state.run = run;
  state.records = records || (await getJson(`./evaluations?${new URLSearchParams({ run })}`));
  $("run").value = run;
  const n = state.records.length;
  const slider = $("evaluation");
  slider.max = String(Math.max(0, n - 1));
  if (!keep || atEnd) state.index = Math.max(0, n - 1);
  state.index = Math.min(state.index, Math.max(0, n - 1));
  slider.value = String(state.index);
  if (!keep) state.sample = 0;
  const expected = n ? state.records[n - 1].evaluation + 1 : 0;
  const missing = expected - n;
  if (!n) notice("This run has no complete evaluation yet.");
  else if (state.records[n - 1].message) notice(state.records[n - 1].message, true);
  else if (missing > 0) notice(`${missing} of ${expected} evaluations of this run have no data (their files are missing).`, true);
  else notice(`${n} evaluation${n === 1 ? "" : "s"}, every one kept.`);
  const tags = n ? state.records[n - 1].maps.map((m) => m.tag) : [];
  state.compare.a = tags.includes(state.compare.a) ? state.compare.a : tags[0];
  state.compare.b = tags.includes(state.compare.b) ? state.compare.b : tags[1] || tags[0];
  state.compare.other = 0;
  if (n) await draw();
}

function caption(record, i) {
  const probe = record.probe;
  const label = probe.labels ? probe.labels[i] : "no label";
  const pred = record.predictions ? `pred ${record.predictions[i]} · p ${record.confidence[i].toFixed(2)}` : "";
  return [label, pred];
}

function isWrong(record, i) {
  const classes = record.probe.classes;
  return Boolean(classes && record.predictions && classes[i] !== record.predictions[i]);
}

/** Redraw for the current state; a failure (e.g. the server went away) is shown, not thrown. */
function draw() {
  return drawNow().catch((err) => notice(`Could not draw this evaluation: ${err.message}`, true));
}

/** Lets the browser paint what is drawn so far before the rest is drawn. */
const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 0));

async function drawNow() {
  const token = ++state.drawn;
  const record = state.records[state.index];
  if (!record) return;
  const start = performance.now();
  $("evaluation-label").textContent =
    `${state.index + 1} / ${state.records.length} · step ${record.step} · epoch ${record.epoch}`;
  if (record.kind === "unsupported") return drawUnsupported(record, start);
  const [maps, pixels] = await Promise.all([loadMaps(record), loadProbe(record)]);
  if (token !== state.drawn) return; // a newer draw was requested meanwhile
  drawGrid(record, pixels);
  drawSample(record, maps, pixels);
  const body = document.body.dataset;
  body.drawn = String(record.evaluation); // the probe grid and this sample's maps are on screen
  body.drawMs = String(performance.now() - start);
  if (!body.firstDrawnMs) body.firstDrawnMs = String(performance.now()); // since the tab's iframe started
  await nextFrame(); // charts and comparisons after the maps are painted
  if (token !== state.drawn) return;
  drawCompare(record, maps, token);
  drawScores(record);
  await drawSampleScores(record, maps, token);
  if (token !== state.drawn) return;
  body.complete = String(record.evaluation);
  body.completeMs = String(performance.now() - start);
  prefetchAround(token);
}

function drawUnsupported(record, start) {
  notice(record.message || "The XAI tab cannot show this run's inputs.", true);
  $("grid").replaceChildren();
  $("grid").dataset.key = "";
  $("sample-title").textContent = "";
  $("explainers").replaceChildren(h("p", { class: "muted" }, record.message || ""));
  $("explainers").dataset.key = "";
  const cleared = ["compare-controls", "compare-view", "sample-curve-charts", "sample-score-charts"];
  for (const id of cleared) $(id).replaceChildren();
  drawScores(record);
  const body = document.body.dataset;
  body.drawn = body.complete = String(record.evaluation);
  body.drawMs = body.completeMs = String(performance.now() - start);
}

/** Fetch the evaluations next to the shown one, nearest first, one at a time, while the slider rests. */
async function prefetchAround(token) {
  for (const step of [1, -1, 2, -2, 3, -3, 4, -4]) {
    const record = state.records[state.index + step];
    if (token !== state.drawn) return;
    if (record) await loadMaps(record).catch(() => null);
  }
}

function drawGrid(record, pixels) {
  const grid = $("grid");
  // the pictures are the probe's, the same at every evaluation of a probe: build them once, update the captions
  const key = `${state.run}\n${record.probe.file}\n${record.probe.size}\n${record.kind}`;
  if (grid.dataset.key !== key) {
    grid.replaceChildren();
    grid.dataset.key = key;
    for (let i = 0; i < record.probe.size; i++) {
      let picture;
      if (record.kind === "image" && pixels) {
        const [, ih, iw] = record.probe.shape;
        picture = canvas(THUMB, Math.round((THUMB * ih) / iw));
        paint(picture, inputRGBA(pixels, record.probe.shape, i), iw, ih);
      } else if (record.kind === "tokens") {
        picture = h("div", { class: "thumb-text" }, visibleTokens(record, i).slice(0, 8).join(" "));
      } else {
        picture = h("div", { class: "thumb-text" }, `sample ${i}`);
      }
      const node = h("div", { class: "thumb", "data-sample": String(i) }, picture,
        h("div", { class: "caption label" }), h("div", { class: "caption pred" }));  // prettier-ignore
      node.addEventListener("click", () => {
        state.sample = i;
        draw();
      });
      grid.append(node);
    }
  }
  Array.from(grid.children).forEach((node, i) => {
    const [label, pred] = caption(record, i);
    const wrong = isWrong(record, i);
    node.className = ["thumb", wrong ? "wrong" : "", i === state.sample ? "selected" : ""].join(" ").trim();
    node.title = wrong ? "wrong prediction" : "";
    node.querySelector(".label").textContent = `${wrong ? "✗ " : ""}${label}`;
    node.querySelector(".pred").textContent = pred;
  });
}

function visibleTokens(record, i) {
  const tokens = record.probe.tokens[i];
  const valid = record.probe.valid ? record.probe.valid[i] : null;
  return tokens.filter((_, t) => !valid || valid[t]);
}

function drawSample(record, maps, pixels) {
  const i = state.sample;
  const [label, pred] = caption(record, i);
  $("sample-title").textContent = `Sample ${i}: ${label}${pred ? `, ${pred}` : ""}${isWrong(record, i) ? " (wrong)" : ""}`;
  const box = $("explainers");
  if (record.kind === "table") return (box.replaceChildren(), (box.dataset.key = ""), drawTableSample(record, maps, box));
  if (record.kind === "tokens") return (box.replaceChildren(), (box.dataset.key = ""), drawTokenSample(record, maps, box));
  const [, ih, iw] = record.probe.shape;
  const height = Math.round((SIZE * ih) / iw);
  // the rows (and the input pictures) stay while the slider moves: only the maps and their ranges are repainted
  const key = [state.run, record.probe.file, i, ...record.maps.map((m) => `${m.tag}:${m.shape}:${m.signed}`)].join("\n");
  const input = box.dataset.key === key ? state.input : inputRGBA(pixels, record.probe.shape, i);
  if (box.dataset.key !== key) {
    box.replaceChildren(h("div", { class: "row header" }, h("span", {}, "explainer"), h("span", {}, "input"),
      h("span", {}, "heatmap"), h("span", {}, "overlay"), h("span", {}, "range")));  // prettier-ignore
    for (const m of record.maps) {
      const inputCanvas = canvas(SIZE, height, { class: "input" });
      paint(inputCanvas, input, iw, ih);
      const name = h("div", { class: "name" }, h("b", {}, m.tag), h("div", { class: "muted" }, m.signed ? "signed" : "magnitude"));
      const heat = canvas(SIZE, height, { class: "heatmap", "data-tag": m.tag });
      const over = canvas(SIZE, height, { class: "overlay", "data-tag": m.tag });
      box.append(h("div", { class: "row", "data-tag": m.tag }, name, inputCanvas, heat, over, h("div", { class: "range" })));
    }
    box.dataset.key = key;
    state.input = input;
  }
  const rows = box.querySelectorAll(".row[data-tag]");
  record.maps.forEach((m, k) => {
    const [, mh, mw] = m.shape;
    const values = sampleValues(maps[m.tag], m.shape, i);
    const row = rows[k];
    paint(row.querySelector("canvas.heatmap"), heatRGBA(values, m.signed), mw, mh);
    paint(row.querySelector("canvas.overlay"), overlayRGBA(input, ih, iw, values, mh, mw, m.signed, state.opacity), iw, ih);
    const range = row.querySelector(".range");
    if (range.dataset.scale !== String(m.scale[i])) {
      range.replaceChildren(colourBar(m.signed, m.scale[i]));
      range.dataset.scale = String(m.scale[i]);
    }
  });
}

function drawTableSample(record, maps, box) {
  const i = state.sample;
  const names = record.probe.features;
  const controls = h("label", {}, "top-k ", h("input", { id: "topk", type: "number", min: "1", max: String(names.length),
    value: String(Math.min(state.topK, names.length)) }));  // prettier-ignore
  box.append(controls);
  controls.querySelector("input").addEventListener("change", (event) => {
    state.topK = Math.max(1, Number(event.target.value) || 1);
    draw();
  });
  const charts = h("div", { class: "charts" });
  for (const m of record.maps) {
    const values = Array.from(sampleValues(maps[m.tag], m.shape, i), (v) => v * m.scale[i]);
    charts.append(barChart({ title: `${m.tag}: attribution of each feature`, names, values, topK: state.topK }));
  }
  box.append(charts);
  const over = h("div", { class: "charts", id: "importance-charts" });
  box.append(h("h3", {}, "Feature importance over evaluations (mean |a| over the probe; sign of the mean a)"), over);
  Promise.all(state.records.map(loadMaps)).then((all) => {
    for (const m of record.maps) {
      const perEval = state.records.map((r, e) => {
        const entry = r.maps.find((x) => x.tag === m.tag);
        if (!entry) return null;
        const [b, f] = entry.shape;
        const sums = new Float64Array(f);
        const signs = new Float64Array(f);
        for (let s = 0; s < b; s++) {
          for (let j = 0; j < f; j++) {
            const a = all[e][m.tag][s * f + j] * entry.scale[s];
            sums[j] += Math.abs(a) / b;
            signs[j] += a / b;
          }
        }
        return { sums, signs };
      });
      const last = perEval[state.index] || perEval.find(Boolean);
      const top = names.map((_, j) => j).sort((a, b) => last.sums[b] - last.sums[a]).slice(0, state.topK);
      const series = top.map((j, k) => ({
        name: `${names[j]} (${last.signs[j] >= 0 ? "+" : "−"})`,
        color: PALETTE[k % PALETTE.length],
        values: perEval.map((p) => (p ? p.sums[j] : null)),
      }));
      over.append(lineChart({ title: m.tag, x: state.records.map((r) => r.step), series, marker: state.index }));
    }
  }).catch((err) => notice(`Could not read every evaluation: ${err.message}`, true));
}

function drawTokenSample(record, maps, box) {
  const i = state.sample;
  const tokens = record.probe.tokens[i];
  const valid = record.probe.valid ? record.probe.valid[i] : null;
  for (const m of record.maps) {
    const values = sampleValues(maps[m.tag], m.shape, i);
    const lut = m.signed ? DIVERGING : SEQUENTIAL;
    const line = h("div", { class: "tokens" });
    tokens.forEach((text, t) => {
      if (valid && !valid[t]) return; // padding is hidden
      const k = lutIndex(values[t], m.signed) * 3;
      const luminance = 0.299 * lut[k] + 0.587 * lut[k + 1] + 0.114 * lut[k + 2];
      const style = `background: rgb(${lut[k]},${lut[k + 1]},${lut[k + 2]}); color: ${luminance > 140 ? "#111" : "#fff"}`;
      line.append(h("span", { class: "token", style, title: fmt(values[t] * m.scale[i]) }, text));
    });
    box.append(h("div", { class: "row" }, h("div", { class: "name" }, h("b", {}, m.tag)), line, colourBar(m.signed, m.scale[i])));
  }
}

async function drawCompare(record, maps, token) {
  const controls = $("compare-controls");
  const view = $("compare-view");
  view.replaceChildren();
  if (record.kind !== "image") {
    controls.replaceChildren();
    view.append(h("p", { class: "muted" }, "Comparisons are drawn for image maps."));
    return;
  }
  const tags = record.maps.map((m) => m.tag);
  const c = state.compare;
  const select = (id, value, options) => {
    const s = h("select", { id }, ...options.map((o) => h("option", { value: o }, o)));
    s.value = value;
    return s;
  };
  const mode = select("compare-mode", c.mode, ["explainers", "evaluations"]);
  const a = select("compare-a", c.a, tags);
  const parts = [h("label", {}, "Compare ", mode), h("label", {}, c.mode === "explainers" ? " A " : " explainer ", a)];
  let b = null;
  let other = null;
  if (c.mode === "explainers") {
    b = select("compare-b", c.b, tags);
    parts.push(h("label", {}, " B ", b));
  } else {
    other = h("input", { id: "compare-other", type: "range", min: "0", max: String(state.records.length - 1),
      value: String(c.other) });  // prettier-ignore
    parts.push(h("label", {}, " with evaluation ", other, h("span", {}, ` ${c.other + 1}`)));
  }
  controls.replaceChildren(...parts);
  mode.addEventListener("change", () => ((c.mode = mode.value), draw()));
  a.addEventListener("change", () => ((c.a = a.value), draw()));
  if (b) b.addEventListener("change", () => ((c.b = b.value), draw()));
  if (other) other.addEventListener("input", () => ((c.other = Number(other.value)), draw()));
  const i = state.sample;
  const [, ih, iw] = record.probe.shape;
  const height = Math.round((SIZE * ih) / iw);
  const panel = (title, values, shape, signed, scale) => {
    const heat = canvas(SIZE, height, { class: "compare-heatmap" });
    paint(heat, heatRGBA(values, signed), shape[2], shape[1]);
    return h("figure", {}, heat, colourBar(signed, scale), h("figcaption", {}, title));
  };
  const entry = (r, tag) => r.maps.find((m) => m.tag === tag);
  if (c.mode === "explainers") {
    for (const tag of [c.a, c.b]) {
      const m = entry(record, tag);
      if (m) view.append(panel(`${tag} · evaluation ${state.index + 1}`, sampleValues(maps[tag], m.shape, i), m.shape, m.signed, m.scale[i]));
    }
    return;
  }
  const otherRecord = state.records[c.other];
  const otherMaps = await loadMaps(otherRecord);
  if (token !== state.drawn) return; // a newer draw owns the view
  const m1 = entry(record, c.a);
  const m2 = entry(otherRecord, c.a);
  if (!m1 || !m2) return;
  const v1 = sampleValues(maps[c.a], m1.shape, i);
  const v2 = sampleValues(otherMaps[c.a], m2.shape, i);
  view.append(panel(`${c.a} · evaluation ${state.index + 1}`, v1, m1.shape, m1.signed, m1.scale[i]));
  view.append(panel(`${c.a} · evaluation ${c.other + 1}`, v2, m2.shape, m2.signed, m2.scale[i]));
  if (m1.shape.join() === m2.shape.join()) {
    const diff = new Float32Array(v1.length);
    let top = 0;
    for (let p = 0; p < v1.length; p++) {
      diff[p] = v1[p] * m1.scale[i] - v2[p] * m2.scale[i];
      top = Math.max(top, Math.abs(diff[p]));
    }
    for (let p = 0; p < diff.length; p++) diff[p] = top > 0 ? diff[p] / top : 0;
    view.append(panel(`difference (${state.index + 1} − ${c.other + 1})`, diff, m1.shape, true, top));
  }
}

/** Sample i's curves at the shown evaluation (and at the compared one), then its scores over evaluations. */
async function drawSampleScores(record, maps, token) {
  const i = state.sample;
  $("sample-scores-title").textContent = `Sample ${i}: its curves at this evaluation and its scores over evaluations`;
  const charts = sampleScoreCharts(state.records, record, state.index, i);
  const empty = "No per-sample scores were logged (pass metrics=[...]; stability needs two evaluations).";
  $("sample-score-charts").replaceChildren(...(charts.length ? charts : [h("p", { class: "muted" }, empty)]));
  const c = state.compare;
  const shown = [{ record, curves: maps[CURVES], label: `eval ${state.index + 1}` }];
  if (record.kind === "image" && c.mode === "evaluations" && c.other !== state.index && state.records[c.other]) {
    const other = state.records[c.other];
    shown.push({ record: other, curves: (await loadMaps(other))[CURVES], label: `eval ${c.other + 1}` });
    if (token !== state.drawn) return; // a newer draw owns the charts
  }
  const curves = sampleCurveCharts(shown, record.maps.map((m) => m.tag), i);
  const none = "No per-sample deletion or insertion curves (pass DeletionAUC() or InsertionAUC() in metrics=[...]).";
  $("sample-curve-charts").replaceChildren(...(curves.length ? curves : [h("p", { class: "muted" }, none)]));
}

function drawScores(record) {
  const charts = probeScoreCharts(state.records, record, state.index);
  const empty = "No scores were logged (pass metrics=[...]).";
  $("score-charts").replaceChildren(...(charts.length ? charts : [h("p", { class: "muted" }, empty)]));
}
