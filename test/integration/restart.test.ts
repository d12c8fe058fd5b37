// The orchestrator restarts under a live fleet: the agent reconnects with backoff, the
// re-published desired state is recognised as already handled (no retry of a refused bundle),
// and new rollouts work afterwards.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ONE_WAVE, startAgent, startOrchestrator, tempDir, until, type Orchestrator, type Proc } from '../support/processes.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
let agent: Proc;
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
  dir = await tempDir('restart');
  ports = ['--http-port', String(await freePort()), '--mqtt-port', String(await freePort())];
  orch = await startOrchestrator(join(dir.path, 'o'), ports);
  agent = await startAgent(orch, join(dir.path, 'a'), { profile: 'x86-64-gateway' });
});
after(async () => {
  await agent?.kill();
  await orch?.stop();
  await dir?.remove();
});

async function release(seed: number, tamper = false): Promise<{ rolloutId: string; bundleId: string; device: any }> {
  const up = await orch.api('POST', `/v1/models?name=r&version=${seed}`, buildTinyMlpModel({ seed }));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['x86-64-gateway'] });
  const build = await until('build', async () => {
    const r = await orch.api('GET', `/v1/builds/${b.body.build.id}`);
    return r.body.build.status === 'succeeded' && r.body.build;
  });
  let restore: (() => Promise<void>) | undefined;
  if (tamper) {
    const manifest = (await orch.api('GET', `/v1/bundles/${build.artifacts[0].bundleId}`)).body.bundle.manifest;
    const blob = join(orch.dataDir, 'blobs', manifest.files.find((f: any) => f.role === 'model').sha256);
    const original = await readFile(blob);
    const evil = Buffer.from(original);
    evil[evil.length - 1] ^= 1;
    await writeFile(blob, evil);
    restore = () => writeFile(blob, original);
  }
  const r = await orch.api('POST', '/v1/rollouts', { buildId: build.id, target: {}, ...ONE_WAVE });
  const done = await until('rollout', async () => {
    const g = await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`);
    return g.body.rollout.status !== 'running' && g.body.rollout;
  }, 60_000);
  await restore?.();
  return { rolloutId: done.id, bundleId: build.artifacts[0].bundleId, device: done.devices[0] };
}

test('after a restart the agent reconnects, does not retry a refused bundle, and takes new rollouts', async () => {
  const good = await release(1);
  assert.equal(good.device.state, 'active');
  const refused = await release(2, true);
  assert.equal(refused.device.state, 'failed');
  assert.equal(refused.device.code, 'FILE_HASH_MISMATCH');
  const stateBefore = await readFile(join(dir.path, 'a', 'state.json'), 'utf8');

  await orch.stop();
  assert.equal(orch.proc.child.exitCode, 0, 'SIGTERM shuts the orchestrator down cleanly');
  orch = await startOrchestrator(join(dir.path, 'o'), ports);
  const deviceId = (await agent.event('started')).deviceId as string;
  await until('agent reconnected', async () => {
    const d = (await orch.api('GET', `/v1/devices/${deviceId}`)).body.device;
    return d.status === 'online' && d.lastHeartbeat && Date.parse(d.lastSeen) > Date.now() - 3000;
  }, 30_000);
  // Give the re-published desired state time to arrive; it must change nothing.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await readFile(join(dir.path, 'a', 'state.json'), 'utf8'), stateBefore);
  const again = (await orch.api('GET', `/v1/rollouts/${refused.rolloutId}`)).body.rollout.devices[0];
  assert.equal(again.state, 'failed');
  assert.equal((await orch.api('GET', `/v1/devices/${deviceId}`)).body.device.activeBundle, good.bundleId);

  const next = await release(3);
  assert.equal(next.device.state, 'active');
});

test('SIGTERM during a build stops its worker instead of waiting; the build is marked failed with a reason', async () => {
  // A model and calibration set big enough that the build is still running when the signal arrives.
  const up = await orch.api('POST', '/v1/models?name=slow&version=1', buildTinyMlpModel({ seed: 9, hidden: 2048 }));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id });
  const queued = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id });
  assert.ok(['queued', 'running'].includes((await orch.api('GET', `/v1/builds/${b.body.build.id}`)).body.build.status));
  await orch.stop();
  assert.equal(orch.proc.child.exitCode, 0);
  orch = await startOrchestrator(join(dir.path, 'o'), ports);
  // The queued build never started; the first was stopped part-way unless it had already finished.
  const second = (await orch.api('GET', `/v1/builds/${queued.body.build.id}`)).body.build;
  assert.equal(second.status, 'failed');
  assert.match(second.error, /shut down during the build|restarted during the build/);
  const first = (await orch.api('GET', `/v1/builds/${b.body.build.id}`)).body.build;
  if (first.status !== 'succeeded') assert.match(first.error, /shut down during the build|restarted during the build/);
});
