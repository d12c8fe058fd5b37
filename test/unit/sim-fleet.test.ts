// The fleet simulator: its pure parts (benchmark synthesis, seeded choices, settings) directly,
// and its devices in-process against a real Aedes broker (the orchestrator's, with a stand-in
// device store), the test playing the orchestrator: it signs desired states and serves chunks.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CHUNK_SIZE, DeviceTopic, MANIFEST_SCHEMA_ID, PROTOCOL_VERSION, encodeChunkFrame, deviceTopic, generateKeyPair, keyId, parseDeviceTopic, signCanonical, signDesired,
  type DesiredState, type Heartbeat, type Manifest, type StatusReport,
} from '@edgepack/protocol';
import { startBroker, type Broker } from '@edgepack/orchestrator/mqtt/broker.js';
import type { Store } from '@edgepack/orchestrator/db/store.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { FleetStore } from '@edgepack/agent/sim/fleet-store.js';
import {
  baselineFigures, offlineIndexes, parseSimConfig, simHelp, startFleet, synthesizeBenchmark, unitHash, SimConfigError, type Fleet,
} from '@edgepack/agent/sim/index.js';
import { repoRoot } from '../support/paths.js';
import { tempDir, until } from '../support/processes.js';
import { SIM_BIN } from '../support/sim.js';

const silent = { error() {}, warn() {}, info() {}, debug() {} };
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

// ---------------------------------------------------------------- pure parts

function manifestFor(o: Partial<Manifest> & { bytes?: Buffer } = {}): Manifest {
  const bytes = o.bytes ?? Buffer.from('model');
  const golden = Buffer.from('{"samples":[]}');
  const now = Date.now();
  return {
    schema: MANIFEST_SCHEMA_ID, bundleId: o.bundleId ?? 'bdl_x', model: { name: 'm', version: '1', sha256: sha(bytes) }, profile: o.profile ?? 'x86-64-gateway',
    format: 'onnx', precision: o.precision ?? 'fp32',
    files: [{ path: 'model.onnx', role: 'model', sha256: sha(bytes), length: bytes.length }, { path: 'golden.json', role: 'golden', sha256: sha(golden), length: golden.length }],
    io: { inputs: [], outputs: [] }, golden: { file: 'golden.json', count: 3, maxAbsError: 1e-4 }, runtime: { name: 'onnxruntime', executionProviders: ['cpu'] },
    acceptance: o.acceptance ?? { p95LatencyMs: 100, warmupRuns: 5, runs: 50 },
    createdAt: new Date(now - 60_000).toISOString(), expiresAt: new Date(now + 86_400_000).toISOString(), keyId: 'k',
  };
}

const REF = { p50: 10, p90: 12, p95: 13, p99: 15 };

test('synthesizeBenchmark: figures follow the reference × factor × the speed of the precision, shaped like a real result', () => {
  const m = manifestFor({ precision: 'int8-static' });
  const same = synthesizeBenchmark({ manifest: m, reference: REF, factor: 1, speed: {} });
  assert.deepEqual(same.result.latencyMs, REF);
  assert.deepEqual(same.reference, REF);
  assert.equal(same.result.golden.passed, true);
  assert.equal(same.result.golden.samples, 3);
  assert.equal(same.result.runs, 50);
  assert.equal(same.result.warmupRuns, 5);
  assert.equal(same.result.runtime, 'onnxruntime');

  const slower = synthesizeBenchmark({ manifest: m, reference: REF, factor: 1.5, speed: { 'int8-static': 0.6, fp16: 1.1 } });
  assert.equal(slower.result.latencyMs.p95, 13 * 1.5 * 0.6);
  // The reference stays fp32-equivalent: the next bundle scales from the model, not from int8.
  assert.deepEqual(slower.reference, { p50: 15, p90: 18, p95: 19.5, p99: 22.5 });
  const fp32 = synthesizeBenchmark({ manifest: manifestFor({ precision: 'fp32' }), reference: REF, factor: 1, speed: { 'int8-static': 0.6 } });
  assert.equal(fp32.result.latencyMs.p95, 13);
});

test('synthesizeBenchmark: an injected golden mismatch fails the golden check; an injected latency failure is over the budget', () => {
  const m = manifestFor();
  const g = synthesizeBenchmark({ manifest: m, reference: REF, factor: 1, speed: {}, inject: 'GOLDEN_MISMATCH' });
  assert.equal(g.result.golden.passed, false);
  assert.ok(g.result.golden.maxAbsError > m.golden.maxAbsError);
  const l = synthesizeBenchmark({ manifest: m, reference: REF, factor: 1, speed: {}, inject: 'LATENCY_BUDGET_EXCEEDED' });
  assert.equal(l.result.latencyMs.p95, 150);
  assert.ok(l.result.latencyMs.p50 < l.result.latencyMs.p95 && l.result.latencyMs.p95 < l.result.latencyMs.p99);
  const noBudget = synthesizeBenchmark({ manifest: manifestFor({ acceptance: {} }), reference: REF, factor: 1, speed: {}, inject: 'LATENCY_BUDGET_EXCEEDED' });
  assert.equal(noBudget.result.latencyMs.p95, 26);
});

test('baselines sit inside the budget; seeded draws repeat and spread', () => {
  for (const u of [0, 0.5, 0.999]) {
    const b = baselineFigures(100, u);
    assert.ok(b.p95 >= 30 && b.p95 <= 50);
    assert.ok(b.p50 < b.p90 && b.p90 < b.p95 && b.p95 < b.p99);
  }
  assert.equal(unitHash('s', 'fail', 'dev_1', 'bdl_1'), unitHash('s', 'fail', 'dev_1', 'bdl_1'));
  assert.notEqual(unitHash('s', 'fail', 'dev_1', 'bdl_1'), unitHash('s', 'fail', 'dev_1', 'bdl_2'));
  const draws = Array.from({ length: 1000 }, (_, i) => unitHash('s', String(i)));
  assert.ok(draws.every((d) => d >= 0 && d < 1));
  const below = draws.filter((d) => d < 0.2).length;
  assert.ok(below > 150 && below < 250, `${below} of 1000 below 0.2`);
});

test('offlineIndexes: exactly round(rate × n), the same for the same seed, and a higher rate only adds devices', () => {
  const idx = Array.from({ length: 40 }, (_, i) => i + 1);
  const a = offlineIndexes(idx, 0.1, 'seed');
  assert.equal(a.size, 4);
  assert.deepEqual([...offlineIndexes(idx, 0.1, 'seed')], [...a]);
  const b = offlineIndexes(idx, 0.25, 'seed');
  assert.equal(b.size, 10);
  for (const i of a) assert.ok(b.has(i));
  assert.equal(offlineIndexes(idx, 0, 'seed').size, 0);
  assert.equal(offlineIndexes(idx, 1, 'seed').size, 40);
  assert.notDeepEqual([...offlineIndexes(idx, 0.25, 'other')].sort(), [...b].sort());
});

test('settings: flags win over EDGEPACK_SIM_* variables, defaults fill the rest, bad values name their option', () => {
  const c = parseSimConfig(['--server', 'http://127.0.0.1:8080', '--devices', '5', '--fail-rate', '0.2', '--speed', 'int8-static=0.6,fp16=1.1'],
    { EDGEPACK_SIM_DEVICES: '9', EDGEPACK_SIM_TAGS: 'a, b', EDGEPACK_SIM_OFFLINE_RATE: '0.1' });
  assert.ok(typeof c === 'object');
  assert.equal(c.devices, 5);
  assert.equal(c.failRate, 0.2);
  assert.equal(c.offlineRate, 0.1);
  assert.deepEqual(c.tags, ['a', 'b']);
  assert.deepEqual(c.speed, { 'int8-static': 0.6, fp16: 1.1 });
  assert.equal(c.failCode, 'GOLDEN_MISMATCH');
  assert.equal(c.p95Factor, 1);
  assert.equal(parseSimConfig(['--help'], {}), 'help');
  assert.equal(parseSimConfig(['--version'], {}), 'version');
  const refuse = (argv: string[], env: Record<string, string>, pattern: RegExp) =>
    assert.throws(() => parseSimConfig(argv, env), (e: unknown) => e instanceof SimConfigError && e.code === 'CONFIG_INVALID' && pattern.test(e.message));
  const base = ['--server', 'http://x:1'];
  refuse(['--devices', '3'], {}, /--server .*required/);
  refuse(base, {}, /--devices .*required/);
  refuse([...base, '--devices', '0'], {}, /--devices must be a positive integer/);
  refuse([...base, '--devices', '2'], { EDGEPACK_SIM_FAIL_RATE: '1.5' }, /EDGEPACK_SIM_FAIL_RATE must be a number from 0 to 1/);
  refuse([...base, '--devices', '2', '--speed', 'int4=0.5'], {}, /does not name a precision/);
  refuse([...base, '--devices', '2', '--speed', 'fp16=fast'], {}, /factor of fp16/);
  refuse([...base, '--devices', '2', '--fail-code', 'oops'], {}, /--fail-code/);
  refuse([...base, '--devices', '2', '--nope'], {}, /nope/);
  // Every option and its variable are in the help.
  for (const flag of ['--server', '--admin-token-file', '--devices', '--offline-rate', '--speed', 'EDGEPACK_SIM_P95_FACTOR']) assert.ok(simHelp().includes(flag), flag);
});

test('the committed bin: --version, --help, a bad flag exits 2 naming it, enrolling without the admin token fails with its code', async () => {
  const run = (args: string[]) => spawnSync(process.execPath, [SIM_BIN(), ...args], { encoding: 'utf8', env: { ...process.env, EDGEPACK_SIM_SERVER: '' } });
  const pkg = JSON.parse(await readFile(join(repoRoot(), 'agent/package.json'), 'utf8')) as { version: string; bin: Record<string, string> };
  assert.equal(pkg.bin['edgepack-sim'], './bin/edgepack-sim.js');
  const v = run(['--version']);
  assert.equal(v.status, 0);
  assert.equal(v.stdout.trim(), pkg.version);
  const help = run(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /usage: edgepack-sim/);
  const bad = run(['--server', 'http://127.0.0.1:1', '--devices', 'many']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--devices must be a positive integer/);
  const dir = await tempDir('sim-cli');
  try {
    const noToken = run(['--server', 'http://127.0.0.1:1', '--devices', '1', '--data-dir', dir.path]);
    assert.equal(noToken.status, 1);
    assert.match(noToken.stderr, /\[CONFIG_INVALID\] enrolling devices needs the admin token/);
  } finally {
    await dir.remove();
  }
});

// ---------------------------------------------------------------- devices against a real broker

const ORCH = generateKeyPair();
const PROFILE = 'x86-64-gateway';

interface Harness {
  fleet: Fleet;
  /** Stops the fleet and starts it again on the same data dir with other settings. */
  restart: (options: FleetSettings) => Promise<void>;
  ids: string[];
  reports: StatusReport[];
  heartbeats: Heartbeat[];
  chunkRequests: { deviceId: string; bundleId: string; sha256: string; index: number; count: number }[];
  send: (deviceId: string, payload: object | Buffer) => Promise<void>;
  /** Bytes served for each file sha256 (what the test's "orchestrator" sends). */
  served: Map<string, Buffer>;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

type FleetSettings = { failRate?: number; p95Factor?: number };

async function harness(n: number, options: FleetSettings = {}): Promise<Harness> {
  const dir = await tempDir('sim-fleet');
  const keys = Array.from({ length: n }, () => generateKeyPair());
  const ids = keys.map((_, i) => `dev_sim_${i + 1}`);
  const byId = new Map(ids.map((id, i) => [id, keys[i]!]));
  const store = { getDeviceKey: (id: string) => (byId.has(id) ? { publicKey: byId.get(id)!.publicKey, revoked: false } : undefined) } as unknown as Store;
  const broker: Broker = await startBroker({ store, log: createLogger('silent'), host: '127.0.0.1', port: 0, now: () => new Date() });
  cleanups.push(() => dir.remove(), () => broker.close());
  // Devices "enrolled" earlier: the fleet starts from its data dir without the HTTP API.
  const fs = new FleetStore(dir.path, silent);
  for (const [i, id] of ids.entries()) {
    await fs.addIdentity(i + 1, {
      deviceId: id, name: `sim-${i + 1}`, profile: PROFILE, server: 'http://127.0.0.1:1', publicKey: keys[i]!.publicKey, secretKey: keys[i]!.secretKey,
      orchestratorPublicKey: ORCH.publicKey, mqtt: { host: '127.0.0.1', port: broker.port }, heartbeatSec: 1, enrolledAt: new Date().toISOString(),
    });
  }
  const h: Harness = { fleet: undefined as unknown as Fleet, restart: async () => undefined, ids, reports: [], heartbeats: [], chunkRequests: [], served: new Map(), send: async () => undefined };
  const publish = (topic: string, payload: Buffer) => new Promise<void>((resolve, reject) => {
    broker.aedes.publish({ cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false } as never, (err) => (err ? reject(err) : resolve()));
  });
  broker.aedes.on('publish', (packet, client) => {
    if (!client) return;
    const t = parseDeviceTopic(packet.topic);
    if (!t) return;
    const body = JSON.parse(packet.payload.toString());
    if (t.kind === DeviceTopic.status) h.reports.push(body);
    if (t.kind === DeviceTopic.heartbeat) h.heartbeats.push(body);
    if (t.kind === DeviceTopic.chunkRequest) {
      h.chunkRequests.push({ deviceId: t.deviceId, ...body });
      const bytes = h.served.get(body.sha256);
      if (!bytes) return;
      const total = Math.max(1, Math.ceil(bytes.length / CHUNK_SIZE));
      void (async () => {
        for (let i = body.index; i < Math.min(total, body.index + body.count); i++) {
          await publish(deviceTopic(t.deviceId, DeviceTopic.chunk), encodeChunkFrame({ bundleId: body.bundleId, sha256: body.sha256, index: i, fileLength: bytes.length, bytes: bytes.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE) }));
        }
      })();
    }
  });
  h.send = (deviceId, payload) => publish(deviceTopic(deviceId, DeviceTopic.desired), Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload)));
  const start = async (settings: FleetSettings) => {
    h.fleet = await startFleet({ server: 'http://127.0.0.1:1', devices: n, dataDir: dir.path, stallMs: 2000, maxStallAsks: 2, ...settings });
    const ready = await h.fleet.ready;
    assert.equal(ready.enrolled, 0);
    assert.equal(ready.online, n);
  };
  h.restart = async (settings) => {
    await h.fleet.stop();
    await start(settings);
  };
  await start(options);
  cleanups.push(() => h.fleet.stop());
  return h;
}

/** A signed bundle whose files the harness serves (`tamper` serves other bytes than the manifest names). */
function release(h: Harness, bundleId: string, o: { tamper?: boolean; size?: number } = {}) {
  const bytes = randomBytes(o.size ?? CHUNK_SIZE * 2 + 100);
  const golden = Buffer.from(`{"samples":[],"b":"${bundleId}"}`);
  const m = manifestFor({ bundleId, bytes });
  m.files[1] = { path: 'golden.json', role: 'golden', sha256: sha(golden), length: golden.length };
  m.keyId = keyId(ORCH.publicKey);
  const signed = { manifest: m, signature: signCanonical(m, ORCH.secretKey) };
  h.served.set(m.files[0]!.sha256, o.tamper ? Buffer.from(randomBytes(bytes.length)) : bytes);
  h.served.set(m.files[1]!.sha256, golden);
  return signed;
}

function desired(deviceId: string, seq: number, rolloutId: string, bundle: DesiredState['bundle'], envelopeKey = ORCH.secretKey): DesiredState {
  return signDesired({ v: PROTOCOL_VERSION, deviceId, seq, rolloutId, bundle, issuedAt: new Date().toISOString() }, envelopeKey);
}

const reportsOf = (h: Harness, deviceId: string, rolloutId: string) => h.reports.filter((r) => r.deviceId === deviceId && r.rolloutId === rolloutId);
const finalOf = (h: Harness, deviceId: string, rolloutId: string) =>
  reportsOf(h, deviceId, rolloutId).find((r) => ['active', 'failed', 'rolled_back'].includes(r.state));

test('each device downloads the bundle in chunks, checks it and reports every step to active with figures; its heartbeats follow', async () => {
  const h = await harness(3);
  const b = release(h, 'bdl_one');
  for (const id of h.ids) await h.send(id, desired(id, 1, 'rol_1', b));
  for (const id of h.ids) {
    const r = await until(`${id} active`, async () => finalOf(h, id, 'rol_1'), 10_000, 20);
    assert.equal(r.state, 'active', JSON.stringify(r));
    assert.deepEqual(reportsOf(h, id, 'rol_1').map((x) => x.state), ['downloading', 'verifying', 'installing', 'benchmarking', 'active']);
    assert.ok(r.result!.latencyMs.p95 >= 30 && r.result!.latencyMs.p95 <= 50);
    // Its own transfer: every file asked for by this device.
    for (const f of b.manifest.files) assert.ok(h.chunkRequests.some((c) => c.deviceId === id && c.bundleId === 'bdl_one' && c.sha256 === f.sha256 && c.index === 0));
    await until(`${id} heartbeat shows the bundle`, async () => h.heartbeats.some((x) => x.deviceId === id && x.activeBundle === 'bdl_one' && x.lastBenchmark?.latencyMs.p95 === r.result!.latencyMs.p95), 5000, 20);
  }
  const s = h.fleet.stats();
  assert.equal(s.states.active, 3);
  assert.ok(s.bytesReceived >= 3 * b.manifest.files[0]!.length);

  // The bundle already active: reported active at once, with its figures, no download.
  const asked = h.chunkRequests.length;
  const id = h.ids[0]!;
  const first = finalOf(h, id, 'rol_1')!;
  await h.send(id, desired(id, 2, 'rol_again', b));
  const again = await until('already active', async () => finalOf(h, id, 'rol_again'), 5000, 20);
  assert.equal(again.state, 'active');
  assert.deepEqual(again.result, first.result);
  assert.deepEqual(reportsOf(h, id, 'rol_again').map((x) => x.state), ['active']);
  assert.equal(h.chunkRequests.length, asked);
});

test('bytes that do not match the manifest fail the transfer with FILE_HASH_MISMATCH; nothing is activated', async () => {
  const h = await harness(1);
  const id = h.ids[0]!;
  await h.send(id, desired(id, 1, 'rol_bad', release(h, 'bdl_bad', { tamper: true })));
  const r = await until('refused', async () => finalOf(h, id, 'rol_bad'), 10_000, 20);
  assert.equal(r.state, 'failed');
  assert.equal(r.code, 'FILE_HASH_MISMATCH');
  await until('heartbeat with no bundle', async () => h.heartbeats.some((x) => x.deviceId === id && x.activeBundle === null && Date.parse(x.at) > Date.parse(r.at)), 5000, 20);
});

test('desired states: a forged envelope changes nothing; a redelivery is answered again; an older unknown one is superseded', async () => {
  const h = await harness(1);
  const id = h.ids[0]!;
  const b = release(h, 'bdl_seq');
  await h.send(id, desired(id, 1_000_000, 'rol_forged', b, generateKeyPair().secretKey));
  await h.send(id, { ...desired(id, 4, 'rol_bumped', b), seq: 999_999 });
  await h.send(id, desired(id, 5, 'rol_real', b));
  const r = await until('genuine one active', async () => finalOf(h, id, 'rol_real'), 10_000, 20);
  assert.equal(r.state, 'active');
  assert.deepEqual(h.reports.filter((x) => x.rolloutId !== 'rol_real'), [], 'forged ones are never answered');

  // Persistent session plus retained message: the same one again is answered with the same outcome.
  const before = reportsOf(h, id, 'rol_real').length;
  await h.send(id, desired(id, 5, 'rol_real', b));
  await until('re-reported', async () => reportsOf(h, id, 'rol_real').length === before + 1, 5000, 20);
  assert.equal(reportsOf(h, id, 'rol_real').at(-1)!.state, 'active');
  // An older one it never ran ends terminal, or its rollout would wait forever.
  await h.send(id, desired(id, 3, 'rol_older', b));
  const old = await until('older superseded', async () => finalOf(h, id, 'rol_older'), 5000, 20);
  assert.equal(old.state, 'failed');
  assert.equal(old.code, 'SUPERSEDED');
});

test('at --fail-rate 1 a new bundle is rolled back with its figures (failed on a first install); the previous bundle comes back without a download, with its old figures', async () => {
  const h = await harness(2);
  const [id, fresh] = h.ids as [string, string];
  const a = release(h, 'bdl_a');
  const b = release(h, 'bdl_b');
  await h.send(id, desired(id, 1, 'rol_a', a));
  const ra = await until('A active', async () => finalOf(h, id, 'rol_a'), 10_000, 20);
  await h.send(id, desired(id, 2, 'rol_b', b));
  const rb = await until('B active', async () => finalOf(h, id, 'rol_b'), 10_000, 20);
  assert.equal(rb.state, 'active');
  assert.deepEqual(rb.result!.latencyMs, ra.result!.latencyMs, 'factor 1: the same figures');

  // The same devices, now failing every bundle they never had.
  await h.restart({ failRate: 1 });
  await until('heartbeat after the restart shows B', async () => h.heartbeats.some((x) => x.deviceId === id && x.activeBundle === 'bdl_b' && Date.parse(x.at) > Date.parse(rb.at)), 5000, 20);
  const c = release(h, 'bdl_c');
  await h.send(id, desired(id, 3, 'rol_c', c));
  await h.send(fresh, desired(fresh, 1, 'rol_c', c));
  const rc = await until('C refused', async () => finalOf(h, id, 'rol_c'), 10_000, 20);
  assert.equal(rc.state, 'rolled_back');
  assert.equal(rc.code, 'GOLDEN_MISMATCH');
  assert.equal(rc.result!.golden.passed, false);
  const rf = await until('C refused on the fresh device', async () => finalOf(h, fresh, 'rol_c'), 10_000, 20);
  assert.equal(rf.state, 'failed', 'nothing to roll back to');
  assert.equal(rf.code, 'GOLDEN_MISMATCH');

  // Back to A, the previous bundle: no failure injected, no chunk asked for, A's figures again.
  const asked = h.chunkRequests.filter((r) => r.bundleId === 'bdl_a').length;
  await h.send(id, desired(id, 4, 'rol_back', a));
  const back = await until('back on A', async () => finalOf(h, id, 'rol_back'), 10_000, 20);
  assert.equal(back.state, 'active', JSON.stringify(back));
  assert.deepEqual(back.result, ra.result);
  assert.equal(h.chunkRequests.filter((r) => r.bundleId === 'bdl_a').length, asked);
  await until('heartbeat shows A', async () => h.heartbeats.some((x) => x.deviceId === id && x.activeBundle === 'bdl_a'), 5000, 20);
});

test('--p95-factor: a new bundle runs at the active one\'s figures × the factor; the first bundle sets the baseline', async () => {
  const h = await harness(1, { p95Factor: 2 });
  const id = h.ids[0]!;
  await h.send(id, desired(id, 1, 'rol_1', release(h, 'bdl_1')));
  const r1 = await until('first active', async () => finalOf(h, id, 'rol_1'), 10_000, 20);
  assert.ok(r1.result!.latencyMs.p95 <= 50, 'no factor on the baseline');
  await h.send(id, desired(id, 2, 'rol_2', release(h, 'bdl_2')));
  const r2 = await until('second active', async () => finalOf(h, id, 'rol_2'), 10_000, 20);
  assert.ok(Math.abs(r2.result!.latencyMs.p95 / r1.result!.latencyMs.p95 - 2) < 0.001);
  // Twice again is over the 100 ms budget: the acceptance rule itself refuses it.
  await h.send(id, desired(id, 3, 'rol_3', release(h, 'bdl_3')));
  const r3 = await until('third refused', async () => finalOf(h, id, 'rol_3'), 10_000, 20);
  assert.equal(r3.state, 'rolled_back');
  assert.equal(r3.code, 'LATENCY_BUDGET_EXCEEDED');
  assert.ok(r3.result!.latencyMs.p95 > 100);
});
