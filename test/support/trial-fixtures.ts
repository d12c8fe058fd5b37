// Trials as the orchestrator would send them, for tests that play the orchestrator: real small
// ONNX candidates of one model (fp32, int8-dynamic, fp16 made by the orchestrator's own
// optimizer), each with a golden file of its own outputs on the same seeded inputs, signed
// bundles, signed trial desired states, and a chunk server that answers the device's requests.
import { createHash } from 'node:crypto';
import {
  CHUNK_SIZE, DeviceTopic, MANIFEST_SCHEMA_ID, PROTOCOL_VERSION, deviceTopic, encodeChunkFrame, encodeTensor, keyId, signCanonical, signDesired,
  type DesiredState, type GoldenFile, type Manifest, type SignedManifest, type TrialReport,
} from '@edgepack/protocol';
import type { Broker } from '@edgepack/orchestrator/mqtt/broker.js';
import { buildTinyMlpModelProto } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { encodeModel } from '@edgepack/orchestrator/onnx/onnx-model.js';
import { convertToFloat16 } from '@edgepack/orchestrator/optimizer/fp16.js';
import { quantizeDynamic } from '@edgepack/orchestrator/optimizer/quantize-dynamic.js';
import { createRunner } from '@edgepack/agent/runtime/create-runner.js';
import type { TensorValue } from '@edgepack/agent/runtime/runner.js';
import { randomFloats } from './serving-fixtures.js';

const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

export interface Candidate {
  bundle: SignedManifest;
  /** sha256 → bytes, for the chunk server. */
  files: Map<string, Buffer>;
}

/** One model's variants: fp32 (the reference), int8-dynamic and fp16, from the orchestrator's optimizer. */
export function variantModels(seed = 3): Record<'fp32' | 'int8-dynamic' | 'fp16', Uint8Array> {
  const proto = () => buildTinyMlpModelProto({ seed, hidden: 64 });
  return {
    fp32: encodeModel(proto()),
    'int8-dynamic': encodeModel(quantizeDynamic(proto()).model),
    fp16: encodeModel(convertToFloat16(proto()).model),
  };
}

/** A signed candidate bundle whose golden file holds its own outputs on `samples` seeded inputs (the same for every variant). */
export async function candidate(o: {
  bundleId: string; precision: Manifest['precision']; model: Uint8Array; signingKey: string; publicKey: string; profile?: string; samples?: number; maxAbsError?: number;
}): Promise<Candidate> {
  const runner = await createRunner({ format: 'onnx' }, o.model, {});
  const golden: GoldenFile = { samples: [] };
  const enc = (r: Record<string, TensorValue>) => Object.fromEntries(Object.entries(r).map(([k, t]) => [k, encodeTensor(t.dtype, t.dims, t.data)]));
  try {
    for (let i = 0; i < (o.samples ?? 4); i++) {
      const inputs: Record<string, TensorValue> = { input: { dtype: 'float32', dims: [1, 1, 28, 28], data: randomFloats(784, 500 + i) } };
      golden.samples.push({ inputs: enc(inputs), outputs: enc(await runner.run(inputs)) });
    }
  } finally {
    await runner.close();
  }
  const goldenBytes = Buffer.from(JSON.stringify(golden));
  const model = Buffer.from(o.model);
  const now = Date.now();
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId: o.bundleId, model: { name: 'tiny', version: '1', sha256: sha(model) }, profile: o.profile ?? 'x86-64-gateway', format: 'onnx', precision: o.precision,
    files: [
      { path: 'model.onnx', role: 'model', sha256: sha(model), length: model.length },
      { path: 'golden.json', role: 'golden', sha256: sha(goldenBytes), length: goldenBytes.length },
    ],
    io: { inputs: [], outputs: [] }, golden: { file: 'golden.json', count: golden.samples.length, maxAbsError: o.maxAbsError ?? 1e-3 },
    runtime: { name: 'onnxruntime', executionProviders: ['cpu'] }, acceptance: { warmupRuns: 1, runs: 5 },
    createdAt: new Date(now - 60_000).toISOString(), expiresAt: new Date(now + 86_400_000).toISOString(), keyId: keyId(o.publicKey),
  };
  return { bundle: { manifest, signature: signCanonical(manifest, o.signingKey) }, files: new Map([[sha(model), model], [sha(goldenBytes), goldenBytes]]) };
}

export function trialDesired(o: { deviceId: string; seq: number; rolloutId: string; candidates: SignedManifest[]; rounds: number; reference?: string; signingKey: string }): DesiredState {
  const reference = o.reference ?? o.candidates[0]!.manifest.bundleId;
  const bundle = o.candidates.find((c) => c.manifest.bundleId === reference) ?? o.candidates[0]!;
  return signDesired({
    v: PROTOCOL_VERSION, deviceId: o.deviceId, seq: o.seq, rolloutId: o.rolloutId, bundle, issuedAt: new Date().toISOString(),
    kind: 'trial', trial: { candidates: o.candidates, rounds: o.rounds, referenceBundleId: reference },
  }, o.signingKey);
}

/**
 * Plays the orchestrator's side of a device's transfers on a real broker: every chunk request is
 * answered from `files` (sha256 → bytes) unless `hold` says to keep quiet; `tamper` bytes are
 * sent instead of the real ones for a file. Collects the device's trial reports and status reports.
 */
export function deviceRig(broker: Broker, deviceId: string) {
  const files = new Map<string, Buffer>();
  const tamper = new Map<string, Buffer>();
  const rig = {
    files, tamper,
    hold: (_sha: string) => false,
    trialReports: [] as TrialReport[],
    statusReports: [] as { rolloutId: string; state: string; code?: string; bundleId: string }[],
    requests: [] as { bundleId: string; sha256: string; index: number; count: number }[],
    publish: (kind: Parameters<typeof deviceTopic>[1], payload: object | Buffer, retain = false) => new Promise<void>((resolve, reject) => {
      const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
      broker.aedes.publish({ cmd: 'publish', topic: deviceTopic(deviceId, kind), payload: bytes, qos: 1, retain, dup: false } as never, (err) => (err ? reject(err) : resolve()));
    }),
    add: (c: Candidate) => { for (const [k, v] of c.files) files.set(k, v); },
  };
  broker.aedes.on('publish', (packet, client) => {
    if (!client) return;
    if (packet.topic === deviceTopic(deviceId, DeviceTopic.trialReport)) rig.trialReports.push(JSON.parse(packet.payload.toString()));
    if (packet.topic === deviceTopic(deviceId, DeviceTopic.status)) rig.statusReports.push(JSON.parse(packet.payload.toString()));
    if (packet.topic !== deviceTopic(deviceId, DeviceTopic.chunkRequest)) return;
    const req = JSON.parse(packet.payload.toString()) as { bundleId: string; sha256: string; index: number; count: number };
    rig.requests.push(req);
    const real = files.get(req.sha256);
    if (!real || rig.hold(req.sha256)) return;
    const bytes = tamper.get(req.sha256) ?? real;
    void (async () => {
      for (let i = req.index; i < Math.min(req.index + req.count, Math.ceil(bytes.length / CHUNK_SIZE)); i++) {
        await rig.publish(DeviceTopic.chunk, Buffer.from(encodeChunkFrame({ bundleId: req.bundleId, sha256: req.sha256, index: i, fileLength: bytes.length, bytes: bytes.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE) })));
      }
    })();
  });
  return rig;
}
