import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lastFireAtOrBefore, parseInstant, schedulePhase, windowState } from '@edgepack/orchestrator/core/rollout-schedule.js';
import { backoffMs, isRetryable, retryVerdict } from '@edgepack/orchestrator/core/rollout-retry.js';

const at = (iso: string) => Date.parse(iso);
const berlin = (cron: string, durationMin: number) => ({ cron, durationMin, tz: 'Europe/Berlin' });

test('a window is open from a fire time for durationMin, in its own time zone', () => {
  const w = [berlin('0 2 * * *', 120)]; // 02:00–04:00 Berlin
  // summer (CEST, UTC+2): 02:00 Berlin = 00:00 UTC
  assert.equal(windowState(w, at('2026-06-10T00:00:00Z')).open, true, 'exactly at the fire time');
  assert.equal(windowState(w, at('2026-06-10T01:59:59Z')).open, true);
  assert.equal(windowState(w, at('2026-06-10T02:00:00Z')).open, false, 'closed after durationMin');
  assert.equal(windowState(w, at('2026-06-09T23:59:59Z')).open, false, 'not before');
  // winter (CET, UTC+1): 02:00 Berlin = 01:00 UTC
  assert.equal(windowState(w, at('2026-01-10T00:30:00Z')).open, false);
  assert.equal(windowState(w, at('2026-01-10T01:30:00Z')).open, true);
  const s = windowState(w, at('2026-01-10T01:30:00Z'));
  assert.ok(s.open && s.openedAt === at('2026-01-10T01:00:00Z'));
});

test('DST, spring forward (Berlin, last Sunday of March): the window moves with the wall clock; elapsed minutes count', () => {
  // 22:00 Berlin is 21:00 UTC on Saturday 28 March (CET) and 20:00 UTC on Sunday 29 March (CEST)
  const evening = [berlin('0 22 * * *', 60)];
  assert.equal(windowState(evening, at('2026-03-28T21:30:00Z')).open, true);
  assert.equal(windowState(evening, at('2026-03-28T20:30:00Z')).open, false);
  assert.equal(windowState(evening, at('2026-03-29T20:30:00Z')).open, true);
  assert.equal(windowState(evening, at('2026-03-29T21:30:00Z')).open, false);
  // 01:00 + 180 min on the night of the change: 00:00 UTC to 03:00 UTC (= 05:00 CEST), elapsed time
  const night = [berlin('0 1 * * *', 180)];
  assert.equal(lastFireAtOrBefore(night[0]!, at('2026-03-29T02:59:00Z')), at('2026-03-29T00:00:00Z'));
  assert.equal(windowState(night, at('2026-03-29T02:59:00Z')).open, true);
  assert.equal(windowState(night, at('2026-03-29T03:00:00Z')).open, false);
  // 02:30 does not exist that night: no fire, the window stays closed until the next day
  const skipped = [berlin('30 2 * * *', 60)];
  assert.equal(lastFireAtOrBefore(skipped[0]!, at('2026-03-29T01:00:00Z')), at('2026-03-28T01:30:00Z'));
  assert.equal(windowState(skipped, at('2026-03-29T00:45:00Z')).open, false);
  assert.equal(windowState(skipped, at('2026-03-30T00:45:00Z')).open, true, '02:30 CEST on Monday = 00:30 UTC');
});

test('DST, fall back (Berlin, last Sunday of October): a time that happens twice fires twice', () => {
  const w = [berlin('30 2 * * *', 20)];
  // 02:30 CEST = 00:30 UTC, then 02:30 CET = 01:30 UTC
  assert.equal(windowState(w, at('2026-10-25T00:40:00Z')).open, true);
  assert.equal(windowState(w, at('2026-10-25T01:00:00Z')).open, false);
  assert.equal(windowState(w, at('2026-10-25T01:40:00Z')).open, true);
  assert.equal(windowState(w, at('2026-10-25T02:00:00Z')).open, false);
  // the day after, only 01:30 UTC (CET)
  assert.equal(windowState(w, at('2026-10-26T00:40:00Z')).open, false);
  assert.equal(windowState(w, at('2026-10-26T01:40:00Z')).open, true);
});

test('several windows: any open one opens; no windows: always open', () => {
  const w = [berlin('0 2 * * *', 60), { cron: '0 9 * * 1-5', durationMin: 30, tz: 'America/New_York' }];
  // Monday 8 June 2026, 09:10 New York (EDT) = 13:10 UTC
  const s = windowState(w, at('2026-06-08T13:10:00Z'));
  assert.ok(s.open && s.window === 1);
  assert.equal(windowState(w, at('2026-06-06T13:10:00Z')).open, false, 'Saturday');
  assert.equal(windowState([], at('2026-06-06T13:10:00Z')).open, true);
});

test('startAt and endAt', () => {
  const s = { startAt: '2026-06-02T00:00:00+02:00', endAt: '2026-06-03T00:00:00Z', endBehavior: 'pause' as const, windows: [] };
  assert.equal(schedulePhase(s, at('2026-06-01T21:59:59Z')), 'before-start');
  assert.equal(schedulePhase(s, at('2026-06-01T22:00:00Z')), 'running');
  assert.equal(schedulePhase(s, at('2026-06-02T23:59:59Z')), 'running');
  assert.equal(schedulePhase(s, at('2026-06-03T00:00:00Z')), 'ended');
  assert.equal(schedulePhase({ ...s, startAt: null, endAt: null }, 0), 'running');
  assert.equal(parseInstant('2026-06-02T00:00:00'), null, 'no zone');
  assert.equal(parseInstant('2026-02-29T00:00:00Z'), null, '2026 is no leap year');
  assert.equal(parseInstant('2028-02-29T00:00:00Z'), at('2028-02-29T00:00:00Z'));
});

test('retry rules: only codes in retryOn, never deterministic refusals, with doubling backoff and a cap', () => {
  const p = { maxAttempts: 3, backoffSec: 30, maxBackoffSec: 100, retryOn: ['DOWNLOAD_STALLED', 'GOLDEN_MISMATCH'] };
  assert.equal(isRetryable(p, 'DOWNLOAD_STALLED'), true);
  assert.equal(isRetryable(p, 'GOLDEN_MISMATCH'), false, 'a deterministic refusal even if listed');
  assert.equal(isRetryable(p, 'BENCHMARK_CRASHED'), false);
  assert.equal(isRetryable(p, null), false);
  assert.deepEqual([1, 2, 3, 4].map((n) => backoffMs(p, n)), [30_000, 60_000, 100_000, 100_000]);
  assert.deepEqual(retryVerdict(p, 'DOWNLOAD_STALLED', 1), { retry: true, attempt: 2, delayMs: 30_000 });
  assert.deepEqual(retryVerdict(p, 'DOWNLOAD_STALLED', 3), { retry: false, why: 'attempts-exhausted' });
  assert.deepEqual(retryVerdict(p, 'SIGNATURE_INVALID', 1), { retry: false, why: 'not-retryable' });
});
