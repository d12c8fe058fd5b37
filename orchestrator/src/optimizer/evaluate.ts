// Candidate-vs-reference evaluation in onnxruntime-node: accuracy (or agreement), output error,
// size ratio and a side-by-side single-threaded latency ratio.

import * as ort from 'onnxruntime-node';
import { inspectModel } from '../onnx/inspect.js';
import { batches, checkDataset, checkLabels, DatasetError, sampleCount, type Dataset } from './dataset.js';

export interface EvaluateOptions {
  labels?: number[];
  labelsSource?: string;
  /** Input/output names (default: the sessions' first input/output). */
  inputName?: string;
  outputName?: string;
  batchSize?: number;
  /** Timed runs per model for latency (default 20; 0 skips latency). */
  latencyRuns?: number;
  warmupRuns?: number;
}

export interface EvaluationResult {
  samples: number;
  /** With labels: top-1 accuracy of each model. */
  referenceTop1?: number;
  candidateTop1?: number;
  /** referenceTop1 − candidateTop1, in percentage points. */
  top1DropPoints?: number;
  /** Fraction of samples whose arg-max agrees with the reference. */
  top1Agreement: number;
  maxAbsError: number;
  meanAbsError: number;
  /** Per-sample cosine similarity of outputs: mean and worst. */
  cosineMean: number;
  cosineMin: number;
  referenceBytes: number;
  candidateBytes: number;
  /** candidate size / reference size. */
  sizeRatio: number;
  latency?: {
    referenceP50Ms: number;
    candidateP50Ms: number;
    /** candidate p50 / reference p50: below 1 means the candidate is faster. */
    ratio: number;
    runs: number;
  };
}

function argmax(a: Float32Array, off: number, n: number): number {
  let best = 0;
  for (let j = 1; j < n; j++) if (a[off + j]! > a[off + best]!) best = j;
  return best;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function outputs(session: ort.InferenceSession, inputName: string, outputName: string, data: Dataset, batchSize: number): Promise<Float32Array> {
  const parts: Float32Array[] = [];
  for (const b of batches(data, batchSize)) {
    const r = await session.run({ [inputName]: new ort.Tensor('float32', b.data, b.dims) }, [outputName]);
    const t = r[outputName]!;
    if (t.type !== 'float32') throw new Error(`output '${outputName}' is ${t.type}; evaluation compares float32 outputs`);
    parts.push(Float32Array.from(t.data as Float32Array));
  }
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}

export async function evaluateModels(
  reference: Uint8Array, candidate: Uint8Array, data: Dataset, options: EvaluateOptions = {},
): Promise<EvaluationResult> {
  if (options.labels) checkLabels(data, options.labels, options.labelsSource ?? 'labels');
  const so: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1 };
  const ref = await ort.InferenceSession.create(reference, so);
  const cand = await ort.InferenceSession.create(candidate, so);
  try {
    const info = inspectModel(reference);
    const input = info.inputs.find((i) => i.name === (options.inputName ?? ref.inputNames[0]));
    if (!input) throw new DatasetError('DATASET_MISMATCH', `reference model has no input '${options.inputName}'`);
    checkDataset(data, input);
    const inputName = input.name;
    const outputName = options.outputName ?? ref.outputNames[0]!;
    // A fixed batch dim means batches of exactly that size.
    const fixedBatch = typeof input.shape[0] === 'number' ? input.shape[0] : undefined;
    if (fixedBatch !== undefined && sampleCount(data) % fixedBatch !== 0) {
      throw new DatasetError('DATASET_MISMATCH', `${data.source}: ${sampleCount(data)} samples cannot be split into batches of ${fixedBatch}, the fixed batch size of model input '${inputName}'`);
    }
    const batchSize = fixedBatch ?? options.batchSize ?? 50;
    const a = await outputs(ref, inputName, outputName, data, batchSize);
    const b = await outputs(cand, inputName, outputName, data, batchSize);
    const n = sampleCount(data);
    const per = a.length / n;
    let agree = 0, refOk = 0, candOk = 0, maxAbs = 0, sumAbs = 0, cosSum = 0, cosMin = 1;
    for (let i = 0; i < n; i++) {
      const off = i * per;
      const ra = argmax(a, off, per), ca = argmax(b, off, per);
      if (ra === ca) agree++;
      if (options.labels) {
        if (ra === options.labels[i]) refOk++;
        if (ca === options.labels[i]) candOk++;
      }
      let dot = 0, na = 0, nb = 0;
      for (let j = 0; j < per; j++) {
        const x = a[off + j]!, y = b[off + j]!;
        const d = Math.abs(x - y);
        if (d > maxAbs) maxAbs = d;
        sumAbs += d;
        dot += x * y; na += x * x; nb += y * y;
      }
      const cos = na === 0 && nb === 0 ? 1 : dot / (Math.sqrt(na * nb) || 1);
      cosSum += cos;
      if (cos < cosMin) cosMin = cos;
    }
    const result: EvaluationResult = {
      samples: n,
      top1Agreement: agree / n,
      maxAbsError: maxAbs,
      meanAbsError: sumAbs / a.length,
      cosineMean: cosSum / n,
      cosineMin: cosMin,
      referenceBytes: reference.length,
      candidateBytes: candidate.length,
      sizeRatio: candidate.length / reference.length,
    };
    if (options.labels) {
      result.referenceTop1 = refOk / n;
      result.candidateTop1 = candOk / n;
      result.top1DropPoints = (refOk - candOk) / n * 100;
    }
    const runs = options.latencyRuns ?? 20;
    if (runs > 0) {
      const first = batches(data, fixedBatch ?? 1).next().value!;
      const feed = { [inputName]: new ort.Tensor('float32', first.data, first.dims) };
      for (let i = 0; i < (options.warmupRuns ?? 3); i++) { await ref.run(feed); await cand.run(feed); }
      const tr: number[] = [], tc: number[] = [];
      // Interleaved so both models see the same machine load.
      for (let i = 0; i < runs; i++) {
        let t = performance.now(); await ref.run(feed); tr.push(performance.now() - t);
        t = performance.now(); await cand.run(feed); tc.push(performance.now() - t);
      }
      const rp = median(tr), cp = median(tc);
      result.latency = { referenceP50Ms: rp, candidateP50Ms: cp, ratio: cp / rp, runs };
    }
    return result;
  } finally {
    await ref.release();
    await cand.release();
  }
}
