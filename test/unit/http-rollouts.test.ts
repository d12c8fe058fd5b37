// The rollout routes over the real app (inject), the real services, engine and SQLite: strict
// plan input naming the field, the one-open-rollout-per-stream rule (409 listing the devices,
// supersede), commands and their refusals, and the events. Devices are rows fed with the same
// reports, heartbeats and presence the MQTT gateway hands the service; only the publisher edge
// records desired states instead of sending them.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { PROTOCOL_VERSION, generateKeyPair, verifyDesiredSignature, type BenchmarkResult, type DesiredState, type DeviceState, type Manifest } from '@edgepack/protocol';
import { buildApp } from '@edgepack/orchestrator/http/app.js';
import { ADMIN, testDeps, type TestDeps } from '../support/http-app.js';

let t: TestDeps;
let app: FastifyInstance;
const json = (res: LightMyRequestResponse): any => JSON.parse(res.body);
const SEC = 1000;

function errorOf(res: LightMyRequestResponse, status: number): { code: string; message: string } {
  assert.equal(res.statusCode, status, res.body);
  return json(res).error;
}

const facts = { arch: 'x86_64', platform: 't', cpuModel: 't', cores: 1, ramBytes: 1, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 't' };

/** A succeeded build of model `model` with a bundle for each profile (rows only: the engine needs nothing more). */
function build(id: string, model: string, profiles: string[]): Record<string, string> {
  const { store } = t;
  const at = new Date(t.clock.ms).toISOString();
  if (!store.getModel(model)) {
    store.insertModel({ id: model, name: model, version: '1', sha256: 'a'.repeat(64), sizeBytes: 1, format: 'onnx', opset: 13, inputs: [], outputs: [], details: {}, createdAt: at });
  }
  store.insertBuild({ id, modelId: model, profiles, options: {}, createdAt: at });
  const bundles: Record<string, string> = {};
  for (const p of profiles) {
    const bundleId = `bdl_${id}_${p.replace(/\W/g, '')}`;
    const manifest = { schema: 'edgepack.bundle/1', bundleId, profile: p, model: { name: model, version: '1', sha256: 'a'.repeat(64) }, files: [], expiresAt: '2030-01-01T00:00:00Z' } as unknown as Manifest;
    store.insertBundle({ id: bundleId, buildId: id, profile: p, manifest, signature: 'sig', createdAt: at });
    store.updateArtifact(id, { profile: p, status: 'built', format: 'onnx', precision: 'fp32', bundleId, sizeBytes: 1, reason: null, details: {} });
    bundles[p] = bundleId;
  }
  store.setBuildStatus(id, 'succeeded', null, at);
  return bundles;
}

/** Enrolled devices online, running `active` (a bundle of an older build) with a last benchmark of p95 10 ms. */
function devices(prefix: string, n: number, profile: string, active: string | null, tags: string[] = []): string[] {
  if (active && !t.store.getBundle(active)) {
    const at = new Date(t.clock.ms).toISOString();
    t.store.insertBuild({ id: `bld_${active}`, modelId: 'mdl_base', profiles: [profile], options: {}, createdAt: at });
    const manifest = { schema: 'edgepack.bundle/1', bundleId: active, profile, model: { name: 'base', version: '0', sha256: 'b'.repeat(64) }, files: [], expiresAt: '2030-01-01T00:00:00Z' } as unknown as Manifest;
    t.store.insertBundle({ id: active, buildId: `bld_${active}`, profile, manifest, signature: 'sig', createdAt: at });
  }
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = `dev_${prefix}${String(i).padStart(3, '0')}`;
    t.store.insertDevice({ id, name: id, profile, publicKey: generateKeyPair().publicKey, tags, facts, createdAt: new Date(t.clock.ms).toISOString() });
    t.services.rollouts.onPresence(id, true);
    // The first heartbeat says what it runs; the next one's benchmark then counts for that bundle.
    if (active) { heartbeat(id, active, 10); heartbeat(id, active, 10); }
    ids.push(id);
  }
  return ids;
}

function result(p95: number, passed = true): BenchmarkResult {
  return {
    runtime: 'onnxruntime', providers: ['cpu'], loadMs: 1, warmupRuns: 1, runs: 10, latencyMs: { p50: p95 / 2, p90: p95, p95, p99: p95 },
    throughputPerSec: 100, peakRssBytes: 1 << 20, golden: { passed, maxAbsError: passed ? 0 : 1, samples: 3 },
  };
}

function heartbeat(id: string, activeBundle: string | null, p95?: number): void {
  t.services.rollouts.onHeartbeat(id, {
    v: PROTOCOL_VERSION, deviceId: id, uptimeSec: 1, activeBundle, agentVersion: 't', at: new Date(t.clock.ms).toISOString(),
    ...(p95 !== undefined ? { lastBenchmark: result(p95) } : {}),
  });
}

function report(rolloutId: string, id: string, bundleId: string, state: DeviceState, extra: { code?: string; result?: BenchmarkResult } = {}): void {
  const why = t.services.rollouts.onStatus(id, { v: PROTOCOL_VERSION, deviceId: id, rolloutId, bundleId, state, at: new Date(t.clock.ms).toISOString(), ...extra });
  assert.equal(why, null);
}

/** Time passes; the tick runs; everything the engine asked for is done. */
async function advance(ms: number): Promise<void> {
  t.clock.ms += ms;
  t.services.rollouts.tick();
  await t.services.engine.idle();
}

/** What the device does with its newest desired state: installs it (active with p95) or fails with `code`. */
function play(rolloutId: string, id: string, outcome: { p95?: number; code?: string } = {}): string {
  const d = t.published.filter((p) => p.deviceId === id).at(-1)?.desired;
  assert.ok(d, `${id} was sent a desired state`);
  assert.equal(verifyDesiredSignature(d, t.deps.signingPublicKey), true, 'signed by the orchestrator');
  const bundle = d.bundle.manifest.bundleId;
  t.clock.ms += 10;
  report(rolloutId, id, bundle, 'downloading');
  t.clock.ms += 10;
  if (outcome.code) report(rolloutId, id, bundle, outcome.code === 'GOLDEN_MISMATCH' ? 'rolled_back' : 'failed', { code: outcome.code, result: result(outcome.p95 ?? 10, false) });
  else report(rolloutId, id, bundle, 'active', { result: result(outcome.p95 ?? 10) });
  return bundle;
}

const post = (url: string, payload?: object) => app.inject({ method: 'POST', url, headers: ADMIN, ...(payload ? { payload } : {}) });
const get = async (id: string) => json(await app.inject({ url: `/v1/rollouts/${id}`, headers: ADMIN })).rollout;
const events = async (id: string, query = '') => json(await app.inject({ url: `/v1/rollouts/${id}/events${query}`, headers: ADMIN }));

before(async () => {
  t = await testDeps('rollouts');
  t.store.insertModel({ id: 'mdl_base', name: 'base', version: '0', sha256: 'b'.repeat(64), sizeBytes: 1, format: 'onnx', opset: 13, inputs: [], outputs: [], details: {}, createdAt: new Date(t.clock.ms).toISOString() });
  app = buildApp(t.deps);
  await app.ready();
});
beforeEach(() => { t.published.length = 0; });
after(async () => {
  await app?.close();
  await t?.close();
});

// --- the plan ---

test('POST /v1/rollouts: anything invalid is a 400 naming the field, and nothing is created', async () => {
  build('bld_plan', 'mdl_plan', ['x86-64-gateway']);
  const before = t.store.listRollouts().length;
  const cases: [object, string, RegExp][] = [
    [{ buildId: 'bld_plan', target: {}, waves: [{ size: { count: 1, percent: 5 } }] }, 'VALIDATION_FAILED', /body\.waves\.0\.size/],
    [{ buildId: 'bld_plan', target: {}, gate: { maxFailureRate: 0.1 } }, 'VALIDATION_FAILED', /body\.gate has unknown field 'maxFailureRate'/],
    [{ buildId: 'bld_plan', target: {}, timeouts: { ackSec: 0 } }, 'VALIDATION_FAILED', /body\.timeouts\.ackSec/],
    [{ buildId: 'bld_plan', target: {}, onBreach: 'explode' }, 'VALIDATION_FAILED', /body\.onBreach/],
    [{ buildId: 'bld_plan', target: {}, waves: [{ size: { percent: 60 } }, { size: { percent: 60 } }, { size: { percent: 100 } }] }, 'ROLLOUT_PLAN_INVALID', /^waves\[1\]\.size\.percent: /],
    [{ buildId: 'bld_plan', target: {}, retry: { retryOn: ['DOWNLOAD_STALLED', 'GOLDEN_MISMATCH'] } }, 'ROLLOUT_PLAN_INVALID', /^retry\.retryOn\[1\]: GOLDEN_MISMATCH is a deterministic refusal/],
    [{ buildId: 'bld_plan', target: {}, schedule: { windows: [{ cron: '0 2 * * *', durationMin: 60, tz: 'Mars/Olympus' }] } }, 'ROLLOUT_PLAN_INVALID', /^schedule\.windows\[0\]\.tz: unknown time zone/],
    [{ buildId: 'bld_plan', target: {}, schedule: { endAt: '2020-01-01T00:00:00Z' } }, 'ROLLOUT_PLAN_INVALID', /^schedule\.endAt: .* is already past/],
    [{ buildId: 'bld_plan', target: {}, waves: [{ name: 'a', size: { count: 1 } }, { name: 'a', size: { percent: 100 } }] }, 'ROLLOUT_PLAN_INVALID', /^waves\[1\]\.name: duplicates/],
  ];
  for (const [payload, code, message] of cases) {
    const e = errorOf(await post('/v1/rollouts', payload), 400);
    assert.equal(e.code, code, JSON.stringify(payload));
    assert.match(e.message, message);
  }
  assert.equal(t.store.listRollouts().length, before);
  assert.equal(t.published.length, 0);
});

// --- one open rollout per device and stream ---

test('a second rollout of the same stream is a 409 listing the devices; supersede: true takes over those not started', async () => {
  const old = build('bld_s1', 'mdl_stream', ['x86-64-gateway']);
  const next = build('bld_s2', 'mdl_stream', ['x86-64-gateway']);
  const ids = devices('st', 4, 'x86-64-gateway', 'bdl_base');
  const plan = { target: { deviceIds: ids }, waves: [{ name: 'first', size: { count: 2 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }], gate: { maxP95Regression: 100 } };
  const r1 = json(await post('/v1/rollouts', { buildId: 'bld_s1', ...plan })).rollout;
  assert.equal(r1.stream, 'mdl_stream', 'the stream defaults to the build\'s model');
  const first = r1.devices.filter((d: any) => d.wave === 0).map((d: any) => d.deviceId);
  assert.equal(first.length, 2);
  // One device of the first wave has started (reported): it cannot be taken over.
  report(r1.id, first[0], old['x86-64-gateway']!, 'downloading');

  const e = errorOf(await post('/v1/rollouts', { buildId: 'bld_s2', ...plan }), 409);
  assert.equal(e.code, 'ROLLOUT_CONFLICT');
  for (const id of ids) assert.match(e.message, new RegExp(`${id} \\(${r1.id}\\)`));
  assert.match(e.message, /supersede: true/);
  // Another stream is no conflict.
  build('bld_other', 'mdl_other', ['x86-64-gateway']);
  const outsider = ids.find((x) => !first.includes(x))!; // not one whose withdrawal is checked below
  const other = await post('/v1/rollouts', { buildId: 'bld_other', target: { deviceIds: [outsider] }, waves: [{ size: { percent: 100 } }], rate: { maxInFlight: 1 } });
  assert.equal(other.statusCode, 201, other.body);
  assert.equal(json(await post(`/v1/rollouts/${json(other).rollout.id}/cancel`)).rollout.status, 'cancelled');

  const r2 = json(await post('/v1/rollouts', { buildId: 'bld_s2', ...plan, supersede: true })).rollout;
  const mine = Object.fromEntries(r2.devices.map((d: any) => [d.deviceId, d]));
  assert.equal(mine[first[0]].outcome, 'skipped');
  assert.equal(mine[first[0]].code, 'STARTED_IN_OTHER_ROLLOUT');
  const before = Object.fromEntries((await get(r1.id)).devices.map((d: any) => [d.deviceId, d]));
  assert.equal(before[first[0]].outcome, 'in_progress', 'the started device finishes where it is');
  for (const id of ids.filter((x) => x !== first[0])) {
    assert.equal(before[id].outcome, 'cancelled', id);
    assert.equal(before[id].code, 'SUPERSEDED');
    assert.match(before[id].reason, new RegExp(r2.id));
  }
  // The old rollout's dispatched-but-not-started device was withdrawn: a newer desired state naming what it runs.
  const withdrawn = t.published.filter((p) => p.deviceId === first[1] && p.desired?.rolloutId === r1.id).at(-1)!.desired!;
  assert.equal(withdrawn.bundle.manifest.bundleId, 'bdl_base');
  // ...and the new one dispatched it its own bundle afterwards, with a higher seq.
  const dispatched = t.published.filter((p) => p.deviceId === first[1] && p.desired?.rolloutId === r2.id);
  if (dispatched.length) assert.ok(dispatched.at(-1)!.desired!.seq > withdrawn.seq);
  const open = t.db.prepare("SELECT device_id, rollout_id FROM rollout_members WHERE stream = 'mdl_stream' AND open = 1 ORDER BY device_id").all() as { device_id: string; rollout_id: string }[];
  assert.deepEqual(open.map((o) => o.device_id), [...ids].sort(), 'every device held by exactly one rollout');
  assert.equal(open.find((o) => o.device_id === first[0])!.rollout_id, r1.id);
  // The database itself refuses a second open member of the same device and stream (here in a
  // rollout that has no member for that device at all).
  const insert = (open: number) => t.db.prepare(`INSERT INTO rollout_members (rollout_id, device_id, stream, open, profile, wave, ord, step, phase, joined_ms, late, attempts, unreached)
    VALUES (?, ?, 'mdl_stream', ?, 'x86-64-gateway', 0, 999, 'install', 'waiting', 0, 0, 0, 0)`).run(json(other).rollout.id, first[0], open);
  assert.throws(() => insert(1), /UNIQUE constraint failed: rollout_members\.device_id, rollout_members\.stream/);
  insert(0); // closed members are not counted
  t.db.prepare('DELETE FROM rollout_members WHERE rollout_id = ? AND device_id = ?').run(json(other).rollout.id, first[0]);
  for (const id of [r1.id, r2.id]) await post(`/v1/rollouts/${id}/cancel`);
  await t.services.engine.idle();
});

// --- commands ---

test('commands: pause and resume, approval, refusals in the wrong state (409), cancel; each one an event with its result', async () => {
  const b = build('bld_cmd', 'mdl_cmd', ['raspberry-pi-4']);
  const ids = devices('cm', 6, 'raspberry-pi-4', 'bdl_prev');
  const r = json(await post('/v1/rollouts', {
    buildId: 'bld_cmd', target: { deviceIds: ids }, gate: { maxP95Regression: 100 },
    waves: [{ name: 'canary', size: { count: 2 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0, requireApproval: true }],
  })).rollout;
  assert.equal(r.status, 'running');
  assert.deepEqual(r.waves.map((w: any) => [w.name, w.status, w.requireApproval]), [['canary', 'open', false], ['rest', 'pending', true]]);
  assert.equal(r.counts.dispatched, 2);

  // pause: nothing new goes out; a second pause is harmless
  let x = json(await post(`/v1/rollouts/${r.id}/pause`, { note: 'lunch' })).rollout;
  assert.equal(x.status, 'paused');
  assert.equal(x.pause.code, 'OPERATOR');
  assert.match(x.pause.message, /lunch/);
  assert.equal((await post(`/v1/rollouts/${r.id}/pause`)).statusCode, 200);
  assert.equal(errorOf(await post(`/v1/rollouts/${r.id}/approve`), 409).code, 'ROLLOUT_NOT_AWAITING_APPROVAL');
  assert.equal(errorOf(await post(`/v1/rollouts/${r.id}/resume`, { force: 'yes' }), 400).code, 'VALIDATION_FAILED');
  const canary = x.devices.filter((d: any) => d.outcome === 'dispatched').map((d: any) => d.deviceId);
  for (const id of canary) play(r.id, id, { p95: 11 });
  await advance(SEC);
  assert.equal((await get(r.id)).status, 'paused', 'a paused rollout does not go on by itself');

  x = json(await post(`/v1/rollouts/${r.id}/resume`)).rollout;
  // the canary passed; the next wave waits for approval
  assert.equal(x.waves[0].status, 'passed');
  assert.equal(x.waves[0].gate.figures.succeeded, 2);
  assert.equal(x.waves[0].gate.pass, true);
  assert.equal(x.status, 'paused');
  assert.equal(x.pause.code, 'AWAITING_APPROVAL');
  assert.equal(x.pause.wave, 1);
  assert.equal(errorOf(await post(`/v1/rollouts/${r.id}/resume`), 409).code, 'ROLLOUT_AWAITING_APPROVAL');
  x = json(await post(`/v1/rollouts/${r.id}/approve`)).rollout;
  assert.equal(x.status, 'running');
  assert.equal(x.waves[1].status, 'open');
  assert.ok(x.waves[1].approvedAt);
  assert.equal(x.counts.dispatched, 4);
  assert.equal(errorOf(await post(`/v1/rollouts/${r.id}/resume`), 409).code, 'ROLLOUT_NOT_PAUSED');

  // cancel: those not started are withdrawn; one that started finishes
  const rest = x.devices.filter((d: any) => d.outcome === 'dispatched').map((d: any) => d.deviceId);
  report(r.id, rest[0], b['raspberry-pi-4']!, 'downloading');
  x = json(await post(`/v1/rollouts/${r.id}/cancel`)).rollout;
  assert.equal(x.status, 'cancelled');
  const by = Object.fromEntries(x.devices.map((d: any) => [d.deviceId, d]));
  assert.equal(by[rest[0]].outcome, 'in_progress');
  for (const id of rest.slice(1)) assert.equal(by[id].outcome, 'cancelled');
  assert.equal((await post(`/v1/rollouts/${r.id}/cancel`)).statusCode, 200, 'cancel again: already in effect');
  assert.equal(errorOf(await post(`/v1/rollouts/${r.id}/resume`), 409).code, 'ROLLOUT_FINISHED');
  assert.equal(errorOf(await post('/v1/rollouts/rol_nope0000000000/pause'), 404).code, 'ROLLOUT_NOT_FOUND');

  // every command is an event, refused ones with their code
  const cmds = (await events(r.id, '?kind=command:resume')).events;
  // (the resume with force: 'yes' never reached the service: the schema refused it)
  assert.deepEqual(cmds.map((e: any) => e.data.result), ['done', 'refused', 'refused', 'refused']);
  assert.deepEqual(cmds.filter((e: any) => e.data.result === 'refused').map((e: any) => e.data.code), ['ROLLOUT_AWAITING_APPROVAL', 'ROLLOUT_NOT_PAUSED', 'ROLLOUT_FINISHED']);
  const kinds = (await events(r.id, '?limit=200')).events.map((e: any) => e.kind);
  for (const k of ['create', 'start', 'open-wave', 'dispatch', 'command:pause', 'pause', 'mark-member', 'wave-passed', 'await-approval', 'command:approve', 'approve', 'command:cancel', 'withdraw', 'finish']) {
    assert.ok(kinds.includes(k), `event ${k} in ${kinds.join(' ')}`);
  }
  // The withdrawals named what the devices run, with newer seqs than the dispatches.
  for (const id of rest.slice(1)) {
    const sent = t.published.filter((p) => p.deviceId === id).map((p) => p.desired!);
    assert.equal(sent.at(-1)!.bundle.manifest.bundleId, 'bdl_prev');
    assert.ok(sent.at(-1)!.seq > sent.at(-2)!.seq);
  }
});

test('a breach pauses with the figures; resume is refused naming the breach until force: true, which records an override', async () => {
  build('bld_br', 'mdl_br', ['raspberry-pi-4']);
  const ids = devices('br', 10, 'raspberry-pi-4', 'bdl_prev');
  const r = json(await post('/v1/rollouts', {
    buildId: 'bld_br', target: { deviceIds: ids },
    waves: [{ name: 'canary', size: { count: 4 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }],
  })).rollout;
  const canary = r.devices.filter((d: any) => d.outcome === 'dispatched').map((d: any) => d.deviceId);
  // p95 1.5x each device's own baseline (10 ms): a median regression of 50% against 10% allowed
  for (const id of canary) play(r.id, id, { p95: 15 });
  await advance(200);
  const x = await get(r.id);
  assert.equal(x.status, 'paused');
  assert.equal(x.pause.code, 'BREACH');
  assert.equal(x.pause.breaches[0].rule, 'maxP95Regression');
  assert.ok(Math.abs(x.pause.breaches[0].value - 0.5) < 1e-9);
  assert.equal(x.pause.figures.p95Devices, 4);
  assert.equal(x.waves[0].gate.figures.p95Regression, x.pause.breaches[0].value);
  assert.equal(x.waves[0].profiles[0].figures.profile, 'raspberry-pi-4');
  for (const d of x.devices.filter((m: any) => m.wave === 0)) {
    assert.equal(d.baselineP95Ms, 10);
    assert.equal(d.p95Ms, 15);
    assert.equal(d.result.latencyMs.p95, 15);
  }
  const refused = errorOf(await post(`/v1/rollouts/${r.id}/resume`), 409);
  assert.equal(refused.code, 'ROLLOUT_BREACH_HOLDS');
  assert.match(refused.message, /median p95 regression 50%.*force: true/);
  const forced = json(await post(`/v1/rollouts/${r.id}/resume`, { force: true })).rollout;
  assert.equal(forced.status, 'running');
  assert.equal(forced.waves[1].status, 'open');
  const ev = (await events(r.id, '?kind=resume')).events[0];
  assert.equal(ev.data.forced, true);
  assert.equal(ev.data.forcedPast[0].rule, 'maxP95Regression');
  const pause = (await events(r.id, '?kind=pause')).events[0];
  assert.equal(pause.data.reason.breaches[0].rule, 'maxP95Regression', 'the pause event carries the figures that caused it');
  await post(`/v1/rollouts/${r.id}/cancel`);
  await t.services.engine.idle();
});

test('fleet rollback: every touched device is sent its previous bundle (a new seq); the report brings the rollout to rolled_back', async () => {
  const b = build('bld_rb', 'mdl_rb', ['raspberry-pi-4']);
  const ids = devices('rb', 3, 'raspberry-pi-4', 'bdl_before');
  const r = json(await post('/v1/rollouts', { buildId: 'bld_rb', target: { deviceIds: ids }, waves: [{ size: { percent: 100 }, bakeSec: 0 }], gate: { maxP95Regression: 100 } })).rollout;
  for (const id of ids) play(r.id, id, { p95: 12 });
  await advance(200);
  assert.equal((await get(r.id)).status, 'succeeded');
  t.published.length = 0;
  let x = json(await post(`/v1/rollouts/${r.id}/rollback`)).rollout;
  assert.equal(x.status, 'rolling_back');
  assert.equal(x.rollback.cause, 'command');
  assert.deepEqual(t.published.map((p) => p.deviceId).sort(), [...ids].sort());
  for (const p of t.published) assert.equal(p.desired!.bundle.manifest.bundleId, 'bdl_before');
  for (const id of ids) {
    assert.equal(x.devices.find((d: any) => d.deviceId === id).rollback.state, 'dispatched');
    report(r.id, id, 'bdl_before', 'active', { result: result(10) });
  }
  await advance(200);
  x = await get(r.id);
  assert.equal(x.status, 'rolled_back');
  for (const d of x.devices) {
    assert.equal(d.rollback.state, 'done');
    assert.equal(d.rollback.result.latencyMs.p95, 10, 'with the figures measured on the previous bundle');
    assert.equal(d.activeBundle, 'bdl_before');
  }
  assert.equal(x.devices[0].bundleId, b['raspberry-pi-4']);
  assert.equal((await post(`/v1/rollouts/${r.id}/rollback`)).statusCode, 200, 'rollback again: already in effect');
  assert.equal(errorOf(await post(`/v1/rollouts/${r.id}/pause`), 409).code, 'ROLLOUT_FINISHED');
});

// --- events ---

test('GET /v1/rollouts/:id/events pages with limit and cursor, filters by kind and device, and refuses a foreign cursor', async () => {
  build('bld_ev', 'mdl_ev', ['raspberry-pi-4']);
  const ids = devices('ev', 5, 'raspberry-pi-4', 'bdl_prev');
  const r = json(await post('/v1/rollouts', { buildId: 'bld_ev', target: { deviceIds: ids }, waves: [{ size: { percent: 100 }, bakeSec: 0 }] })).rollout;
  const all = (await events(r.id, '?limit=200')).events;
  const seen: number[] = [];
  let cursor = '';
  for (let i = 0; i < 20; i++) {
    const page = await events(r.id, `?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.ok(page.events.length <= 2);
    seen.push(...page.events.map((e: any) => e.seq));
    if (page.next === null) break;
    cursor = page.next;
  }
  assert.deepEqual(seen, all.map((e: any) => e.seq));
  assert.deepEqual(seen, [...seen].sort((a, b) => a - b));
  const dispatches = (await events(r.id, '?kind=dispatch')).events;
  assert.equal(dispatches.length, 5);
  const one = dispatches[0];
  assert.equal(one.data.cause, 'first');
  assert.equal(one.data.previousBundle, 'bdl_prev');
  assert.equal(one.data.baselineP95Ms, 10);
  assert.deepEqual((await events(r.id, `?deviceId=${one.deviceId}`)).events.map((e: any) => e.deviceId), [one.deviceId]);
  assert.equal(errorOf(await app.inject({ url: `/v1/rollouts/${r.id}/events?cursor=bm9wZQ`, headers: ADMIN }), 400).code, 'CURSOR_INVALID');
  assert.equal(errorOf(await app.inject({ url: '/v1/rollouts/rol_nope0000000000/events', headers: ADMIN }), 404).code, 'ROLLOUT_NOT_FOUND');
  assert.equal(errorOf(await app.inject({ url: `/v1/rollouts/${r.id}/events?limit=0`, headers: ADMIN }), 400).code, 'VALIDATION_FAILED');
  await post(`/v1/rollouts/${r.id}/cancel`);
  await t.services.engine.idle();
});

test('rounds decide over the kept snapshot, which follows every report; reading it back from the database gives the same', async () => {
  build('bld_kept', 'mdl_kept', ['raspberry-pi-4']);
  const ids = devices('kp', 6, 'raspberry-pi-4', 'bdl_prev');
  const r = json(await post('/v1/rollouts', { buildId: 'bld_kept', target: { deviceIds: ids }, waves: [{ size: { count: 2 }, bakeSec: 0 }, { size: { percent: 100 }, bakeSec: 0 }], gate: { maxP95Regression: 100 } })).rollout;
  const loads = t.services.engine.loads;
  const rounds = t.services.engine.rounds;
  for (let i = 0; i < 5 && (await get(r.id)).status === 'running'; i++) {
    for (const d of (await get(r.id)).devices.filter((x: any) => x.outcome === 'dispatched')) play(r.id, d.deviceId, { p95: 10 });
    t.clock.ms += 200;
    await t.services.engine.idle(); // the rounds the reports asked for (no tick: it would let go of a finished rollout)
  }
  const kept = await get(r.id);
  assert.equal(kept.status, 'succeeded');
  assert.ok(t.services.engine.rounds >= rounds + 2, 'the rollout went through several rounds');
  assert.equal(t.services.engine.loads, loads, 'none of them read the members back');
  t.services.engine.forget();
  const fresh = await get(r.id);
  assert.equal(t.services.engine.loads, loads + 1);
  assert.deepEqual(fresh, kept, 'what was kept is what the database holds');
});

test('a restart picks up from the database: every device\'s latest desired state goes out again unchanged, nothing is dispatched twice', async () => {
  build('bld_re', 'mdl_re', ['raspberry-pi-4']);
  const ids = devices('re', 4, 'raspberry-pi-4', 'bdl_prev');
  const r = json(await post('/v1/rollouts', { buildId: 'bld_re', target: { deviceIds: ids }, waves: [{ size: { percent: 100 }, bakeSec: 0 }], gate: { maxP95Regression: 100 } })).rollout;
  const sent = new Map(t.published.map((p) => [p.deviceId, JSON.stringify(p.desired)]));
  assert.equal(sent.size, 4);
  t.published.length = 0;
  const again = await t.services.rollouts.resume();
  await t.services.engine.idle();
  const mine = t.published.filter((p) => ids.includes(p.deviceId));
  assert.equal(mine.length, 4);
  for (const p of mine) assert.equal(JSON.stringify(p.desired), sent.get(p.deviceId), 'byte for byte');
  assert.ok(again.republished >= 4);
  assert.equal(again.signed, 0);
  assert.equal(t.services.rolloutStore.countEvents(r.id, 'dispatch'), 4, 'the round after the restart dispatched nothing more');
  await post(`/v1/rollouts/${r.id}/cancel`);
  await t.services.engine.idle();
});

test('a one-wave rollout made before waves stays readable, its reports still fold into its actions, and it takes no commands', async () => {
  build('bld_legacy', 'mdl_legacy', ['raspberry-pi-4']);
  const [id] = devices('lg', 1, 'raspberry-pi-4', null);
  const at = new Date(t.clock.ms).toISOString();
  t.store.insertRollout({ id: 'rol_legacy000000', buildId: 'bld_legacy', status: 'running', target: { deviceIds: [id!] }, createdAt: at, finishedAt: null }, [{
    rolloutId: 'rol_legacy000000', deviceId: id!, groupPosition: 0, bundleId: 'bdl_bld_legacy_raspberrypi4', state: 'pending', code: null, reason: null, result: null, updatedAt: at,
  }], [0]);
  let r = await get('rol_legacy000000');
  assert.equal(r.staged, false);
  assert.equal(r.plan, null);
  assert.deepEqual(r.waves, []);
  assert.deepEqual(r.devices.map((d: any) => [d.deviceId, d.state, d.outcome]), [[id, 'pending', 'dispatched']]);
  assert.equal(errorOf(await post('/v1/rollouts/rol_legacy000000/pause'), 409).code, 'ROLLOUT_FINISHED');
  report('rol_legacy000000', id!, 'bdl_bld_legacy_raspberrypi4', 'active', { result: result(7) });
  r = await get('rol_legacy000000');
  assert.equal(r.status, 'succeeded');
  assert.equal(r.devices[0].state, 'active');
  assert.equal(r.devices[0].result.latencyMs.p95, 7);
  const listed = json(await app.inject({ url: '/v1/rollouts?buildId=bld_legacy', headers: ADMIN })).rollouts;
  assert.deepEqual(listed.map((x: any) => [x.id, x.staged, x.stream]), [['rol_legacy000000', false, null]]);
});
