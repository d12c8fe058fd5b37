import { schedule, type ScheduledTask } from 'node-cron';
import type { Logger } from './logger.js';

/** What the cron jobs drive in the rollouts (services/rollouts.ts). */
export interface RolloutTicks {
  tick(): number;
  /** Marks devices silent since `cutoff` offline; returns their ids. */
  sweepOffline(cutoff: string): string[];
}

/** Telemetry roll-ups and retention (telemetry/rollups.ts TelemetryJobs). */
export interface TelemetryCron {
  rollUp(): Promise<number>;
  prune(): Promise<number>;
}

/**
 * Periodic work:
 * - the rollout tick: every rollout with work left gets a decide round (timeouts, bakes, windows
 *   and schedules move with the clock, not only with reports); rounds are coalesced with the
 *   report-driven ones, so a tick costs nothing extra for a rollout that just ran;
 * - the offline sweep catches devices that vanished without the broker noticing (a half-open
 *   TCP connection keeps the will from firing until keepalive expires).
 */
export function startCronJobs(deps: { log: Logger; now: () => Date; offlineAfterSec: number; rollouts: RolloutTicks; rolloutTickSec: number; telemetry?: TelemetryCron }): { stop(): Promise<void> } {
  const tasks: ScheduledTask[] = [];
  tasks.push(schedule(`*/${deps.rolloutTickSec} * * * * *`, () => {
    try {
      deps.rollouts.tick();
    } catch (err) {
      deps.log.error({ err }, 'rollout tick failed; retrying on the next tick');
    }
  }, { name: 'rollout-tick', noOverlap: true }));
  // Telemetry: roll-ups every minute (a roll-up adds only windows not rolled yet), retention every 10 minutes.
  const telemetry = deps.telemetry;
  if (telemetry) {
    tasks.push(schedule('10 * * * * *', () => telemetry.rollUp().catch((err: unknown) => deps.log.error({ err }, 'telemetry roll-up failed; retrying on the next run')), { name: 'telemetry-rollup', noOverlap: true }));
    tasks.push(schedule('40 */10 * * * *', () => telemetry.prune().catch((err: unknown) => deps.log.error({ err }, 'telemetry retention failed; retrying on the next run')), { name: 'telemetry-retention', noOverlap: true }));
  }
  tasks.push(schedule('*/5 * * * * *', () => {
    try {
      const cutoff = new Date(deps.now().getTime() - deps.offlineAfterSec * 1000).toISOString();
      const ids = deps.rollouts.sweepOffline(cutoff);
      if (ids.length) deps.log.info({ devices: ids }, 'marked offline after missed heartbeats');
    } catch (err) {
      deps.log.error({ err }, 'offline sweep failed; retrying on the next tick');
    }
  }, { name: 'offline-sweep', noOverlap: true }));
  return {
    async stop() {
      for (const t of tasks) await t.destroy();
    },
  };
}
