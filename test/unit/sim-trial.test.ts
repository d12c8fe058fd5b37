// The fleet simulator plays trials: its devices, in-process against a real Aedes broker, fetch
// and check every candidate for real (signature, every byte's hash) and report synthetic figures
// that follow --speed (the device's fp32 figures × the factor of each candidate's precision).
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  CHUNK_SIZE, DeviceTopic, MANIFEST_SCHEMA_ID, encodeChunkFrame, deviceTopic, generateKeyPair, keyId, parseDeviceTopic, signCanonical,
  verifyTrialReport, type Manifest, type SignedManifest, type TrialReport,
} from '@edgepack/protocol';
import { startBroker, type Broker } from '@edgepack/orchestrator/mqtt/broker.js';
import type { Store } from '@edgepack/orchestrator/db/store.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { FleetStore } from '@edgepack/agent/sim/fleet-store.js';
import { SimConfigError, parseSimConfig, simHelp, startFleet, type Fleet } from '@edgepack/agent/sim/index.js';
import type { SpeedFactors } from '@edgepack/agent/sim/synthetic-benchmark.js';
import { tempDir, until } from '../support/processes.js';
import { trialDesired } from '../support/trial-fixtures.js';

const silent = { error() {}, warn() {}, info() {}, debug() {} };
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const ORCH = generateKeyPair();

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

type Settings = { speed?: SpeedFactors; failRate?: number; failCode?: string };

async function harness(n: number, settings: Settings) {
  const dir = await tempDir('sim-trial');
  const keys = Array.from({ length: n }, () => generateKeyPair());
  const ids = keys.map((_, i) => `dev_simtrial_${i + 1}`);
  const byId = new Map(ids.map((id, i) => [id, keys[i]!]));
  const store = { getDeviceKey: (id: string) => (byId.has(id) ? { publicKey: byId.get(id)!.publicKey, revoked: false } : undefined) } as unknown as Store;
  const broker: Broker = await startBroker({ store, log: createLogger('silent'), host: '127.0.0.1', port: 0, now: () => new Date() });
  cleanups.push(() => dir.remove(), () => broker.close());
  const fs = new FleetStore(dir.path, silent);
  for (const [i, id] of ids.entries()) {
    await fs.addIdentity(i + 1, {
      deviceId: id, name: `sim-${i + 1}`, profile: 'raspberry-pi-5', server: 'http://127.0.0.1:1', publicKey: keys[i]!.publicKey, secretKey: keys[i]!.secretKey,
      orchestratorPublicKey: ORCH.publicKey, mqtt: { host: '127.0.0.1', port: broker.port }, heartbeatSec: 5, enrolledAt: new Date().toISOString(),
    });
  }
  const served = new Map<string, Buffer>();
  const trialReports: TrialReport[] = [];
  const chunkRequests: { deviceId: string; bundleId: string; sha256: string }[] = [];
  const publish = (topic: string, payload: Buffer) => new Promise<void>((resolve, reject) => {
    broker.aedes.publish({ cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false } as never, (err) => (err ? reject(err) : resolve()));
  });
  const h = {
    ids, keys: byId, served, trialReports, chunkRequests, fleet: undefined as unknown as Fleet, hold: (_sha: string) => false,
    send: (deviceId: string, payload: object) => publish(deviceTopic(deviceId, DeviceTopic.desired), Buffer.from(JSON.stringify(payload))),
    start: async (s: Settings) => {
      h.fleet = await startFleet({ server: 'http://127.0.0.1:1', devices: n, dataDir: dir.path, stallMs: 2000, maxStallAsks: 2, ...s });
      await h.fleet.ready;
    },
    final: (deviceId: string, seq: number) => until(`${deviceId} trial ${seq} over`, async () => trialReports.find((r) => r.deviceId === deviceId && r.seq === seq && r.state !== 'running'), 10_000, 20),
  };
  broker.aedes.on('publish', (packet, client) => {
    if (!client) return;
    const t = parseDeviceTopic(packet.topic);
    if (!t) return;
    const body = JSON.parse(packet.payload.toString());
    if (t.kind === DeviceTopic.trialReport) trialReports.push(body);
    if (t.kind !== DeviceTopic.chunkRequest) return;
    chunkRequests.push({ deviceId: t.deviceId, ...body });
    const bytes = served.get(body.sha256);
    if (!bytes || h.hold(body.sha256)) return;
    void (async () => {
      for (let i = body.index; i < Math.min(Math.ceil(bytes.length / CHUNK_SIZE), body.index + body.count); i++) {
        await publish(deviceTopic(t.deviceId, DeviceTopic.chunk), encodeChunkFrame({ bundleId: body.bundleId, sha256: body.sha256, index: i, fileLength: bytes.length, bytes: bytes.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE) }));
      }
    })();
  });
  await h.start(settings);
  cleanups.push(() => h.fleet.stop());
  return h;
}

/** A signed candidate of the device's profile whose (random) bytes the harness serves; `tamper` serves other bytes. */
function release(h: { served: Map<string, Buffer> }, bundleId: string, precision: Manifest['precision'], o: { tamper?: boolean } = {}): SignedManifest {
  const bytes = randomBytes(CHUNK_SIZE + 500);
  const golden = Buffer.from(`{"samples":[],"b":"${bundleId}"}`);
  const now = Date.now();
  const m: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId, model: { name: 'm', version: '1', sha256: sha(bytes) }, profile: 'raspberry-pi-5', format: 'onnx', precision,
    files: [{ path: 'model.onnx', role: 'model', sha256: sha(bytes), length: bytes.length }, { path: 'golden.json', role: 'golden', sha256: sha(golden), length: golden.length }],
    io: { inputs: [], outputs: [] }, golden: { file: 'golden.json', count: 3, maxAbsError: 1e-3 }, runtime: { name: 'onnxruntime', executionProviders: ['cpu'] },
    acceptance: { p95LatencyMs: 100, warmupRuns: 2, runs: 20 }, createdAt: new Date(now - 60_000).toISOString(), expiresAt: new Date(now + 86_400_000).toISOString(), keyId: keyId(ORCH.publicKey),
  };
  h.served.set(sha(bytes), o.tamper ? randomBytes(bytes.length) : bytes);
  h.served.set(sha(golden), golden);
  return { manifest: m, signature: signCanonical(m, ORCH.secretKey) };
}

test('--speed shows in the trial figures: each candidate\'s latency is the device\'s fp32 figure × its precision\'s factor (1 when unnamed); agreement 1', async () => {
  const h = await harness(2, { speed: { 'int8-static': 0.6, fp16: 1.1 } });
  const c = [release(h, 'bdl_fp32', 'fp32'), release(h, 'bdl_int8s', 'int8-static'), release(h, 'bdl_fp16', 'fp16'), release(h, 'bdl_int8d', 'int8-dynamic')];
  for (const id of h.ids) await h.send(id, trialDesired({ deviceId: id, seq: 1, rolloutId: 'rol_speed', candidates: c, rounds: 3, signingKey: ORCH.secretKey }));
  const fp32P95 = new Set<number>();
  for (const id of h.ids) {
    const r = await h.final(id, 1);
    assert.equal(r.state, 'done', JSON.stringify(r));
    assert.ok(verifyTrialReport(r, h.keys.get(id)!.publicKey));
    assert.ok(h.trialReports.some((x) => x.deviceId === id && x.seq === 1 && x.state === 'running'));
    const by = Object.fromEntries(r.results.map((x) => [x.precision, x]));
    const base = by.fp32!.result!.latencyMs;
    fp32P95.add(base.p95);
    const near = (a: number, b: number) => Math.abs(a - b) <= 0.002;
    for (const [p, f] of [['int8-static', 0.6], ['fp16', 1.1], ['int8-dynamic', 1]] as const) {
      const l = by[p]!.result!.latencyMs;
      for (const k of ['p50', 'p90', 'p95', 'p99'] as const) assert.ok(near(l[k], base[k] * f), `${id} ${p} ${k}: ${l[k]} vs ${base[k]} × ${f}`);
      assert.equal(by[p]!.code, undefined);
      assert.equal(by[p]!.agreement!.top1, 1);
    }
    assert.deepEqual(by.fp32!.agreement, { top1: 1, maxAbsError: 0, samples: 3 });
    assert.equal(by.fp32!.result!.runs, 60, 'twenty runs in each of three rounds');
    // Every candidate fetched for real by this device.
    for (const b of c) assert.ok(h.chunkRequests.some((q) => q.deviceId === id && q.bundleId === b.manifest.bundleId));
  }
  assert.equal(fp32P95.size, 2, 'each device has its own baseline');
  // Nothing was installed: the fleet counts no active device.
  assert.equal(h.fleet.stats().states.active, undefined);
});

test('sim trials: an injected GOLDEN_MISMATCH fails the non-reference candidates\' golden checks; a tampered file fails its own candidate; a restart mid-trial reports TRIAL_INTERRUPTED', async () => {
  const h = await harness(1, { failRate: 1, failCode: 'GOLDEN_MISMATCH' });
  const id = h.ids[0]!;
  const fp32 = release(h, 'bdl_ref', 'fp32');
  const int8 = release(h, 'bdl_q', 'int8-static');
  const bad = release(h, 'bdl_bad', 'fp16', { tamper: true });
  await h.send(id, trialDesired({ deviceId: id, seq: 1, rolloutId: 'rol_g', candidates: [fp32, int8, bad], rounds: 2, signingKey: ORCH.secretKey }));
  const r = await h.final(id, 1);
  assert.equal(r.state, 'done');
  const by = Object.fromEntries(r.results.map((x) => [x.bundleId, x]));
  assert.equal(by.bdl_ref!.code, undefined, 'the reference is never injected');
  assert.equal(by.bdl_q!.code, 'GOLDEN_MISMATCH');
  assert.equal(by.bdl_q!.result!.golden.passed, false);
  assert.ok(by.bdl_q!.agreement!.top1 < 1);
  assert.equal(by.bdl_bad!.code, 'FILE_HASH_MISMATCH');

  // A restart while the trial waits on a file: reported interrupted, never run again.
  const held = int8.manifest.files[0]!.sha256;
  h.hold = (s) => s === held;
  const d = trialDesired({ deviceId: id, seq: 2, rolloutId: 'rol_cut', candidates: [fp32, int8], rounds: 1, signingKey: ORCH.secretKey });
  await h.send(id, d);
  await until('the held file asked for', async () => h.chunkRequests.some((q) => q.sha256 === held), 10_000, 20);
  await h.fleet.stop();
  h.hold = () => false;
  await h.start({ failRate: 1, failCode: 'GOLDEN_MISMATCH' });
  const cut = await h.final(id, 2);
  assert.equal(cut.state, 'failed');
  assert.equal(cut.code, 'TRIAL_INTERRUPTED');
  const asked = h.chunkRequests.length;
  await h.send(id, d);
  await until('answered again', async () => h.trialReports.filter((x) => x.seq === 2 && x.state === 'failed').length >= 2, 5000, 20);
  assert.equal(h.trialReports.filter((x) => x.seq === 2 && x.state === 'running').length, 1);
  assert.equal(h.chunkRequests.length, asked);
});

test('--speed and EDGEPACK_SIM_SPEED: precision names of the manifest, factors above 0, the flag winning; a bad one names its source', () => {
  const base = ['--server', 'http://127.0.0.1:1', '--devices', '1'];
  const c = parseSimConfig(base, { EDGEPACK_SIM_SPEED: 'int8-static=0.6, fp16=1.1' });
  assert.ok(typeof c === 'object');
  assert.deepEqual(c.speed, { 'int8-static': 0.6, fp16: 1.1 });
  const flag = parseSimConfig([...base, '--speed', 'int8=0.5'], { EDGEPACK_SIM_SPEED: 'fp16=2' });
  assert.ok(typeof flag === 'object');
  assert.deepEqual(flag.speed, { int8: 0.5 });
  const empty = parseSimConfig(base, {});
  assert.ok(typeof empty === 'object');
  assert.deepEqual(empty.speed, {});
  const refuse = (env: Record<string, string>, argv: string[], pattern: RegExp) =>
    assert.throws(() => parseSimConfig([...base, ...argv], env), (e: unknown) => e instanceof SimConfigError && e.code === 'CONFIG_INVALID' && pattern.test(e.message));
  refuse({ EDGEPACK_SIM_SPEED: 'fp8=0.5' }, [], /EDGEPACK_SIM_SPEED: "fp8=0.5" does not name a precision/);
  refuse({}, ['--speed', 'fp16=0'], /--speed: the factor of fp16 must be a number above 0/);
  refuse({}, ['--speed', 'fp16'], /does not name a precision|factor/);
  assert.match(simHelp(), /--speed PREC=F[\s\S]*trials[\s\S]*EDGEPACK_SIM_SPEED/);
});
