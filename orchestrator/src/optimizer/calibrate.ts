// Calibration: run an augmented copy of the model (intermediate tensors exposed as graph
// outputs) through onnxruntime-node and reduce each tensor to a real-valued range.

import * as ort from 'onnxruntime-node';
import { encodeModel, type ModelProto } from '../onnx/onnx-model.js';
import { DataType } from '../onnx/tensor.js';
import { batches, DatasetError, sampleCount, type Dataset } from './dataset.js';
import { cloneModel } from './graph-utils.js';

export type CalibrationMethod = 'minmax' | 'percentile' | 'entropy';

export interface CalibrationOptions {
  method?: CalibrationMethod;
  /** Percentile kept by the 'percentile' method (default 99.999, as ORT). */
  percentile?: number;
  /** Histogram bins for percentile/entropy (default 2048). */
  numBins?: number;
  /** Quantized bins the entropy method compares against (default 128 = int8 half range). */
  numQuantizedBins?: number;
  /** Samples per inference call (default 16, or the model's static batch). */
  batchSize?: number;
  /** Use at most this many samples. */
  maxSamples?: number;
  /** onnxruntime intra-op threads (default 2). */
  threads?: number;
}

export interface TensorRange {
  min: number;
  max: number;
}

/** The model with `tensors` appended as float32 graph outputs. */
export function augmentModel(model: ModelProto, tensors: readonly string[]): ModelProto {
  const aug = cloneModel(model);
  const existing = new Set(aug.graph.output.map((o) => o.name));
  for (const t of tensors) {
    if (existing.has(t)) continue;
    aug.graph.output.push({ name: t, type: { tensorType: { elemType: DataType.FLOAT } } });
    existing.add(t);
  }
  return aug;
}

function minMaxOf(data: Float32Array): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

async function forEachBatch(
  model: ModelProto, tensors: readonly string[], inputName: string, data: Dataset, options: CalibrationOptions,
  visit: (name: string, values: Float32Array) => void,
): Promise<void> {
  const session = await ort.InferenceSession.create(encodeModel(augmentModel(model, tensors)), {
    intraOpNumThreads: options.threads ?? 2,
    interOpNumThreads: 1,
  });
  try {
    const limit = Math.min(options.maxSamples ?? Infinity, sampleCount(data));
    for (const b of batches(data, options.batchSize ?? 16, limit)) {
      const out = await session.run({ [inputName]: new ort.Tensor('float32', b.data, b.dims) }, [...tensors]);
      for (const t of tensors) {
        const v = out[t];
        if (v && v.type === 'float32') visit(t, v.data as Float32Array);
      }
    }
  } finally {
    await session.release();
  }
}

/** Ranges of `tensors` over the calibration data, by the chosen method. */
export async function calibrate(
  model: ModelProto, tensors: readonly string[], inputName: string, data: Dataset, options: CalibrationOptions = {},
): Promise<Map<string, TensorRange>> {
  if (sampleCount(data) === 0) throw new DatasetError('DATASET_EMPTY', `${data.source}: calibration set is empty (0 samples)`);
  const method = options.method ?? 'minmax';
  const ranges = new Map<string, TensorRange>();
  await forEachBatch(model, tensors, inputName, data, options, (name, values) => {
    const [lo, hi] = minMaxOf(values);
    const r = ranges.get(name);
    if (r) {
      r.min = Math.min(r.min, lo);
      r.max = Math.max(r.max, hi);
    } else ranges.set(name, { min: lo, max: hi });
  });
  if (method === 'minmax') return ranges;

  // Second pass: histograms over the observed range (percentile) or over [-T, T] (entropy, as ORT).
  const bins = options.numBins ?? 2048;
  const hists = new Map<string, { counts: Float64Array; lo: number; hi: number }>();
  for (const [name, r] of ranges) {
    const t = Math.max(Math.abs(r.min), Math.abs(r.max));
    const lo = method === 'entropy' ? -t : r.min;
    const hi = method === 'entropy' ? t : r.max;
    hists.set(name, { counts: new Float64Array(bins), lo, hi });
  }
  await forEachBatch(model, tensors, inputName, data, options, (name, values) => {
    const h = hists.get(name);
    if (!h || !(h.hi > h.lo)) return;
    const k = bins / (h.hi - h.lo);
    for (let i = 0; i < values.length; i++) {
      let b = Math.floor((values[i]! - h.lo) * k);
      if (b >= bins) b = bins - 1;
      else if (b < 0) b = 0;
      h.counts[b]! += 1;
    }
  });
  const result = new Map<string, TensorRange>();
  for (const [name, r] of ranges) {
    const h = hists.get(name)!;
    if (!(h.hi > h.lo)) {
      result.set(name, r);
      continue;
    }
    const edges = (i: number): number => h.lo + ((h.hi - h.lo) * i) / bins;
    const [lo, hi] = method === 'percentile'
      ? percentileRange(h.counts, edges, options.percentile ?? 99.999)
      : entropyRange(h.counts, edges, options.numQuantizedBins ?? 128);
    result.set(name, { min: Math.max(lo, r.min), max: Math.min(hi, r.max) });
  }
  return result;
}

/** ORT's non-symmetric percentile: cut (100 − p)/2 percent from each tail. */
export function percentileRange(counts: Float64Array, edge: (i: number) => number, percentile: number): [number, number] {
  const total = counts.reduce((a, b) => a + b, 0);
  const cut = (100 - percentile) / 200;
  let cum = 0;
  let left = -1, right = -1;
  for (let i = 0; i < counts.length; i++) {
    cum += counts[i]! / total;
    // np.searchsorted(cdf, v) (side='left'): first index with cdf >= v.
    if (left < 0 && cum >= cut) left = i;
    if (right < 0 && cum >= 1 - cut) right = i;
  }
  if (left < 0) left = 0;
  if (right < 0) right = counts.length - 1;
  return [edge(left), edge(right + 0)];
}

function smooth(p: Float64Array, eps = 1e-4): Float64Array | undefined {
  let zeros = 0;
  for (const v of p) if (v === 0) zeros++;
  const nonzeros = p.length - zeros;
  if (nonzeros === 0) return undefined;
  const eps1 = (eps * zeros) / nonzeros;
  return p.map((v) => (v === 0 ? eps : v - eps1));
}

function klDivergence(p: Float64Array, q: Float64Array): number {
  let sp = 0, sq = 0;
  for (let i = 0; i < p.length; i++) { sp += p[i]!; sq += q[i]!; }
  let kl = 0;
  for (let i = 0; i < p.length; i++) {
    const pi = p[i]! / sp, qi = q[i]! / sq;
    if (pi > 0) kl += qi > 0 ? pi * Math.log(pi / qi) : Infinity;
  }
  return kl;
}

/**
 * KL-divergence threshold search over a histogram symmetric about 0 (ORT's get_entropy_threshold,
 * with float rather than integer expansion of the quantized bins).
 */
export function entropyRange(hist: Float64Array, edge: (i: number) => number, numQuantizedBins: number): [number, number] {
  const numBins = hist.length;
  const zero = Math.floor(numBins / 2);
  const half = Math.floor(numQuantizedBins / 2);
  let best = Infinity;
  let bestRange: [number, number] = [edge(0), edge(numBins)];
  for (let i = half; i <= zero; i++) {
    const start = zero - i;
    const end = Math.min(zero + i + 1, numBins);
    const sliced = hist.subarray(start, end);
    const p = Float64Array.from(sliced);
    let leftOut = 0, rightOut = 0;
    for (let j = 0; j < start; j++) leftOut += hist[j]!;
    for (let j = end; j < numBins; j++) rightOut += hist[j]!;
    p[0]! += leftOut;
    p[p.length - 1]! += rightOut;
    const merged = Math.floor(sliced.length / numQuantizedBins);
    if (merged === 0) continue;
    const q = new Float64Array(p.length);
    for (let b = 0; b < numQuantizedBins; b++) {
      const s = b * merged;
      const e = b === numQuantizedBins - 1 ? sliced.length : s + merged;
      let sum = 0, nz = 0;
      for (let j = s; j < e; j++) { sum += sliced[j]!; if (p[j] !== 0) nz++; }
      if (nz > 0) for (let j = s; j < e; j++) if (p[j] !== 0) q[j] = sum / nz;
    }
    const ps = smooth(p), qs = smooth(q);
    const div = ps && qs ? klDivergence(ps, qs) : Infinity;
    if (div < best) {
      best = div;
      bestRange = [edge(start), edge(end)];
    }
  }
  return bestRange;
}
