// kill -9 of the orchestrator in the middle of a wave, with a simulated fleet on the broker: the
// restarted process (same data dir, same ports) picks up where the database says things stood.
// No device is dispatched twice (one dispatch event per device, and each device ends on the very
// desired state that event handed out) and none is forgotten (every device succeeds).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ONE_WAVE, startOrchestrator, tempDir, until, type Orchestrator } from '../support/processes.js';
import { startSim, type SimProc } from '../support/sim.js';

const PROFILE = 'x86-64-gateway';
const N = 30;

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
let sim: SimProc | undefined;
let ports: string[];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

before(async () => {
  dir = await tempDir('fleet-restart');
  ports = ['--http-port', String(await freePort()), '--mqtt-port', String(await freePort())];
  orch = await startOrchestrator(join(dir.path, 'o'), [...ports, '--log-level', 'warn']);
  sim = await startSim(orch, join(dir.path, 'sim'), N, ['--profile', PROFILE, '--tags', 'fleet']);
});

after(async () => {
  await sim?.kill('SIGKILL');
  await orch?.stop();
  await dir?.remove();
});

async function build(seed: number): Promise<string> {
  const up = await orch.api('POST', `/v1/models?name=restart&version=${seed}`, buildTinyMlpModel({ seed, hidden: 16 }));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: [PROFILE] });
  const done = await until('build', async () => {
    const r = (await orch.api('GET', `/v1/builds/${b.body.build.id}`)).body.build;
    return r.status === 'succeeded' && r;
  }, 60_000);
  return done.id;
}

async function events(id: string, kind: string): Promise<any[]> {
  const out: any[] = [];
  let cursor: string | null = null;
  do {
    const r: any = (await orch.api('GET', `/v1/rollouts/${id}/events?kind=${kind}&limit=200${cursor ? `&cursor=${cursor}` : ''}`)).body;
    out.push(...r.events);
    cursor = r.next;
  } while (cursor);
  return out;
}

test('kill -9 in the middle of a wave: after the restart the rollout goes on, nobody dispatched twice, nobody forgotten', async () => {
  await until('fleet online', async () => (await orch.api('GET', '/v1/devices?tag=fleet&status=online&limit=200')).body.devices.length === N, 20_000);
  const base = await orch.api('POST', '/v1/rollouts', { buildId: await build(1), target: { tags: ['fleet'] }, stream: 'restart', ...ONE_WAVE });
  await until('baseline everywhere', async () => (await orch.api('GET', `/v1/rollouts/${base.body.rollout.id}`)).body.rollout.status === 'succeeded', 60_000);

  // Few in flight at a time, so the second wave is still being dispatched when the process dies.
  const r = await orch.api('POST', '/v1/rollouts', {
    buildId: await build(2), target: { tags: ['fleet'] }, stream: 'restart', gate: { maxP95Regression: 100 }, rate: { maxInFlight: 3 },
    waves: [{ name: 'canary', size: { count: 3 }, bakeSec: 1 }, { name: 'rest', size: { percent: 100 }, bakeSec: 1 }],
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const id = r.body.rollout.id as string;
  const cut = await until('the second wave half-way', async () => {
    const n = (await events(id, 'dispatch')).length;
    return n >= 10 && n <= N - 8 && n;
  }, 60_000, 50);
  await orch.proc.kill('SIGKILL');
  assert.equal(orch.proc.child.signalCode, 'SIGKILL');

  orch = await startOrchestrator(join(dir.path, 'o'), [...ports, '--log-level', 'warn']);
  const stopped = await until('rollout finished after the restart', async () => {
    const g = (await orch.api('GET', `/v1/rollouts/${id}`)).body.rollout;
    return g.status !== 'running' && g;
  }, 90_000, 250);
  assert.equal(stopped.status, 'succeeded', JSON.stringify(stopped.counts));
  assert.equal(stopped.counts.succeeded, N, 'none is forgotten');
  for (const d of stopped.devices) assert.equal(d.state, 'active', d.deviceId);

  const dispatches = await events(id, 'dispatch');
  const perDevice = new Map<string, any[]>();
  for (const e of dispatches) perDevice.set(e.deviceId, [...(perDevice.get(e.deviceId) ?? []), e]);
  assert.equal(perDevice.size, N);
  for (const [deviceId, list] of perDevice) assert.equal(list.length, 1, `${deviceId} dispatched ${list.length} times`);
  assert.ok(cut < N, `the kill came after ${cut} of ${N} dispatches`);
  assert.equal((await events(id, 'withdraw')).length, 0, 'nobody timed out and was withdrawn');

  // What the devices received: each ended on the one desired state its dispatch event handed out.
  assert.equal(await sim!.kill('SIGTERM'), 0);
  sim = undefined;
  const states = JSON.parse(await readFile(join(dir.path, 'sim', 'devices-state.json'), 'utf8')).devices as Record<string, any>;
  for (const [deviceId, [e]] of perDevice) {
    const s = states[deviceId];
    assert.equal(s.action.rolloutId, id, deviceId);
    assert.equal(s.action.phase, 'done', deviceId);
    assert.equal(s.action.seq, e.data.desiredSeq, `${deviceId} runs the desired state of its one dispatch`);
    assert.equal(s.lastSeq, e.data.desiredSeq, `${deviceId} was sent nothing newer`);
  }
});
