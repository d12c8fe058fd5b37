// Issue 10 at fleet scale with the simulator: a `device` build of fashion_cnn for both Pis and
// the Jetson, simulated devices whose int8 is faster and fp16 slower than fp32 (--speed), a
// rollout whose canary trials every candidate: int8 for the Pis, fp32 for the Jetson, the whole
// fleet on the winners, every figure on the rollout and the build, the host's pick beside it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { sharedModelsDir } from '../support/paths.js';
import { startOrchestrator, tempDir, until, type Orchestrator } from '../support/processes.js';
import { startSim, type SimProc } from '../support/sim.js';
import { deviceBuild, expectedWinner } from '../support/variant-build.js';

const shared = sharedModelsDir();
const PROFILES = ['raspberry-pi-4', 'raspberry-pi-5', 'jetson-orin-nano'];
const PER_PROFILE = 4;
let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
const sims: SimProc[] = [];

before(async () => {
  if (!shared) return;
  dir = await tempDir('variant-sim');
  orch = await startOrchestrator(join(dir.path, 'o'), ['--log-level', 'warn']);
});
after(async () => {
  for (const s of sims) await s.kill('SIGKILL');
  await orch?.stop();
  await dir?.remove();
});

test('int8 faster on the Pis and fp16 slower on the Jetson ⇒ int8 for the Pis, fp32 for the Jetson, chosen by the canary\'s trials', { skip: shared ? false : 'needs ../shared/models', timeout: 150_000 }, async () => {
  const build = await deviceBuild(orch, shared!, PROFILES);
  for (const a of build.artifacts) {
    assert.equal(a.status, 'built');
    assert.ok(a.candidates.some((c: any) => c.precision === 'fp32' && c.reference), `${a.profile} keeps fp32 as the reference`);
    assert.equal(a.candidates.filter((c: any) => c.hostPick).length, 1, `${a.profile}: the host's pick is recorded`);
  }
  const pi = build.artifacts.find((a: any) => a.profile === 'raspberry-pi-4');
  assert.ok(pi.candidates.some((c: any) => c.precision === 'int8-static'), 'the calibrated int8 passes the host budgets');
  const speed = 'int8-static=0.5,int8-dynamic=0.7,fp16=1.3';
  for (const p of PROFILES) sims.push(await startSim(orch, join(dir.path, `sim-${p}`), PER_PROFILE, ['--profile', p, '--tags', 'vc', '--speed', speed, '--stall-ms', '2000']));
  await until('simulated devices online', async () => {
    const d = (await orch.api('GET', '/v1/devices?tag=vc&limit=200')).body.devices;
    return d.filter((x: any) => x.status === 'online').length === PROFILES.length * PER_PROFILE && d;
  }, 30_000);

  const res = await orch.api('POST', '/v1/rollouts', {
    buildId: build.id, target: { tags: ['vc'] },
    waves: [{ name: 'canary', size: { count: 2 * PROFILES.length }, bakeSec: 1 }, { name: 'rest', size: { percent: 100 }, bakeSec: 1 }],
    gate: { maxP95Regression: 100 }, timeouts: { ackSec: 20, inProgressSec: 60, quorumSec: 120 }, trial: { rounds: 2, timeoutSec: 60 },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const id = res.body.rollout.id;
  const r = await until('rollout succeeded', async () => {
    const x = (await orch.api('GET', `/v1/rollouts/${id}`)).body.rollout;
    if (x.status === 'paused') throw new Error(`paused: ${JSON.stringify(x.pause)}`);
    return x.status === 'succeeded' && x;
  }, 90_000, 500);

  const byProfile = Object.fromEntries(r.choices.map((c: any) => [c.profile, c]));
  assert.deepEqual(Object.keys(byProfile).sort(), [...PROFILES].sort());
  for (const p of PROFILES) {
    const c = byProfile[p];
    assert.equal(c.cause, 'measured');
    assert.equal(c.devices?.length ?? c.candidates[0].devices.length, 2);
    for (const cand of c.candidates) assert.equal(cand.devices.length, 2, `${p} ${cand.precision}: both canary devices' figures`);
    assert.ok(c.hostPick, `${p}: the host's pick beside the devices'`);
    assert.equal(c.precision, expectedWinner(c));
  }
  assert.equal(byProfile['raspberry-pi-4'].precision, 'int8-static');
  assert.equal(byProfile['raspberry-pi-5'].precision, 'int8-static');
  assert.equal(byProfile['jetson-orin-nano'].precision, 'fp32');
  assert.equal(byProfile['jetson-orin-nano'].candidates.find((c: any) => c.precision === 'fp16').medianP95Ms > byProfile['jetson-orin-nano'].candidates.find((c: any) => c.precision === 'fp32').medianP95Ms, true);

  // only the canary trialled; everyone ends on its profile's winner
  for (const d of r.devices) {
    assert.equal(d.outcome, 'succeeded', JSON.stringify(d));
    assert.equal(d.bundleId, byProfile[d.profile].bundleId);
    assert.equal(d.trial === null, d.wave !== 0, `${d.deviceId}: a trial exactly when in the canary`);
  }
  const devices = (await orch.api('GET', '/v1/devices?tag=vc&limit=200')).body.devices;
  for (const d of devices) assert.equal(d.activeBundle, byProfile[d.profile].bundleId);

  const b = (await orch.api('GET', `/v1/builds/${build.id}`)).body.build;
  for (const a of b.artifacts) {
    assert.equal(a.devicePick.bundleId, byProfile[a.profile].bundleId);
    assert.equal(a.devicePick.rolloutId, id);
  }
});
