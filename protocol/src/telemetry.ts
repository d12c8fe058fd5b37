import { Type, type Static } from '@sinclair/typebox';
import type { ErrorCode } from './error-catalogue.js';
import { EdgepackError } from './errors.js';
import { Validator, type Parsed } from './validate.js';
import { PROTOCOL_VERSION } from './version.js';

/**
 * Live inference telemetry: the device's inference service counts what it serves in fixed time
 * windows and sends every closed window, durably spooled, on its `telemetry` topic; the
 * orchestrator answers on `telemetry-ack` once the windows are committed to its database.
 *
 * Identity. Every window has a per-device sequence number `seq` (1, 2, 3, … never reused, kept
 * across agent restarts). A window *covers* the seqs `[seq, merged?.lastSeq ?? seq]`: a raw
 * window covers its own seq, a window the device merged from older ones (because its spool was
 * short of room) covers the seqs of all its parts. A gap report covers the seqs it stands for.
 * The dedupe key is (deviceId, seq); see `telemetryIngestAction` for the one rule that keeps a
 * redelivered or merged window from counting twice.
 *
 * The receiver (the orchestrator), per message on `edgepack/v1/devices/<id>/telemetry`:
 *   1. `createTelemetryValidator().batch(payload, { deviceId: <from the topic>, now })`. A
 *      refused batch (not JSON, too large, bad envelope, another device) has no seqs to ack:
 *      answer with a Notice on the device's `notice` topic, nothing else.
 *   2. `planTelemetryIngest(parsed, storedRangesOfThisDevice)` → what to insert, which stored
 *      windows each insert supersedes, which gaps to record, what is a duplicate or refused.
 *   3. Apply `insert` (delete superseded, insert) and `gaps` in ONE database transaction.
 *   4. Only after the commit, publish `plan.ack` (QoS 1) on `edgepack/v1/devices/<id>/telemetry-ack`.
 *      The device drops an entry only once its whole seq range is acked or refused; anything
 *      not acked is sent again (after 30 s, backing off to 8 min), so acking late is safe and
 *      never acking is safe too, but acking before the commit loses data on a crash.
 * Windows of a device may overlap in time (one per bundle per period; a window cut short by an
 * agent stop and the next process's window of the same period); sum them, never dedupe by time.
 *
 * Histograms. Latency and queue time are histograms over ONE fixed set of exponential buckets,
 * the same on every device and every version (`TELEMETRY_BUCKET_BOUNDS_MS`), so windows from
 * any devices and any times add up exactly and fleet percentiles come from merged counts, not
 * from averaged percentiles. Sums are integers (microseconds) so that merges are exact too.
 */

const v = Type.Integer({ minimum: 1, maximum: PROTOCOL_VERSION });

/**
 * Upper bounds, in milliseconds, of the latency buckets: 0.05 ms × 2^(k/2) for k = 0..41
 * (0.05 ms … 74.1 s), written out to six significant digits so that no platform's `Math.pow`
 * can make two devices disagree. Bucket k counts observations v with bound[k-1] < v ≤ bound[k]
 * (Prometheus' `le`); bucket 0 counts v ≤ 0.05 ms; the last bucket (index 42) counts
 * everything above 74.1 s. A histogram's `counts` has exactly TELEMETRY_BUCKET_COUNT entries.
 * Neighbouring bounds differ by √2, which is what limits a quantile estimate's error.
 * Never change these: add a new field with new buckets instead.
 */
export const TELEMETRY_BUCKET_BOUNDS_MS: readonly number[] = Object.freeze([
  0.05, 0.0707107, 0.1, 0.141421, 0.2, 0.282843, 0.4, 0.565685, 0.8, 1.13137, 1.6, 2.26274, 3.2, 4.52548,
  6.4, 9.05097, 12.8, 18.1019, 25.6, 36.2039, 51.2, 72.4077, 102.4, 144.815, 204.8, 289.631, 409.6, 579.262,
  819.2, 1158.52, 1638.4, 2317.05, 3276.8, 4634.1, 6553.6, 9268.19, 13107.2, 18536.4, 26214.4, 37072.8,
  52428.8, 74145.5,
]);
/** Finite buckets plus the overflow bucket. */
export const TELEMETRY_BUCKET_COUNT = TELEMETRY_BUCKET_BOUNDS_MS.length + 1;

export const TELEMETRY_OUTCOMES = ['ok', 'invalid', 'timeout', 'rejected', 'error'] as const;
export type TelemetryOutcome = (typeof TELEMETRY_OUTCOMES)[number];

/** Bounds a receiver enforces; a device stays well inside them. */
export const TELEMETRY_LIMITS = {
  /** Longest raw window: the agent's --telemetry-window-sec is at most this. */
  maxRawWindowSec: 3600,
  /** Longest merged window: the coarsest merge level of the spool is one UTC day. */
  maxWindowSec: 86_400,
  maxBatchWindows: 500,
  maxBatchGaps: 500,
  maxAckRanges: 1000,
  /** A window may end at most this far after the receiver's clock (device clocks drift). */
  maxClockSkewSec: 300,
  /** Sanity bounds against hostile or corrupt figures. */
  maxRequestsPerSec: 1_000_000,
  maxItemsPerRequest: 1 << 20,
  /** A batch payload is refused above this many bytes. */
  maxBatchBytes: 1 << 20,
} as const;

/** Stable codes of refused telemetry (besides protocol's MESSAGE_INVALID / MESSAGE_NOT_JSON / MESSAGE_TOO_LARGE). */
export const TelemetryRefusalCode = {
  wrongDevice: 'TELEMETRY_WRONG_DEVICE',
  histogramInvalid: 'TELEMETRY_HISTOGRAM_INVALID',
  countsInconsistent: 'TELEMETRY_COUNTS_INCONSISTENT',
  timeInvalid: 'TELEMETRY_TIME_INVALID',
  valueInvalid: 'TELEMETRY_VALUE_INVALID',
  mergeInvalid: 'TELEMETRY_MERGE_INVALID',
  seqConflict: 'TELEMETRY_SEQ_CONFLICT',
} as const satisfies Record<string, ErrorCode>;

const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Seq = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });
/** UTC, whole seconds or milliseconds: 2026-03-01T12:34:00Z / 2026-03-01T12:34:00.000Z. */
const IsoTime = Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{3})?Z$' });

export const TelemetryHistogramSchema = Type.Object({
  /** One count per bucket of TELEMETRY_BUCKET_BOUNDS_MS, plus the overflow bucket: TELEMETRY_BUCKET_COUNT entries. */
  counts: Type.Array(Count, { maxItems: 256 }),
  /** Σ counts. */
  count: Count,
  /** Sum of the observations in whole microseconds (each rounded), so that sums merge exactly. */
  sumUs: Count,
});
export type TelemetryHistogram = Static<typeof TelemetryHistogramSchema>;

/** Inference requests by how they ended: 200, 400/404, 504, 503, 500. */
export const TelemetryRequestsSchema = Type.Object({
  ok: Count, invalid: Count, timeout: Count, rejected: Count, error: Count,
});
export type TelemetryRequests = Static<typeof TelemetryRequestsSchema>;

/** Sampled when the window closes. In a merged window: cpu is the duration-weighted mean, rss the max, memory, disk the min, temperature the max. */
export const TelemetrySystemSchema = Type.Object({
  /** Whole machine, all cores, 0–100, over the window. */
  cpuPercent: Type.Number({ minimum: 0, maximum: 100 }),
  /** The agent process (which runs the models). */
  rssBytes: Count,
  memAvailableBytes: Count,
  /** Free space (for unprivileged users) on the agent's data directory's file system. */
  diskFreeBytes: Count,
  /** Hottest thermal zone; absent where the board exposes none. */
  temperatureC: Type.Optional(Type.Number({ minimum: -100, maximum: 250 })),
});
export type TelemetrySystem = Static<typeof TelemetrySystemSchema>;

/** Model switches in the window (hot swaps, rollbacks included), and whether requests had to be held. */
export const TelemetrySwapsSchema = Type.Object({
  /** Switches to another bundle completed in the window. */
  count: Count,
  /** Of those, switches where memory did not allow two models, so new requests were held. */
  held: Count,
  /** Requests that waited for a held switch (they are also counted by outcome, in the window where they completed). */
  heldRequests: Count,
  /** Longest hold, ms. */
  maxHoldMs: Count,
});
export type TelemetrySwaps = Static<typeof TelemetrySwapsSchema>;

export const TelemetryMergedSchema = Type.Object({
  /** Last seq this window covers; it covers [seq, lastSeq]. */
  lastSeq: Seq,
  /** Raw windows merged into it: lastSeq − seq + 1. */
  windows: Type.Integer({ minimum: 2, maximum: Number.MAX_SAFE_INTEGER }),
});

export const TelemetryWindowSchema = Type.Object({
  v,
  deviceId: Type.String({ minLength: 1, maxLength: 64 }),
  seq: Seq,
  /** Inclusive, aligned to the window length (the minute by default), whole seconds. */
  start: IsoTime,
  /** Exclusive; the next aligned boundary, or the stop time (rounded up to the second) for the window open when the agent stopped. */
  end: IsoTime,
  /** The bundle that served these requests (one window per bundle and period), null when none was active. */
  bundleId: Type.Union([Type.String({ pattern: '^[A-Za-z0-9_-]{1,128}$' }), Type.Null()]),
  modelName: Type.Union([Type.String({ minLength: 1, maxLength: 256 }), Type.Null()]),
  requests: TelemetryRequestsSchema,
  /** Batch items (first dimension) of the ok requests. */
  items: Count,
  /** Request received → response sent, of the ok requests. */
  latencyMs: TelemetryHistogramSchema,
  /** Request received → a runner slot free, of the ok requests (part of their latency). */
  queueMs: TelemetryHistogramSchema,
  system: TelemetrySystemSchema,
  swaps: Type.Optional(TelemetrySwapsSchema),
  /** Present when this window is a merge of several (the spool was short of room). */
  merged: Type.Optional(TelemetryMergedSchema),
});
export type TelemetryWindow = Static<typeof TelemetryWindowSchema>;

export const TELEMETRY_GAP_REASONS = ['spool-full', 'unclean-stop'] as const;

/**
 * Windows the device lost and says so. `spool-full`: its spool was full even after merging,
 * so the oldest unacknowledged windows were dropped (`requests` tells what they had counted).
 * `unclean-stop`: the agent was killed, losing the counts of the window it had open; the gap's
 * one seq stands for that window, from the last closed window's end to the restart.
 */
export const TelemetryGapSchema = Type.Object({
  seq: Seq,
  lastSeq: Seq,
  /** lastSeq − seq + 1. */
  windows: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
  from: IsoTime,
  to: IsoTime,
  reason: Type.Union(TELEMETRY_GAP_REASONS.map((r) => Type.Literal(r))),
  requests: Type.Optional(TelemetryRequestsSchema),
});
export type TelemetryGap = Static<typeof TelemetryGapSchema>;

/** Device → orchestrator on `telemetry`: windows and gap reports, oldest first. */
export const TelemetryBatchSchema = Type.Object({
  v,
  deviceId: Type.String({ minLength: 1, maxLength: 64 }),
  sentAt: IsoTime,
  windows: Type.Array(TelemetryWindowSchema, { maxItems: TELEMETRY_LIMITS.maxBatchWindows }),
  gaps: Type.Array(TelemetryGapSchema, { maxItems: TELEMETRY_LIMITS.maxBatchGaps }),
});
export type TelemetryBatch = Static<typeof TelemetryBatchSchema>;

/** What a receiver checks first, so one bad window refuses only itself, not its batch. */
const TelemetryEnvelopeSchema = Type.Object({
  v,
  deviceId: Type.String({ minLength: 1, maxLength: 64 }),
  sentAt: IsoTime,
  windows: Type.Array(Type.Unknown(), { maxItems: TELEMETRY_LIMITS.maxBatchWindows }),
  gaps: Type.Array(Type.Unknown(), { maxItems: TELEMETRY_LIMITS.maxBatchGaps }),
});

/** [first, last] seq, inclusive. */
export const SeqRangeSchema = Type.Tuple([Seq, Seq]);
export type SeqRange = [number, number];

export const TelemetryRefusalSchema = Type.Object({
  seq: Seq,
  lastSeq: Seq,
  code: Type.String({ maxLength: 64 }),
  reason: Type.String({ maxLength: 1024 }),
});
export type TelemetryRefusal = Static<typeof TelemetryRefusalSchema>;

/**
 * Orchestrator → device on `telemetry-ack`, sent only after the database commit. `acked`: seq
 * ranges now durably handled (stored, superseded, duplicates, or recorded as lost). `refused`:
 * entries that will never be accepted; the device drops them too and logs why. A device drops a
 * spooled entry only once its whole range lies within acked ∪ refused.
 */
export const TelemetryAckSchema = Type.Object({
  v,
  deviceId: Type.String({ minLength: 1, maxLength: 64 }),
  acked: Type.Array(SeqRangeSchema, { maxItems: TELEMETRY_LIMITS.maxAckRanges }),
  refused: Type.Array(TelemetryRefusalSchema, { maxItems: TELEMETRY_LIMITS.maxAckRanges }),
});
export type TelemetryAck = Static<typeof TelemetryAckSchema>;

// ------------------------------------------------------------------ histograms

export function emptyHistogram(): TelemetryHistogram {
  return { counts: new Array<number>(TELEMETRY_BUCKET_COUNT).fill(0), count: 0, sumUs: 0 };
}

/** Index of the bucket an observation of `ms` falls in (upper bounds inclusive); negatives and NaN count as 0 ms. */
export function bucketIndex(ms: number): number {
  if (!(ms > TELEMETRY_BUCKET_BOUNDS_MS[0]!)) return 0;
  let lo = 1;
  let hi = TELEMETRY_BUCKET_BOUNDS_MS.length; // the overflow bucket
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ms <= TELEMETRY_BUCKET_BOUNDS_MS[mid]!) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Adds one observation in place (the aggregator's hot path). */
export function observe(h: TelemetryHistogram, ms: number): void {
  h.counts[bucketIndex(ms)]! += 1;
  h.count += 1;
  h.sumUs += ms > 0 && Number.isFinite(ms) ? Math.round(ms * 1000) : 0;
}

function safeAdd(a: number, b: number, what: string): number {
  const s = a + b;
  if (!Number.isSafeInteger(s)) throw new EdgepackError(TelemetryRefusalCode.valueInvalid, `${what} overflows a safe integer when merged`);
  return s;
}

export function mergeHistograms(a: TelemetryHistogram, b: TelemetryHistogram): TelemetryHistogram {
  if (a.counts.length !== TELEMETRY_BUCKET_COUNT || b.counts.length !== TELEMETRY_BUCKET_COUNT) {
    throw new EdgepackError(TelemetryRefusalCode.histogramInvalid, `histograms to merge need ${TELEMETRY_BUCKET_COUNT} counts, got ${a.counts.length} and ${b.counts.length}`);
  }
  return {
    counts: a.counts.map((c, i) => safeAdd(c, b.counts[i]!, 'a bucket count')),
    count: safeAdd(a.count, b.count, 'a histogram count'),
    sumUs: safeAdd(a.sumUs, b.sumUs, 'a histogram sum'),
  };
}

/** The bucket's value range in ms: bucket 0 is (0, 0.05], the overflow bucket (74145.5, ∞). */
export function bucketRange(index: number): { lower: number; upper: number } {
  const b = TELEMETRY_BUCKET_BOUNDS_MS;
  return { lower: index === 0 ? 0 : b[index - 1]!, upper: index < b.length ? b[index]! : Infinity };
}

/**
 * Estimates the q-quantile (0 < q ≤ 1, nearest rank) of the observations behind a histogram,
 * in ms; null for an empty histogram. It finds the bucket holding the observation of rank
 * ⌈q·count⌉ and returns the bucket's geometric midpoint (lower·2^¼).
 *
 * Error bound: the true nearest-rank quantile lies in the same bucket, whose bounds differ by
 * √2, so for any value in (0.05 ms, 74.1 s] the estimate is within a factor 2^¼ of it: at most
 * 19% high or 16% low. In bucket 0 the estimate is 0.042 ms and the true value in (0, 0.05] ms
 * (an absolute error under 0.05 ms). In the overflow bucket the estimate is 74145.5 ms and only
 * a lower bound. The same holds for histograms merged from any number of windows and devices.
 */
export function histogramQuantile(h: TelemetryHistogram, q: number): number | null {
  if (h.count <= 0) return null;
  const rank = Math.max(1, Math.ceil(Math.min(1, Math.max(0, q)) * h.count));
  let cumulative = 0;
  for (let i = 0; i < h.counts.length; i++) {
    cumulative += h.counts[i]!;
    if (cumulative >= rank) {
      const { lower, upper } = bucketRange(i);
      if (i === 0) return upper * 2 ** -0.25;
      if (upper === Infinity) return lower;
      return lower * 2 ** 0.25;
    }
  }
  return bucketRange(h.counts.length - 1).lower;
}

// ------------------------------------------------------------------ windows

/** Window start and end (ms since epoch) of the fixed, aligned window holding `nowMs`: [floor(now/len)·len, +len). */
export function alignedWindow(nowMs: number, windowSec: number): { start: number; end: number } {
  const len = windowSec * 1000;
  const start = Math.floor(nowMs / len) * len;
  return { start, end: start + len };
}

/** The seqs a window covers. */
export function windowRange(w: Pick<TelemetryWindow, 'seq' | 'merged'>): SeqRange {
  return [w.seq, w.merged?.lastSeq ?? w.seq];
}

/** Raw windows a window stands for. */
export function windowCount(w: Pick<TelemetryWindow, 'merged'>): number {
  return w.merged?.windows ?? 1;
}

function addRequests(a: TelemetryRequests, b: TelemetryRequests): TelemetryRequests {
  const out = {} as TelemetryRequests;
  for (const k of TELEMETRY_OUTCOMES) out[k] = safeAdd(a[k], b[k], `requests.${k}`);
  return out;
}

export function totalRequests(r: TelemetryRequests): number {
  return r.ok + r.invalid + r.timeout + r.rejected + r.error;
}

/** Whether two windows may merge: same device, bundle and model, and `b` follows `a` without a seq in between. */
export function canMergeWindows(a: TelemetryWindow, b: TelemetryWindow): boolean {
  return a.deviceId === b.deviceId && a.bundleId === b.bundleId && a.modelName === b.modelName && windowRange(a)[1] + 1 === b.seq;
}

/**
 * Merges two adjacent windows into one coarser window covering both: every count, bucket and
 * sum adds exactly (integers). System figures: cpu duration-weighted, rss max, free memory and
 * disk min, temperature max. Throws TELEMETRY_MERGE_INVALID unless `canMergeWindows(a, b)`.
 */
export function mergeWindows(a: TelemetryWindow, b: TelemetryWindow): TelemetryWindow {
  if (!canMergeWindows(a, b)) {
    throw new EdgepackError(TelemetryRefusalCode.mergeInvalid, `windows ${a.seq} and ${b.seq} cannot merge: they must be of one device, bundle and model, with consecutive seqs`);
  }
  const [aStart, aEnd, bStart, bEnd] = [a.start, a.end, b.start, b.end].map((t) => Date.parse(t)) as [number, number, number, number];
  const aLen = Math.max(0, aEnd - aStart);
  const bLen = Math.max(0, bEnd - bStart);
  const cpu = aLen + bLen > 0 ? (a.system.cpuPercent * aLen + b.system.cpuPercent * bLen) / (aLen + bLen) : Math.max(a.system.cpuPercent, b.system.cpuPercent);
  const temps = [a.system.temperatureC, b.system.temperatureC].filter((t): t is number => t !== undefined);
  const system: TelemetrySystem = {
    cpuPercent: Math.round(cpu * 100) / 100,
    rssBytes: Math.max(a.system.rssBytes, b.system.rssBytes),
    memAvailableBytes: Math.min(a.system.memAvailableBytes, b.system.memAvailableBytes),
    diskFreeBytes: Math.min(a.system.diskFreeBytes, b.system.diskFreeBytes),
    ...(temps.length ? { temperatureC: Math.max(...temps) } : {}),
  };
  const swaps = a.swaps || b.swaps ? mergeSwaps(a.swaps, b.swaps) : undefined;
  const lastSeq = windowRange(b)[1];
  return {
    v: a.v,
    deviceId: a.deviceId,
    seq: a.seq,
    start: aStart <= bStart ? a.start : b.start,
    end: aEnd >= bEnd ? a.end : b.end,
    bundleId: a.bundleId,
    modelName: a.modelName,
    requests: addRequests(a.requests, b.requests),
    items: safeAdd(a.items, b.items, 'items'),
    latencyMs: mergeHistograms(a.latencyMs, b.latencyMs),
    queueMs: mergeHistograms(a.queueMs, b.queueMs),
    system,
    ...(swaps ? { swaps } : {}),
    merged: { lastSeq, windows: windowCount(a) + windowCount(b) },
  };
}

function mergeSwaps(a: TelemetrySwaps | undefined, b: TelemetrySwaps | undefined): TelemetrySwaps {
  const z: TelemetrySwaps = { count: 0, held: 0, heldRequests: 0, maxHoldMs: 0 };
  const x = a ?? z;
  const y = b ?? z;
  return {
    count: safeAdd(x.count, y.count, 'swaps.count'),
    held: safeAdd(x.held, y.held, 'swaps.held'),
    heldRequests: safeAdd(x.heldRequests, y.heldRequests, 'swaps.heldRequests'),
    maxHoldMs: Math.max(x.maxHoldMs, y.maxHoldMs),
  };
}

// ------------------------------------------------------------------ seq ranges and acks

/** Sorts and joins overlapping or adjacent ranges: [[5,6],[1,2],[3,3]] → [[1,3],[5,6]]. */
export function coalesceRanges(ranges: readonly SeqRange[]): SeqRange[] {
  const sorted = ranges.filter(([a, b]) => a <= b).map(([a, b]) => [a, b] as SeqRange).sort((x, y) => x[0] - y[0]);
  const out: SeqRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push(r);
  }
  return out;
}

/** Whether every seq of `range` lies within `ranges` (which need not be coalesced). */
export function rangeCovered(range: SeqRange, ranges: readonly SeqRange[]): boolean {
  let next = range[0];
  for (const [a, b] of coalesceRanges(ranges)) {
    if (a > next) break;
    if (b >= next) next = b + 1;
    if (next > range[1]) return true;
  }
  return next > range[1];
}

/**
 * The ack for a committed batch: every range handled (stored, superseded, duplicate, gap
 * recorded) and every refusal that names its seqs, coalesced. Ranges beyond the ack's limit are
 * left out; the device sends those entries again and they are acked as duplicates then.
 */
export function createTelemetryAck(deviceId: string, handled: readonly SeqRange[], refused: readonly TelemetryRefusal[] = []): TelemetryAck {
  return {
    v: PROTOCOL_VERSION,
    deviceId,
    acked: coalesceRanges(handled).slice(0, TELEMETRY_LIMITS.maxAckRanges),
    refused: refused.slice(0, TELEMETRY_LIMITS.maxAckRanges).map((r) => ({ ...r, reason: r.reason.slice(0, 1024) })),
  };
}

export type TelemetryIngestAction =
  | { action: 'duplicate' }
  | { action: 'insert'; supersedes: SeqRange[] }
  | { action: 'conflict'; with: SeqRange };

/**
 * The receiver's dedupe rule, given the ranges already stored for the device (windows only;
 * gaps are separate): a window whose seqs are all stored already is a duplicate (ack it, store
 * nothing). Otherwise it is inserted, and every stored window whose range lies inside it is
 * deleted in the same transaction: a merged window is exactly the sum of its parts, which the
 * device may have sent before (ack lost). A stored range that overlaps but sticks out cannot
 * come from a well-behaved device (it only merges whole entries) and is a conflict.
 */
export function telemetryIngestAction(range: SeqRange, stored: readonly SeqRange[]): TelemetryIngestAction {
  const overlapping = stored.filter(([a, b]) => a <= range[1] && b >= range[0]);
  if (overlapping.length > 0 && rangeCovered(range, overlapping)) {
    const exact = overlapping.some(([a, b]) => a <= range[0] && b >= range[1]);
    if (exact) return { action: 'duplicate' };
  }
  const sticking = overlapping.find(([a, b]) => a < range[0] || b > range[1]);
  if (sticking) return { action: 'conflict', with: sticking };
  return { action: 'insert', supersedes: overlapping.map(([a, b]) => [a, b]) };
}

// ------------------------------------------------------------------ validation

export interface TelemetryCheckContext {
  /** The device the topic belongs to: a window or batch naming another one is refused. */
  deviceId: string;
  /** The receiver's clock, for "not from the future". */
  now: Date;
}

export interface ParsedTelemetryBatch {
  deviceId: string;
  sentAt: string;
  windows: TelemetryWindow[];
  gaps: TelemetryGap[];
  /** Entries refused one by one; those naming their seqs belong in the ack's `refused`. */
  refused: (Omit<TelemetryRefusal, 'seq' | 'lastSeq'> & { seq?: number; lastSeq?: number })[];
}

export interface TelemetryValidator {
  /** A window's shape and rules; `Parsed` carries the refusal code. */
  window(value: unknown, ctx: TelemetryCheckContext): Parsed<TelemetryWindow>;
  gap(value: unknown, ctx: TelemetryCheckContext): Parsed<TelemetryGap>;
  /** A batch payload as it came off the wire: the whole batch is refused only for a bad envelope or the wrong device. */
  batch(payload: Uint8Array | string, ctx: TelemetryCheckContext): Parsed<ParsedTelemetryBatch>;
  ack(payload: Uint8Array | string): Parsed<TelemetryAck>;
}

const fail = (code: ErrorCode, reason: string): { ok: false; code: ErrorCode; reason: string } => ({ ok: false, code, reason });

function wholeSecondTime(t: string): number | null {
  const ms = Date.parse(t);
  return Number.isNaN(ms) || ms % 1000 !== 0 ? null : ms;
}

function checkHistogram(name: string, h: TelemetryHistogram): { ok: false; code: ErrorCode; reason: string } | null {
  if (h.counts.length !== TELEMETRY_BUCKET_COUNT) {
    return fail(TelemetryRefusalCode.histogramInvalid, `${name}.counts has ${h.counts.length} entries, the protocol's buckets need ${TELEMETRY_BUCKET_COUNT}`);
  }
  let total = 0;
  let lowUs = 0;
  let highUs = 0;
  for (let i = 0; i < h.counts.length; i++) {
    const c = h.counts[i]!;
    if (c === 0) continue; // and 0 × ∞ (the overflow bucket) would be NaN
    total += c;
    const { lower, upper } = bucketRange(i);
    lowUs += c * lower * 1000;
    highUs += c * upper * 1000;
  }
  if (!Number.isSafeInteger(total)) return fail(TelemetryRefusalCode.valueInvalid, `${name}.counts add up past a safe integer`);
  if (total !== h.count) return fail(TelemetryRefusalCode.histogramInvalid, `${name}.count is ${h.count}, its buckets add up to ${total}`);
  // Each observation was rounded to a whole microsecond: allow one µs each, plus float slack.
  const slack = h.count + 1e-9 * (Number.isFinite(highUs) ? highUs : lowUs);
  if (h.sumUs < lowUs - slack || h.sumUs > highUs + slack) {
    return fail(TelemetryRefusalCode.histogramInvalid, `${name}.sumUs ${h.sumUs} cannot come from its buckets (between ${Math.floor(lowUs)} and ${Number.isFinite(highUs) ? Math.ceil(highUs) : '∞'} µs)`);
  }
  return null;
}

function checkWindowRules(w: TelemetryWindow, ctx: TelemetryCheckContext): { ok: false; code: ErrorCode; reason: string } | null {
  const where = `window ${w.seq}`;
  if (w.deviceId !== ctx.deviceId) return fail(TelemetryRefusalCode.wrongDevice, `${where} names device ${w.deviceId}, it came from ${ctx.deviceId}`);
  const start = wholeSecondTime(w.start);
  const end = wholeSecondTime(w.end);
  if (start === null || end === null) return fail(TelemetryRefusalCode.timeInvalid, `${where}: start and end must be real UTC times on whole seconds`);
  if (end <= start) return fail(TelemetryRefusalCode.timeInvalid, `${where} ends (${w.end}) at or before it starts (${w.start})`);
  const spanSec = (end - start) / 1000;
  const maxSpan = w.merged ? TELEMETRY_LIMITS.maxWindowSec : TELEMETRY_LIMITS.maxRawWindowSec;
  if (spanSec > maxSpan) return fail(TelemetryRefusalCode.timeInvalid, `${where} spans ${spanSec} s, more than the ${maxSpan} s a ${w.merged ? 'merged' : 'raw'} window may`);
  if (end > ctx.now.getTime() + TELEMETRY_LIMITS.maxClockSkewSec * 1000) return fail(TelemetryRefusalCode.timeInvalid, `${where} ends at ${w.end}, in the future`);
  if (w.merged) {
    if (w.merged.lastSeq <= w.seq || w.merged.windows !== w.merged.lastSeq - w.seq + 1) {
      return fail(TelemetryRefusalCode.mergeInvalid, `${where}: merged.lastSeq ${w.merged.lastSeq} and merged.windows ${w.merged.windows} disagree (windows must be lastSeq − seq + 1 ≥ 2)`);
    }
  }
  for (const [name, h] of [['latencyMs', w.latencyMs], ['queueMs', w.queueMs]] as const) {
    const bad = checkHistogram(`${where} ${name}`, h);
    if (bad) return bad;
  }
  const total = totalRequests(w.requests);
  if (!Number.isSafeInteger(total)) return fail(TelemetryRefusalCode.valueInvalid, `${where}: request counts add up past a safe integer`);
  if (total > spanSec * TELEMETRY_LIMITS.maxRequestsPerSec) return fail(TelemetryRefusalCode.valueInvalid, `${where}: ${total} requests in ${spanSec} s is more than any device serves`);
  if (w.latencyMs.count !== w.requests.ok || w.queueMs.count !== w.requests.ok) {
    return fail(TelemetryRefusalCode.countsInconsistent, `${where}: latencyMs.count ${w.latencyMs.count} and queueMs.count ${w.queueMs.count} must both equal requests.ok ${w.requests.ok}`);
  }
  if (w.items < w.requests.ok) return fail(TelemetryRefusalCode.countsInconsistent, `${where}: ${w.items} items for ${w.requests.ok} ok requests (each has at least one)`);
  if (w.items > w.requests.ok * TELEMETRY_LIMITS.maxItemsPerRequest) return fail(TelemetryRefusalCode.valueInvalid, `${where}: ${w.items} items for ${w.requests.ok} ok requests`);
  if (w.queueMs.sumUs > w.latencyMs.sumUs + w.requests.ok) {
    return fail(TelemetryRefusalCode.countsInconsistent, `${where}: queue time ${w.queueMs.sumUs} µs exceeds the latency ${w.latencyMs.sumUs} µs it is part of`);
  }
  if (w.swaps) {
    if (w.swaps.held > w.swaps.count) return fail(TelemetryRefusalCode.countsInconsistent, `${where}: ${w.swaps.held} held swaps out of ${w.swaps.count}`);
    // Held requests are counted by outcome where they complete, which may be the next window.
    if (w.swaps.heldRequests > spanSec * TELEMETRY_LIMITS.maxRequestsPerSec) return fail(TelemetryRefusalCode.valueInvalid, `${where}: ${w.swaps.heldRequests} held requests in ${spanSec} s`);
    if (w.swaps.maxHoldMs > spanSec * 1000 + 60_000 * windowCount(w)) return fail(TelemetryRefusalCode.valueInvalid, `${where}: a ${w.swaps.maxHoldMs} ms hold`);
  }
  return null;
}

function checkGapRules(g: TelemetryGap, ctx: TelemetryCheckContext): { ok: false; code: ErrorCode; reason: string } | null {
  const where = `gap ${g.seq}-${g.lastSeq}`;
  if (g.lastSeq < g.seq || g.windows !== g.lastSeq - g.seq + 1) return fail(TelemetryRefusalCode.countsInconsistent, `${where}: windows ${g.windows} must be lastSeq − seq + 1`);
  const from = Date.parse(g.from);
  const to = Date.parse(g.to);
  if (Number.isNaN(from) || Number.isNaN(to) || to < from) return fail(TelemetryRefusalCode.timeInvalid, `${where}: from ${g.from} and to ${g.to} are not a time range`);
  if (to > ctx.now.getTime() + TELEMETRY_LIMITS.maxClockSkewSec * 1000) return fail(TelemetryRefusalCode.timeInvalid, `${where} ends at ${g.to}, in the future`);
  if (g.requests && !Number.isSafeInteger(totalRequests(g.requests))) return fail(TelemetryRefusalCode.valueInvalid, `${where}: request counts add up past a safe integer`);
  return null;
}

/** Seqs named by an entry that failed validation, if it names them plainly enough to be acked as refused. */
function claimedRange(value: unknown, lastKey: 'merged' | 'lastSeq'): { seq?: number; lastSeq?: number } {
  if (typeof value !== 'object' || value === null) return {};
  const o = value as Record<string, unknown>;
  const seq = o.seq;
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) return {};
  const raw = lastKey === 'merged' ? (o.merged as Record<string, unknown> | undefined)?.lastSeq : o.lastSeq;
  const last = typeof raw === 'number' && Number.isSafeInteger(raw) && raw >= seq ? raw : seq;
  return { seq, lastSeq: last };
}

/** Compiles the telemetry schemas once; the returned checks are pure. */
export function createTelemetryValidator(): TelemetryValidator {
  const windowSchema = new Validator('telemetry window', TelemetryWindowSchema);
  const gapSchema = new Validator('telemetry gap', TelemetryGapSchema);
  const envelope = new Validator('telemetry batch', TelemetryEnvelopeSchema);
  const ackSchema = new Validator('telemetry ack', TelemetryAckSchema);

  const window = (value: unknown, ctx: TelemetryCheckContext): Parsed<TelemetryWindow> => {
    const p = windowSchema.validate(value);
    if (!p.ok) return p;
    return checkWindowRules(p.value, ctx) ?? p;
  };
  const gap = (value: unknown, ctx: TelemetryCheckContext): Parsed<TelemetryGap> => {
    const p = gapSchema.validate(value);
    if (!p.ok) return p;
    return checkGapRules(p.value, ctx) ?? p;
  };
  return {
    window,
    gap,
    batch(payload, ctx) {
      const e = envelope.parse(payload, TELEMETRY_LIMITS.maxBatchBytes);
      if (!e.ok) return e;
      if (e.value.deviceId !== ctx.deviceId) return fail(TelemetryRefusalCode.wrongDevice, `telemetry batch names device ${e.value.deviceId}, it came from ${ctx.deviceId}`);
      const out: ParsedTelemetryBatch = { deviceId: e.value.deviceId, sentAt: e.value.sentAt, windows: [], gaps: [], refused: [] };
      for (const w of e.value.windows) {
        const r = window(w, ctx);
        if (r.ok) out.windows.push(r.value);
        else out.refused.push({ ...claimedRange(w, 'merged'), code: r.code, reason: r.reason });
      }
      for (const g of e.value.gaps) {
        const r = gap(g, ctx);
        if (r.ok) out.gaps.push(r.value);
        else out.refused.push({ ...claimedRange(g, 'lastSeq'), code: r.code, reason: r.reason });
      }
      return { ok: true, value: out };
    },
    ack(payload) {
      const p = ackSchema.parse(payload, TELEMETRY_LIMITS.maxBatchBytes);
      if (!p.ok) return p;
      const bad = p.value.acked.find(([a, b]) => a > b) ?? p.value.refused.map((r) => [r.seq, r.lastSeq] as SeqRange).find(([a, b]) => a > b);
      if (bad) return fail('MESSAGE_INVALID', `telemetry ack: range [${bad[0]}, ${bad[1]}] ends before it starts`);
      return p;
    },
  };
}

// ------------------------------------------------------------------ ingestion plan (receiver side)

export interface TelemetryIngestPlan {
  /** Windows to store; each first deletes the stored windows whose ranges it lists (a merge replaces its parts). */
  insert: { window: TelemetryWindow; supersedes: SeqRange[] }[];
  /** Gap reports to record: the seqs of each range that are not stored are lost. A gap never deletes a stored window. */
  gaps: TelemetryGap[];
  /** Ranges already stored (redeliveries): nothing to store, only to ack. */
  duplicates: SeqRange[];
  /** Entries that will never be accepted; those with seqs are in the ack's `refused`, so the device drops them. */
  refused: ParsedTelemetryBatch['refused'];
  /** Publish on the device's telemetry-ack topic once the plan is committed, never before. */
  ack: TelemetryAck;
}

/**
 * What a receiver does with one validated batch, given the window ranges it has already
 * stored for the device (windows only, not gaps): the dedupe rule of telemetryIngestAction
 * applied in order, so duplicates inside one batch are caught too. Pure; the receiver runs
 * `insert` and `gaps` in one transaction and publishes `ack` after the commit.
 */
export function planTelemetryIngest(batch: ParsedTelemetryBatch, stored: readonly SeqRange[]): TelemetryIngestPlan {
  let known: SeqRange[] = stored.map(([a, b]) => [a, b]);
  const plan: TelemetryIngestPlan = { insert: [], gaps: [], duplicates: [], refused: [...batch.refused], ack: createTelemetryAck(batch.deviceId, []) };
  const handled: SeqRange[] = [];
  for (const w of batch.windows) {
    const range = windowRange(w);
    const act = telemetryIngestAction(range, known);
    if (act.action === 'duplicate') {
      plan.duplicates.push(range);
      handled.push(range);
    } else if (act.action === 'conflict') {
      plan.refused.push({ seq: range[0], lastSeq: range[1], code: TelemetryRefusalCode.seqConflict, reason: `window ${range[0]}-${range[1]} overlaps the stored ${act.with[0]}-${act.with[1]} without containing it` });
    } else {
      plan.insert.push({ window: w, supersedes: act.supersedes });
      known = [...known.filter(([a, b]) => !(a >= range[0] && b <= range[1])), range];
      handled.push(range);
    }
  }
  for (const g of batch.gaps) {
    plan.gaps.push(g);
    handled.push([g.seq, g.lastSeq]);
  }
  const refusedWithSeqs = plan.refused.filter((r): r is TelemetryRefusal => r.seq !== undefined && r.lastSeq !== undefined);
  plan.ack = createTelemetryAck(batch.deviceId, handled, refusedWithSeqs);
  return plan;
}
