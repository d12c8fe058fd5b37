// The bookkeeping behind both doors' failed-authentication limits, driven with a fake clock, and
// the rate-limited log lines that report them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FailureThrottle } from '@edgepack/orchestrator/core/failure-throttle.js';
import { LogDigest } from '@edgepack/orchestrator/log-digest.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';

const opts = { maxFailures: 3, windowMs: 60_000, blockMs: 10_000, maxBlockMs: 80_000 };

test('a key is blocked at the limit, for blockMs, doubling on each block that follows, up to maxBlockMs', () => {
  const t = new FailureThrottle(opts);
  let now = 0;
  assert.deepEqual(t.fail('ip', now), { blocked: false });
  assert.deepEqual(t.fail('ip', now), { blocked: false });
  assert.deepEqual(t.fail('ip', now), { blocked: true, retryAfterMs: 10_000 });
  assert.deepEqual(t.check('ip', now + 9_999), { blocked: true, retryAfterMs: 1 });
  assert.deepEqual(t.check('ip', now + 10_000), { blocked: false });
  assert.deepEqual(t.check('other', now), { blocked: false }, 'keys are apart');
  // Each time the block is waited out and the key fails again, the block is twice as long.
  for (const ms of [20_000, 40_000, 80_000, 80_000]) {
    const state = t.check('ip', now);
    if (state.blocked) now += state.retryAfterMs;
    t.fail('ip', now);
    t.fail('ip', now);
    assert.deepEqual(t.fail('ip', now), { blocked: true, retryAfterMs: ms });
  }
});

test('failures outside the window do not add up; a quiet spell as long as the longest block forgives earlier blocks', () => {
  const t = new FailureThrottle(opts);
  t.fail('k', 0);
  t.fail('k', 1000);
  assert.deepEqual(t.fail('k', 61_000), { blocked: false }, 'the window started over');
  t.fail('k', 61_000);
  assert.equal(t.fail('k', 61_000).blocked, true);
  // Blocked until 71 s. Quiet for longer than maxBlockMs after that: the next block is short again.
  t.fail('k', 71_000 + 80_001);
  t.fail('k', 71_000 + 80_001);
  assert.deepEqual(t.fail('k', 71_000 + 80_001), { blocked: true, retryAfterMs: 10_000 });
});

test('a success forgets the key; memory is bounded by maxKeys, dropping the least recently touched', () => {
  const t = new FailureThrottle({ ...opts, maxKeys: 3 });
  for (const k of ['a', 'a', 'a']) t.fail(k, 0);
  assert.equal(t.check('a', 0).blocked, true);
  t.succeed('a');
  assert.equal(t.check('a', 0).blocked, false);
  for (const k of ['b', 'c', 'd']) t.fail(k, 0);
  t.fail('b', 0); // touched: now the newest
  t.fail('e', 0);
  assert.equal(t.size, 3);
  t.fail('b', 0);
  assert.equal(t.check('b', 0).blocked, true, 'b kept its count');
});

test('LogDigest: the first event of a kind is logged at once, the rest of the interval as one summary with counts per source, a quiet kind is forgotten', async () => {
  const lines: Record<string, any>[] = [];
  const d = new LogDigest(createLogger('info', { write: (l: string) => { lines.push(JSON.parse(l)); } }), 60_000);
  d.note('k', 'authentication failed', { kind: 'x' }, '10.0.0.1');
  for (let i = 0; i < 50; i++) d.note('k', 'authentication failed', { kind: 'x' }, i % 5 === 0 ? '10.0.0.2' : '10.0.0.1');
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.source, '10.0.0.1');
  d.flush();
  assert.equal(lines.length, 2);
  assert.equal(lines[1]!.repeated, 50);
  assert.deepEqual(lines[1]!.top, [{ source: '10.0.0.1', count: 40 }, { source: '10.0.0.2', count: 10 }]);
  assert.match(lines[1]!.msg, /^authentication failed \(50 more in the last 60 s\)$/);
  // A sustained flood: only summaries from here on.
  d.note('k', 'authentication failed', { kind: 'x' }, '10.0.0.1');
  d.flush();
  assert.equal(lines.length, 3);
  assert.equal(lines[2]!.repeated, 1);
  // Quiet for an interval: forgotten, so the next one is logged at once again.
  d.flush();
  assert.equal(lines.length, 3);
  d.note('k', 'authentication failed', { kind: 'x' }, '10.0.0.3');
  assert.equal(lines.length, 4);
  d.close();
});
