import { readFile } from 'node:fs/promises';
import type { Profile } from '@edgepack/firmware-profiles';
import { errorMessage } from '@edgepack/protocol';
import type { BlobStore } from '../blob-store.js';
import type { ArtifactRecord, ModelRecord, Store } from '../db/store.js';
import { newId } from '../ids.js';
import type { Logger } from '../logger.js';
import { buildManifest, signManifest } from './bundle-packaging.js';
import { computeOnnxGolden } from './golden-samples.js';

export interface BuildDeps {
  store: Store;
  blobs: BlobStore;
  profiles: readonly Profile[];
  signing: { secretKey: string; keyId: string };
  bundleTtlDays: number;
  log: Logger;
  now: () => Date;
}

/** What a profile gets from a model, decided from data alone. */
export type ArtifactChoice =
  | { kind: 'build'; format: 'onnx'; precision: 'fp32'; note?: string }
  | { kind: 'skip'; reason: string };

/**
 * Pure: which artifact a profile gets. Until the optimizer and the TFLite converter are hooked
 * in, ONNX profiles get the original fp32 model and TFLite-only profiles are skipped.
 */
export function chooseArtifact(model: Pick<ModelRecord, 'format' | 'sizeBytes'>, profile: Profile): ArtifactChoice {
  if (model.format !== 'onnx') return { kind: 'skip', reason: `uploaded ${model.format} models are not packaged yet` };
  if (!profile.formats.includes('onnx')) {
    return { kind: 'skip', reason: `profile ${profile.id} takes ${profile.formats.join('/')} only; ONNX→TFLite conversion is not available yet` };
  }
  if (model.sizeBytes > profile.budgets.maxModelBytes) {
    return { kind: 'skip', reason: `model is ${model.sizeBytes} bytes, over the profile's ${profile.budgets.maxModelBytes}-byte budget` };
  }
  const preferred = profile.precisions[0];
  const note = preferred !== 'fp32' ? `profile prefers ${profile.precisions.join(' > ')}; no quantized variant is built yet, so fp32 is used` : undefined;
  return { kind: 'build', format: 'onnx', precision: 'fp32', ...(note ? { note } : {}) };
}

/** Runs one build to completion, recording every artifact's outcome. Never throws. */
export async function runBuild(deps: BuildDeps, buildId: string): Promise<void> {
  const { store, log } = deps;
  const build = store.getBuild(buildId);
  if (!build) return;
  const model = store.getModel(build.modelId);
  if (!model) {
    store.setBuildStatus(buildId, 'failed', `model ${build.modelId} not found`, deps.now().toISOString());
    return;
  }
  store.setBuildStatus(buildId, 'running');
  let anyBuilt = false;
  let modelBytes: Uint8Array | undefined;
  for (const profileId of build.profiles) {
    const profile = deps.profiles.find((p) => p.id === profileId);
    const base: ArtifactRecord = { profile: profileId, status: 'failed', format: null, precision: null, bundleId: null, sizeBytes: null, reason: null, details: {} };
    try {
      if (!profile) throw new Error(`unknown profile ${profileId}`);
      const choice = chooseArtifact(model, profile);
      if (choice.kind === 'skip') {
        store.updateArtifact(buildId, { ...base, status: 'skipped', reason: choice.reason });
        continue;
      }
      modelBytes ??= new Uint8Array(await readFile(deps.blobs.path(model.sha256)));
      const golden = await computeOnnxGolden(modelBytes, model.inputs);
      const goldenBytes = Buffer.from(JSON.stringify(golden));
      const goldenBlob = await deps.blobs.putBytes(goldenBytes);
      const bundleId = newId('bdl');
      const now = deps.now();
      const manifest = buildManifest({
        bundleId,
        model: { name: model.name, version: model.version, sha256: model.sha256 },
        profile,
        format: choice.format,
        precision: choice.precision,
        layout: 'NCHW',
        modelFile: { sha256: model.sha256, length: model.sizeBytes },
        goldenFile: { sha256: goldenBlob.sha256, length: goldenBlob.sizeBytes, count: golden.samples.length },
        io: { inputs: model.inputs, outputs: model.outputs },
        goldenMaxAbsError: 1e-3,
        ...(build.options.acceptance?.p95LatencyMs ? { p95LatencyMs: build.options.acceptance.p95LatencyMs } : {}),
        now,
        ttlDays: deps.bundleTtlDays,
        keyId: deps.signing.keyId,
      });
      const signed = signManifest(manifest, deps.signing.secretKey);
      store.transaction(() => {
        store.insertBundle({ id: bundleId, buildId, profile: profileId, manifest, signature: signed.signature, createdAt: now.toISOString() });
        store.updateArtifact(buildId, {
          ...base, status: 'built', format: choice.format, precision: choice.precision, bundleId, sizeBytes: model.sizeBytes,
          reason: null, details: choice.note ? { note: choice.note } : {},
        });
      });
      anyBuilt = true;
    } catch (err) {
      log.warn({ buildId, profile: profileId, err: errorMessage(err) }, 'artifact failed');
      store.updateArtifact(buildId, { ...base, status: 'failed', reason: errorMessage(err) });
    }
  }
  store.setBuildStatus(buildId, anyBuilt ? 'succeeded' : 'failed', anyBuilt ? null : 'no artifact could be built for any profile', deps.now().toISOString());
}
