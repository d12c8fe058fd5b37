/**
 * Which time range, step and table a health query reads: pure, over the query, the clock and
 * the retention.
 *
 * - `to` defaults to now, `from` to one hour before `to`; `from` must be before `to` and the
 *   range no longer than the 1-hour retention.
 * - The step (seconds) is the caller's or, without one, the smallest of 1, 2, 5, 10, 15, 30 min,
 *   1, 2, 3, 6, 12 h, 1 day that gives at most 240 points (never under 60 s: devices send
 *   60 s windows by default).
 * - The table: the 1-hour roll-up when the step is a whole number of hours, else the 10-minute
 *   one when it is a whole number of 10 minutes, else the raw windows. A range starting before
 *   a table's retention moves to the next coarser table, and the step is rounded up to a whole
 *   number of its buckets (the answer says which step and table it used).
 * - Buckets are aligned to multiples of the step since the epoch (UTC), from the one holding
 *   `from`; at most MAX_POINTS of them.
 */
import { EdgepackError } from '@edgepack/protocol';
import type { TelemetryRetention } from './rollups.js';
import type { Source } from './telemetry-store.js';

export const MAX_POINTS = 1440;
const AUTO_POINTS = 240;
const NICE_STEPS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400];
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface RangeQuery {
  from?: string;
  to?: string;
  step?: number;
}

export interface ResolvedRange {
  /** Start of the first bucket (aligned to the step), epoch ms. */
  fromMs: number;
  /** As asked (exclusive), epoch ms. */
  toMs: number;
  stepSec: number;
  source: Source;
}

const bad = (message: string) => new EdgepackError('VALIDATION_FAILED', message);

function sourceFor(stepSec: number): Source {
  if (stepSec % 3600 === 0) return '1h';
  if (stepSec % 600 === 0) return '10m';
  return 'raw';
}

export function resolveRange(q: RangeQuery, nowMs: number, retention: TelemetryRetention): ResolvedRange {
  const toMs = q.to === undefined ? nowMs : Date.parse(q.to);
  if (Number.isNaN(toMs)) throw bad(`querystring.to ${JSON.stringify(q.to)} is not a date-time`);
  const fromMs = q.from === undefined ? toMs - HOUR : Date.parse(q.from);
  if (Number.isNaN(fromMs)) throw bad(`querystring.from ${JSON.stringify(q.from)} is not a date-time`);
  if (fromMs >= toMs) throw bad(`querystring.from (${new Date(fromMs).toISOString()}) must be before querystring.to (${new Date(toMs).toISOString()})`);
  const longest = retention.hourDays * DAY;
  if (toMs - fromMs > longest) throw bad(`querystring.from: the range is ${Math.ceil((toMs - fromMs) / DAY)} days, longer than the ${retention.hourDays}-day retention of the 1-hour roll-up`);

  // The finest table that still holds data as old as `from`.
  const age = nowMs - fromMs;
  const minStep = age > retention.tenMinDays * DAY ? 3600 : age > retention.rawHours * HOUR ? 600 : 1;
  let stepSec = q.step ?? NICE_STEPS.find((s) => (toMs - fromMs) / (s * 1000) <= AUTO_POINTS) ?? 86_400;
  if (stepSec % minStep !== 0) stepSec = Math.ceil(stepSec / minStep) * minStep;
  const stepMs = stepSec * 1000;
  const alignedFrom = Math.floor(fromMs / stepMs) * stepMs;
  const points = Math.ceil((toMs - alignedFrom) / stepMs);
  if (points > MAX_POINTS) {
    const least = Math.ceil((toMs - fromMs) / 1000 / (MAX_POINTS - 1));
    throw bad(`querystring.step ${stepSec} s gives ${points} points over this range, more than ${MAX_POINTS}; use a step of at least ${least} s`);
  }
  return { fromMs: alignedFrom, toMs, stepSec, source: sourceFor(stepSec) };
}
