// The pure pieces of a trial on the device: the interleaved schedule, figures combined over
// rounds, agreement with the reference, and the persisted trial record's transitions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  MANIFEST_SCHEMA_ID, PROTOCOL_VERSION, TrialReportSchema, Validator, generateKeyPair, keyId, signCanonical, signDesired, signTrialReport, verifyTrialReport,
  type BenchmarkResult, type DesiredState, type Manifest,
} from '@edgepack/protocol';
import { loadState } from '@edgepack/agent/agent-state.js';
import { argmax, computeAgreement } from '@edgepack/agent/trial/agreement.js';
import { combineRounds, median, roundSchedule } from '@edgepack/agent/trial/trial-rounds.js';
import {
  RECENT_TRIALS_LIMIT, failTrial, findTrial, finishTrial, interruptedAfterRestart, rememberTrial, startTrial, trialReport, trialRequestProblem, trialsToReport,
} from '@edgepack/agent/trial/trial-state.js';
import { tempDir } from '../support/processes.js';

const T0 = new Date('2026-03-01T10:00:00Z');
const T1 = new Date('2026-03-01T10:05:00Z');

test('rounds interleave the candidates: A B C, A B C, … in the request\'s order', () => {
  assert.deepEqual(roundSchedule(['a', 'b', 'c'], 2).map((x) => `${x.round}${x.candidate}`), ['1a', '1b', '1c', '2a', '2b', '2c']);
  assert.deepEqual(roundSchedule(['a'], 3).map((x) => x.round), [1, 2, 3]);
  assert.deepEqual(roundSchedule([], 3), []);
});

test('median: the middle value, or the mean of the two middle ones; NaN for none', () => {
  assert.equal(median([5, 1, 3]), 3);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([7]), 7);
  assert.ok(Number.isNaN(median([])));
});

function round(p95: number, o: Partial<BenchmarkResult> = {}): BenchmarkResult {
  return {
    runtime: 'onnxruntime', providers: ['cpu'], loadMs: p95 * 10, warmupRuns: 1, runs: 5, latencyMs: { p50: p95 / 2, p90: p95 * 0.9, p95, p99: p95 * 1.5 },
    throughputPerSec: 1000 / p95, peakRssBytes: 1000 + p95, golden: { passed: true, maxAbsError: 0.001, samples: 4 }, ...o,
  };
}

test('a candidate\'s figures: each time figure the median over rounds (one disturbed round moves nothing), RSS the peak, golden passes only if every round passed', () => {
  const c = combineRounds([round(2), round(50), round(3)]);
  assert.equal(c.latencyMs.p95, 3, 'the 50 ms outlier round does not move the median');
  assert.equal(c.latencyMs.p50, 1.5);
  assert.equal(c.latencyMs.p99, 4.5);
  assert.equal(c.loadMs, 30);
  assert.equal(c.throughputPerSec, 333.33);
  assert.equal(c.peakRssBytes, 1050);
  assert.equal(c.runs, 15);
  assert.equal(c.golden.passed, true);
  const bad = combineRounds([round(2), round(2, { golden: { passed: false, maxAbsError: 0.7, samples: 4 } })]);
  assert.deepEqual(bad.golden, { passed: false, maxAbsError: 0.7, samples: 4 });
  assert.throws(() => combineRounds([]));
});

const t = (values: number[]) => ({ output: { dims: [1, values.length], data: Float32Array.from(values) } });

test('agreement: top-1 share and max abs error against the reference, sample by sample', () => {
  const ref = [t([0.1, 0.9, 0]), t([0.8, 0.1, 0.1]), t([0.2, 0.3, 0.5]), t([0, 0, 1])];
  assert.deepEqual(computeAgreement(ref, ref), { top1: 1, maxAbsError: 0, samples: 4 });
  const close = [t([0.1, 0.85, 0]), t([0.7, 0.1, 0.1]), t([0.2, 0.55, 0.5]), t([0, 0, 1])];
  const a = computeAgreement(ref, close);
  assert.equal(a.top1, 0.75, 'sample 3 now ranks class 1 first');
  assert.ok(Math.abs(a.maxAbsError - 0.25) < 1e-6, String(a.maxAbsError));
  assert.equal(a.samples, 4);
  // Fewer samples on one side: only those both have are compared.
  assert.equal(computeAgreement(ref, close.slice(0, 2)).samples, 2);
  assert.deepEqual(computeAgreement([], []), { top1: 0, maxAbsError: 0, samples: 0 });
});

test('agreement: an output missing or of another shape cannot agree; NaN is an error, not a match', () => {
  const ref = [t([0.1, 0.9])];
  assert.deepEqual(computeAgreement(ref, [{}]), { top1: 0, maxAbsError: 1e308, samples: 1 });
  assert.deepEqual(computeAgreement(ref, [t([0.1, 0.9, 0])]), { top1: 0, maxAbsError: 1e308, samples: 1 });
  assert.equal(computeAgreement(ref, [t([NaN, 0.9])]).maxAbsError, 1e308);
  assert.equal(argmax(Float32Array.from([1, 3, 3])), 1, 'the first on ties');
  assert.equal(argmax(BigInt64Array.from([1n, 5n])), 1);
  assert.equal(argmax([]), -1);
});

const ORCH = generateKeyPair();
function bundle(bundleId: string): DesiredState['bundle'] {
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId, model: { name: 'm', version: '1', sha256: 'a'.repeat(64) }, profile: 'x86-64-gateway', format: 'onnx', precision: 'fp32',
    files: [], io: { inputs: [], outputs: [] }, golden: { file: 'golden.json', count: 0, maxAbsError: 0 }, runtime: { name: 'onnxruntime', executionProviders: ['cpu'] },
    acceptance: {}, createdAt: T0.toISOString(), expiresAt: T1.toISOString(), keyId: keyId(ORCH.publicKey),
  };
  return { manifest, signature: signCanonical(manifest, ORCH.secretKey) };
}
function trial(candidates: string[], reference: string, bundleId = reference): DesiredState {
  return signDesired({
    v: PROTOCOL_VERSION, deviceId: 'dev', seq: 4, rolloutId: 'rol', bundle: bundle(bundleId), issuedAt: T0.toISOString(), kind: 'trial',
    trial: { candidates: candidates.map(bundle), rounds: 2, referenceBundleId: reference },
  }, ORCH.secretKey);
}

test('a trial request holds together only with its reference among the candidates, as its bundle, and no candidate twice', () => {
  assert.equal(trialRequestProblem(trial(['a', 'b'], 'a')), null);
  assert.match(trialRequestProblem(trial(['a', 'b'], 'c'))!, /reference c is not among the candidates/);
  assert.match(trialRequestProblem(trial(['a', 'b'], 'a', 'b'))!, /bundle b is not the reference a/);
  assert.match(trialRequestProblem(trial(['a', 'a'], 'a'))!, /twice/);
  const { trial: _t, ...noTrial } = trial(['a'], 'a');
  assert.match(trialRequestProblem(noTrial as DesiredState)!, /carries no trial/);
});

test('the trial record: running → done or failed, never back; a restart turns running into TRIAL_INTERRUPTED and leaves the rest alone', () => {
  const started = startTrial({ seq: 4, rolloutId: 'rol' }, T0);
  assert.deepEqual(started, { seq: 4, rolloutId: 'rol', state: 'running', results: [], updatedAt: T0.toISOString() });
  const results = [{ bundleId: 'a', precision: 'fp32' }];
  const done = finishTrial(started, results, T1);
  assert.equal(done.state, 'done');
  assert.deepEqual(done.results, results);
  assert.throws(() => finishTrial(done, [], T1), /not running/);
  assert.throws(() => failTrial(done, 'TRIAL_SUPERSEDED', 'x', T1), /not running/);
  const superseded = failTrial(started, 'TRIAL_SUPERSEDED', 'newer', T1);
  assert.equal(superseded.code, 'TRIAL_SUPERSEDED');
  // A desired state that never started (queued, then replaced) fails from nothing.
  assert.equal(failTrial({ seq: 9, rolloutId: 'r9' }, 'TRIAL_SUPERSEDED', 'x', T1).state, 'failed');

  const interrupted = interruptedAfterRestart(started, T1)!;
  assert.equal(interrupted.state, 'failed');
  assert.equal(interrupted.code, 'TRIAL_INTERRUPTED');
  assert.equal(interrupted.seq, 4);
  assert.equal(interruptedAfterRestart(done, T1), done, 'a reported trial stays as it was');
  assert.equal(interruptedAfterRestart(null, T1), null);
});

test('remembered trials answer redeliveries by seq; the list is bounded, newest first', () => {
  let s = { trial: null as ReturnType<typeof startTrial> | null, recentTrials: [] as ReturnType<typeof startTrial>[] };
  for (let seq = 1; seq <= RECENT_TRIALS_LIMIT + 3; seq++) s = rememberTrial(s.trial, s.recentTrials, failTrial({ seq, rolloutId: `r${seq}` }, 'TRIAL_SUPERSEDED', 'x', T0));
  assert.equal(s.trial!.seq, RECENT_TRIALS_LIMIT + 3);
  assert.equal(s.recentTrials.length, RECENT_TRIALS_LIMIT);
  assert.equal(s.recentTrials[0]!.seq, RECENT_TRIALS_LIMIT + 2);
  assert.equal(findTrial(RECENT_TRIALS_LIMIT + 3, s.trial, s.recentTrials), s.trial);
  assert.equal(findTrial(5, s.trial, s.recentTrials)!.seq, 5);
  assert.equal(findTrial(1, s.trial, s.recentTrials), undefined, 'forgotten beyond the bound');
  // The same seq again replaces its record rather than being listed twice.
  const again = rememberTrial(s.trial, s.recentTrials, { ...s.trial!, state: 'failed', code: 'X' });
  assert.equal(again.recentTrials.filter((r) => r.seq === s.trial!.seq).length, 0);
});

test('a trial record becomes a TrialReport that validates and verifies under the device key', () => {
  const device = generateKeyPair();
  const rec = finishTrial(startTrial({ seq: 4, rolloutId: 'rol' }, T0), [{ bundleId: 'a', precision: 'fp32', code: 'GOLDEN_MISMATCH', reason: 'x'.repeat(5000) }], T1);
  const r = signTrialReport(trialReport('dev', rec), device.secretKey);
  assert.equal(new Validator('trial report', TrialReportSchema).parse(Buffer.from(JSON.stringify(r))).ok, true, 'long reasons are cut to fit');
  assert.equal(verifyTrialReport(r, device.publicKey), true);
  assert.equal(r.at, T1.toISOString());
});

test('state.json: a damaged trial record is dropped, the rest of the state kept', async () => {
  const dir = await tempDir('agent-trial-state');
  try {
    const good = failTrial({ seq: 2, rolloutId: 'r2' }, 'TRIAL_SUPERSEDED', 'x', T0);
    await writeFile(join(dir.path, 'state.json'), JSON.stringify({ lastSeq: 3, action: null, queued: null, lastBenchmark: null, recent: [], trial: { seq: 'x' }, recentTrials: [good, 7] }));
    const s = await loadState(dir.path);
    assert.equal(s.lastSeq, 3);
    assert.equal(s.trial, undefined);
    assert.deepEqual(s.recentTrials, [good]);
  } finally {
    await dir.remove();
  }
});

test('on reconnect only the latest trial of each rollout is re-reported, oldest first: an interrupted one never follows its replacement', () => {
  const rec = (seq: number, rolloutId: string) => failTrial({ seq, rolloutId }, 'TRIAL_INTERRUPTED', 'x', T0);
  const latest = startTrial({ seq: 12, rolloutId: 'rol_a' }, T1);
  const recent = [rec(11, 'rol_b'), rec(10, 'rol_a'), rec(9, 'rol_c')];
  assert.deepEqual(trialsToReport(latest, recent).map((t) => t.seq), [9, 11, 12]);
  assert.deepEqual(trialsToReport(null, []), []);
});

test('agreement: outputs renamed by a conversion (TFLite) pair up by position; the first output in the model\'s order decides top-1', () => {
  const ref = [{ logits: { dims: [1, 3], data: Float32Array.from([0.1, 0.7, 0.2]) }, aux: { dims: [1], data: Float32Array.from([5]) } }];
  const renamed = [{ 'StatefulPartitionedCall:0': { dims: [3], data: Float32Array.from([0.1, 0.6, 0.2]) }, 'StatefulPartitionedCall:1': { dims: [1], data: Float32Array.from([5.5]) } }];
  const a = computeAgreement(ref, renamed);
  assert.equal(a.top1, 1);
  assert.ok(Math.abs(a.maxAbsError - 0.5) < 1e-6, String(a.maxAbsError));
  // With the names in common, names win over position.
  const swapped = [{ aux: { dims: [1], data: Float32Array.from([5]) }, logits: { dims: [1, 3], data: Float32Array.from([0.1, 0.7, 0.2]) } }];
  assert.deepEqual(computeAgreement(ref, swapped), { top1: 1, maxAbsError: 0, samples: 1 });
});
