// Installed bundles for in-process serving tests: a real model file and a golden file made by
// running the real runtime, laid out exactly as BundleSlots installs them (<data>/bundles/<id>/).
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MANIFEST_SCHEMA_ID, encodeTensor, type GoldenFile, type Manifest } from '@edgepack/protocol';
import type { ActiveRecord } from '@edgepack/agent/bundle-slots.js';
import { createRunner } from '@edgepack/agent/runtime/create-runner.js';
import type { TensorValue } from '@edgepack/agent/runtime/runner.js';

const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/** Deterministic pseudo-random floats in [-1, 1). */
export function randomFloats(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  return out;
}

/** A single-sample input for every input of a runner's signature (dynamic dims as `batch`). */
export function inputsFor(sig: { name: string; dtype: string; shape: (number | string)[] }[], batch: number, seed: number): Record<string, TensorValue> {
  const feeds: Record<string, TensorValue> = {};
  sig.forEach((t, k) => {
    const dims = t.shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : i === 0 ? batch : 1));
    const n = dims.reduce((a, b) => a * b, 1);
    feeds[t.name] = { dtype: 'float32', dims, data: randomFloats(n, seed + k) };
  });
  return feeds;
}

export async function installBundle(dataDir: string, o: {
  bundleId: string; name: string; version: string; model: Uint8Array; format?: 'onnx' | 'tflite'; precision?: Manifest['precision']; goldenSamples?: number;
}): Promise<ActiveRecord> {
  const format = o.format ?? 'onnx';
  const dir = join(dataDir, 'bundles', o.bundleId);
  await mkdir(dir, { recursive: true });
  const modelName = format === 'onnx' ? 'model.onnx' : 'model.tflite';
  await writeFile(join(dir, modelName), o.model);
  const runner = await createRunner({ format }, o.model, {});
  const golden: GoldenFile = { samples: [] };
  try {
    for (let i = 0; i < (o.goldenSamples ?? 2); i++) {
      const inputs = inputsFor(runner.inputs, 1, 100 + i);
      const outputs = await runner.run(inputs);
      const enc = (r: Record<string, TensorValue>) => Object.fromEntries(Object.entries(r).map(([k, t]) => [k, encodeTensor(t.dtype, t.dims, t.data)]));
      golden.samples.push({ inputs: enc(inputs), outputs: enc(outputs) });
    }
  } finally {
    await runner.close();
  }
  const goldenText = JSON.stringify(golden);
  await writeFile(join(dir, 'golden.json'), goldenText);
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId: o.bundleId, model: { name: o.name, version: o.version, sha256: sha(o.model) }, profile: 'x86-64-gateway', format,
    precision: o.precision ?? (format === 'onnx' ? 'fp32' : 'int8'),
    files: [
      { path: modelName, role: 'model', sha256: sha(o.model), length: o.model.byteLength },
      { path: 'golden.json', role: 'golden', sha256: sha(goldenText), length: Buffer.byteLength(goldenText) },
    ],
    io: { inputs: [], outputs: [] }, golden: { file: 'golden.json', count: golden.samples.length, maxAbsError: 1e-4 },
    runtime: { name: format === 'onnx' ? 'onnxruntime' : 'tflite', executionProviders: ['cpu'] }, acceptance: { warmupRuns: 1 },
    createdAt: '2026-01-01T00:00:00Z', expiresAt: '2099-01-01T00:00:00Z', keyId: 'test',
  };
  return { bundleId: o.bundleId, manifest, activatedAt: new Date().toISOString() };
}

/** A KServe v2 JSON request body for a set of float inputs. */
export function kserveJson(inputs: Record<string, TensorValue>, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    inputs: Object.entries(inputs).map(([name, t]) => ({ name, shape: t.dims, datatype: 'FP32', data: Array.from(t.data as Float32Array) })),
    ...extra,
  });
}

/** The same as a binary-extension body: JSON header, then the raw little-endian tensor bytes. */
export function kserveBinary(inputs: Record<string, TensorValue>, extra: Record<string, unknown> = {}): { body: Buffer; headerLength: number } {
  const parts: Buffer[] = [];
  const header = Buffer.from(JSON.stringify({
    inputs: Object.entries(inputs).map(([name, t]) => {
      const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      parts.push(bytes);
      return { name, shape: t.dims, datatype: 'FP32', parameters: { binary_data_size: bytes.length } };
    }),
    ...extra,
  }));
  return { body: Buffer.concat([header, ...parts]), headerLength: header.length };
}

/** Float outputs of a binary response, by name, from its Inference-Header-Content-Length split. */
export function decodeBinaryResponse(body: Buffer, headerLength: number): Record<string, Float32Array> {
  const head = JSON.parse(body.subarray(0, headerLength).toString()) as { outputs: { name: string; parameters?: { binary_data_size?: number }; data?: number[] }[] };
  let at = headerLength;
  const out: Record<string, Float32Array> = {};
  for (const o of head.outputs) {
    const size = o.parameters?.binary_data_size;
    if (size === undefined) { out[o.name] = Float32Array.from(o.data ?? []); continue; }
    const copy = new Uint8Array(size);
    copy.set(body.subarray(at, at + size));
    out[o.name] = new Float32Array(copy.buffer);
    at += size;
  }
  return out;
}
