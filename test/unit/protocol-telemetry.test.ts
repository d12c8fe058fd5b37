// The telemetry wire: fixed buckets, exact merges, quantile error bound, and the validator's
// coded refusals of hostile windows. All pure; a seeded generator makes the data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PROTOCOL_VERSION, TELEMETRY_BUCKET_BOUNDS_MS, TELEMETRY_BUCKET_COUNT, TelemetryRefusalCode, alignedWindow, bucketIndex, bucketRange,
  coalesceRanges, createTelemetryAck, createTelemetryValidator, emptyHistogram, histogramQuantile, mergeHistograms, mergeWindows, observe,
  planTelemetryIngest, rangeCovered, telemetryIngestAction, windowRange, type TelemetryWindow,
} from '@edgepack/protocol';

const DEVICE = 'dev_tel';
const NOW = new Date('2026-03-01T12:00:00Z');

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

/** Log-uniform latencies between 0.01 ms and 100 s: every bucket, including both ends, gets hits. */
function latencies(n: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => 10 ** (-2 + r() * 7));
}

function windowOf(seq: number, lat: number[], o: Partial<TelemetryWindow> = {}): TelemetryWindow {
  const latencyMs = emptyHistogram();
  const queueMs = emptyHistogram();
  for (const ms of lat) { observe(latencyMs, ms); observe(queueMs, ms / 4); }
  const start = Date.parse('2026-03-01T11:00:00Z') + (seq - 1) * 60_000;
  return {
    v: PROTOCOL_VERSION, deviceId: DEVICE, seq, start: new Date(start).toISOString(), end: new Date(start + 60_000).toISOString(),
    bundleId: 'bdl_a', modelName: 'fashion', requests: { ok: lat.length, invalid: 1, timeout: 0, rejected: 2, error: 0 }, items: lat.length * 2,
    latencyMs, queueMs, system: { cpuPercent: 10 * seq, rssBytes: 1000 * seq, memAvailableBytes: 5000 - seq, diskFreeBytes: 9000 - seq, temperatureC: 40 + seq },
    ...o,
  };
}

test('the bucket bounds are 0.05 ms × 2^(k/2) up to past 60 s, strictly increasing, one overflow bucket', () => {
  assert.equal(TELEMETRY_BUCKET_BOUNDS_MS.length, 42);
  assert.equal(TELEMETRY_BUCKET_COUNT, 43);
  TELEMETRY_BUCKET_BOUNDS_MS.forEach((b, k) => {
    const exact = 0.05 * 2 ** (k / 2);
    assert.ok(Math.abs(b - exact) / exact < 1e-5, `bound ${k}: ${b} vs ${exact}`);
    if (k > 0) assert.ok(b > TELEMETRY_BUCKET_BOUNDS_MS[k - 1]!);
  });
  assert.ok(TELEMETRY_BUCKET_BOUNDS_MS.at(-1)! > 60_000);
  assert.ok(Object.isFrozen(TELEMETRY_BUCKET_BOUNDS_MS));
});

test('bucketIndex: upper bounds are inclusive; zero, negative and NaN go to bucket 0, huge and Infinity to overflow', () => {
  TELEMETRY_BUCKET_BOUNDS_MS.forEach((b, k) => {
    assert.equal(bucketIndex(b), k, `at bound ${b}`);
    assert.equal(bucketIndex(b * (1 + 1e-9)), k + 1, `just above ${b}`);
  });
  for (const v of [0, -1, Number.NaN, 1e-9]) assert.equal(bucketIndex(v), 0, String(v));
  for (const v of [74_146, 1e12, Infinity]) assert.equal(bucketIndex(v), 42, String(v));
  for (const ms of latencies(5000, 3)) {
    const i = bucketIndex(ms);
    const { lower, upper } = bucketRange(i);
    assert.ok(ms > lower && ms <= upper, `${ms} in bucket ${i} (${lower}, ${upper}]`);
  }
});

test('observe keeps count = Σ buckets and the sum in whole microseconds', () => {
  const h = emptyHistogram();
  for (const ms of [0.0004, 1.2345, 2.5, 100]) observe(h, ms);
  assert.equal(h.count, 4);
  assert.equal(h.counts.reduce((a, b) => a + b, 0), 4);
  assert.equal(h.sumUs, 0 + 1235 + 2500 + 100_000);
});

test('merging windows is exact: two merged windows equal one window that saw every observation', () => {
  const a = latencies(700, 11);
  const b = latencies(300, 12);
  const merged = mergeWindows(windowOf(1, a), windowOf(2, b));
  const whole = windowOf(1, [...a, ...b]);
  assert.deepEqual(merged.latencyMs, whole.latencyMs);
  assert.deepEqual(merged.queueMs, whole.queueMs);
  assert.deepEqual(merged.requests, { ok: 1000, invalid: 2, timeout: 0, rejected: 4, error: 0 });
  assert.equal(merged.items, 2000);
  assert.deepEqual(merged.merged, { lastSeq: 2, windows: 2 });
  assert.deepEqual(windowRange(merged), [1, 2]);
  assert.equal(merged.start, windowOf(1, []).start);
  assert.equal(merged.end, windowOf(2, []).end);
  // System figures: mean cpu over time, worst of the rest.
  assert.deepEqual(merged.system, { cpuPercent: 15, rssBytes: 2000, memAvailableBytes: 4998, diskFreeBytes: 8998, temperatureC: 42 });
  // Merges of merges stay exact and keep covering consecutive seqs.
  const c = latencies(50, 13);
  const all = mergeWindows(merged, windowOf(3, c));
  assert.deepEqual(all.latencyMs, windowOf(1, [...a, ...b, ...c]).latencyMs);
  assert.deepEqual(all.merged, { lastSeq: 3, windows: 3 });
  assert.deepEqual(mergeWindows(windowOf(1, a), mergeWindows(windowOf(2, b), windowOf(3, c))).latencyMs, all.latencyMs);
});

test('only adjacent windows of one bundle merge; anything else is refused with a code', () => {
  const cases: [TelemetryWindow, TelemetryWindow][] = [
    [windowOf(1, []), windowOf(3, [])],
    [windowOf(2, []), windowOf(1, [])],
    [windowOf(1, []), windowOf(2, [], { bundleId: 'bdl_b' })],
    [windowOf(1, []), windowOf(2, [], { modelName: 'other' })],
    [windowOf(1, []), windowOf(2, [], { deviceId: 'dev_other' })],
  ];
  for (const [x, y] of cases) assert.throws(() => mergeWindows(x, y), (e: { code?: string }) => e.code === TelemetryRefusalCode.mergeInvalid);
  const short = { ...emptyHistogram(), counts: [1] };
  assert.throws(() => mergeHistograms(short, emptyHistogram()), (e: { code?: string }) => e.code === TelemetryRefusalCode.histogramInvalid);
});

test('histogramQuantile is within a factor 2^¼ of the exact nearest-rank quantile, also after merging', () => {
  const factor = 2 ** 0.25;
  for (const seed of [1, 2, 3]) {
    // Latencies within the finite buckets (0.05 ms … 74 s).
    const r = rng(seed);
    const xs = Array.from({ length: 4000 }, () => 0.06 * 10 ** (r() * 5.9));
    const h = mergeHistograms(windowOf(1, xs.slice(0, 1000)).latencyMs, windowOf(2, xs.slice(1000)).latencyMs);
    const sorted = [...xs].sort((p, q) => p - q);
    for (const q of [0.01, 0.5, 0.9, 0.95, 0.99, 1]) {
      const exact = sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1]!;
      const est = histogramQuantile(h, q)!;
      assert.ok(est / exact <= factor * (1 + 1e-12) && exact / est <= factor * (1 + 1e-12), `q=${q}: estimate ${est}, exact ${exact}`);
    }
  }
  assert.equal(histogramQuantile(emptyHistogram(), 0.5), null);
  const over = emptyHistogram();
  observe(over, 500_000);
  assert.equal(histogramQuantile(over, 0.99), TELEMETRY_BUCKET_BOUNDS_MS.at(-1));
  const tiny = emptyHistogram();
  observe(tiny, 0.001);
  assert.ok(histogramQuantile(tiny, 0.5)! < 0.05);
});

test('alignedWindow tiles time on multiples of the window length', () => {
  const t = Date.parse('2026-03-01T12:34:56.789Z');
  assert.deepEqual(alignedWindow(t, 60), { start: Date.parse('2026-03-01T12:34:00Z'), end: Date.parse('2026-03-01T12:35:00Z') });
  assert.deepEqual(alignedWindow(t, 1), { start: Date.parse('2026-03-01T12:34:56Z'), end: Date.parse('2026-03-01T12:34:57Z') });
});

test('the validator accepts well-formed windows and gaps, raw and merged', () => {
  const check = createTelemetryValidator();
  const ctx = { deviceId: DEVICE, now: NOW };
  const w = windowOf(1, latencies(200, 5));
  assert.deepEqual(check.window(w, ctx), { ok: true, value: w });
  const m = mergeWindows(w, windowOf(2, latencies(20, 6)));
  assert.equal(check.window(m, ctx).ok, true);
  const empty = windowOf(3, [], { requests: { ok: 0, invalid: 0, timeout: 0, rejected: 0, error: 0 }, items: 0, bundleId: null, modelName: null });
  assert.equal(check.window(empty, ctx).ok, true);
  const { temperatureC: _t, ...noTemp } = w.system;
  assert.equal(check.window({ ...w, system: noTemp }, ctx).ok, true);
  const gap = { seq: 4, lastSeq: 9, windows: 6, from: '2026-03-01T11:03:00Z', to: '2026-03-01T11:09:00Z', reason: 'spool-full', requests: w.requests };
  assert.equal(check.gap(gap, ctx).ok, true);
});

test('hostile windows are refused, each with a code naming what is wrong', () => {
  const check = createTelemetryValidator();
  const ctx = { deviceId: DEVICE, now: NOW };
  const w = windowOf(7, latencies(100, 9));
  const lat = w.latencyMs;
  const hostile: [string, unknown, string][] = [
    ['another device', { ...w, deviceId: 'dev_other' }, TelemetryRefusalCode.wrongDevice],
    ['42 counts', { ...w, latencyMs: { ...lat, counts: lat.counts.slice(1) } }, TelemetryRefusalCode.histogramInvalid],
    ['1000 counts', { ...w, latencyMs: { ...lat, counts: [...lat.counts, ...new Array(957).fill(0)] } }, 'MESSAGE_INVALID'],
    ['count ≠ Σ buckets', { ...w, latencyMs: { ...lat, count: lat.count + 1 } }, TelemetryRefusalCode.histogramInvalid],
    ['sum impossible for its buckets', { ...w, latencyMs: { ...lat, sumUs: 3 } }, TelemetryRefusalCode.histogramInvalid],
    ['sum far too large', { ...w, queueMs: { ...w.queueMs, counts: [w.queueMs.count, ...new Array(42).fill(0)], sumUs: 10 ** 12 } }, TelemetryRefusalCode.histogramInvalid],
    ['negative count', { ...w, requests: { ...w.requests, invalid: -1 } }, 'MESSAGE_INVALID'],
    ['fractional count', { ...w, items: 2.5 }, 'MESSAGE_INVALID'],
    ['beyond a safe integer', { ...w, requests: { ...w.requests, error: 1e300 } }, 'MESSAGE_INVALID'],
    ['buckets past a safe integer', { ...w, latencyMs: { ...lat, counts: lat.counts.map(() => Number.MAX_SAFE_INTEGER) } }, TelemetryRefusalCode.valueInvalid],
    ['a billion requests a second', { ...w, requests: { ...w.requests, rejected: 10 ** 12 } }, TelemetryRefusalCode.valueInvalid],
    ['NaN cpu', { ...w, system: { ...w.system, cpuPercent: Number.NaN } }, 'MESSAGE_INVALID'],
    ['1000 °C', { ...w, system: { ...w.system, temperatureC: 1000 } }, 'MESSAGE_INVALID'],
    ['end before start', { ...w, end: w.start }, TelemetryRefusalCode.timeInvalid],
    ['a raw window of two hours', { ...w, end: new Date(Date.parse(w.start) + 7_200_000).toISOString() }, TelemetryRefusalCode.timeInvalid],
    ['from the future', { ...w, start: '2026-03-01T13:00:00Z', end: '2026-03-01T13:01:00Z' }, TelemetryRefusalCode.timeInvalid],
    ['not on whole seconds', { ...w, end: '2026-03-01T11:07:00.500Z' }, TelemetryRefusalCode.timeInvalid],
    ['not a date', { ...w, start: '2026-13-45T99:00:00Z' }, TelemetryRefusalCode.timeInvalid],
    ['not ISO', { ...w, start: 'yesterday' }, 'MESSAGE_INVALID'],
    ['merged that does not add up', { ...w, merged: { lastSeq: 9, windows: 5 } }, TelemetryRefusalCode.mergeInvalid],
    ['latency for more than the ok requests', { ...w, requests: { ...w.requests, ok: 99 } }, TelemetryRefusalCode.countsInconsistent],
    ['fewer items than ok requests', { ...w, items: 3 }, TelemetryRefusalCode.countsInconsistent],
    ['queue time longer than latency', { ...w, queueMs: lat, latencyMs: w.queueMs }, TelemetryRefusalCode.countsInconsistent],
    ['more held swaps than swaps', { ...w, swaps: { count: 1, held: 2, heldRequests: 0, maxHoldMs: 0 } }, TelemetryRefusalCode.countsInconsistent],
    ['a bundle id that is a path', { ...w, bundleId: '../etc' }, 'MESSAGE_INVALID'],
    ['a newer protocol major', { ...w, v: PROTOCOL_VERSION + 1 }, 'MESSAGE_INVALID'],
    ['not an object', [1, 2, 3], 'MESSAGE_INVALID'],
  ];
  for (const [what, value, code] of hostile) {
    const r = check.window(value, ctx);
    assert.equal(r.ok, false, what);
    if (!r.ok) {
      assert.equal(r.code, code, `${what}: ${r.reason}`);
      assert.ok(r.reason.length > 10, what);
    }
  }
  const gaps: [string, unknown, string][] = [
    ['windows ≠ range', { seq: 3, lastSeq: 5, windows: 2, from: w.start, to: w.end, reason: 'spool-full' }, TelemetryRefusalCode.countsInconsistent],
    ['backwards', { seq: 5, lastSeq: 3, windows: 1, from: w.start, to: w.end, reason: 'spool-full' }, TelemetryRefusalCode.countsInconsistent],
    ['to before from', { seq: 3, lastSeq: 3, windows: 1, from: w.end, to: w.start, reason: 'spool-full' }, TelemetryRefusalCode.timeInvalid],
    ['unknown reason', { seq: 3, lastSeq: 3, windows: 1, from: w.start, to: w.end, reason: 'bored' }, 'MESSAGE_INVALID'],
  ];
  for (const [what, value, code] of gaps) {
    const r = check.gap(value, ctx);
    assert.equal(r.ok ? 'ok' : r.code, code, what);
  }
});

test('a batch: a bad window refuses only itself (with its seqs, for the ack); a bad envelope or device refuses the batch', () => {
  const check = createTelemetryValidator();
  const ctx = { deviceId: DEVICE, now: NOW };
  const good = [windowOf(1, latencies(10, 1)), windowOf(2, latencies(10, 2))];
  const bad = { ...windowOf(3, latencies(10, 3)), deviceId: 'dev_x' };
  const badMerged = { ...mergeWindows(windowOf(4, []), windowOf(5, [])), items: -1 };
  const batch = { v: 1, deviceId: DEVICE, sentAt: NOW.toISOString(), windows: [good[0], bad, good[1], badMerged, 'junk'], gaps: [{ seq: 9 }] };
  const r = check.batch(JSON.stringify(batch), ctx);
  assert.equal(r.ok, true);
  if (!r.ok) return;
  assert.deepEqual(r.value.windows.map((w) => w.seq), [1, 2]);
  assert.deepEqual(r.value.refused.map((x) => [x.seq, x.lastSeq, x.code]), [
    [3, 3, TelemetryRefusalCode.wrongDevice], [4, 5, 'MESSAGE_INVALID'], [undefined, undefined, 'MESSAGE_INVALID'], [9, 9, 'MESSAGE_INVALID'],
  ]);

  const refusedWhole: [string, string | Uint8Array, string][] = [
    ['not JSON', '{"v":1,', 'MESSAGE_NOT_JSON'],
    ['too large', Buffer.alloc(2 << 20, 0x20), 'MESSAGE_TOO_LARGE'],
    ['another device', JSON.stringify({ ...batch, deviceId: 'dev_other', windows: [] }), TelemetryRefusalCode.wrongDevice],
    ['too many windows', JSON.stringify({ ...batch, windows: new Array(501).fill(0) }), 'MESSAGE_INVALID'],
    ['no gaps field', JSON.stringify({ v: 1, deviceId: DEVICE, sentAt: NOW.toISOString(), windows: [] }), 'MESSAGE_INVALID'],
  ];
  for (const [what, payload, code] of refusedWhole) {
    const x = check.batch(payload, ctx);
    assert.equal(x.ok ? 'ok' : x.code, code, what);
  }
});

test('seq ranges: coalescing, coverage, and the ack built from them', () => {
  assert.deepEqual(coalesceRanges([[5, 6], [1, 2], [3, 3], [9, 9], [8, 8], [4, 1]]), [[1, 3], [5, 6], [8, 9]]);
  assert.equal(rangeCovered([2, 6], [[1, 3], [4, 6]]), true);
  assert.equal(rangeCovered([2, 7], [[1, 3], [4, 6]]), false);
  assert.equal(rangeCovered([5, 5], [[1, 3]]), false);
  assert.equal(rangeCovered([1, 1], []), false);
  const ack = createTelemetryAck(DEVICE, [[3, 3], [1, 2], [7, 9]], [{ seq: 5, lastSeq: 5, code: 'X', reason: 'r'.repeat(5000) }]);
  assert.deepEqual(ack.acked, [[1, 3], [7, 9]]);
  assert.equal(ack.refused[0]!.reason.length, 1024);
  const check = createTelemetryValidator();
  assert.deepEqual(check.ack(JSON.stringify(ack)), { ok: true, value: ack });
  assert.equal(check.ack(JSON.stringify({ ...ack, acked: [[4, 2]] })).ok, false);
  assert.equal(check.ack(JSON.stringify({ ...ack, acked: [[0, 2]] })).ok, false);
  assert.equal(check.ack('nope').ok, false);
});

test('the ingest rule: redeliveries are duplicates, merges supersede their parts, overlaps that stick out conflict', () => {
  assert.deepEqual(telemetryIngestAction([1, 1], []), { action: 'insert', supersedes: [] });
  assert.deepEqual(telemetryIngestAction([1, 1], [[1, 1]]), { action: 'duplicate' });
  // A raw window redelivered late, after the merge that contains it was stored.
  assert.deepEqual(telemetryIngestAction([2, 2], [[1, 4]]), { action: 'duplicate' });
  assert.deepEqual(telemetryIngestAction([1, 4], [[1, 4]]), { action: 'duplicate' });
  // The device merged windows it had sent before (their ack was lost): the merge replaces them.
  assert.deepEqual(telemetryIngestAction([1, 4], [[1, 1], [3, 3], [7, 7]]), { action: 'insert', supersedes: [[1, 1], [3, 3]] });
  assert.deepEqual(telemetryIngestAction([1, 2], [[1, 1], [2, 2]]), { action: 'insert', supersedes: [[1, 1], [2, 2]] });
  assert.deepEqual(telemetryIngestAction([3, 6], [[1, 4]]), { action: 'conflict', with: [1, 4] });
});

test('the ingest plan of a batch: inserts, superseded parts, duplicates (also inside the batch), conflicts refused, one ack', () => {
  const w = (seq: number, last?: number) => (last ? mergeWindows(windowOf(seq, [1]), { ...windowOf(last, [2]), seq: seq + 1, ...(last > seq + 1 ? { merged: { lastSeq: last, windows: last - seq } } : {}) }) : windowOf(seq, [1]));
  const batch = {
    deviceId: DEVICE, sentAt: NOW.toISOString(),
    windows: [w(1), w(1), w(3, 5), w(7), w(9, 10)],
    gaps: [{ seq: 11, lastSeq: 12, windows: 2, from: '2026-03-01T11:10:00Z', to: '2026-03-01T11:12:00Z', reason: 'spool-full' as const }],
    refused: [{ seq: 13, lastSeq: 13, code: 'MESSAGE_INVALID', reason: 'bad' }, { code: 'MESSAGE_INVALID', reason: 'no seq' }],
  };
  // Stored: 3 (the device later merged 3..5), and 6..7 (so window 7 is a duplicate), and 10..11 (sticks out of 9..10).
  const plan = planTelemetryIngest(batch, [[3, 3], [6, 7], [10, 11]]);
  assert.deepEqual(plan.insert.map((i) => [windowRange(i.window), i.supersedes]), [[[1, 1], []], [[3, 5], [[3, 3]]]]);
  assert.deepEqual(plan.duplicates, [[1, 1], [7, 7]]);
  assert.deepEqual(plan.refused.map((r) => [r.seq, r.code]), [[13, 'MESSAGE_INVALID'], [undefined, 'MESSAGE_INVALID'], [9, TelemetryRefusalCode.seqConflict]]);
  assert.equal(plan.gaps.length, 1);
  assert.deepEqual(plan.ack.acked, [[1, 1], [3, 5], [7, 7], [11, 12]]);
  assert.deepEqual(plan.ack.refused.map((r) => [r.seq, r.lastSeq]), [[13, 13], [9, 10]]);
});
