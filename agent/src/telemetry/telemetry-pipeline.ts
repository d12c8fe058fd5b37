import {
  DeviceTopic, PROTOCOL_VERSION, createTelemetryValidator, errorMessage, windowRange,
  type SeqRange, type TelemetryBatch, type TelemetryGap, type TelemetryWindow,
} from '@edgepack/protocol';
import type { DeviceLink } from '../device-link.js';
import type { Logger } from '../logger.js';
import type { RequestRecord, ServingObserver, SwapRecord } from '../serving/inference-service.js';
import type { SystemSampler } from './system-figures.js';
import type { SpoolEntry, TelemetrySpool } from './telemetry-spool.js';
import type { WindowAggregator } from './window-aggregator.js';

export interface TelemetryPipelineOptions {
  link: DeviceLink;
  log: Logger;
  spool: TelemetrySpool;
  aggregator: WindowAggregator;
  sampler: Pick<SystemSampler, 'sample'>;
  /** After a (re)connect the backlog is sent after a random delay up to this (default 5 s), so a fleet coming back does not arrive at once. */
  reconnectJitterMs?: number;
  /** Windows (and gaps) sent per second at most while draining (default 50). */
  maxWindowsPerSec?: number;
  /** Entries per message at most (default 100). */
  batchEntries?: number;
  /** An entry sent this long ago without an ack is sent again (default 30 s). */
  ackTimeoutMs?: number;
  /** Epoch ms. */
  now: () => number;
  random?: () => number;
}

const MAX_BATCH_BYTES = 900 * 1024; // under protocol's 1 MiB limit, with room for the envelope

/**
 * Telemetry from counting to acked: closes windows on their aligned boundaries, spools them
 * (durably, before anything else), publishes them on the device's telemetry topic and drops
 * them from the spool only on the orchestrator's ack. While disconnected nothing is lost, only
 * spooled; after a reconnect the backlog drains after a random delay and at a capped rate.
 * An entry sent but not acked within ackTimeoutMs is sent again; the orchestrator dedupes.
 */
export class TelemetryPipeline implements ServingObserver {
  private timer?: NodeJS.Timeout;
  private sendTimer?: NodeJS.Timeout;
  private sending = false;
  private stopped = false;
  /** When each spooled entry (by its seq range) was last published. */
  private readonly sentAt = new Map<string, number>();
  private tokens: number;
  /**
   * Each round of resends without an ack in between doubles the ack timeout (up to 16×), so a
   * receiver that is up but not acking (down, or not yet speaking telemetry) is not sent the
   * whole spool every ackTimeoutMs. Any ack resets it.
   */
  private backoff = 1;
  private tokensAt: number;
  private readonly validate = createTelemetryValidator();
  private readonly onConnected = () => this.afterConnect();
  private readonly onMessage = (kind: string, payload: Buffer) => { if (kind === DeviceTopic.telemetryAck) void this.onAck(payload); };
  /** Counters for /metrics. */
  readonly stats = { published: 0, acked: 0, refused: 0 };

  constructor(private readonly o: TelemetryPipelineOptions) {
    this.tokens = this.batchEntries;
    this.tokensAt = o.now();
  }

  private get batchEntries(): number { return this.o.batchEntries ?? 100; }
  private get rate(): number { return this.o.maxWindowsPerSec ?? 50; }
  private random(): number { return (this.o.random ?? Math.random)(); }

  // The service reports into the aggregator; windows close on the timer.
  request(r: RequestRecord): void { this.o.aggregator.record(r); }
  swap(s: SwapRecord): void { this.o.aggregator.recordSwap(s); }

  start(): void {
    this.o.link.on('connected', this.onConnected);
    this.o.link.on('message', this.onMessage);
    this.schedule();
    if (this.o.link.connected) this.afterConnect();
  }

  private schedule(): void {
    if (this.stopped) return;
    // A little past the boundary, so the window is surely over by the aggregator's clock.
    const delay = Math.max(0, this.o.aggregator.openUntil - this.o.now()) + 20;
    this.timer = setTimeout(() => { void this.tick().finally(() => this.schedule()); }, delay);
  }

  /** Closes due windows, spools them with system figures, and sends. */
  async tick(): Promise<void> {
    const drafts = this.o.aggregator.takeClosed();
    if (drafts.length > 0) await this.spoolDrafts(drafts);
    // Spread a fleet's windows (which all close on the same boundaries) over a moment.
    const spread = Math.min(this.o.reconnectJitterMs ?? 5000, this.o.aggregator.windowSec * 250);
    this.later(this.random() * spread);
  }

  private async spoolDrafts(drafts: ReturnType<WindowAggregator['takeClosed']>): Promise<void> {
    try {
      const system = await this.o.sampler.sample();
      const windows: TelemetryWindow[] = drafts.map((d) => ({ v: PROTOCOL_VERSION, deviceId: this.o.link.deviceId, seq: this.o.spool.allocSeq(), ...d, system }));
      const openSince = Math.max(...drafts.map((d) => Date.parse(d.end)));
      await this.o.spool.append(windows, openSince);
    } catch (err) {
      this.o.log.error({ err: errorMessage(err) }, 'telemetry: could not spool closed windows');
    }
  }

  private afterConnect(): void {
    // Whatever was in flight on the old connection may be lost: all of it is due again.
    this.sentAt.clear();
    this.later(this.random() * (this.o.reconnectJitterMs ?? 5000), true);
  }

  /** Schedules a send pass; an earlier one already scheduled stands, unless `sooner` replaces it. */
  private later(ms: number, sooner = false): void {
    if (this.stopped) return;
    if (this.sendTimer && sooner) {
      clearTimeout(this.sendTimer);
      this.sendTimer = undefined;
    }
    if (this.sendTimer) return;
    this.sendTimer = setTimeout(() => { this.sendTimer = undefined; void this.send(); }, Math.round(ms));
  }

  /** Sends due entries in batches, within the rate cap, while connected. */
  private async send(): Promise<void> {
    if (this.sending || this.stopped) return;
    this.sending = true;
    // Fixed for this pass, and the backoff grows at most once per pass.
    const ackTimeout = (this.o.ackTimeoutMs ?? 30_000) * this.backoff;
    let backedOff = false;
    try {
      while (!this.stopped && this.o.link.connected) {
        const now = this.o.now();
        this.tokens = Math.min(this.batchEntries, this.tokens + ((now - this.tokensAt) / 1000) * this.rate);
        this.tokensAt = now;
        let resend = false;
        const due = this.o.spool.pending.filter((e) => {
          const at = this.sentAt.get(keyOf(e));
          if (at === undefined) return true;
          if (now - at < ackTimeout) return false;
          resend = true;
          return true;
        });
        if (resend && !backedOff) {
          backedOff = true;
          this.backoff = Math.min(16, this.backoff * 2);
        }
        if (due.length === 0) {
          // Nothing due now; look again when the oldest unacked entry's ack is overdue.
          const oldest = Math.min(...this.sentAt.values());
          if (Number.isFinite(oldest)) this.later(Math.max(50, oldest + (this.o.ackTimeoutMs ?? 30_000) * this.backoff - now));
          return;
        }
        // Whole batches: wait until the rate cap allows as many entries as one batch takes.
        const want = Math.min(this.batchEntries, due.length);
        if (this.tokens < want) {
          this.later(((want - this.tokens) / this.rate) * 1000);
          return;
        }
        const batch = this.batch(due, Math.floor(this.tokens));
        const count = batch.windows.length + batch.gaps.length;
        this.tokens -= count;
        try {
          await this.o.link.publish(DeviceTopic.telemetry, JSON.stringify(batch));
          const at = this.o.now();
          for (const w of batch.windows) this.sentAt.set(windowRange(w).join('-'), at);
          for (const g of batch.gaps) this.sentAt.set(`${g.seq}-${g.lastSeq}`, at);
          this.stats.published += count;
        } catch (err) {
          this.o.log.debug({ err: errorMessage(err) }, 'telemetry: publish failed; the spool keeps the windows');
          return;
        }
      }
    } finally {
      this.sending = false;
    }
  }

  private batch(due: SpoolEntry[], max: number): TelemetryBatch {
    const windows: TelemetryWindow[] = [];
    const gaps: TelemetryGap[] = [];
    let bytes = 0;
    for (const e of due) {
      if (windows.length + gaps.length >= Math.min(max, this.batchEntries)) break;
      if (bytes + e.bytes > MAX_BATCH_BYTES && windows.length + gaps.length > 0) break;
      bytes += e.bytes;
      if (e.kind === 'window') windows.push(e.window);
      else gaps.push(e.gap);
    }
    return { v: PROTOCOL_VERSION, deviceId: this.o.link.deviceId, sentAt: new Date(this.o.now()).toISOString(), windows, gaps };
  }

  private async onAck(payload: Buffer): Promise<void> {
    const p = this.validate.ack(payload);
    if (!p.ok) return this.o.log.warn({ code: p.code }, `telemetry: ack ignored: ${p.reason}`);
    if (p.value.deviceId !== this.o.link.deviceId) return this.o.log.warn({ deviceId: p.value.deviceId }, 'telemetry: ack for another device ignored');
    for (const r of p.value.refused) this.o.log.warn({ seq: r.seq, lastSeq: r.lastSeq, code: r.code }, `telemetry: the orchestrator refused spooled telemetry: ${r.reason}`);
    this.backoff = 1;
    const ranges: SeqRange[] = [...p.value.acked, ...p.value.refused.map((r) => [r.seq, r.lastSeq] as SeqRange)];
    try {
      const removed = await this.o.spool.acknowledge(ranges);
      this.stats.acked += removed;
      this.stats.refused += p.value.refused.length;
    } catch (err) {
      this.o.log.error({ err: errorMessage(err) }, 'telemetry: could not record an ack; the windows will be sent again');
    }
    const live = new Set(this.o.spool.pending.map(keyOf));
    for (const key of this.sentAt.keys()) if (!live.has(key)) this.sentAt.delete(key);
    // The wait may have grown while nothing was acked; with the backoff reset, look again now.
    this.later(0, true);
  }

  /** Flushes the open window into the spool (so a restart loses nothing) and stops. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.sendTimer);
    this.o.link.off('connected', this.onConnected);
    this.o.link.off('message', this.onMessage);
    const drafts = this.o.aggregator.closeEarly();
    if (drafts.length > 0) await this.spoolDrafts(drafts);
    await this.o.spool.close();
  }
}

/** A merge gives an entry a new range, hence a new key: it is due at once. */
function keyOf(e: SpoolEntry): string {
  return (e.kind === 'window' ? windowRange(e.window) : [e.gap.seq, e.gap.lastSeq]).join('-');
}
