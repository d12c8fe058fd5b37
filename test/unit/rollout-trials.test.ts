// decide() over a device build (issue 10), with a fake clock and no IO: the canary trials every
// candidate before it installs anything, trial reports are folded, each profile's variant is
// chosen from its canary's figures, the fleet gets the winner; offline canary devices, timeouts,
// failed trials, stored results reused, and a restart in the middle of a trial.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TrialReport } from '@edgepack/protocol';
import { assignWaves } from '@edgepack/orchestrator/core/rollout-waves.js';
import { foldTrialReport } from '@edgepack/orchestrator/core/rollout-trials.js';
import type { RolloutSnapshot, TrialSnapshot } from '@edgepack/orchestrator/core/rollout-snapshot.js';
import type { RolloutDeviceView } from '@edgepack/orchestrator/core/rollout-snapshot.js';
import type { RolloutPlan } from '@edgepack/orchestrator/records.js';
import {
  fleet, heartbeat, memberOf, ofKind, planOf, result, rolloutState, SEC, statusReport, step, T0, withDevice, withHeartbeat, withReport,
} from '../support/rollout-fleet.js';

const PRECISIONS: Record<string, string[]> = {
  pi4: ['int8-static', 'int8-dynamic', 'fp32'],
  jetson: ['fp16', 'fp32'],
};
const bid = (profile: string, precision: string) => `${profile}-${precision}`;

function plan(over: Record<string, unknown> = {}): RolloutPlan {
  return planOf({
    waves: [{ name: 'canary', size: { count: 4 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }],
    timeouts: { ackSec: 30, inProgressSec: 300, quorumSec: 3600 },
    trial: { rounds: 3, timeoutSec: 120 },
    ...over,
  }, Object.keys(PRECISIONS));
}

function trialOf(profiles: string[], results: TrialSnapshot['results'] = []): TrialSnapshot {
  return {
    profiles: Object.fromEntries(profiles.map((p) => [p, {
      candidates: PRECISIONS[p]!.map((pr) => ({ bundleId: bid(p, pr), precision: pr, format: 'onnx', reference: pr === 'fp32' })),
      referenceBundleId: bid(p, 'fp32'), hostPick: { bundleId: bid(p, p === 'pi4' ? 'fp32' : 'fp16'), precision: p === 'pi4' ? 'fp32' : 'fp16' }, budgetP95Ms: 50,
    }])),
    results, choices: {},
  };
}

/** A rollout of a device build: every member waits with no bundle until its profile's choice. */
function snapshot(p: RolloutPlan, devices: RolloutDeviceView[], opts: { id?: string; results?: TrialSnapshot['results'] } = {}): RolloutSnapshot {
  const id = opts.id ?? 'rol_t';
  const profiles = [...new Set(devices.map((d) => d.profile))].sort();
  const a = assignWaves({ rolloutId: id, plan: p, devices, bundles: {}, now: T0, pending: new Set(profiles) });
  return {
    rollout: rolloutState({ id, createdAt: T0 }), waves: a.waves, members: a.members, devices: Object.fromEntries(devices.map((d) => [d.id, { ...d }])),
    candidates: [], bundles: {}, trial: trialOf(profiles, opts.results ?? []),
  };
}

/** The device's trial report, folded as the service folds it (foldTrialReport), its figures stored. */
function report(s: RolloutSnapshot, deviceId: string, figures: Record<string, number | { code: string } | { golden: false; p95: number }>, at: number): RolloutSnapshot {
  const m = memberOf(s, deviceId);
  const r: TrialReport = {
    v: 1, deviceId, rolloutId: m.rolloutId, seq: 1, state: 'done', at: new Date(at).toISOString(),
    results: Object.entries(figures).map(([precision, f]) => ({
      bundleId: bid(m.profile, precision), precision,
      ...(typeof f === 'number' ? { result: result(f), agreement: { top1: 1, maxAbsError: 0, samples: 3 } }
        : 'code' in f ? { code: f.code, reason: 'refused' } : { result: result(f.p95, false) }),
    })),
  };
  return fold(s, r, at);
}

function fold(s: RolloutSnapshot, r: TrialReport, at: number): RolloutSnapshot {
  const m = memberOf(s, r.deviceId);
  const precisionOf = new Map(s.trial!.profiles[m.profile]!.candidates.map((c) => [c.bundleId, c.precision]));
  const f = foldTrialReport(m, r, precisionOf, at);
  if (f.kind === 'ignore') return s;
  const results = [...s.trial!.results.filter((x) => !f.results.some((y) => y.profile === x.profile && y.bundleId === x.bundleId && y.deviceId === x.deviceId)), ...f.results];
  return { ...s, members: s.members.map((x) => (x.deviceId === r.deviceId ? { ...x, ...f.member } : x)), trial: { ...s.trial!, results } };
}

const canary = (s: RolloutSnapshot, profile?: string) => s.members.filter((m) => m.wave === 0 && (!profile || m.profile === profile)).map((m) => m.deviceId);

/** Installs the member's bundle and heartbeats it (bake 0): the canary passes. */
function install(s: RolloutSnapshot, id: string, at: number): RolloutSnapshot {
  const m = memberOf(s, id);
  s = withReport(s, statusReport(m, m.bundleId!, 'downloading', at), at);
  s = withReport(s, statusReport(m, m.bundleId!, 'active', at + SEC, { result: result(8) }), at + SEC);
  return withHeartbeat(s, heartbeat(id, m.bundleId!, at + 2 * SEC), at + 2 * SEC);
}

test('the canary first gets a trial of every candidate of its profile, before any install; the rest of the fleet gets nothing yet', () => {
  const p = plan();
  const s0 = snapshot(p, fleet(12, ['pi4', 'jetson']));
  const { snap, decisions } = step(p, s0, T0);
  assert.equal(ofKind(decisions, 'dispatch').length, 0, 'nothing is installed before the choice');
  const trials = ofKind(decisions, 'trial-dispatch');
  assert.deepEqual(trials.map((d) => d.deviceId).sort(), canary(snap).sort());
  for (const t of trials) {
    assert.deepEqual(t.candidates, PRECISIONS[t.profile]!.map((pr) => bid(t.profile, pr)));
    assert.equal(t.referenceBundleId, bid(t.profile, 'fp32'));
    assert.equal(t.rounds, 3);
    assert.equal(memberOf(snap, t.deviceId).trialState, 'dispatched');
    assert.equal(memberOf(snap, t.deviceId).bundleId, null);
  }
  for (const m of snap.members) assert.equal(m.phase, 'waiting');
  // decided again on the applied snapshot: no trial is sent twice
  const again = step(p, snap, T0 + SEC);
  assert.equal(ofKind(again.decisions, 'trial-dispatch').length, 0);
  assert.equal(ofKind(again.decisions, 'dispatch').length, 0);
});

test('per profile: int8 faster on the Pi, fp16 slower on the Jetson ⇒ int8 for the Pis, fp32 for the Jetson; the canary installs it, then every later wave', () => {
  const p = plan();
  let { snap } = step(p, snapshot(p, fleet(12, ['pi4', 'jetson'])), T0);
  const [pi1, pi2] = canary(snap, 'pi4') as [string, string];
  const [j1, j2] = canary(snap, 'jetson') as [string, string];
  snap = report(snap, pi1, { 'int8-static': 6, 'int8-dynamic': 8, fp32: 10 }, T0 + 10 * SEC);
  let r = step(p, snap, T0 + 10 * SEC);
  assert.equal(ofKind(r.decisions, 'choose-variant').length, 0, 'the Pi profile waits for its other canary device');
  snap = report(r.snap, pi2, { 'int8-static': 7, 'int8-dynamic': 9, fp32: 11 }, T0 + 11 * SEC);
  r = step(p, snap, T0 + 11 * SEC);
  const pi = ofKind(r.decisions, 'choose-variant');
  assert.deepEqual(pi.map((d) => [d.profile, d.choice.precision, d.choice.cause]), [['pi4', 'int8-static', 'measured']]);
  assert.equal(pi[0]!.choice.candidates.find((c) => c.precision === 'int8-static')!.medianP95Ms, 6.5);
  assert.deepEqual(pi[0]!.choice.candidates.find((c) => c.precision === 'fp32')!.devices.map((d) => d.p95Ms).sort((x, y) => x! - y!), [10, 11]);
  assert.deepEqual(pi[0]!.choice.hostPick, { bundleId: bid('pi4', 'fp32'), precision: 'fp32' }, 'the host\'s pick beside it');
  // the Pi canary installs the winner in the same round; the Jetson canary still waits
  assert.deepEqual(ofKind(r.decisions, 'dispatch').map((d) => [d.deviceId, d.bundleId]).sort(), [[pi1, bid('pi4', 'int8-static')], [pi2, bid('pi4', 'int8-static')]].sort());
  for (const m of r.snap.members) assert.equal(m.bundleId, m.profile === 'pi4' ? bid('pi4', 'int8-static') : null);

  snap = report(r.snap, j1, { fp16: 12, fp32: 10 }, T0 + 12 * SEC);
  snap = report(snap, j2, { fp16: 13, fp32: 9 }, T0 + 12 * SEC);
  r = step(p, snap, T0 + 12 * SEC);
  const j = ofKind(r.decisions, 'choose-variant');
  assert.deepEqual(j.map((d) => [d.profile, d.choice.precision]), [['jetson', 'fp32']]);
  assert.deepEqual(j[0]!.choice.hostPick, { bundleId: bid('jetson', 'fp16'), precision: 'fp16' }, 'the host would have sent fp16');
  assert.deepEqual(ofKind(r.decisions, 'dispatch').map((d) => d.bundleId).sort(), [bid('jetson', 'fp32'), bid('jetson', 'fp32')]);

  // the canary installs; the next wave opens and gets the winners, no trial
  snap = r.snap;
  for (const id of canary(snap)) snap = install(snap, id, T0 + 20 * SEC);
  r = step(p, snap, T0 + 30 * SEC);
  assert.equal(ofKind(r.decisions, 'wave-passed').length, 1);
  assert.equal(ofKind(r.decisions, 'trial-dispatch').length, 0);
  const rest = ofKind(r.decisions, 'dispatch');
  assert.equal(rest.length, 8);
  for (const d of rest) assert.equal(d.bundleId, memberOf(r.snap, d.deviceId).profile === 'pi4' ? bid('pi4', 'int8-static') : bid('jetson', 'fp32'));
});

test('an offline canary device gets no trial and is left out: the profile chooses from the others, and the device later installs the winner', () => {
  const p = plan({ waves: [{ name: 'canary', size: { count: 3 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }] });
  let s0 = snapshot(p, fleet(6, ['pi4']));
  const [a, b, c] = canary(s0) as [string, string, string];
  s0 = withDevice(s0, c, { online: false });
  let r = step(p, s0, T0);
  assert.deepEqual(ofKind(r.decisions, 'trial-dispatch').map((d) => d.deviceId).sort(), [a, b].sort());
  let snap = report(r.snap, a, { 'int8-static': 5, 'int8-dynamic': 9, fp32: 10 }, T0 + 5 * SEC);
  snap = report(snap, b, { 'int8-static': 6, 'int8-dynamic': 9, fp32: 10 }, T0 + 5 * SEC);
  r = step(p, snap, T0 + 5 * SEC);
  const ch = ofKind(r.decisions, 'choose-variant')[0]!;
  assert.equal(ch.choice.precision, 'int8-static');
  assert.deepEqual(ch.choice.leftOut, [{ deviceId: c, why: 'offline: no trial sent' }]);
  assert.deepEqual(ch.choice.devices, [a, b].sort());
  // it comes back: it installs the winner, no trial
  r = step(p, withDevice(r.snap, c, { online: true, onlineSince: T0 + 60 * SEC }), T0 + 60 * SEC);
  assert.equal(ofKind(r.decisions, 'trial-dispatch').length, 0);
  assert.deepEqual(ofKind(r.decisions, 'dispatch').map((d) => [d.deviceId, d.bundleId]), [[c, bid('pi4', 'int8-static')]]);
});

test('a trial with no end within trial.timeoutSec times out and is left out; a failed trial (kill -9 on the device) too', () => {
  const p = plan({ waves: [{ name: 'canary', size: { count: 3 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }] });
  let r = step(p, snapshot(p, fleet(6, ['pi4'])), T0);
  const [a, b, c] = canary(r.snap) as [string, string, string];
  let snap = report(r.snap, a, { 'int8-static': 5, 'int8-dynamic': 9, fp32: 10 }, T0 + 5 * SEC);
  snap = fold(snap, { v: 1, deviceId: b, rolloutId: 'rol_t', seq: 1, state: 'running', results: [], at: '' }, T0 + 6 * SEC);
  snap = fold(snap, { v: 1, deviceId: b, rolloutId: 'rol_t', seq: 1, state: 'failed', code: 'TRIAL_INTERRUPTED', reason: 'restarted', results: [], at: '' }, T0 + 7 * SEC);
  assert.equal(memberOf(snap, b).trialState, 'failed');
  r = step(p, snap, T0 + 119 * SEC);
  assert.equal(ofKind(r.decisions, 'choose-variant').length, 0, 'c may still answer');
  r = step(p, r.snap, T0 + 120 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'trial-timeout').map((d) => [d.deviceId, d.state]), [[c, 'dispatched']]);
  const ch = ofKind(r.decisions, 'choose-variant')[0]!;
  assert.equal(ch.choice.precision, 'int8-static');
  assert.deepEqual(ch.choice.devices, [a]);
  assert.deepEqual(ch.choice.leftOut.map((x) => x.deviceId).sort(), [b, c].sort());
  assert.match(ch.choice.leftOut.find((x) => x.deviceId === b)!.why, /TRIAL_INTERRUPTED/);
  // a late report of the timed-out trial changes nothing
  const late = report(r.snap, c, { 'int8-static': 1, 'int8-dynamic': 1, fp32: 10 }, T0 + 121 * SEC);
  assert.equal(late.trial!.results.filter((x) => x.deviceId === c).length, 0);
});

test('every canary device silent: after trial.timeoutSec the profile falls back to fp32, and the canary installs it', () => {
  const p = plan({ waves: [{ name: 'canary', size: { count: 2 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }] });
  let r = step(p, snapshot(p, fleet(4, ['pi4'])), T0);
  r = step(p, r.snap, T0 + 120 * SEC);
  assert.equal(ofKind(r.decisions, 'trial-timeout').length, 2);
  const ch = ofKind(r.decisions, 'choose-variant')[0]!;
  assert.deepEqual([ch.choice.precision, ch.choice.cause], ['fp32', 'fallback']);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 2);
});

test('the golden check on the device excludes a candidate: a Pi whose int8 answers differ gets int8-dynamic', () => {
  const p = plan({ waves: [{ name: 'canary', size: { count: 2 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }] });
  let r = step(p, snapshot(p, fleet(4, ['pi4'])), T0);
  const [a, b] = canary(r.snap) as [string, string];
  let snap = report(r.snap, a, { 'int8-static': 3, 'int8-dynamic': 7, fp32: 10 }, T0 + SEC);
  snap = report(snap, b, { 'int8-static': { golden: false, p95: 3 }, 'int8-dynamic': 7, fp32: 10 }, T0 + SEC);
  r = step(p, snap, T0 + 2 * SEC);
  assert.equal(ofKind(r.decisions, 'choose-variant')[0]!.choice.precision, 'int8-dynamic');
});

test('a later rollout of the same build reuses the stored results: no trial, the choice at once; measureAgain trials again', () => {
  const p = plan();
  let r = step(p, snapshot(p, fleet(8, ['pi4']), { id: 'rol_1' }), T0);
  let snap = r.snap;
  for (const id of canary(snap)) snap = report(snap, id, { 'int8-static': 6, 'int8-dynamic': 8, fp32: 10 }, T0 + SEC);
  r = step(p, snap, T0 + 2 * SEC);
  assert.equal(ofKind(r.decisions, 'choose-variant')[0]!.choice.cause, 'measured');
  const stored = r.snap.trial!.results;
  assert.equal(stored.length, 12, '4 canary devices × 3 candidates');

  const second = step(p, snapshot(p, fleet(8, ['pi4']), { id: 'rol_2', results: stored }), T0 + 3600 * SEC);
  assert.equal(ofKind(second.decisions, 'trial-dispatch').length, 0);
  const ch = ofKind(second.decisions, 'choose-variant')[0]!;
  assert.deepEqual([ch.choice.precision, ch.choice.cause], ['int8-static', 'reused']);
  assert.ok(ch.choice.candidates[0]!.devices.every((d) => d.rolloutId === 'rol_1'), 'the figures name the rollout that measured them');
  assert.equal(ofKind(second.decisions, 'dispatch').length, 4, 'the canary installs at once');

  const again = plan({ trial: { measureAgain: true, timeoutSec: 120 } });
  const third = step(again, snapshot(again, fleet(8, ['pi4']), { id: 'rol_3', results: stored }), T0 + 7200 * SEC);
  assert.equal(ofKind(third.decisions, 'choose-variant').length, 0);
  assert.equal(ofKind(third.decisions, 'trial-dispatch').length, 4);
});

test('restart in the middle of a trial: the stored state (JSON round trip) gives no second trial, and reports after it still count', () => {
  const p = plan();
  let r = step(p, snapshot(p, fleet(8, ['pi4'])), T0);
  const [a, b, c, d] = canary(r.snap) as [string, string, string, string];
  let snap = report(r.snap, a, { 'int8-static': 6, 'int8-dynamic': 8, fp32: 10 }, T0 + SEC);
  // the orchestrator dies; a new one reads the database
  const reread = JSON.parse(JSON.stringify(snap)) as RolloutSnapshot;
  r = step(p, reread, T0 + 30 * SEC);
  assert.equal(ofKind(r.decisions, 'trial-dispatch').length, 0);
  assert.equal(ofKind(r.decisions, 'choose-variant').length, 0);
  snap = r.snap;
  for (const id of [b, c, d]) snap = report(snap, id, { 'int8-static': 6, 'int8-dynamic': 8, fp32: 10 }, T0 + 40 * SEC);
  r = step(p, snap, T0 + 40 * SEC);
  assert.deepEqual(ofKind(r.decisions, 'choose-variant')[0]!.choice.devices, [a, b, c, d].sort());
  // and after the choice, a restart does not choose again
  const after = step(p, JSON.parse(JSON.stringify(r.snap)) as RolloutSnapshot, T0 + 41 * SEC);
  assert.equal(ofKind(after.decisions, 'choose-variant').length, 0);
});

test('a host build (no trial in the snapshot) never trials', () => {
  const p = plan();
  const s = snapshot(p, fleet(4, ['pi4']));
  const { trial: _t, ...host } = s;
  const bundles = { pi4: 'new-pi4' };
  const members = host.members.map((m) => ({ ...m, bundleId: 'new-pi4' }));
  const r = step(p, { ...host, bundles, members }, T0);
  assert.equal(ofKind(r.decisions, 'trial-dispatch').length, 0);
  assert.equal(ofKind(r.decisions, 'dispatch').length, 4);
});

test('continuous membership: a device that joins after the canary passed gets its profile\'s chosen variant, no trial', () => {
  const p = plan({ membership: 'continuous', waves: [{ name: 'canary', size: { count: 2 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }] });
  let r = step(p, snapshot(p, fleet(2, ['pi4'])), T0);
  let snap = r.snap;
  for (const id of canary(snap)) snap = report(snap, id, { 'int8-static': 5, 'int8-dynamic': 8, fp32: 10 }, T0 + SEC);
  r = step(p, snap, T0 + 2 * SEC);
  snap = r.snap;
  for (const id of canary(snap)) snap = install(snap, id, T0 + 3 * SEC);
  r = step(p, snap, T0 + 10 * SEC);
  assert.equal(ofKind(r.decisions, 'wave-passed').length >= 1, true);
  const late = fleet(3, ['pi4'])[2]!;
  snap = { ...r.snap, devices: { ...r.snap.devices, [late.id]: { ...late } }, candidates: [late.id] };
  r = step(p, snap, T0 + 20 * SEC);
  const added = ofKind(r.decisions, 'add-member');
  assert.deepEqual(added.map((d) => [d.member.deviceId, d.member.bundleId, d.member.phase]), [[late.id, bid('pi4', 'int8-static'), 'waiting']]);
  assert.equal(ofKind(r.decisions, 'trial-dispatch').length, 0);
  assert.deepEqual(ofKind(r.decisions, 'dispatch').map((d) => [d.deviceId, d.bundleId]), [[late.id, bid('pi4', 'int8-static')]]);
});

test('a profile the rollout has no device of chooses nothing; one with devices but none in the canary chooses at once (the reference, without figures)', () => {
  const p = plan({ waves: [{ name: 'canary', size: { count: 1 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }] });
  const s = snapshot(p, fleet(2, ['pi4']));
  const withJetson = { ...s, trial: trialOf(['pi4', 'jetson']) };
  const r = step(p, withJetson, T0);
  assert.deepEqual(ofKind(r.decisions, 'choose-variant').map((d) => d.profile), [], 'no Jetson in the rollout: no Jetson choice');
  // the canary of one is a pi4; a second pi4 sits in the rest, and a profile with only rest members:
  const jet = fleet(1, ['jetson'])[0]!;
  const m = { ...r.snap.members[0]!, deviceId: jet.id, profile: 'jetson', wave: 1, order: 99, trialState: null, phase: 'waiting' as const, bundleId: null };
  const r2 = step(p, { ...r.snap, members: [...r.snap.members, m], devices: { ...r.snap.devices, [jet.id]: { ...jet } } }, T0 + SEC);
  assert.deepEqual(ofKind(r2.decisions, 'choose-variant').map((d) => [d.profile, d.choice.precision, d.choice.cause]), [['jetson', 'fp32', 'fallback']]);
});
