// Staged rollouts against a fleet: a real orchestrator process (Aedes, SQLite, Fastify, the
// rollout engine and its tick), the fleet simulator as a child process (each device its own
// MQTT session, downloading and checking the real signed bundle), real builds. Short timeouts
// (bakeSec 1, heartbeats every 2 s) keep it quick.
//
// Where a test needs a failing device inside the canary, it does not leave that to chance: the
// rollout is created with its canary waiting for approval (so the canary is known), the
// simulator is restarted with a seed under which 20% of the fleet fails and the canary is hit,
// and then the canary is approved.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { unitHash } from '@edgepack/agent/sim/index.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ONE_WAVE, startOrchestrator, tempDir, until, type Orchestrator } from '../support/processes.js';
import { startSim, type SimProc } from '../support/sim.js';

const PROFILE = 'x86-64-gateway';
const N = 20;

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
let sim: SimProc | undefined;
let modelId: string;
let builds = 0;

before(async () => {
  dir = await tempDir('fleet-rollout');
  orch = await startOrchestrator(join(dir.path, 'orchestrator'), ['--log-level', 'warn']);
  const up = await orch.api('POST', '/v1/models?name=fleet&version=1', buildTinyMlpModel({ seed: 5, hidden: 16 }));
  assert.equal(up.status, 201, JSON.stringify(up.body));
  modelId = up.body.model.id;
  await restartSim(N, []);
  // Every device first gets a bundle of its own, so later rollouts have a previous bundle and a baseline p95.
  const base = await build();
  await finished(await create({ buildId: base.id, target: { tags: ['fleet'] }, ...ONE_WAVE }));
});

after(async () => {
  await sim?.kill('SIGKILL');
  await orch?.stop();
  await dir?.remove();
});

async function restartSim(devices: number, args: string[]): Promise<SimProc> {
  if (sim) assert.equal(await sim.kill('SIGTERM'), 0);
  sim = await startSim(orch, join(dir.path, 'sim'), devices, ['--profile', PROFILE, '--tags', 'fleet', '--stall-ms', '2000', ...args]);
  // Back online as far as the orchestrator knows (presence), before any rollout counts on it.
  await until('simulated devices online', async () => {
    const d = await fleet();
    return d.filter((x) => x.status === 'online').length === sim!.ready.online && d;
  }, 20_000);
  return sim;
}

async function build(): Promise<{ id: string; bundleId: string }> {
  builds++;
  const b = await orch.api('POST', '/v1/builds', { modelId, profiles: [PROFILE] });
  assert.equal(b.status, 202, JSON.stringify(b.body));
  const done = await until('build', async () => {
    const r = (await orch.api('GET', `/v1/builds/${b.body.build.id}`)).body.build;
    return r.status !== 'queued' && r.status !== 'running' && r;
  }, 60_000);
  assert.equal(done.status, 'succeeded');
  return { id: done.id, bundleId: done.artifacts[0].bundleId };
}

async function create(body: object): Promise<string> {
  const r = await orch.api('POST', '/v1/rollouts', body);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.rollout.id;
}

const get = async (id: string) => (await orch.api('GET', `/v1/rollouts/${id}`)).body.rollout;
const fleet = async (): Promise<any[]> => {
  const out: any[] = [];
  let cursor: string | null = null;
  do {
    const r: any = (await orch.api('GET', `/v1/devices?tag=fleet&limit=200${cursor ? `&cursor=${cursor}` : ''}`)).body;
    out.push(...r.devices);
    cursor = r.next;
  } while (cursor);
  return out;
};
const eventsOf = async (id: string, kind: string): Promise<any[]> => {
  const out: any[] = [];
  let cursor: string | null = null;
  do {
    const r: any = (await orch.api('GET', `/v1/rollouts/${id}/events?kind=${kind}&limit=200${cursor ? `&cursor=${cursor}` : ''}`)).body;
    out.push(...r.events);
    cursor = r.next;
  } while (cursor);
  return out;
};

async function finished(id: string, timeoutMs = 60_000): Promise<any> {
  return until(`rollout ${id} settled`, async () => {
    const r = await get(id);
    return !['scheduled', 'running', 'rolling_back'].includes(r.status) && r;
  }, timeoutMs, 250);
}

/** Cancels a rollout and waits until its devices under way have finished (they no longer hold the stream). */
async function cancelAndDrain(id: string): Promise<void> {
  assert.equal((await orch.api('POST', `/v1/rollouts/${id}/cancel`)).status, 200);
  await until(`rollout ${id} let go of its devices`, async () => {
    const r = await get(id);
    return r.devices.every((d: any) => ['succeeded', 'failed', 'skipped', 'cancelled', 'lost'].includes(d.outcome));
  }, 30_000, 250);
}

/**
 * A simulator seed under which `rate` of the devices fail `bundleId` (as the simulator draws it)
 * and at least one of them is in `canary`: the failing canary is then certain, not likely.
 */
function seedHitting(deviceIds: string[], canary: string[], bundleId: string, rate: number): string {
  const want = Math.round(rate * deviceIds.length);
  for (let i = 0; i < 100_000; i++) {
    const seed = `fleet-${i}`;
    const failing = deviceIds.filter((id) => unitHash(seed, 'fail', id, bundleId) < rate);
    if (failing.length === want && failing.some((id) => canary.includes(id))) return seed;
  }
  throw new Error('no seed found');
}

/** A rollout whose canary (count 5) waits for approval, so the test knows it before anything is sent. */
async function withKnownCanary(extra: object): Promise<{ id: string; bundleId: string; canary: string[]; all: string[] }> {
  const b = await build();
  const id = await create({
    buildId: b.id, target: { tags: ['fleet'] },
    waves: [{ name: 'canary', size: { count: 5 }, bakeSec: 1, requireApproval: true }, { name: 'rest', size: { percent: 100 }, bakeSec: 1 }],
    ...extra,
  });
  const r = await get(id);
  assert.equal(r.pause?.code, 'AWAITING_APPROVAL');
  const canary = r.devices.filter((d: any) => d.wave === 0 && d.outcome !== 'skipped').map((d: any) => d.deviceId);
  assert.equal(canary.length, 5);
  return { id, bundleId: b.bundleId, canary, all: r.devices.map((d: any) => d.deviceId) };
}

test('a failing canary (20% GOLDEN_MISMATCH) pauses the rollout with no more than the canary\'s devices touched', async () => {
  const r = await withKnownCanary({});
  const before = new Map((await fleet()).map((d) => [d.id, d.activeBundle]));
  await restartSim(N, ['--fail-rate', '0.2', '--fail-code', 'GOLDEN_MISMATCH', '--seed', seedHitting(r.all, r.canary, r.bundleId, 0.2)]);
  assert.equal((await orch.api('POST', `/v1/rollouts/${r.id}/approve`)).status, 200);
  const done = await finished(r.id);
  assert.equal(done.status, 'paused');
  assert.equal(done.pause.code, 'BREACH');
  assert.ok(done.pause.breaches.some((b: any) => b.rule === 'maxGoldenFailures' && b.wave === 0), JSON.stringify(done.pause));
  assert.ok(done.waves[0].gate.figures.goldenFailures >= 1);
  assert.equal(done.waves[1].status, 'pending', 'the next wave never opened');
  const touched = new Set((await eventsOf(r.id, 'dispatch')).map((e) => e.deviceId));
  assert.ok(touched.size <= r.canary.length, `${touched.size} touched`);
  for (const id of touched) assert.ok(r.canary.includes(id), `${id} is not in the canary`);
  // Nobody outside the canary was sent anything: they still run what they ran.
  const now = new Map((await fleet()).map((d) => [d.id, d.activeBundle]));
  for (const id of r.all) if (!r.canary.includes(id)) assert.equal(now.get(id), before.get(id), id);
  const failed = done.devices.filter((d: any) => d.outcome === 'failed');
  for (const d of failed) {
    assert.equal(d.code, 'GOLDEN_MISMATCH');
    assert.equal(d.state, 'rolled_back');
    assert.equal(d.result.golden.passed, false);
  }
  await cancelAndDrain(r.id);
});

test('onBreach rollback: a breaching canary returns every touched device to its previous bundle', async () => {
  const r = await withKnownCanary({ onBreach: 'rollback' });
  await restartSim(N, ['--fail-rate', '0.2', '--fail-code', 'GOLDEN_MISMATCH', '--seed', seedHitting(r.all, r.canary, r.bundleId, 0.2)]);
  await orch.api('POST', `/v1/rollouts/${r.id}/approve`);
  const done = await finished(r.id);
  assert.equal(done.status, 'rolled_back', JSON.stringify({ status: done.status, pause: done.pause }));
  assert.equal(done.rollback.cause, 'breach');
  assert.ok(done.rollback.breaches.some((b: any) => b.rule === 'maxGoldenFailures'));
  const devices = new Map((await fleet()).map((d) => [d.id, d]));
  const touched = done.devices.filter((d: any) => d.dispatchedAt !== null);
  assert.ok(touched.length >= 1 && touched.length <= 5);
  for (const d of touched) {
    assert.ok(d.previousBundle, d.deviceId);
    assert.equal(devices.get(d.deviceId).activeBundle, d.previousBundle, `${d.deviceId} runs its previous bundle again`);
    assert.ok(['done'].includes(d.rollback?.state), JSON.stringify(d.rollback));
  }
  // Those that had installed the new bundle were sent the previous one; those that had refused it were already on it.
  const sent = new Set((await eventsOf(r.id, 'rollback-dispatch')).map((e) => e.deviceId));
  for (const d of touched) assert.equal(sent.has(d.deviceId), d.outcome !== 'failed', d.deviceId);
  for (const d of done.devices.filter((x: any) => x.dispatchedAt === null)) assert.equal(d.outcome, 'cancelled');
});

test('a p95 regression of 1.5x breaches the canary\'s latency gate', async () => {
  await restartSim(N, ['--p95-factor', '1.5']);
  const b = await build();
  const id = await create({
    buildId: b.id, target: { tags: ['fleet'] },
    waves: [{ name: 'canary', size: { count: 5 }, bakeSec: 1 }, { name: 'rest', size: { percent: 100 }, bakeSec: 1 }],
  });
  const done = await finished(id);
  assert.equal(done.status, 'paused');
  const breach = done.pause.breaches.find((x: any) => x.rule === 'maxP95Regression');
  assert.ok(breach, JSON.stringify(done.pause));
  assert.ok(Math.abs(breach.value - 0.5) < 0.01, `median regression ${breach.value}`);
  assert.equal(breach.limit, 0.1);
  const canary = done.devices.filter((d: any) => d.wave === 0);
  for (const d of canary.filter((x: any) => x.p95Ms !== null)) assert.ok(Math.abs(d.p95Ms / d.baselineP95Ms - 1.5) < 0.01, `${d.p95Ms} vs ${d.baselineP95Ms}`);
  assert.equal(done.devices.filter((d: any) => d.wave === 1 && d.dispatchedAt !== null).length, 0);
  await cancelAndDrain(id);
});

test('10% of the devices offline neither stall a wave nor count as failures', async () => {
  const s = await restartSim(N, ['--offline-rate', '0.1']);
  const offline: string[] = s.ready.offlineDeviceIds;
  assert.equal(offline.length, 2);
  const b = await build();
  const id = await create({
    buildId: b.id, target: { tags: ['fleet'] }, gate: { maxP95Regression: 100 },
    waves: [{ name: 'first', size: { percent: 50 }, bakeSec: 1 }, { name: 'rest', size: { percent: 100 }, bakeSec: 1 }],
  });
  const done = await finished(id);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.counts));
  assert.equal(done.counts.failed, undefined, 'no failures');
  assert.equal(done.counts.succeeded, N - 2);
  for (const d of done.devices) {
    if (offline.includes(d.deviceId)) {
      assert.equal(d.outcome, 'cancelled');
      assert.equal(d.code, 'NOT_REACHED');
      assert.equal(d.dispatchedAt, null, 'never dispatched while offline');
    } else assert.equal(d.state, 'active');
  }
  for (const w of done.waves) assert.equal(w.status, 'passed');
  const dispatched = new Set((await eventsOf(id, 'dispatch')).map((e) => e.deviceId));
  for (const o of offline) assert.ok(!dispatched.has(o));
});

test('a continuous rollout reaches a device enrolled after it started', async () => {
  await restartSim(N, []);
  const b = await build();
  const id = await create({
    buildId: b.id, target: { tags: ['fleet'] }, membership: 'continuous', gate: { maxP95Regression: 100 },
    waves: [{ name: 'canary', size: { count: 3 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }],
  });
  await until('every planned wave passed and the tail is open', async () => {
    const r = await get(id);
    return r.waves.length === 3 && r.waves[2].tail && r.waves[2].status === 'open' && r.counts.succeeded === N && r;
  }, 60_000);
  // One more device enrolls (the simulator grows the fleet by one): it joins the tail wave.
  await restartSim(N + 1, []);
  const late = await until('the late device succeeded', async () => {
    const r = await get(id);
    const d = r.devices.find((x: any) => x.late);
    return d?.outcome === 'succeeded' && d;
  }, 60_000); // a new simulator process, an enrollment over TLS and a download, on a host shared with another test file
  assert.equal(late.wave, 2);
  assert.equal(late.state, 'active');
  assert.equal(late.bundleId, b.bundleId);
  const r = await get(id);
  assert.equal(r.status, 'running', 'a continuous rollout does not finish by itself');
  assert.equal(r.devices.length, N + 1);
  assert.equal((await orch.api('POST', `/v1/rollouts/${id}/cancel`)).body.rollout.status, 'cancelled');
});
