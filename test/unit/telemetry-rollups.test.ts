// Telemetry roll-ups and retention over a real SQLite file with a fake clock: 10-minute and
// 1-hour buckets hold exactly the sums of their windows (counts, items, histograms bucket by
// bucket, latency sums; system figures as mean, max and min), a roll-up run twice or after a
// failed run counts nothing twice, late windows land in their old buckets, and retention deletes
// each table at its age while a redelivered pruned window still counts once.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { TELEMETRY_OUTCOMES, mergeHistograms, type TelemetryWindow } from '@edgepack/protocol';
import { SERVE_HELP, parseServeConfig } from '@edgepack/orchestrator/config.js';
import type { Agg } from '@edgepack/orchestrator/telemetry/aggregate.js';
import { DEFAULT_RETENTION } from '@edgepack/orchestrator/telemetry/rollups.js';
import { telemetryRig, type Rig } from '../support/telemetry-rig.js';
import { latencies, rng, windowRun } from '../support/telemetry-windows.js';

const HOUR = 3600_000;
const DAY = 24 * HOUR;
const T0 = Date.parse('2026-06-01T08:00:00.000Z');
const rigs: Rig[] = [];
afterEach(async () => { while (rigs.length) await rigs.pop()!.close(); });

async function rig(): Promise<Rig> {
  const r = await telemetryRig({ startMs: T0 + 3 * HOUR + 60_000 });
  rigs.push(r);
  r.addDevice('dev_a');
  r.addDevice('dev_b', 'coral-dev-board');
  return r;
}

/** Three hours of 60 s windows per device, bundle a then b, failures and system figures varying. */
function threeHours(deviceId: string, seed: number): TelemetryWindow[] {
  const r = rng(seed);
  return windowRun(deviceId, 1, 180, { startMs: T0, latenciesOf: (i) => latencies(Math.floor(r() * 30), seed * 1000 + i) }).map((w, i) => ({
    ...w,
    bundleId: i < 100 ? 'bdl_a' : 'bdl_b',
    requests: { ...w.requests, invalid: Math.floor(r() * 3), timeout: i % 17 === 0 ? 1 : 0, rejected: i % 29 === 0 ? 2 : 0, error: i % 41 === 0 ? 1 : 0 },
    items: w.items * 2,
    system: { cpuPercent: Math.round(r() * 1000) / 10, rssBytes: 1e8 + Math.floor(r() * 1e7), memAvailableBytes: 2e9 - Math.floor(r() * 1e8), diskFreeBytes: 5e10 - i * 1000, ...(i % 3 ? { temperatureC: 40 + (i % 7) } : {}) },
  }));
}

async function sendAll(r: Rig, windows: TelemetryWindow[]): Promise<void> {
  for (let i = 0; i < windows.length; i += 100) await r.send(windows[0]!.deviceId, windows.slice(i, i + 100));
}

interface Expected { windows: number; requests: Record<string, number>; items: number; latency: number[]; latencySumUs: number; queue: number[]; cpu: number[]; rss: number[]; mem: number[]; disk: number[]; temp: number[] }

/** What a bucket must hold, from the windows themselves (protocol's mergeHistograms, plain sums). */
function expectedBuckets(windows: TelemetryWindow[], lenMs: number): Map<string, Expected> {
  const out = new Map<string, Expected>();
  for (const w of windows) {
    const key = `${Math.floor(Date.parse(w.start) / lenMs) * lenMs}/${w.bundleId}`;
    let e = out.get(key);
    if (!e) out.set(key, (e = { windows: 0, requests: { ok: 0, invalid: 0, timeout: 0, rejected: 0, error: 0 }, items: 0, latency: new Array(43).fill(0), latencySumUs: 0, queue: new Array(43).fill(0), cpu: [], rss: [], mem: [], disk: [], temp: [] }));
    e.windows++;
    for (const k of TELEMETRY_OUTCOMES) e.requests[k]! += w.requests[k];
    e.items += w.items;
    const lat = mergeHistograms({ counts: e.latency, count: 0, sumUs: e.latencySumUs }, { ...w.latencyMs, count: 0 });
    e.latency = lat.counts;
    e.latencySumUs = lat.sumUs;
    e.queue = mergeHistograms({ counts: e.queue, count: 0, sumUs: 0 }, { ...w.queueMs, count: 0 }).counts;
    e.cpu.push(w.system.cpuPercent); e.rss.push(w.system.rssBytes); e.mem.push(w.system.memAvailableBytes); e.disk.push(w.system.diskFreeBytes);
    if (w.system.temperatureC !== undefined) e.temp.push(w.system.temperatureC);
  }
  return out;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function assertBucket(a: Agg, e: Expected, where: string): void {
  assert.equal(a.windows, e.windows, where);
  assert.deepEqual(a.requests, e.requests, where);
  assert.equal(a.items, e.items, where);
  assert.deepEqual(a.latency, e.latency, `${where}: latency histogram`);
  assert.equal(a.latencySumUs, e.latencySumUs, where);
  assert.deepEqual(a.queue, e.queue, `${where}: queue histogram`);
  const s = a.system;
  assert.ok(Math.abs(s.cpuSum / s.samples - mean(e.cpu)) < 1e-9, `${where}: cpu mean`);
  assert.equal(s.cpuMax, Math.max(...e.cpu));
  assert.equal(Math.round(s.rssSum / s.samples), Math.round(mean(e.rss)));
  assert.equal(s.rssMax, Math.max(...e.rss));
  assert.equal(s.memMin, Math.min(...e.mem));
  assert.equal(s.diskMin, Math.min(...e.disk));
  assert.equal(s.tempSamples, e.temp.length);
  if (e.temp.length) assert.equal(s.tempMax, Math.max(...e.temp));
}

/** The roll-up's answer per (device, bucket, bundle): its rows, plus raw rows not rolled yet (none once rolled). */
function rollupContents(r: Rig, level: '10m' | '1h'): Map<string, Agg> {
  const out = new Map<string, Agg>();
  for (const device of ['dev_a', 'dev_b']) {
    for (const row of r.telemetry.scan(level, { deviceId: device }, T0 - DAY, T0 + DAY)) out.set(`${device}/${row.t}/${row.bundleId}`, row.agg);
  }
  return out;
}

test('roll-ups hold exactly the sums of their windows: counts, items, histograms bucket by bucket; system figures as mean, max and min', async () => {
  const r = await rig();
  const a = threeHours('dev_a', 1);
  const b = threeHours('dev_b', 2);
  await sendAll(r, a);
  await sendAll(r, b);
  assert.equal(await r.jobs.rollUp(), 360);
  for (const [level, len] of [['10m', 600_000], ['1h', HOUR]] as const) {
    const got = rollupContents(r, level);
    let buckets = 0;
    for (const [device, windows] of [['dev_a', a], ['dev_b', b]] as const) {
      for (const [key, e] of expectedBuckets(windows, len)) {
        const agg = got.get(`${device}/${key}`);
        assert.ok(agg, `${level} ${device}/${key} exists`);
        assertBucket(agg, e, `${level} ${device}/${key}`);
        buckets++;
      }
    }
    assert.equal(got.size, buckets, `${level}: no other rows`);
  }
});

test('a roll-up run twice, after a failed run, or after a restart counts nothing twice', async () => {
  const r = await rig();
  const a = threeHours('dev_a', 3);
  await sendAll(r, a);
  // A roll-up that fails half-way (its 10-minute rows written, the first 1-hour row refused by
  // SQLite) leaves no trace: the transaction rolls back, the mark stays.
  r.db.exec("CREATE TEMP TRIGGER fail_hour BEFORE INSERT ON telemetry_1h BEGIN SELECT RAISE(ABORT, 'database or disk is full (test)'); END");
  await assert.rejects(r.jobs.rollUp(), /disk is full/);
  assert.equal(r.telemetry.rolledThrough(), 0);
  assert.equal(r.db.prepare('SELECT COUNT(*) FROM telemetry_10m').pluck().get(), 0);
  r.db.exec('DROP TRIGGER fail_hour');
  // One chunk of 50 rolled, then the orchestrator restarts (new connection, new parts).
  assert.equal(r.telemetry.rollUp(50), 50);
  r.restart();
  assert.equal(await r.jobs.rollUp(), 130);
  const once = JSON.stringify([...rollupContents(r, '10m'), ...rollupContents(r, '1h')]);
  assert.equal(await r.jobs.rollUp(), 0, 'nothing left to add');
  assert.equal(JSON.stringify([...rollupContents(r, '10m'), ...rollupContents(r, '1h')]), once);
  const e = expectedBuckets(a, HOUR);
  const got = rollupContents(r, '1h');
  for (const [key, x] of e) assertBucket(got.get(`dev_a/${key}`)!, x, key);
});

test('a window arriving late is added to its old bucket, and answers are exact before the next roll-up too', async () => {
  const r = await rig();
  const a = threeHours('dev_a', 4);
  await sendAll(r, a.slice(0, 150));
  await r.jobs.rollUp();
  // Windows 151-180 arrive now (the device was offline); nothing rolled them up yet.
  await sendAll(r, a.slice(150));
  const range = { from: new Date(T0).toISOString(), to: new Date(T0 + 3 * HOUR).toISOString() };
  const total = a.reduce((n, w) => n + w.requests.ok, 0);
  const hourly = r.health.device('dev_a', { ...range, step: 3600 });
  assert.equal(hourly.source, '1h');
  assert.equal(hourly.summary.requests.ok, total, 'roll-up rows plus the raw rows not rolled yet');
  await r.jobs.rollUp();
  const again = r.health.device('dev_a', { ...range, step: 3600 });
  assert.deepEqual(again.summary, hourly.summary);
  assertBucket(rollupContents(r, '1h').get(`dev_a/${T0 + 2 * HOUR}/bdl_b`)!, expectedBuckets(a, HOUR).get(`${T0 + 2 * HOUR}/bdl_b`)!, 'the late hour');
  // The three sources agree on the same aligned range.
  const raw = r.health.device('dev_a', { ...range, step: 60 });
  const tenMin = r.health.device('dev_a', { ...range, step: 600 });
  assert.deepEqual([raw.source, tenMin.source], ['raw', '10m']);
  for (const x of [raw, tenMin]) {
    assert.deepEqual(x.summary.requests, hourly.summary.requests);
    assert.deepEqual(x.summary.latencyMs, hourly.summary.latencyMs);
    assert.deepEqual(x.summary.system, hourly.summary.system);
  }
  assert.equal(raw.points.length, 180);
  assert.equal(tenMin.points.length, 18);
  assert.equal(hourly.points.length, 3);
});

test('retention deletes raw windows after 48 h, 10-minute roll-ups after 30 days, 1-hour ones after 400; a redelivered pruned window counts once', async () => {
  const r = await rig();
  const a = threeHours('dev_a', 5);
  await sendAll(r, a);
  const total = a.reduce((n, w) => n + w.requests.ok, 0);
  const range = { from: new Date(T0).toISOString(), to: new Date(T0 + 3 * HOUR).toISOString() };
  const rows = (table: string) => r.db.prepare(`SELECT COUNT(*) FROM ${table}`).pluck().get() as number;

  r.clock.ms = T0 + 47 * HOUR;
  await r.jobs.prune();
  assert.equal(rows('telemetry_windows'), 180, 'younger than 48 h: kept');
  r.clock.ms = T0 + 3 * HOUR + 49 * HOUR;
  await r.jobs.prune();
  assert.equal(rows('telemetry_windows'), 0);
  assert.ok(rows('telemetry_10m') > 0 && rows('telemetry_1h') > 0);
  const old = r.health.device('dev_a', { ...range, step: 60 });
  assert.equal(old.source, '10m', 'a range older than the raw retention reads the 10-minute roll-up');
  assert.equal(old.step, 600);
  assert.equal(old.summary.requests.ok, total);
  // The device sends an old window again (its ack was lost long ago): a duplicate, not a new count.
  await r.send('dev_a', a.slice(170, 180));
  assert.deepEqual(r.acks.at(-1)!.ack.acked, [[171, 180]]);
  assert.equal(rows('telemetry_windows'), 0);
  assert.equal(r.health.device('dev_a', { ...range, step: 600 }).summary.requests.ok, total);

  r.clock.ms = T0 + 31 * DAY;
  await r.jobs.prune();
  assert.equal(rows('telemetry_10m'), 0);
  const older = r.health.device('dev_a', { ...range, step: 600 });
  assert.deepEqual([older.source, older.step, older.summary.requests.ok], ['1h', 3600, total]);
  r.clock.ms = T0 + 401 * DAY;
  await r.jobs.prune();
  assert.equal(rows('telemetry_1h'), 0);
});

test('retention is set by serve flags or env (flags win), and a coarser table must outlive a finer one', () => {
  const base = ['--data-dir', '/tmp/x'];
  const c = parseServeConfig(base, {});
  assert.ok(c !== 'help');
  assert.deepEqual(c.telemetryRetention, DEFAULT_RETENTION);
  const env = { EDGEPACK_TELEMETRY_RAW_HOURS: '12', EDGEPACK_TELEMETRY_10M_DAYS: '7', EDGEPACK_TELEMETRY_1H_DAYS: '90' };
  const e = parseServeConfig(base, env);
  assert.ok(e !== 'help');
  assert.deepEqual(e.telemetryRetention, { rawHours: 12, tenMinDays: 7, hourDays: 90 });
  const f = parseServeConfig([...base, '--telemetry-raw-hours', '6'], env);
  assert.ok(f !== 'help');
  assert.equal(f.telemetryRetention?.rawHours, 6);
  assert.throws(() => parseServeConfig([...base, '--telemetry-raw-hours', '0'], {}), /--telemetry-raw-hours must be a positive number/);
  assert.throws(() => parseServeConfig([...base, '--telemetry-10m-days', '1', '--telemetry-raw-hours', '48'], {}), /--telemetry-10m-days \(1\) must keep roll-ups at least as long as --telemetry-raw-hours/);
  assert.throws(() => parseServeConfig([...base, '--telemetry-1h-days', '10'], {}), /--telemetry-1h-days \(10\) must be at least --telemetry-10m-days \(30\)/);
  assert.match(SERVE_HELP, /--telemetry-1h-days N .*EDGEPACK_TELEMETRY_1H_DAYS, default 400/);
});
