// A staged rollout and a fleet rollback with two real agents (child processes, onnxruntime-node
// benchmarks and golden checks): a canary of one, then the rest; then the fleet goes back to the
// bundle it ran before, straight from the agents' previous slots, benchmarked again.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ONE_WAVE, startAgent, startOrchestrator, tempDir, until, type Orchestrator, type Proc } from '../support/processes.js';

const PROFILE = 'x86-64-gateway';
let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
const agents: Proc[] = [];
let ids: string[] = [];

before(async () => {
  dir = await tempDir('fleet-agents');
  orch = await startOrchestrator(join(dir.path, 'o'));
  for (const name of ['a1', 'a2']) agents.push(await startAgent(orch, join(dir.path, name), { profile: PROFILE, name }));
  ids = await Promise.all(agents.map(async (a) => (await a.event('started')).deviceId as string));
  await until('both agents online', async () => (await orch.api('GET', '/v1/devices?status=online')).body.devices.length === 2, 20_000);
});

after(async () => {
  for (const a of agents) await a.kill();
  await orch?.stop();
  await dir?.remove();
});

async function build(seed: number): Promise<{ id: string; bundleId: string }> {
  const up = await orch.api('POST', `/v1/models?name=agents&version=${seed}`, buildTinyMlpModel({ seed }));
  assert.equal(up.status, 201, JSON.stringify(up.body));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: [PROFILE] });
  const done = await until('build', async () => {
    const r = (await orch.api('GET', `/v1/builds/${b.body.build.id}`)).body.build;
    return r.status === 'succeeded' && r;
  }, 60_000);
  return { id: done.id, bundleId: done.artifacts[0].bundleId };
}

const get = async (id: string) => (await orch.api('GET', `/v1/rollouts/${id}`)).body.rollout;

test('a canary of one, then the rest: both active; a fleet rollback puts both back on the previous bundle with fresh benchmark figures', async () => {
  const before = await build(11);
  const r0 = await orch.api('POST', '/v1/rollouts', { buildId: before.id, target: { deviceIds: ids }, stream: 'agents', ...ONE_WAVE });
  assert.equal(r0.status, 201, JSON.stringify(r0.body));
  await until('the first bundle everywhere', async () => (await get(r0.body.rollout.id)).status === 'succeeded', 60_000);

  const next = await build(12);
  const r = await orch.api('POST', '/v1/rollouts', {
    buildId: next.id, target: { deviceIds: ids }, stream: 'agents',
    // Real benchmarks of a tiny model swing too much from run to run for a latency gate to mean anything here.
    gate: { maxP95Regression: 100 },
    waves: [{ name: 'canary', size: { count: 1 }, bakeSec: 1 }, { name: 'rest', size: { percent: 100 }, bakeSec: 1 }],
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const id = r.body.rollout.id as string;
  // The canary alone first: the other device is sent its bundle only after the canary passed.
  const canary = r.body.rollout.devices.find((d: any) => d.wave === 0).deviceId as string;
  const other = ids.find((x) => x !== canary)!;
  assert.equal(r.body.rollout.devices.find((d: any) => d.deviceId === other).dispatchedAt, null);
  const done = await until('rollout succeeded', async () => {
    const x = await get(id);
    return x.status === 'succeeded' && x;
  }, 60_000);
  const opened = (await orch.api('GET', `/v1/rollouts/${id}/events?kind=open-wave`)).body.events;
  const passed = (await orch.api('GET', `/v1/rollouts/${id}/events?kind=wave-passed`)).body.events;
  const dispatched = (await orch.api('GET', `/v1/rollouts/${id}/events?kind=dispatch`)).body.events;
  assert.deepEqual(opened.map((e: any) => e.data.wave), [0, 1]);
  assert.equal(dispatched.length, 2, 'one dispatch per device');
  const canaryDispatch = dispatched.find((e: any) => e.deviceId === canary);
  const otherDispatch = dispatched.find((e: any) => e.deviceId === other);
  const canaryPassed = passed.find((e: any) => e.data.wave === 0);
  assert.ok(canaryDispatch.seq < canaryPassed.seq && canaryPassed.seq < otherDispatch.seq, 'the rest went out after the canary passed');
  assert.equal(canaryPassed.data.figures.whole.succeeded, 1);
  for (const d of done.devices) {
    assert.equal(d.state, 'active');
    assert.equal(d.previousBundle, before.bundleId);
    assert.ok(d.result.latencyMs.p95 > 0 && d.result.golden.passed);
  }

  // Fleet rollback: both back on the bundle they ran before, from the previous slot.
  const rb = await orch.api('POST', `/v1/rollouts/${id}/rollback`);
  assert.equal(rb.status, 200, JSON.stringify(rb.body));
  assert.equal(rb.body.rollout.status, 'rolling_back');
  const back = await until('rolled back', async () => {
    const x = await get(id);
    return x.status === 'rolled_back' && x;
  }, 60_000);
  for (const d of back.devices) {
    assert.equal(d.rollback.state, 'done', JSON.stringify(d));
    assert.equal(d.activeBundle, before.bundleId);
    // Measured again on the device: real onnxruntime figures for the previous bundle, golden check passed.
    const res = d.rollback.result;
    assert.ok(res, 'the rollback report carries its benchmark');
    assert.equal(res.runtime, 'onnxruntime');
    assert.ok(res.latencyMs.p50 > 0 && res.latencyMs.p50 <= res.latencyMs.p99);
    assert.equal(res.golden.passed, true);
  }
  for (const [i, a] of agents.entries()) {
    const active = JSON.parse(await readFile(join(dir.path, `a${i + 1}`, 'active.json'), 'utf8'));
    assert.equal(active.bundleId, before.bundleId);
    assert.match(a.stderr(), /bundle already in its slot: no download/);
  }
  for (const deviceId of ids) {
    const dev = await until('heartbeat names the previous bundle', async () => {
      const x = (await orch.api('GET', `/v1/devices/${deviceId}`)).body.device;
      return x.lastHeartbeat?.activeBundle === before.bundleId && x;
    }, 15_000);
    assert.equal(dev.activeBundle, before.bundleId);
  }
});
