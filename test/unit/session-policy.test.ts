// The MQTT session max age (issue 12, finding 3: a session must not outlive its credential by more
// than the policy allows): the pure deadline, and the broker's sweep over real Aedes clients'
// stand-ins, on a fake clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Client } from 'aedes';
import { sessionDeadline, sessionSweepEveryMs } from '@edgepack/orchestrator/core/session-policy.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { SessionExpiry } from '@edgepack/orchestrator/mqtt/session-expiry.js';

test('a session ends its max age after the credential was signed, at most a tenth earlier, the same way every time', () => {
  const t = Date.parse('2026-06-01T12:00:00.000Z');
  const max = 300_000;
  const deadlines = Array.from({ length: 200 }, (_, i) => sessionDeadline(t, max, `dev_${i}`));
  for (const d of deadlines) assert.ok(d <= t + max && d > t + max * 0.9, String(d - t));
  assert.ok(new Set(deadlines).size > 150, 'spread out, so a fleet that connected together is not cut off together');
  assert.equal(sessionDeadline(t, max, 'dev_7'), sessionDeadline(t, max, 'dev_7'));
  // A later credential, a later deadline: the reconnect buys a fresh period.
  assert.ok(sessionDeadline(t + max, max, 'dev_7') > sessionDeadline(t, max, 'dev_7'));
  assert.equal(sessionSweepEveryMs(3_600_000), 30_000);
  assert.equal(sessionSweepEveryMs(2_000), 500);
  assert.equal(sessionSweepEveryMs(100), 250);
});

test('the sweep closes exactly the sessions past their deadline, once; max age 0 tracks nothing', () => {
  const clock = { ms: Date.parse('2026-06-01T12:00:00.000Z') };
  const closed: string[] = [];
  const client = (id: string) => ({ id, close: () => { closed.push(id); } }) as unknown as Client;
  const expiry = new SessionExpiry({ maxAgeMs: 60_000, now: () => new Date(clock.ms), log: createLogger('silent') });
  const old = client('dev_old');
  const fresh = client('dev_fresh');
  const gone = client('dev_gone');
  expiry.track(old, clock.ms - 30_000);
  expiry.track(fresh, clock.ms);
  expiry.track(gone, clock.ms - 120_000);
  expiry.forget(gone);
  assert.equal(expiry.sweep(), 0, 'nobody is past a deadline yet (the earliest is 24 s away)');
  clock.ms += 30_001;
  assert.equal(expiry.sweep(), 1);
  assert.deepEqual(closed, ['dev_old']);
  assert.equal(expiry.sweep(), 0, 'closed once');
  clock.ms += 30_000;
  assert.equal(expiry.sweep(), 1);
  assert.deepEqual(closed, ['dev_old', 'dev_fresh']);

  const off = new SessionExpiry({ maxAgeMs: 0, now: () => new Date(clock.ms), log: createLogger('silent') });
  off.track(client('dev_x'), 0);
  clock.ms += 10 * 86_400_000;
  assert.equal(off.sweep(), 0);
});
