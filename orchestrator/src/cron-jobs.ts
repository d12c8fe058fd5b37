import { schedule, type ScheduledTask } from 'node-cron';
import type { Store } from './db/store.js';
import type { Logger } from './logger.js';

/**
 * Periodic housekeeping. The offline sweep catches devices that vanished without the broker
 * noticing (a half-open TCP connection keeps the will from firing until keepalive expires).
 */
export function startCronJobs(deps: { store: Store; log: Logger; now: () => Date; offlineAfterSec: number }): { stop(): Promise<void> } {
  const tasks: ScheduledTask[] = [];
  tasks.push(schedule('*/5 * * * * *', () => {
    try {
      const cutoff = new Date(deps.now().getTime() - deps.offlineAfterSec * 1000).toISOString();
      const ids = deps.store.markStaleOffline(cutoff);
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
