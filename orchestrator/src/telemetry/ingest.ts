/**
 * Telemetry ingestion: the receiver protocol/src/telemetry.ts describes, batched.
 *
 * Per message on a device's `telemetry` topic (receive, on the broker's publish event): queue
 * it as it came, and flush 250 ms after the first queued message, or on the next turn of the
 * event loop once the queue may hold 1,000 windows (by size: a window is at least 550 bytes of
 * JSON), whichever comes first. Nothing heavier happens on the broker's event: a burst of
 * messages read off the sockets in one turn costs a copy each, not a validation each.
 * Per flush (synchronous, so nothing else touches the database in between), one transaction of
 * at most 1,000 entries (maxBatchWindows) from the head of the queue; for each message:
 *   1. validate with protocol's validator (the device is the topic's). A refused batch (not
 *      JSON, too large, bad envelope, another device) has no seqs to ack: a Notice answers it.
 *   2. a device unknown to the database or revoked: dropped, with a log line (the broker lets
 *      only enrolled devices in, so this is a revocation racing its last messages).
 *   3. planTelemetryIngest over the device's stored ranges near the message's seqs (read inside
 *      the transaction, so the messages before it count), then delete what the plan
 *      supersedes, insert the new windows and record the gaps. A message bigger than what is
 *      left of the transaction continues in the next one: safe, because only a fully committed
 *      message is acked and a redelivery of a half-committed one is deduplicated.
 * Then, only after the commit, the acks (QoS 1 on `telemetry-ack`), the notices for refused
 * entries and the metrics. Anything still queued is flushed on the next turn of the loop, so
 * HTTP requests and broker traffic run between two transactions: a backlog never holds the
 * loop for more than one.
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
import { addInto, aggOfWindow, emptyAgg, type Agg } from './aggregate.js';
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
  /** Set when the message reaches the head of the queue: its validation, device and plan. */
  ready?: { profile: string; batch: ParsedTelemetryBatch; plan: TelemetryIngestPlan } | null;
  /** Entries of the plan (inserts, then gaps) applied so far. */
  applied: number;
}

/** Net figures a transaction adds, per (profile, bundle), for the metrics once it commits. */
type Deltas = Map<string, { profile: string; bundleId: string | null; agg: Agg }>;

export class TelemetryIngest {
  private readonly check = createTelemetryValidator();
  private queue: Queued[] = [];
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
    this.queue.push({ deviceId, payload, bytes, receivedMs: at, applied: 0 });
    this.queuedBytes += bytes;
    if (this.queuedBytes >= this.maxBatch * MIN_WINDOW_BYTES) this.flushSoon();
    else this.timer ??= setTimeout(() => { this.timer = undefined; this.flush(); }, this.deps.maxDelayMs ?? 250);
  }

  /**
   * Validates a message at the head of the queue and plans it (inside the transaction); null
   * when it is refused as a whole (answered with a notice) or dropped.
   */
  private prepare(q: Queued): Queued['ready'] {
    const { log } = this.deps;
    const parsed = this.check.batch(q.payload, { deviceId: q.deviceId, now: new Date(q.receivedMs) });
    if (!parsed.ok) {
      this.stats.refusedMessages++;
      log.warn({ deviceId: q.deviceId, code: parsed.code }, `telemetry refused: ${parsed.reason}`);
      this.reply(this.deps.replies.notice(q.deviceId, parsed.code, parsed.reason));
      return null;
    }
    const device = this.deps.devices.getDevice(q.deviceId);
    if (!device || device.revokedAt) {
      this.stats.dropped++;
      log.warn({ deviceId: q.deviceId }, `telemetry from ${device ? 'a revoked' : 'an unknown'} device dropped (${parsed.value.windows.length} windows)`);
      return null;
    }
    return { profile: device.profile, batch: parsed.value, plan: this.plan(q.deviceId, parsed.value) };
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

  /**
   * One transaction of at most maxBatchWindows entries from the head of the queue, then the
   * answers to every message it completed. What is left is flushed on the next turn of the
   * loop, so a backlog never holds the loop for more than one transaction.
   */
  flush(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined; }
    if (this.immediate) { clearImmediate(this.immediate); this.immediate = undefined; }
    if (this.queue.length === 0) return;
    this.stats.flushes++;
    const { telemetry, log } = this.deps;
    const done: Queued[] = [];
    const deltas: Deltas = new Map();
    const lost: { profile: string; reason: string; windows: number }[] = [];
    const started = performance.now();
    let n = 0;
    try {
      this.begin.run();
      // Every message counts at least one, so a run of messages with nothing to store (duplicates, refusals) is bounded too.
      while (this.queue.length > 0 && n < this.maxBatch) {
        const q = this.queue[0]!;
        if (q.ready === undefined) q.ready = this.prepare(q);
        const r = q.ready;
        const total = r ? r.plan.insert.length + r.plan.gaps.length : 0;
        if (total === 0) n++;
        while (r && q.applied < total && n < this.maxBatch) {
          if (q.applied < r.plan.insert.length) this.applyInsert(q.deviceId, r.profile, r.plan.insert[q.applied]!, q.receivedMs, deltas);
          else this.applyGap(q.deviceId, r.profile, r.plan.gaps[q.applied - r.plan.insert.length]!, q.receivedMs, lost);
          q.applied++;
          n++;
        }
        if (q.applied < total) break; // the rest of this message goes in the next transaction
        if (r && r.batch.windows.length > 0) {
          let end = 0;
          for (const w of r.batch.windows) end = Math.max(end, Date.parse(w.end));
          telemetry.touchDevice(q.deviceId, end, q.receivedMs);
        }
        this.queue.shift();
        this.queuedBytes -= q.bytes;
        if (r) done.push(q);
      }
      this.commitStmt.run();
    } catch (err) {
      try { this.rollback.run(); } catch { /* the transaction is gone already */ }
      // Nothing of this transaction is kept; the rest of the queue would most likely fail the
      // same way (a full disk). None of it is acked: the devices send it all again.
      const dropped = this.queue.length + done.length;
      this.queue = [];
      this.queuedBytes = 0;
      log.error({ err: errorMessage(err), messages: dropped }, 'telemetry commit failed; those batches are not acked and will come again');
      return;
    }
    this.stats.transactions++;
    const { metrics } = this.deps;
    metrics?.commit((performance.now() - started) / 1000, n);
    for (const d of deltas.values()) metrics?.committed(d.profile, d.bundleId, d.agg);
    for (const l of lost) metrics?.lost(l.profile, l.reason, l.windows);
    for (const q of done) this.answer(q.deviceId, q.ready!.plan);
    if (this.queue.length > 0) this.flushSoon();
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
    const add = (bundleId: string | null, agg: Agg, sign: 1 | -1) => {
      const key = `${profile}\u0000${bundleId ?? ''}`;
      let d = deltas.get(key);
      if (!d) deltas.set(key, (d = { profile, bundleId, agg: emptyAgg() }));
      addInto(d.agg, agg, sign);
    };
    for (const [seq] of ins.supersedes) {
      const old = telemetry.windowAt(deviceId, seq);
      if (!old) continue; // the pruned-seqs marker, not a row
      telemetry.deleteWindow(deviceId, old);
      if (metrics) add(old.bundleId, old.agg, -1);
    }
    telemetry.insertWindow(w, receivedMs);
    if (metrics) add(w.bundleId, aggOfWindow(w), 1);
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
    while (this.queue.length > 0) {
      const before = this.queue.length;
      const applied = this.queue[0]!.applied;
      this.flush();
      if (this.queue.length === before && this.queue[0]?.applied === applied) break; // nothing moves (cannot happen; never spin)
    }
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
