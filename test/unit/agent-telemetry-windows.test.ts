// Telemetry on the device: the window aggregator over a fake clock, the system-figure
// parsers, and the spool on real files — durable, capped, merging before dropping, and
// reporting what it dropped.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  PROTOCOL_VERSION, createTelemetryValidator, totalRequests, windowRange, type TelemetryGap, type TelemetryWindow,
} from '@edgepack/protocol';
import type { Logger } from '@edgepack/agent/logger.js';
import { SystemSampler, cpuPercent, parseMemAvailable, parseThermal } from '@edgepack/agent/telemetry/system-figures.js';
import { TelemetrySpool } from '@edgepack/agent/telemetry/telemetry-spool.js';
import { WindowAggregator } from '@edgepack/agent/telemetry/window-aggregator.js';
import { tempDir } from '../support/processes.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

function recorder(): { log: Logger; lines: { level: string; msg: string; obj: Record<string, unknown> }[] } {
  const lines: { level: string; msg: string; obj: Record<string, unknown> }[] = [];
  const log = Object.fromEntries(['error', 'warn', 'info', 'debug'].map((level) => [level, (obj: object, msg?: string) => { lines.push({ level, msg: msg ?? '', obj: obj as Record<string, unknown> }); }])) as unknown as Logger;
  return { log, lines };
}

const T0 = Date.parse('2026-03-01T12:00:00Z');
const SYSTEM = { cpuPercent: 12.5, rssBytes: 100_000_000, memAvailableBytes: 2_000_000_000, diskFreeBytes: 9_000_000_000 };

test('windows are aligned, hold what completed inside them, split by bundle, and an idle period still yields one', () => {
  let now = T0 + 30_500; // half way into a minute
  const agg = new WindowAggregator(60, () => now);
  agg.setActive('bdl_a', 'fashion');
  const ok = (bundleId: string, latencyMs: number) => agg.record({ bundleId, modelName: 'fashion', outcome: 'ok', latencyMs, queueMs: latencyMs / 10, items: 2 });
  ok('bdl_a', 3);
  ok('bdl_a', 5);
  agg.record({ bundleId: 'bdl_a', modelName: 'fashion', outcome: 'invalid', latencyMs: 0.2, items: 0 });
  agg.recordSwap({ from: 'bdl_a', to: 'bdl_b', held: true, heldRequests: 4, holdMs: 120.4 });
  agg.setActive('bdl_b', 'fashion');
  ok('bdl_b', 7);
  assert.deepEqual(agg.takeClosed(), []);
  now = T0 + 60_000; // the boundary: what completes now belongs to the next window
  ok('bdl_b', 9);
  const first = agg.takeClosed();
  assert.deepEqual(first.map((w) => [w.start, w.end, w.bundleId, w.requests.ok, w.requests.invalid, w.items]), [
    ['2026-03-01T12:00:00Z', '2026-03-01T12:01:00Z', 'bdl_a', 2, 1, 4],
    ['2026-03-01T12:00:00Z', '2026-03-01T12:01:00Z', 'bdl_b', 1, 0, 2],
  ]);
  assert.equal(first[0]!.latencyMs.sumUs, 8000);
  assert.equal(first[0]!.queueMs.sumUs, 800);
  assert.deepEqual(first[1]!.swaps, { count: 1, held: 1, heldRequests: 4, maxHoldMs: 120 });
  // The next minute had one request; the one after none at all.
  now = T0 + 125_000;
  const later = agg.takeClosed();
  assert.deepEqual(later.map((w) => [w.start, w.bundleId, w.requests.ok]), [['2026-03-01T12:01:00Z', 'bdl_b', 1]]);
  now = T0 + 180_010;
  const idle = agg.takeClosed();
  assert.deepEqual(idle.map((w) => [w.start, w.end, w.bundleId, totalRequests(w.requests)]), [['2026-03-01T12:02:00Z', '2026-03-01T12:03:00Z', 'bdl_b', 0]]);
  // Stopping closes the open window early, on the next whole second.
  now = T0 + 200_300;
  ok('bdl_b', 1);
  const last = agg.closeEarly();
  assert.deepEqual(last.map((w) => [w.start, w.end, w.requests.ok]), [['2026-03-01T12:03:00Z', '2026-03-01T12:03:21Z', 1]]);
  // Every window the aggregator makes passes the protocol's validator.
  const check = createTelemetryValidator();
  let seq = 0;
  for (const d of [...first, ...later, ...idle, ...last]) {
    const r = check.window({ v: PROTOCOL_VERSION, deviceId: 'dev', seq: ++seq, ...d, system: SYSTEM }, { deviceId: 'dev', now: new Date(now) });
    assert.equal(r.ok, true, r.ok ? '' : r.reason);
  }
});

test('system figures: CPU from two samples, MemAvailable, thermal zones (hottest, absent when none)', async () => {
  assert.equal(cpuPercent({ busy: 100, total: 1000 }, { busy: 350, total: 2000 }), 25);
  assert.equal(cpuPercent({ busy: 1, total: 1 }, { busy: 1, total: 1 }), 0);
  assert.equal(parseMemAvailable('MemTotal:  100 kB\nMemAvailable:    2048 kB\n'), 2048 * 1024);
  assert.equal(parseMemAvailable('MemTotal: 100 kB\n'), null);
  assert.equal(parseThermal('45123\n'), 45.1);
  assert.equal(parseThermal('garbage'), null);
  assert.equal(parseThermal('999999999'), null);

  const dir = await tempDir('sysfig');
  cleanups.push(() => dir.remove());
  const thermal = join(dir.path, 'thermal');
  for (const [zone, t] of [['thermal_zone0', '41000'], ['thermal_zone1', '57500'], ['cooling_device0', '99000']]) {
    await mkdir(join(thermal, zone!), { recursive: true });
    await writeFile(join(thermal, zone!, 'temp'), `${t}\n`);
  }
  await writeFile(join(dir.path, 'meminfo'), 'MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n');
  const s = new SystemSampler({ dataDir: dir.path, thermalDir: thermal, meminfoPath: join(dir.path, 'meminfo') });
  const fig = await s.sample();
  assert.equal(fig.temperatureC, 57.5);
  assert.equal(fig.memAvailableBytes, 4_000_000 * 1024);
  assert.ok(fig.diskFreeBytes > 0 && fig.rssBytes > 0 && fig.cpuPercent >= 0 && fig.cpuPercent <= 100);
  const none = await new SystemSampler({ dataDir: dir.path, thermalDir: join(dir.path, 'nope') }).sample();
  assert.equal('temperatureC' in none, false);
});

/** Makes `n` closed one-minute windows from T0 with `perWindow` ok requests each, through the real aggregator. */
function minuteWindows(n: number, perWindow: number, startMs = T0, bundleId = 'bdl_a'): Omit<TelemetryWindow, 'seq' | 'v' | 'deviceId' | 'system'>[] {
  let now = startMs;
  const agg = new WindowAggregator(60, () => now);
  agg.setActive(bundleId, 'fashion');
  const out: ReturnType<WindowAggregator['takeClosed']> = [];
  for (let i = 0; i < n; i++) {
    now = startMs + i * 60_000 + 1000;
    for (let k = 0; k < perWindow; k++) agg.record({ bundleId, modelName: 'fashion', outcome: k % 7 === 0 ? 'rejected' : 'ok', latencyMs: 1 + k, queueMs: 0.5, items: 1 });
    now = startMs + (i + 1) * 60_000;
    out.push(...agg.takeClosed());
  }
  return out;
}

async function openSpool(dir: string, capBytes: number, now: () => number, log = recorder().log) {
  return TelemetrySpool.open({ dir, capBytes, log, now });
}

function full(spool: TelemetrySpool, drafts: ReturnType<typeof minuteWindows>): TelemetryWindow[] {
  return drafts.map((d) => ({ v: PROTOCOL_VERSION, deviceId: 'dev_spool', seq: spool.allocSeq(), ...d, system: SYSTEM }));
}

test('the spool keeps windows across restarts until acked, never reuses a seq, and skips a torn line', async () => {
  const dir = await tempDir('spool');
  cleanups.push(() => dir.remove());
  let now = T0;
  const spool = await openSpool(dir.path, 1 << 20, () => now);
  const ws = full(spool, minuteWindows(5, 10));
  assert.deepEqual(ws.map((w) => w.seq), [1, 2, 3, 4, 5]);
  await spool.append(ws, T0 + 5 * 60_000);
  assert.equal(await spool.acknowledge([[1, 2], [4, 4]]), 3);
  await spool.close();

  // Reopened: only 3 and 5 remain; a clean stop leaves no gap; the next seq is 6.
  const again = await openSpool(dir.path, 1 << 20, () => now);
  assert.deepEqual(again.pending.map((e) => e.kind === 'window' && e.window.seq), [3, 5]);
  assert.deepEqual((again.pending[0] as { window: TelemetryWindow }).window, ws[2]);
  assert.equal(again.allocSeq(), 6);
  await again.acknowledge([[1, 10]]);
  assert.equal(again.pending.length, 0);
  await again.close();
  const third = await openSpool(dir.path, 1 << 20, () => now);
  assert.equal(third.allocSeq(), 7, 'seqs survive even an empty spool');
  const more = full(third, minuteWindows(2, 3, T0 + 600_000));
  await third.append(more, T0 + 720_000);
  await third.close();
  // A crash in the middle of an append leaves a torn line: it is skipped, the rest is kept.
  await appendFile(join(dir.path, 'spool.log'), '1234abcd {"w":{"seq":99');
  const { log, lines } = recorder();
  const fourth = await TelemetrySpool.open({ dir: dir.path, capBytes: 1 << 20, log, now: () => now });
  assert.deepEqual(fourth.pending.map((e) => e.kind === 'window' && e.window.seq), [8, 9]);
  assert.ok(lines.some((l) => l.level === 'warn' && /torn or corrupt/.test(l.msg)));
  assert.ok(!(await readFile(join(dir.path, 'spool.log'), 'utf8')).includes('"seq":99'), 'rewritten without the torn line');
  await fourth.close();
});

test('an agent killed without flushing leaves an unclean-stop gap for the window it had open', async () => {
  const dir = await tempDir('spool-crash');
  cleanups.push(() => dir.remove());
  let now = T0;
  const spool = await openSpool(dir.path, 1 << 20, () => now);
  await spool.append(full(spool, minuteWindows(2, 4)), T0 + 120_000);
  // No close(): the process died. It comes back at 12:05:30.
  now = T0 + 330_000;
  const back = await openSpool(dir.path, 1 << 20, () => now);
  const gaps = back.pending.filter((e) => e.kind === 'gap').map((e) => (e as { gap: TelemetryGap }).gap);
  assert.deepEqual(gaps, [{ seq: 3, lastSeq: 3, windows: 1, from: '2026-03-01T12:02:00Z', to: '2026-03-01T12:05:30Z', reason: 'unclean-stop' }]);
  assert.equal(back.allocSeq(), 4);
  const check = createTelemetryValidator();
  assert.equal(check.gap(gaps[0], { deviceId: 'dev_spool', now: new Date(now) }).ok, true);
});

test('over its cap the spool merges old windows exactly, then drops the oldest into a gap report, and the file never passes the cap', async () => {
  const dir = await tempDir('spool-cap');
  cleanups.push(() => dir.remove());
  const cap = 16 * 1024;
  let now = T0;
  const { log, lines } = recorder();
  // Merging only within 10-minute periods here, so that six hours cannot all fold into a few windows.
  const spool = await TelemetrySpool.open({ dir: dir.path, capBytes: cap, log, now: () => now, mergeLevelsSec: [600] });
  // Six hours of minute windows with 20 requests each, offline (nothing acked), one append per window.
  const drafts = minuteWindows(360, 20);
  let sent = 0;
  let mergedSeen = false;
  for (const d of drafts) {
    const [w] = full(spool, [d]);
    sent += totalRequests(w!.requests);
    now = Date.parse(w!.end);
    await spool.append([w!], now);
    const size = (await stat(join(dir.path, 'spool.log'))).size;
    assert.ok(size <= cap, `spool file ${size} bytes > cap ${cap}`);
    assert.equal(size, spool.bytesOnDisk);
    if (spool.stats.mergedWindows > 0 && spool.stats.droppedWindows === 0) mergedSeen = true;
  }
  assert.ok(mergedSeen, 'merging came before any drop');
  assert.ok(spool.stats.droppedWindows > 0, 'six hours do not fit in 16 KiB even merged to 10 minutes: the oldest were dropped');

  const windows = spool.pending.flatMap((e) => (e.kind === 'window' ? [e.window] : []));
  const gaps = spool.pending.flatMap((e) => (e.kind === 'gap' ? [e.gap] : []));
  assert.equal(gaps.length, 1, 'drops fold into one gap report');
  const gap = gaps[0]!;
  assert.equal(gap.reason, 'spool-full');
  assert.equal(gap.seq, 1);
  assert.equal(gap.from, '2026-03-01T12:00:00Z');
  // Nothing silently lost: what the kept windows count plus what the gap says it lost is every request.
  const kept = windows.reduce((n, w) => n + totalRequests(w.requests), 0);
  assert.equal(kept + totalRequests(gap.requests!), sent);
  // The kept windows cover the seqs after the gap without a hole, oldest coarsest.
  let next = gap.lastSeq + 1;
  for (const w of windows) {
    assert.equal(w.seq, next);
    next = windowRange(w)[1] + 1;
  }
  assert.equal(next, 361);
  assert.ok(windows[0]!.merged && windows[0]!.merged.windows >= 10, 'the oldest kept windows are merged');
  // Merged windows never straddle a 10-minute period; every entry is valid on the wire.
  const check = createTelemetryValidator();
  for (const w of windows) {
    assert.equal(Math.floor(Date.parse(w.start) / 600_000), Math.floor((Date.parse(w.end) - 1) / 600_000));
    const r = check.window(w, { deviceId: 'dev_spool', now: new Date(now) });
    assert.equal(r.ok, true, r.ok ? '' : r.reason);
  }
  assert.equal(check.gap(gap, { deviceId: 'dev_spool', now: new Date(now) }).ok, true);
  assert.ok(lines.some((l) => l.level === 'warn' && /dropping the oldest/.test(l.msg)));

  // Reopened, the same entries come back; acking the gap and the windows empties the spool.
  await spool.close();
  const again = await TelemetrySpool.open({ dir: dir.path, capBytes: cap, log, now: () => now, mergeLevelsSec: [600] });
  assert.deepEqual(again.pending.map((e) => (e.kind === 'window' ? windowRange(e.window) : [e.gap.seq, e.gap.lastSeq])), spool.pending.map((e) => (e.kind === 'window' ? windowRange(e.window) : [e.gap.seq, e.gap.lastSeq])));
  await again.acknowledge([[1, 360]]);
  assert.equal(again.pending.length, 0);
  await again.close();
});

test('an ack for the parts of a window merged since does not drop the merge; an ack for its whole range does', async () => {
  const dir = await tempDir('spool-merge-ack');
  cleanups.push(() => dir.remove());
  let now = T0;
  const spool = await TelemetrySpool.open({ dir: dir.path, capBytes: 16 * 1024, log: recorder().log, now: () => now, mergeLevelsSec: [600] });
  for (const d of minuteWindows(60, 5)) {
    const [w] = full(spool, [d]);
    now = Date.parse(w!.end);
    await spool.append([w!], now);
  }
  const merged = spool.pending.find((e) => e.kind === 'window' && e.window.merged);
  assert.ok(merged && merged.kind === 'window');
  const [a, b] = windowRange(merged.window);
  assert.equal(await spool.acknowledge([[a, a]]), 0);
  assert.equal(await spool.acknowledge([[a, b]]), 1);
  await spool.close();
});
