import { MANIFEST_SCHEMA_ID, canonicalBytes, signCanonical, type BundleFile, type Manifest, type Precision, type TensorSpec } from '@edgepack/protocol';
import type { Profile } from '@edgepack/firmware-profiles';

export interface BundleInput {
  bundleId: string;
  model: { name: string; version: string; sha256: string };
  profile: Profile;
  format: 'onnx' | 'tflite';
  precision: Precision;
  layout?: string;
  modelFile: { sha256: string; length: number };
  goldenFile: { sha256: string; length: number; count: number };
  io: { inputs: TensorSpec[]; outputs: TensorSpec[] };
  /** Largest absolute error a device may see on a golden sample before the install is refused. */
  goldenMaxAbsError: number;
  /** Overrides the profile's p95 latency budget for this bundle. */
  p95LatencyMs?: number;
  now: Date;
  ttlDays: number;
  keyId: string;
}

/** Pure: the manifest for one artifact. Signing is separate so it can be tested on its own. */
export function buildManifest(i: BundleInput): Manifest {
  const ext = i.format === 'onnx' ? 'onnx' : 'tflite';
  const files: BundleFile[] = [
    { path: `model.${ext}`, role: 'model', sha256: i.modelFile.sha256, length: i.modelFile.length },
    { path: 'golden.json', role: 'golden', sha256: i.goldenFile.sha256, length: i.goldenFile.length },
  ];
  return {
    schema: MANIFEST_SCHEMA_ID,
    bundleId: i.bundleId,
    model: i.model,
    profile: i.profile.id,
    format: i.format,
    precision: i.precision,
    ...(i.layout ? { layout: i.layout } : {}),
    files,
    io: i.io,
    golden: { file: 'golden.json', count: i.goldenFile.count, maxAbsError: i.goldenMaxAbsError },
    runtime: { name: i.profile.runtime.name, executionProviders: i.profile.runtime.executionProviders },
    acceptance: {
      p95LatencyMs: i.p95LatencyMs ?? i.profile.budgets.p95LatencyMs,
      ...(i.profile.benchmark ? { warmupRuns: i.profile.benchmark.warmupRuns, runs: i.profile.benchmark.runs } : {}),
    },
    createdAt: i.now.toISOString(),
    expiresAt: new Date(i.now.getTime() + i.ttlDays * 86400_000).toISOString(),
    keyId: i.keyId,
  };
}

export function signManifest(manifest: Manifest, secretKey: string): { manifest: Manifest; signature: string; canonical: Uint8Array } {
  return { manifest, signature: signCanonical(manifest, secretKey), canonical: canonicalBytes(manifest) };
}
