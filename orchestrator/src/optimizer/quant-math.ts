// Scale/zero-point arithmetic matching onnxruntime's quantization tool (quant_utils.py):
// the real range always includes 0, rounding is half-to-even (numpy), symmetric int8 uses
// [-127, 127], and division happens in float32.

export type QType = 'int8' | 'uint8';

export interface QParams {
  scale: number;
  zeroPoint: number;
}

/** ORT's get_qmin_qmax_for_qType; reduce_range keeps 7 bits (for non-VNNI u8s8 kernels). */
export function qRange(qType: QType, symmetric: boolean, reduceRange = false): [number, number] {
  if (qType === 'uint8') return reduceRange ? [0, 127] : [0, 255];
  if (reduceRange) return [-64, 64];
  return symmetric ? [-127, 127] : [-128, 127];
}

/** numpy.round: round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round rounds .5 up; correct ties to the even neighbour.
  if (Math.abs(x % 1) === 0.5) return 2 * Math.round(x / 2);
  return r;
}

const FLT_TINY = 1.1754943508222875e-38;

export function computeQParams(rmin: number, rmax: number, qType: QType, symmetric: boolean, reduceRange = false): QParams {
  const [qmin, qmax] = qRange(qType, symmetric, reduceRange);
  let lo = Math.fround(Math.min(rmin, 0));
  let hi = Math.fround(Math.max(rmax, 0));
  if (symmetric) {
    const absmax = Math.max(Math.abs(lo), Math.abs(hi));
    lo = -absmax;
    hi = absmax;
  }
  let scale = Math.fround((hi - lo) / (qmax - qmin));
  if (!(scale >= FLT_TINY)) return { scale: 1, zeroPoint: 0 };
  const zp = roundHalfEven(qmin - Math.fround(lo / scale));
  return { scale, zeroPoint: Math.min(qmax, Math.max(qmin, zp)) };
}

export function quantizeValue(x: number, p: QParams, qmin: number, qmax: number): number {
  const q = roundHalfEven(Math.fround(x / p.scale)) + p.zeroPoint;
  return q < qmin ? qmin : q > qmax ? qmax : q;
}

export interface QuantizedWeight {
  data: Int8Array | Uint8Array;
  scales: Float32Array;
  zeroPoints: Int8Array | Uint8Array;
  /** Channel axis, or undefined for per-tensor. */
  axis: number | undefined;
}

/**
 * Quantizes a weight tensor, per-tensor or per-channel along `axis` (weights are symmetric by
 * default for int8, as in ORT).
 */
export function quantizeWeight(
  values: Float32Array, dims: readonly number[], qType: QType, options: { axis?: number; symmetric?: boolean; reduceRange?: boolean } = {},
): QuantizedWeight {
  const symmetric = options.symmetric ?? qType === 'int8';
  const [qmin, qmax] = qRange(qType, symmetric, options.reduceRange);
  const data = qType === 'int8' ? new Int8Array(values.length) : new Uint8Array(values.length);
  if (options.axis === undefined) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    if (values.length === 0) { lo = 0; hi = 0; }
    const p = computeQParams(lo, hi, qType, symmetric, options.reduceRange);
    for (let i = 0; i < values.length; i++) data[i] = quantizeValue(values[i]!, p, qmin, qmax);
    return {
      data, axis: undefined, scales: Float32Array.of(p.scale),
      zeroPoints: qType === 'int8' ? Int8Array.of(p.zeroPoint) : Uint8Array.of(p.zeroPoint),
    };
  }
  const axis = options.axis < 0 ? options.axis + dims.length : options.axis;
  const channels = dims[axis]!;
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const outer = dims.slice(0, axis).reduce((a, b) => a * b, 1);
  const scales = new Float32Array(channels);
  const zps = qType === 'int8' ? new Int8Array(channels) : new Uint8Array(channels);
  for (let c = 0; c < channels; c++) {
    let lo = Infinity, hi = -Infinity;
    for (let o = 0; o < outer; o++) {
      const base = (o * channels + c) * inner;
      for (let j = 0; j < inner; j++) { const v = values[base + j]!; if (v < lo) lo = v; if (v > hi) hi = v; }
    }
    if (lo === Infinity) { lo = 0; hi = 0; }
    const p = computeQParams(lo, hi, qType, symmetric, options.reduceRange);
    scales[c] = p.scale;
    zps[c] = p.zeroPoint;
    for (let o = 0; o < outer; o++) {
      const base = (o * channels + c) * inner;
      for (let j = 0; j < inner; j++) data[base + j] = quantizeValue(values[base + j]!, p, qmin, qmax);
    }
  }
  return { data, scales, zeroPoints: zps, axis };
}

/** int32 bias with scale = input_scale × weight_scale (per output channel), zero point 0. */
export function quantizeBias(bias: Float32Array, inputScale: number, weightScales: Float32Array): { data: Int32Array; scales: Float32Array } {
  const n = bias.length;
  const scales = new Float32Array(n);
  const data = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const ws = weightScales.length === 1 ? weightScales[0]! : weightScales[i]!;
    let s = Math.fround(inputScale * ws);
    if (s === 0) s = 1;
    scales[i] = s;
    const q = roundHalfEven(Math.fround(bias[i]! / s));
    data[i] = Math.max(-2147483648, Math.min(2147483647, q));
  }
  return { data, scales };
}
