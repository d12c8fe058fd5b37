// Key rotation with a real orchestrator, real agents and the real `edgepack keys` CLI, none
// re-enrolled: offline root keys (2 of 3) delegate to the online key; the online key is
// rotated; a rogue orchestrator still holding the old online key is refused; the root keys
// are rotated; an agent that slept through two root versions walks the chain on its return.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { generateKeyPair, keyId } from '@edgepack/protocol';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ORCHESTRATOR_CLI } from '../support/paths.js';
import { ONE_WAVE, startAgent, startOrchestrator, startProcess, tempDir, until, type Orchestrator, type Proc } from '../support/processes.js';

const PROFILE = 'x86-64-gateway';
let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator | undefined;
const agents: Proc[] = [];
let ports: string[];
let oDir: string;
let kDir: string;

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

async function keys(...args: string[]): Promise<string> {
  const p = startProcess(ORCHESTRATOR_CLI(), ['keys', ...args]);
  const code = await p.exited;
  assert.equal(code, 0, `edgepack keys ${args.join(' ')} failed:\n${p.stderr()}`);
  return p.stdout();
}

async function restart(): Promise<Orchestrator> {
  await orch?.stop();
  orch = await startOrchestrator(oDir, ports);
  return orch;
}

const trustedVersion = async (agentDir: string) => JSON.parse(await readFile(join(agentDir, 'trust.json'), 'utf8').catch(() => '{"signed":{"version":0}}')).signed.version as number;

async function build(seed: number): Promise<{ id: string; bundleId: string }> {
  const o = orch!;
  const up = await o.api('POST', `/v1/models?name=trust&version=${seed}`, buildTinyMlpModel({ seed }));
  const b = await o.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: [PROFILE] });
  const done = await until('build', async () => {
    const r = await o.api('GET', `/v1/builds/${b.body.build.id}`);
    return r.body.build.status === 'succeeded' && r.body.build;
  }, 30_000);
  return { id: done.id, bundleId: done.artifacts[0].bundleId };
}

/** One wave that waits for every device (a sleeping one gets it when it wakes), no bake, no latency gate. */
async function rollout(buildId: string, deviceIds: string[]): Promise<string> {
  const r = await orch!.api('POST', '/v1/rollouts', { buildId, target: { deviceIds }, ...ONE_WAVE, gate: { ...ONE_WAVE.gate, minExecuted: deviceIds.length } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.rollout.id;
}

async function deviceState(rolloutId: string, deviceId: string): Promise<{ state: string | null; outcome: string; code?: string }> {
  const r = await orch!.api('GET', `/v1/rollouts/${rolloutId}`);
  return r.body.rollout.devices.find((d: { deviceId: string }) => d.deviceId === deviceId);
}

const waitActive = (rolloutId: string, deviceId: string) => until(`${deviceId} active in ${rolloutId}`, async () => {
  const d = await deviceState(rolloutId, deviceId);
  if (d && (d.state === 'failed' || d.state === 'rolled_back')) throw new Error(`${deviceId}: ${d.state} ${d.code}`);
  return d?.state === 'active' && d;
}, 30_000, 150);

before(async () => {
  dir = await tempDir('trust-rotation');
  oDir = join(dir.path, 'orchestrator');
  kDir = join(dir.path, 'offline');
  ports = ['--http-port', String(await freePort()), '--mqtt-port', String(await freePort())];
  // The orchestrator's online key exists first; the offline ceremony delegates to it.
  await mkdir(join(oDir, 'trust'), { recursive: true, mode: 0o700 });
  await writeFile(join(oDir, 'signing-key.json'), JSON.stringify(generateKeyPair()), { mode: 0o600 });
  await keys('init', '--keys', '3', '--threshold', '2', '--out', kDir, '--data-dir', oDir);
  await copyFile(join(kDir, 'root-1.json'), join(oDir, 'trust', 'root-1.json'));
});

after(async () => {
  for (const a of agents) await a.kill();
  await orch?.stop();
  await dir?.remove();
});

test('online key and root key rotation reach agents without re-enrolling; the old online key is refused afterwards', async () => {
  await restart();
  const aDir = join(dir.path, 'agent-a');
  const bDir = join(dir.path, 'agent-b');
  const a = await startAgent(orch!, aDir, { profile: PROFILE });
  const b = await startAgent(orch!, bDir, { profile: PROFILE });
  agents.push(a, b);
  const idA = (await a.event('started')).deviceId as string;
  const idB = (await b.event('started')).deviceId as string;
  // Both pinned the offline root at enrollment, not a development one.
  const pinned = JSON.parse(await readFile(join(aDir, 'identity.json'), 'utf8')).trustedRoot;
  assert.equal(pinned.signed.roles.root.threshold, 2);
  assert.equal(pinned.signed.roles.root.keyids.length, 3);

  // 1. A rollout signed by the delegated online key installs on both.
  const first = await build(1);
  const r1 = await rollout(first.id, [idA, idB]);
  await Promise.all([waitActive(r1, idA), waitActive(r1, idB)]);
  await b.kill(); // B sleeps through the next two root versions

  // 2. Rotate the online key: root v2, signed by 2 of the 3 offline root keys.
  const oldKey = await readFile(join(oDir, 'signing-key.json'));
  await keys('rotate-online', join(kDir, 'root-1.json'), '--online-key', join(kDir, 'online-2.json'), '--create');
  const signed = await keys('sign', join(kDir, 'root-2.json'), '--key', join(kDir, 'root-key-1.json'), '--key', join(kDir, 'root-key-3.json'));
  assert.match(signed, /signed by version 1's root keys: 2 of 2 needed ✓/);
  await copyFile(join(kDir, 'root-2.json'), join(oDir, 'trust', 'root-2.json'));
  await copyFile(join(kDir, 'online-2.json'), join(oDir, 'signing-key.json'));
  const newKeyId = keyId(JSON.parse(await readFile(join(kDir, 'online-2.json'), 'utf8')).publicKey);
  await restart();
  // The re-published desired state carries the chain: A walks to v2 without being asked.
  await until('agent A trusts root v2', async () => (await trustedVersion(aDir)) === 2, 20_000);
  const second = await build(2);
  const r2 = await rollout(second.id, [idA, idB]);
  await waitActive(r2, idA);
  const bundle2 = (await orch!.api('GET', `/v1/bundles/${second.bundleId}`)).body.bundle.manifest;
  assert.equal(bundle2.keyId, newKeyId);

  // 3. A rogue orchestrator with the old online key (stolen, say) and the old chain.
  await orch!.stop();
  const trustDir = join(oDir, 'trust');
  await rename(join(trustDir, 'root-2.json'), join(dir.path, 'root-2.hidden'));
  await writeFile(join(oDir, 'signing-key.json'), oldKey);
  await restart();
  const oldKeyRollout = await rollout(first.id, [idA]);
  await until('agent A refused the old key', async () => /DESIRED_SIGNATURE_INVALID/.test(a.stderr()) && a.stderr(), 20_000);
  const refused = await deviceState(oldKeyRollout, idA);
  assert.equal(refused.outcome, 'dispatched', 'sent, and nothing heard back');
  assert.equal(refused.state, null);
  assert.equal(await trustedVersion(aDir), 2, 'the old chain did not roll the agent back');
  const device = (await orch!.api('GET', `/v1/devices/${idA}`)).body.device;
  assert.equal(device.activeBundle, second.bundleId);
  await orch!.stop();
  await rename(join(dir.path, 'root-2.hidden'), join(trustDir, 'root-2.json'));
  await copyFile(join(kDir, 'online-2.json'), join(oDir, 'signing-key.json'));

  // 4. Rotate the root keys: v3 has three new root keys, signed by 2 old and the new ones.
  await keys('rotate-root', join(kDir, 'root-2.json'), '--keys', '3', '--threshold', '2', '--out', join(kDir, 'v3-keys'));
  await keys('sign', join(kDir, 'root-3.json'), '--key', join(kDir, 'root-key-2.json'), '--key', join(kDir, 'root-key-3.json'));
  await copyFile(join(kDir, 'root-3.json'), join(trustDir, 'root-3.json'));
  await restart();
  await until('agent A trusts root v3', async () => (await trustedVersion(aDir)) === 3, 20_000);
  // The genuine orchestrator re-publishes that rollout signed with the current key, and the
  // bundle built under the retired key is re-signed: now A takes it.
  await waitActive(oldKeyRollout, idA);

  // 5. B comes back after two root versions and one online key it never saw: it walks 1 → 2 → 3
  // and installs the rollout it missed, signed by the key v2 introduced.
  assert.equal(await trustedVersion(bDir), 0, 'B never persisted a root beyond the one it pinned');
  const b2 = await startAgent(orch!, bDir, { enroll: false });
  agents.push(b2);
  await waitActive(r2, idB);
  assert.equal(await trustedVersion(bDir), 3);
  assert.match(b2.stderr(), /"walked":\[2,3\]/);
  const third = await build(3);
  const r3 = await rollout(third.id, [idA, idB]);
  await Promise.all([waitActive(r3, idA), waitActive(r3, idB)]);
});
