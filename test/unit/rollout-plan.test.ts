import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PlanNormalizer, fieldName, type PlanResult } from '@edgepack/orchestrator/core/rollout-plan-normalize.js';
import { DEFAULT_ROLLOUT } from '@edgepack/orchestrator/core/rollout-defaults.js';
import { NEVER_RETRY_CODES } from '@edgepack/orchestrator/core/rollout-retry.js';

const T0 = new Date('2026-06-01T00:00:00Z');
const normalizer = new PlanNormalizer();
const ctx = { modelId: 'mdl_1', targetProfiles: ['pi4', 'pi5'], now: T0 };
const norm = (body: unknown, c = ctx): PlanResult => normalizer.normalize(body, c);
const base = { buildId: 'bld_1', target: { tags: ['lab'] } };

function ok(body: unknown, c = ctx) {
  const r = norm(body, c);
  assert.ok(r.ok, r.ok ? '' : r.message);
  return r.plan;
}

function fails(body: unknown, field: string, c = ctx): string {
  const r = norm(body, c);
  assert.equal(r.ok, false, `expected ${field} to be refused`);
  if (r.ok) return '';
  assert.equal(r.code, 'ROLLOUT_PLAN_INVALID');
  assert.equal(r.field, field, r.message);
  assert.ok(r.message.startsWith(field), r.message);
  return r.message;
}

test('only buildId and target are required; every default is applied', () => {
  const p = ok(base);
  assert.equal(p.buildId, 'bld_1');
  assert.deepEqual(p.target, { tags: ['lab'] });
  assert.equal(p.stream, 'mdl_1', 'stream defaults to the build\'s model id');
  assert.equal(p.membership, 'snapshot');
  assert.equal(p.onBreach, 'pause');
  assert.equal(p.supersede, false);
  assert.deepEqual(p.gate, { minExecuted: null, minSuccessRatio: 0.95, maxFailureRatio: 0.05, maxFailures: null, maxP95Regression: 0.10, maxGoldenFailures: 0, maxLostRatio: 0.2 });
  assert.deepEqual(p.rate, { maxPerMinute: 1000, maxInFlight: 200 });
  assert.deepEqual(p.timeouts, { ackSec: 120, inProgressSec: 1800, quorumSec: 3600 });
  assert.deepEqual(p.retry, { maxAttempts: 3, backoffSec: 30, maxBackoffSec: 900, retryOn: ['DOWNLOAD_STALLED', 'DOWNLOAD_TOO_SLOW', 'ACK_TIMEOUT', 'BENCHMARK_TIMEOUT', 'AGENT_STOPPING'] });
  assert.deepEqual(p.schedule, { startAt: null, endAt: null, endBehavior: 'pause', windows: [] });
});

test('default waves: canary of max(3, one per targeted profile), 10%, 50%, rest', () => {
  const p = ok(base);
  assert.deepEqual(p.waves.map((w) => [w.name, w.size]), [['canary', { count: 3 }], ['10%', { percent: 10 }], ['50%', { percent: 50 }], ['rest', { percent: 100 }]]);
  for (const w of p.waves) {
    assert.equal(w.bakeSec, DEFAULT_ROLLOUT.bakeSec);
    assert.equal(w.requireApproval, false);
    assert.deepEqual(w.gate, p.gate);
  }
  const five = ok(base, { ...ctx, targetProfiles: ['a', 'b', 'c', 'd', 'e'] });
  assert.deepEqual(five.waves[0]!.size, { count: 5 });
  const none = ok(base, { ...ctx, targetProfiles: [] });
  assert.deepEqual(none.waves[0]!.size, { count: 3 });
});

test('a wave gate overrides the rollout gate field by field; the rollout gate overrides the defaults', () => {
  const p = ok({
    ...base, gate: { maxFailureRatio: 0.1, minExecuted: 4 },
    waves: [{ name: 'canary', size: { count: 2 }, gate: { maxGoldenFailures: 1 }, bakeSec: 600, requireApproval: true }, { size: { percent: 100 } }],
  });
  assert.deepEqual(p.waves[0]!.gate, { ...p.gate, maxGoldenFailures: 1 });
  assert.equal(p.waves[0]!.gate.maxFailureRatio, 0.1);
  assert.equal(p.waves[0]!.gate.minExecuted, 4);
  assert.equal(p.waves[0]!.bakeSec, 600);
  assert.equal(p.waves[0]!.requireApproval, true);
  assert.equal(p.waves[1]!.name, 'wave-2');
  assert.equal(p.waves[1]!.gate.maxGoldenFailures, 0);
});

test('invalid fields are refused, naming the field as the operator wrote it', () => {
  fails({ target: {} }, 'buildId');
  fails({ buildId: 'b' }, 'target');
  fails({ ...base, waves: [{ size: { count: 1 } }, { size: { percent: 150 } }] }, 'waves[1].size.percent');
  fails({ ...base, waves: [{ size: { percent: 0 } }] }, 'waves[0].size.percent');
  fails({ ...base, waves: [{ size: { count: 0 } }] }, 'waves[0].size.count');
  fails({ ...base, waves: [{ size: {} }] }, 'waves[0].size');
  fails({ ...base, waves: [{ size: { count: 1, percent: 5 } }] }, 'waves[0].size');
  fails({ ...base, waves: [] }, 'waves');
  fails({ ...base, gate: { maxFailureRatio: 1.5 } }, 'gate.maxFailureRatio');
  fails({ ...base, waves: [{ size: { count: 1 }, gate: { minSuccessRatio: -0.1 } }] }, 'waves[0].gate.minSuccessRatio');
  fails({ ...base, rate: { maxPerMinute: 0 } }, 'rate.maxPerMinute');
  fails({ ...base, timeouts: { ackSec: 1.5 } }, 'timeouts.ackSec');
  fails({ ...base, retry: { maxAttempts: 0 } }, 'retry.maxAttempts');
  fails({ ...base, membership: 'sometimes' }, 'membership');
  fails({ ...base, onBreach: 'panic' }, 'onBreach');
  fails({ ...base, target: { tags: [] } }, 'target.tags');
});

test('unknown fields are refused everywhere, not ignored', () => {
  fails({ ...base, maxFailureRate: 0.1 }, 'maxFailureRate');
  fails({ ...base, gate: { maxFailureRate: 0.1 } }, 'gate.maxFailureRate');
  fails({ ...base, waves: [{ size: { count: 1 }, bake: 10 }] }, 'waves[0].bake');
  fails({ ...base, target: { tag: ['x'] } }, 'target.tag');
  fails({ ...base, schedule: { windows: [{ cron: '0 2 * * *', durationMin: 60, tz: 'UTC', extra: 1 }] } }, 'schedule.windows[0].extra');
  fails({ ...base, rate: { perMinute: 1 } }, 'rate.perMinute');
});

test('wave names must be unique; waves before the last may not take more than 100%', () => {
  fails({ ...base, waves: [{ name: 'a', size: { count: 1 } }, { name: 'a', size: { percent: 100 } }] }, 'waves[1].name');
  fails({ ...base, waves: [{ size: { percent: 60 } }, { size: { percent: 50 } }, { size: { percent: 100 } }] }, 'waves[1].size.percent');
  // the last wave takes the remainder whatever its size says
  const p = ok({ ...base, waves: [{ size: { percent: 60 } }, { size: { percent: 40 } }, { size: { count: 1 } }] });
  assert.equal(p.waves.length, 3);
});

test('deterministic refusals can never be listed in retryOn', () => {
  for (const code of NEVER_RETRY_CODES) {
    const msg = fails({ ...base, retry: { retryOn: ['DOWNLOAD_STALLED', code] } }, 'retry.retryOn[1]');
    assert.ok(msg.includes(code));
  }
  fails({ ...base, retry: { retryOn: ['lower case'] } }, 'retry.retryOn[0]');
  assert.deepEqual(ok({ ...base, retry: { retryOn: [] } }).retry.retryOn, []);
  assert.deepEqual(ok({ ...base, retry: { retryOn: ['DOWNLOAD_STALLED'], backoffSec: 5, maxAttempts: 5 } }).retry, { retryOn: ['DOWNLOAD_STALLED'], backoffSec: 5, maxAttempts: 5, maxBackoffSec: 900 });
});

test('schedule: instants need a zone and must exist; endAt after startAt and in the future', () => {
  fails({ ...base, schedule: { startAt: '2026-06-02T10:00:00' } }, 'schedule.startAt');
  fails({ ...base, schedule: { startAt: '2026-02-30T10:00:00Z' } }, 'schedule.startAt');
  fails({ ...base, schedule: { startAt: 'tomorrow' } }, 'schedule.startAt');
  fails({ ...base, schedule: { endAt: '2026-05-31T00:00:00Z' } }, 'schedule.endAt');
  fails({ ...base, schedule: { startAt: '2026-06-03T00:00:00Z', endAt: '2026-06-02T00:00:00+02:00' } }, 'schedule.endAt');
  fails({ ...base, schedule: { endBehavior: 'stop' } }, 'schedule.endBehavior');
  const p = ok({ ...base, schedule: { startAt: '2026-06-02T10:00:00+02:00', endAt: '2026-06-09T00:00:00Z', endBehavior: 'cancel' } });
  assert.deepEqual(p.schedule, { startAt: '2026-06-02T10:00:00+02:00', endAt: '2026-06-09T00:00:00Z', endBehavior: 'cancel', windows: [] });
});

test('windows: cron and time zone are checked by the parser and by Intl', () => {
  const w = (over: Record<string, unknown>) => ({ ...base, schedule: { windows: [{ cron: '0 2 * * *', durationMin: 120, tz: 'Europe/Berlin' }, { cron: '0 22 * * 1-5', durationMin: 60, tz: 'America/New_York', ...over }] } });
  assert.equal(ok(w({})).schedule.windows.length, 2);
  fails(w({ cron: '61 2 * * *' }), 'schedule.windows[1].cron');
  fails(w({ cron: 'every night' }), 'schedule.windows[1].cron');
  fails(w({ tz: 'Mars/Olympus' }), 'schedule.windows[1].tz');
  fails(w({ durationMin: 0 }), 'schedule.windows[1].durationMin');
  fails({ ...base, schedule: { windows: [{ cron: '0 2 * * *', durationMin: 60 }] } }, 'schedule.windows[0].tz');
});

test('target device ids are deduplicated; stream can be named', () => {
  const p = ok({ buildId: 'b', target: { deviceIds: ['a', 'b', 'a'] }, stream: 'vision' });
  assert.deepEqual(p.target.deviceIds, ['a', 'b']);
  assert.equal(p.stream, 'vision');
});

test('fieldName turns JSON pointers into the operator\'s notation', () => {
  assert.equal(fieldName('/waves/1/size/percent'), 'waves[1].size.percent');
  assert.equal(fieldName('/schedule/windows/0/tz'), 'schedule.windows[0].tz');
  assert.equal(fieldName('/a~1b/c~0d'), 'a/b.c~d');
  assert.equal(fieldName(''), '(body)');
});
