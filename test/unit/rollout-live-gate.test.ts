// Rollouts gate on live health, with a fake clock: telemetry windows stored through the real
// ingest in a real SQLite file are turned into each member's live figures (on the new bundle
// since it became active, on its previous bundle in the hour before the rollout touched it) by
// LiveHealthSource, and the pure decide() pauses the wave when the median device got worse.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { evaluateWave } from '@edgepack/orchestrator/core/rollout-gates.js';
import { normalizePlan } from '@edgepack/orchestrator/core/rollout-plan-normalize.js';
import type { RolloutSnapshot } from '@edgepack/orchestrator/core/rollout-snapshot.js';
import { LiveHealthSource, type LiveQuery } from '@edgepack/orchestrator/telemetry/live-health.js';
import type { RolloutPlan } from '@edgepack/orchestrator/records.js';
import {
  MIN, SEC, T0, fleet, memberOf, newBundle, ofKind, oldBundle, planOf, result, snapshotOf, statusReport, step, withDevice, withReport,
} from '../support/rollout-fleet.js';
import { telemetryRig, type Rig } from '../support/telemetry-rig.js';
import { latencies, windowRun } from '../support/telemetry-windows.js';

const NB = newBundle('pi4');
const OB = oldBundle('pi4');
const rigs: Rig[] = [];
afterEach(async () => { while (rigs.length) await rigs.pop()!.close(); });

function install(s: RolloutSnapshot, id: string, at: number): RolloutSnapshot {
  const m = memberOf(s, id);
  s = withReport(s, statusReport(m, m.bundleId!, 'downloading', at), at);
  return withReport(s, statusReport(m, m.bundleId!, 'active', at + 2 * SEC, { result: result(10) }), at + 2 * SEC);
}

const queriesOf = (s: RolloutSnapshot): LiveQuery[] => s.members.filter((m) => m.bundleId).map((m) => ({
  deviceId: m.deviceId, bundleId: m.bundleId!, previousBundle: m.previousBundle, activeAt: m.activeAt, firstDispatchedAt: m.firstDispatchedAt,
}));

/** The canary of 3 on a live gate, installed at T0 + 1 s, with an hour of telemetry on the old bundle before. */
async function canary(newErrorEvery: number, newLatencyFactor: number): Promise<{ r: Rig; p: RolloutPlan; snap: RolloutSnapshot; ids: string[]; live: LiveHealthSource }> {
  const r = await telemetryRig({ startMs: T0 + 10 * MIN });
  rigs.push(r);
  const p = planOf({ waves: [{ size: { count: 3 }, bakeSec: 600 }, { size: { percent: 100 } }], gate: { minExecuted: 2, live: { maxErrorRateIncrease: 0.05, maxP95Regression: 0.3 } } });
  let snap = step(p, snapshotOf(p, fleet(10)), T0).snap;
  const ids = snap.members.filter((m) => m.wave === 0).map((m) => m.deviceId);
  for (const [k, id] of ids.entries()) {
    r.addDevice(id, 'pi4');
    snap = install(snap, id, T0 + SEC);
    // An hour on the old bundle: 100 requests a minute, one of them failed, latency ~10 ms (each device its own level).
    const before = windowRun(id, 1, 60, { startMs: T0 - 60 * MIN, bundleId: OB, failed: { error: 1 }, latenciesOf: (i) => latencies(99, k * 1000 + i, 8 + k, 12 + k) });
    // Ten minutes on the new one, from the minute the switch happened in.
    const err = Math.floor(100 / newErrorEvery);
    const after = windowRun(id, 61, 10, { startMs: T0, bundleId: NB, failed: { error: err }, latenciesOf: (i) => latencies(100 - err, k * 1000 + 500 + i, (8 + k) * newLatencyFactor, (12 + k) * newLatencyFactor) });
    await r.send(id, [...before, ...after]);
  }
  return { r, p, snap, ids, live: new LiveHealthSource({ telemetry: r.telemetry, now: r.now }) };
}

function withLive(s: RolloutSnapshot, live: LiveHealthSource): RolloutSnapshot {
  for (const [id, figures] of live.figures('rol_test', queriesOf(s))) s = withDevice(s, id, { live: figures });
  return s;
}

test('a wave breaches on live error rate: each device is worse on the new bundle than on its own previous one', async () => {
  const { p, snap, ids, live } = await canary(5, 1); // 20 of 100 requests fail on the new bundle, 1 of 100 before
  const s = withLive(snap, live);
  for (const id of ids) {
    const [prev, next] = s.devices[id]!.live!;
    assert.deepEqual([prev!.bundleId, prev!.requests, next!.bundleId, next!.requests], [OB, 6000, NB, 1000]);
    assert.ok(Math.abs(prev!.errorRate - 0.01) < 1e-12 && Math.abs(next!.errorRate - 0.2) < 1e-12);
  }
  const r = step(p, s, T0 + 10 * MIN);
  const pause = ofKind(r.decisions, 'pause')[0];
  assert.ok(pause, 'the wave pauses during its bake');
  const breach = pause.reason.breaches!.find((b) => b.rule === 'liveErrorRate' && b.profile === null)!;
  assert.ok(Math.abs(breach.value - 0.19) < 1e-9, String(breach.value));
  assert.equal(breach.limit, 0.05);
  assert.match(breach.message, /median live error-rate increase 19% exceeds 5%/);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 0, 'the next wave is not started');
  const v = evaluateWave(0, r.snap.members, r.snap.devices, p.waves[0]!.gate);
  assert.equal(v.whole.figures.live!.devices, 3);
});

test('the same error rate and latency as before pass the live gate; a slower p95 breaches it', async () => {
  const same = await canary(100, 1); // 1 in 100 fail, as before
  let r = step(same.p, withLive(same.snap, same.live), T0 + 10 * MIN);
  assert.equal(ofKind(r.decisions, 'pause').length, 0);
  const v = evaluateWave(0, r.snap.members, r.snap.devices, same.p.waves[0]!.gate);
  assert.equal(v.whole.figures.live!.devices, 3);
  assert.ok(Math.abs(v.whole.figures.live!.errorRateIncrease!) < 1e-9);
  assert.ok(Math.abs(v.whole.figures.live!.p95Regression!) < 0.2, String(v.whole.figures.live!.p95Regression));

  const slow = await canary(100, 2); // twice the latency
  r = step(slow.p, withLive(slow.snap, slow.live), T0 + 10 * MIN);
  const b = ofKind(r.decisions, 'pause')[0]!.reason.breaches!.find((x) => x.rule === 'liveP95Regression' && x.profile === null)!;
  assert.ok(b.value > 0.6 && b.value < 1.5, String(b.value));
});

test('live figures: only the baseline hour before the first dispatch and the new bundle since the switch count; answers are reused for a few seconds', async () => {
  const { r, snap, ids, live } = await canary(5, 1);
  const id = ids[0]!;
  // Older than the baseline hour, and the old bundle after the rollout touched the device: neither counts.
  await r.send(id, [
    ...windowRun(id, 200, 5, { startMs: T0 - 3 * 60 * MIN, bundleId: OB, latencies: latencies(100, 9) }).map((w) => ({ ...w, requests: { ...w.requests, error: 50 } })),
    ...windowRun(id, 300, 2, { startMs: T0 + 2 * MIN, bundleId: OB, latencies: latencies(100, 10) }),
  ]);
  const fresh = new LiveHealthSource({ telemetry: r.telemetry, now: r.now });
  const [prev] = fresh.figures('x', queriesOf(snap)).get(id)!;
  assert.equal(prev!.requests, 6000);
  // A member not dispatched yet has nothing to compare.
  const q = queriesOf(snap).map((x) => (x.deviceId === id ? { ...x, activeAt: null, firstDispatchedAt: null } : x));
  assert.equal(fresh.figures('y', q).has(id), false);
  // Reused within the cache time, recomputed after.
  const first = live.figures('rol', queriesOf(snap));
  await r.send(id, windowRun(id, 400, 1, { startMs: T0 + 9 * MIN, bundleId: NB, latencies: latencies(100, 11) }));
  assert.equal(live.figures('rol', queriesOf(snap)), first);
  r.clock.ms += 6 * SEC;
  assert.equal(live.figures('rol', queriesOf(snap)).get(id)![1]!.requests, 1100);
});

test('a plan asks for the live gate with gate.live: defaults fill what it leaves out, a wave may set its own, unknown fields are refused', () => {
  const p = planOf({ gate: { live: { maxErrorRateIncrease: 0.1 } }, waves: [{ size: { count: 3 } }, { size: { percent: 100 }, gate: { live: { minRequests: 500 } } }] });
  assert.deepEqual(p.waves[0]!.gate.live, { maxErrorRateIncrease: 0.1, maxP95Regression: 0.2, minRequests: 50 });
  assert.deepEqual(p.waves[1]!.gate.live, { maxErrorRateIncrease: 0.1, maxP95Regression: 0.2, minRequests: 500 });
  assert.equal(planOf({}).waves[0]!.gate.live, undefined, 'no live gate unless asked for');
  const bad = normalizePlan({ buildId: 'bld_1', target: {}, gate: { live: { maxErrorRate: 0.1 } } }, { modelId: 'mdl_1', targetProfiles: ['pi4'], now: new Date(T0) });
  assert.ok(!bad.ok && bad.field === 'gate.live.maxErrorRate', JSON.stringify(bad));
});
