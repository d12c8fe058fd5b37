/**
 * All SQL of live inference telemetry (tables of migration 'live inference telemetry'):
 *
 * - telemetry_windows: the raw windows as the devices sent them, one row per stored seq range,
 *   UNIQUE (device_id, seq). Ranges of one device never overlap (the ingest's dedupe keeps it so).
 * - telemetry_10m, telemetry_1h: roll-ups per (device, bucket start, bundle), built from raw rows
 *   by `rollUp` and marked by the AUTOINCREMENT id they are rolled through (telemetry_state
 *   'rolled_through_id'): a raw row with id ≤ that mark is in both roll-ups, any other is not.
 *   A window is put in the bucket that holds its start.
 * - telemetry_gaps: what devices reported lost, once per (device, seq).
 * - telemetry_devices: per device, the newest window end (for the lag metric) and how far the
 *   raw retention has pruned its seqs (so a window redelivered after its row is gone is still a
 *   duplicate, never counted twice).
 *
 * Callers run the writes inside their own transaction (better-sqlite3 is synchronous; the
 * ingest, the roll-up and the retention jobs run on one thread, so nothing interleaves).
 */
import type { SeqRange, TelemetryGap, TelemetryOutcome, TelemetryWindow } from '@edgepack/protocol';
import type { Db } from '../db/database.js';
import { addEncodedCounts, addInto, emptyAgg, encodeCounts, type Agg } from './aggregate.js';

export type RollupLevel = '10m' | '1h';
export type Source = 'raw' | RollupLevel;
export const LEVEL_MS: Record<RollupLevel, number> = { '10m': 600_000, '1h': 3_600_000 };
const TABLE: Record<Source, string> = { raw: 'telemetry_windows', '10m': 'telemetry_10m', '1h': 'telemetry_1h' };

type Row = Record<string, unknown>;

/** Which devices a query covers: one device, a list of devices, or the unrevoked devices matching a profile and/or tag. */
export type DeviceScope = { deviceId: string } | { deviceIds: readonly string[] } | { profile?: string; tag?: string };

/** A row of any table as the figures it holds, with where it belongs. */
export interface ScannedRow {
  /** Window start (raw) or bucket start (roll-ups), epoch ms. */
  t: number;
  deviceId: string;
  bundleId: string | null;
  agg: Agg;
}

const n = (v: unknown): number => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : 0);
const nullable = (v: number, empty: number): number | null => (v === empty || !Number.isFinite(v) ? null : v);

function rawAgg(r: Row): Agg {
  const a = emptyAgg();
  const w = n(r.windows);
  a.windows = w;
  a.requests = { ok: n(r.ok), invalid: n(r.invalid), timeout: n(r.timeout), rejected: n(r.rejected), error: n(r.error) };
  a.items = n(r.items);
  addEncodedCounts(a.latency, r.latency_counts as string);
  addEncodedCounts(a.queue, r.queue_counts as string);
  a.latencySumUs = n(r.latency_sum_us);
  a.queueSumUs = n(r.queue_sum_us);
  const s = a.system;
  const cpu = n(r.cpu_percent);
  const rss = n(r.rss_bytes);
  const mem = n(r.mem_available_bytes);
  const disk = n(r.disk_free_bytes);
  s.samples = w;
  s.cpuSum = cpu * w; s.cpuMax = cpu;
  s.rssSum = rss * w; s.rssMax = rss;
  s.memSum = mem * w; s.memMin = mem;
  s.diskSum = disk * w; s.diskMin = disk;
  if (r.temperature_c !== null && r.temperature_c !== undefined) {
    s.tempSamples = w; s.tempSum = n(r.temperature_c) * w; s.tempMax = n(r.temperature_c);
  }
  a.swaps = { count: n(r.swaps), held: n(r.swaps_held), heldRequests: n(r.held_requests), maxHoldMs: n(r.max_hold_ms) };
  a.longestSec = (n(r.end_ms) - n(r.start_ms)) / 1000;
  return a;
}

function rollupAgg(r: Row): Agg {
  const a = emptyAgg();
  a.windows = n(r.windows);
  a.requests = { ok: n(r.ok), invalid: n(r.invalid), timeout: n(r.timeout), rejected: n(r.rejected), error: n(r.error) };
  a.items = n(r.items);
  addEncodedCounts(a.latency, r.latency_counts as string);
  addEncodedCounts(a.queue, r.queue_counts as string);
  a.latencySumUs = n(r.latency_sum_us);
  a.queueSumUs = n(r.queue_sum_us);
  a.system = {
    samples: n(r.samples), cpuSum: n(r.cpu_sum), cpuMax: r.cpu_max === null ? -Infinity : n(r.cpu_max),
    rssSum: n(r.rss_sum), rssMax: r.rss_max === null ? -Infinity : n(r.rss_max),
    memSum: n(r.mem_sum), memMin: r.mem_min === null ? Infinity : n(r.mem_min),
    diskSum: n(r.disk_sum), diskMin: r.disk_min === null ? Infinity : n(r.disk_min),
    tempSamples: n(r.temp_samples), tempSum: n(r.temp_sum), tempMax: r.temp_max === null ? -Infinity : n(r.temp_max),
  };
  a.swaps = { count: n(r.swaps), held: n(r.swaps_held), heldRequests: n(r.held_requests), maxHoldMs: n(r.max_hold_ms) };
  a.longestSec = n(r.longest_sec);
  return a;
}

const ROLLUP_COLUMNS = [
  'device_id', 'bucket_ms', 'bundle_key', 'windows', 'ok', 'invalid', 'timeout', 'rejected', 'error', 'items',
  'latency_counts', 'latency_sum_us', 'queue_counts', 'queue_sum_us', 'samples', 'cpu_sum', 'cpu_max', 'rss_sum', 'rss_max',
  'mem_sum', 'mem_min', 'disk_sum', 'disk_min', 'temp_samples', 'temp_sum', 'temp_max', 'swaps', 'swaps_held', 'held_requests',
  'max_hold_ms', 'longest_sec',
] as const;

function rollupValues(deviceId: string, bucketMs: number, bundleKey: string, a: Agg): unknown[] {
  const s = a.system;
  return [
    deviceId, bucketMs, bundleKey, a.windows, a.requests.ok, a.requests.invalid, a.requests.timeout, a.requests.rejected, a.requests.error, a.items,
    encodeCounts(a.latency), a.latencySumUs, encodeCounts(a.queue), a.queueSumUs, s.samples, s.cpuSum, nullable(s.cpuMax, -Infinity),
    s.rssSum, nullable(s.rssMax, -Infinity), s.memSum, nullable(s.memMin, Infinity), s.diskSum, nullable(s.diskMin, Infinity),
    s.tempSamples, s.tempSum, nullable(s.tempMax, -Infinity), a.swaps.count, a.swaps.held, a.swaps.heldRequests, a.swaps.maxHoldMs, a.longestSec,
  ];
}

/** A stored raw window, as read back to be superseded. */
export interface StoredWindow {
  id: number;
  seq: number;
  lastSeq: number;
  startMs: number;
  bundleId: string | null;
  agg: Agg;
}

export interface PruneCutoffs {
  /** Raw rows whose window ended and that were received before this go (epoch ms). */
  rawBeforeMs: number;
  tenMinBeforeMs: number;
  hourBeforeMs: number;
}

export class TelemetryStore {
  private readonly s;

  constructor(readonly db: Db) {
    const p = (sql: string) => db.prepare(sql);
    this.s = {
      inRange: p('SELECT seq, last_seq FROM telemetry_windows WHERE device_id = ? AND seq BETWEEN ? AND ?'),
      before: p('SELECT seq, last_seq FROM telemetry_windows WHERE device_id = ? AND seq < ? ORDER BY seq DESC LIMIT 1'),
      pruned: p('SELECT pruned_through_seq FROM telemetry_devices WHERE device_id = ?'),
      windowBySeq: p('SELECT * FROM telemetry_windows WHERE device_id = ? AND seq = ?'),
      deleteWindow: p('DELETE FROM telemetry_windows WHERE id = ?'),
      insertWindow: p(`INSERT INTO telemetry_windows (device_id, seq, last_seq, start_ms, end_ms, bundle_id, model_name, windows, ok, invalid, timeout, rejected, error,
        items, latency_counts, latency_sum_us, queue_counts, queue_sum_us, cpu_percent, rss_bytes, mem_available_bytes, disk_free_bytes, temperature_c,
        swaps, swaps_held, held_requests, max_hold_ms, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      insertGap: p(`INSERT OR IGNORE INTO telemetry_gaps (device_id, seq, last_seq, windows, lost_windows, from_ms, to_ms, reason, requests, received_ms)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      touchDevice: p(`INSERT INTO telemetry_devices (device_id, latest_end_ms, last_received_ms) VALUES (?, ?, ?)
        ON CONFLICT (device_id) DO UPDATE SET latest_end_ms = MAX(latest_end_ms, excluded.latest_end_ms), last_received_ms = excluded.last_received_ms`),
      rolledThrough: p("SELECT value FROM telemetry_state WHERE key = 'rolled_through_id'").pluck(),
      setRolledThrough: p("UPDATE telemetry_state SET value = ? WHERE key = 'rolled_through_id'"),
      unrolled: p('SELECT * FROM telemetry_windows WHERE id > ? ORDER BY id LIMIT ?'),
      maxId: p('SELECT COALESCE(MAX(id), 0) FROM telemetry_windows').pluck(),
      rollupGet: {
        '10m': p('SELECT * FROM telemetry_10m WHERE device_id = ? AND bucket_ms = ? AND bundle_key = ?'),
        '1h': p('SELECT * FROM telemetry_1h WHERE device_id = ? AND bucket_ms = ? AND bundle_key = ?'),
      },
      rollupPut: {
        '10m': p(`INSERT OR REPLACE INTO telemetry_10m (${ROLLUP_COLUMNS.join(', ')}) VALUES (${ROLLUP_COLUMNS.map(() => '?').join(', ')})`),
        '1h': p(`INSERT OR REPLACE INTO telemetry_1h (${ROLLUP_COLUMNS.join(', ')}) VALUES (${ROLLUP_COLUMNS.map(() => '?').join(', ')})`),
      },
      rollupDelete: {
        '10m': p('DELETE FROM telemetry_10m WHERE device_id = ? AND bucket_ms = ? AND bundle_key = ?'),
        '1h': p('DELETE FROM telemetry_1h WHERE device_id = ? AND bucket_ms = ? AND bundle_key = ?'),
      },
      // Oldest received first: ids grow with the commit order, and so with received_ms.
      oldestRaw: p('SELECT id, device_id, last_seq, end_ms, received_ms FROM telemetry_windows WHERE id > ? AND id <= ? ORDER BY id LIMIT ?'),
      deviceInfo: p('SELECT profile, revoked_at FROM devices WHERE id = ?'),
      raisePruned: p(`INSERT INTO telemetry_devices (device_id, latest_end_ms, last_received_ms, pruned_through_seq) VALUES (?, 0, 0, ?)
        ON CONFLICT (device_id) DO UPDATE SET pruned_through_seq = MAX(pruned_through_seq, excluded.pruned_through_seq)`),
      pruneRollup: {
        '10m': p('DELETE FROM telemetry_10m WHERE (device_id, bucket_ms, bundle_key) IN (SELECT device_id, bucket_ms, bundle_key FROM telemetry_10m WHERE bucket_ms < ? LIMIT ?)'),
        '1h': p('DELETE FROM telemetry_1h WHERE (device_id, bucket_ms, bundle_key) IN (SELECT device_id, bucket_ms, bundle_key FROM telemetry_1h WHERE bucket_ms < ? LIMIT ?)'),
      },
      pruneGaps: p('DELETE FROM telemetry_gaps WHERE rowid IN (SELECT rowid FROM telemetry_gaps WHERE to_ms < ? LIMIT ?)'),
      devicesByStatus: p('SELECT profile, status, COUNT(*) AS n FROM devices WHERE revoked_at IS NULL GROUP BY profile, status'),
      lagByProfile: p(`SELECT d.profile AS profile, MIN(t.latest_end_ms) AS oldest FROM telemetry_devices t JOIN devices d ON d.id = t.device_id
        WHERE d.revoked_at IS NULL AND d.status = 'online' AND t.latest_end_ms > 0 GROUP BY d.profile`),
    };
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  // ---------------------------------------------------------------- ingest

  /**
   * The stored ranges of `deviceId` that overlap [lo, hi], plus [1, p] when the raw retention
   * has pruned the device's rows through seq p ≥ lo: what planTelemetryIngest needs to decide
   * about windows within [lo, hi]. Stored ranges are disjoint, so besides the rows starting in
   * [lo, hi] only the one row starting just before lo can reach into it.
   */
  rangesNear(deviceId: string, lo: number, hi: number): SeqRange[] {
    const out: SeqRange[] = [];
    const prev = this.s.before.get(deviceId, lo) as Row | undefined;
    if (prev && n(prev.last_seq) >= lo) out.push([n(prev.seq), n(prev.last_seq)]);
    for (const r of this.s.inRange.all(deviceId, lo, hi) as Row[]) out.push([n(r.seq), n(r.last_seq)]);
    const pruned = n((this.s.pruned.get(deviceId) as Row | undefined)?.pruned_through_seq);
    if (pruned >= lo) out.push([1, pruned]);
    return out;
  }

  /** A stored window by the first seq of its range. */
  windowAt(deviceId: string, seq: number): StoredWindow | undefined {
    const r = this.s.windowBySeq.get(deviceId, seq) as Row | undefined;
    return r && { id: n(r.id), seq: n(r.seq), lastSeq: n(r.last_seq), startMs: n(r.start_ms), bundleId: (r.bundle_id as string | null) ?? null, agg: rawAgg(r) };
  }

  /**
   * Deletes a stored window a merged one supersedes. If it was rolled up already, its figures
   * are taken out of both roll-ups in the same transaction, so the merged window (rolled up
   * later) is counted once.
   */
  deleteWindow(deviceId: string, w: StoredWindow): void {
    this.s.deleteWindow.run(w.id);
    if (w.id <= this.rolledThrough()) {
      for (const level of ['10m', '1h'] as const) this.addToRollup(level, deviceId, bucketOf(w.startMs, level), w.bundleId ?? '', w.agg, -1);
    }
  }

  insertWindow(w: TelemetryWindow, receivedMs: number): void {
    const s = w.system;
    this.s.insertWindow.run(
      w.deviceId, w.seq, w.merged?.lastSeq ?? w.seq, Date.parse(w.start), Date.parse(w.end), w.bundleId, w.modelName, w.merged?.windows ?? 1,
      w.requests.ok, w.requests.invalid, w.requests.timeout, w.requests.rejected, w.requests.error, w.items,
      encodeCounts(w.latencyMs.counts), w.latencyMs.sumUs, encodeCounts(w.queueMs.counts), w.queueMs.sumUs,
      s.cpuPercent, s.rssBytes, s.memAvailableBytes, s.diskFreeBytes, s.temperatureC ?? null,
      w.swaps?.count ?? 0, w.swaps?.held ?? 0, w.swaps?.heldRequests ?? 0, w.swaps?.maxHoldMs ?? 0, receivedMs,
    );
  }

  /** Records a gap report once; returns whether it was new. `lostWindows`: its seqs that are not stored. */
  insertGap(deviceId: string, g: TelemetryGap, lostWindows: number, receivedMs: number): boolean {
    return this.s.insertGap.run(deviceId, g.seq, g.lastSeq, g.windows, lostWindows, Date.parse(g.from), Date.parse(g.to), g.reason, g.requests ? JSON.stringify(g.requests) : null, receivedMs).changes === 1;
  }

  touchDevice(deviceId: string, latestEndMs: number, receivedMs: number): void {
    this.s.touchDevice.run(deviceId, latestEndMs, receivedMs);
  }

  // ---------------------------------------------------------------- roll-ups and retention

  rolledThrough(): number {
    return n(this.s.rolledThrough.get());
  }

  private addToRollup(level: RollupLevel, deviceId: string, bucketMs: number, bundleKey: string, delta: Agg, sign: 1 | -1): void {
    const existing = this.s.rollupGet[level].get(deviceId, bucketMs, bundleKey) as Row | undefined;
    const a = existing ? rollupAgg(existing) : emptyAgg();
    addInto(a, delta, sign);
    if (a.windows <= 0) this.s.rollupDelete[level].run(deviceId, bucketMs, bundleKey);
    else this.s.rollupPut[level].run(...rollupValues(deviceId, bucketMs, bundleKey, a));
  }

  /**
   * Rolls up to `limit` raw rows not rolled yet into both roll-ups and moves the mark past them,
   * in one transaction: run twice, or again after a crash, it finds nothing left to add.
   * Returns how many rows it rolled.
   */
  rollUp(limit: number): number {
    return this.transaction(() => {
      const through = this.rolledThrough();
      const rows = this.s.unrolled.all(through, limit) as Row[];
      if (rows.length === 0) return 0;
      const groups = new Map<string, { level: RollupLevel; deviceId: string; bucketMs: number; bundleKey: string; agg: Agg }>();
      for (const r of rows) {
        const agg = rawAgg(r);
        const deviceId = r.device_id as string;
        const bundleKey = (r.bundle_id as string | null) ?? '';
        for (const level of ['10m', '1h'] as const) {
          const bucketMs = bucketOf(n(r.start_ms), level);
          const key = `${level}\u0000${deviceId}\u0000${bucketMs}\u0000${bundleKey}`;
          const g = groups.get(key);
          if (g) addInto(g.agg, agg);
          else groups.set(key, { level, deviceId, bucketMs, bundleKey, agg: addInto(emptyAgg(), agg) });
        }
      }
      for (const g of groups.values()) this.addToRollup(g.level, g.deviceId, g.bucketMs, g.bundleKey, g.agg, 1);
      this.s.setRolledThrough.run(n(rows[rows.length - 1]!.id));
      return rows.length;
    });
  }

  /**
   * Deletes up to `limit` rows past their retention, raw rows only once rolled up (and then
   * only those both ended and received before the cutoff, so a late window stays long enough to
   * be deduplicated when redelivered; past that, `pruned_through_seq` answers for it).
   * Returns the rows deleted (all tables).
   */
  prune(c: PruneCutoffs, limit: number, cursor: { afterId: number } = { afterId: 0 }): number {
    return this.transaction(() => {
      // Walk the raw rows in id order from the cursor; the first one received after the cutoff
      // ends the walk for good (every later id was received later still). A row received before
      // it whose window ended after it (a clock-skewed device) is stepped over, and goes later.
      const rows = cursor.afterId < 0 ? [] : this.s.oldestRaw.all(cursor.afterId, this.rolledThrough(), limit) as Row[];
      const maxSeq = new Map<string, number>();
      let deleted = 0;
      for (const r of rows) {
        if (n(r.received_ms) >= c.rawBeforeMs) { cursor.afterId = -1; break; }
        cursor.afterId = n(r.id);
        if (n(r.end_ms) >= c.rawBeforeMs) continue;
        const d = r.device_id as string;
        maxSeq.set(d, Math.max(maxSeq.get(d) ?? 0, n(r.last_seq)));
        this.s.deleteWindow.run(n(r.id));
        deleted++;
      }
      if (cursor.afterId >= 0 && rows.length < limit) cursor.afterId = -1;
      for (const [d, seq] of maxSeq) this.s.raisePruned.run(d, seq);
      deleted += this.s.pruneRollup['10m'].run(c.tenMinBeforeMs - LEVEL_MS['10m'] + 1, limit).changes;
      deleted += this.s.pruneRollup['1h'].run(c.hourBeforeMs - LEVEL_MS['1h'] + 1, limit).changes;
      deleted += this.s.pruneGaps.run(c.hourBeforeMs, limit).changes;
      return deleted;
    });
  }

  // ---------------------------------------------------------------- queries

  /**
   * The scope as SQL. `column` may be `+device_id`: SQLite's unary plus keeps it from choosing
   * the (device_id, seq) key for the IN list (a whole device's rows each), so a fleet query reads
   * the time index or the id range instead.
   */
  private scopeSql(scope: DeviceScope, column = 'device_id'): [string, unknown[]] {
    if ('deviceId' in scope) return [`${column} = ?`, [scope.deviceId]];
    if ('deviceIds' in scope) return scope.deviceIds.length ? [`${column} IN (${scope.deviceIds.map(() => '?').join(', ')})`, [...scope.deviceIds]] : ['0', []];
    const where = ['revoked_at IS NULL'];
    const args: unknown[] = [];
    if (scope.profile !== undefined) { where.push('profile = ?'); args.push(scope.profile); }
    if (scope.tag !== undefined) { where.push('EXISTS (SELECT 1 FROM json_each(devices.tags) WHERE value = ?)'); args.push(scope.tag); }
    return [`${column} IN (SELECT id FROM devices WHERE ${where.join(' AND ')})`, args];
  }

  /**
   * Every row of `source` in scope starting in [fromMs, toMs), bundle-filtered when `bundleId`
   * is given. A roll-up source also yields the raw rows not rolled up yet, so answers are exact
   * at any moment, not only after the next roll-up.
   */
  *scan(source: Source, scope: DeviceScope, fromMs: number, toMs: number, bundleId?: string): Generator<ScannedRow> {
    const [scopeWhere, scopeArgs] = this.scopeSql(scope, 'deviceId' in scope ? 'device_id' : '+device_id');
    if (source === 'raw') {
      const sql = `SELECT * FROM telemetry_windows WHERE ${scopeWhere} AND start_ms >= ? AND start_ms < ?${bundleId !== undefined ? ' AND bundle_id = ?' : ''}`;
      for (const r of this.db.prepare(sql).iterate(...scopeArgs, fromMs, toMs, ...(bundleId !== undefined ? [bundleId] : [])) as Iterable<Row>) {
        yield { t: n(r.start_ms), deviceId: r.device_id as string, bundleId: (r.bundle_id as string | null) ?? null, agg: rawAgg(r) };
      }
      return;
    }
    const through = this.rolledThrough();
    const lo = bucketOf(fromMs, source);
    const [rollupWhere] = this.scopeSql(scope);
    const sql = `SELECT * FROM ${TABLE[source]} WHERE ${rollupWhere} AND bucket_ms >= ? AND bucket_ms < ?${bundleId !== undefined ? ' AND bundle_key = ?' : ''}`;
    for (const r of this.db.prepare(sql).iterate(...scopeArgs, lo, toMs, ...(bundleId !== undefined ? [bundleId] : [])) as Iterable<Row>) {
      yield { t: n(r.bucket_ms), deviceId: r.device_id as string, bundleId: (r.bundle_key as string) || null, agg: rollupAgg(r) };
    }
    // Only the rows past the mark (a short id range), never a device's whole history.
    const [freshWhere] = this.scopeSql(scope, '+device_id');
    const fresh = `SELECT * FROM telemetry_windows WHERE id > ? AND ${freshWhere} AND +start_ms >= ? AND +start_ms < ?${bundleId !== undefined ? ' AND bundle_id = ?' : ''}`;
    for (const r of this.db.prepare(fresh).iterate(through, ...scopeArgs, lo, toMs, ...(bundleId !== undefined ? [bundleId] : [])) as Iterable<Row>) {
      yield { t: bucketOf(n(r.start_ms), source), deviceId: r.device_id as string, bundleId: (r.bundle_id as string | null) ?? null, agg: rawAgg(r) };
    }
  }

  /** Gap reports in scope overlapping [fromMs, toMs), newest first, at most `limit`. */
  gaps(scope: DeviceScope, fromMs: number, toMs: number, limit: number): GapRow[] {
    const [where, args] = this.scopeSql(scope);
    const rows = this.db.prepare(`SELECT * FROM telemetry_gaps WHERE ${where} AND to_ms >= ? AND from_ms < ? ORDER BY to_ms DESC LIMIT ?`).all(...args, fromMs, toMs, limit) as Row[];
    return rows.map((r) => ({
      deviceId: r.device_id as string, seq: n(r.seq), lastSeq: n(r.last_seq), windows: n(r.windows), lostWindows: n(r.lost_windows),
      fromMs: n(r.from_ms), toMs: n(r.to_ms), reason: r.reason as string,
      requests: typeof r.requests === 'string' ? (JSON.parse(r.requests) as Record<TelemetryOutcome, number>) : null,
    }));
  }

  /** Lost windows and gap reports in scope overlapping the range. */
  gapTotals(scope: DeviceScope, fromMs: number, toMs: number): { reports: number; lostWindows: number } {
    const [where, args] = this.scopeSql(scope);
    const r = this.db.prepare(`SELECT COUNT(*) AS reports, COALESCE(SUM(lost_windows), 0) AS lost FROM telemetry_gaps WHERE ${where} AND to_ms >= ? AND from_ms < ?`).get(...args, fromMs, toMs) as Row;
    return { reports: n(r.reports), lostWindows: n(r.lost) };
  }

  /** Devices in scope (unrevoked), for "of how many". */
  countDevices(scope: DeviceScope): number {
    const [where, args] = this.scopeSql(scope, 'id');
    return n(this.db.prepare(`SELECT COUNT(*) FROM devices WHERE ${where}`).pluck().get(...args));
  }

  /** Who may send telemetry, and its profile: one prepared lookup per message (the hot path). */
  deviceInfo(id: string): { profile: string; revokedAt: string | null } | undefined {
    const r = this.s.deviceInfo.get(id) as Row | undefined;
    return r && { profile: r.profile as string, revokedAt: (r.revoked_at as string | null) ?? null };
  }

  /** Unrevoked devices by profile and status (the edgepack_devices gauge). */
  devicesByStatus(): { profile: string; status: string; n: number }[] {
    return (this.s.devicesByStatus.all() as Row[]).map((r) => ({ profile: r.profile as string, status: r.status as string, n: n(r.n) }));
  }

  /** Per profile, the oldest "newest window end" among online devices that send telemetry. */
  oldestLatestWindowByProfile(): { profile: string; oldestMs: number }[] {
    return (this.s.lagByProfile.all() as Row[]).map((r) => ({ profile: r.profile as string, oldestMs: n(r.oldest) }));
  }

  /** Highest raw id (for tests and the bench). */
  maxWindowId(): number {
    return n(this.s.maxId.get());
  }
}

export interface GapRow {
  deviceId: string;
  seq: number;
  lastSeq: number;
  windows: number;
  lostWindows: number;
  fromMs: number;
  toMs: number;
  reason: string;
  requests: Record<TelemetryOutcome, number> | null;
}

export function bucketOf(ms: number, level: RollupLevel): number {
  const len = LEVEL_MS[level];
  return Math.floor(ms / len) * len;
}
