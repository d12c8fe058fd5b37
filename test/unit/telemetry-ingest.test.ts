// The orchestrator's telemetry ingest over a real SQLite file: batched transactions, acks only
// after the commit, dedupe by (device, seq) through redeliveries and merges, gaps recorded once,
// hostile telemetry refused with a notice, unknown devices dropped, a failed commit acking
// nothing. Windows are made with protocol's histogram helpers, as a device makes them.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { TELEMETRY_BUCKET_COUNT, type TelemetryGap } from '@edgepack/protocol';
import { telemetryRig, type Rig } from '../support/telemetry-rig.js';
import { latencies, makeBatch, makeWindow, mergeAll, windowRun } from '../support/telemetry-windows.js';

const T0 = Date.parse('2026-06-01T11:00:00.000Z');
const rigs: Rig[] = [];
afterEach(async () => { while (rigs.length) await rigs.pop()!.close(); });
async function rig(opts: Parameters<typeof telemetryRig>[0] = {}): Promise<Rig> {
  const r = await telemetryRig(opts);
  rigs.push(r);
  r.addDevice('dev_a');
  r.addDevice('dev_b');
  return r;
}

/** ok requests the health API counts for a device over the whole test period. */
function okCount(r: Rig, deviceId: string): number {
  return r.health.device(deviceId, { from: new Date(T0 - 24 * 3600_000).toISOString(), to: new Date(r.clock.ms).toISOString(), step: 600 }).summary.requests.ok;
}

test('queued batches are committed in one transaction and each is acked only after that commit', async () => {
  const r = await rig({ maxDelayMs: 30 });
  const runs = [0, 1, 2].map((k) => windowRun('dev_a', 1 + k * 10, 10, { startMs: T0 + k * 600_000, latenciesOf: (i) => latencies(5 + i, k * 100 + i) }));
  for (const w of runs) await r.send('dev_a', w, [], false);
  assert.equal(r.rawRows(), 0, 'nothing is written before the flush');
  assert.equal(r.acks.length, 0, 'nothing is acked before the commit');
  await r.ingest.idle();
  assert.equal(r.ingest.stats.transactions, 1);
  assert.deepEqual(r.acks.map((a) => a.ack.acked), [[[1, 10]], [[11, 20]], [[21, 30]]]);
  // Each ack was handed over when a second connection already saw every row of the commit.
  assert.deepEqual(r.acks.map((a) => a.committedRows), [30, 30, 30]);
  assert.deepEqual(r.acks.map((a) => a.ack.refused), [[], [], []]);
  const expected = runs.flat().reduce((n, w) => n + w.requests.ok, 0);
  assert.equal(okCount(r, 'dev_a'), expected);
});

test('a redelivered batch, and the same batch twice in one flush, are acked and counted once', async () => {
  const r = await rig();
  const w = windowRun('dev_a', 1, 5, { startMs: T0, latenciesOf: (i) => latencies(10 + i, i) });
  const n = w.reduce((s, x) => s + x.requests.ok, 0);
  await r.send('dev_a', w);
  await r.send('dev_a', w); // the ack was lost: the device sends it again
  await r.send('dev_a', [...w.slice(2), ...windowRun('dev_a', 6, 2, { startMs: T0 + 5 * 60_000, latencies: [1, 2, 3] })], [], false);
  await r.send('dev_a', windowRun('dev_a', 6, 2, { startMs: T0 + 5 * 60_000, latencies: [1, 2, 3] }), [], false);
  await r.ingest.idle();
  assert.equal(r.rawRows(), 7);
  assert.equal(okCount(r, 'dev_a'), n + 6);
  assert.deepEqual(r.acks.map((a) => a.ack.acked), [[[1, 5]], [[1, 5]], [[3, 7]], [[6, 7]]]);
  // The same seqs from another device are that device's own.
  await r.send('dev_b', w.map((x) => ({ ...x, deviceId: 'dev_b' })));
  assert.equal(okCount(r, 'dev_b'), n);
});

test('a merged window replaces the parts stored before, also after they were rolled up', async () => {
  const r = await rig();
  const parts = windowRun('dev_a', 1, 5, { startMs: T0, latenciesOf: (i) => latencies(20 + i, 40 + i) });
  await r.send('dev_a', parts.slice(0, 3)); // 1-3 stored, the ack lost
  assert.equal(await r.jobs.rollUp(), 3);
  const merged = mergeAll(parts); // the spool merged 1-5 while short of room
  await r.send('dev_a', [merged]);
  assert.deepEqual(r.acks.at(-1)!.ack.acked, [[1, 5]]);
  assert.equal(r.rawRows(), 1);
  const total = parts.reduce((s, x) => s + x.requests.ok, 0);
  assert.equal(okCount(r, 'dev_a'), total);
  await r.jobs.rollUp();
  // The 10-minute roll-up holds the merged window once and none of the parts it replaced.
  const tenMin = r.health.device('dev_a', { from: new Date(T0).toISOString(), to: new Date(T0 + 3600_000).toISOString(), step: 600 });
  assert.equal(tenMin.source, '10m');
  assert.equal(tenMin.summary.requests.ok, total);
  assert.equal(tenMin.summary.windows, 5);
  // A merged window that overlaps a stored one without containing it is a conflict, refused.
  await r.send('dev_a', [mergeAll(windowRun('dev_a', 5, 2, { startMs: T0 + 4 * 60_000, latencies: [1] }))]);
  assert.equal(r.acks.at(-1)!.ack.refused[0]?.code, 'TELEMETRY_SEQ_CONFLICT');
  assert.equal(okCount(r, 'dev_a'), total);
});

test('hostile telemetry is refused with a notice; refused entries that name their seqs are refused in the ack, the rest is stored', async () => {
  const r = await rig();
  const raw = (payload: string | object) => { r.ingest.receive('dev_a', Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload))); };
  raw('{"v":1, "windows": [');
  raw(makeBatch('dev_b', [makeWindow('dev_b', 1, { startMs: T0, latencies: [1] })], [], r.clock.ms)); // on dev_a's topic
  raw({ ...makeBatch('dev_a', [], [], r.clock.ms), windows: new Array(501).fill({}) });
  await r.ingest.idle();
  assert.deepEqual(r.notices.map((n) => n.code), ['MESSAGE_NOT_JSON', 'TELEMETRY_WRONG_DEVICE', 'MESSAGE_INVALID']);
  assert.equal(r.acks.length, 0, 'a refused batch has no seqs to ack');
  r.notices.length = 0;

  const good = makeWindow('dev_a', 1, { startMs: T0, latencies: [1, 2, 3] });
  const shortHistogram = makeWindow('dev_a', 2, { startMs: T0 + 60_000, latencies: [1] });
  shortHistogram.latencyMs = { ...shortHistogram.latencyMs, counts: shortHistogram.latencyMs.counts.slice(0, TELEMETRY_BUCKET_COUNT - 1) };
  const lyingSum = makeWindow('dev_a', 3, { startMs: T0 + 120_000, latencies: [1, 1] });
  lyingSum.latencyMs = { ...lyingSum.latencyMs, sumUs: 10 ** 12 };
  const huge = makeWindow('dev_a', 4, { startMs: T0 + 180_000, failed: { error: 1e12 } });
  const future = makeWindow('dev_a', 5, { startMs: r.clock.ms + 3600_000 });
  const foreign = makeWindow('dev_b', 6, { startMs: T0 + 300_000, latencies: [1] });
  const inconsistent = makeWindow('dev_a', 7, { startMs: T0 + 360_000, latencies: [1, 2] });
  inconsistent.requests = { ...inconsistent.requests, ok: 5 };
  await r.send('dev_a', [good, shortHistogram, lyingSum, huge, future, foreign, inconsistent]);
  const ack = r.acks.at(-1)!.ack;
  assert.deepEqual(ack.acked, [[1, 1]]);
  assert.deepEqual(ack.refused.map((x) => [x.seq, x.code]), [
    [2, 'TELEMETRY_HISTOGRAM_INVALID'], [3, 'TELEMETRY_HISTOGRAM_INVALID'], [4, 'TELEMETRY_VALUE_INVALID'], [5, 'TELEMETRY_TIME_INVALID'],
    [6, 'TELEMETRY_WRONG_DEVICE'], [7, 'TELEMETRY_COUNTS_INCONSISTENT'],
  ]);
  assert.equal(r.notices.length, 1);
  assert.equal(r.notices[0]!.code, 'TELEMETRY_HISTOGRAM_INVALID');
  assert.match(r.notices[0]!.message, /latencyMs\.counts has 42 entries.*\(and 5 more entries refused\)/);
  assert.equal(r.rawRows(), 1);
  assert.equal(okCount(r, 'dev_a'), 3);
  assert.ok(r.logs.some((l) => l.level === 40 && /telemetry entries refused/.test(l.msg) && l.refused === 6));
});

test('a window of an unknown or revoked device is dropped with a log line and not acked', async () => {
  const r = await rig();
  await r.send('dev_ghost', [makeWindow('dev_ghost', 1, { startMs: T0, latencies: [1] })]);
  r.store.revokeDevice('dev_b', r.now().toISOString());
  await r.send('dev_b', [makeWindow('dev_b', 1, { startMs: T0, latencies: [1] })]);
  assert.equal(r.rawRows(), 0);
  assert.equal(r.acks.length, 0);
  assert.ok(r.logs.some((l) => l.level === 40 && l.deviceId === 'dev_ghost' && /unknown device dropped/.test(l.msg)));
  assert.ok(r.logs.some((l) => l.level === 40 && l.deviceId === 'dev_b' && /revoked device dropped/.test(l.msg)));
});

test('1,000 queued entries flush at once without waiting for the timer, in transactions of at most 1,000', async () => {
  const r = await rig({ maxDelayMs: 600_000 });
  for (let k = 0; k < 12; k++) await r.send(k % 2 ? 'dev_b' : 'dev_a', windowRun(k % 2 ? 'dev_b' : 'dev_a', 1 + Math.floor(k / 2) * 100, 100, { startMs: T0 - 20 * 3600_000 + k * 6_000_000, lenSec: 60, latencies: [2] }), [], false);
  const started = Date.now();
  while (r.acks.length < 12 && Date.now() - started < 5000) await new Promise((res) => setTimeout(res, 5));
  assert.equal(r.acks.length, 12, 'flushed without the 10-minute timer');
  assert.equal(r.rawRows(), 1200);
  // Two transactions, each in a turn of the event loop of its own: a backlog never holds the loop for more than one.
  assert.equal(r.ingest.stats.transactions, 2);
  assert.ok(r.ingest.stats.flushes >= 2);
});

test('a commit that fails (the disk is full) acks nothing and loses nothing already stored; the redelivery commits', async () => {
  const r = await rig();
  await r.send('dev_a', windowRun('dev_a', 1, 3, { startMs: T0, latencies: [1, 2] }));
  const pages = r.db.pragma('page_count', { simple: true }) as number;
  r.db.pragma(`max_page_count = ${pages}`);
  const big = windowRun('dev_a', 4, 400, { startMs: T0 - 30_000_000, latenciesOf: (i) => latencies(30, i, 0.06, 70_000) });
  await r.send('dev_a', big);
  assert.equal(r.acks.length, 1, 'only the first batch was acked');
  assert.equal(r.rawRows(), 3);
  assert.ok(r.logs.some((l) => l.level === 50 && /telemetry commit failed/.test(l.msg)));
  r.db.pragma('max_page_count = 1073741823');
  await r.send('dev_a', big);
  assert.deepEqual(r.acks.at(-1)!.ack.acked, [[4, 403]]);
  assert.equal(okCount(r, 'dev_a'), 6 + 400 * 30);
});

test('gap reports are recorded once; their lost windows leave out seqs that were stored', async () => {
  const r = await rig();
  await r.send('dev_a', windowRun('dev_a', 1, 3, { startMs: T0, latencies: [1] }));
  const gap: TelemetryGap = { seq: 2, lastSeq: 6, windows: 5, from: new Date(T0 + 60_000).toISOString(), to: new Date(T0 + 360_000).toISOString(), reason: 'spool-full', requests: { ok: 40, invalid: 0, timeout: 0, rejected: 1, error: 0 } };
  await r.send('dev_a', [], [gap]);
  await r.send('dev_a', [], [gap]);
  assert.deepEqual(r.acks.map((a) => a.ack.acked), [[[1, 3]], [[2, 6]], [[2, 6]]]);
  const h = r.health.device('dev_a', { from: new Date(T0).toISOString(), to: new Date(r.clock.ms).toISOString() });
  assert.deepEqual(h.gaps.map((g) => [g.seq, g.lastSeq, g.windows, g.lostWindows, g.reason, g.requests?.ok]), [[2, 6, 5, 3, 'spool-full', 40]]);
  const text = await r.metrics.text();
  assert.match(text, /^edgepack_telemetry_dropped_windows_total\{reason="spool-full",profile="x86-64-gateway"\} 3$/m);
});
