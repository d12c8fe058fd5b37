import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEVICE_STATES, TERMINAL_DEVICE_STATES, encodeTensor } from '@edgepack/protocol';
import { isTerminal, nextPhase, reportedState, resumeAction, type Phase, type UpdateEvent } from '@edgepack/agent/update-machine.js';
import { decodeGolden, latencySummary, maxAbsDiff, percentile } from '@edgepack/agent/benchmark-stats.js';
import type { TensorValue } from '@edgepack/agent/runtime/runner.js';

const PHASES: Phase[] = ['downloading', 'verifying', 'installing', 'benchmarking', 'committing', 'rolling_back', 'done', 'failed', 'rolled_back'];
const EVENTS: UpdateEvent[] = ['downloaded', 'verified', 'installed', 'accepted', 'committed', 'error', 'rolled_back'];

/** Every legal transition, written out independently of the implementation's table. */
const LEGAL: Record<string, Phase> = {
  'downloading/downloaded': 'verifying',
  'downloading/error': 'failed',
  'verifying/verified': 'installing',
  'verifying/error': 'failed',
  'installing/installed': 'benchmarking',
  'installing/error': 'failed',
  'benchmarking/accepted': 'committing',
  'benchmarking/error': 'rolling_back',
  'committing/committed': 'done',
  'committing/error': 'rolling_back',
  'rolling_back/rolled_back': 'rolled_back',
  'rolling_back/error': 'rolled_back',
};

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

function run(start: Phase, events: UpdateEvent[]): Phase[] {
  const seen: Phase[] = [start];
  let p = start;
  for (const e of events) {
    p = nextPhase(p, e);
    seen.push(p);
  }
  return seen;
}

test('happy path: downloading → verifying → installing → benchmarking → committing → done', () => {
  const path = run('downloading', ['downloaded', 'verified', 'installed', 'accepted', 'committed']);
  assert.deepEqual(path, ['downloading', 'verifying', 'installing', 'benchmarking', 'committing', 'done']);
  assert.deepEqual(path.map(reportedState), ['downloading', 'verifying', 'installing', 'benchmarking', 'benchmarking', 'active']);
  assert.equal(isTerminal('done'), true);
});

test('an error before anything is installed ends in failed (nothing to roll back)', () => {
  assert.deepEqual(run('downloading', ['error']), ['downloading', 'failed']);
  assert.deepEqual(run('downloading', ['downloaded', 'error']), ['downloading', 'verifying', 'failed']);
  assert.deepEqual(run('downloading', ['downloaded', 'verified', 'error']), ['downloading', 'verifying', 'installing', 'failed']);
  assert.equal(reportedState('failed'), 'failed');
});

test('an error once the new version is installed rolls back: rolling_back → rolled_back', () => {
  assert.deepEqual(run('benchmarking', ['error', 'rolled_back']), ['benchmarking', 'rolling_back', 'rolled_back']);
  assert.deepEqual(run('committing', ['error', 'rolled_back']), ['committing', 'rolling_back', 'rolled_back']);
  // a rollback that itself errors still ends (it must not loop or hang)
  assert.deepEqual(run('benchmarking', ['error', 'error']), ['benchmarking', 'rolling_back', 'rolled_back']);
  // rolling back is reported as part of the benchmark step until it is done
  assert.equal(reportedState('rolling_back'), 'benchmarking');
  assert.equal(reportedState('rolled_back'), 'rolled_back');
});

test('the transition table is exactly the documented one: every (phase, event) pair checked', () => {
  let legal = 0;
  for (const from of PHASES) {
    for (const ev of EVENTS) {
      const key = `${from}/${ev}`;
      if (key in LEGAL) {
        assert.equal(nextPhase(from, ev), LEGAL[key], key);
        legal++;
      } else {
        assert.equal(codeOf(() => nextPhase(from, ev)), 'ILLEGAL_TRANSITION', key);
      }
    }
  }
  assert.equal(legal, Object.keys(LEGAL).length);
});

test('illegal transitions throw ILLEGAL_TRANSITION: skipping steps, going back, events out of order', () => {
  const cases: [Phase, UpdateEvent][] = [
    ['downloading', 'verified'], ['downloading', 'committed'], ['verifying', 'downloaded'], ['installing', 'accepted'],
    ['benchmarking', 'installed'], ['committing', 'accepted'], ['rolling_back', 'committed'], ['downloading', 'rolled_back'],
  ];
  for (const [from, ev] of cases) {
    assert.throws(() => nextPhase(from, ev), (err: unknown) => (err as { code?: string }).code === 'ILLEGAL_TRANSITION' && err instanceof Error, `${from}/${ev}`);
  }
});

test('terminal phases (done, failed, rolled_back) have no exits, not even on error', () => {
  for (const p of ['done', 'failed', 'rolled_back'] as Phase[]) {
    assert.equal(isTerminal(p), true, p);
    for (const ev of EVENTS) assert.equal(codeOf(() => nextPhase(p, ev)), 'ILLEGAL_TRANSITION', `${p}/${ev}`);
  }
  for (const p of PHASES.filter((x) => !['done', 'failed', 'rolled_back'].includes(x))) {
    assert.equal(isTerminal(p), false, p);
    // every non-terminal phase can leave on error: no phase can get stuck on a failure
    assert.doesNotThrow(() => nextPhase(p, 'error'), p);
  }
});

test('every path from downloading reaches a terminal phase within 7 steps', () => {
  const reached = new Set<Phase>();
  const walk = (p: Phase, depth: number) => {
    assert.ok(depth <= 7, `path too long at ${p}`);
    if (isTerminal(p)) { reached.add(p); return; }
    for (const ev of EVENTS) {
      let next: Phase;
      try { next = nextPhase(p, ev); } catch { continue; }
      walk(next, depth + 1);
    }
  };
  walk('downloading', 0);
  assert.deepEqual([...reached].sort(), ['done', 'failed', 'rolled_back']);
});

test('reportedState maps every phase onto a protocol device state; terminal phases onto terminal states', () => {
  const expected: Record<Phase, string> = {
    downloading: 'downloading', verifying: 'verifying', installing: 'installing', benchmarking: 'benchmarking',
    committing: 'benchmarking', rolling_back: 'benchmarking', done: 'active', failed: 'failed', rolled_back: 'rolled_back',
  };
  for (const p of PHASES) {
    const s = reportedState(p);
    assert.equal(s, expected[p], p);
    assert.ok((DEVICE_STATES as readonly string[]).includes(s), `${s} is a protocol state`);
    assert.equal(TERMINAL_DEVICE_STATES.includes(s), isTerminal(p), `${p}: terminal on both sides`);
  }
});

test('resumeAction: non-terminal phases are redone after a restart, terminal ones only re-reported', () => {
  for (const p of PHASES) assert.equal(resumeAction(p), isTerminal(p) ? 'report-only' : 'redo-phase', p);
  assert.equal(resumeAction('installing'), 'redo-phase');
  assert.equal(resumeAction('rolling_back'), 'redo-phase');
  assert.equal(resumeAction('done'), 'report-only');
});

// --- benchmark statistics ---

test('percentile uses nearest rank over sorted samples', () => {
  const s = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  assert.equal(percentile(s, 50), 5);
  assert.equal(percentile(s, 90), 9);
  assert.equal(percentile(s, 95), 10);
  assert.equal(percentile(s, 99), 10);
  assert.equal(percentile(s, 100), 10);
  assert.equal(percentile(s, 10), 1);
  assert.equal(percentile(s, 11), 2);
  assert.equal(percentile(s, 0), 1);
  const twenty = Array.from({ length: 20 }, (_, i) => (i + 1) * 10);
  assert.equal(percentile(twenty, 95), 190); // rank ceil(19) = 19
  assert.equal(percentile(twenty, 96), 200); // rank ceil(19.2) = 20
  assert.equal(percentile([42], 1), 42);
  assert.equal(percentile([42], 99), 42);
  assert.ok(Number.isNaN(percentile([], 50)));
});

test('latencySummary sorts its input (without mutating it) and rounds to microseconds', () => {
  const samples = [5.12345, 1.00049, 3, 2, 4, 10, 9, 8, 7, 6];
  const copy = [...samples];
  const s = latencySummary(samples);
  assert.deepEqual(samples, copy);
  assert.deepEqual(s, { p50: 5.123, p90: 9, p95: 10, p99: 10 });
  assert.equal(latencySummary([1.00049]).p50, 1);
  assert.ok(s.p50 <= s.p90 && s.p90 <= s.p95 && s.p95 <= s.p99);
});

const f32 = (dims: number[], values: number[]): TensorValue => ({ dtype: 'float32', dims, data: Float32Array.from(values) });

test('maxAbsDiff: largest elementwise difference; zero for identical tensors', () => {
  assert.equal(maxAbsDiff(f32([2, 2], [1, 2, 3, 4]), f32([2, 2], [1, 2, 3, 4])), 0);
  assert.equal(maxAbsDiff(f32([3], [1, -2, 3]), f32([3], [1.5, 2, 2.75])), 4);
  assert.equal(maxAbsDiff(f32([1], [0]), f32([1], [-0])), 0);
  assert.equal(maxAbsDiff(f32([0], []), f32([0], [])), 0);
  const i64: TensorValue = { dtype: 'int64', dims: [2], data: BigInt64Array.from([5n, -7n]) };
  const i64b: TensorValue = { dtype: 'int64', dims: [2], data: BigInt64Array.from([5n, 3n]) };
  assert.equal(maxAbsDiff(i64, i64b), 10);
});

test('maxAbsDiff: a shape mismatch is Infinity, even when the element count matches', () => {
  assert.equal(maxAbsDiff(f32([2, 3], [1, 2, 3, 4, 5, 6]), f32([3, 2], [1, 2, 3, 4, 5, 6])), Infinity);
  assert.equal(maxAbsDiff(f32([6], [1, 2, 3, 4, 5, 6]), f32([1, 6], [1, 2, 3, 4, 5, 6])), Infinity);
  assert.equal(maxAbsDiff(f32([2], [1, 2]), f32([3], [1, 2, 3])), Infinity);
});

test('maxAbsDiff: NaN anywhere is Infinity (a NaN output must never pass a tolerance check)', () => {
  assert.equal(maxAbsDiff(f32([3], [1, NaN, 3]), f32([3], [1, 2, 3])), Infinity);
  assert.equal(maxAbsDiff(f32([3], [1, 2, 3]), f32([3], [1, 2, NaN])), Infinity);
  assert.equal(maxAbsDiff(f32([1], [NaN]), f32([1], [NaN])), Infinity);
  // NaN after a large difference still wins
  assert.equal(maxAbsDiff(f32([2], [100, NaN]), f32([2], [0, 0])), Infinity);
  assert.ok(!(maxAbsDiff(f32([1], [NaN]), f32([1], [0])) <= 1e-3));
});

test('decodeGolden turns encoded golden samples back into typed tensors', () => {
  const input = Float32Array.from([0.5, -1.25, 3]);
  const output = Float32Array.from([0.1, 0.9]);
  const golden = { samples: [{ inputs: { x: encodeTensor('float32', [1, 3], input) }, outputs: { y: encodeTensor('float32', [1, 2], output) } }] };
  const [s] = decodeGolden(JSON.parse(JSON.stringify(golden)));
  assert.ok(s);
  assert.deepEqual(s.inputs.x!.dims, [1, 3]);
  assert.deepEqual(Array.from(s.inputs.x!.data as Float32Array), Array.from(input));
  assert.equal(maxAbsDiff(s.outputs.y!, { dtype: 'float32', dims: [1, 2], data: output }), 0);
});
