// A full disk on either side: the request or the action fails with a clear code, nothing
// half-written is left behind, the process keeps serving, and it recovers once there is room.
// The small disks are tmpfs mounts, which needs root; elsewhere the test is skipped with that reason.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, rm } from 'node:fs/promises';
import mqtt from 'mqtt';
import { PROTOCOL_VERSION, createDeviceCredential, generateKeyPair } from '@edgepack/protocol';
import { join } from 'node:path';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ONE_WAVE, startAgent, startOrchestrator, tempDir, until, type Orchestrator, type Proc } from '../support/processes.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
const mounts: string[] = [];
let canMount = false;

async function smallDisk(name: string, size: string): Promise<string> {
  const path = join(dir.path, name);
  await mkdir(path, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', path]);
  mounts.push(path);
  return path;
}

before(async () => {
  dir = await tempDir('diskfull');
  try {
    await smallDisk('probe', '64k');
    canMount = true;
  } catch { /* not root, or no mount namespace rights */ }
});

after(async () => {
  for (const m of mounts.reverse()) { try { execFileSync('umount', ['-l', m]); } catch { /* already gone */ } }
  await dir?.remove();
});

const skip = () => (canMount ? false : 'mounting a small tmpfs needs root');

test('orchestrator: an upload that fills the data disk gets 507 STORAGE_FULL and leaves nothing behind', async (t) => {
  if (skip()) return t.skip(skip() as string);
  const data = await smallDisk('orch-data', '3m');
  const orch = await startOrchestrator(data);
  try {
    const big = buildTinyMlpModel({ seed: 1, hidden: 1280 }); // about 4 MB of weights
    const r = await orch.api('POST', '/v1/models?name=big&version=1', big);
    assert.equal(r.status, 507, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'STORAGE_FULL');
    assert.deepEqual(await readdir(join(data, 'blobs', 'tmp')), []);
    const small = await orch.api('POST', '/v1/models?name=small&version=1', buildTinyMlpModel({ seed: 2 }));
    assert.equal(small.status, 201, 'still serving, and a model that fits is stored');

    // Now fill the disk completely: database writes fail, in HTTP handlers and in broker events alike.
    const keys = generateKeyPair();
    const token = (await orch.api('POST', '/v1/enrollment-tokens', {})).body.token;
    const facts = { arch: 'x86_64', platform: 't', cpuModel: 't', cores: 1, ramBytes: 4e9, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 't' };
    const dev = (await orch.api('POST', '/v1/enroll', { v: PROTOCOL_VERSION, token, publicKey: keys.publicKey, facts, profile: 'x86-64-gateway' })).body;
    const filler = join(data, 'filler');
    try { execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' }); } catch { /* dd stops at ENOSPC */ }
    const full = await orch.api('POST', '/v1/enrollment-tokens', {});
    assert.equal(full.status, 507, JSON.stringify(full.body));
    assert.equal(full.body.error.code, 'STORAGE_FULL');
    const c = await mqtt.connectAsync({ ...orch.mqttOptions(), clientId: dev.deviceId, username: dev.deviceId, password: createDeviceCredential(dev.deviceId, keys.secretKey, new Date()), reconnectPeriod: 0 });
    await c.endAsync();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(orch.proc.child.exitCode, null, 'a failed write in a broker event does not kill the orchestrator');
    assert.equal((await orch.api('GET', '/v1/devices')).status, 200);
    await rm(filler);
    assert.equal((await orch.api('POST', '/v1/enrollment-tokens', {})).status, 201, 'writes work again once there is room');
  } finally {
    await orch.stop();
  }
});

test('agent: a bundle that does not fit on the device fails with DISK_FULL; the agent stays up and takes the next one', async (t) => {
  if (skip()) return t.skip(skip() as string);
  const orch = await startOrchestrator(join(dir.path, 'orch2'));
  const agentDir = await smallDisk('agent-data', '2500k');
  let agent: Proc | undefined;
  try {
    agent = await startAgent(orch, agentDir, { profile: 'x86-64-gateway' });
    const deploy = async (name: string, hidden: number) => {
      const up = await orch.api('POST', `/v1/models?name=${name}&version=1`, buildTinyMlpModel({ seed: 3, hidden }));
      const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['x86-64-gateway'] });
      const build = await until('build', async () => {
        const x = await orch.api('GET', `/v1/builds/${b.body.build.id}`);
        return x.body.build.status === 'succeeded' && x.body.build;
      });
      const r = await orch.api('POST', '/v1/rollouts', { buildId: build.id, target: {}, ...ONE_WAVE });
      return until('rollout', async () => {
        const g = await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`);
        return g.body.rollout.status !== 'running' && g.body.rollout.devices[0];
      }, 60_000);
    };
    // Too big for 2.5 MB: an fp32 artifact (6.4 MB) fails while downloading, an int8 one
    // (1.6 MB) while the install copies it beside the download. Either way: DISK_FULL.
    const big = await deploy('big', 2048);
    assert.equal(big.state, 'failed', JSON.stringify(big));
    assert.equal(big.code, 'DISK_FULL');
    assert.match(big.reason, /no space left/);
    assert.equal(agent.child.exitCode, null, 'the agent is still running');
    const entries = await readdir(join(agentDir, 'bundles')).catch(() => [] as string[]);
    assert.deepEqual(entries.filter((e) => e.startsWith('.staging-')), [], 'no half-staged bundle is left');

    const small = await deploy('small', 32);
    assert.equal(small.state, 'active', JSON.stringify(small));
  } finally {
    await agent?.kill();
    await orch.stop();
  }
});
