import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EdgepackError, verifyFileIntegrity, type Manifest } from '@edgepack/protocol';
import { fsyncDir, writeFileAtomic } from './durable-file.js';

export interface ActiveRecord {
  bundleId: string;
  manifest: Manifest;
  activatedAt: string;
}

export async function sha256File(path: string): Promise<{ sha256: string; length: number }> {
  const hash = createHash('sha256');
  let length = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    length += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), length };
}

/**
 * Installed bundles on disk:
 *   bundles/<bundleId>/          one complete, fsynced bundle per directory
 *   bundles/.staging-<bundleId>/ an install in progress (deleted on restart)
 *   active.json / previous.json  which bundle runs, and the one to return to
 * A bundle directory only ever appears by rename, so it is whole or absent.
 */
export class BundleSlots {
  readonly bundlesDir: string;
  constructor(readonly dataDir: string) {
    this.bundlesDir = join(dataDir, 'bundles');
  }

  dir(bundleId: string): string {
    return join(this.bundlesDir, bundleId);
  }

  async isInstalled(bundleId: string): Promise<boolean> {
    return stat(this.dir(bundleId)).then((s) => s.isDirectory(), () => false);
  }

  /** Copies verified downloads into a staging dir, fsyncs, then renames it into place. Idempotent. */
  async install(manifest: Manifest, downloadPath: (sha256: string) => string, afterFirstFile: () => void = () => undefined): Promise<void> {
    await mkdir(this.bundlesDir, { recursive: true });
    if (await this.isInstalled(manifest.bundleId)) return;
    const staging = join(this.bundlesDir, `.staging-${manifest.bundleId}`);
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging);
    for (const f of manifest.files) {
      const target = join(staging, f.path);
      await copyFile(downloadPath(f.sha256), target);
      const fh = await open(target, 'r');
      try { await fh.sync(); } finally { await fh.close(); }
      // Re-check after the copy: a disk that returns wrong bytes must not get installed.
      verifyFileIntegrity(f, await sha256File(target));
      if (f === manifest.files[0]) afterFirstFile();
    }
    await fsyncDir(staging);
    await rename(staging, this.dir(manifest.bundleId));
    await fsyncDir(this.bundlesDir);
  }

  async readActive(): Promise<ActiveRecord | null> {
    return readJson(join(this.dataDir, 'active.json'));
  }

  async readPrevious(): Promise<ActiveRecord | null> {
    return readJson(join(this.dataDir, 'previous.json'));
  }

  /** Makes `next` active and remembers the one it replaces. previous.json is written first, so a crash in between loses nothing. */
  async activate(next: ActiveRecord, afterActiveWritten: () => void = () => undefined): Promise<void> {
    const current = await this.readActive();
    if (current?.bundleId === next.bundleId) return;
    if (current) await writeFileAtomic(join(this.dataDir, 'previous.json'), JSON.stringify(current));
    await writeFileAtomic(join(this.dataDir, 'active.json'), JSON.stringify(next));
    afterActiveWritten();
  }

  /**
   * Undoes an activation of `bundleId` that may have got as far as active.json before failing:
   * if it is the active bundle, previous.json goes back into place, or on a first install
   * (`hadPrevious` false) active.json is removed. Returns what is active afterwards.
   */
  async revertActivation(bundleId: string, hadPrevious: boolean): Promise<ActiveRecord | null> {
    const active = await this.readActive();
    if (active?.bundleId !== bundleId) return active;
    const activeFile = join(this.dataDir, 'active.json');
    if (!hadPrevious) {
      await rm(activeFile, { force: true });
      await fsyncDir(this.dataDir);
      return null;
    }
    const previous = await this.readPrevious();
    if (!previous || previous.bundleId === bundleId) {
      throw new EdgepackError('ROLLBACK_IMPOSSIBLE', `bundle ${bundleId} is active and there is no previous bundle to restore`);
    }
    await writeFileAtomic(activeFile, JSON.stringify({ ...previous, activatedAt: new Date().toISOString() }));
    return previous;
  }

  /** Removes a bundle that failed acceptance; the active pointer never moved to it. */
  async discard(bundleId: string): Promise<void> {
    const active = await this.readActive();
    const previous = await this.readPrevious();
    if (active?.bundleId === bundleId || previous?.bundleId === bundleId) return;
    await rm(this.dir(bundleId), { recursive: true, force: true });
  }

  /** Keeps the active and previous bundles, deletes everything else including stale staging dirs. */
  async collectGarbage(): Promise<void> {
    const keep = new Set([(await this.readActive())?.bundleId, (await this.readPrevious())?.bundleId].filter(Boolean));
    const entries = await readdir(this.bundlesDir).catch(() => [] as string[]);
    for (const e of entries) if (!keep.has(e)) await rm(join(this.bundlesDir, e), { recursive: true, force: true });
  }
}

async function readJson<T>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
