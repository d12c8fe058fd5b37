/**
 * Telemetry ingestion: the receiver protocol/src/telemetry.ts describes, batched.
 *
 * Per message on a device's `telemetry` topic (receive, on the broker's publish event):
 *   1. validate with protocol's validator (the device is the topic's). A refused batch (not
 *      JSON, too large, bad envelope, another device) has no seqs to ack: a Notice answers it.
 *   2. a device unknown to the database or revoked: dropped, with a log line (the broker lets
 *      only enrolled devices in, so this is a revocation racing its last messages).
 *   3. queue it. The queue is flushed 250 ms after its first message, or at once when it holds
 *      1,000 entries, whichever comes first.
 * Per flush (one synchronous pass, so nothing else touches the database in between):
 *   4. for each message, planTelemetryIngest over the device's stored ranges near the message's
 *      seqs (read inside the transaction, so the messages before it in the same flush count),
 *      then delete what the plan supersedes, insert the new windows and record the gaps.
 *      Entries go in transactions of at most 1,000 (maxBatchWindows); a message split across
 *      two is safe because only a fully committed message is acked, and a redelivery of a
 *      half-committed one is deduplicated.
 *   5. only after the commit, the acks (QoS 1 on `telemetry-ack`), the notices for refused
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
  /** Entries (windows + gaps) per transaction at most, and the queue size that flushes at once (default 1,000). */
  maxBatchWindows?: number;
  /** A queued message waits at most this long for its transaction (default 250 ms). */
  maxDelayMs?: number;
  /** Queued entries past which new messages are dropped unacked, so the queue cannot grow without bound (default 50,000). */
  maxPendingWindows?: number;
}

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
  profile: string;
  batch: ParsedTelemetryBatch;
  receivedMs: number;
  entries: number;
}

interface Done {
  q: Queued;
  plan: TelemetryIngestPlan;
}

/** Net figures a transaction adds, per (profile, bundle), for the metrics once it commits. */
type Deltas = Map<string, { profile: string; bundleId: string | null; agg: Agg }>;

export class TelemetryIngest {
  private readonly check = createTelemetryValidator();
  private queue: Queued[] = [];
  private queued = 0;
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

  /** One message from `deviceId`'s telemetry topic. Never throws. */
  receive(deviceId: string, payload: Uint8Array | string): void {
    const { log, now } = this.deps;
    if (this.closed) return;
    this.stats.messages++;
    const at = now();
    const parsed = this.check.batch(payload, { deviceId, now: at });
    if (!parsed.ok) {
      this.stats.refusedMessages++;
      log.warn({ deviceId, code: parsed.code }, `telemetry refused: ${parsed.reason}`);
      this.reply(this.deps.replies.notice(deviceId, parsed.code, parsed.reason));
      return;
    }
    let device;
    try {
      device = this.deps.devices.getDevice(deviceId);
    } catch (err) {
      log.error({ deviceId, err: errorMessage(err) }, 'telemetry: device lookup failed; the batch is not acked and will come again');
      return;
    }
    if (!device || device.revokedAt) {
      this.stats.dropped++;
      log.warn({ deviceId }, `telemetry from ${device ? 'a revoked' : 'an unknown'} device dropped (${parsed.value.windows.length} windows)`);
      return;
    }
    const entries = parsed.value.windows.length + parsed.value.gaps.length + parsed.value.refused.length;
    if (this.queued + entries > (this.deps.maxPendingWindows ?? 50_000)) {
      this.stats.dropped++;
      if (at.getTime() - this.lastBehindLog > 10_000) {
        this.lastBehindLog = at.getTime();
        log.warn({ deviceId, queued: this.queued }, 'telemetry ingest is behind: batch not acked; the device sends it again');
      }
      return;
    }
    this.queue.push({ deviceId, profile: device.profile, batch: parsed.value, receivedMs: at.getTime(), entries });
    this.queued += entries;
    if (this.queued >= this.maxBatch) {
      // On the next turn, so that messages already read off the sockets join this batch.
      this.immediate ??= setImmediate(() => { this.immediate = undefined; this.flush(); });
    } else {
      this.timer ??= setTimeout(() => { this.timer = undefined; this.flush(); }, this.deps.maxDelayMs ?? 250);
    }
  }

  private reply(p: Promise<void>): void {
    const q = p.catch((err: unknown) => this.deps.log.debug({ err: errorMessage(err) }, 'telemetry reply not published'));
    this.inFlight.add(q);
    void q.finally(() => this.inFlight.delete(q));
  }

  /** Commits everything queued, then acks it. Synchronous up to the replies. */
  flush(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined; }
    if (this.immediate) { clearImmediate(this.immediate); this.immediate = undefined; }
    const queue = this.queue;
    this.queue = [];
    this.queued = 0;
    if (queue.length === 0) return;
    this.stats.flushes++;
    const { telemetry, log } = this.deps;
    const committed: Done[] = [];
    let done: Done[] = [];
    let open = false;
    let inTx = 0;
    let started = 0;
    let deltas: Deltas = new Map();
    let lost: { profile: string; reason: string; windows: number }[] = [];
    const ensure = () => {
      if (open) return;
      this.begin.run();
      open = true;
      inTx = 0;
      started = performance.now();
    };
    const commit = () => {
      if (!open) return;
      this.commitStmt.run();
      open = false;
      this.stats.transactions++;
      this.deps.metrics?.commit((performance.now() - started) / 1000, inTx);
      committed.push(...done);
      done = [];
      for (const d of deltas.values()) this.deps.metrics?.committed(d.profile, d.bundleId, d.agg);
      for (const l of lost) this.deps.metrics?.lost(l.profile, l.reason, l.windows);
      deltas = new Map();
      lost = [];
    };
    const counted = () => {
      if (++inTx >= this.maxBatch) commit();
    };
    try {
      for (const q of queue) {
        ensure();
        const plan = this.plan(q);
        for (const ins of plan.insert) {
          ensure();
          this.applyInsert(q, ins, deltas);
          counted();
        }
        for (const g of plan.gaps) {
          ensure();
          // Seqs of the gap that are stored (or were, before the raw retention pruned them) are not lost.
          const lostWindows = g.windows - coveredCount([g.seq, g.lastSeq], telemetry.rangesNear(q.deviceId, g.seq, g.lastSeq));
          if (telemetry.insertGap(q.deviceId, g, Math.max(0, lostWindows), q.receivedMs)) lost.push({ profile: q.profile, reason: g.reason, windows: Math.max(0, lostWindows) });
          counted();
        }
        if (q.batch.windows.length > 0) {
          ensure();
          telemetry.touchDevice(q.deviceId, Math.max(...q.batch.windows.map((w) => Date.parse(w.end))), q.receivedMs);
        }
        done.push({ q, plan });
      }
      commit();
    } catch (err) {
      if (open) {
        try { this.rollback.run(); } catch { /* the transaction is gone already */ }
      }
      log.error({ err: errorMessage(err), committed: committed.length, lost: queue.length - committed.length }, 'telemetry commit failed; those batches are not acked and will come again');
    }
    for (const { q, plan } of committed) this.answer(q, plan);
  }

  /** The plan for one message over what is stored for its device now. */
  private plan(q: Queued): TelemetryIngestPlan {
    const ranges = q.batch.windows.map(windowRange);
    let stored: SeqRange[] = [];
    if (ranges.length > 0) {
      const lo = Math.min(...ranges.map((r) => r[0]));
      const hi = Math.max(...ranges.map((r) => r[1]));
      stored = this.deps.telemetry.rangesNear(q.deviceId, lo, hi);
    }
    return planTelemetryIngest(q.batch, stored);
  }

  private applyInsert(q: Queued, ins: TelemetryIngestPlan['insert'][number], deltas: Deltas): void {
    const { telemetry } = this.deps;
    const w = ins.window;
    const add = (bundleId: string | null, agg: Agg, sign: 1 | -1) => {
      const key = `${q.profile}\u0000${bundleId ?? ''}`;
      let d = deltas.get(key);
      if (!d) deltas.set(key, (d = { profile: q.profile, bundleId, agg: emptyAgg() }));
      addInto(d.agg, agg, sign);
    };
    for (const [seq] of ins.supersedes) {
      const old = telemetry.windowAt(q.deviceId, seq);
      if (!old) continue; // the pruned-seqs marker, not a row
      telemetry.deleteWindow(q.deviceId, old);
      add(old.bundleId, old.agg, -1);
    }
    telemetry.insertWindow(w, q.receivedMs);
    add(w.bundleId, aggOfWindow(w), 1);
  }

  private answer(q: Queued, plan: TelemetryIngestPlan): void {
    const { log, replies, metrics } = this.deps;
    metrics?.windows('stored', plan.insert.length);
    metrics?.windows('duplicate', plan.duplicates.length);
    metrics?.windows('refused', plan.refused.length);
    this.stats.acked++;
    this.reply(replies.ack(q.deviceId, plan.ack));
    if (plan.refused.length > 0) {
      const first = plan.refused[0]!;
      log.warn({ deviceId: q.deviceId, code: first.code, refused: plan.refused.length }, `telemetry entries refused: ${first.reason}`);
      const more = plan.refused.length > 1 ? ` (and ${plan.refused.length - 1} more entries refused)` : '';
      this.reply(replies.notice(q.deviceId, first.code as ErrorCode, `${first.reason}${more}`));
    }
  }

  /** Resolves once nothing is queued and every reply has been handed to the broker. */
  async idle(): Promise<void> {
    if (this.queue.length > 0) this.flush();
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
