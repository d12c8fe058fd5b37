// The fleet simulator against real parts: an orchestrator process (Aedes, SQLite, Fastify), the
// simulator as a child process through its committed bin, real builds and signed bundles that
// every simulated device downloads as MQTT chunks and checks.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ONE_WAVE, startOrchestrator, tempDir, until, type Orchestrator } from '../support/processes.js';
import { startSim, type SimProc } from '../support/sim.js';

const PROFILE = 'x86-64-gateway';
const N = 20;

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
let sim: SimProc | undefined;
let modelId: string;
const simDir = () => join(dir.path, 'sim');

before(async () => {
  dir = await tempDir('sim');
  orch = await startOrchestrator(join(dir.path, 'orchestrator'), ['--log-level', 'warn']);
  // A real ONNX model, small enough that the three builds cost little CPU next to the tests
  // running alongside, and still three chunks a download (784 × 48 fp32 weights ≈ 150 KB).
  const bytes = buildTinyMlpModel({ seed: 3, hidden: 48 });
  assert.ok(bytes.length > 2 * 64 * 1024);
  const up = await orch.api('POST', '/v1/models?name=sim-model&version=1', bytes);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  modelId = up.body.model.id;
});

after(async () => {
  await sim?.kill('SIGKILL');
  await orch?.stop();
  await dir?.remove();
});

/** A build of the one profile the fleet has: each build is a bundle of its own. */
async function build(): Promise<{ id: string; bundleId: string }> {
  const b = await orch.api('POST', '/v1/builds', { modelId, profiles: [PROFILE] });
  // 201 today; the API contract on main answers 202 (queued). Either is an accepted build.
  assert.ok(b.status === 201 || b.status === 202, `${b.status} ${JSON.stringify(b.body)}`);
  const done = await until('build finished', async () => {
    const r = (await orch.api('GET', `/v1/builds/${b.body.build.id}`)).body.build;
    return r.status !== 'queued' && r.status !== 'running' && r;
  }, 60_000);
  assert.equal(done.status, 'succeeded', JSON.stringify(done));
  return { id: done.id, bundleId: done.artifacts[0].bundleId };
}

async function rollout(buildId: string, target: Record<string, unknown> = { tags: ['sim'] }): Promise<any> {
  const r = await orch.api('POST', '/v1/rollouts', { buildId, target, ...ONE_WAVE });
  assert.ok(r.status === 201 || r.status === 202, `${r.status} ${JSON.stringify(r.body)}`);
  return until('rollout finished', async () => {
    const g = (await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`)).body.rollout;
    return g.status !== 'running' && g;
  }, 30_000);
}

async function simDevices(): Promise<any[]> {
  return (await orch.api('GET', '/v1/devices?tag=sim')).body.devices;
}

async function restartSim(devices: number, args: string[]): Promise<SimProc> {
  if (sim) {
    assert.equal(await sim.kill('SIGTERM'), 0, 'SIGTERM stops the simulator cleanly');
    const stopped = await sim.event('stopped');
    assert.equal(stopped.connected, 0);
  }
  sim = await startSim(orch, simDir(), devices, ['--profile', PROFILE, '--tags', 'sim,fleet', ...args]);
  return sim;
}

const byDevice = (r: any) => new Map<string, any>(r.devices.map((d: any) => [d.deviceId, d]));

let first: { id: string; bundleId: string };
let second: { id: string; bundleId: string };
let ids: string[];
let figuresOnFirst: Map<string, any>;

test(`${N} simulated devices enroll with their own tokens and all come online`, async () => {
  const s = await restartSim(N, ['--p95-factor', '1.5']);
  assert.equal(s.ready.devices, N);
  assert.equal(s.ready.enrolled, N);
  assert.equal(s.ready.offline, 0);
  const devices = await until(`${N} devices online`, async () => {
    const d = await simDevices();
    return d.length === N && d.every((x) => x.status === 'online') && d;
  }, 20_000);
  assert.deepEqual(devices.map((d) => d.name).sort(), Array.from({ length: N }, (_, i) => `sim-${String(i + 1).padStart(4, '0')}`));
  for (const d of devices) {
    assert.equal(d.profile, PROFILE);
    assert.deepEqual(d.tags, ['fleet', 'sim']);
  }
  ids = devices.map((d) => d.id).sort();
  assert.equal(new Set(ids).size, N);
  // Every device holds its own session: the enrollment tokens are single-use, so N devices took N tokens.
  const heartbeats = await until('heartbeats from every device', async () => {
    const d = await simDevices();
    return d.every((x) => x.lastHeartbeat?.agentVersion?.startsWith('edgepack-sim/')) && d;
  }, 10_000);
  assert.equal(heartbeats.length, N);
});

test('a rollout reaches every device, which downloads and checks the bundle and ends active with benchmark figures', async () => {
  first = await build();
  const done = await rollout(first.id);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.counts));
  assert.equal(done.devices.length, N);
  for (const d of done.devices) {
    assert.equal(d.state, 'active');
    const r = d.result;
    assert.ok(r.latencyMs.p50 > 0 && r.latencyMs.p50 <= r.latencyMs.p90 && r.latencyMs.p90 <= r.latencyMs.p95 && r.latencyMs.p95 <= r.latencyMs.p99, JSON.stringify(r.latencyMs));
    // Under the profile's 100 ms budget: the baseline is 30–50% of it.
    assert.ok(r.latencyMs.p95 >= 30 && r.latencyMs.p95 <= 50, `p95 ${r.latencyMs.p95}`);
    assert.equal(r.golden.passed, true);
    assert.ok(r.throughputPerSec > 0 && r.peakRssBytes > 0);
  }
  figuresOnFirst = byDevice(done);
  // Each device has its own baseline.
  assert.ok(new Set(done.devices.map((d: any) => d.result.latencyMs.p95)).size > N / 2);
  await until('heartbeats show the new bundle and its figures', async () => {
    const d = await simDevices();
    return d.every((x) => x.activeBundle === first.bundleId && x.lastHeartbeat?.activeBundle === first.bundleId && x.lastHeartbeat.lastBenchmark?.latencyMs.p95 > 0);
  }, 10_000);
});

test('a new bundle is benchmarked at the previous figures × --p95-factor', async () => {
  second = await build();
  assert.notEqual(second.bundleId, first.bundleId);
  const done = await rollout(second.id);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.counts));
  for (const d of done.devices) {
    const before = figuresOnFirst.get(d.deviceId).result.latencyMs;
    const ratio = d.result.latencyMs.p95 / before.p95;
    assert.ok(Math.abs(ratio - 1.5) < 0.001, `p95 ${before.p95} → ${d.result.latencyMs.p95}`);
    assert.ok(Math.abs(d.result.latencyMs.p50 / before.p50 - 1.5) < 0.001);
  }
});

test('restarted on the same data dir, the same devices come back with their bundles; going back to the previous bundle succeeds even at --fail-rate 1', async () => {
  const s = await restartSim(N, ['--fail-rate', '1']);
  assert.equal(s.ready.enrolled, 0, 'nobody enrolls again');
  await until('all back online', async () => (await simDevices()).filter((d) => d.status === 'online').length === N, 20_000);
  const devices = await simDevices();
  assert.deepEqual(devices.map((d) => d.id).sort(), ids);
  await until('heartbeats after the restart still show the second bundle', async () => {
    const d = await simDevices();
    return d.every((x) => x.lastHeartbeat?.activeBundle === second.bundleId && Date.parse(x.lastHeartbeat.at) > Date.now() - 5000);
  }, 10_000);

  // What a fleet rollback will send: a desired state naming the bundle each device had before.
  const back = await rollout(first.id);
  assert.equal(back.status, 'succeeded', JSON.stringify(back.devices.filter((d: any) => d.state !== 'active')));
  for (const d of back.devices) {
    // Its old figures, as measured when it was first installed.
    assert.deepEqual(d.result.latencyMs, figuresOnFirst.get(d.deviceId).result.latencyMs);
  }
  // Ctrl-C ends it as cleanly as SIGTERM.
  assert.equal(await s.kill('SIGINT'), 0);
  const stopped = await s.event('stopped');
  // The previous slot was kept: not a chunk was downloaded for the rollback.
  assert.equal(stopped.chunks, 0, JSON.stringify(stopped));
  assert.equal((stopped.states as Record<string, number>).active, N);
  sim = undefined;
});

test('at --fail-rate 1 with GOLDEN_MISMATCH every device refuses a bundle it never had: rolled back, with its figures', async () => {
  await restartSim(N, ['--fail-rate', '1', '--fail-code', 'GOLDEN_MISMATCH']);
  const third = await build();
  const paused = await rollout(third.id);
  // Every golden failure is a breach: the rollout pauses (onBreach: pause) at the first one;
  // the devices already under way finish their installs.
  assert.equal(paused.status, 'paused');
  assert.equal(paused.pause.code, 'BREACH');
  const done = await until('every device ended', async () => {
    const g = (await orch.api('GET', `/v1/rollouts/${paused.id}`)).body.rollout;
    return g.devices.every((d: any) => ['active', 'failed', 'rolled_back'].includes(d.state)) && g;
  }, 30_000);
  assert.equal(done.devices.length, N);
  for (const d of done.devices) {
    assert.equal(d.state, 'rolled_back', JSON.stringify(d));
    assert.equal(d.code, 'GOLDEN_MISMATCH');
    assert.equal(d.result.golden.passed, false);
    assert.ok(d.result.latencyMs.p95 > 0);
  }
  await until('every device still runs the bundle it had', async () => {
    const d = await simDevices();
    return d.every((x) => x.activeBundle === first.bundleId && x.lastHeartbeat?.activeBundle === first.bundleId);
  }, 10_000);
});

test('--devices grown enrolls only the difference; --offline-rate keeps its share offline; a first install that fails is failed, not rolled back', async () => {
  const s = await restartSim(N + 4, ['--offline-rate', '0.25', '--fail-rate', '1', '--fail-code', 'LATENCY_BUDGET_EXCEEDED']);
  assert.equal(s.ready.enrolled, 4);
  assert.equal(s.ready.devices, N + 4);
  const offline: string[] = s.ready.offlineDeviceIds;
  assert.equal(offline.length, 6, 'round(0.25 × 24)');
  const devices = await until('the rest online', async () => {
    const d = await simDevices();
    return d.length === N + 4 && d.filter((x) => x.status === 'online').length === N + 4 - 6 && d;
  }, 20_000);
  for (const d of devices) assert.equal(d.status, offline.includes(d.id) ? 'offline' : 'online', d.name);

  const fresh = devices.filter((d) => !ids.includes(d.id) && !offline.includes(d.id)).map((d) => d.id);
  assert.ok(fresh.length > 0, 'some new device is online');
  const done = await rollout(second.id, { deviceIds: fresh });
  for (const d of done.devices) {
    assert.equal(d.state, 'failed', 'nothing to roll back to');
    assert.equal(d.code, 'LATENCY_BUDGET_EXCEEDED');
    assert.ok(d.result.latencyMs.p95 > 100, `p95 ${d.result.latencyMs.p95} over the 100 ms budget`);
  }
});
