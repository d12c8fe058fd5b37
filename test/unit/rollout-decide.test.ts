// decide(plan, snapshot, now) with a fake clock and no IO: each counting rule, each gate, retries,
// rate limits, schedule and windows, commands, rollback, late joiners, supersede and restarts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide } from '@edgepack/orchestrator/core/rollout-decide.js';
import { applyDecisions, patchOf, type Decision } from '@edgepack/orchestrator/core/rollout-decisions.js';
import { classify } from '@edgepack/orchestrator/core/rollout-counting.js';
import { evaluateWave } from '@edgepack/orchestrator/core/rollout-gates.js';
import { handleCommand } from '@edgepack/orchestrator/core/rollout-commands.js';
import { foldStatusReport } from '@edgepack/orchestrator/core/rollout-reports.js';
import { holdsStream, openMemberRef, resolveConflicts, supersedeDecisions } from '@edgepack/orchestrator/core/rollout-supersede.js';
import type { RolloutSnapshot } from '@edgepack/orchestrator/core/rollout-snapshot.js';
import type { RolloutPlan } from '@edgepack/orchestrator/records.js';
import {
  command, device, fleet, heartbeat, memberOf, MIN, newBundle, oldBundle, ofKind, planOf, result, SEC, snapshotOf, statusReport, step, T0,
  withDevice, withHeartbeat, withMember, withReport,
} from '../support/rollout-fleet.js';

const NB = newBundle('pi4');
const OB = oldBundle('pi4');

/** Waves of fixed counts (the last takes the rest), bake 60 s, quick timeouts. */
function plan(over: Record<string, unknown> = {}, counts: number[] = [3, 100]): RolloutPlan {
  return planOf({
    waves: counts.map((c, i) => ({ name: `w${i}`, size: { count: c }, bakeSec: 60 })),
    timeouts: { ackSec: 30, inProgressSec: 300, quorumSec: 600 },
    ...over,
  });
}

/** Started: decide has opened the first wave and dispatched it. */
function started(p: RolloutPlan, snap: RolloutSnapshot, now = T0) {
  return step(p, snap, now);
}

/** The device installs the member's bundle: downloading, then active with a benchmark. */
function install(s: RolloutSnapshot, id: string, at: number, p95 = 10): RolloutSnapshot {
  const m = memberOf(s, id);
  s = withReport(s, statusReport(m, m.bundleId!, 'downloading', at), at);
  return withReport(s, statusReport(m, m.bundleId!, 'active', at + 2 * SEC, { result: result(p95) }), at + 2 * SEC);
}

function fail(s: RolloutSnapshot, id: string, at: number, code: string, state: 'failed' | 'rolled_back' = 'failed'): RolloutSnapshot {
  const m = memberOf(s, id);
  s = withReport(s, statusReport(m, m.bundleId!, 'downloading', at), at);
  return withReport(s, statusReport(m, m.bundleId!, state, at + SEC, { code, ...(code === 'GOLDEN_MISMATCH' ? { result: result(10, false) } : {}) }), at + SEC);
}

/** Heartbeats of every online device showing what it runs. */
function beat(s: RolloutSnapshot, at: number): RolloutSnapshot {
  for (const d of Object.values(s.devices)) if (d.online) s = withHeartbeat(s, heartbeat(d.id, d.activeBundle, at), at);
  return s;
}

const wave = (s: RolloutSnapshot, n: number) => s.members.filter((m) => m.wave === n && m.phase !== 'skipped').map((m) => m.deviceId);
const cat = (s: RolloutSnapshot, id: string) => classify(memberOf(s, id), s.devices[id]);

// ------------------------------------------------------------------------------ counting rules

test('start: scheduled → running, the canary opens and only it is dispatched; offline devices wait and are never dispatched', () => {
  const p = plan();
  const s0 = snapshotOf(p, fleet(10));
  const canary = wave(s0, 0);
  const offline = canary[2]!;
  const { snap, decisions } = started(p, withDevice(s0, offline, { online: false }));
  assert.deepEqual(decisions.slice(0, 2).map((d) => d.kind), ['start', 'open-wave']);
  const sent = ofKind(decisions, 'dispatch').map((d) => d.deviceId);
  assert.deepEqual(sent.sort(), canary.filter((id) => id !== offline).sort());
  assert.equal(snap.rollout.status, 'running');
  assert.equal(cat(snap, offline), 'waiting_offline');
  for (const d of ofKind(decisions, 'dispatch')) {
    assert.equal(d.bundleId, NB);
    assert.equal(d.previousBundle, OB, 'the previous bundle is recorded at dispatch');
    assert.equal(d.baselineP95Ms, 10, 'so is the device\'s own last benchmark');
    assert.equal(d.cause, 'first');
  }
  // calling again with the applied snapshot dispatches nobody twice, and the offline device stays out
  const again = step(p, snap, T0 + SEC);
  assert.equal(ofKind(again.decisions, 'dispatch').length, 0);
  // it comes online: now it is dispatched
  const back = step(p, withDevice(again.snap, offline, { online: true, onlineSince: T0 + 2 * SEC }), T0 + 2 * SEC);
  assert.deepEqual(ofKind(back.decisions, 'dispatch').map((d) => d.deviceId), [offline]);
});

test('dispatched with no report within ackSec: withdrawn as unreached, back to waiting, never a failure', () => {
  const p = plan({ retry: { retryOn: ['DOWNLOAD_STALLED'] } }); // without ACK_TIMEOUT: only a reconnect brings it back
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const [a, b, c] = wave(snap, 0) as [string, string, string];
  snap = install(snap, a, T0 + SEC);
  snap = install(snap, b, T0 + SEC);
  let r = step(p, snap, T0 + 29 * SEC);
  assert.equal(ofKind(r.decisions, 'withdraw').length, 0, 'not before ackSec');
  r = step(p, r.snap, T0 + 30 * SEC);
  const w = ofKind(r.decisions, 'withdraw');
  assert.equal(w.length, 1);
  assert.deepEqual([w[0]!.deviceId, w[0]!.code, w[0]!.outcome, w[0]!.unreached], [c, 'ACK_TIMEOUT', 'waiting', 1]);
  assert.equal(memberOf(r.snap, c).phase, 'waiting');
  assert.equal(cat(r.snap, c), 'unreached');
  const v = evaluateWave(0, r.snap.members, r.snap.devices, p.waves[0]!.gate);
  assert.equal(v.whole.figures.failed, 0);
  assert.equal(v.whole.figures.unreached, 1);
  // the wave passes without it (unreached is settled), and the next opens
  r = step(p, beat(r.snap, T0 + 70 * SEC), T0 + 70 * SEC);
  assert.equal(ofKind(r.decisions, 'wave-passed').length, 1);
  assert.equal(ofKind(r.decisions, 'wave-passed')[0]!.figures.whole.unreached, 1);
  // still online, but without ACK_TIMEOUT in retryOn it waits for a reconnect
  r = step(p, r.snap, T0 + 10 * MIN);
  assert.equal(ofKind(r.decisions, 'dispatch').filter((d) => d.deviceId === c).length, 0);
  r = step(p, withDevice(r.snap, c, { onlineSince: T0 + 11 * MIN }), T0 + 11 * MIN);
  const again = ofKind(r.decisions, 'dispatch').filter((d) => d.deviceId === c);
  assert.equal(again.length, 1);
  assert.equal(again[0]!.cause, 'redispatch');
  assert.equal(again[0]!.previousBundle, OB);
});

test('unreached with ACK_TIMEOUT in retryOn (the default): dispatched again after the backoff', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(3), {}), T0);
  const id = wave(snap, 0)[0]!;
  snap = step(p, snap, T0 + 30 * SEC).snap;
  assert.equal(cat(snap, id), 'unreached');
  assert.equal(ofKind(step(p, snap, T0 + 59 * SEC).decisions, 'dispatch').length, 0, 'backoff 30 s from the withdrawal');
  const r = step(p, snap, T0 + 60 * SEC);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 3);
});

test('succeeded only when active and heartbeats have shown the new bundle for bakeSec', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const id = wave(snap, 0)[0]!;
  snap = install(snap, id, T0 + SEC); // active at T0+3s
  assert.equal(cat(snap, id), 'baking');
  snap = withHeartbeat(snap, heartbeat(id, NB, T0 + 30 * SEC), T0 + 30 * SEC);
  let r = step(p, snap, T0 + 40 * SEC);
  assert.equal(ofKind(r.decisions, 'mark-member').length, 0, '27 s of 60');
  snap = withHeartbeat(r.snap, heartbeat(id, NB, T0 + 63 * SEC), T0 + 63 * SEC);
  r = step(p, snap, T0 + 63 * SEC);
  const m = ofKind(r.decisions, 'mark-member');
  assert.deepEqual(m.map((d) => [d.deviceId, d.outcome]), [[id, 'succeeded']]);
  assert.equal(memberOf(r.snap, id).phase, 'succeeded');
  // bakeSec 0: the active report alone
  const p0 = plan({ waves: [{ size: { count: 3 }, bakeSec: 0 }, { size: { percent: 100 } }] });
  let s0 = started(p0, snapshotOf(p0, fleet(10))).snap;
  s0 = install(s0, wave(s0, 0)[0]!, T0 + SEC);
  assert.equal(ofKind(step(p0, s0, T0 + 4 * SEC).decisions, 'mark-member')[0]!.outcome, 'succeeded');
});

test('failed on failed or rolled_back after the last attempt; a deterministic refusal fails at once', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const [a, b] = wave(snap, 0) as [string, string];
  snap = fail(snap, a, T0 + SEC, 'GOLDEN_MISMATCH', 'rolled_back');
  snap = fail(snap, b, T0 + SEC, 'SIGNATURE_INVALID');
  const r = step(p, snap, T0 + 3 * SEC);
  const marks = ofKind(r.decisions, 'mark-member');
  assert.deepEqual(marks.map((d) => [d.deviceId, d.outcome, d.code]).sort(), [[a, 'failed', 'GOLDEN_MISMATCH'], [b, 'failed', 'SIGNATURE_INVALID']].sort());
  assert.equal(ofKind(r.decisions, 'retry-later').length, 0, 'never retried');
  for (const d of marks) assert.ok(d.reason.includes('is not retried'), d.reason);
});

test('retries: only codes in retryOn, after a doubling backoff, until maxAttempts; counting counts the device once', () => {
  const p = plan({ retry: { maxAttempts: 3, backoffSec: 10, retryOn: ['DOWNLOAD_STALLED'] } });
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const id = wave(snap, 0)[0]!;
  let t = T0 + SEC;
  const delays: number[] = [];
  for (let attempt = 1; attempt <= 3; attempt++) {
    snap = fail(snap, id, t, 'DOWNLOAD_STALLED');
    const ended = t + SEC;
    let r = step(p, snap, ended + SEC);
    if (attempt < 3) {
      const rl = ofKind(r.decisions, 'retry-later');
      assert.equal(rl.length, 1, `attempt ${attempt}`);
      assert.equal(rl[0]!.attemptsDone, attempt);
      delays.push(rl[0]!.retryAt - ended);
      assert.equal(memberOf(r.snap, id).phase, 'waiting');
      assert.equal(cat(r.snap, id), 'waiting', 'a member waiting for its retry is not settled');
      assert.equal(ofKind(step(p, r.snap, rl[0]!.retryAt - 1).decisions, 'dispatch').length, 0, 'not before retryAt');
      r = step(p, r.snap, rl[0]!.retryAt);
      const d = ofKind(r.decisions, 'dispatch').filter((x) => x.deviceId === id);
      assert.equal(d.length, 1);
      assert.deepEqual([d[0]!.cause, d[0]!.attempt], ['retry', attempt + 1]);
      snap = r.snap;
      t = rl[0]!.retryAt + SEC;
    } else {
      const mk = ofKind(r.decisions, 'mark-member').filter((x) => x.deviceId === id);
      assert.deepEqual([mk[0]!.outcome, mk[0]!.code], ['failed', 'DOWNLOAD_STALLED']);
      assert.ok(mk[0]!.reason.includes('after 3 of 3 attempts'), mk[0]!.reason);
      snap = r.snap;
    }
  }
  assert.deepEqual(delays, [10_000, 20_000]);
  const v = evaluateWave(0, snap.members, snap.devices, p.waves[0]!.gate);
  assert.equal(v.whole.figures.failed, 1, 'one device, whatever its attempts');
  assert.equal(memberOf(snap, id).attempts, 3);
});

test('a retried device that then succeeds counts as one success and no failure', () => {
  const p = plan({ retry: { backoffSec: 5 } });
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const id = wave(snap, 0)[0]!;
  snap = fail(snap, id, T0 + SEC, 'DOWNLOAD_STALLED');
  snap = step(p, snap, T0 + 3 * SEC).snap;
  const r = step(p, snap, T0 + 7 * SEC);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 1);
  // a late duplicate of the first attempt's failure must not fail the second attempt
  const dup = statusReport(memberOf(r.snap, id), NB, 'failed', T0 + 2 * SEC, { code: 'DOWNLOAD_STALLED' });
  const f = foldStatusReport(memberOf(r.snap, id), r.snap.devices[id], dup, T0 + 8 * SEC);
  assert.equal(f.kind, 'ignore');
  snap = install(r.snap, id, T0 + 9 * SEC);
  snap = withHeartbeat(snap, heartbeat(id, NB, T0 + 80 * SEC), T0 + 80 * SEC);
  snap = step(p, snap, T0 + 80 * SEC).snap;
  const v = evaluateWave(0, snap.members, snap.devices, p.waves[0]!.gate);
  assert.deepEqual([v.whole.figures.succeeded, v.whole.figures.failed], [1, 0]);
  assert.equal(memberOf(snap, id).attempts, 2);
});

test('no end within inProgressSec: failed with IN_PROGRESS_TIMEOUT (the bricked-device signal), not retried by default', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const id = wave(snap, 0)[0]!;
  snap = withReport(snap, statusReport(memberOf(snap, id), NB, 'downloading', T0 + SEC), T0 + SEC);
  assert.equal(cat(snap, id), 'in_progress');
  assert.equal(ofKind(step(p, snap, T0 + 300 * SEC).decisions, 'mark-member').length, 0);
  const r = step(p, snap, T0 + 301 * SEC);
  const mk = ofKind(r.decisions, 'mark-member');
  assert.deepEqual(mk.map((d) => [d.deviceId, d.outcome, d.code]), [[id, 'failed', 'IN_PROGRESS_TIMEOUT']]);
});

test('reverted after commit (a heartbeat shows the previous bundle again): failed; a stale heartbeat from before the commit is not a revert', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const [a, b] = wave(snap, 0) as [string, string];
  snap = install(snap, a, T0 + SEC);
  snap = install(snap, b, T0 + SEC);
  // a heartbeat the device built before it committed (device clock before the active report), delivered late
  snap = withHeartbeat(snap, heartbeat(b, OB, T0 + 2 * SEC), T0 + 10 * SEC);
  assert.equal(snap.devices[b]!.activeBundle, NB, 'the stale heartbeat does not undo the active report');
  // a real revert on a
  snap = withHeartbeat(snap, heartbeat(a, OB, T0 + 20 * SEC), T0 + 20 * SEC);
  let r = step(p, snap, T0 + 21 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'mark-member').map((d) => [d.deviceId, d.outcome, d.code]), [[a, 'failed', 'REVERTED_AFTER_COMMIT']]);
  // after success too, as long as the rollout runs
  snap = withHeartbeat(r.snap, heartbeat(b, NB, T0 + 70 * SEC), T0 + 70 * SEC);
  r = step(p, snap, T0 + 70 * SEC);
  assert.equal(memberOf(r.snap, b).phase, 'succeeded');
  snap = withHeartbeat(r.snap, heartbeat(b, OB, T0 + 90 * SEC), T0 + 90 * SEC);
  r = step(p, snap, T0 + 90 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'mark-member').map((d) => [d.deviceId, d.code]), [[b, 'REVERTED_AFTER_COMMIT']]);
});

test('the previous bundle back at another rollout\'s request is a replacement, not a revert: a succeeded member stays succeeded, a baking one is cancelled REPLACED', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const [a, b] = wave(snap, 0) as [string, string];
  snap = install(snap, a, T0 + SEC);
  snap = install(snap, b, T0 + SEC);
  snap = withHeartbeat(snap, heartbeat(a, NB, T0 + 70 * SEC), T0 + 70 * SEC);
  let r = step(p, snap, T0 + 70 * SEC);
  assert.equal(memberOf(r.snap, a).phase, 'succeeded');
  // Another rollout (another stream) sent both devices their old bundle again.
  snap = withDevice(r.snap, a, { desiredRolloutId: 'rol_other' });
  snap = withDevice(snap, b, { desiredRolloutId: 'rol_other' });
  snap = withHeartbeat(snap, heartbeat(a, OB, T0 + 80 * SEC), T0 + 80 * SEC);
  snap = withHeartbeat(snap, heartbeat(b, OB, T0 + 80 * SEC), T0 + 80 * SEC);
  r = step(p, snap, T0 + 81 * SEC);
  assert.equal(memberOf(r.snap, a).phase, 'succeeded', 'a did its part; what runs now is the other rollout\'s doing');
  assert.deepEqual(ofKind(r.decisions, 'mark-member').map((d) => [d.deviceId, d.outcome, d.code]), [[b, 'cancelled', 'REPLACED']]);
  // The same heartbeat with this rollout's desired state still the newest is a revert.
  snap = withDevice(withDevice(snap, a, { desiredRolloutId: snap.rollout.id }), b, { desiredRolloutId: null });
  r = step(p, snap, T0 + 81 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'mark-member').map((d) => [d.deviceId, d.code]).sort(), [[a, 'REVERTED_AFTER_COMMIT'], [b, 'REVERTED_AFTER_COMMIT']].sort());
});

test('lost when it goes silent during bake: settled, not a failure; back and baked, it succeeds', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const id = wave(snap, 0)[0]!;
  snap = install(snap, id, T0 + SEC);
  snap = withDevice(snap, id, { online: false });
  assert.equal(cat(snap, id), 'lost');
  const v = evaluateWave(0, snap.members, snap.devices, p.waves[0]!.gate);
  assert.deepEqual([v.whole.figures.lost, v.whole.figures.failed], [1, 0]);
  snap = withHeartbeat(withDevice(snap, id, { online: true }), heartbeat(id, NB, T0 + 100 * SEC), T0 + 100 * SEC);
  assert.equal(ofKind(step(p, snap, T0 + 100 * SEC).decisions, 'mark-member')[0]!.outcome, 'succeeded');
});

test('skipped at dispatch time: it got the bundle meanwhile, or it was pinned', () => {
  const p = plan();
  const s0 = snapshotOf(p, fleet(10));
  const [a, b] = wave(s0, 0) as [string, string];
  let s = withDevice(s0, a, { activeBundle: NB });
  s = withDevice(s, b, { pinned: true });
  const r = step(p, s, T0);
  const mk = ofKind(r.decisions, 'mark-member');
  assert.deepEqual(mk.map((d) => [d.deviceId, d.outcome, d.code]).sort(), [[a, 'skipped', 'ALREADY_ACTIVE'], [b, 'skipped', 'PINNED']].sort());
  assert.equal(ofKind(r.decisions, 'dispatch').length, 1);
});

test('revoked devices leave the rollout (cancelled), never counted as failures', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const id = wave(snap, 0)[0]!;
  snap = withDevice(snap, id, { revoked: true });
  const r = step(p, snap, T0 + SEC);
  assert.deepEqual(ofKind(r.decisions, 'mark-member').map((d) => [d.outcome, d.code]), [['cancelled', 'DEVICE_REVOKED']]);
});

// ------------------------------------------------------------------------------ gates

/** Runs a wave to its end: each member in `outcomes` installs (ok) or fails with a code. */
function finishWave(p: RolloutPlan, s: RolloutSnapshot, n: number, outcome: (id: string, i: number) => 'ok' | string, t: number): { snap: RolloutSnapshot; decisions: Decision[]; t: number } {
  wave(s, n).forEach((id, i) => {
    const o = outcome(id, i);
    if (memberOf(s, id).phase !== 'dispatched') return;
    s = o === 'ok' ? install(s, id, t) : fail(s, id, t, o, o === 'GOLDEN_MISMATCH' ? 'rolled_back' : 'failed');
  });
  t += 70 * SEC;
  s = beat(s, t);
  const r = step(p, s, t);
  return { ...r, t };
}

test('pass: every member settled, minExecuted finished, success ratio met, bake done → the next wave opens, with the figures', () => {
  const p = plan({}, [4, 100]);
  const s0 = snapshotOf(p, fleet(20));
  const off = wave(s0, 0)[3]!;
  let { snap } = started(p, withDevice(s0, off, { online: false }));
  // baking is not enough
  let r = step(p, install(snap, wave(snap, 0)[0]!, T0 + SEC), T0 + 10 * SEC);
  assert.equal(ofKind(r.decisions, 'wave-passed').length, 0);
  r = finishWave(p, snap, 0, () => 'ok', T0 + SEC);
  const passed = ofKind(r.decisions, 'wave-passed');
  assert.equal(passed.length, 1, JSON.stringify(r.decisions.map((d) => d.kind)));
  const f = passed[0]!.figures.whole;
  assert.deepEqual([f.members, f.succeeded, f.waitingOffline, f.finished, f.minExecuted, f.successRatio], [4, 3, 1, 3, 2, 1]);
  assert.deepEqual(passed[0]!.figures.profiles.map((x) => x.profile), ['pi4']);
  const open = ofKind(r.decisions, 'open-wave');
  assert.deepEqual(open.map((d) => [d.wave, d.cause]), [[1, 'previous-passed']]);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 16, 'the next wave is dispatched in the same call');
  // the offline canary member still gets it when it returns
  const back = step(p, withDevice(r.snap, off, { online: true, onlineSince: r.t + SEC }), r.t + SEC);
  assert.deepEqual(ofKind(back.decisions, 'dispatch').map((d) => d.deviceId), [off]);
});

test('breach: maxFailures at any time, before minExecuted have finished', () => {
  const p = plan({ gate: { maxFailures: 1 } }, [10, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(30)));
  const ids = wave(snap, 0);
  snap = fail(snap, ids[0]!, T0 + SEC, 'BENCHMARK_CRASHED');
  let r = step(p, snap, T0 + 3 * SEC);
  assert.equal(ofKind(r.decisions, 'pause').length, 0, 'one failure is allowed');
  r = step(p, fail(r.snap, ids[1]!, T0 + 4 * SEC, 'BENCHMARK_CRASHED'), T0 + 6 * SEC);
  const pause = ofKind(r.decisions, 'pause');
  assert.equal(pause.length, 1);
  assert.equal(pause[0]!.reason.code, 'BREACH');
  const b = pause[0]!.reason.breaches!.find((x) => x.rule === 'maxFailures' && x.profile === null)!;
  assert.deepEqual([b.wave, b.value, b.limit], [0, 2, 1]);
  assert.equal(pause[0]!.reason.figures!.failed, 2);
  assert.equal(r.snap.rollout.status, 'paused');
  assert.equal(ofKind(step(p, r.snap, T0 + 10 * SEC).decisions, 'dispatch').length, 0, 'paused: nothing is dispatched');
});

test('breach: failure ratio only once minExecuted have finished', () => {
  // maxFailures high so only the ratio can breach; minExecuted 4 of 10
  const p = plan({ gate: { maxFailures: 100, minExecuted: 4, maxFailureRatio: 0.3 } }, [10, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(30)));
  const ids = wave(snap, 0);
  snap = fail(snap, ids[0]!, T0 + SEC, 'BENCHMARK_CRASHED');
  snap = install(snap, ids[1]!, T0 + SEC);
  snap = beat(snap, T0 + 70 * SEC);
  let r = step(p, snap, T0 + 70 * SEC);
  assert.equal(ofKind(r.decisions, 'pause').length, 0, '1 of 2 finished failed, but only 2 of 4 needed have finished');
  snap = install(r.snap, ids[2]!, T0 + 71 * SEC);
  snap = install(snap, ids[3]!, T0 + 71 * SEC);
  snap = beat(snap, T0 + 140 * SEC);
  r = step(p, snap, T0 + 140 * SEC);
  assert.equal(ofKind(r.decisions, 'pause').length, 0, '1 of 4 = 25% ≤ 30%');
  r = step(p, fail(r.snap, ids[4]!, T0 + 141 * SEC, 'BENCHMARK_CRASHED'), T0 + 143 * SEC);
  const b = ofKind(r.decisions, 'pause')[0]!.reason.breaches!.find((x) => x.rule === 'maxFailureRatio' && x.profile === null)!;
  assert.equal(b.value, 2 / 5);
  assert.ok(b.message.includes('2 of 5 finished failed'), b.message);
});

test('breach: golden failures over maxGoldenFailures (default 0)', () => {
  const p = plan({ gate: { maxFailures: 100, maxFailureRatio: 1 } }, [10, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(30)));
  snap = fail(snap, wave(snap, 0)[0]!, T0 + SEC, 'GOLDEN_MISMATCH', 'rolled_back');
  const r = step(p, snap, T0 + 3 * SEC);
  const rules = ofKind(r.decisions, 'pause')[0]!.reason.breaches!.map((b) => b.rule);
  assert.ok(rules.includes('maxGoldenFailures'), rules.join());
  assert.equal(ofKind(r.decisions, 'pause')[0]!.reason.figures!.goldenFailures, 1);
});

test('breach: median p95 regression, each device against its own previous benchmark', () => {
  const p = plan({ gate: { minExecuted: 3 } }, [3, 100]);
  // three devices (the whole canary) with very different baselines
  const devs = fleet(3).map((d, i) => ({ ...d, benchmark: { bundleId: OB, p95Ms: [10, 20, 40][i]! } }));
  const s0 = snapshotOf(p, devs);
  const canary = wave(s0, 0);
  const base = (id: string) => s0.devices[id]!.benchmark!.p95Ms;
  // each canary device 5% slower than itself: fine, although their absolute p95 differ by 4×
  let { snap } = started(p, s0);
  for (const id of canary) snap = install(snap, id, T0 + SEC, base(id) * 1.05);
  let r = step(p, snap, T0 + 10 * SEC);
  assert.equal(ofKind(r.decisions, 'pause').length, 0);
  const v = evaluateWave(0, r.snap.members, r.snap.devices, p.waves[0]!.gate);
  assert.ok(Math.abs(v.whole.figures.p95Regression! - 0.05) < 1e-9);
  assert.equal(v.whole.figures.p95Devices, 3);
  // now 1.5× on two of three: median 50% > 10%
  ({ snap } = started(p, s0));
  snap = install(snap, canary[0]!, T0 + SEC, base(canary[0]!) * 1.5);
  snap = install(snap, canary[1]!, T0 + SEC, base(canary[1]!) * 1.5);
  r = step(p, snap, T0 + 10 * SEC);
  assert.equal(ofKind(r.decisions, 'pause').length, 0, 'judged once minExecuted devices have both figures');
  snap = install(r.snap, canary[2]!, T0 + 11 * SEC, base(canary[2]!) * 0.9);
  r = step(p, snap, T0 + 20 * SEC);
  const b = ofKind(r.decisions, 'pause')[0]!.reason.breaches!.find((x) => x.rule === 'maxP95Regression' && x.profile === null)!;
  assert.ok(Math.abs(b.value - 0.5) < 1e-9, String(b.value));
  // the same absolute p95 is a regression for one device and not for another: own baselines, not a fleet average
  const ids = [...canary].sort((x, y) => base(x) - base(y));
  ({ snap } = started(p, s0));
  for (const id of ids) snap = install(snap, id, T0 + SEC, 21); // 10→21 (+110%), 20→21 (+5%), 40→21 (−47%)
  const v2 = evaluateWave(0, snap.members, snap.devices, p.waves[0]!.gate);
  assert.ok(Math.abs(v2.whole.figures.p95Regression! - 0.05) < 1e-9, String(v2.whole.figures.p95Regression));
});

test('breach: lost ratio over maxLostRatio', () => {
  const p = plan({ gate: { minExecuted: 2, maxLostRatio: 0.2 } }, [6, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(20)));
  const ids = wave(snap, 0);
  for (const id of ids.slice(0, 4)) snap = install(snap, id, T0 + SEC);
  snap = beat(snap, T0 + 70 * SEC);
  snap = step(p, snap, T0 + 70 * SEC).snap; // four succeeded
  snap = install(snap, ids[4]!, T0 + 71 * SEC);
  snap = withDevice(snap, ids[4]!, { online: false });
  let r = step(p, snap, T0 + 75 * SEC);
  assert.equal(ofKind(r.decisions, 'pause').length, 0, 'lost ÷ (finished + lost) = 1 of 5 = 20%, not over');
  snap = install(r.snap, ids[5]!, T0 + 76 * SEC);
  snap = withDevice(snap, ids[5]!, { online: false });
  r = step(p, snap, T0 + 80 * SEC);
  const b = ofKind(r.decisions, 'pause')[0]!.reason.breaches!.find((x) => x.rule === 'maxLostRatio' && x.profile === null)!;
  assert.equal(b.value, 2 / 6);
  assert.equal(ofKind(r.decisions, 'pause')[0]!.reason.figures!.failed, 0, 'lost is never a failure');
});

test('per-profile gate: one profile failing breaches even when the wave as a whole would not', () => {
  const profiles = ['pi4', 'pi5'];
  const p = planOf({ waves: [{ size: { count: 20 }, bakeSec: 60 }, { size: { percent: 100 } }], gate: { maxFailureRatio: 0.2, maxFailures: 100 } }, profiles);
  const devs = [...fleet(36, ['pi4']), ...fleet(4, ['pi5']).map((d) => ({ ...d, id: `p5-${d.id}` }))];
  let { snap } = started(p, snapshotOf(p, devs));
  const canary = wave(snap, 0);
  const pi5 = canary.filter((id) => memberOf(snap, id).profile === 'pi5');
  assert.equal(pi5.length, 2);
  const r = finishWave(p, snap, 0, (id) => (id === pi5[0] ? 'BENCHMARK_CRASHED' : 'ok'), T0 + SEC);
  const br = ofKind(r.decisions, 'pause')[0]!.reason.breaches!;
  assert.deepEqual(br.map((b) => [b.profile, b.rule]), [['pi5', 'maxFailureRatio']], 'the wave: 1 of 20 = 5%; pi5: 1 of 2');
  assert.ok(br[0]!.message.includes('profile pi5'));
});

test('the default maxFailures is ⌊maxFailureRatio × members⌋: a canary of 3 breaches on its first failure', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  snap = fail(snap, wave(snap, 0)[0]!, T0 + SEC, 'BENCHMARK_CRASHED');
  const r = step(p, snap, T0 + 3 * SEC);
  const b = ofKind(r.decisions, 'pause')[0]!.reason.breaches!.find((x) => x.rule === 'maxFailures' && x.profile === null)!;
  assert.deepEqual([b.value, b.limit], [1, 0]);
});

test('requireApproval: the rollout pauses before the wave; approve opens it', () => {
  const p = planOf({ waves: [{ size: { count: 3 }, bakeSec: 0 }, { size: { percent: 100 }, requireApproval: true }] });
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const r = finishWave(p, snap, 0, () => 'ok', T0 + SEC);
  assert.deepEqual(r.decisions.filter((d) => d.kind !== 'mark-member').map((d) => d.kind), ['wave-passed', 'await-approval']);
  assert.equal(r.snap.rollout.status, 'paused');
  assert.deepEqual([r.snap.rollout.pause!.code, r.snap.rollout.pause!.wave], ['AWAITING_APPROVAL', 1]);
  assert.equal(ofKind(step(p, r.snap, r.t + SEC).decisions, 'dispatch').length, 0);
  // resume is refused: approve it
  const refused = handleCommand(p, r.snap, { kind: 'resume' }, new Date(r.t + SEC));
  assert.ok(!refused.ok && refused.code === 'ROLLOUT_AWAITING_APPROVAL');
  snap = command(p, r.snap, { kind: 'approve' }, r.t + SEC).snap;
  const after = step(p, snap, r.t + 2 * SEC);
  assert.deepEqual(ofKind(after.decisions, 'open-wave').map((d) => [d.wave, d.cause]), [[1, 'approved']]);
  assert.equal(ofKind(after.decisions, 'dispatch').length, 7);
  const again = handleCommand(p, after.snap, { kind: 'approve' }, new Date(r.t + 3 * SEC));
  assert.ok(!again.ok && again.code === 'ROLLOUT_NOT_AWAITING_APPROVAL');
});

test('quorum: short of minExecuted after quorumSec → pause with the reason and the figures', () => {
  const p = plan({}, [4, 100]); // quorumSec 600
  const s0 = snapshotOf(p, fleet(20));
  const canary = wave(s0, 0);
  let s = s0;
  for (const id of canary.slice(1)) s = withDevice(s, id, { online: false }); // 3 of 4 offline
  let { snap } = started(p, s);
  snap = install(snap, canary[0]!, T0 + SEC);
  snap = beat(snap, T0 + 70 * SEC);
  let r = step(p, snap, T0 + 70 * SEC);
  assert.equal(ofKind(r.decisions, 'pause').length, 0, 'settled, 1 of 2 finished: wait for quorum');
  r = step(p, r.snap, T0 + 599 * SEC);
  assert.equal(ofKind(r.decisions, 'pause').length, 0);
  r = step(p, r.snap, T0 + 600 * SEC);
  const pause = ofKind(r.decisions, 'pause')[0]!;
  assert.equal(pause.reason.code, 'QUORUM');
  assert.ok(pause.reason.message.includes('1 of 2 finished'), pause.reason.message);
  assert.equal(pause.reason.figures!.waitingOffline, 3);
});

test('settled without passing (success ratio short, no breach) → pause GATE_UNMET after quorumSec', () => {
  const p = plan({ gate: { minSuccessRatio: 0.99, maxFailureRatio: 0.5, maxFailures: 10 } }, [4, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(20)));
  const r0 = finishWave(p, snap, 0, (_id, i) => (i === 0 ? 'BENCHMARK_CRASHED' : 'ok'), T0 + SEC);
  assert.equal(ofKind(r0.decisions, 'pause').length, 0);
  const r = step(p, r0.snap, T0 + 600 * SEC);
  assert.equal(ofKind(r.decisions, 'pause')[0]!.reason.code, 'GATE_UNMET');
  snap = r.snap;
});

test('resume re-checks the gates: refused while a breach holds, force goes on and the same breach does not pause again unless it grows', () => {
  const p = plan({ gate: { maxFailures: 0, maxFailureRatio: 1 } }, [5, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(20)));
  const ids = wave(snap, 0);
  snap = fail(snap, ids[0]!, T0 + SEC, 'BENCHMARK_CRASHED');
  snap = step(p, snap, T0 + 3 * SEC).snap;
  assert.equal(snap.rollout.pause!.code, 'BREACH');
  const refused = handleCommand(p, snap, { kind: 'resume' }, new Date(T0 + 4 * SEC));
  assert.equal(refused.ok, false);
  if (!refused.ok) {
    assert.equal(refused.code, 'ROLLOUT_BREACH_HOLDS');
    assert.equal(refused.breaches![0]!.rule, 'maxFailures');
  }
  const forced = command(p, snap, { kind: 'resume', force: true }, T0 + 4 * SEC);
  const res = ofKind(forced.decisions, 'resume')[0]!;
  assert.equal(res.forced, true);
  assert.deepEqual(res.forcedPast.map((b) => b.rule).sort(), ['maxFailures', 'maxFailures']);
  snap = forced.snap;
  let r = step(p, snap, T0 + 5 * SEC);
  assert.equal(ofKind(r.decisions, 'pause').length, 0, 'the forced breach holds no longer');
  // the others finish: the wave passes despite the overridden breach
  const rr = finishWave(p, r.snap, 0, () => 'ok', T0 + 6 * SEC);
  assert.equal(ofKind(rr.decisions, 'wave-passed').length, 1, JSON.stringify(rr.decisions.map((d) => d.kind)));
  // a new failure in the next wave breaches again
  const next = wave(rr.snap, 1);
  r = step(p, fail(rr.snap, next[0]!, rr.t + SEC, 'BENCHMARK_CRASHED'), rr.t + 3 * SEC);
  assert.equal(ofKind(r.decisions, 'pause')[0]!.reason.breaches![0]!.wave, 1);
});

test('operator pause stops dispatching but outcomes are still recorded; resume goes on', () => {
  const p = plan({ rate: { maxInFlight: 2 } }, [3, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const sent = ofKind(step(p, snapshotOf(p, fleet(10)), T0).decisions, 'dispatch').map((d) => d.deviceId);
  assert.equal(sent.length, 2);
  snap = command(p, snap, { kind: 'pause', note: 'lunch' }, T0 + SEC).snap;
  assert.equal(snap.rollout.pause!.message, 'paused by an operator: lunch');
  snap = install(snap, sent[0]!, T0 + 2 * SEC);
  snap = beat(snap, T0 + 70 * SEC);
  let r = step(p, snap, T0 + 70 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'mark-member').map((d) => d.outcome), ['succeeded']);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 0, 'in-flight room, but paused');
  assert.deepEqual(handleCommand(p, r.snap, { kind: 'pause' }, new Date(T0 + 71 * SEC)), { ok: true, decisions: [] }, 'pausing twice is harmless');
  snap = command(p, r.snap, { kind: 'resume' }, T0 + 72 * SEC).snap;
  r = step(p, snap, T0 + 72 * SEC);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 1);
});

// ------------------------------------------------------------------------------ rate and schedule

test('rate: maxInFlight and maxPerMinute limit dispatches', () => {
  const p = plan({ rate: { maxInFlight: 5, maxPerMinute: 8 }, timeouts: { ackSec: 300 } }, [50, 100]);
  let r = step(p, snapshotOf(p, fleet(100)), T0);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 5, 'in flight');
  let snap = r.snap;
  for (const id of ofKind(r.decisions, 'dispatch').map((d) => d.deviceId)) snap = install(snap, id, T0 + SEC);
  r = step(p, snap, T0 + 5 * SEC);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 3, '8 per minute, 5 already sent');
  r = step(p, r.snap, T0 + 30 * SEC);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 0);
  r = step(p, r.snap, T0 + 61 * SEC);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 2, 'the first 5 left the minute; 3 still in flight');
});

test('startAt: scheduled until then; endAt: pause (or cancel) when it passes', () => {
  const p = plan({ schedule: { startAt: '2026-06-01T01:00:00Z', endAt: '2026-06-01T02:00:00Z' } });
  const s0 = snapshotOf(p, fleet(10));
  assert.deepEqual(decide(p, s0, new Date(T0 + 59 * MIN)), []);
  let r = step(p, s0, T0 + 60 * MIN);
  assert.equal(r.decisions[0]!.kind, 'start');
  assert.equal(ofKind(r.decisions, 'dispatch').length, 3);
  r = step(p, r.snap, T0 + 120 * MIN);
  assert.equal(ofKind(r.decisions, 'pause')[0]!.reason.code, 'SCHEDULE_ENDED');
  const refused = handleCommand(p, r.snap, { kind: 'resume' }, new Date(T0 + 121 * MIN));
  assert.ok(!refused.ok && refused.code === 'ROLLOUT_SCHEDULE_ENDED');
  const pc = plan({ schedule: { endAt: '2026-06-01T02:00:00Z', endBehavior: 'cancel' } });
  let c = step(pc, snapshotOf(pc, fleet(10)), T0);
  c = step(pc, install(c.snap, wave(c.snap, 0)[0]!, T0 + SEC), T0 + 120 * MIN);
  const fin = ofKind(c.decisions, 'finish')[0]!;
  assert.equal(fin.status, 'cancelled');
  assert.deepEqual(fin.figures, { cancelled: 7, withdrawn: 2, stillRunning: 1 }, 'endAt passed before the two others answered');
});

test('windows gate only a device\'s first dispatch: retries go on outside them (Berlin, across the March change)', () => {
  // 01:00–03:00 Berlin every night; on 29 March 2026 01:00 CET = 00:00 UTC, the next night 01:00 CEST = 23:00 UTC
  const night = Date.parse('2026-03-28T23:30:00Z'); // 00:30 Berlin: closed
  const p = planOf({
    waves: [{ size: { count: 3 }, bakeSec: 0 }, { size: { percent: 100 } }],
    schedule: { windows: [{ cron: '0 1 * * *', durationMin: 120, tz: 'Europe/Berlin' }] },
    retry: { backoffSec: 60, retryOn: ['DOWNLOAD_STALLED'] },
  }, ['pi4'], night);
  const s0 = snapshotOf(p, fleet(10, ['pi4'], () => ({ onlineSince: night - 3600 * SEC, activeBundleSince: night - 86400 * SEC, deviceClockAt: night - 60 * SEC, lastHeartbeatAt: night - 60 * SEC })), { now: night });
  let r = step(p, s0, night);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 0, 'outside the window');
  r = step(p, r.snap, Date.parse('2026-03-29T00:00:00Z'));
  assert.equal(ofKind(r.decisions, 'dispatch').length, 3, '01:00 CET');
  let snap = r.snap;
  const id = wave(snap, 0)[0]!;
  // 03:00 UTC = 05:00 CEST: 180 min after 01:00 CET, the window (120 elapsed minutes) has closed
  const late = Date.parse('2026-03-29T03:00:00Z');
  snap = fail(snap, id, late - 10 * SEC, 'DOWNLOAD_STALLED');
  r = step(p, snap, late);
  assert.equal(ofKind(r.decisions, 'retry-later').length, 1);
  r = step(p, r.snap, late + 60 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'dispatch').map((d) => [d.deviceId, d.cause]), [[id, 'retry']], 'a retry is not a first dispatch');
  // the next window opens at 01:00 CEST = 23:00 UTC on 29 March
  snap = r.snap;
  for (const m of wave(snap, 0)) if (m !== id) snap = install(snap, m, late);
  snap = install(snap, id, late + 20 * SEC);
  r = step(p, snap, late + 30 * SEC);
  assert.equal(ofKind(r.decisions, 'open-wave').length, 1);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 0, 'wave 1 waits for the window');
  assert.equal(ofKind(step(p, r.snap, Date.parse('2026-03-29T22:59:00Z')).decisions, 'dispatch').length, 0);
  assert.equal(ofKind(step(p, r.snap, Date.parse('2026-03-29T23:00:00Z')).decisions, 'dispatch').length, 7);
});

test('no quorum pause while the wave waits for its window', () => {
  const p = plan({ schedule: { windows: [{ cron: '0 1 * * *', durationMin: 60, tz: 'UTC' }] } }); // quorumSec 600
  const r = step(p, snapshotOf(p, fleet(10)), T0 + 3 * 3600 * SEC);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 0);
  assert.equal(ofKind(step(p, r.snap, T0 + 4 * 3600 * SEC).decisions, 'pause').length, 0);
});

// ------------------------------------------------------------------------------ cancel and rollback

test('cancel: members not started are withdrawn or leave; started ones finish and are recorded', () => {
  const p = plan({}, [4, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const [a, b] = wave(snap, 0) as [string, string];
  snap = withReport(snap, statusReport(memberOf(snap, a), NB, 'downloading', T0 + SEC), T0 + SEC);
  const c = command(p, snap, { kind: 'cancel' }, T0 + 2 * SEC);
  const withdrawn = ofKind(c.decisions, 'withdraw');
  assert.equal(withdrawn.length, 3);
  assert.ok(withdrawn.every((d) => d.outcome === 'cancelled' && d.code === 'CANCELLED'));
  assert.ok(!withdrawn.some((d) => d.deviceId === a), 'started: it finishes');
  assert.ok(withdrawn.some((d) => d.deviceId === b));
  assert.equal(ofKind(c.decisions, 'mark-member').length, 6, 'waiting members leave');
  assert.deepEqual(ofKind(c.decisions, 'finish').map((d) => [d.status, d.figures.stillRunning]), [['cancelled', 1]]);
  snap = withReport(c.snap, statusReport(memberOf(c.snap, a), NB, 'active', T0 + 3 * SEC, { result: result(10) }), T0 + 3 * SEC);
  snap = beat(snap, T0 + 70 * SEC);
  const r = step(p, snap, T0 + 70 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'mark-member').map((d) => [d.deviceId, d.outcome]), [[a, 'succeeded']]);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 0);
  assert.deepEqual(handleCommand(p, r.snap, { kind: 'cancel' }, new Date(T0 + 71 * SEC)), { ok: true, decisions: [] });
  const refused = handleCommand(p, r.snap, { kind: 'resume' }, new Date(T0 + 71 * SEC));
  assert.ok(!refused.ok && refused.code === 'ROLLOUT_FINISHED');
});

test('rollback on command: every touched device gets its previous bundle; offline ones when they return', () => {
  const p = plan({}, [4, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const [a, b, c, d] = wave(snap, 0) as [string, string, string, string];
  snap = install(snap, a, T0 + SEC);
  snap = install(snap, b, T0 + SEC);
  snap = withDevice(snap, b, { online: false }); // goes offline on the new bundle
  snap = fail(snap, c, T0 + SEC, 'GOLDEN_MISMATCH', 'rolled_back'); // the agent already went back
  snap = withDevice(snap, c, { activeBundle: OB });
  snap = step(p, snap, T0 + 5 * SEC).snap;
  // d: dispatched, not started
  const rb = command(p, snap, { kind: 'rollback' }, T0 + 6 * SEC);
  assert.equal(ofKind(rb.decisions, 'start-rollback')[0]!.cause, 'command');
  const sent = ofKind(rb.decisions, 'rollback-dispatch');
  assert.deepEqual(sent.map((x) => [x.deviceId, x.bundleId]).sort(), [[a, OB], [d, OB]].sort());
  const done = ofKind(rb.decisions, 'mark-rollback');
  assert.deepEqual(done.map((x) => [x.deviceId, x.outcome, x.code]), [[c, 'done', 'ALREADY_ON_PREVIOUS']]);
  assert.equal(ofKind(rb.decisions, 'mark-member').length, 6, 'untouched members leave');
  assert.equal(rb.snap.rollout.status, 'rolling_back');
  // a and d confirm
  snap = rb.snap;
  snap = withReport(snap, statusReport(memberOf(snap, a), OB, 'active', T0 + 8 * SEC), T0 + 8 * SEC);
  snap = withReport(snap, statusReport(memberOf(snap, d), OB, 'active', T0 + 8 * SEC), T0 + 8 * SEC);
  let r = step(p, snap, T0 + 9 * SEC);
  const fin = ofKind(r.decisions, 'finish')[0]!;
  assert.equal(fin.status, 'rolled_back');
  assert.deepEqual(fin.figures, { done: 3, failed: 0, impossible: 0, superseded: 0, awaitingReturn: 1 });
  // b returns: it gets the rollback then
  r = step(p, withDevice(r.snap, b, { online: true, onlineSince: T0 + 3600 * SEC }), T0 + 3600 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'rollback-dispatch').map((x) => [x.deviceId, x.bundleId, x.fromBundle]), [[b, OB, NB]]);
  // its heartbeat shows the previous bundle: done
  snap = withHeartbeat(r.snap, heartbeat(b, OB, T0 + 3610 * SEC), T0 + 3610 * SEC);
  r = step(p, snap, T0 + 3610 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'mark-rollback').map((x) => [x.deviceId, x.outcome]), [[b, 'done']]);
  assert.deepEqual(step(p, r.snap, T0 + 3611 * SEC).decisions, []);
  assert.deepEqual(handleCommand(p, r.snap, { kind: 'rollback' }, new Date(T0 + 3612 * SEC)), { ok: true, decisions: [] });
});

test('rollback: an unanswered rollback waits like an offline device and is sent again when the device reconnects; a device with nothing before cannot be returned', () => {
  const p = plan({}, [2, 100]);
  const s0 = snapshotOf(p, fleet(10));
  const [a, b] = wave(s0, 0) as [string, string];
  let { snap } = started(p, withDevice(s0, b, { activeBundle: null, benchmark: null }));
  snap = install(snap, a, T0 + SEC);
  snap = install(snap, b, T0 + SEC);
  const rb = command(p, snap, { kind: 'rollback' }, T0 + 10 * SEC);
  assert.deepEqual(ofKind(rb.decisions, 'mark-rollback').map((x) => [x.deviceId, x.outcome, x.code]), [[b, 'impossible', 'NO_PREVIOUS_BUNDLE']]);
  let r = step(p, rb.snap, T0 + 39 * SEC);
  assert.equal(ofKind(r.decisions, 'finish').length, 0, 'in flight');
  r = step(p, r.snap, T0 + 40 * SEC);
  assert.equal(ofKind(r.decisions, 'rollback-dispatch').length, 0, 'no answer, no reconnect: not sent again every ackSec');
  assert.deepEqual(ofKind(r.decisions, 'finish').map((x) => x.figures), [{ done: 0, failed: 0, impossible: 1, superseded: 0, awaitingReturn: 1 }]);
  r = step(p, withDevice(r.snap, a, { onlineSince: T0 + 100 * SEC }), T0 + 100 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'mark-rollback').map((x) => [x.deviceId, x.outcome]), [[a, 'resend']]);
  assert.deepEqual(ofKind(r.decisions, 'rollback-dispatch').map((x) => x.deviceId), [a]);
  assert.equal(ofKind(step(p, r.snap, T0 + 101 * SEC).decisions, 'rollback-dispatch').length, 0);
});

test('onBreach rollback: a breach starts the fleet rollback itself', () => {
  const p = plan({ onBreach: 'rollback' }, [3, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const [a, b] = wave(snap, 0) as [string, string];
  snap = install(snap, a, T0 + SEC);
  snap = fail(snap, b, T0 + SEC, 'GOLDEN_MISMATCH', 'rolled_back');
  snap = withDevice(snap, b, { activeBundle: OB });
  const r = step(p, snap, T0 + 5 * SEC);
  const sr = ofKind(r.decisions, 'start-rollback')[0]!;
  assert.equal(sr.cause, 'breach');
  assert.ok(sr.breaches.some((x) => x.rule === 'maxGoldenFailures'));
  assert.ok(ofKind(r.decisions, 'rollback-dispatch').some((x) => x.deviceId === a));
  assert.equal(r.snap.rollout.status, 'rolling_back');
  assert.equal(ofKind(r.decisions, 'dispatch').length, 0);
});

// ------------------------------------------------------------------------------ late joiners

test('late joiners (continuous): none before the canary passed; then the open wave; after the last wave, a tail wave', () => {
  const p = planOf({ membership: 'continuous', waves: [{ size: { count: 2 }, bakeSec: 0 }, { size: { count: 3 }, bakeSec: 0 }, { size: { percent: 100 }, bakeSec: 0 }] });
  const late = [device('late-1'), device('late-2')];
  let s = snapshotOf(p, fleet(8), { candidates: [late[0]!] });
  let r = step(p, s, T0);
  assert.equal(ofKind(r.decisions, 'add-member').length, 0, 'not before the canary passed');
  r = finishWave(p, r.snap, 0, () => 'ok', T0 + SEC);
  const added = ofKind(r.decisions, 'add-member');
  assert.deepEqual(added.map((d) => [d.member.deviceId, d.member.wave, d.member.late]), [['late-1', 1, true]]);
  assert.ok(ofKind(r.decisions, 'dispatch').some((d) => d.deviceId === 'late-1'), 'dispatched with its wave');
  s = { ...r.snap, candidates: [] };
  r = finishWave(p, s, 1, () => 'ok', r.t);
  r = finishWave(p, r.snap, 2, () => 'ok', r.t);
  const tail = ofKind(r.decisions, 'open-wave').find((d) => d.tail)!;
  assert.deepEqual([tail.wave, tail.name], [3, 'tail']);
  assert.equal(ofKind(r.decisions, 'finish').length, 0, 'a continuous rollout does not finish by itself');
  // a device retagged into the target later
  s = { ...r.snap, candidates: ['late-2'], devices: { ...r.snap.devices, 'late-2': late[1]! }, bundles: r.snap.bundles };
  const j = step(p, s, r.t + SEC);
  assert.deepEqual(ofKind(j.decisions, 'add-member').map((d) => [d.member.deviceId, d.member.wave]), [['late-2', 3]]);
  assert.deepEqual(ofKind(j.decisions, 'dispatch').map((d) => d.deviceId), ['late-2']);
  // snapshot membership ignores candidates
  const ps = planOf({ waves: [{ size: { count: 2 }, bakeSec: 0 }, { size: { percent: 100 } }] });
  const rs = finishWave(ps, step(ps, snapshotOf(ps, fleet(4), { candidates: [late[0]!] }), T0).snap, 0, () => 'ok', T0 + SEC);
  assert.equal(ofKind(rs.decisions, 'add-member').length, 0);
});

test('snapshot membership finishes succeeded once every wave passed; members never reached are closed', () => {
  const p = planOf({ waves: [{ size: { count: 2 }, bakeSec: 0 }, { size: { percent: 100 }, bakeSec: 0 }] });
  const s0 = snapshotOf(p, fleet(6));
  const off = wave(s0, 1)[0]!;
  let r = step(p, withDevice(s0, off, { online: false }), T0);
  r = finishWave(p, r.snap, 0, () => 'ok', T0 + SEC);
  r = finishWave(p, r.snap, 1, () => 'ok', r.t);
  const fin = ofKind(r.decisions, 'finish')[0]!;
  assert.equal(fin.status, 'succeeded');
  assert.deepEqual(fin.figures, { succeeded: 5, waiting_offline: 1 });
  assert.deepEqual(ofKind(r.decisions, 'mark-member').filter((d) => d.code === 'NOT_REACHED').map((d) => d.deviceId), [off]);
  assert.deepEqual(step(p, r.snap, r.t + SEC).decisions, []);
});

// ------------------------------------------------------------------------------ supersede

test('supersede: a conflict is a 409 listing the devices; with supersede, those not started are taken over', () => {
  const p = plan({}, [4, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(10), { id: 'rol_old' }));
  const [a, b] = wave(snap, 0) as [string, string];
  snap = withReport(snap, statusReport(memberOf(snap, a), NB, 'downloading', T0 + SEC), T0 + SEC);
  const open = snap.members.map((m) => openMemberRef(m, snap.rollout.status)).filter((x) => x !== null);
  assert.equal(open.length, 10);
  assert.deepEqual(open.filter((o) => o.started).map((o) => o.deviceId), [a]);
  const ids = snap.members.map((m) => m.deviceId);
  const no = resolveConflicts(ids, open, false);
  assert.equal(no.ok, false);
  if (!no.ok) {
    assert.equal(no.code, 'ROLLOUT_CONFLICT');
    assert.equal(no.devices.length, 10);
    assert.ok(no.message.includes(a));
  }
  const yes = resolveConflicts(ids, open, true);
  assert.ok(yes.ok);
  if (!yes.ok) return;
  assert.deepEqual(yes.leftOut.map((o) => o.deviceId), [a]);
  assert.equal(yes.takeOver.length, 9);
  const ds = supersedeDecisions(snap.members, snap.rollout.status, new Set(yes.takeOver.map((o) => o.deviceId)), 'rol_new');
  assert.ok(ds.some((d) => d.kind === 'withdraw' && d.deviceId === b && d.code === 'SUPERSEDED'), 'dispatched, not started: withdrawn');
  assert.equal(ds.filter((d) => d.kind === 'mark-member' && d.code === 'SUPERSEDED').length, 6);
  const after = applyDecisions(snap, ds, T0 + 2 * SEC);
  assert.deepEqual(after.members.filter((m) => holdsStream(m, after.rollout.status)).map((m) => m.deviceId), [a]);
  assert.equal(resolveConflicts(['other'], open, false).ok, true, 'no overlap, no conflict');
});

test('supersede: a rolled-back rollout holds the devices still to be returned, and a newer rollout may take them over', () => {
  const p = plan({}, [2, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(4)));
  const [a] = wave(snap, 0) as [string];
  snap = install(snap, a, T0 + SEC);
  snap = withDevice(snap, a, { online: false });
  const rb = command(p, snap, { kind: 'rollback' }, T0 + 5 * SEC);
  const held = rb.snap.members.filter((m) => holdsStream(m, rb.snap.rollout.status)).map((m) => m.deviceId);
  assert.ok(held.includes(a));
  const ref = openMemberRef(memberOf(rb.snap, a), rb.snap.rollout.status)!;
  assert.equal(ref.started, false);
  const ds = supersedeDecisions(rb.snap.members, rb.snap.rollout.status, new Set([a]), 'rol_new');
  assert.deepEqual(ds.map((d) => d.kind === 'mark-rollback' && d.outcome), ['superseded']);
});

test('a rolled-back rollout lets go of a device once it is back, even if its install was still marked under way', () => {
  const p = plan({}, [2, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(4)));
  const [a, b] = wave(snap, 0) as [string, string];
  snap = install(snap, a, T0 + SEC); // active, baking: still dispatched
  const rb = command(p, snap, { kind: 'rollback' }, T0 + 5 * SEC);
  assert.equal(memberOf(rb.snap, a).phase, 'dispatched');
  assert.ok(holdsStream(memberOf(rb.snap, a), rb.snap.rollout.status), 'held while the rollback is under way');
  snap = withReport(rb.snap, statusReport(memberOf(rb.snap, a), OB, 'active', T0 + 7 * SEC), T0 + 7 * SEC);
  snap = withReport(snap, statusReport(memberOf(snap, b), OB, 'active', T0 + 7 * SEC), T0 + 7 * SEC);
  const r = step(p, snap, T0 + 8 * SEC);
  assert.equal(r.snap.rollout.status, 'rolled_back');
  assert.equal(memberOf(r.snap, a).rollbackState, 'done');
  assert.equal(holdsStream(memberOf(r.snap, a), r.snap.rollout.status), false, 'back on its previous bundle: free for the next rollout');
});

// ------------------------------------------------------------------------------ idempotence and restart

test('restart in the middle of a wave: the persisted snapshot gives the same decisions; applied, nothing is dispatched twice and nobody forgotten', () => {
  const p = plan({ rate: { maxInFlight: 10 } }, [3, 100]);
  let { snap } = started(p, snapshotOf(p, fleet(40)));
  let r = finishWave(p, snap, 0, () => 'ok', T0 + SEC); // wave 1 opens, 10 dispatched
  snap = r.snap;
  const sent = new Map<string, number>();
  const count = (ds: Decision[]) => { for (const d of ofKind(ds, 'dispatch')) sent.set(d.deviceId, (sent.get(d.deviceId) ?? 0) + 1); };
  count(r.decisions);
  const inFlight = ofKind(r.decisions, 'dispatch').map((d) => d.deviceId);
  for (const id of inFlight.slice(0, 4)) snap = install(snap, id, r.t + SEC);
  // the orchestrator dies; what the database holds is all that is left
  const persisted: RolloutSnapshot = JSON.parse(JSON.stringify(snap));
  const t = r.t + 5 * SEC;
  const first = decide(p, persisted, new Date(t));
  assert.deepEqual(decide(p, JSON.parse(JSON.stringify(snap)), new Date(t)), first, 'deterministic');
  assert.deepEqual(decide(p, { ...persisted, members: [...persisted.members].reverse() }, new Date(t)), first, 'whatever the row order');
  snap = applyDecisions(persisted, first, t);
  count(first);
  assert.deepEqual(decide(p, snap, new Date(t)), [], 'idempotent: the applied decisions are not taken again');
  // run the wave to its end from there
  for (let i = 0; i < 20; i++) {
    const now = t + (i + 1) * 70 * SEC;
    for (const m of snap.members) if (m.phase === 'dispatched' && m.startedAt === null) snap = install(snap, m.deviceId, now - 60 * SEC);
    snap = beat(snap, now);
    r = step(p, snap, now);
    count(r.decisions);
    snap = r.snap;
  }
  assert.equal(snap.rollout.status, 'succeeded');
  assert.ok([...sent.values()].every((n) => n === 1), 'no device dispatched twice');
  assert.equal(sent.size + 3, 40, 'none forgotten (the canary was dispatched before counting started)');
  assert.equal(snap.members.filter((m) => m.phase === 'succeeded').length, 40);
});

test('patchOf writes absolute values: applying a decision twice changes nothing more', () => {
  const p = plan();
  const { snap, decisions } = started(p, snapshotOf(p, fleet(10)));
  const twice = applyDecisions(snap, decisions, T0);
  assert.deepEqual(twice.members, snap.members);
  assert.deepEqual(twice.rollout, snap.rollout);
  const w = patchOf({ kind: 'withdraw', deviceId: 'x', code: 'ACK_TIMEOUT', reason: '', outcome: 'waiting', dispatchedAt: 1, unreached: 2 }, 5);
  assert.deepEqual(w.member, { deviceId: 'x', patch: { phase: 'waiting', withdrawnAt: 5, unreached: 2 } });
});

test('status reports: duplicates and stale ones are ignored; a report for another rollout or bundle too', () => {
  const p = plan();
  const { snap } = started(p, snapshotOf(p, fleet(10)));
  const id = wave(snap, 0)[0]!;
  const m = memberOf(snap, id);
  const dl = statusReport(m, NB, 'downloading', T0 + 2 * SEC);
  const s1 = withReport(snap, dl, T0 + 2 * SEC);
  assert.equal(memberOf(s1, id).attempts, 1);
  assert.equal(foldStatusReport(memberOf(s1, id), s1.devices[id], dl, T0 + 3 * SEC).kind, 'ignore', 'duplicate');
  assert.equal(foldStatusReport(memberOf(s1, id), s1.devices[id], statusReport(m, NB, 'pending', T0 + SEC), T0 + 3 * SEC).kind, 'ignore', 'older');
  assert.equal(foldStatusReport(memberOf(s1, id), s1.devices[id], { ...dl, rolloutId: 'rol_other', at: new Date(T0 + 5 * SEC).toISOString() }, T0 + 5 * SEC).kind, 'ignore');
  assert.equal(foldStatusReport(memberOf(s1, id), s1.devices[id], statusReport(m, 'bdl_else', 'active', T0 + 5 * SEC), T0 + 5 * SEC).kind, 'ignore');
  const active = foldStatusReport(memberOf(s1, id), s1.devices[id], statusReport(m, NB, 'active', T0 + 5 * SEC, { result: result(12) }), T0 + 6 * SEC);
  assert.equal(active.kind, 'apply');
  assert.deepEqual(active.device, { activeBundle: NB, activeBundleSince: T0 + 6 * SEC, deviceClockAt: T0 + 5 * SEC, lastSeenAt: T0 + 6 * SEC, benchmark: { bundleId: NB, p95Ms: 12 } });
  if (active.kind === 'apply') assert.deepEqual([active.member.activeAt, active.member.p95Ms], [T0 + 6 * SEC, 12]);
  // a withdrawn (unanswered) member that reports after all is underway again
  const w = withMember(snap, id, { phase: 'waiting', withdrawnAt: T0 + 30 * SEC, unreached: 1 });
  const late = foldStatusReport(memberOf(w, id), w.devices[id], statusReport(m, NB, 'downloading', T0 + 31 * SEC), T0 + 31 * SEC);
  assert.ok(late.kind === 'apply' && late.member.phase === 'dispatched');
});

// ------------------------------------------------------------------------------ hooks and edges

test('issue 11 hook: with a live policy, the gate compares each device\'s live figures on the new bundle with its own on the previous one', () => {
  const base = plan({ gate: { minExecuted: 2 } }, [3, 100]);
  const live = { maxErrorRateIncrease: 0.02, maxP95Regression: 0.2, minRequests: 50 };
  const p: RolloutPlan = { ...base, waves: base.waves.map((w) => ({ ...w, gate: { ...w.gate, live } })) };
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const ids = wave(snap, 0);
  for (const id of ids) snap = install(snap, id, T0 + SEC);
  const figures = (errNew: number, requests = 100) => [
    { bundleId: OB, requests: 500, errorRate: 0.01, p95Ms: 20, windowEnd: T0 - MIN },
    { bundleId: NB, requests, errorRate: errNew, p95Ms: 21, windowEnd: T0 + MIN },
  ];
  for (const id of ids) snap = withDevice(snap, id, { live: figures(0.015) });
  let r = step(p, snap, T0 + 30 * SEC);
  assert.equal(ofKind(r.decisions, 'pause').length, 0, '+0.5 points, p95 +5%');
  const v = evaluateWave(0, r.snap.members, r.snap.devices, p.waves[0]!.gate);
  assert.equal(v.whole.figures.live!.devices, 3);
  for (const id of ids) snap = withDevice(snap, id, { live: figures(0.2, 10) });
  assert.equal(ofKind(step(p, snap, T0 + 30 * SEC).decisions, 'pause').length, 0, 'too few requests to count');
  for (const id of ids) snap = withDevice(snap, id, { live: figures(0.2) });
  r = step(p, snap, T0 + 30 * SEC);
  const b = ofKind(r.decisions, 'pause')[0]!.reason.breaches!.find((x) => x.rule === 'liveErrorRate' && x.profile === null)!;
  assert.ok(Math.abs(b.value - 0.19) < 1e-9);
  // without a live policy (today's plans) live figures are ignored
  assert.equal(evaluateWave(0, r.snap.members, r.snap.devices, base.waves[0]!.gate).whole.figures.live, undefined);
});

test('issue 10 hook: a member whose bundle is not chosen yet (bundleId null, not skipped) is never dispatched', () => {
  const p = plan();
  const s0 = snapshotOf(p, fleet(10));
  const id = wave(s0, 0)[0]!;
  const r = step(p, withMember(s0, id, { bundleId: null }), T0);
  assert.ok(!ofKind(r.decisions, 'dispatch').some((d) => d.deviceId === id));
  assert.equal(ofKind(r.decisions, 'dispatch').length, 2);
});

test('empty waves pass at once, in the same call', () => {
  const p = planOf({ waves: [{ size: { count: 3 }, bakeSec: 0 }, { size: { percent: 10 } }, { size: { percent: 10 } }, { size: { percent: 10 } }, { size: { percent: 100 } }] });
  // 3 devices: every wave after the canary is empty
  let r = step(p, snapshotOf(p, fleet(3)), T0);
  r = finishWave(p, r.snap, 0, () => 'ok', T0 + SEC);
  assert.equal(ofKind(r.decisions, 'wave-passed').length, 5);
  assert.equal(ofKind(r.decisions, 'finish')[0]!.status, 'succeeded');
});

test('pause before startAt, resume: back to scheduled; a scheduled rollout can be cancelled with nothing sent', () => {
  const p = plan({ schedule: { startAt: '2026-06-02T00:00:00Z' } });
  const s0 = snapshotOf(p, fleet(5));
  const paused = command(p, s0, { kind: 'pause' }, T0).snap;
  assert.equal(paused.rollout.status, 'paused');
  const resumed = command(p, paused, { kind: 'resume' }, T0 + SEC);
  assert.deepEqual(ofKind(resumed.decisions, 'resume').map((d) => d.to), ['scheduled']);
  assert.deepEqual(decide(p, resumed.snap, new Date(T0 + 2 * SEC)), []);
  const c = command(p, s0, { kind: 'cancel' }, T0);
  assert.equal(c.snap.rollout.status, 'cancelled');
  assert.equal(ofKind(c.decisions, 'withdraw').length, 0);
  assert.equal(ofKind(c.decisions, 'mark-member').length, 5);
});

test('commands on a rollout that is rolling back are refused with a code', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(5)));
  snap = install(snap, wave(snap, 0)[0]!, T0 + SEC);
  snap = command(p, snap, { kind: 'rollback' }, T0 + 5 * SEC).snap;
  for (const kind of ['pause', 'resume', 'approve', 'cancel'] as const) {
    const r = handleCommand(p, snap, { kind }, new Date(T0 + 6 * SEC));
    assert.ok(!r.ok && r.code === 'ROLLOUT_ROLLING_BACK', kind);
  }
});

test('per-profile pass: a wave does not pass while one of its profiles has not reached its own minExecuted; the quorum pause names it', () => {
  const profiles = ['pi4', 'pi5'];
  const p = planOf({ waves: [{ size: { count: 4 }, bakeSec: 0 }, { size: { percent: 100 } }], timeouts: { quorumSec: 600 } }, profiles);
  const devs = [...fleet(10, ['pi4']), device('p5-a', 'pi5', { online: false }), device('p5-b', 'pi5', { online: false })];
  const s0 = snapshotOf(p, devs);
  assert.equal(wave(s0, 0).filter((id) => id.startsWith('p5-')).length, 1, 'the canary has its pi5');
  let r = step(p, s0, T0);
  r = finishWave(p, r.snap, 0, () => 'ok', T0 + SEC);
  assert.equal(ofKind(r.decisions, 'wave-passed').length, 0, 'the wave as a whole would pass: 3 of 3 online succeeded');
  r = step(p, r.snap, T0 + 600 * SEC);
  const pause = ofKind(r.decisions, 'pause')[0]!;
  assert.equal(pause.reason.code, 'QUORUM');
  assert.ok(pause.reason.message.includes('pi5: 0 of 1 finished'), pause.reason.message);
});

test('SUPERSEDED from the agent: it confirms a withdrawal, and for a dispatched member it is no failure', () => {
  const p = plan();
  let { snap } = started(p, snapshotOf(p, fleet(10)));
  const [a, b] = wave(snap, 0) as [string, string];
  snap = step(p, install(snap, b, T0 + SEC), T0 + 30 * SEC).snap; // a is withdrawn as unreached
  assert.equal(cat(snap, a), 'unreached');
  const late = statusReport(memberOf(snap, a), NB, 'failed', T0 + 31 * SEC, { code: 'SUPERSEDED', reason: 'replaced by a newer desired state' });
  assert.equal(foldStatusReport(memberOf(snap, a), snap.devices[a], late, T0 + 31 * SEC).kind, 'ignore');
  // a dispatched member replaced on the device by another rollout's desired state
  const p2 = plan();
  let s2 = started(p2, snapshotOf(p2, fleet(10))).snap;
  const c = wave(s2, 0)[0]!;
  s2 = withReport(s2, statusReport(memberOf(s2, c), NB, 'failed', T0 + 2 * SEC, { code: 'SUPERSEDED' }), T0 + 2 * SEC);
  const r = step(p2, s2, T0 + 3 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'mark-member').map((d) => [d.deviceId, d.outcome, d.code]), [[c, 'cancelled', 'SUPERSEDED']]);
  assert.equal(ofKind(r.decisions, 'pause').length, 0, 'not a failure, no breach');
});
