// Issue 10 over the real app (inject), services, engine and SQLite: a device build's rollout
// sends its canary signed trial desired states (every candidate, grants to their bytes), folds
// trial reports, chooses per profile, installs the winner, and GET /v1/rollouts/:id and
// GET /v1/builds/:id show the choice with every device's figures and the host's pick; the
// engine re-reads it all from the database; strict input on builds and plans.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { PROTOCOL_VERSION, generateKeyPair, verifyDesiredSignature, type BenchmarkResult, type Manifest, type TrialReport } from '@edgepack/protocol';
import { buildApp } from '@edgepack/orchestrator/http/app.js';
import { ADMIN, testDeps, type TestDeps } from '../support/http-app.js';

let t: TestDeps;
let app: FastifyInstance;
const json = (res: LightMyRequestResponse): any => JSON.parse(res.body);
const PROFILE = 'x86-64-gateway';
const PRECISIONS = ['int8-static', 'int8-dynamic', 'fp32'] as const;
const facts = { arch: 'x86_64', platform: 't', cpuModel: 't', cores: 1, ramBytes: 1, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 't' };

/** A succeeded device build: a bundle per candidate, the host's pick (fp32 here, as the build host found int8 slower) as the artifact. */
function deviceBuild(id: string): Record<string, string> {
  const { store } = t;
  const at = new Date(t.clock.ms).toISOString();
  if (!store.getModel('mdl_v')) store.insertModel({ id: 'mdl_v', name: 'v', version: '1', sha256: 'a'.repeat(64), sizeBytes: 1, format: 'onnx', opset: 13, inputs: [], outputs: [], details: {}, createdAt: at });
  store.insertBuild({ id, modelId: 'mdl_v', profiles: [PROFILE], options: {}, createdAt: at, selection: 'device' });
  const ids: Record<string, string> = {};
  PRECISIONS.forEach((precision, position) => {
    const bundleId = `bdl_${id}_${precision.replace(/\W/g, '')}`;
    const manifest = {
      schema: 'edgepack.bundle/1', bundleId, profile: PROFILE, precision, model: { name: 'v', version: '1', sha256: 'a'.repeat(64) }, files: [],
      acceptance: { p95LatencyMs: 50 }, expiresAt: '2030-01-01T00:00:00Z',
    } as unknown as Manifest;
    store.insertBundle({ id: bundleId, buildId: id, profile: PROFILE, manifest, signature: 'sig', createdAt: at });
    store.insertBuildCandidate({
      buildId: id, profile: PROFILE, position, bundleId, format: 'onnx', precision, hostPick: precision === 'fp32', reference: precision === 'fp32',
      reason: 'meets budgets', metrics: { sizeBytes: 100, latencyRatio: precision === 'fp32' ? 1 : 1.2 },
    });
    ids[precision] = bundleId;
  });
  store.updateArtifact(id, { profile: PROFILE, status: 'built', format: 'onnx', precision: 'fp32', bundleId: ids.fp32!, sizeBytes: 1, reason: null, details: {} });
  store.setBuildStatus(id, 'succeeded', null, at);
  return ids;
}

function devices(prefix: string, n: number): string[] {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = `dev_${prefix}${i}`;
    t.store.insertDevice({ id, name: id, profile: PROFILE, publicKey: generateKeyPair().publicKey, tags: [prefix], facts, createdAt: new Date(t.clock.ms).toISOString() });
    t.services.rollouts.onPresence(id, true);
    ids.push(id);
  }
  return ids;
}

const result = (p95: number): BenchmarkResult => ({
  runtime: 'onnxruntime', providers: ['cpu'], loadMs: 1, warmupRuns: 1, runs: 10, latencyMs: { p50: p95 / 2, p90: p95, p95, p99: p95 },
  throughputPerSec: 100, peakRssBytes: 1 << 20, golden: { passed: true, maxAbsError: 0, samples: 3 },
});

function trialReport(rolloutId: string, deviceId: string, state: TrialReport['state'], p95: Record<string, number> = {}, bundles: Record<string, string> = {}): string | null {
  return t.services.rollouts.onTrialReport(deviceId, {
    v: PROTOCOL_VERSION, deviceId, rolloutId, seq: 1, state, at: new Date(t.clock.ms).toISOString(),
    results: Object.entries(p95).map(([precision, v]) => ({ bundleId: bundles[precision]!, precision, result: result(v), agreement: { top1: 1, maxAbsError: 0, samples: 3 } })),
  });
}

const post = (url: string, payload?: object) => app.inject({ method: 'POST', url, headers: ADMIN, ...(payload ? { payload } : {}) });
const getRollout = async (id: string) => json(await app.inject({ url: `/v1/rollouts/${id}`, headers: ADMIN })).rollout;
const getBuild = async (id: string) => json(await app.inject({ url: `/v1/builds/${id}`, headers: ADMIN })).build;
const latest = (id: string) => t.published.filter((p) => p.deviceId === id).at(-1)?.desired;

before(async () => {
  t = await testDeps('variants');
  app = buildApp(t.deps);
  await app.ready();
});
beforeEach(() => { t.published.length = 0; });
after(async () => {
  await app?.close();
  await t?.close();
});

test('strict input: selection and the plan\'s trial fields are checked, naming the field', async () => {
  deviceBuild('bld_in');
  let res = await post('/v1/builds', { modelId: 'mdl_v', selection: 'devices' });
  assert.equal(res.statusCode, 400, res.body);
  assert.match(json(res).error.message, /selection/);
  for (const [trial, field] of [[{ rounds: 0 }, /trial\.rounds/], [{ rounds: 21 }, /trial\.rounds/], [{ timeoutSec: 0 }, /trial\.timeoutSec/], [{ measureAgian: true }, /trial has unknown field 'measureAgian'/], [{ timeoutSec: 3600 }, /^trial\.timeoutSec: 3600 s is not less than timeouts\.quorumSec/]] as const) {
    res = await post('/v1/rollouts', { buildId: 'bld_in', target: {}, trial });
    assert.equal(res.statusCode, 400, res.body);
    assert.match(json(res).error.message, field);
  }
});

test('a device build\'s rollout: the canary trials every candidate, the choice is made from its figures, the canary and then the rest install the winner; both views show it', async () => {
  const bundles = deviceBuild('bld_dev');
  const ids = devices('a', 4);
  const res = await post('/v1/rollouts', {
    buildId: 'bld_dev', target: { tags: ['a'] }, waves: [{ name: 'canary', size: { count: 2 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }],
    trial: { rounds: 2, timeoutSec: 60 },
  });
  assert.equal(res.statusCode, 201, res.body);
  const rid = json(res).rollout.id as string;
  await t.services.engine.idle();
  let r = await getRollout(rid);
  assert.equal(r.selection, 'device');
  assert.deepEqual(r.plan.trial, { rounds: 2, timeoutSec: 60, measureAgain: false });
  const canary = r.devices.filter((d: any) => d.wave === 0).map((d: any) => d.deviceId).sort();
  const rest = ids.filter((id) => !canary.includes(id));
  for (const id of canary) {
    const d = latest(id)!;
    assert.equal(d.kind, 'trial');
    assert.equal(verifyDesiredSignature(d, t.deps.signingPublicKey), true, 'the trial desired state is signed');
    assert.deepEqual(d.trial!.candidates.map((c) => c.manifest.bundleId), PRECISIONS.map((p) => bundles[p]));
    assert.equal(d.trial!.referenceBundleId, bundles.fp32);
    assert.equal(d.bundle.manifest.bundleId, bundles.fp32);
    assert.equal(d.trial!.rounds, 2);
    for (const b of Object.values(bundles)) assert.equal(t.store.isBundleAssigned(id, b), true, 'the trial grants every candidate\'s bytes');
    assert.equal(r.devices.find((x: any) => x.deviceId === id).trial.state, 'dispatched');
    assert.equal(r.devices.find((x: any) => x.deviceId === id).bundleId, null);
  }
  for (const id of rest) {
    assert.equal(latest(id), undefined, 'nothing for the rest before the choice');
    assert.equal(t.store.isBundleAssigned(id, bundles['int8-static']!), false);
  }

  // one canary device reports; the orchestrator "restarts" (the kept state is dropped and read again)
  assert.equal(trialReport(rid, canary[0], 'running'), null);
  assert.equal(trialReport(rid, canary[0], 'done', { 'int8-static': 6, 'int8-dynamic': 9, fp32: 10 }, bundles), null);
  t.services.engine.forget();
  t.published.length = 0;
  await t.services.engine.runRound(rid);
  await t.services.engine.idle();
  assert.equal(t.published.length, 0, 'nothing is sent twice after reading the state back');
  assert.equal((await getRollout(rid)).choices.length, 0, 'the other canary device is still trialling');

  assert.equal(trialReport(rid, canary[1], 'done', { 'int8-static': 7, 'int8-dynamic': 9, fp32: 11 }, bundles), null);
  await t.services.engine.idle();
  t.clock.ms += 200;
  t.services.rollouts.tick();
  await t.services.engine.idle();
  r = await getRollout(rid);
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.deepEqual([c.profile, c.precision, c.bundleId, c.cause, c.rolloutId], [PROFILE, 'int8-static', bundles['int8-static'], 'measured', rid]);
  assert.deepEqual(c.hostPick, { bundleId: bundles.fp32, precision: 'fp32' });
  assert.equal(c.budgetP95Ms, 50);
  assert.deepEqual(c.candidates.map((x: any) => [x.precision, x.medianP95Ms, x.devices.length]), [['int8-static', 6.5, 2], ['int8-dynamic', 9, 2], ['fp32', 10.5, 2]]);
  for (const id of canary) assert.equal(latest(id)?.bundle.manifest.bundleId, bundles['int8-static'], 'the canary installs the winner');
  for (const id of canary) assert.equal(latest(id)?.kind ?? 'install', 'install');
  const ev = json(await app.inject({ url: `/v1/rollouts/${rid}/events?kind=choose-variant`, headers: ADMIN })).events;
  assert.equal(ev.length, 1);
  assert.equal(ev[0].data.choice.candidates.length, 3, 'the event holds every candidate\'s figures');

  // the canary goes active; the rest get the winner, with no trial
  for (const id of canary) {
    t.services.rollouts.onStatus(id, { v: PROTOCOL_VERSION, deviceId: id, rolloutId: rid, bundleId: bundles['int8-static']!, state: 'active', at: new Date(t.clock.ms).toISOString(), result: result(6) });
    t.services.rollouts.onHeartbeat(id, { v: PROTOCOL_VERSION, deviceId: id, uptimeSec: 1, activeBundle: bundles['int8-static']!, agentVersion: 't', at: new Date(t.clock.ms).toISOString() });
  }
  t.clock.ms += 1000;
  t.services.rollouts.tick();
  await t.services.engine.idle();
  for (const id of rest) {
    assert.equal(latest(id)?.bundle.manifest.bundleId, bundles['int8-static']);
    assert.equal(latest(id)?.kind ?? 'install', 'install');
  }

  const b = await getBuild('bld_dev');
  assert.equal(b.selection, 'device');
  const a = b.artifacts[0];
  assert.deepEqual(a.candidates.map((x: any) => [x.precision, x.hostPick, x.reference]), [['int8-static', false, false], ['int8-dynamic', false, false], ['fp32', true, true]]);
  assert.deepEqual(a.hostPick, { bundleId: bundles.fp32, format: 'onnx', precision: 'fp32' });
  assert.equal(a.devicePick.precision, 'int8-static');
  assert.equal(a.devicePick.rolloutId, rid);
  assert.equal(a.devicePick.candidates[0].devices.length, 2);
});

test('a second rollout of the build reuses the stored results (no trial); measureAgain trials again', async () => {
  const bundles = deviceBuild('bld_re');
  const first = devices('b', 2);
  let res = await post('/v1/rollouts', { buildId: 'bld_re', target: { tags: ['b'] }, waves: [{ name: 'all', size: { percent: 100 }, bakeSec: 0 }] });
  const r1 = json(res).rollout.id as string;
  await t.services.engine.idle();
  for (const id of first) trialReport(r1, id, 'done', { 'int8-static': 12, 'int8-dynamic': 8, fp32: 10 }, bundles);
  await t.services.engine.idle();
  t.clock.ms += 200;
  t.services.rollouts.tick();
  await t.services.engine.idle();
  assert.equal((await getRollout(r1)).choices[0].precision, 'int8-dynamic');
  await post(`/v1/rollouts/${r1}/cancel`);

  const more = devices('c', 2);
  t.published.length = 0;
  res = await post('/v1/rollouts', { buildId: 'bld_re', target: { tags: ['c'] }, waves: [{ name: 'all', size: { percent: 100 }, bakeSec: 0 }] });
  assert.equal(res.statusCode, 201, res.body);
  const r2 = json(res).rollout.id as string;
  await t.services.engine.idle();
  const c = (await getRollout(r2)).choices[0];
  assert.deepEqual([c.precision, c.cause], ['int8-dynamic', 'reused']);
  assert.ok(c.candidates.every((x: any) => x.devices.every((d: any) => d.rolloutId === r1)));
  for (const id of more) assert.equal(latest(id)?.kind ?? 'install', 'install', 'no trial: installed at once');
  await post(`/v1/rollouts/${r2}/cancel`);

  const again = devices('d', 1);
  res = await post('/v1/rollouts', { buildId: 'bld_re', target: { tags: ['d'] }, waves: [{ name: 'all', size: { percent: 100 }, bakeSec: 0 }], trial: { measureAgain: true } });
  const r3 = json(res).rollout.id as string;
  await t.services.engine.idle();
  assert.equal((await getRollout(r3)).choices.length, 0);
  assert.equal(latest(again[0]!)?.kind, 'trial');
});

test('trial reports that are not this device\'s, or for no trial under way, are refused or ignored', async () => {
  const bundles = deviceBuild('bld_bad');
  const [a] = devices('e', 1) as [string];
  const res = await post('/v1/rollouts', { buildId: 'bld_bad', target: { tags: ['e'] }, waves: [{ name: 'all', size: { percent: 100 }, bakeSec: 0 }] });
  const rid = json(res).rollout.id as string;
  await t.services.engine.idle();
  assert.match(t.services.rollouts.onTrialReport(a, { v: 1, deviceId: 'dev_other', rolloutId: rid, seq: 1, state: 'done', results: [], at: '' })!, /names device/);
  assert.match(trialReport('rol_nope', a, 'done')!, /no member/);
  // a result for a bundle that is no candidate of the profile is not kept
  assert.equal(trialReport(rid, a, 'done', { fp32: 10, 'int8-static': 5 }, { fp32: bundles.fp32!, 'int8-static': 'bdl_somebody_else' }), null);
  await t.services.engine.idle();
  t.clock.ms += 200;
  t.services.rollouts.tick();
  await t.services.engine.idle();
  const c = (await getRollout(rid)).choices[0];
  assert.equal(c.precision, 'fp32');
  assert.deepEqual(c.candidates.map((x: any) => x.devices.length), [0, 0, 1]);
  // a second report after the trial ended changes nothing
  assert.equal(trialReport(rid, a, 'done', { 'int8-static': 1 }, bundles), null);
  t.services.engine.forget();
  assert.deepEqual((await getRollout(rid)).choices[0].candidates.map((x: any) => x.devices.length), [0, 0, 1]);
});

test('after a restart a trial desired state is republished byte for byte, and a trial intent the crash caught unsigned is signed as a trial, never as an install', async () => {
  const bundles = deviceBuild('bld_rs');
  const [a, b] = devices('f', 2) as [string, string];
  const res = await post('/v1/rollouts', { buildId: 'bld_rs', target: { tags: ['f'] }, waves: [{ name: 'all', size: { percent: 100 }, bakeSec: 0 }] });
  const rid = json(res).rollout.id as string;
  await t.services.engine.idle();
  const sent = t.published.filter((p) => p.deviceId === a).at(-1)!.desired!;
  assert.equal(sent.kind, 'trial');
  // b's intent as a crash between writing and signing leaves it: written, never signed
  const store = t.services.rolloutStore;
  const seq = store.allocateDesired(b, rid, bundles.fp32!, { candidates: PRECISIONS.map((p) => bundles[p]!), referenceBundleId: bundles.fp32!, rounds: 4 });
  t.published.length = 0;
  const { republished, signed } = await t.services.rollouts.resume();
  await t.services.engine.idle();
  assert.ok(republished >= 2 && signed >= 1, JSON.stringify({ republished, signed }));
  const again = t.published.filter((p) => p.deviceId === a).at(-1)!.desired!;
  const { roots: _r1, ...sentNoRoots } = sent as typeof sent & { roots?: unknown };
  const { roots: _r2, ...againNoRoots } = again as typeof again & { roots?: unknown };
  assert.deepEqual(againNoRoots, sentNoRoots, 'the same signed trial');
  const bs = t.published.filter((p) => p.deviceId === b).at(-1)!.desired!;
  assert.equal(bs.seq, seq);
  assert.equal(bs.kind, 'trial');
  assert.equal(bs.trial!.rounds, 4);
  assert.deepEqual(bs.trial!.candidates.map((c) => c.manifest.bundleId), PRECISIONS.map((p) => bundles[p]));
  assert.equal(verifyDesiredSignature(bs, t.deps.signingPublicKey), true);
});
