// Issue 10 with real agents (child processes over TLS, real onnxruntime benchmarks): a `device`
// build of fashion_cnn with its calibration and labelled evaluation data, rolled out to two
// x86-64-gateway agents. Both trial every candidate before installing anything, the choice
// follows the rule on their own figures, both end on the winner, and the rollout shows every
// candidate's figures with the host's pick beside them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { sharedModelsDir } from '../support/paths.js';
import { startAgent, startOrchestrator, tempDir, until, type Orchestrator, type Proc } from '../support/processes.js';
import { deviceBuild, expectedWinner } from '../support/variant-build.js';

const shared = sharedModelsDir();
const PROFILE = 'x86-64-gateway';
let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
const agents: Proc[] = [];

before(async () => {
  if (!shared) return;
  dir = await tempDir('variant-agents');
  orch = await startOrchestrator(join(dir.path, 'o'), ['--log-level', 'warn']);
});
after(async () => {
  for (const a of agents) await a.kill('SIGTERM');
  await orch?.stop();
  await dir?.remove();
});

test('two gateway agents trial every candidate, and both end on the variant their trials measured fastest (fp32 winning ties)', { skip: shared ? false : 'needs ../shared/models', timeout: 150_000 }, async () => {
  const build = await deviceBuild(orch, shared!, [PROFILE]);
  const art = build.artifacts[0];
  const precisions = art.candidates.map((c: any) => c.precision);
  assert.ok(precisions.includes('fp32') && precisions.some((p: string) => p.startsWith('int8')), `int8 candidates pass the host budgets: ${precisions}`);
  for (let i = 0; i < 2; i++) agents.push(await startAgent(orch, join(dir.path, `agent-${i}`), { profile: PROFILE, name: `gw-${i}` }));
  const ids = await until('agents online', async () => {
    const d = (await orch.api('GET', `/v1/devices?profile=${PROFILE}`)).body.devices;
    return d.filter((x: any) => x.status === 'online').length === 2 && d.map((x: any) => x.id);
  }, 30_000);

  const res = await orch.api('POST', '/v1/rollouts', {
    buildId: build.id, target: { deviceIds: ids }, waves: [{ name: 'canary', size: { count: 2 }, bakeSec: 1 }],
    gate: { maxP95Regression: 100 }, timeouts: { ackSec: 30, inProgressSec: 90, quorumSec: 120 }, trial: { rounds: 3, timeoutSec: 90 },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const id = res.body.rollout.id;
  const r = await until('rollout succeeded', async () => {
    const x = (await orch.api('GET', `/v1/rollouts/${id}`)).body.rollout;
    if (x.status === 'paused') throw new Error(`paused: ${JSON.stringify(x.pause)}`);
    return x.status === 'succeeded' && x;
  }, 120_000, 500);

  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.cause, 'measured');
  assert.deepEqual(c.leftOut, []);
  assert.deepEqual(c.candidates.map((x: any) => x.precision), precisions, 'every candidate, in the profile\'s order');
  for (const cand of c.candidates) {
    assert.deepEqual(cand.devices.map((d: any) => d.deviceId).sort(), [...ids].sort(), `${cand.precision}: both agents' figures`);
    for (const d of cand.devices) {
      assert.equal(d.code, null, JSON.stringify(d));
      assert.ok(d.p95Ms > 0 && d.p50Ms > 0 && d.p50Ms <= d.p95Ms);
      assert.equal(d.goldenPassed, true);
      if (cand.reference) assert.equal(d.top1, 1, 'the reference agrees with itself');
      else assert.ok(d.top1 >= 0.6, `${cand.precision} agrees with fp32 on the device's golden samples (${d.top1})`);
    }
  }
  const host = art.candidates.find((x: any) => x.hostPick);
  assert.deepEqual(c.hostPick, { bundleId: host.bundleId, precision: host.precision }, 'the host\'s pick beside the devices\'');
  assert.equal(c.precision, expectedWinner(c), JSON.stringify(c.candidates.map((x: any) => [x.precision, x.medianP95Ms, x.eligible])));
  // Each agent's own fastest: where both agree, by more than the tie margin over fp32, that is the choice.
  const fastest = ids.map((dev: string) => {
    const own = c.candidates.map((x: any) => ({ precision: x.precision, p95: x.devices.find((d: any) => d.deviceId === dev).p95Ms }));
    return own.reduce((a: any, x: any) => (x.p95 < a.p95 ? x : a));
  });
  const ref = (dev: string) => c.candidates.find((x: any) => x.reference).devices.find((d: any) => d.deviceId === dev).p95Ms;
  if (fastest.every((f: any) => f.precision === fastest[0].precision) && fastest.every((f: any, i: number) => f.precision === 'fp32' || f.p95 < ref(ids[i]) * (1 - c.tieMargin))) {
    assert.equal(c.precision, fastest[0].precision, 'both agents measured it fastest');
  }

  // both agents run the winner, installed after the trial, and its own benchmark on it
  for (const d of r.devices) {
    assert.equal(d.outcome, 'succeeded');
    assert.equal(d.bundleId, c.bundleId);
    assert.equal(d.trial.state, 'done');
    assert.ok(d.result && d.result.golden.passed);
  }
  const devices = (await orch.api('GET', `/v1/devices?profile=${PROFILE}`)).body.devices;
  for (const d of devices) assert.equal(d.activeBundle, c.bundleId);
  const events = (await orch.api('GET', `/v1/rollouts/${id}/events?limit=200`)).body.events.map((e: any) => e.kind);
  assert.ok(events.indexOf('choose-variant') > events.lastIndexOf('trial-dispatch'), 'the choice comes after the trials');
  assert.ok(events.indexOf('dispatch') > events.indexOf('choose-variant'), 'nothing is installed before the choice');
  console.log(`choice: ${c.precision} (${c.reason}); host pick ${c.hostPick.precision}; ${c.candidates.map((x: any) => `${x.precision} ${x.devices.map((d: any) => d.p95Ms.toFixed(3)).join('/')} ms`).join(', ')}`);
});
