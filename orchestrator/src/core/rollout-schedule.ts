/**
 * When a rollout may act: startAt/endAt, and maintenance windows for first dispatches.
 *
 * Window matching uses cron-parser: node-cron 4 can only test whether an instant matches an
 * expression exactly (through a registered task, a side effect) and look forward, while a window
 * needs the latest fire time at or before `now` in an IANA zone. cron-parser does that with
 * Luxon's zone rules, so there is no date arithmetic of our own here: `durationMin` is elapsed
 * time after the fire instant (a 01:00 + 180 min window on the spring-forward night in Berlin
 * closes at 05:00 local), a fire time that does not exist that night (02:30) does not fire,
 * and one that happens twice on the fall-back night fires twice.
 */
import { CronExpressionParser } from 'cron-parser';
import type { EpochMs, RolloutSchedule, RolloutWindow } from '../records.js';

export type WindowCheck = { ok: true } | { ok: false; field: 'cron' | 'tz'; message: string };

/** Whether `tz` names an IANA zone this runtime knows (Intl is the authority). */
export function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** Validates one window's cron and zone, for normalizePlan's field errors. */
export function checkWindow(w: Pick<RolloutWindow, 'cron' | 'tz'>): WindowCheck {
  if (!isTimeZone(w.tz)) return { ok: false, field: 'tz', message: `unknown time zone ${JSON.stringify(w.tz)}` };
  try {
    CronExpressionParser.parse(w.cron, { tz: w.tz, strict: false, currentDate: new Date(0) }); // a fixed date: validation must not read the clock
  } catch (err) {
    return { ok: false, field: 'cron', message: `invalid cron ${JSON.stringify(w.cron)}: ${(err as Error).message}` };
  }
  return { ok: true };
}

/** The latest fire time of `w` at or before `now`, or null if none can be found. */
export function lastFireAtOrBefore(w: RolloutWindow, now: EpochMs): EpochMs | null {
  try {
    // prev() is strictly before currentDate; one ms later makes a fire exactly at `now` count.
    const expr = CronExpressionParser.parse(w.cron, { tz: w.tz, currentDate: new Date(now + 1) });
    return expr.prev().getTime();
  } catch {
    return null;
  }
}

export type WindowState = { open: true; openedAt: EpochMs; window: number } | { open: false };

/**
 * Whether `now` lies within durationMin after a fire time of one of the windows (no windows:
 * always open). `openedAt` is the fire time of the window that is open (the latest if several).
 */
export function windowState(windows: readonly RolloutWindow[], now: EpochMs): WindowState {
  if (windows.length === 0) return { open: true, openedAt: Number.NEGATIVE_INFINITY, window: -1 };
  let best: WindowState = { open: false };
  windows.forEach((w, i) => {
    const fire = lastFireAtOrBefore(w, now);
    if (fire === null || now >= fire + w.durationMin * 60_000) return;
    if (!best.open || fire > best.openedAt) best = { open: true, openedAt: fire, window: i };
  });
  return best;
}

/** ISO 8601 date-time with a zone (Z or ±hh:mm): a start time without a zone would mean the server's. */
export const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/** Milliseconds for an ISO_INSTANT string; null if it is not one or names a day that does not exist (Date.parse takes 02-30 as 03-02). */
export function parseInstant(s: string | null): EpochMs | null {
  if (s === null || !ISO_INSTANT.test(s)) return null;
  const [y, m, d] = s.slice(0, 10).split('-').map(Number) as [number, number, number];
  const day = new Date(Date.UTC(y, m - 1, d));
  if (day.getUTCFullYear() !== y || day.getUTCMonth() !== m - 1 || day.getUTCDate() !== d) return null;
  const t = Date.parse(s);
  return Number.isFinite(t) ? t : null;
}

export type SchedulePhase = 'before-start' | 'running' | 'ended';

/** Where `now` is relative to startAt and endAt. */
export function schedulePhase(s: RolloutSchedule, now: EpochMs): SchedulePhase {
  const start = parseInstant(s.startAt);
  const end = parseInstant(s.endAt);
  if (end !== null && now >= end) return 'ended';
  if (start !== null && now < start) return 'before-start';
  return 'running';
}
