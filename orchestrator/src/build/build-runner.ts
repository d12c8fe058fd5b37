import { Worker } from 'node:worker_threads';
import type { Profile } from '@edgepack/firmware-profiles';
import { EdgepackError, errorMessage, type Precision } from '@edgepack/protocol';
import type { BlobStore } from '../blob-store.js';
import type { Store } from '../db/store.js';
import type { ArtifactRecord } from '../records.js';
import { newId } from '../ids.js';
import type { Logger } from '../logger.js';
import type { ArtifactOutcome, BuildJob } from './artifact-builder.js';
import type { WorkerMessage } from './build-worker.js';
import { buildManifest, signManifest } from './bundle-packaging.js';

export interface BuildDeps {
  store: Store;
  blobs: BlobStore;
  profiles: readonly Profile[];
  signing: { secretKey: string; keyId: string };
  bundleTtlDays: number;
  log: Logger;
  now: () => Date;
}

/** Golden-sample tolerance: the device runs the very artifact the orchestrator ran, so only runtime/CPU differences remain. */
function goldenTolerance(o: Pick<ArtifactOutcome, 'format' | 'precision'>): number {
  if (o.format === 'tflite') return 1e-3;
  return o.precision === 'fp16' ? 1e-2 : 1e-3;
}

function runWorker(job: BuildJob, onProgress: (m: Extract<WorkerMessage, { type: 'progress' }>) => void, signal?: AbortSignal): Promise<ArtifactOutcome[]> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new EdgepackError('BUILD_INTERRUPTED', 'the orchestrator is shutting down'));
    const worker = new Worker(new URL('./build-worker.js', import.meta.url), { workerData: job });
    let settled = false;
    signal?.addEventListener('abort', () => {
      if (settled) return;
      settled = true;
      void worker.terminate();
      reject(new EdgepackError('BUILD_INTERRUPTED', 'the orchestrator shut down during the build; start it again'));
    }, { once: true });
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'progress') onProgress(m);
      else if (m.type === 'done') { settled = true; resolve(m.outcomes); void worker.terminate(); }
      else { settled = true; reject(new EdgepackError(m.code, m.message)); void worker.terminate(); }
    });
    worker.on('error', (err) => { if (!settled) { settled = true; reject(err); } });
    worker.on('exit', (code) => { if (!settled) { settled = true; reject(new Error(`build worker exited with code ${code}`)); } });
  });
}

/** Runs one build to completion in a worker thread, then signs and records every artifact. Never throws. */
export async function runBuild(deps: BuildDeps, buildId: string, signal?: AbortSignal): Promise<void> {
  const { store, log } = deps;
  const build = store.getBuild(buildId);
  if (!build) return;
  const model = store.getModel(build.modelId);
  if (!model) {
    store.setBuildStatus(buildId, 'failed', `model ${build.modelId} not found`, deps.now().toISOString());
    return;
  }
  store.setBuildStatus(buildId, 'running');
  const profiles = build.profiles.map((id) => deps.profiles.find((p) => p.id === id)).filter((p): p is Profile => !!p);
  const datasets = build.options.datasets ?? {};
  const sha = (id: string | undefined) => (id ? store.getDataset(id)?.sha256 : undefined);
  const job: BuildJob = {
    blobDir: deps.blobs.dir,
    model: { sha256: model.sha256, sizeBytes: model.sizeBytes, format: model.format, inputs: model.inputs, outputs: model.outputs, ...(model.details.precision ? { precision: model.details.precision as Precision } : {}) },
    profiles,
    data: { calibration: sha(datasets.calibration), evaluation: sha(datasets.evaluation), labels: sha(datasets.labels) },
    selection: build.selection,
  };
  let outcomes: ArtifactOutcome[];
  try {
    outcomes = await runWorker(job, (p) => store.setBuildProgress(buildId, { step: p.step, done: p.done, total: p.total }), signal);
  } catch (err) {
    log.warn({ buildId, err }, 'build failed');
    for (const p of build.profiles) store.updateArtifact(buildId, { profile: p, status: 'failed', format: null, precision: null, bundleId: null, sizeBytes: null, reason: errorMessage(err), details: {} });
    store.setBuildStatus(buildId, 'failed', errorMessage(err), deps.now().toISOString());
    return;
  }
  let anyBuilt = false;
  for (const o of outcomes) {
    const profile = profiles.find((p) => p.id === o.profile)!;
    const base: ArtifactRecord = {
      profile: o.profile, status: o.status, format: o.format ?? null, precision: o.precision ?? null, bundleId: null,
      sizeBytes: o.modelFile?.length ?? null, reason: o.reason ?? null, details: { decisions: o.decisions, ...(o.layout ? { layout: o.layout } : {}) },
    };
    if (o.status !== 'built') {
      store.updateArtifact(buildId, base);
      continue;
    }
    // One signed bundle per variant: the built artifact's, and (a device build) every kept
    // candidate's; the host's pick and its candidate are one bundle.
    const sign = (v: { format: 'onnx' | 'tflite'; precision: Precision; layout?: string; modelFile: { sha256: string; length: number }; golden: { sha256: string; length: number; count: number }; io: NonNullable<ArtifactOutcome['io']> }) => {
      const bundleId = newId('bdl');
      const now = deps.now();
      const manifest = buildManifest({
        bundleId,
        model: { name: model.name, version: model.version, sha256: model.sha256 },
        profile,
        format: v.format,
        precision: v.precision,
        ...(v.layout ? { layout: v.layout } : {}),
        modelFile: v.modelFile,
        goldenFile: v.golden,
        io: v.io,
        goldenMaxAbsError: goldenTolerance(v),
        ...(build.options.acceptance?.p95LatencyMs ? { p95LatencyMs: build.options.acceptance.p95LatencyMs } : {}),
        now,
        ttlDays: deps.bundleTtlDays,
        keyId: deps.signing.keyId,
      });
      const signed = signManifest(manifest, deps.signing.secretKey);
      return { id: bundleId, buildId, profile: o.profile, manifest, signature: signed.signature, createdAt: now.toISOString() };
    };
    const main = sign({ format: o.format!, precision: o.precision!, ...(o.layout ? { layout: o.layout } : {}), modelFile: o.modelFile!, golden: o.golden!, io: o.io! });
    const bundleId = main.id;
    const kept = (o.candidates ?? []).map((c, position) => {
      const same = c.format === o.format && c.precision === o.precision;
      return { c, position, bundle: same ? main : sign({ format: c.format, precision: c.precision, layout: c.layout, modelFile: c.modelFile, golden: c.golden, io: c.io }) };
    });
    store.transaction(() => {
      store.insertBundle(main);
      for (const k of kept) {
        if (k.bundle !== main) store.insertBundle(k.bundle);
        store.insertBuildCandidate({
          buildId, profile: o.profile, position: k.position, bundleId: k.bundle.id, format: k.c.format, precision: k.c.precision,
          hostPick: k.c.hostPick, reference: k.c.reference, reason: k.c.reason, metrics: k.c.metrics as unknown as Record<string, unknown>,
        });
      }
      store.updateArtifact(buildId, { ...base, bundleId });
    });
    anyBuilt = true;
  }
  store.setBuildStatus(buildId, anyBuilt ? 'succeeded' : 'failed', anyBuilt ? null : 'no artifact could be built for any profile', deps.now().toISOString());
}
