// Helpers for tflite-* tests: run the same ONNX model through onnxruntime-node and its TFLite
// conversion through LiteRT, handling the NCHW↔NHWC difference at the boundary.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { convertOnnxToTflite, type ConversionResult, type ConvertOptions } from '@edgepack/orchestrator/tflite/convert.js';
import { openLiteRtSession, type LiteRtSession } from '@edgepack/orchestrator/tflite/litert-runner.js';
import { NCHW_TO_NHWC, NHWC_TO_NCHW, transposeData } from '@edgepack/orchestrator/tflite/layout.js';

export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'tsconfig.base.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('repo root not found');
    dir = up;
  }
}

/** The shared reference models directory, or undefined when this checkout has none. */
export function sharedModelsDir(): string | undefined {
  const dir = path.resolve(repoRoot(), '../shared/models');
  return existsSync(path.join(dir, 'fashion_cnn.onnx')) ? dir : undefined;
}
export const SHARED_MISSING = 'shared models not found at <repo root>/../shared/models';

export function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomData(count: number, seed: number, lo = -2, hi = 2): Float32Array {
  const r = seeded(seed);
  return Float32Array.from({ length: count }, () => lo + (hi - lo) * r());
}

export async function ortRun(onnx: Uint8Array, feeds: Record<string, { data: Float32Array; dims: number[] }>): Promise<Record<string, { data: Float32Array; dims: number[] }>> {
  const session = await ort.InferenceSession.create(onnx, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  try {
    const inputs: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) inputs[k] = new ort.Tensor('float32', v.data, v.dims);
    const out = await session.run(inputs);
    const res: Record<string, { data: Float32Array; dims: number[] }> = {};
    for (const [k, v] of Object.entries(out)) res[k] = { data: v.data as Float32Array, dims: [...v.dims] };
    return res;
  } finally {
    await session.release();
  }
}

/** Feeds an NCHW sample to a converted model, transposing when the model takes NHWC. */
export async function runConverted(session: LiteRtSession, conv: ConversionResult, nchw: Float32Array, nchwDims: number[]): Promise<Float32Array[]> {
  const input = conv.inputs[0];
  const data = input.layout === 'NHWC' ? transposeData(nchw, nchwDims, NCHW_TO_NHWC) : nchw;
  const out = await session.run({ [input.name]: { data: data as Float32Array, dims: input.shape } });
  return conv.outputs.map((o) => {
    const v = out[o.name].data as Float32Array;
    return o.layout === 'NHWC' ? transposeData(v, o.shape, NHWC_TO_NCHW) : v;
  });
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/**
 * Converts `onnx`, runs it and onnxruntime on the same seeded input, and returns the max abs
 * difference over all outputs (in ONNX layout) plus the conversion.
 */
export async function compareWithOnnx(
  onnx: Uint8Array,
  inputDims: number[],
  options: ConvertOptions = {},
  seed = 7,
): Promise<{ maxErr: number; conversion: ConversionResult; ortOut: Float32Array[]; tflOut: Float32Array[] }> {
  const conversion = await convertOnnxToTflite(onnx, options);
  const x = randomData(inputDims.reduce((a, b) => a * b, 1), seed);
  const expected = await ortRun(onnx, { [conversion.inputs[0].name]: { data: x, dims: inputDims } });
  const session = await openLiteRtSession(conversion.tflite);
  try {
    const tflOut = await runConverted(session, conversion, x, inputDims);
    const ortOut = conversion.outputs.map((o) => expected[o.name].data);
    const maxErr = Math.max(...tflOut.map((t, i) => maxAbsDiff(t, ortOut[i])));
    return { maxErr, conversion, ortOut, tflOut };
  } finally {
    session.close();
  }
}
