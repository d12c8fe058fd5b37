// What the agent does with a desired state naming a bundle it already holds, in-process against
// a real broker, with real bundles (a model made in code, golden samples computed with
// onnxruntime, a signed manifest) and real onnxruntime benchmarks: the previous bundle (a fleet
// rollback) comes back from its slot without a download, checked and benchmarked again; the
// active one (a withdrawal) is answered active at once; a slot whose bytes changed is refused.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadProfiles } from '@edgepack/firmware-profiles';
import {
  DeviceTopic, PROTOCOL_VERSION, deviceTopic, generateKeyPair, keyId, signDesired,
  type DesiredState, type SignedManifest, type StatusReport, type TensorSpec,
} from '@edgepack/protocol';
import { buildManifest, signManifest } from '@edgepack/orchestrator/build/bundle-packaging.js';
import { computeOnnxGolden } from '@edgepack/orchestrator/build/golden-samples.js';
import { startBroker, type Broker } from '@edgepack/orchestrator/mqtt/broker.js';
import type { Store } from '@edgepack/orchestrator/db/store.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { inspectModel } from '@edgepack/orchestrator/onnx/inspect.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { Agent } from '@edgepack/agent/agent.js';
import type { Logger } from '@edgepack/agent/logger.js';
import { tempDir, until } from '../support/processes.js';

const ORCH = generateKeyPair();
const DEVICE = generateKeyPair();
const DEVICE_ID = 'dev_agent_rollback';
const PROFILE = 'x86-64-gateway';
const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

interface Made { signed: SignedManifest; files: Record<string, Buffer> }

/** A real bundle: a tiny MLP, its golden outputs from onnxruntime, a manifest signed by the orchestrator key. */
async function makeBundle(bundleId: string, seed: number): Promise<Made> {
  const model = Buffer.from(buildTinyMlpModel({ seed }));
  const info = inspectModel(model);
  const spec = (x: { name: string; type: string; shape: (string | number)[] }): TensorSpec => ({ name: x.name, type: x.type as TensorSpec['type'], shape: x.shape });
  const io = { inputs: info.inputs.map(spec), outputs: info.outputs.map(spec) };
  const golden = Buffer.from(JSON.stringify(await computeOnnxGolden(model, io.inputs)));
  const profile = loadProfiles().find((p) => p.id === PROFILE)!;
  const manifest = buildManifest({
    bundleId, model: { name: 'rb', version: String(seed), sha256: sha(model) }, profile, format: 'onnx', precision: 'fp32',
    modelFile: { sha256: sha(model), length: model.length }, goldenFile: { sha256: sha(golden), length: golden.length, count: 3 },
    io: { inputs: io.inputs, outputs: io.outputs }, goldenMaxAbsError: 1e-4, p95LatencyMs: 10_000, now: new Date(), ttlDays: 30, keyId: keyId(ORCH.publicKey),
  });
  const { signature } = signManifest(manifest, ORCH.secretKey);
  return { signed: { manifest, signature }, files: { 'model.onnx': model, 'golden.json': golden } };
}

/** Puts a bundle in its slot as an install would have left it. */
async function placeInSlot(dataDir: string, b: Made): Promise<void> {
  const dir = join(dataDir, 'bundles', b.signed.manifest.bundleId);
  await mkdir(dir, { recursive: true });
  for (const [name, bytes] of Object.entries(b.files)) await writeFile(join(dir, name), bytes);
}

const record = (b: Made) => JSON.stringify({ bundleId: b.signed.manifest.bundleId, manifest: b.signed.manifest, activatedAt: new Date().toISOString() });

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

/** An agent whose data dir holds `active` and `previous` in their slots, connected to a real broker. */
async function harness(active: Made, previous: Made) {
  const dir = await tempDir('agent-rollback');
  await placeInSlot(dir.path, active);
  await placeInSlot(dir.path, previous);
  await writeFile(join(dir.path, 'active.json'), record(active));
  await writeFile(join(dir.path, 'previous.json'), record(previous));
  const store = { getDeviceKey: (id: string) => (id === DEVICE_ID ? { publicKey: DEVICE.publicKey, revoked: false } : undefined) } as unknown as Store;
  const broker: Broker = await startBroker({ store, log: createLogger('silent'), host: '127.0.0.1', port: 0, now: () => new Date() });
  const reports: StatusReport[] = [];
  const chunkRequests: unknown[] = [];
  const heartbeats: { activeBundle: string | null }[] = [];
  let subscriptions = 0;
  broker.aedes.on('subscribe', (subs, client) => { if (client?.id === DEVICE_ID) subscriptions += subs.length; });
  broker.aedes.on('publish', (packet, client) => {
    if (!client) return;
    const body = () => JSON.parse(packet.payload.toString());
    if (packet.topic === deviceTopic(DEVICE_ID, DeviceTopic.status)) reports.push(body());
    if (packet.topic === deviceTopic(DEVICE_ID, DeviceTopic.chunkRequest)) chunkRequests.push(body());
    if (packet.topic === deviceTopic(DEVICE_ID, DeviceTopic.heartbeat)) heartbeats.push(body());
  });
  const log = createLogger('silent') as unknown as Logger;
  const agent = new Agent({
    dataDir: dir.path, log, agentVersion: 'test', benchmarkRuns: 5,
    identity: {
      deviceId: DEVICE_ID, name: 'test', profile: PROFILE, server: 'http://127.0.0.1:1', publicKey: DEVICE.publicKey, secretKey: DEVICE.secretKey,
      orchestratorPublicKey: ORCH.publicKey, mqtt: { host: '127.0.0.1', port: broker.port }, heartbeatSec: 60, enrolledAt: new Date().toISOString(),
    },
  });
  cleanups.push(() => dir.remove(), () => broker.close(), () => agent.stop());
  await agent.start();
  await until('agent subscribed', async () => subscriptions >= 3, 10_000, 20);
  let seq = 0;
  const send = (rolloutId: string, b: Made) => {
    const d: DesiredState = signDesired({ v: PROTOCOL_VERSION, deviceId: DEVICE_ID, seq: ++seq, rolloutId, bundle: b.signed, issuedAt: new Date().toISOString() }, ORCH.secretKey);
    return new Promise<void>((resolve, reject) => broker.aedes.publish(
      { cmd: 'publish', topic: deviceTopic(DEVICE_ID, DeviceTopic.desired), payload: Buffer.from(JSON.stringify(d)), qos: 1, retain: false, dup: false } as never,
      (err) => (err ? reject(err) : resolve()),
    ));
  };
  const ended = (rolloutId: string) => until(`${rolloutId} ended`, async () => {
    const r = [...reports].reverse().find((x) => x.rolloutId === rolloutId);
    return r && ['active', 'failed', 'rolled_back'].includes(r.state) && r;
  }, 30_000, 20);
  const onDisk = async (file: string) => JSON.parse(await readFile(join(dir.path, file), 'utf8')).bundleId as string;
  return { dataDir: dir.path, reports, chunkRequests, heartbeats, send, ended, onDisk };
}

test('a fleet rollback: the previous bundle comes back from its slot without a download, verified, benchmarked and golden-checked again', async () => {
  const a = await makeBundle('bdl_rb_old', 1);
  const b = await makeBundle('bdl_rb_new', 2);
  const h = await harness(b, a); // runs b; a is the previous
  await h.send('rol_back', a);
  const r = await h.ended('rol_back');
  assert.equal(r.state, 'active', JSON.stringify(r));
  assert.equal(r.bundleId, 'bdl_rb_old');
  // Measured now, on this device: a fresh benchmark with its golden check.
  assert.ok(r.result, 'reported with figures');
  assert.equal(r.result!.golden.passed, true);
  assert.equal(r.result!.golden.samples, 3);
  assert.equal(r.result!.runs, 5);
  assert.ok(r.result!.latencyMs.p95 > 0);
  assert.deepEqual(h.chunkRequests, [], 'not a byte downloaded');
  assert.equal(await h.onDisk('active.json'), 'bdl_rb_old');
  assert.equal(await h.onDisk('previous.json'), 'bdl_rb_new', 'the bundle rolled back from is the new previous one');
  const state = JSON.parse(await readFile(join(h.dataDir, 'state.json'), 'utf8'));
  assert.equal(state.action.phase, 'done');
  assert.equal(state.lastBenchmark.latencyMs.p95, r.result!.latencyMs.p95, 'heartbeats carry the new figures');
  // And forward again, also from the slot.
  await h.send('rol_forward', b);
  assert.equal((await h.ended('rol_forward')).state, 'active');
  assert.deepEqual(h.chunkRequests, []);
  assert.equal(await h.onDisk('active.json'), 'bdl_rb_new');
});

test('a desired state naming the active bundle (a withdrawal) is answered active at once, with nothing installed', async () => {
  const a = await makeBundle('bdl_wd_old', 3);
  const b = await makeBundle('bdl_wd_new', 4);
  const h = await harness(b, a);
  const t0 = Date.now();
  await h.send('rol_withdrawn', b);
  const r = await h.ended('rol_withdrawn');
  assert.equal(r.state, 'active');
  assert.equal(r.bundleId, 'bdl_wd_new');
  assert.ok(Date.now() - t0 < 5000);
  assert.deepEqual(h.reports.filter((x) => x.rolloutId === 'rol_withdrawn').map((x) => x.state), ['active'], 'no download, no benchmark: just the answer');
  assert.deepEqual(h.chunkRequests, []);
  assert.equal(await h.onDisk('previous.json'), 'bdl_wd_old', 'the previous slot is untouched');
});

test('a previous slot whose bytes changed is refused with the hash code, and the device stays on what it runs', async () => {
  const a = await makeBundle('bdl_tp_old', 5);
  const b = await makeBundle('bdl_tp_new', 6);
  const h = await harness(b, a);
  const model = join(h.dataDir, 'bundles', 'bdl_tp_old', 'model.onnx');
  const bytes = await readFile(model);
  bytes[bytes.length - 1] ^= 1;
  await writeFile(model, bytes);
  await h.send('rol_tampered', a);
  const r = await h.ended('rol_tampered');
  assert.equal(r.state, 'failed');
  assert.equal(r.code, 'FILE_HASH_MISMATCH');
  assert.deepEqual(h.chunkRequests, []);
  assert.equal(await h.onDisk('active.json'), 'bdl_tp_new');
});
