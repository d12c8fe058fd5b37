/**
 * The telemetry jobs node-cron runs (cron-jobs.ts): roll-ups and retention.
 *
 * Roll-up: raw windows not rolled yet are added into their 10-minute and 1-hour buckets (the
 * bucket holding the window's start), and the "rolled through id" mark moves past them, in one
 * transaction per chunk (telemetry-store.ts rollUp). A run that crashes half-way leaves whole
 * chunks done and the rest for the next run; a run twice finds nothing to add. Counts, items,
 * histograms and latency sums add exactly; system figures keep (Σ, samples, min, max), so a
 * roll-up answers mean, max (CPU, RSS, temperature) and min (free memory and disk) exactly.
 * A window arriving late (a device back from days offline) is rolled up like any other.
 *
 * Retention (defaults: raw 48 h, 10-minute 30 days, 1-hour 400 days; gap reports as 1-hour):
 * rows past it are deleted in chunks. Raw rows go only once rolled up, and only once both their
 * window ended and they were received before the cutoff.
 *
 * Both work in chunks and yield to the event loop between chunks, so a backlog (the first run
 * after a long stop) never holds the loop for long.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Logger } from '../logger.js';
import type { TelemetryStore } from './telemetry-store.js';

export interface TelemetryRetention {
  rawHours: number;
  tenMinDays: number;
  hourDays: number;
}

export const DEFAULT_RETENTION: TelemetryRetention = { rawHours: 48, tenMinDays: 30, hourDays: 400 };

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export class TelemetryJobs {
  constructor(private readonly deps: { telemetry: TelemetryStore; log: Logger; now: () => Date; retention: TelemetryRetention; chunk?: number }) {}

  private get chunk(): number { return this.deps.chunk ?? 5000; }

  /** Rolls up every raw row not rolled yet; returns how many. */
  async rollUp(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = this.deps.telemetry.rollUp(this.chunk);
      total += n;
      if (n < this.chunk) break;
      await yieldToLoop();
    }
    if (total) this.deps.log.debug({ windows: total }, 'telemetry rolled up');
    return total;
  }

  /** The cutoffs of the retention at `now`. */
  cutoffs(nowMs: number): { rawBeforeMs: number; tenMinBeforeMs: number; hourBeforeMs: number } {
    const r = this.deps.retention;
    return { rawBeforeMs: nowMs - r.rawHours * HOUR, tenMinBeforeMs: nowMs - r.tenMinDays * DAY, hourBeforeMs: nowMs - r.hourDays * DAY };
  }

  /** Rolls up first (raw rows go only once rolled up), then deletes what is past retention; returns the rows deleted. */
  async prune(): Promise<number> {
    await this.rollUp();
    const c = this.cutoffs(this.deps.now().getTime());
    let total = 0;
    const cursor = { afterId: 0 };
    for (;;) {
      const n = this.deps.telemetry.prune(c, this.chunk, cursor);
      total += n;
      if (n === 0 && cursor.afterId < 0) break;
      await yieldToLoop();
    }
    if (total) this.deps.log.info({ rows: total }, 'telemetry past retention deleted');
    return total;
  }
}
