/**
 * Telemetry ingestion: the receiver protocol/src/telemetry.ts describes, batched.
 *
 * Per message on a device's `telemetry` topic (receive, on the broker's publish event): queue
 * it as it came, and flush 250 ms after the first queued message, or on the next turn of the
 * event loop once the queue may hold 1,000 windows (by size: a window is at least 550 bytes of
 * JSON), whichever comes first. Nothing heavier happens on the broker's event: a burst of
 * messages read off the sockets in one turn costs a copy each, not a validation each.
 * A flush works in turns of the event loop, so HTTP requests and broker traffic run in between:
 *   1. validate (for at most 8 ms a turn) with protocol's validator; the device is the topic's.
 *      A refused batch (not JSON, too large, bad envelope, another device) has no seqs to ack:
 *      a Notice answers it. A device unknown to the database or revoked: dropped, with a log
 *      line (the broker lets only enrolled devices in; this is a revocation racing its last
 *      messages).
 *   2. once 1,000 entries are validated (or nothing is left to validate), ONE transaction of at
 *      most 1,000 entries (maxBatchWindows): for each message, planTelemetryIngest over the
 *      device's stored ranges near its seqs (read inside the transaction, so the messages before
 *      it count), delete what the plan supersedes, insert the new windows, record the gaps. A
 *      message bigger than what is left of the transaction continues in the next one: safe,
 *      because only a fully committed message is acked, and a redelivery of a half-committed
 *      one is deduplicated.
 *   3. only after the commit: the acks (QoS 1 on `telemetry-ack`), the notices for refused
 *      entries, and the metrics.
 * A failed commit (full disk, say) acks nothing: the devices keep the windows spooled and send
 * them again. So does a crash before the commit, and a queue past maxPendingWindows.
 */
import { performance } from 'node:perf_hooks';
import {
  DeviceTopic, PROTOCOL_VERSION, createTelemetryValidator, deviceTopic, errorMessage, planTelemetryIngest, windowRange,
  type ErrorCode, type Notice, type ParsedTelemetryBatch, type SeqRange, type TelemetryAck, type TelemetryIngestPlan,
} from '@edgepack/protocol';
import type { Aedes } from 'aedes';
import type { Logger } from '../logger.js';
import { addInto, addWindowCounts, emptyAgg, type Agg } from './aggregate.js';
import type { IngestMetrics } from './metrics.js';
import type { TelemetryStore } from './telemetry-store.js';

/** How the ingest answers devices: the MQTT edge in the server, a recorder in tests. */
export interface TelemetryReplies {
  ack(deviceId: string, ack: TelemetryAck): Promise<void>;
  notice(deviceId: string, code: ErrorCode, message: string): Promise<void>;
}

/** Replies through the embedded broker, QoS 1 (MQTT 3.1.1 §4.3.2: delivered at least once, so a lost ack is resent by the broker to a persistent session). */
export function brokerReplies(aedes: Aedes): TelemetryReplies {
  const publish = (topic: string, payload: string) => new Promise<void>((resolve, reject) => {
    aedes.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: false, dup: false } as never, (err?: Error) => (err ? reject(err) : resolve()));
  });
  return {
    ack: (deviceId, ack) => publish(deviceTopic(deviceId, DeviceTopic.telemetryAck), JSON.stringify(ack)),
    notice: (deviceId, code, message) => {
      const n: Notice = { v: PROTOCOL_VERSION, code, message, topic: deviceTopic(deviceId, DeviceTopic.telemetry) };
      return publish(deviceTopic(deviceId, DeviceTopic.notice), JSON.stringify(n));
    },
  };
}

export interface TelemetryIngestOptions {
  /** Entries (windows + gaps) per transaction at most, and the queue size (estimated by bytes) that flushes at once (default 1,000). */
  maxBatchWindows?: number;
  /** A queued message waits at most this long for its transaction (default 250 ms). */
  maxDelayMs?: number;
  /** Queued payload bytes past which new messages are dropped unacked, so the queue cannot grow without bound (default 64 MiB). */
  maxPendingBytes?: number;
}

/** The least JSON a window takes (two histograms of 43 counts and the rest): queued bytes ÷ this bounds the windows queued. */
const MIN_WINDOW_BYTES = 550;

export interface TelemetryIngestDeps extends TelemetryIngestOptions {
  telemetry: TelemetryStore;
  /** The device registry: who may send (unrevoked) and its profile (a metrics label). */
  devices: { getDevice(id: string): { profile: string; revokedAt: string | null } | undefined };
  replies: TelemetryReplies;
  log: Logger;
  now: () => Date;
  metrics?: IngestMetrics;
}

interface Queued {
  deviceId: string;
  payload: Uint8Array | string;
  bytes: number;
  receivedMs: number;
}

/** A validated message of an enrolled device, waiting for its transaction. */
interface Ready {
  deviceId: string;
  profile: string;
  batch: ParsedTelemetryBatch;
  receivedMs: number;
  bytes: number;
  /** Planned when it reaches the head, inside the transaction that starts applying it. */
  plan?: TelemetryIngestPlan;
  /** Entries of the plan (inserts, then gaps) applied so far. */
  applied: number;
}

/** Net figures a transaction adds, per (profile, bundle), for the metrics once it commits. */
type Deltas = Map<string, { profile: string; bundleId: string | null; agg: Agg }>;

/** Validation gives the loop back after this long, so a burst of messages is validated over several turns. */
const VALIDATE_SLICE_MS = 8;

export class TelemetryIngest {
  private readonly check = createTelemetryValidator();
  /** As received, not validated yet. */
  private raw: Queued[] = [];
  /** Validated, in the order received. */
  private ready: Ready[] = [];
  private readyEntries = 0;
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private closed = false;
  private lastBehindLog = 0;
  private readonly begin;
  private readonly commitStmt;
  private readonly rollback;
  /** Counters for tests and the bench. */
  readonly stats = { messages: 0, refusedMessages: 0, dropped: 0, transactions: 0, flushes: 0, acked: 0 };

  constructor(private readonly deps: TelemetryIngestDeps) {
    this.begin = deps.telemetry.db.prepare('BEGIN');
    this.commitStmt = deps.telemetry.db.prepare('COMMIT');
    this.rollback = deps.telemetry.db.prepare('ROLLBACK');
  }

  private get maxBatch(): number { return Math.max(1, this.deps.maxBatchWindows ?? 1000); }

  /** One message from `deviceId`'s telemetry topic, queued as it came. Never throws. */
  receive(deviceId: string, payload: Uint8Array | string): void {
    if (this.closed) return;
    this.stats.messages++;
    const at = this.deps.now().getTime();
    const bytes = typeof payload === 'string' ? payload.length : payload.byteLength;
    if (this.queuedBytes + bytes > (this.deps.maxPendingBytes ?? 64 << 20)) {
      this.stats.dropped++;
      if (at - this.lastBehindLog > 10_000) {
        this.lastBehindLog = at;
        this.deps.log.warn({ deviceId, queuedBytes: this.queuedBytes }, 'telemetry ingest is behind: batch not acked; the device sends it again');
      }
      return;
    }
    this.raw.push({ deviceId, payload, bytes, receivedMs: at });
    this.queuedBytes += bytes;
    if (this.queuedBytes >= this.maxBatch * MIN_WINDOW_BYTES) this.flushSoon();
    else this.timer ??= setTimeout(() => { this.timer = undefined; this.flush(); }, this.deps.maxDelayMs ?? 250);
  }

  /** Validates one received message; a refused one is answered with a notice, one of an unknown or revoked device dropped. */
  private validate(q: Queued): void {
    const { log } = this.deps;
    const parsed = this.check.batch(q.payload, { deviceId: q.deviceId, now: new Date(q.receivedMs) });
    if (!parsed.ok) {
      this.stats.refusedMessages++;
      this.queuedBytes -= q.bytes;
      log.warn({ deviceId: q.deviceId, code: parsed.code }, `telemetry refused: ${parsed.reason}`);
      this.reply(this.deps.replies.notice(q.deviceId, parsed.code, parsed.reason));
      return;
    }
    const device = this.deps.devices.getDevice(q.deviceId);
    if (!device || device.revokedAt) {
      this.stats.dropped++;
      this.queuedBytes -= q.bytes;
      log.warn({ deviceId: q.deviceId }, `telemetry from ${device ? 'a revoked' : 'an unknown'} device dropped (${parsed.value.windows.length} windows)`);
      return;
    }
    const entries = parsed.value.windows.length + parsed.value.gaps.length;
    this.ready.push({ deviceId: q.deviceId, profile: device.profile, batch: parsed.value, receivedMs: q.receivedMs, bytes: q.bytes, applied: 0 });
    this.readyEntries += Math.max(1, entries);
  }

  /** On the next turn of the loop, so that messages already read off the sockets join the transaction, and requests waiting on the loop run first. */
  private flushSoon(): void {
    this.immediate ??= setImmediate(() => { this.immediate = undefined; this.flush(); });
  }

  private reply(p: Promise<void>): void {
    const q = p.catch((err: unknown) => this.deps.log.debug({ err: errorMessage(err) }, 'telemetry reply not published'));
    this.inFlight.add(q);
    void q.finally(() => this.inFlight.delete(q));
  }

  /** Whether anything is queued, validated or not. */
  get pending(): boolean {
    return this.raw.length > 0 || this.ready.length > 0;
  }

  /**
   * One step of the pipeline, in one turn of the event loop: validate received messages (for
   * at most VALIDATE_SLICE_MS, or until a transaction's worth is ready), then, once 1,000
   * entries are ready or nothing is left to validate, one transaction of at most 1,000 entries
   * and the answers to every message it completed. Whatever is left continues on the next turn.
   */
  flush(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined; }
    if (this.immediate) { clearImmediate(this.immediate); this.immediate = undefined; }
    if (!this.pending) return;
    this.stats.flushes++;
    const sliceEnd = performance.now() + VALIDATE_SLICE_MS;
    try {
      while (this.raw.length > 0 && this.readyEntries < this.maxBatch && performance.now() < sliceEnd) this.validate(this.raw.shift()!);
    } catch (err) {
      // Only the device lookup can throw here (the database is gone): nothing is acked, all comes again.
      this.abandon(err, 'telemetry device lookup failed');
      return;
    }
    if (this.raw.length > 0 && this.readyEntries < this.maxBatch) {
      this.flushSoon();
      return;
    }
    if (this.ready.length > 0) this.transaction();
    if (this.pending) this.flushSoon();
  }

  /** Drops everything queued, unacked: the devices keep it spooled and send it again. */
  private abandon(err: unknown, what: string): void {
    const messages = this.raw.length + this.ready.length;
    this.raw = [];
    this.ready = [];
    this.readyEntries = 0;
    this.queuedBytes = 0;
    this.deps.log.error({ err: errorMessage(err), messages }, `${what}; those batches are not acked and will come again`);
  }

  /** One transaction of at most maxBatchWindows entries from the head of the validated queue, then its answers. */
  private transaction(): void {
    const { telemetry, metrics } = this.deps;
    const done: Ready[] = [];
    const deltas: Deltas = new Map();
    const lost: { profile: string; reason: string; windows: number }[] = [];
    const started = performance.now();
    let n = 0;
    try {
      this.begin.run();
      // Every message counts at least one, so a run of messages with nothing to store (duplicates, refusals) is bounded too.
      while (this.ready.length > 0 && n < this.maxBatch) {
        const r = this.ready[0]!;
        const plan = (r.plan ??= this.plan(r.deviceId, r.batch));
        const total = plan.insert.length + plan.gaps.length;
        if (total === 0) n++;
        while (r.applied < total && n < this.maxBatch) {
          if (r.applied < plan.insert.length) this.applyInsert(r.deviceId, r.profile, plan.insert[r.applied]!, r.receivedMs, deltas);
          else this.applyGap(r.deviceId, r.profile, plan.gaps[r.applied - plan.insert.length]!, r.receivedMs, lost);
          r.applied++;
          n++;
        }
        if (r.applied < total) break; // the rest of this message goes in the next transaction
        if (r.batch.windows.length > 0) {
          let end = 0;
          for (const w of r.batch.windows) end = Math.max(end, Date.parse(w.end));
          telemetry.touchDevice(r.deviceId, end, r.receivedMs);
        }
        done.push(this.ready.shift()!);
      }
      this.commitStmt.run();
    } catch (err) {
      try { this.rollback.run(); } catch { /* the transaction is gone already */ }
      // Nothing of this transaction is kept; the rest of the queue would most likely fail the
      // same way (a full disk). None of it is acked: the devices send it all again.
      this.abandon(err, 'telemetry commit failed');
      return;
    }
    this.readyEntries = Math.max(0, this.readyEntries - n);
    for (const r of done) this.queuedBytes -= r.bytes;
    this.stats.transactions++;
    metrics?.commit((performance.now() - started) / 1000, n);
    for (const d of deltas.values()) metrics?.committed(d.profile, d.bundleId, d.agg);
    for (const l of lost) metrics?.lost(l.profile, l.reason, l.windows);
    for (const r of done) this.answer(r.deviceId, r.plan!);
  }

  /** The plan for one message over what is stored for its device now. */
  private plan(deviceId: string, batch: ParsedTelemetryBatch): TelemetryIngestPlan {
    let stored: SeqRange[] = [];
    if (batch.windows.length > 0) {
      let lo = Infinity;
      let hi = 0;
      for (const w of batch.windows) {
        const [a, b] = windowRange(w);
        if (a < lo) lo = a;
        if (b > hi) hi = b;
      }
      stored = this.deps.telemetry.rangesNear(deviceId, lo, hi);
    }
    return planTelemetryIngest(batch, stored);
  }

  private applyInsert(deviceId: string, profile: string, ins: TelemetryIngestPlan['insert'][number], receivedMs: number, deltas: Deltas): void {
    const { telemetry, metrics } = this.deps;
    const w = ins.window;
    const delta = (bundleId: string | null) => {
      const key = `${profile}\u0000${bundleId ?? ''}`;
      let d = deltas.get(key);
      if (!d) deltas.set(key, (d = { profile, bundleId, agg: emptyAgg() }));
      return d.agg;
    };
    for (const [seq] of ins.supersedes) {
      const old = telemetry.windowAt(deviceId, seq);
      if (!old) continue; // the pruned-seqs marker, not a row
      telemetry.deleteWindow(deviceId, old);
      if (metrics) addInto(delta(old.bundleId), old.agg, -1);
    }
    telemetry.insertWindow(w, receivedMs);
    if (metrics) addWindowCounts(delta(w.bundleId), w);
  }

  private applyGap(deviceId: string, profile: string, g: TelemetryIngestPlan['gaps'][number], receivedMs: number, lost: { profile: string; reason: string; windows: number }[]): void {
    const { telemetry } = this.deps;
    // Seqs of the gap that are stored (or were, before the raw retention pruned them) are not lost.
    const lostWindows = Math.max(0, g.windows - coveredCount([g.seq, g.lastSeq], telemetry.rangesNear(deviceId, g.seq, g.lastSeq)));
    if (telemetry.insertGap(deviceId, g, lostWindows, receivedMs)) lost.push({ profile, reason: g.reason, windows: lostWindows });
  }

  private answer(deviceId: string, plan: TelemetryIngestPlan): void {
    const { log, replies, metrics } = this.deps;
    metrics?.windows('stored', plan.insert.length);
    metrics?.windows('duplicate', plan.duplicates.length);
    metrics?.windows('refused', plan.refused.length);
    this.stats.acked++;
    this.reply(replies.ack(deviceId, plan.ack));
    if (plan.refused.length > 0) {
      const first = plan.refused[0]!;
      log.warn({ deviceId, code: first.code, refused: plan.refused.length }, `telemetry entries refused: ${first.reason}`);
      const more = plan.refused.length > 1 ? ` (and ${plan.refused.length - 1} more entries refused)` : '';
      this.reply(replies.notice(deviceId, first.code as ErrorCode, `${first.reason}${more}`));
    }
  }

  /** Resolves once nothing is queued and every reply has been handed to the broker. */
  async idle(): Promise<void> {
    while (this.pending) this.flush();
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  /** Commits and acks what is queued; later messages are ignored (the devices send them again). */
  async close(): Promise<void> {
    await this.idle();
    this.closed = true;
  }
}

/** How many seqs of `range` the (disjoint) `stored` ranges cover. */
function coveredCount(range: SeqRange, stored: readonly SeqRange[]): number {
  let n = 0;
  for (const [a, b] of stored) {
    const lo = Math.max(a, range[0]);
    const hi = Math.min(b, range[1]);
    if (hi >= lo) n += hi - lo + 1;
  }
  return n;
}
