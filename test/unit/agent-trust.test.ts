// The agent's use of the root chain, in-process against a real MQTT broker (the orchestrator's
// Aedes with a one-device stand-in store); the test plays the orchestrator by publishing into
// the broker, with real keys and signatures. Bundles stay in `downloading`: nothing is served.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  DeviceTopic, MANIFEST_SCHEMA_ID, PROTOCOL_VERSION, TRUST_LIMITS, createRoot, deviceTopic, generateKeyPair, keyId, signCanonical, signDesired, signRoot,
  type DesiredState, type KeyPair, type Manifest, type SignedRoot, type StatusReport,
} from '@edgepack/protocol';
import { startBroker } from '@edgepack/orchestrator/mqtt/broker.js';
import type { Store } from '@edgepack/orchestrator/db/store.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { Agent } from '@edgepack/agent/agent.js';
import type { Logger } from '@edgepack/agent/logger.js';
import { tempDir, until } from '../support/processes.js';

const DEVICE = generateKeyPair();
const DEVICE_ID = 'dev_agent_trust';
const PROFILE = 'x86-64-gateway';
const DAY = 86_400_000;
const ROOT_KEYS = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
const ONLINE = generateKeyPair();
const ONLINE2 = generateKeyPair();
const STRANGER = generateKeyPair();
const silent = createLogger('silent');
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => { while (cleanups.length) await cleanups.pop()!().catch(() => undefined); });

const signWith = (r: SignedRoot, ...keys: KeyPair[]) => keys.reduce((acc, k) => signRoot(acc, k.secretKey), r);
function root(version: number, online: KeyPair, o: { expires?: number; rootKeys?: KeyPair[] } = {}): SignedRoot {
  return createRoot({
    version, expires: new Date(Date.now() + (o.expires ?? 365 * DAY)), rootKeys: (o.rootKeys ?? ROOT_KEYS).map((k) => k.publicKey), rootThreshold: 2, bundlesKeys: [online.publicKey],
  });
}
const V1 = signWith(root(1, ONLINE), ROOT_KEYS[0], ROOT_KEYS[1]);
const V2 = signWith(root(2, ONLINE2), ROOT_KEYS[1], ROOT_KEYS[2]);

function bundle(bundleId: string, signer: KeyPair) {
  const now = Date.now();
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId, model: { name: 'm', version: '1', sha256: sha(bundleId) }, profile: PROFILE, format: 'onnx', precision: 'fp32',
    files: [{ path: 'model.onnx', role: 'model', sha256: sha(`model ${bundleId}`), length: 5000 }, { path: 'golden.json', role: 'golden', sha256: sha(`golden ${bundleId}`), length: 10 }],
    io: { inputs: [], outputs: [] }, golden: { file: 'golden.json', count: 0, maxAbsError: 0 }, runtime: { name: 'onnxruntime', executionProviders: ['cpu'] },
    acceptance: {}, createdAt: new Date(now - 60_000).toISOString(), expiresAt: new Date(now + DAY).toISOString(), keyId: keyId(signer.publicKey),
  };
  return { manifest, signature: signCanonical(manifest, signer.secretKey) };
}

function desired(seq: number, signer: KeyPair, o: { roots?: unknown[]; bundleSigner?: KeyPair } = {}): DesiredState {
  const d = signDesired({ v: PROTOCOL_VERSION, deviceId: DEVICE_ID, seq, rolloutId: `rol_${seq}`, bundle: bundle(`bdl_${seq}`, o.bundleSigner ?? signer), issuedAt: new Date().toISOString() }, signer.secretKey);
  return o.roots ? { ...d, roots: o.roots } : d;
}

async function harness(o: { dataDir?: string; trustedRoot?: SignedRoot } = {}) {
  let dataDir = o.dataDir;
  if (!dataDir) {
    const d = await tempDir('agent-trust');
    cleanups.push(d.remove);
    dataDir = d.path;
  }
  const store = { getDeviceKey: (id: string) => (id === DEVICE_ID ? { publicKey: DEVICE.publicKey, revoked: false } : undefined) } as unknown as Store;
  const broker = await startBroker({ store, log: silent, host: '127.0.0.1', port: 0, now: () => new Date() });
  const logs: { level: string; msg: string; obj: Record<string, unknown> }[] = [];
  const reports: StatusReport[] = [];
  const log: Logger = Object.fromEntries(['error', 'warn', 'info', 'debug'].map((level) =>
    [level, (obj: object, msg?: string) => { logs.push({ level, msg: msg ?? '', obj: obj as Record<string, unknown> }); }])) as unknown as Logger;
  let subscriptions = 0;
  broker.aedes.on('subscribe', (subs, client) => { if (client?.id === DEVICE_ID) subscriptions += subs.length; });
  broker.aedes.on('publish', (packet, client) => {
    if (client && packet.topic === deviceTopic(DEVICE_ID, DeviceTopic.status)) reports.push(JSON.parse(packet.payload.toString()));
  });
  const agent = new Agent({
    dataDir, log, agentVersion: 'test', stallMs: 60_000,
    identity: {
      deviceId: DEVICE_ID, name: 'test', profile: PROFILE, server: 'http://127.0.0.1:1', publicKey: DEVICE.publicKey, secretKey: DEVICE.secretKey,
      orchestratorPublicKey: ONLINE.publicKey, trustedRoot: o.trustedRoot ?? V1, mqtt: { host: '127.0.0.1', port: broker.port }, heartbeatSec: 60, enrolledAt: new Date().toISOString(),
    },
  });
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= (async () => { await agent.stop(); await broker.close(); })());
  cleanups.push(stop);
  await agent.start();
  await until('agent subscribed', async () => subscriptions >= 3, 10_000, 20);
  const send = (d: DesiredState | Buffer) => new Promise<void>((resolve, reject) => {
    broker.aedes.publish({ cmd: 'publish', topic: deviceTopic(DEVICE_ID, DeviceTopic.desired), payload: Buffer.isBuffer(d) ? d : Buffer.from(JSON.stringify(d)), qos: 1, retain: false, dup: false } as never,
      (err) => (err ? reject(err) : resolve()));
  });
  const report = (seq: number) => [...reports].reverse().find((r) => r.rolloutId === `rol_${seq}`);
  const refused = (code: string) => until(`refusal ${code} logged`, async () => logs.find((l) => l.obj.code === code), 5000, 20);
  const lastSeq = async () => JSON.parse(await readFile(join(dataDir!, 'state.json'), 'utf8').catch(() => '{"lastSeq":0}')).lastSeq as number;
  const trusted = async () => JSON.parse(await readFile(join(dataDir!, 'trust.json'), 'utf8').catch(() => '{"signed":{"version":0}}')).signed.version as number;
  return { agent, dataDir, logs, send, report, refused, lastSeq, trusted, stop };
}

test('the agent walks the chain a desired state carries, persists the new root, then takes the new key and refuses the old one', async () => {
  const h = await harness();
  await h.send(desired(1, ONLINE));
  await until('v1-key rollout started', async () => h.report(1)?.state === 'downloading', 5000, 20);
  // The rotated key alone, before its root is known: refused, seq not used up.
  await h.send(desired(2, ONLINE2));
  await h.refused('DESIRED_SIGNATURE_INVALID');
  assert.equal(await h.lastSeq(), 1);
  await h.send(desired(3, ONLINE2, { roots: [V1, V2] }));
  await until('v2-key rollout started', async () => h.report(3)?.state === 'downloading', 5000, 20);
  assert.equal(await h.trusted(), 2);
  const before = h.logs.filter((l) => l.obj.code === 'DESIRED_SIGNATURE_INVALID').length;
  await h.send(desired(4, ONLINE, { roots: [V1] }));
  await until('old key refused', async () => h.logs.filter((l) => l.obj.code === 'DESIRED_SIGNATURE_INVALID').length > before, 5000, 20);
  assert.equal(await h.lastSeq(), 3);
  assert.equal(h.report(4), undefined);
});

test('rollback across a restart: the persisted root wins over the enrollment one, and an old chain does not move it back', async () => {
  const first = await harness();
  await first.send(desired(1, ONLINE2, { roots: [V2, V1] }));
  await until('started', async () => first.report(1)?.state === 'downloading', 5000, 20);
  await first.stop();
  const h = await harness({ dataDir: first.dataDir });
  assert.ok(h.logs.some((l) => l.msg === 'trusted root' && l.obj.rootVersion === 2));
  await h.send(desired(5, ONLINE, { roots: [V1] }));
  await h.refused('DESIRED_SIGNATURE_INVALID');
  assert.equal(await h.trusted(), 2);
  assert.equal(await h.lastSeq(), 1);
});

test('a damaged trust.json falls back to the enrollment root and the chain is walked again', async () => {
  const first = await harness();
  await writeFile(join(first.dataDir, 'trust.json'), '{"signed": garbage');
  await first.stop();
  const h = await harness({ dataDir: first.dataDir });
  assert.ok(h.logs.some((l) => l.level === 'error' && /trust\.json is unusable/.test(l.msg)));
  await h.send(desired(1, ONLINE2, { roots: [V1, V2] }));
  await until('started', async () => h.report(1)?.state === 'downloading', 5000, 20);
  assert.equal(await h.trusted(), 2);
});

test('key compromise below the threshold: a root signed by one stolen root key is not followed', async () => {
  const h = await harness();
  const evil = signWith(root(2, STRANGER), ROOT_KEYS[0]);
  await h.send(desired(1, STRANGER, { roots: [V1, { ...evil, signatures: [...evil.signatures, ...evil.signatures] }] }));
  await h.refused('ROOT_THRESHOLD_NOT_MET');
  await h.refused('DESIRED_SIGNATURE_INVALID');
  assert.equal(await h.trusted(), 0, 'nothing persisted');
  assert.equal(await h.lastSeq(), 0);
});

test('indefinite freeze: with an expired root a genuine desired state is ignored, until a fresh root arrives', async () => {
  const stale = signWith(root(1, ONLINE, { expires: -1000 }), ...ROOT_KEYS);
  const h = await harness({ trustedRoot: stale });
  await h.send(desired(1, ONLINE));
  await h.refused('ROOT_EXPIRED');
  assert.equal(await h.lastSeq(), 0);
  const fresh = signWith(root(2, ONLINE), ROOT_KEYS[0], ROOT_KEYS[2]);
  await h.send(desired(1, ONLINE, { roots: [stale, fresh] }));
  await until('started', async () => h.report(1)?.state === 'downloading', 5000, 20);
});

test('endless data: an oversized root in the chain is refused unread; the desired state is still judged on the trusted root', async () => {
  const h = await harness();
  const huge = { ...signWith(root(2, ONLINE2), ...ROOT_KEYS), padding: 'x'.repeat(TRUST_LIMITS.maxRootBytes) };
  await h.send(desired(1, ONLINE, { roots: [V1, huge] }));
  await h.refused('TRUST_METADATA_TOO_LARGE');
  await until('started under v1', async () => h.report(1)?.state === 'downloading', 5000, 20);
  assert.equal(await h.trusted(), 0);
});

test('mix-and-match: a current envelope carrying a manifest from the revoked delegation is reported failed before download', async () => {
  const h = await harness();
  await h.send(desired(1, ONLINE2, { roots: [V1, V2], bundleSigner: ONLINE }));
  const r = await until('refusal reported', async () => h.report(1), 5000, 20);
  assert.equal(r.state, 'failed');
  assert.equal(r.code, 'BUNDLE_KEY_NOT_DELEGATED');
});
