// Colour maps and fp16 decoding for the XAI tab (no dependencies).
//
// Signed maps use a diverging map (blue negative, white zero, red positive), magnitudes a sequential one (black
// through purple and orange to pale yellow), as the heatmap grids the monitor logs do. Both are 256-entry lookup
// tables interpolated linearly between a few anchor colours.

const DIVERGING_ANCHORS = [
  [5, 48, 97], [33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247],
  [253, 219, 199], [239, 138, 98], [178, 24, 43], [103, 0, 31],
];
const SEQUENTIAL_ANCHORS = [
  [0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
  [245, 125, 21], [250, 193, 39], [252, 255, 164],
];

function table(anchors) {
  const out = new Uint8ClampedArray(256 * 3);
  const last = anchors.length - 1;
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * last;
    const k = Math.min(Math.floor(x), last - 1);
    const t = x - k;
    for (let c = 0; c < 3; c++) {
      out[i * 3 + c] = Math.round(anchors[k][c] * (1 - t) + anchors[k + 1][c] * t);
    }
  }
  return out;
}

export const DIVERGING = table(DIVERGING_ANCHORS);
export const SEQUENTIAL = table(SEQUENTIAL_ANCHORS);

/** The lookup-table index of a stored (already scaled) value: [-1, 1] for signed maps, [0, 1] for magnitudes. */
export function lutIndex(value, signed) {
  const unit = signed ? (value + 1) / 2 : value;
  return Math.round(Math.min(1, Math.max(0, unit)) * 255);
}

let HALF = null;

function halfTable() {
  const out = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    let value;
    if (exponent === 0) value = fraction * 2 ** -24;
    else if (exponent === 31) value = fraction ? NaN : Infinity;
    else value = (1 + fraction / 1024) * 2 ** (exponent - 15);
    out[h] = sign * value;
  }
  return out;
}

/** Little-endian float16 bytes (an ArrayBuffer slice) as a Float32Array. */
export function decodeHalf(buffer, byteOffset, count) {
  HALF = HALF || halfTable();
  const bits = new Uint16Array(buffer, byteOffset, count);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = HALF[bits[i]];
  return out;
}

/** A short number for axes and captions. */
export function fmt(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const a = Math.abs(value);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return value.toExponential(2);
  return Number(value.toPrecision(3)).toString();
}
