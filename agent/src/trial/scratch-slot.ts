import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BundleSlots } from '../bundle-slots.js';

/**
 * Where a trial keeps its candidates: <data>/trial-scratch/, apart from the install slots
 * (<data>/bundles/, active.json, previous.json), which a trial never writes to.
 *   trial-scratch/downloads/<sha256>   files as the chunk transfer brings them in
 *   trial-scratch/bundles/<bundleId>/  a verified candidate, laid out as an installed bundle
 * The whole directory goes once the trial is reported, and at start-up after a kill.
 */
export class ScratchSlot {
  readonly root: string;
  /** The candidate bundles, with BundleSlots' whole-or-absent install (staging dir, fsync, rename). */
  readonly bundles: BundleSlots;
  constructor(dataDir: string) {
    this.root = join(dataDir, 'trial-scratch');
    this.bundles = new BundleSlots(this.root);
  }

  get downloads(): string {
    return join(this.root, 'downloads');
  }

  dir(bundleId: string): string {
    return this.bundles.dir(bundleId);
  }

  remove(): Promise<void> {
    return rm(this.root, { recursive: true, force: true });
  }
}
