// The agent in-process against a real MQTT broker (the orchestrator's Aedes, with a one-device
// stand-in store); the test plays the orchestrator by publishing straight into the broker.
// Nothing here benchmarks: every bundle stays in `downloading`, which is all these need.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CHUNK_SIZE, DeviceTopic, type DeviceTopicKind, MANIFEST_SCHEMA_ID, PROTOCOL_VERSION, deviceTopic, encodeChunkFrame, generateKeyPair, keyId, signCanonical, signDesired,
  type DesiredState, type Manifest, type StatusReport,
} from '@edgepack/protocol';
import { startBroker, type Broker } from '@edgepack/orchestrator/mqtt/broker.js';
import type { Store } from '@edgepack/orchestrator/db/store.js';
import { Agent, type AgentOptions } from '@edgepack/agent/agent.js';
import type { Logger } from '@edgepack/agent/logger.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { tempDir, until } from '../support/processes.js';

const ORCH = generateKeyPair();
const DEVICE = generateKeyPair();
const DEVICE_ID = 'dev_agent_desired';
const PROFILE = 'x86-64-gateway';
const silent = createLogger('silent');

interface Harness {
  agent: Agent;
  broker: Broker;
  dataDir: string;
  logs: { level: string; msg: string; obj: Record<string, unknown> }[];
  reports: StatusReport[];
  chunkRequests: { bundleId: string; sha256: string; index: number; count: number }[];
  send: (kind: DeviceTopicKind, payload: object | Buffer) => Promise<void>;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

async function harness(extra: Partial<AgentOptions> & Record<string, unknown> = {}): Promise<Harness> {
  const dir = await tempDir('agent-desired');
  const store = { getDeviceKey: (id: string) => (id === DEVICE_ID ? { publicKey: DEVICE.publicKey, revoked: false } : undefined) } as unknown as Store;
  const broker = await startBroker({ store, log: silent, host: '127.0.0.1', port: 0, now: () => new Date() });
  const logs: Harness['logs'] = [];
  const reports: StatusReport[] = [];
  const chunkRequests: Harness['chunkRequests'] = [];
  const log: Logger = Object.fromEntries(['error', 'warn', 'info', 'debug'].map((level) =>
    [level, (obj: object, msg?: string) => { logs.push({ level, msg: msg ?? '', obj: obj as Record<string, unknown> }); }])) as unknown as Logger;
  let subscriptions = 0;
  broker.aedes.on('subscribe', (subs, client) => { if (client?.id === DEVICE_ID) subscriptions += subs.length; });
  broker.aedes.on('publish', (packet, client) => {
    if (!client) return;
    if (packet.topic === deviceTopic(DEVICE_ID, DeviceTopic.status)) reports.push(JSON.parse(packet.payload.toString()));
    if (packet.topic === deviceTopic(DEVICE_ID, DeviceTopic.chunkRequest)) chunkRequests.push(JSON.parse(packet.payload.toString()));
  });
  const agent = new Agent({
    dataDir: dir.path, log, agentVersion: 'test',
    identity: {
      deviceId: DEVICE_ID, name: 'test', profile: PROFILE, server: 'http://127.0.0.1:1', publicKey: DEVICE.publicKey, secretKey: DEVICE.secretKey,
      orchestratorPublicKey: ORCH.publicKey, mqtt: { host: '127.0.0.1', port: broker.port }, heartbeatSec: 60, enrolledAt: new Date().toISOString(),
    },
    ...extra,
  } as AgentOptions);
  cleanups.push(() => dir.remove(), () => broker.close(), () => agent.stop());
  await agent.start();
  await until('agent connected', async () => logs.some((l) => l.msg === 'connected') && broker.aedes.connectedClients > 0, 10_000, 20);
  // Wait for the subscriptions, or the first publish could go nowhere.
  await until('agent subscribed', async () => subscriptions >= 3, 10_000, 20);
  const send = (kind: DeviceTopicKind, payload: object | Buffer) => new Promise<void>((resolve, reject) => {
    const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
    broker.aedes.publish({ cmd: 'publish', topic: deviceTopic(DEVICE_ID, kind), payload: bytes, qos: 1, retain: false, dup: false } as never, (err) => (err ? reject(err) : resolve()));
  });
  return { agent, broker, dataDir: dir.path, logs, reports, chunkRequests, send };
}

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** A bundle the device accepts (trusted key, its profile, not expired); its bytes are never sent. */
function bundle(bundleId: string, signingKey = ORCH.secretKey) {
  const now = Date.now();
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId, model: { name: 'm', version: '1', sha256: sha(bundleId) }, profile: PROFILE, format: 'onnx', precision: 'fp32',
    files: [{ path: 'model.onnx', role: 'model', sha256: sha(`model ${bundleId}`), length: 5000 }, { path: 'golden.json', role: 'golden', sha256: sha(`golden ${bundleId}`), length: 10 }],
    io: { inputs: [], outputs: [] }, golden: { file: 'golden.json', count: 0, maxAbsError: 0 }, runtime: { name: 'onnxruntime', executionProviders: ['cpu'] },
    acceptance: {}, createdAt: new Date(now - 60_000).toISOString(), expiresAt: new Date(now + 86_400_000).toISOString(), keyId: keyId(ORCH.publicKey),
  };
  return { manifest, signature: signCanonical(manifest, signingKey) };
}

function desired(seq: number, rolloutId: string, bundleId: string, o: { envelopeKey?: string; bundleKey?: string } = {}): DesiredState {
  return signDesired({ v: PROTOCOL_VERSION, deviceId: DEVICE_ID, seq, rolloutId, bundle: bundle(bundleId, o.bundleKey), issuedAt: new Date().toISOString() }, o.envelopeKey ?? ORCH.secretKey);
}

async function readState(dataDir: string): Promise<any> {
  return JSON.parse(await readFile(join(dataDir, 'state.json'), 'utf8').catch(() => '{"lastSeq":0}'));
}

const lastReport = (h: Harness, rolloutId: string) => [...h.reports].reverse().find((r) => r.rolloutId === rolloutId);

test('a desired state whose envelope is not signed by the orchestrator changes nothing, however high its seq', async () => {
  const h = await harness();
  // Signed with a stranger's key, and the same genuine envelope with its seq pushed up.
  await h.send(DeviceTopic.desired, desired(1_000_000, 'rol_forged', 'bdl_forged', { envelopeKey: generateKeyPair().secretKey }));
  await h.send(DeviceTopic.desired, { ...desired(7, 'rol_bumped', 'bdl_bumped'), seq: 999_999 });
  await until('both refusals logged', async () => h.logs.filter((l) => /signature/i.test(l.msg) && l.level === 'warn').length >= 2, 5000, 20);
  assert.equal((await readState(h.dataDir)).lastSeq, 0);
  assert.deepEqual(h.reports.filter((r) => r.rolloutId !== undefined), []);
  assert.deepEqual(h.chunkRequests, []);

  // A genuine, lower seq is still acted on: nothing locked the device out.
  await h.send(DeviceTopic.desired, desired(5, 'rol_real', 'bdl_real'));
  await until('genuine desired state started', async () => lastReport(h, 'rol_real')?.state === 'downloading', 5000, 20);
  assert.equal((await readState(h.dataDir)).lastSeq, 5);
});

test('a genuine envelope with a bundle the device refuses is reported failed and its seq is used up', async () => {
  const h = await harness();
  await h.send(DeviceTopic.desired, desired(3, 'rol_badbundle', 'bdl_bad', { bundleKey: generateKeyPair().secretKey }));
  const r = await until('refusal reported', async () => lastReport(h, 'rol_badbundle'), 5000, 20);
  assert.equal(r.state, 'failed');
  assert.equal(r.code, 'SIGNATURE_INVALID');
  assert.equal((await readState(h.dataDir)).lastSeq, 3);
});

test('two desired states at once: the older ends terminal (superseded), the newer runs', async () => {
  const h = await harness({ stallMs: 60_000 });
  await Promise.all([h.send(DeviceTopic.desired, desired(1, 'rol_old', 'bdl_old')), h.send(DeviceTopic.desired, desired(2, 'rol_new', 'bdl_new'))]);
  const old = await until('older rollout terminal', async () => {
    const r = lastReport(h, 'rol_old');
    return r && ['failed', 'active', 'rolled_back'].includes(r.state) && r;
  }, 5000, 20);
  assert.equal(old.state, 'failed');
  assert.equal(old.code, 'SUPERSEDED');
  await until('newer rollout downloading', async () => lastReport(h, 'rol_new')?.state === 'downloading' && h.chunkRequests.some((c) => c.bundleId === 'bdl_new'), 5000, 20);
  const s = await readState(h.dataDir);
  assert.equal(s.action.rolloutId, 'rol_new');
  assert.equal(s.lastSeq, 2);
});

test('an older desired state delivered after a newer one is reported superseded, not left pending', async () => {
  const h = await harness({ stallMs: 60_000 });
  await h.send(DeviceTopic.desired, desired(4, 'rol_newer', 'bdl_newer'));
  await until('newer started', async () => lastReport(h, 'rol_newer')?.state === 'downloading', 5000, 20);
  await h.send(DeviceTopic.desired, desired(3, 'rol_late', 'bdl_late'));
  const late = await until('late one reported', async () => lastReport(h, 'rol_late'), 5000, 20);
  assert.equal(late.state, 'failed');
  assert.equal(late.code, 'SUPERSEDED');
  assert.equal(lastReport(h, 'rol_newer')?.state, 'downloading');
});

test('a download that gets no answer fails with DOWNLOAD_STALLED after the configured number of re-asks', async () => {
  const h = await harness({ stallMs: 200, maxStallAsks: 2 });
  await h.send(DeviceTopic.desired, desired(1, 'rol_stall', 'bdl_stall'));
  const r = await until('stall reported', async () => {
    const x = lastReport(h, 'rol_stall');
    return x?.state === 'failed' && x;
  }, 15_000, 50);
  assert.equal(r.code, 'DOWNLOAD_STALLED');
  // The first request plus exactly the allowed re-asks.
  assert.equal(h.chunkRequests.filter((c) => c.bundleId === 'bdl_stall').length, 3);
});

test('an unsigned refusal notice ends only the transfer it names, and only once that transfer has stalled', async () => {
  // A stall alone would take 100 re-asks; the notice cuts that short to one stall.
  const h = await harness({ stallMs: 300, maxStallAsks: 100 });
  await h.send(DeviceTopic.desired, desired(1, 'rol_n', 'bdl_current'));
  await until('download asked', async () => h.chunkRequests.some((c) => c.bundleId === 'bdl_current'), 5000, 20);
  // A late refusal about some other bundle, then a server error about this one.
  await h.send(DeviceTopic.notice, { v: PROTOCOL_VERSION, code: 'BUNDLE_NOT_ASSIGNED', message: 'bundle bdl_other is not assigned', bundleId: 'bdl_other' });
  await h.send(DeviceTopic.notice, { v: PROTOCOL_VERSION, code: 'INTERNAL_ERROR', message: 'could not read bundle bdl_current', bundleId: 'bdl_current' });
  const r = await until('failure reported', async () => {
    const x = lastReport(h, 'rol_n');
    return x?.state === 'failed' && x;
  }, 5000, 20);
  // The device reports what it saw itself (the transfer stalled), with what the broker told it.
  assert.equal(r.code, 'DOWNLOAD_STALLED');
  assert.match(r.reason!, /INTERNAL_ERROR: could not read bundle bdl_current/);
  assert.ok(h.chunkRequests.filter((c) => c.bundleId === 'bdl_current').length < 5, 'ended after a stall, not after every re-ask');
});

test('an unsigned notice without a bundle id, with a refusal code, ends the current transfer once it stalls', async () => {
  const h = await harness({ stallMs: 300, maxStallAsks: 100 });
  await h.send(DeviceTopic.desired, desired(1, 'rol_plain', 'bdl_plain'));
  await until('download asked', async () => h.chunkRequests.some((c) => c.bundleId === 'bdl_plain'), 5000, 20);
  await h.send(DeviceTopic.notice, { v: PROTOCOL_VERSION, code: 'BUNDLE_NOT_ASSIGNED', message: 'not assigned' });
  const r = await until('failure reported', async () => {
    const x = lastReport(h, 'rol_plain');
    return x?.state === 'failed' && x;
  }, 5000, 20);
  assert.equal(r.code, 'DOWNLOAD_STALLED');
  assert.match(r.reason!, /BUNDLE_NOT_ASSIGNED/);
});

test('finding 6: a forged refusal notice from whoever holds the broker does not end a transfer that is making progress', async () => {
  const h = await harness({ stallMs: 400, maxStallAsks: 100 });
  // A bundle whose model file is real bytes, four chunks long, so the test can feed it.
  const model = randomBytes(4 * CHUNK_SIZE - 1000);
  const b = bundle('bdl_fed');
  b.manifest.files[0] = { path: 'model.onnx', role: 'model', sha256: sha(model), length: model.length };
  b.signature = signCanonical(b.manifest, ORCH.secretKey);
  await h.send(DeviceTopic.desired, signDesired({ v: PROTOCOL_VERSION, deviceId: DEVICE_ID, seq: 1, rolloutId: 'rol_fed', bundle: b, issuedAt: new Date().toISOString() }, ORCH.secretKey));
  await until('download asked', async () => h.chunkRequests.some((c) => c.bundleId === 'bdl_fed'), 5000, 20);
  const chunk = (i: number) => encodeChunkFrame({ bundleId: 'bdl_fed', sha256: sha(model), index: i, fileLength: model.length, bytes: model.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE) });
  await h.send(DeviceTopic.chunk, chunk(0));
  for (let i = 1; i < 4; i++) {
    // The forged refusals, each followed by a pause shorter than a stall, then the next chunk.
    await h.send(DeviceTopic.notice, { v: PROTOCOL_VERSION, code: 'BUNDLE_NOT_ASSIGNED', message: 'forged', bundleId: 'bdl_fed' });
    await h.send(DeviceTopic.notice, { v: PROTOCOL_VERSION, code: 'CHUNK_OUT_OF_RANGE', message: 'forged' });
    await new Promise((r) => setTimeout(r, 250));
    await h.send(DeviceTopic.chunk, chunk(i));
  }
  // The model file is in: the agent goes on to the golden file.
  const golden = b.manifest.files[1]!.sha256;
  await until('the next file asked for', async () => h.chunkRequests.some((c) => c.sha256 === golden), 5000, 20);
  assert.equal(h.reports.some((r) => r.rolloutId === 'rol_fed' && r.state === 'failed'), false, 'no failure was reported');
  assert.ok(h.logs.some((l) => l.level === 'warn' && /notice \(unsigned, advisory\): forged/.test(l.msg)), 'the notices were logged');
});

