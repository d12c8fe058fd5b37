// The telemetry pipeline's sending discipline, over a recording link (the MQTT connection is
// not what is tested here; agent-telemetry.test.ts runs it over a real broker): after a
// reconnect it waits its jitter, drains at most at its rate, resends what is not acked, and
// backs off while nothing is acked. Real spool files, real aggregator, real system sampler.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { PROTOCOL_VERSION, createTelemetryAck, type DeviceTopicKind, type TelemetryBatch, type TelemetryWindow } from '@edgepack/protocol';
import { DeviceLink } from '@edgepack/agent/device-link.js';
import type { Logger } from '@edgepack/agent/logger.js';
import { SystemSampler } from '@edgepack/agent/telemetry/system-figures.js';
import { TelemetryPipeline } from '@edgepack/agent/telemetry/telemetry-pipeline.js';
import { TelemetrySpool } from '@edgepack/agent/telemetry/telemetry-spool.js';
import { WindowAggregator } from '@edgepack/agent/telemetry/window-aggregator.js';
import { tempDir, until } from '../support/processes.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

const silent: Logger = { error() {}, warn() {}, info() {}, debug() {} };

/** A link whose "broker" records what is published, with when. */
class RecordingLink extends DeviceLink {
  up = false;
  readonly sent: { at: number; batch: TelemetryBatch }[] = [];
  override get connected(): boolean { return this.up; }
  override async publish(kind: DeviceTopicKind, payload: string | Buffer): Promise<void> {
    if (!this.up) throw new Error('not connected');
    if (kind === 'telemetry') this.sent.push({ at: performance.now(), batch: JSON.parse(payload.toString()) });
  }
  connect(): void { this.up = true; this.emit('connected'); }
  ack(acked: [number, number][]): void { this.deliver('telemetry-ack', Buffer.from(JSON.stringify(createTelemetryAck(this.deviceId, acked)))); }
}

async function backlog(n: number, opts: { rate: number; jitterMs: number; ackTimeoutMs: number }) {
  const dir = await tempDir('pipeline');
  cleanups.push(() => dir.remove());
  const now = () => Date.now();
  const spool = await TelemetrySpool.open({ dir: dir.path, capBytes: 4 << 20, log: silent, now });
  const start = Date.parse('2026-03-01T10:00:00Z');
  const windows: TelemetryWindow[] = [];
  for (let i = 0; i < n; i++) {
    let t = start + i * 60_000;
    const agg = new WindowAggregator(60, () => t);
    t += 60_000;
    for (const d of agg.takeClosed()) windows.push({ v: PROTOCOL_VERSION, deviceId: 'dev_pipe', seq: spool.allocSeq(), ...d, system: { cpuPercent: 1, rssBytes: 1, memAvailableBytes: 1, diskFreeBytes: 1 } });
  }
  await spool.append(windows, now());
  const link = new RecordingLink('dev_pipe');
  const pipeline = new TelemetryPipeline({
    link, log: silent, spool, aggregator: new WindowAggregator(3600, now), sampler: new SystemSampler({ dataDir: dir.path }), now,
    reconnectJitterMs: opts.jitterMs, maxWindowsPerSec: opts.rate, batchEntries: 25, ackTimeoutMs: opts.ackTimeoutMs, random: () => 1,
  });
  pipeline.start();
  cleanups.push(() => pipeline.stop());
  return { link, spool, pipeline };
}

test('after a reconnect the backlog waits out the jitter, then drains in batches at no more than the rate cap', async () => {
  const { link, spool } = await backlog(150, { rate: 100, jitterMs: 300, ackTimeoutMs: 60_000 });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(link.sent.length, 0, 'nothing is sent while disconnected');
  const connectedAt = performance.now();
  link.connect();
  await until('the whole backlog sent', async () => link.sent.reduce((n, s) => n + s.batch.windows.length, 0) >= 150, 20_000, 20);
  assert.ok(link.sent[0]!.at - connectedAt >= 290, `first batch ${Math.round(link.sent[0]!.at - connectedAt)} ms after the connect, jitter is 300`);
  assert.ok(link.sent.every((s) => s.batch.windows.length <= 25));
  // 150 entries, a burst of 25, then 100/s: at least 1.25 s from the first batch to the last.
  const span = link.sent.at(-1)!.at - link.sent[0]!.at;
  assert.ok(span >= 1200, `drained in ${Math.round(span)} ms, faster than the rate cap allows`);
  const seqs = link.sent.flatMap((s) => s.batch.windows.map((w) => w.seq));
  assert.deepEqual(seqs, Array.from({ length: 150 }, (_, i) => i + 1), 'oldest first, each once');
  assert.equal(spool.pending.length, 150, 'sent is not acked: everything is still spooled');
  link.ack([[1, 150]]);
  await until('acked entries leave the spool', async () => spool.pending.length === 0, 5000, 20);
});

test('what is not acked is sent again after the ack timeout, less often while nothing is acked; an ack resets that', async () => {
  const { link, spool } = await backlog(3, { rate: 1000, jitterMs: 0, ackTimeoutMs: 300 });
  link.connect();
  await until('sent three more times', async () => link.sent.length >= 4, 10_000, 10);
  const gaps = link.sent.slice(1, 4).map((s, i) => s.at - link.sent[i]!.at);
  // 300 ms, then 600, then 1200: each round without an ack doubles the wait.
  assert.ok(gaps[0]! >= 280 && gaps[1]! >= 580 && gaps[2]! >= 1180, `resend gaps ${gaps.map(Math.round).join(', ')} ms`);
  assert.ok(link.sent.every((s) => s.batch.windows.length === 3));
  link.ack([[1, 1]]);
  await until('the acked one is gone', async () => spool.pending.length === 2, 5000, 10);
  const n = link.sent.length;
  const ackedAt = performance.now();
  await until('the rest sent again', async () => link.sent.length > n, 5000, 10);
  assert.ok(link.sent.at(-1)!.at - ackedAt < 1000, 'after an ack the wait is back to the ack timeout');
  assert.deepEqual(link.sent.at(-1)!.batch.windows.map((w) => w.seq), [2, 3]);
});
