// The agent's desired-state handling across restarts, with a real orchestrator and real agent
// processes: two rollouts arriving at once, an action queued when the agent died, a
// corrupt state.json, and a commit that fails after active.json was already replaced.
// The tests share one device and run in order; each leaves it on a known active bundle.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ONE_WAVE, startAgent, startOrchestrator, tempDir, until, type Orchestrator, type Proc } from '../support/processes.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
let agent: Proc | undefined;
let agentDir: string;
let deviceId: string;
const builds: { buildId: string; bundleId: string }[] = [];
const TERMINAL = ['active', 'failed', 'rolled_back'];

before(async () => {
  dir = await tempDir('agent-recovery');
  agentDir = join(dir.path, 'agent');
  orch = await startOrchestrator(join(dir.path, 'orchestrator'));
  agent = await startAgent(orch, agentDir, { profile: 'x86-64-gateway' });
  deviceId = (await agent.event('started')).deviceId as string;
  // Six distinct bundles, built up front.
  const started = [];
  for (let seed = 1; seed <= 6; seed++) {
    const up = await orch.api('POST', `/v1/models?name=recovery&version=${seed}`, buildTinyMlpModel({ seed: 300 + seed }));
    assert.equal(up.status, 201, JSON.stringify(up.body));
    const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['x86-64-gateway'] });
    assert.equal(b.status, 202, JSON.stringify(b.body));
    started.push(b.body.build.id as string);
  }
  for (const id of started) {
    const build = await until(`build ${id}`, async () => {
      const r = await orch.api('GET', `/v1/builds/${id}`);
      return r.body.build.status === 'succeeded' && r.body.build;
    }, 60_000);
    builds.push({ buildId: build.id, bundleId: build.artifacts[0].bundleId });
  }
});

after(async () => {
  await agent?.kill();
  await orch?.stop();
  await dir?.remove();
});

async function createRollout(n: number): Promise<string> {
  const r = await orch.api('POST', '/v1/rollouts', { buildId: builds[n]!.buildId, target: { deviceIds: [deviceId] }, ...ONE_WAVE });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.rollout.id;
}

async function deviceOf(rolloutId: string): Promise<any> {
  return (await orch.api('GET', `/v1/rollouts/${rolloutId}`)).body.rollout.devices[0];
}

async function finished(rolloutId: string, timeoutMs = 40_000): Promise<any> {
  return until(`rollout ${rolloutId} terminal`, async () => {
    const d = await deviceOf(rolloutId);
    return TERMINAL.includes(d.state) && d;
  }, timeoutMs);
}

async function activeOnDisk(): Promise<string | null> {
  return JSON.parse(await readFile(join(agentDir, 'active.json'), 'utf8').catch(() => 'null'))?.bundleId ?? null;
}

/** Stops the running agent (if any) and starts it again on the same data dir. */
async function restart(env: Record<string, string> = {}): Promise<Proc> {
  await agent?.kill();
  agent = await startAgent(orch, agentDir, { enroll: false, env });
  return agent;
}

test('two rollouts delivered together after a restart both end, and the device runs the newer', async () => {
  const first = await createRollout(0);
  assert.equal((await finished(first)).state, 'active');
  await agent!.kill();

  // While the agent is away: an older and a newer rollout. On reconnect the broker delivers
  // both from the persistent session, plus the retained newer one.
  const older = await createRollout(1);
  const newer = await createRollout(2);
  await restart();
  const o = await finished(older);
  const n = await finished(newer);
  assert.equal(n.state, 'active', JSON.stringify(n));
  // Either run first or superseded before it was downloaded; never left hanging.
  assert.ok(o.state === 'active' || (o.state === 'failed' && o.code === 'SUPERSEDED'), JSON.stringify(o));
  assert.equal(await activeOnDisk(), builds[2]!.bundleId);
});

test('an action queued when the agent died starts after the restart', async () => {
  // Killed with the first action installed and about to benchmark...
  const killedOnce = await restart({ EDGEPACK_AGENT_FAULTS: 'kill-after-benchmarking' });
  const running = await createRollout(3);
  await killedOnce.exited;
  // ...a newer rollout arrives while it is down; the agent resumes the first, queues the
  // newer one behind it, and dies again the moment the first is done.
  const queued = await createRollout(4);
  const killedTwice = await restart({ EDGEPACK_AGENT_FAULTS: 'kill-after-done' });
  await killedTwice.exited;
  const state = JSON.parse(await readFile(join(agentDir, 'state.json'), 'utf8'));
  assert.equal(state.action.rolloutId, running);
  assert.equal(state.action.phase, 'done');
  assert.equal(state.queued?.rolloutId, queued, 'precondition: the newer rollout was queued when the agent died');

  await restart();
  // Terminal either way: the orchestrator may already have marked it superseded by the newer rollout.
  await finished(running);
  const q = await finished(queued);
  assert.equal(q.state, 'active', JSON.stringify(q));
  assert.equal(await activeOnDisk(), builds[4]!.bundleId);
});

test('an agent whose state.json is garbage starts, sets it aside, and keeps its active bundle', async () => {
  await agent?.kill();
  await writeFile(join(agentDir, 'state.json'), '{"lastSeq": 4, "action": {"phase": "downl');
  await restart();
  const files = await readdir(agentDir);
  assert.ok(files.some((f) => f.startsWith('state.json.corrupt-')), files.join(', '));
  assert.equal(await activeOnDisk(), builds[4]!.bundleId);
  // The retained desired state is handled afresh and recognised as the bundle already active.
  const state = await until('state rebuilt', async () => {
    const s = JSON.parse(await readFile(join(agentDir, 'state.json'), 'utf8').catch(() => 'null'));
    return s?.action?.phase === 'done' && s;
  }, 15_000);
  assert.equal(state.action.bundle.manifest.bundleId, builds[4]!.bundleId);
  assert.ok(state.lastSeq > 0);
  const device = await until('heartbeat after restart', async () => {
    const d = (await orch.api('GET', `/v1/devices/${deviceId}`)).body.device;
    return d.status === 'online' && d;
  });
  assert.equal(device.activeBundle, builds[4]!.bundleId);
});

test('a commit that fails after active.json was replaced rolls back to the previous bundle for real', async () => {
  await restart({ EDGEPACK_AGENT_FAULTS: 'fail-after-activate' });
  const r = await finished(await createRollout(5));
  assert.equal(r.state, 'rolled_back', JSON.stringify(r));
  assert.equal(r.code, 'FAULT_INJECTED');
  assert.equal(await activeOnDisk(), builds[4]!.bundleId, 'the device runs the previous bundle');
  const bundles = await readdir(join(agentDir, 'bundles'));
  assert.ok(!bundles.includes(builds[5]!.bundleId), `bundles: ${bundles.join(', ')}`);
  // And says so: the next heartbeat names the previous bundle.
  await until('heartbeat names the previous bundle', async () => {
    const d = (await orch.api('GET', `/v1/devices/${deviceId}`)).body.device;
    return d.lastHeartbeat?.activeBundle === builds[4]!.bundleId && Date.parse(d.lastSeen) > Date.now() - 5000;
  }, 10_000);
});
