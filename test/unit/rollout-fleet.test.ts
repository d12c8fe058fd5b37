// End to end over 1,000 simulated devices: the real decide() driven by a small in-memory
// executor (test/support/rollout-fleet.ts) with devices that answer like agents.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RolloutSnapshot } from '@edgepack/orchestrator/core/rollout-snapshot.js';
import { FleetSim, fleet, MIN, oldBundle, planOf, snapshotOf, T0, type DeviceBehaviour } from '../support/rollout-fleet.js';

const PROFILES = ['jetson', 'pi4', 'pi5'];
const HOUR = 60 * MIN;

function sim(body: Record<string, unknown>, n: number, behaviour: (id: string, order: number, wave: number) => DeviceBehaviour, offline: (i: number) => boolean = () => false) {
  const plan = planOf(body, PROFILES);
  const snap = snapshotOf(plan, fleet(n, PROFILES, (i) => ({ online: !offline(i) })), { id: 'rol_fleet' });
  const byId = new Map(snap.members.map((m) => [m.deviceId, m]));
  return new FleetSim(plan, snap, (id) => {
    const m = byId.get(id);
    return m ? behaviour(id, m.order, m.wave) : {};
  });
}

const touched = (s: RolloutSnapshot) => s.members.filter((m) => m.firstDispatchedAt !== null);

test('1,000 devices, 20% GOLDEN_MISMATCH: the canary breaches and the rollout pauses with no more than the canary touched', () => {
  const f = sim({}, 1000, (_id, order) => (order % 5 === 0 ? { failCode: 'GOLDEN_MISMATCH' } : {}));
  f.run(T0 + 2 * HOUR, 1000, () => f.status !== 'running');
  assert.equal(f.status, 'paused');
  const pause = f.snap.rollout.pause!;
  assert.equal(pause.code, 'BREACH');
  assert.ok(pause.breaches!.some((b) => b.rule === 'maxGoldenFailures' && b.wave === 0), pause.message);
  const canary = f.snap.members.filter((m) => m.wave === 0).length;
  assert.equal(canary, 3, 'max(3, one per profile)');
  assert.ok(touched(f.snap).length <= canary, `${touched(f.snap).length} touched`);
  assert.ok(f.now - T0 < 2 * MIN, 'it stops within seconds of the failure, not after a bake');
  assert.deepEqual([...f.dispatches.values()].filter((n) => n > 1), []);
});

test('1,000 devices, p95 1.5× their own previous bundle: the canary breaches on maxP95Regression', () => {
  const f = sim({}, 1000, () => ({ p95Factor: 1.5 }));
  f.run(T0 + 2 * HOUR, 1000, () => f.status !== 'running');
  assert.equal(f.status, 'paused');
  const b = f.snap.rollout.pause!.breaches!.find((x) => x.rule === 'maxP95Regression' && x.profile === null)!;
  assert.ok(Math.abs(b.value - 0.5) < 1e-9, String(b.value));
  assert.ok(touched(f.snap).length <= 3);
});

test('1,000 devices with 10% offline and 3% connected but silent: no wave stalls, none counts as a failure; restarts in between dispatch nobody twice', (t) => {
  const f = sim(
    { waves: [{ name: 'canary', size: { count: 3 }, bakeSec: 60 }, { size: { percent: 10 }, bakeSec: 60 }, { size: { percent: 50 }, bakeSec: 60 }, { size: { percent: 100 }, bakeSec: 60 }] },
    1000, (id) => (Number(id.slice(4)) % 33 === 7 ? { silent: true } : {}), (i) => i % 10 === 3,
  );
  let restarts = 0;
  const going = () => f.status === 'scheduled' || f.status === 'running';
  for (let t = T0 + 10 * MIN; t <= T0 + 3 * HOUR && going(); t += 10 * MIN) {
    f.run(t, 5000, () => !going()); // the executor's tick is 1–5 s
    // an orchestrator restart: only what the database holds survives
    f.snap = JSON.parse(JSON.stringify(f.snap));
    restarts++;
  }
  assert.equal(f.status, 'succeeded', JSON.stringify(f.snap.rollout.pause));
  assert.ok(restarts >= 2);
  const count = (phase: string, code?: string) => f.snap.members.filter((m) => m.phase === phase && (code === undefined || m.code === code)).length;
  assert.equal(count('failed'), 0, 'offline and silent devices are never failures');
  const silent = f.snap.members.filter((m) => Number(m.deviceId.slice(4)) % 33 === 7 && Number(m.deviceId.slice(4)) % 10 !== 3);
  assert.ok(silent.length > 20);
  assert.ok(silent.every((m) => m.phase === 'cancelled' && m.code === 'NOT_REACHED' && m.unreached >= 1), 'silent: unreached, then closed at the end');
  assert.equal(count('cancelled', 'NOT_REACHED'), 100 + silent.length, 'offline: waiting until the end, then closed');
  assert.equal(count('succeeded'), 1000 - 100 - silent.length);
  // no device got more install dispatches than its unanswered ones allow: one, plus one per withdrawal
  for (const m of f.snap.members) assert.ok((f.dispatches.get(m.deviceId) ?? 0) <= 1 + m.unreached, m.deviceId);
  for (const m of f.snap.members) if (m.phase === 'succeeded') assert.equal(f.dispatches.get(m.deviceId), 1, m.deviceId);
  const passed = f.kinds('wave-passed');
  assert.equal(passed.length, 4);
  assert.ok(f.now - T0 < 2 * HOUR, `took ${(f.now - T0) / MIN} min`);
  t.diagnostic(`succeeded after ${Math.round((f.now - T0) / MIN)} simulated minutes, ${restarts} restarts, ${count('succeeded')} succeeded, ${count('cancelled', 'NOT_REACHED')} not reached`);
});

test('1,000 devices, onBreach rollback: every touched device returns to its previous bundle, offline ones when they come back', () => {
  // the canary is clean; 20% of wave 1 fails its golden check
  const f = sim(
    { onBreach: 'rollback', waves: [{ name: 'canary', size: { count: 10 }, bakeSec: 30 }, { size: { percent: 10 }, bakeSec: 30 }, { size: { percent: 100 } }] },
    1000, (_id, order, wave) => (wave === 1 && order % 5 === 0 ? { failCode: 'GOLDEN_MISMATCH' } : {}),
  );
  // run until the canary passed and wave 1 is under way
  f.run(T0 + HOUR, 1000, () => f.kinds('wave-passed').length === 1);
  const canary = f.snap.members.filter((m) => m.wave === 0).map((m) => m.deviceId);
  assert.ok(canary.every((id) => f.truth.get(id)?.startsWith('new-')));
  // two canary devices drop off the network on the new bundle
  f.setOnline(canary[0]!, false);
  f.setOnline(canary[1]!, false);
  f.run(T0 + HOUR, 1000, () => f.status === 'rolled_back');
  assert.equal(f.status, 'rolled_back');
  assert.equal(f.kinds('start-rollback').length, 1);
  const all = touched(f.snap);
  assert.ok(all.length > 10 && all.length <= 10 + 100, `${all.length} touched`);
  const fin = f.kinds('finish')[0]!;
  assert.ok(fin.kind === 'finish' && fin.figures.awaitingReturn === 2, JSON.stringify(fin));
  for (const m of all) {
    if (m.deviceId === canary[0] || m.deviceId === canary[1]) continue;
    assert.equal(f.truth.get(m.deviceId), oldBundle(m.profile), `${m.deviceId} runs ${f.truth.get(m.deviceId)}`);
    assert.equal(m.rollbackState, 'done', m.deviceId);
  }
  // untouched devices were never sent anything and still run their old bundle
  for (const m of f.snap.members) if (m.firstDispatchedAt === null) {
    assert.equal(f.dispatches.get(m.deviceId), undefined);
    assert.equal(m.phase, 'cancelled');
  }
  // the two come back
  f.setOnline(canary[0]!, true);
  f.setOnline(canary[1]!, true);
  f.run(f.now + 30 * 1000);
  for (const id of canary) assert.equal(f.truth.get(id), oldBundle(f.snap.devices[id]!.profile), id);
  assert.equal(f.snap.members.filter((m) => m.rollbackState === 'done').length, all.length);
  assert.ok([...f.rollbacks.values()].every((n) => n === 1), 'each device sent its rollback once');
});

test('a continuous rollout reaches a device enrolled after it started', () => {
  const plan = planOf({ membership: 'continuous', waves: [{ size: { count: 3 }, bakeSec: 0 }, { size: { percent: 100 }, bakeSec: 0 }] }, ['pi4']);
  const f = new FleetSim(plan, snapshotOf(plan, fleet(20)));
  f.run(T0 + 5 * MIN, 1000, () => f.kinds('open-wave').some((d) => d.kind === 'open-wave' && d.tail));
  assert.ok(f.kinds('open-wave').some((d) => d.kind === 'open-wave' && d.tail), 'every wave passed, the tail wave is open');
  assert.equal(f.status, 'running');
  // a device enrolls into the target
  const d = fleet(21)[20]!;
  f.snap = { ...f.snap, devices: { ...f.snap.devices, [d.id]: d }, candidates: [d.id] };
  f.truth.set(d.id, d.activeBundle);
  f.run(f.now + 2000);
  f.snap = { ...f.snap, candidates: [] };
  f.run(f.now + 30_000);
  const m = f.snap.members.find((x) => x.deviceId === d.id)!;
  assert.deepEqual([m.late, m.wave, m.phase], [true, 2, 'succeeded']);
  assert.equal(f.truth.get(d.id), 'new-pi4');
});
