import { errorMessage } from '@edgepack/protocol';
import type { RolloutDeviceView } from '../core/rollout-snapshot.js';
import type { RolloutStore } from '../db/rollout-store.js';
import type { Logger } from '../logger.js';

/**
 * The facts devices send (status reports, heartbeats, presence) are written in one transaction
 * per turn of the event loop instead of one each: a wave of 1,000 devices sends thousands of
 * them, and a commit apiece is most of what they cost. Until the turn ends, reads of a device go
 * through the overlay of what is still to be written, and the rollout engine flushes before it
 * writes decisions or reads a snapshot back, so the database sees facts and decisions in the
 * order they happened.
 *
 * What a crash can lose is one turn of facts: the devices send them again (an agent re-reports
 * its state on every reconnect, and heartbeats repeat).
 */
export class WriteBehind {
  private ops: (() => void)[] = [];
  private readonly devices = new Map<string, Partial<RolloutDeviceView>>();
  private timer: NodeJS.Immediate | undefined;
  /** Turns flushed, and writes in them (for tests and figures). */
  flushes = 0;
  writes = 0;

  constructor(private readonly deps: { rollouts: RolloutStore; log: Logger; onLost: () => void }) {}

  /** Queues a write; it runs in this turn's transaction. */
  defer(op: () => void): void {
    this.ops.push(op);
    this.timer ??= setImmediate(() => { this.timer = undefined; this.flush(); });
  }

  /** Queues a device patch and keeps it visible to deviceView until it is written. */
  patchDevice(id: string, patch: Partial<RolloutDeviceView>): void {
    if (Object.keys(patch).length === 0) return;
    this.devices.set(id, { ...this.devices.get(id), ...patch });
    this.defer(() => this.deps.rollouts.patchDevice(id, patch));
  }

  /** The device as it will be once the queued writes are in. */
  deviceView(id: string): RolloutDeviceView | undefined {
    const d = this.deps.rollouts.deviceView(id);
    const p = this.devices.get(id);
    return d && p ? { ...d, ...p } : d;
  }

  /** Writes everything queued, in order, in one transaction. */
  flush(): void {
    if (this.timer) {
      clearImmediate(this.timer);
      this.timer = undefined;
    }
    if (this.ops.length === 0) return;
    const ops = this.ops;
    this.ops = [];
    this.devices.clear();
    try {
      this.deps.rollouts.transaction(() => { for (const op of ops) op(); });
      this.flushes++;
      this.writes += ops.length;
    } catch (err) {
      // A full disk, say: the facts are lost (devices send them again), and what was kept in
      // memory of them must be read back from the database.
      this.deps.log.error({ err: errorMessage(err), writes: ops.length }, 'could not write device facts; dropping them');
      this.deps.onLost();
    }
  }
}
