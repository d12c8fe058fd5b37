// The choice rule of issue 10 (core/variant-choice.ts), pure: golden failures and budget misses
// exclude, the lowest median p95 wins, fp32 wins ties, devices without figures are left out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseVariant, median, TIE_MARGIN, type ChoiceCandidate } from '@edgepack/orchestrator/core/variant-choice.js';
import type { TrialResultRecord } from '@edgepack/orchestrator/records.js';
import { result } from '../support/rollout-fleet.js';

const C = (precision: string): ChoiceCandidate => ({ bundleId: `b-${precision}`, precision, format: 'onnx', reference: precision === 'fp32' });
const CANDS = [C('int8-static'), C('int8-dynamic'), C('fp32')];

function r(deviceId: string, precision: string, p95: number | null, extra: Partial<TrialResultRecord> = {}): TrialResultRecord {
  return {
    profile: 'pi4', bundleId: `b-${precision}`, deviceId, rolloutId: 'rol_1', precision,
    result: p95 === null ? null : result(p95), agreement: { top1: 1, maxAbsError: 0.01, samples: 3 }, code: null, reason: null, measuredAt: 1, ...extra,
  };
}

const choose = (results: TrialResultRecord[], budget: number | null = 100, leftOut: { deviceId: string; why: string }[] = []) =>
  chooseVariant({ profile: 'pi4', candidates: CANDS, results, budgetP95Ms: budget, hostPick: { bundleId: 'b-fp32', precision: 'fp32' }, source: 'measured', leftOut });

test('median: odd and even counts, empty is null', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([]), null);
});

test('the lowest median p95 across devices wins, with every device\'s figures for every candidate and the host pick beside it', () => {
  const c = choose([
    r('a', 'fp32', 10), r('b', 'fp32', 12), r('c', 'fp32', 11),
    r('a', 'int8-static', 6), r('b', 'int8-static', 30), r('c', 'int8-static', 7), // one slow outlier does not move the median much
    r('a', 'int8-dynamic', 8), r('b', 'int8-dynamic', 8), r('c', 'int8-dynamic', 8),
  ]);
  assert.equal(c.precision, 'int8-static');
  assert.equal(c.cause, 'measured');
  const s = c.candidates.find((x) => x.precision === 'int8-static')!;
  assert.equal(s.medianP95Ms, 7);
  assert.deepEqual(s.devices.map((d) => [d.deviceId, d.p95Ms]), [['a', 6], ['b', 30], ['c', 7]]);
  assert.equal(c.candidates.find((x) => x.precision === 'fp32')!.medianP95Ms, 11);
  assert.deepEqual(c.hostPick, { bundleId: 'b-fp32', precision: 'fp32' });
  assert.deepEqual(c.devices, ['a', 'b', 'c']);
});

test('a golden failure on any device excludes the candidate, however fast', () => {
  const c = choose([
    r('a', 'fp32', 10), r('b', 'fp32', 10),
    r('a', 'int8-static', 2), r('b', 'int8-static', 2, { result: result(2, false) }),
    r('a', 'int8-dynamic', 7), r('b', 'int8-dynamic', 7),
  ]);
  assert.equal(c.precision, 'int8-dynamic');
  const s = c.candidates.find((x) => x.precision === 'int8-static')!;
  assert.equal(s.eligible, false);
  assert.match(s.reason, /golden/);
});

test('a candidate the device refused with a code is excluded (no figures, a code)', () => {
  const c = choose([r('a', 'fp32', 10), r('a', 'int8-static', null, { code: 'GOLDEN_MISMATCH', reason: 'outputs differ' }), r('a', 'int8-dynamic', 12)]);
  assert.equal(c.precision, 'fp32');
  assert.match(c.candidates.find((x) => x.precision === 'int8-static')!.reason, /GOLDEN_MISMATCH/);
});

test('a candidate over the profile\'s latency budget is excluded even when it is the fastest left', () => {
  const c = choose([r('a', 'fp32', 60), r('a', 'int8-static', 40), r('a', 'int8-dynamic', 45)], 50);
  assert.equal(c.precision, 'int8-static');
  assert.equal(c.candidates.find((x) => x.precision === 'fp32')!.eligible, false, 'fp32 misses the 50 ms budget');
  const none = choose([r('a', 'fp32', 60), r('a', 'int8-static', 55)], 50);
  assert.equal(none.precision, 'fp32');
  assert.equal(none.cause, 'fallback', 'nothing meets the budget: the reference, as a fallback');
});

test('ties go to fp32: another candidate must be more than the tie margin faster', () => {
  const justInside = 10 * (1 - TIE_MARGIN) + 0.01;
  const tie = choose([r('a', 'fp32', 10), r('a', 'int8-static', justInside), r('a', 'int8-dynamic', 10)]);
  assert.equal(tie.precision, 'fp32');
  assert.match(tie.reason, /tie/);
  const equal = choose([r('a', 'fp32', 10), r('a', 'int8-static', 10)]);
  assert.equal(equal.precision, 'fp32');
  const clear = choose([r('a', 'fp32', 10), r('a', 'int8-static', 10 * (1 - TIE_MARGIN) - 0.01)]);
  assert.equal(clear.precision, 'int8-static');
});

test('an offline canary device has no figures: left out of the medians, never counted as slow', () => {
  const c = choose([r('a', 'fp32', 10), r('a', 'int8-static', 5), r('b', 'fp32', 10), r('b', 'int8-static', 6)], 100, [{ deviceId: 'c', why: 'offline: no trial sent' }]);
  assert.equal(c.precision, 'int8-static');
  assert.equal(c.candidates.find((x) => x.precision === 'int8-static')!.medianP95Ms, 5.5);
  assert.deepEqual(c.devices, ['a', 'b']);
  assert.deepEqual(c.leftOut, [{ deviceId: 'c', why: 'offline: no trial sent' }]);
  // a candidate nobody measured is not eligible, and does not block the others
  assert.equal(c.candidates.find((x) => x.precision === 'int8-dynamic')!.eligible, false);
});

test('no device has figures: the reference (fp32), as a fallback, not the host pick', () => {
  const c = chooseVariant({ profile: 'pi4', candidates: CANDS, results: [], budgetP95Ms: 100, hostPick: { bundleId: 'b-int8-static', precision: 'int8-static' }, source: 'measured' });
  assert.equal(c.precision, 'fp32');
  assert.equal(c.cause, 'fallback');
  assert.match(c.reason, /no device has figures/);
  assert.deepEqual(c.hostPick, { bundleId: 'b-int8-static', precision: 'int8-static' }, 'the host pick is shown beside it');
});

test('one figure per device: the newest measurement of a device counts', () => {
  const c = choose([r('a', 'fp32', 10), r('a', 'int8-static', 20, { measuredAt: 1 }), r('a', 'int8-static', 5, { measuredAt: 2 })]);
  assert.equal(c.precision, 'int8-static');
  assert.equal(c.candidates.find((x) => x.precision === 'int8-static')!.devices.length, 1);
});
